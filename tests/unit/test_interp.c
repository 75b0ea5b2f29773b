/* test_interp: asks /usr/bin/python3 and compares the answer with what
 * packaging (Debian's python3-packaging, or pip's vendored copy) says;
 * checks the cache (hits run no process, bad entries are replaced), the
 * pyenv-shim case, and failures of broken "interpreters". */
#include "resolver/interp.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "tests/unit/check.h"

#define PY "/usr/bin/python3"
#define PIP_WHL "/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl"

/* clang-format off */
static const char oracle_py[] =
	"import sys, sysconfig, platform, importlib.util\n"
	"try:\n"
	"    from packaging import tags, markers\n"
	"except ImportError:\n"
	"    from pip._vendor.packaging import tags, markers\n"
	"print('executable=' + (getattr(sys, '_base_executable', None) or sys.executable))\n"
	"print('version=' + platform.python_version())\n"
	"print('stdlib=' + sysconfig.get_path('stdlib'))\n"
	"print('magic=' + importlib.util.MAGIC_NUMBER.hex())\n"
	"print('cache_tag=' + sys.implementation.cache_tag)\n"
	"print('implementation=' + sys.implementation.name)\n"
	"print('majmin=%d.%d' % sys.version_info[:2])\n"
	"for t in tags.sys_tags(): print('tag=%s' % t)\n"
	"for k, v in markers.default_environment().items(): print('marker.%s=%s' % (k, v))\n";
/* clang-format on */

struct lines {
	char **v;
	size_t n;
};

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Runs a shell command and returns its stdout lines; 0 or -1. */
static int run_lines(const char *cmd, struct lines *ret)
{
	FILE *f = popen(cmd, "r");
	if (!f)
		return -1;
	struct lines l = {0};
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		if (n && line[n - 1] == '\n')
			line[--n] = 0;
		l.v = xrealloc(l.v, (l.n + 1) * sizeof(*l.v));
		l.v[l.n++] = xstrdup(line);
	}
	free(line);
	if (pclose(f) != 0) {
		lines_free(&l);
		return -1;
	}
	*ret = l;
	return 0;
}

static const char *field(const struct lines *l, const char *key)
{
	size_t k = strlen(key);
	for (size_t i = 0; i < l->n; i++)
		if (!strncmp(l->v[i], key, k) && l->v[i][k] == '=')
			return l->v[i] + k + 1;
	return NULL;
}

static char *write_script(const char *dir, const char *name, const char *body)
{
	char *path = xasprintf("%s/%s", dir, name);
	char *text = xasprintf("#!/bin/sh\n%s\n", body);
	CHECK_INT(file_write_atomic(path, text, strlen(text), 0755), 0);
	free(text);
	return path;
}

static int count_cache_files(const char *cache_dir, char **ret_one)
{
	char *dir = xasprintf("%s/interp", cache_dir);
	DIR *d = opendir(dir);
	int n = 0;
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			if (!str_endswith(de->d_name, ".txt"))
				continue;
			if (ret_one && n == 0)
				*ret_one = xasprintf("%s/%s", dir, de->d_name);
			n++;
		}
		closedir(d);
	}
	free(dir);
	return n;
}

static void test_against_packaging(void)
{
	char tmp[] = "/tmp/sitefs-oracle-XXXXXX";
	int fd = mkstemp(tmp);
	CHECK(fd >= 0);
	CHECK_INT(write_full(fd, oracle_py, sizeof(oracle_py) - 1), 0);
	close(fd);
	char *cmd = xasprintf("PYTHONPATH=%s %s %s", PIP_WHL, PY, tmp);
	struct lines want;
	int r = run_lines(cmd, &want);
	free(cmd);
	unlink(tmp);
	CHECK_INT(r, 0);
	if (r < 0)
		return;

	struct interp *ip = NULL;
	char err[512];
	r = interp_query(PY, NULL, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0) {
		fprintf(stderr, "interp_query: %s\n", err);
		lines_free(&want);
		return;
	}
	CHECK_STR(ip->python, PY);
	CHECK_STR(ip->executable, field(&want, "executable"));
	CHECK_STR(ip->version, field(&want, "version"));
	CHECK_STR(ip->stdlib, field(&want, "stdlib"));
	CHECK_STR(ip->magic, field(&want, "magic"));
	CHECK_STR(ip->cache_tag, field(&want, "cache_tag"));
	CHECK_STR(ip->implementation, field(&want, "implementation"));
	char *mm = xasprintf("%d.%d", ip->major, ip->minor);
	CHECK_STR(mm, field(&want, "majmin"));
	char *platlib = xasprintf("lib/python%s/site-packages", mm);
	char *include = xasprintf("include/site/python%s", mm);
	CHECK_STR(ip->platlib_rel, platlib);
	CHECK_STR(ip->include_rel, include);
	free(platlib);
	free(include);
	free(mm);

	/* the tag list, in order */
	size_t nt = 0, nm = 0;
	for (size_t i = 0; i < want.n; i++) {
		const char *l = want.v[i];
		if (str_startswith(l, "tag=")) {
			if (nt < ip->ntags && strcmp(ip->tags[nt], l + 4) != 0 && nt < 5)
				fprintf(stderr, "tag %zu: %s != %s\n", nt, ip->tags[nt], l + 4);
			CHECK(nt < ip->ntags && strcmp(ip->tags[nt], l + 4) == 0);
			CHECK_INT(interp_tag_priority(ip, l + 4), nt);
			nt++;
		} else if (str_startswith(l, "marker.")) {
			const char *eq = strchr(l, '=');
			char *k = xstrndup(l + 7, (size_t)(eq - l - 7));
			CHECK_STR(interp_marker(ip, k), eq + 1);
			free(k);
			nm++;
		}
	}
	CHECK_INT(ip->ntags, nt);
	CHECK_INT(ip->nmarkers, nm);
	CHECK(nt > 100);
	CHECK(nm >= 11);
	CHECK(interp_marker(ip, "no_such_marker") == NULL);
	CHECK_INT(interp_tag_priority(ip, "py2-none-any"), -1);
	printf("%s: %zu tags, %zu markers match packaging\n", PY, nt, nm);
	interp_free(ip);
	lines_free(&want);
}

static void test_cache(const char *tmpdir)
{
	char *cache = xasprintf("%s/cache", tmpdir);
	struct interp *ip = NULL;
	char err[512];
	int r = interp_query(PY, cache, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0) {
		free(cache);
		return;
	}
	char *real_version = xstrdup(ip->version);
	size_t real_ntags = ip->ntags;
	interp_free(ip);

	char *file = NULL;
	CHECK_INT(count_cache_files(cache, &file), 1);
	if (!file) {
		free(real_version);
		free(cache);
		return;
	}
	char *text;
	size_t len;
	CHECK_INT(file_read_all(file, &text, &len), 0);
	char *want = xasprintf("\nversion=%s\n", real_version);
	char *at = strstr(text, want);
	CHECK(at != NULL);

	/* a hit runs nothing: a doctored entry is believed */
	struct buf b;
	buf_init(&b);
	buf_append(&b, text, (size_t)(at - text));
	buf_puts(&b, "\nversion=9.9.9\n");
	buf_puts(&b, at + strlen(want));
	CHECK_INT(file_write_atomic(file, b.data, b.len, 0644), 0);
	buf_free(&b);
	r = interp_query(PY, cache, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0) {
		CHECK_STR(ip->version, "9.9.9");
		CHECK_INT(ip->ntags, real_ntags);
		interp_free(ip);
	}

	/* bad entries are ignored and replaced */
	static const char *const bad[] = {
	    "",
	    "hello\n",
	    "sitefs-interp 1\nversion=1\n",
	    NULL,
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *content = bad[i] ? xstrdup(bad[i]) : xstrndup(text, len - 4); /* no "end" */
		CHECK_INT(file_write_atomic(file, content, strlen(content), 0644), 0);
		free(content);
		r = interp_query(PY, cache, &ip, err, sizeof(err));
		CHECK_INT(r, 0);
		if (r == 0) {
			CHECK_STR(ip->version, real_version);
			interp_free(ip);
		}
		char *again;
		size_t alen;
		CHECK_INT(file_read_all(file, &again, &alen), 0);
		CHECK(alen == len && memcmp(again, text, len) == 0);
		free(again);
	}
	CHECK_INT(count_cache_files(cache, NULL), 1);

	/* an unusable cache directory does not break the query */
	char *notdir = xasprintf("%s/notadir", tmpdir);
	CHECK_INT(file_write_atomic(notdir, "x", 1, 0644), 0);
	r = interp_query(PY, notdir, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0)
		interp_free(ip);
	unlink(notdir);
	free(notdir);

	/* a venv-style symlink shares the entry (realpath) */
	char *link = xasprintf("%s/python-link", tmpdir);
	CHECK_INT(symlink(PY, link), 0);
	CHECK_INT(file_write_atomic(file, text, len, 0644), 0);
	r = interp_query(link, cache, &ip, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0) {
		CHECK_STR(ip->python, link);
		interp_free(ip);
	}
	CHECK_INT(count_cache_files(cache, NULL), 1);
	unlink(link);
	free(link);

	free(want);
	free(text);
	free(file);
	free(real_version);
	rm_rf(cache);
	free(cache);
}

/* python3 on PATH is a pyenv shim here: one script for every version. */
static void test_shim(const char *tmpdir)
{
	char *found = NULL;
	const char *path = getenv("PATH");
	for (const char *p = path; p && *p;) {
		const char *c = strchr(p, ':');
		size_t n = c ? (size_t)(c - p) : strlen(p);
		char *cand = xasprintf("%.*s/python3", (int)n, p);
		if (access(cand, X_OK) == 0) {
			found = cand;
			break;
		}
		free(cand);
		p = c ? c + 1 : p + n;
	}
	char hdr[3] = "";
	FILE *f = found ? fopen(found, "r") : NULL;
	if (f) {
		if (!fgets(hdr, sizeof(hdr), f))
			hdr[0] = 0;
		fclose(f);
	}
	const char *root = getenv("PYENV_ROOT");
	char *versions =
	    root ? xasprintf("%s/versions", root)
		 : xasprintf("%s/.pyenv/versions", getenv("HOME") ? getenv("HOME") : "/");
	if (!found || strcmp(hdr, "#!") != 0 || !strstr(found, "/shims/") ||
	    access(versions, R_OK) != 0) {
		printf("python3 on PATH is not a pyenv shim: shim test skipped\n");
		free(found);
		free(versions);
		return;
	}
	char *cache = xasprintf("%s/shimcache", tmpdir);
	struct interp *a = NULL, *b = NULL, *c = NULL;
	char err[512];
	int r = interp_query("python3", cache, &a, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0) {
		fprintf(stderr, "python3: %s\n", err);
		goto out;
	}
	/* another installed 3.x */
	DIR *d = opendir(versions);
	char *other = NULL;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!str_startswith(de->d_name, "3.") || str_startswith(a->version, de->d_name))
			continue;
		char *exe = xasprintf("%s/%s/bin/python3", versions, de->d_name);
		bool ok = access(exe, X_OK) == 0 && (!other || strcmp(de->d_name, other) > 0);
		free(exe);
		if (ok) {
			free(other);
			other = xstrdup(de->d_name);
		}
	}
	if (d)
		closedir(d);
	if (!other) {
		printf("only one pyenv version: shim test skipped\n");
		goto out;
	}
	char *old = getenv("PYENV_VERSION") ? xstrdup(getenv("PYENV_VERSION")) : NULL;
	setenv("PYENV_VERSION", other, 1);
	r = interp_query("python3", cache, &b, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0) {
		CHECK(str_startswith(b->version, other));
		CHECK(strcmp(b->version, a->version) != 0);
	}
	if (old)
		setenv("PYENV_VERSION", old, 1);
	else
		unsetenv("PYENV_VERSION");
	free(old);
	r = interp_query("python3", cache, &c, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0)
		CHECK_STR(c->version, a->version);
	CHECK_INT(count_cache_files(cache, NULL), 2);
	printf("pyenv shim: %s and %s cached separately\n", a->version, b ? b->version : "?");
	free(other);
out:
	interp_free(a);
	interp_free(b);
	interp_free(c);
	rm_rf(cache);
	free(cache);
	free(found);
	free(versions);
}

static const char good_answer[] = "sitefs-interp 1\n"
				  "executable=/x/python3\n"
				  "version=3.99.0\n"
				  "major=3\n"
				  "minor=99\n"
				  "implementation=cpython\n"
				  "cache_tag=\n"
				  "magic=00\n"
				  "stdlib=/x/lib\n"
				  "platlib_rel=lib/python3.99/site-packages\n"
				  "include_rel=include/site/python3.99\n"
				  "future_field=ignored\n"
				  "tag=py3-none-any\n"
				  "marker.python_version=3.99\n"
				  "marker.sys_platform=linux\n"
				  "marker.platform_version=a\\\\b\\nc\n"
				  "end\n";

static void expect_fail(const char *tmpdir, const char *body, int want_r, const char *want_msg)
{
	char *py = write_script(tmpdir, "fakepy", body);
	struct interp *ip = NULL;
	char err[512] = "";
	int r = interp_query(py, NULL, &ip, err, sizeof(err));
	if (r != want_r || !strstr(err, want_msg))
		fprintf(stderr, "fake python '%s': r=%d err='%s', want '%s'\n", body, r, err,
			want_msg);
	CHECK_INT(r, want_r);
	CHECK(strstr(err, want_msg) != NULL);
	CHECK(ip == NULL);
	if (r == 0)
		interp_free(ip);
	unlink(py);
	free(py);
}

static char *answer_with(const char *from, const char *to)
{
	const char *at = strstr(good_answer, from);
	return xasprintf("cat <<'EOF'\n%.*s%s%sEOF", (int)(at - good_answer), good_answer, to,
			 at + strlen(from));
}

static void test_fakes(const char *tmpdir)
{
	struct interp *ip = NULL;
	char err[512];

	/* a minimal valid answer, with escapes and an unknown key */
	char *body = xasprintf("cat <<'EOF'\n%sEOF", good_answer);
	char *py = write_script(tmpdir, "fakepy", body);
	free(body);
	CHECK_INT(interp_query(py, NULL, &ip, err, sizeof(err)), 0);
	if (ip) {
		CHECK_STR(ip->version, "3.99.0");
		CHECK_INT(ip->minor, 99);
		CHECK_STR(ip->cache_tag, "");
		CHECK_STR(interp_marker(ip, "platform_version"), "a\\b\nc");
		CHECK_INT(ip->ntags, 1);
		ip = interp_free(ip);
	}
	/* the arguments it was given */
	unlink(py);
	free(py);
	py = write_script(tmpdir, "fakepy", "echo \"$1|$2\" >&2; exit 5");
	CHECK_INT(interp_query(py, NULL, &ip, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "failed (exit status 5): -I|-c") != NULL);
	unlink(py);
	free(py);

	CHECK_INT(interp_query("sitefs-no-such-python", NULL, &ip, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "not found on PATH") != NULL);
	CHECK_INT(interp_query("/nonexistent/python3", NULL, &ip, err, sizeof(err)), -ENOENT);
	CHECK_INT(interp_query(tmpdir, NULL, &ip, err, sizeof(err)), -ENOENT);
	CHECK_INT(interp_query("", NULL, &ip, err, sizeof(err)), -ENOENT);
	CHECK(ip == NULL);

	expect_fail(tmpdir, "exit 1", -EINVAL, "failed (exit status 1)");
	expect_fail(tmpdir, "echo 'Traceback'; echo 'SyntaxError: bad' >&2; exit 1", -EINVAL,
		    "SyntaxError: bad");
	expect_fail(tmpdir, "kill -9 $$", -EINVAL, "killed by signal 9");
	expect_fail(tmpdir, "echo hello", -EINVAL, "unexpected first line");
	expect_fail(tmpdir, "", -EINVAL, "truncated");
	expect_fail(tmpdir, "exec yes", -EINVAL, "printed more than");
	expect_fail(tmpdir, "printf 'sitefs-interp 1\\nend'", -EINVAL, "newline");
	expect_fail(tmpdir, "printf 'sitefs-interp 1\\nend\\n'", -EINVAL, "missing");
	struct {
		const char *from, *to, *msg;
	} muts[] = {
	    {"tag=py3-none-any\n", "tag=py3-none\n", "malformed tag"},
	    {"tag=py3-none-any\n", "tag=py3--any\n", "malformed tag"},
	    {"tag=py3-none-any\n", "tag=a-b-c-d\n", "malformed tag"},
	    {"tag=py3-none-any\n", "", "no supported tags"},
	    {"minor=99\n", "minor=x\n", "bad version"},
	    {"minor=99\n", "minor=-1\n", "bad version"},
	    {"minor=99\n", "", "missing"},
	    {"magic=00\n", "", "missing"},
	    {"marker.python_version=3.99\n", "", "marker"},
	    {"end\n", "end\nmore\n", "after the end"},
	    {"version=3.99.0\n", "version\n", "without '='"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(muts); i++) {
		body = answer_with(muts[i].from, muts[i].to);
		expect_fail(tmpdir, body, -EINVAL, muts[i].msg);
		free(body);
	}
	interp_free(NULL);
}

int main(void)
{
	char tmpdir[] = "/tmp/sitefs-interp-XXXXXX";
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_fakes(tmpdir);
	if (access(PY, X_OK) == 0) {
		test_against_packaging();
		test_cache(tmpdir);
	} else {
		printf("no %s: skipped the real interpreter\n", PY);
	}
	test_shim(tmpdir);
	rm_rf(tmpdir);
	return check_done("interp");
}
