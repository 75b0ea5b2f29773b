/* test_tags: wheel filename parsing, PEP 503 names and tag priorities
 * (against a fake interpreter with a fixed tag list, and the real
 * /usr/bin/python3 when present). */
#include "resolver/tags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "resolver/interp.h"
#include "tests/unit/check.h"

struct name_case {
	const char *file;
	const char *dist, *version, *build; /* dist NULL: invalid */
	const char *py, *abi, *plat;	    /* joined with '.' */
};

/* clang-format off */
static const struct name_case name_cases[] = {
	{ "foo-1.0-py3-none-any.whl", "foo", "1.0", NULL, "py3", "none", "any" },
	{ "foo_bar-1.0.post1-1-py2.py3-none-any.whl", "foo_bar", "1.0.post1", "1", "py2.py3",
	  "none", "any" },
	{ "pkg-1.0-123abc-cp311-abi3-linux_x86_64.whl", "pkg", "1.0", "123abc", "cp311", "abi3",
	  "linux_x86_64" },
	{ "pkg-1.0-0_x.y-py3-none-any.whl", "pkg", "1.0", "0_x.y", "py3", "none", "any" },
	{ "numpy-2.2.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "numpy",
	  "2.2.3", NULL, "cp312", "cp312", "manylinux_2_17_x86_64.manylinux2014_x86_64" },
	{ "Foo-1.0-PY3-NONE-ANY.whl", "Foo", "1.0", NULL, "py3", "none", "any" },
	{ "zope.interface-6.0-cp311-cp311-win_amd64.whl", "zope.interface", "6.0", NULL, "cp311",
	  "cp311", "win_amd64" },
	{ "x-1!2.0+local.1-py3-none-any.whl", "x", "1!2.0+local.1", NULL, "py3", "none", "any" },
	{ "a-1-py2.py3.cp39-none.abi3-any.linux_x86_64.whl", "a", "1", NULL, "py2.py3.cp39",
	  "none.abi3", "any.linux_x86_64" },
	/* invalid */
	{ "foo-1.0-py3-none-any.zip" },
	{ "foo-1.0-py3-none-any.WHL" },
	{ ".whl" },
	{ "foo-1.0-py3-none.whl" },
	{ "foo-1.0-1-2-py3-none-any.whl" },
	{ "foo-1.0-x1-py3-none-any.whl" },
	{ "foo--1.0-py3-none-any.whl" },
	{ "-1.0-py3-none-any.whl" },
	{ "foo-1.0-py3-none-any-.whl" },
	{ "foo-1.0-py3..py2-none-any.whl" },
	{ "foo-1.0-.py3-none-any.whl" },
	{ "foo-1.0-py3-none-any..whl" },
	{ "foo bar-1.0-py3-none-any.whl" },
	{ "foo__bar-1.0-py3-none-any.whl" },
	{ "../foo-1.0-py3-none-any.whl" },
	{ "foo/bar-1.0-py3-none-any.whl" },
	{ "foo-1.0 -py3-none-any.whl" },
	{ "foo-1.0-py3-none-any+x.whl" },
	{ "foo-1.0-1 a-py3-none-any.whl" },
	{ "foo-1.0-py3-none-\xc3\xa9.whl" },
};
/* clang-format on */

static char *join(char **v, size_t n)
{
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_puts(&b, ".");
		buf_puts(&b, v[i]);
	}
	return (char *)buf_steal(&b, NULL);
}

static void test_wheelname(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(name_cases); i++) {
		const struct name_case *c = &name_cases[i];
		struct wheel_name wn;
		memset(&wn, 0xaa, sizeof(wn));
		int r = wheelname_parse(c->file, &wn);
		if (!c->dist) {
			if (r != -EINVAL)
				fprintf(stderr, "accepted invalid wheel name '%s'\n", c->file);
			CHECK_INT(r, -EINVAL);
			/* left untouched on failure */
			CHECK(((unsigned char *)&wn)[0] == 0xaa);
			if (r == 0)
				wheelname_free(&wn);
			continue;
		}
		if (r != 0) {
			fprintf(stderr, "rejected wheel name '%s'\n", c->file);
			CHECK_INT(r, 0);
			continue;
		}
		CHECK_STR(wn.dist, c->dist);
		CHECK_STR(wn.version, c->version);
		if (c->build)
			CHECK_STR(wn.build, c->build);
		else
			CHECK(wn.build == NULL);
		char *py = join(wn.py, wn.npy), *abi = join(wn.abi, wn.nabi),
		     *plat = join(wn.plat, wn.nplat);
		CHECK_STR(py, c->py);
		CHECK_STR(abi, c->abi);
		CHECK_STR(plat, c->plat);
		free(py);
		free(abi);
		free(plat);
		wheelname_free(&wn);
		CHECK(wn.dist == NULL && wn.py == NULL);
		wheelname_free(&wn); /* twice is fine */
	}
	wheelname_free(NULL);
	struct wheel_name wn;
	CHECK_INT(wheelname_parse(NULL, &wn), -EINVAL);
}

static void test_normalize(void)
{
	static const char *const cases[][2] = {
	    {"Foo.Bar_baz", "foo-bar-baz"},
	    {"foo", "foo"},
	    {"FOO", "foo"},
	    {"a--_.b", "a-b"},
	    {"zope.interface", "zope-interface"},
	    {"typing_extensions", "typing-extensions"},
	    {"-x-", "-x-"},
	    {"a_._b.__c", "a-b-c"},
	    {"", ""},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *n = tags_normalize_name(cases[i][0]);
		CHECK_STR(n, cases[i][1]);
		free(n);
	}
}

/* A fake interpreter: a shell script that prints a canned answer. */
static const char fake_answer[] = "sitefs-interp 1\n"
				  "executable=/opt/py/bin/python3.11\n"
				  "version=3.11.4\n"
				  "major=3\n"
				  "minor=11\n"
				  "implementation=cpython\n"
				  "cache_tag=cpython-311\n"
				  "magic=a70d0d0a\n"
				  "stdlib=/opt/py/lib/python3.11\n"
				  "platlib_rel=lib/python3.11/site-packages\n"
				  "include_rel=include/site/python3.11\n"
				  "tag=cp311-cp311-manylinux_2_17_x86_64\n"
				  "tag=cp311-cp311-manylinux2014_x86_64\n"
				  "tag=cp311-cp311-linux_x86_64\n"
				  "tag=cp311-abi3-manylinux_2_17_x86_64\n"
				  "tag=cp311-abi3-manylinux2014_x86_64\n"
				  "tag=cp311-none-manylinux_2_17_x86_64\n"
				  "tag=cp310-abi3-manylinux_2_17_x86_64\n"
				  "tag=py311-none-manylinux_2_17_x86_64\n"
				  "tag=py3-none-manylinux_2_17_x86_64\n"
				  "tag=cp311-none-any\n"
				  "tag=py311-none-any\n"
				  "tag=py3-none-any\n"
				  "tag=py3-none-any\n"
				  "tag=py30-none-any\n"
				  "marker.python_version=3.11\n"
				  "marker.sys_platform=linux\n"
				  "end\n";

static int prio(const struct interp *ip, const char *file)
{
	struct wheel_name wn;
	if (wheelname_parse(file, &wn) < 0)
		return -100;
	int p = tags_wheel_priority(ip, &wn);
	wheelname_free(&wn);
	return p;
}

static void test_priority_fake(void)
{
	char dir[] = "/tmp/sitefs-tags-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char *py = xasprintf("%s/python", dir);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "#!/bin/sh\ncat <<'EOF'\n");
	buf_puts(&b, fake_answer);
	buf_puts(&b, "EOF\n");
	CHECK_INT(file_write_atomic(py, b.data, b.len, 0755), 0);
	buf_free(&b);

	struct interp *ip = NULL;
	char err[256];
	int r = interp_query(py, NULL, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0) {
		CHECK_INT(ip->ntags, 14);
		CHECK_STR(ip->python, py);
		CHECK_STR(ip->version, "3.11.4");
		CHECK_INT(interp_tag_priority(ip, "cp311-cp311-manylinux_2_17_x86_64"), 0);
		CHECK_INT(interp_tag_priority(ip, "py3-none-any"), 11); /* first of the dups */
		CHECK_INT(interp_tag_priority(ip, "py30-none-any"), 13);
		CHECK_INT(interp_tag_priority(ip, "py2-none-any"), -1);
		CHECK_INT(interp_tag_priority(ip, ""), -1);
		CHECK_INT(interp_tag_priority(NULL, "py3-none-any"), -1);

		CHECK_INT(prio(ip, "a-1-cp311-cp311-manylinux_2_17_x86_64.whl"), 0);
		CHECK_INT(prio(ip, "a-1-cp311-cp311-manylinux2014_x86_64.whl"), 1);
		/* compressed platform set: the best of both */
		CHECK_INT(
		    prio(ip, "a-1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"), 0);
		CHECK_INT(prio(ip, "a-1-cp311-cp311-linux_x86_64.whl"), 2);
		CHECK_INT(prio(ip, "a-1-cp311-abi3-manylinux_2_17_x86_64.whl"), 3);
		CHECK_INT(prio(ip, "a-1-cp310-abi3-manylinux_2_17_x86_64.whl"), 6);
		CHECK_INT(prio(ip, "a-1-py3-none-manylinux_2_17_x86_64.whl"), 8);
		CHECK_INT(prio(ip, "a-1-py2.py3-none-any.whl"), 11);
		CHECK_INT(prio(ip, "a-1-3-py3-none-any.whl"), 11);
		CHECK_INT(prio(ip, "a-1-PY3-None-Any.whl"), 11);
		CHECK_INT(prio(ip, "a-1-py30-none-any.whl"), 13);
		CHECK_INT(prio(ip, "a-1-cp311-cp311-win_amd64.whl"), -1);
		CHECK_INT(prio(ip, "a-1-cp312-cp312-manylinux_2_17_x86_64.whl"), -1);
		CHECK_INT(prio(ip, "a-1-py2-none-any.whl"), -1);
		CHECK_INT(prio(ip, "a-1-cp310-cp310-manylinux_2_17_x86_64.whl"), -1);
		/* a tag longer than the stack buffer */
		char *longname = xasprintf("a-1-py3-none-%0300d.any.whl", 0);
		CHECK_INT(prio(ip, longname), 11);
		free(longname);
		interp_free(ip);
	}
	unlink(py);
	free(py);
	rmdir(dir);
}

static void test_priority_real(void)
{
	if (access("/usr/bin/python3", X_OK) != 0) {
		printf("no /usr/bin/python3: real priorities skipped\n");
		return;
	}
	struct interp *ip = NULL;
	char err[256];
	int r = interp_query("/usr/bin/python3", NULL, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0) {
		fprintf(stderr, "interp_query: %s\n", err);
		return;
	}
	char *cp = xasprintf("cp%d%d", ip->major, ip->minor);
	const char *mach = interp_marker(ip, "platform_machine");
	CHECK(mach != NULL);
	if (!strcmp(mach ? mach : "", "x86_64") && ip->major == 3) {
		char *native =
		    xasprintf("a-1-%s-%s-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", cp, cp);
		char *old = xasprintf("a-1-%s-%s-manylinux1_x86_64.whl", cp, cp);
		char *abi3 = xasprintf("a-1-cp37-abi3-manylinux_2_17_x86_64.whl");
		char *musl = xasprintf("a-1-%s-%s-musllinux_1_1_x86_64.whl", cp, cp);
		int pn = prio(ip, native), po = prio(ip, old), pa = prio(ip, abi3),
		    pu = prio(ip, "a-1-py3-none-any.whl");
		CHECK(pn >= 0);
		CHECK(po > pn);
		CHECK(pa > po);
		CHECK(pu > pa);
		CHECK_INT(prio(ip, musl), -1);
		CHECK_INT(prio(ip, "a-1-cp27-cp27mu-manylinux1_x86_64.whl"), -1);
		CHECK_INT(pu, interp_tag_priority(ip, "py3-none-any"));
		free(native);
		free(old);
		free(abi3);
		free(musl);
	}
	free(cp);
	interp_free(ip);
}

int main(void)
{
	test_wheelname();
	test_normalize();
	test_priority_fake();
	test_priority_real();
	return check_done("tags");
}
