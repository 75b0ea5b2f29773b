/* test_reqfile: requirements-file edge cases — comments, continuations,
 * ${VAR}, nested -r/-c relative to the including file, index options,
 * --hash, bare wheel paths, and errors that name the file and line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "resolver/reqfile.h"
#include "check.h"

static char tmpdir[] = "/tmp/sitefs-test-reqfile-XXXXXX";

static void put(const char *rel, const char *text)
{
	char *p = xasprintf("%s/%s", tmpdir, rel);
	char *slash = strrchr(p, '/');

	*slash = '\0';
	mkdir_p(p, 0755);
	*slash = '/';
	CHECK_INT(file_write_atomic(p, text, strlen(text), 0644), 0);
	free(p);
}

static int load(struct reqfile *rf, const char *rel, char *err, size_t errlen)
{
	char *p = xasprintf("%s/%s", tmpdir, rel);
	int r = reqfile_load(rf, p, false, err, errlen);

	free(p);
	return r;
}

static void test_main_file(void)
{
	struct reqfile rf = {0};
	char err[512] = "";
	static const char h1[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF";

	setenv("SITEFS_T_VER", "2.0", 1);
	put("sub/more.txt", "# nested, relative to sub/\n-c cons.txt\nzeta\n");
	put("sub/cons.txt", "delta<2\n");
	char *main_txt =
	    xasprintf("# comment\n"
		      "   # indented comment \\\n"
		      "alpha>=1.0 \\\n"
		      "   ; python_version >= '3'   # trailing comment\n"
		      "\n"
		      "-r sub/more.txt\n"
		      "--index-url https://idx.example/simple\n"
		      "--extra-index-url=https://second.example/simple\n"
		      "-f ./wheels\n"
		      "--pre\n"
		      "--trusted-host idx.example\n"
		      "beta==${SITEFS_T_VER} --hash=sha256:%s \\\n"
		      "    --hash sha256:%s\n"
		      "gamma[x, y] @ https://h.example/gamma-1.0-py3-none-any.whl#sha256=%s\n"
		      "./wheels/eta_pkg-1.0-py3-none-any.whl\n",
		      h1, h1, h1);
	put("main.txt", main_txt);
	free(main_txt);
	CHECK_INT(load(&rf, "main.txt", err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	CHECK_INT(rf.nreqs, 6);
	if (rf.nreqs == 6) {
		CHECK_STR(rf.reqs[0].req.name, "alpha");
		CHECK_STR(rf.reqs[0].req.specifier, ">=1.0");
		CHECK(rf.reqs[0].req.marker != NULL);
		CHECK_INT(rf.reqs[0].line, 3);
		CHECK_STR(rf.reqs[1].req.name, "delta");
		CHECK(rf.reqs[1].constraint);
		CHECK(strstr(rf.reqs[1].file, "sub/cons.txt") != NULL);
		CHECK_STR(rf.reqs[2].req.name, "zeta");
		CHECK(!rf.reqs[2].constraint);
		CHECK_STR(rf.reqs[3].req.specifier, "==2.0");
		CHECK_INT(rf.reqs[3].nsha256, 2);
		CHECK_STR(rf.reqs[3].sha256[0],
			  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
		CHECK_INT(rf.reqs[4].req.nextras, 2);
		CHECK(str_startswith(rf.reqs[4].req.url, "https://h.example/gamma-1.0"));
		CHECK_STR(rf.reqs[5].req.name, "eta_pkg");
		CHECK(rf.reqs[5].req.url && str_startswith(rf.reqs[5].req.url, "file:///") &&
		      str_endswith(rf.reqs[5].req.url, "/wheels/eta_pkg-1.0-py3-none-any.whl"));
	}
	CHECK_STR(rf.index_url, "https://idx.example/simple");
	CHECK_INT(rf.nextra_index_urls, 1);
	CHECK_INT(rf.nfind_links, 1);
	if (rf.nfind_links)
		CHECK(rf.find_links[0][0] == '/' && str_endswith(rf.find_links[0], "/wheels"));
	CHECK(rf.pre);
	reqfile_free(&rf);
}

static void expect_error(const char *text, const char *want)
{
	struct reqfile rf = {0};
	char err[512] = "";

	put("bad.txt", text);
	int r = load(&rf, "bad.txt", err, sizeof(err));

	CHECK(r < 0);
	if (!strstr(err, want)) {
		fprintf(stderr, "error \"%s\" does not contain \"%s\"\n", err, want);
		CHECK(0);
	}
	reqfile_free(&rf);
}

static void test_errors(void)
{
	expect_error("ok\n\nfoo >= \n", "bad.txt:3: invalid requirement");
	/* an unset variable is left as written */
	expect_error("x${NOT_SET_SITEFS}\n", "invalid requirement \"x${NOT_SET_SITEFS}\"");
	expect_error("a\n--bogus-option\n", "bad.txt:2: unknown option \"--bogus-option\"");
	expect_error("-r missing.txt\n", "bad.txt:1: cannot read");
	expect_error("-e .\n", "editable");
	expect_error("a --hash=md5:00\n", "only sha256");
	expect_error("a --hash=sha256:abc\n", "not a sha256");
	expect_error("-r bad.txt\n", "includes itself");
	expect_error("x \\\ny \\\n!!\n", "bad.txt:1: invalid requirement");
	expect_error("./not-a-wheel.tar.gz\n", "only wheels");
	put("c.txt", "a[x]\n");
	expect_error("-c c.txt\n", "c.txt:1: constraint \"a[x]\" names extras");
}

static void test_cmdline(void)
{
	struct reqfile rf = {0};
	char err[256];

	CHECK_INT(
	    reqfile_add(&rf, "Foo.Bar[baz]>=1,<2; python_version>'3'", false, err, sizeof(err)), 0);
	CHECK_INT(reqfile_add(&rf, "--nope", false, err, sizeof(err)), -EINVAL);
	CHECK_INT(rf.nreqs, 1);
	reqfile_free(&rf);
}

int main(void)
{
	if (!mkdtemp(tmpdir))
		return 1;
	test_main_file();
	test_errors();
	test_cmdline();
	rm_rf(tmpdir);
	return check_done("reqfile");
}
