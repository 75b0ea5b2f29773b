/* test_lockfile: PEP 751 pylock.toml reading: a realistic lock, wheel
 * sources and filenames, path resolution, and table-driven errors that must
 * name the file, the line and the package. */
#include "resolver/lockfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "tests/unit/check.h"

#define SHA_A "c75a69e28a550a7e93789579c22aa26b0f5b83b75dc4e08fe092980051e1090a"
#define SHA_B "83807D445817326B4BCDAAAF8E8E9F1753DA04341ECEEC705C001FF342002E5D"

/* clang-format off */
static const char full_lock[] =
	"lock-version = '1.0'\n"                                                      /* 1 */
	"environments = [\"sys_platform == 'linux'\"]\n"                              /* 2 */
	"requires-python = '>=3.9'\n"                                                 /* 3 */
	"extras = ['socks']\n"                                                        /* 4 */
	"dependency-groups = ['dev', 'test']\n"                                       /* 5 */
	"default-groups = ['dev']\n"                                                  /* 6 */
	"created-by = 'uv'\n"                                                         /* 7 */
	"\n"                                                                          /* 8 */
	"[[packages]]\n"                                                              /* 9 */
	"name = 'attrs'\n"                                                            /* 10 */
	"version = '25.1.0'\n"                                                        /* 11 */
	"requires-python = '>=3.8'\n"                                                 /* 12 */
	"index = 'https://pypi.org/simple'\n"                                         /* 13 */
	"[[packages.wheels]]\n"                                                       /* 14 */
	"name = 'attrs-25.1.0-py3-none-any.whl'\n"                                    /* 15 */
	"upload-time = 2025-01-25T11:30:10.164985+00:00\n"                            /* 16 */
	"url = 'https://files.example/attrs-25.1.0-py3-none-any.whl'\n"               /* 17 */
	"size = 63152\n"                                                              /* 18 */
	"hashes = {sha256 = '" SHA_A "', md5 = 'x'}\n"                                /* 19 */
	"\n"                                                                          /* 20 */
	"[[packages]]\n"                                                              /* 21 */
	"name = 'Typing_Extensions'\n"                                                /* 22 */
	"version = '4.12.2'\n"                                                        /* 23 */
	"marker = \"python_version < '3.13'\"\n"                                      /* 24 */
	"dependencies = [{name = 'attrs'}]\n"                                         /* 25 */
	"sdist = {name = 'typing_extensions-4.12.2.tar.gz', url = 'https://x/t.tar.gz', "
	"size = 1, hashes = {sha256 = '" SHA_A "'}}\n" /* 26 */
	"wheels = [\n"                                                                /* 27 */
	"  {url = 'https://files.example/p/typing_extensions-4.12.2%2Bx-py3-none-any.whl"
	"?download=1#frag', size = 37438, hashes = {sha256 = '" SHA_B "'}},\n" /* 28 */
	"  {path = 'wheels/../local/typing_extensions-4.12.2-py3-none-any.whl', "
	"hashes = {sha256 = '" SHA_A "'}},\n" /* 29 */
	"  {name = 'typing_extensions-4.12.2-1-py3-none-any.whl', "
	"url = 'https://h/whatever', path = '/abs//dir/./t.whl', size = 5, "
	"hashes = {sha256 = '" SHA_A "'}},\n" /* 30 */
	"  {url = 'file:///srv/wheels/typing_extensions-4.12.2-py2.py3-none-any.whl', "
	"hashes = {sha256 = '" SHA_A "'}},\n"                                        /* 31 */
	"]\n"                                                                         /* 32 */
	"\n"                                                                          /* 33 */
	"[[packages]]\n"                                                              /* 34 */
	"name = 'spam'\n"                                                             /* 35 */
	"[packages.vcs]\n"                                                            /* 36 */
	"type = 'git'\n"                                                              /* 37 */
	"url = 'https://github.com/example/spam.git'\n"                               /* 38 */
	"commit-id = '3b79e8a1e7d3c4a0b0e2d2a1a3c4b5d6e7f8a9b0'\n"                    /* 39 */
	"[packages.tool.whatever]\n"                                                  /* 40 */
	"x = 1\n"                                                                     /* 41 */
	"\n"                                                                          /* 42 */
	"[[packages]]\n"                                                              /* 43 */
	"name = 'numpy'\n"                                                            /* 44 */
	"version = '2.2.3'\n"                                                         /* 45 */
	"wheels = [{name = 'numpy-2.2.3-cp311-cp311-manylinux_2_17_x86_64"
	".manylinux2014_x86_64.whl', url = 'https://x/n.whl', size = 16000000, "
	"hashes = {sha256 = '" SHA_A "'}}]\n" /* 46 */
	"\n"
	"[tool.uv]\n"
	"anything = [1, 'goes']\n";
/* clang-format on */

static void check_sha(const uint8_t *got, const char *hex)
{
	char buf[65];
	for (int i = 0; i < 32; i++)
		snprintf(buf + 2 * i, 3, "%02x", got[i]);
	char want[65];
	for (int i = 0; i < 64; i++)
		want[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
	want[64] = 0;
	CHECK_STR(buf, want);
}

static void test_full(void)
{
	struct lock_file *lf = NULL;
	char err[512];
	int r = lockfile_parse("/srv/proj/pylock.toml", full_lock, sizeof(full_lock) - 1, &lf, err,
			       sizeof(err));
	if (r < 0)
		fprintf(stderr, "%s\n", err);
	CHECK_INT(r, 0);
	if (r < 0)
		return;
	CHECK_STR(lf->path, "/srv/proj/pylock.toml");
	CHECK_STR(lf->lock_version, "1.0");
	CHECK_STR(lf->requires_python, ">=3.9");
	CHECK_STR(lf->created_by, "uv");
	CHECK_INT(lf->nextras, 1);
	CHECK_STR(lf->extras[0], "socks");
	CHECK_INT(lf->ndependency_groups, 2);
	CHECK_STR(lf->dependency_groups[1], "test");
	CHECK_INT(lf->npkgs, 4);

	const struct lock_package *p = &lf->pkgs[0];
	CHECK_STR(p->name, "attrs");
	CHECK_STR(p->version, "25.1.0");
	CHECK_STR(p->requires_python, ">=3.8");
	CHECK_STR(p->index, "https://pypi.org/simple");
	CHECK(p->marker == NULL);
	CHECK(!p->has_sdist);
	CHECK_INT(p->line, 9);
	CHECK_INT(p->nwheels, 1);
	const struct lock_wheel *w = &p->wheels[0];
	CHECK_STR(w->filename, "attrs-25.1.0-py3-none-any.whl");
	CHECK_STR(w->url, "https://files.example/attrs-25.1.0-py3-none-any.whl");
	CHECK(w->path == NULL);
	CHECK(w->has_size);
	CHECK_INT(w->size, 63152);
	CHECK(w->has_sha256);
	check_sha(w->sha256, SHA_A);
	CHECK_INT(w->line, 14);

	p = &lf->pkgs[1];
	CHECK_STR(p->name, "Typing_Extensions");
	CHECK_STR(p->marker, "python_version < '3.13'");
	CHECK(p->has_sdist);
	CHECK_INT(p->line, 21);
	CHECK_INT(p->nwheels, 4);
	w = &p->wheels[0];
	CHECK_STR(w->filename, "typing_extensions-4.12.2+x-py3-none-any.whl");
	CHECK_STR(w->url, "https://files.example/p/typing_extensions-4.12.2%2Bx-py3-none-any.whl"
			  "?download=1#frag");
	CHECK_INT(w->size, 37438);
	check_sha(w->sha256, SHA_B);
	CHECK_INT(w->line, 28);
	CHECK_INT(w[0].line, 28);
	w = &p->wheels[1];
	CHECK_STR(w->filename, "typing_extensions-4.12.2-py3-none-any.whl");
	CHECK(w->url == NULL);
	CHECK_STR(w->path, "/srv/proj/local/typing_extensions-4.12.2-py3-none-any.whl");
	CHECK(!w->has_size);
	CHECK_INT(w->line, 29);
	w = &p->wheels[2];
	CHECK_STR(w->filename, "typing_extensions-4.12.2-1-py3-none-any.whl");
	CHECK(w->url == NULL); /* a path wins */
	CHECK_STR(w->path, "/abs/dir/t.whl");
	CHECK_INT(w->size, 5);
	w = &p->wheels[3];
	CHECK_STR(w->filename, "typing_extensions-4.12.2-py2.py3-none-any.whl");
	CHECK(w->url == NULL);
	CHECK_STR(w->path, "/srv/wheels/typing_extensions-4.12.2-py2.py3-none-any.whl");

	p = &lf->pkgs[2];
	CHECK_STR(p->name, "spam");
	CHECK(p->version == NULL);
	CHECK(p->has_sdist);
	CHECK_INT(p->nwheels, 0);

	p = &lf->pkgs[3];
	CHECK_STR(p->wheels[0].filename,
		  "numpy-2.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
	CHECK_INT(p->wheels[0].size, 16000000);
	CHECK_INT(p->wheels[0].line, 46);
	lockfile_free(lf);
	CHECK(lockfile_free(NULL) == NULL);
}

/* What tools/mklock.py writes. */
static void test_minimal(void)
{
	const char *doc =
	    "lock-version = \"1.0\"\n"
	    "created-by = \"sitefs-mklock\"\n"
	    "\n"
	    "[[packages]]\n"
	    "name = \"six\"\n"
	    "version = \"1.16.0\"\n"
	    "wheels = [\n"
	    "  { name = \"six-1.16.0-py2.py3-none-any.whl\", url = "
	    "\"http://127.0.0.1:8080/six-1.16.0-py2.py3-none-any.whl\", size = 11053, "
	    "hashes = { sha256 = \"" SHA_A "\" } },\n"
	    "]\n";
	struct lock_file *lf = NULL;
	char err[512];
	CHECK_INT(lockfile_parse("pylock.toml", doc, strlen(doc), &lf, err, sizeof(err)), 0);
	if (!lf)
		return;
	CHECK_INT(lf->npkgs, 1);
	CHECK_INT(lf->nextras, 0);
	CHECK_INT(lf->ndependency_groups, 0);
	CHECK(lf->requires_python == NULL);
	CHECK_STR(lf->pkgs[0].wheels[0].url,
		  "http://127.0.0.1:8080/six-1.16.0-py2.py3-none-any.whl");
	lockfile_free(lf);

	/* no packages at all is a valid (empty) lock; a newer minor version is read */
	doc = "lock-version = '1.3'\npackages = []\n";
	CHECK_INT(lockfile_parse("p.toml", doc, strlen(doc), &lf, err, sizeof(err)), 0);
	if (lf) {
		CHECK_INT(lf->npkgs, 0);
		CHECK(lf->created_by == NULL);
		lockfile_free(lf);
	}
}

static void test_paths(void)
{
	char *cwd = getcwd(NULL, 0);
	struct {
		const char *lock, *path, *want; /* want NULL: cwd-relative, see below */
	} cases[] = {
	    {"/a/b/pylock.toml", "w/x-1-py3-none-any.whl", "/a/b/w/x-1-py3-none-any.whl"},
	    {"/a/b/pylock.toml", "../x-1-py3-none-any.whl", "/a/x-1-py3-none-any.whl"},
	    {"/a/b/pylock.toml", "../../../../x-1-py3-none-any.whl", "/x-1-py3-none-any.whl"},
	    {"/a/b/pylock.toml", "/abs/x-1-py3-none-any.whl", "/abs/x-1-py3-none-any.whl"},
	    {"/a/./b//pylock.toml", "./w/./x-1-py3-none-any.whl", "/a/b/w/x-1-py3-none-any.whl"},
	    {"/pylock.toml", "x-1-py3-none-any.whl", "/x-1-py3-none-any.whl"},
	    {"pylock.toml", "x-1-py3-none-any.whl", ""},
	    {"sub/pylock.toml", "../w/x-1-py3-none-any.whl", ""},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *doc = xasprintf("lock-version = '1.0'\n[[packages]]\nname = 'x'\n"
				      "[[packages.wheels]]\npath = '%s'\n"
				      "hashes = {sha256 = '" SHA_A "'}\n",
				      cases[i].path);
		struct lock_file *lf = NULL;
		char err[512];
		CHECK_INT(lockfile_parse(cases[i].lock, doc, strlen(doc), &lf, err, sizeof(err)),
			  0);
		free(doc);
		if (!lf)
			continue;
		char *want = NULL;
		if (i == 6)
			want = xasprintf("%s/x-1-py3-none-any.whl", cwd);
		else if (i == 7)
			want = xasprintf("%s/w/x-1-py3-none-any.whl", cwd);
		CHECK_STR(lf->pkgs[0].wheels[0].path, want ? want : cases[i].want);
		CHECK_STR(lf->pkgs[0].wheels[0].filename, "x-1-py3-none-any.whl");
		free(want);
		lockfile_free(lf);
	}
	free(cwd);
}

struct err_case {
	const char *body; /* after lock-version (line 1) */
	const char *want; /* expected message after "pylock.toml:" */
};

#define PKG "[[packages]]\nname = 'foo'\n"
#define WHL "[[packages.wheels]]\n"
#define GOOD_HASH "hashes = {sha256 = '" SHA_A "'}\n"
#define FOO_WHL "name = 'foo-1.0-py3-none-any.whl'\n"

/* clang-format off */
static const struct err_case err_cases[] = {
	{ "", "1:1: no [[packages]] array" },
	{ "packages = 1\n", "2:12: 'packages' must be an array, not an integer" },
	{ "packages = [1]\n", "2:13: items of 'packages' must be tables, not integers" },
	{ "created-by = 1\npackages = []\n", "2:14: 'created-by' must be a string" },
	{ "extras = 'x'\npackages = []\n", "2:10: 'extras' must be an array, not a string" },
	{ "environments = [1]\npackages = []\n", "2:17: items of 'environments' must be strings" },
	{ "default-groups = [true]\npackages = []\n", "2:19: items of 'default-groups'" },
	{ "tool = 1\npackages = []\n", "2:8: 'tool' must be a table" },
	{ "[[packages]]\nversion = '1'\n", "2:1: package has no name" },
	{ "[[packages]]\nname = 'foo bar'\n", "3:8: invalid package name \"foo bar\"" },
	{ "[[packages]]\nname = '-foo'\n", "3:8: invalid package name" },
	{ "[[packages]]\nname = 1\n", "3:8: 'name' must be a string, not an integer" },
	{ PKG "version = 1\n", "4:11: package 'foo': 'version' must be a string" },
	{ PKG "marker = ['x']\n", "4:10: package 'foo': 'marker' must be a string, not an array" },
	{ PKG "dependencies = [1]\n", "4:17: package 'foo': items of 'dependencies' must be tables" },
	{ PKG "wheels = 1\n", "4:10: package 'foo': 'wheels' must be an array" },
	{ PKG "wheels = [1]\n", "4:11: package 'foo': items of 'wheels' must be tables" },
	{ PKG "sdist = 'x'\n", "4:9: package 'foo': 'sdist' must be a table" },
	{ PKG "vcs = {}\ndirectory = {}\n", "2:1: package 'foo': vcs, directory and archive" },
	{ PKG "archive = {}\n" WHL FOO_WHL "path = 'x'\n" GOOD_HASH,
	  "2:1: package 'foo': vcs, directory and archive exclude" },
	{ PKG WHL "size = 1\n" GOOD_HASH, "4:1: package 'foo': wheel has neither url nor path" },
	{ PKG WHL FOO_WHL GOOD_HASH,
	  "4:1: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has neither url nor path" },
	{ PKG WHL FOO_WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\n" GOOD_HASH,
	  "4:1: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has no size: sitefs needs it "
	  "to read the zip directory with a range request" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n",
	  "4:1: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has no hashes" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n"
		  "hashes = {sha512 = 'ab'}\n",
	  "4:1: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has no sha256 hash" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n"
		  "hashes = {sha256 = 1}\n",
	  "7:20: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has no sha256 hash" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n"
		  "hashes = {sha256 = 'abc'}\n",
	  "7:20: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has a malformed sha256 hash" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n"
		  "hashes = {sha256 = '" SHA_A "'.'x'}\n",
	  "" }, /* a TOML error, checked by prefix only */
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n"
		  "hashes = {sha256 = 'g" SHA_A "'}\n",
	  "7:20: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has a malformed" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = 1\n"
		  "hashes = {sha256 = '" SHA_A "z'}\n",
	  "7:20: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has a malformed" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = -1\n" GOOD_HASH,
	  "6:8: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has a negative size" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl'\nsize = '1'\n" GOOD_HASH,
	  "6:8: package 'foo': 'size' must be an integer, not a string" },
	{ PKG WHL "url = 'ftp://h/foo-1.0-py3-none-any.whl'\nsize = 1\n" GOOD_HASH,
	  "5:7: package 'foo': wheel url \"ftp://h/foo-1.0-py3-none-any.whl\" is not http" },
	{ PKG WHL "url = 'foo-1.0-py3-none-any.whl'\nsize = 1\n" GOOD_HASH,
	  "5:7: package 'foo': wheel url" },
	{ PKG WHL "url = 'file://host/foo-1.0-py3-none-any.whl'\n" GOOD_HASH,
	  "5:7: package 'foo': wheel url \"file://host/foo-1.0-py3-none-any.whl\" is not a local" },
	{ PKG WHL "url = 'https://h/dir/'\nsize = 1\n" GOOD_HASH,
	  "4:1: package 'foo': cannot take a wheel filename from \"https://h/dir/\"" },
	{ PKG WHL "url = 'https://h/foo-1.0-py3-none-any.whl%zz'\nsize = 1\n" GOOD_HASH,
	  "4:1: package 'foo': cannot take a wheel filename" },
	{ PKG WHL "url = 'https://h/x%2Ffoo-1.0-py3-none-any.whl'\nsize = 1\n" GOOD_HASH,
	  "4:1: package 'foo': \"x/foo-1.0-py3-none-any.whl\" is not a valid wheel filename" },
	{ PKG WHL "url = 'https://h/foo-1.0.tar.gz'\nsize = 1\n" GOOD_HASH,
	  "4:1: package 'foo': \"foo-1.0.tar.gz\" is not a valid wheel filename" },
	{ PKG WHL "name = '../foo-1.0-py3-none-any.whl'\npath = 'x'\n" GOOD_HASH,
	  "4:1: package 'foo': \"../foo-1.0-py3-none-any.whl\" is not a valid wheel filename" },
	{ PKG WHL "path = 'w/bar-1.0-py3-none-any.whl'\n" GOOD_HASH,
	  "4:1: package 'foo': wheel 'bar-1.0-py3-none-any.whl' belongs to another project" },
	{ PKG "wheels = [{path = 'foo-1.0-py3-none-any.whl', " GOOD_HASH "}]\n",
	  "" }, /* a TOML error (the newline inside the inline table) */
	{ PKG "wheels = [\n  {path = 'foo-1.0-py3-none-any.whl'}]\n",
	  "5:3: package 'foo': wheel 'foo-1.0-py3-none-any.whl' has no hashes" },
	{ PKG "[[packages]]\nname = 'ok'\n[[packages]]\nname = 'bar'\n" WHL
	      "path = 'bar-1-py3-none-any.whl'\n",
	  "8:1: package 'bar': wheel 'bar-1-py3-none-any.whl' has no hashes" },
	{ "packages = []\na = ", "3:5: expected a value" },
};
/* clang-format on */

static void test_errors(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(err_cases); i++) {
		char *doc = xasprintf("lock-version = '1.0'\n%s", err_cases[i].body);
		struct lock_file *lf = (struct lock_file *)0x1;
		char err[512] = "";
		int r = lockfile_parse("pylock.toml", doc, strlen(doc), &lf, err, sizeof(err));
		char *want = xasprintf("pylock.toml:%s", err_cases[i].want);
		bool ok =
		    r == -EINVAL && lf == (struct lock_file *)0x1 && str_startswith(err, want);
		if (!ok)
			fprintf(stderr, "error case %zu:\n%s\n  got r=%d \"%s\"\n  want \"%s\"\n",
				i, doc, r, err, want);
		CHECK(ok);
		if (r == 0)
			lockfile_free(lf);
		free(want);
		free(doc);
	}

	/* lock-version */
	static const char *const versions[][2] = {
	    {"", "1:1: no lock-version"},
	    {"lock-version = 1.0\n", "1:16: 'lock-version' must be a string, not a float"},
	    {"lock-version = '2.0'\n", "1:16: unsupported lock-version \"2.0\""},
	    {"lock-version = '0.9'\n", "1:16: unsupported lock-version"},
	    {"lock-version = '11.0'\n", "1:16: unsupported lock-version"},
	    {"lock-version = '1'\n", "1:16: malformed lock-version \"1\""},
	    {"lock-version = '1.'\n", "1:16: malformed lock-version"},
	    {"lock-version = '1.0.0'\n", "1:16: malformed lock-version"},
	    {"lock-version = 'v1.0'\n", "1:16: malformed lock-version"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(versions); i++) {
		char *doc = xasprintf("%spackages = []\n", versions[i][0]);
		struct lock_file *lf = NULL;
		char err[512] = "";
		int r = lockfile_parse("x/pylock.toml", doc, strlen(doc), &lf, err, sizeof(err));
		char *want = xasprintf("x/pylock.toml:%s", versions[i][1]);
		CHECK_INT(r, -EINVAL);
		if (!str_startswith(err, want))
			fprintf(stderr, "lock-version case %zu: got \"%s\"\n", i, err);
		CHECK(str_startswith(err, want));
		free(want);
		free(doc);
		if (r == 0)
			lockfile_free(lf);
	}
	/* NULL / tiny error buffers */
	struct lock_file *lf = NULL;
	CHECK_INT(lockfile_parse("p", "x", 1, &lf, NULL, 0), -EINVAL);
	char tiny[8];
	CHECK_INT(lockfile_parse("pylock.toml", "packages = []", 13, &lf, tiny, sizeof(tiny)),
		  -EINVAL);
	CHECK_STR(tiny, "pylock.");
}

static void test_load(void)
{
	char dir[] = "/tmp/sitefs-lock-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char *path = xasprintf("%s/pylock.toml", dir);
	char err[512];
	struct lock_file *lf = NULL;

	CHECK_INT(lockfile_load(path, &lf, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "pylock.toml: No such file") != NULL);
	CHECK_INT(lockfile_load(dir, &lf, err, sizeof(err)), -EISDIR);
	CHECK(lf == NULL);

	CHECK_INT(file_write_atomic(path, full_lock, sizeof(full_lock) - 1, 0644), 0);
	CHECK_INT(lockfile_load(path, &lf, err, sizeof(err)), 0);
	if (lf) {
		CHECK_INT(lf->npkgs, 4);
		char *want = xasprintf("%s/local/typing_extensions-4.12.2-py3-none-any.whl", dir);
		CHECK_STR(lf->pkgs[1].wheels[1].path, want);
		free(want);
		lockfile_free(lf);
	}
	unlink(path);
	free(path);
	rmdir(dir);
}

int main(void)
{
	test_full();
	test_minimal();
	test_paths();
	test_errors();
	test_load();
	return check_done("lockfile");
}
