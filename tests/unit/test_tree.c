/* test_tree: the venv tree builder.
 *
 * Part 1 builds wheel metadata by hand (struct zip_cd and the kept files)
 * and checks paths, modes, sizes, RECORD rows, launcher text, warnings and
 * errors.  Part 2 compares against the real thing: tree_ref.py builds
 * wheels, installs them with venv + pip 23 and prints the central
 * directories and the resulting venv; every path, type, mode, size, sha256
 * and link target must match (skipped when /usr/bin/python3 or Debian's pip
 * wheel is missing). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "fs/tree.h"

/* ---- hand-built wheels ---- */

enum { F_UNLISTED = 1, F_NOKEEP = 2, F_NOHASH = 4 };

struct hw {
	struct zip_entry *e;
	size_t n, cap;
	struct wheel_file *f;
	size_t nf, capf;
	struct zip_cd cd;
	struct wheel_meta meta;
	struct buf record;
	char *info;
};

static void hw_init(struct hw *w, const char *info)
{
	memset(w, 0, sizeof(*w));
	buf_init(&w->record);
	w->info = xstrdup(info);
}

static void hw_keep(struct hw *w, const char *name, const void *data, size_t len)
{
	if (w->nf == w->capf) {
		w->capf = w->capf ? 2 * w->capf : 8;
		w->f = xrealloc(w->f, w->capf * sizeof(*w->f));
	}
	w->f[w->nf].name = xstrdup(name);
	w->f[w->nf].data = xmalloc(len ? len : 1);
	memcpy(w->f[w->nf].data, data, len);
	w->f[w->nf].len = len;
	w->nf++;
}

static void hw_entry(struct hw *w, const char *name, uint32_t mode, const char *data, int flags)
{
	size_t len = data ? strlen(data) : 0;

	if (w->n == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 16;
		w->e = xrealloc(w->e, w->cap * sizeof(*w->e));
	}
	memset(&w->e[w->n], 0, sizeof(w->e[w->n]));
	w->e[w->n].name = xstrdup(name);
	w->e[w->n].method = ZIP_METHOD_DEFLATED;
	w->e[w->n].usize = len;
	w->e[w->n].csize = len;
	w->e[w->n].mode = mode;
	w->e[w->n].mtime = 1600000000 + (int64_t)w->n;
	w->n++;
	if (str_endswith(name, "/"))
		return;
	if (tree_wants_file(name) && !(flags & F_NOKEEP))
		hw_keep(w, name, data ? data : "", len);
	if (!(flags & F_UNLISTED)) {
		uint8_t sha[32];
		char b64[48];

		sha256_buf(data ? data : "", len, sha);
		b64url_encode(sha, 32, b64);
		if (flags & F_NOHASH)
			buf_printf(&w->record, "%s,,\n", name);
		else
			buf_printf(&w->record, "%s,sha256=%s,%zu\n", name, b64, len);
	}
}

static void hw_file(struct hw *w, const char *name, const char *data)
{
	hw_entry(w, name, S_IFREG | 0644, data, 0);
}

static void hw_std(struct hw *w, const char *name, const char *ver)
{
	char *p = xasprintf("%s/METADATA", w->info);
	char *m = xasprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n\n", name, ver);

	hw_file(w, p, m);
	free(p);
	free(m);
	p = xasprintf("%s/WHEEL", w->info);
	hw_file(w, p,
		"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n");
	free(p);
}

static int cmp_wf(const void *a, const void *b)
{
	return strcmp(((const struct wheel_file *)a)->name, ((const struct wheel_file *)b)->name);
}

/* Adds RECORD (unless record is false) and wires cd and meta. */
static void hw_done(struct hw *w, bool record)
{
	if (record) {
		char *p = xasprintf("%s/RECORD", w->info);

		buf_printf(&w->record, "%s,,\n", p);
		hw_entry(w, p, S_IFREG | 0644, (const char *)w->record.data, F_UNLISTED);
		free(p);
	}
	if (w->nf)
		qsort(w->f, w->nf, sizeof(*w->f), cmp_wf);
	w->cd.entries = w->e;
	w->cd.n = w->n;
	w->meta.cd = &w->cd;
	w->meta.files = w->f;
	w->meta.nfiles = w->nf;
}

static void hw_free(struct hw *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->e[i].name);
	free(w->e);
	w->meta.cd = NULL; /* hand-built: not zipcd_parse's */
	wheel_meta_clear(&w->meta);
	buf_free(&w->record);
	free(w->info);
}

static struct tree_opts opts_for(const char *root, const char *stdlib)
{
	struct tree_opts o = {
	    .venv_root = root,
	    .installer = "sitefs",
	    .py = {.executable = "/usr/bin/python3",
		   .version = "3.11.2",
		   .major = 3,
		   .minor = 11,
		   .stdlib = stdlib},
	    .mtime = 1700000000,
	};
	return o;
}

static char *text_of(const struct tree *t, int64_t i)
{
	if (i < 0 || t->nodes[i].kind != TREE_DATA)
		return xstrdup("(not data)");
	return xstrndup((const char *)t->blob + t->nodes[i].data.off, t->nodes[i].size);
}

static const char *link_of(const struct tree *t, int64_t i)
{
	if (i < 0 || t->nodes[i].kind != TREE_LINK)
		return "(not a link)";
	return t->strings + t->nodes[i].link.target;
}

static uint32_t mode_of(const struct tree *t, const char *path)
{
	int64_t i = tree_lookup_path(t, path);

	return i < 0 ? 0 : t->nodes[i].mode;
}

static uint64_t size_of(const struct tree *t, const char *path)
{
	int64_t i = tree_lookup_path(t, path);

	return i < 0 ? UINT64_MAX : t->nodes[i].size;
}

/* Structural invariants every tree must hold. */
static void check_invariants(const struct tree *t)
{
	char path[4096];
	size_t children = 0;

	CHECK(t->n > 0 && t->nodes[0].kind == TREE_DIR && t->nodes[0].parent == 0);
	for (size_t i = 0; i < t->n; i++) {
		const struct tree_node *nd = &t->nodes[i];

		if (i > 0) {
			int64_t back;

			CHECK(nd->parent < t->n && t->nodes[nd->parent].kind == TREE_DIR);
			back = tree_lookup(t, nd->parent, tree_name(t, nd));
			if (back != (int64_t)i)
				fprintf(stderr, "node %zu \"%s\" not found under its parent\n", i,
					tree_name(t, nd));
			CHECK(back == (int64_t)i);
			CHECK(tree_path(t, (uint32_t)i, path, sizeof(path)) > 0);
			CHECK(tree_lookup_path(t, path) == (int64_t)i);
		}
		if (nd->kind != TREE_DIR)
			continue;
		children += nd->dir.count;
		for (uint32_t k = 1; k < nd->dir.count; k++) {
			const char *a = tree_name(t, &t->nodes[t->children[nd->dir.first + k - 1]]);
			const char *b = tree_name(t, &t->nodes[t->children[nd->dir.first + k]]);

			CHECK(strcmp(a, b) < 0);
		}
	}
	CHECK_INT(children, t->n - 1);
}

static bool has_line(const char *text, const char *line)
{
	size_t l = strlen(line);

	for (const char *p = text; (p = strstr(p, line)); p++)
		if ((p == text || p[-1] == '\n') && (p[l] == '\0' || p[l] == '\r'))
			return true;
	return false;
}

/* ---- part 1 ---- */

static void test_wants(void)
{
	static const struct {
		const char *name;
		bool want;
	} cases[] = {
	    {"a-1.dist-info/RECORD", true},
	    {"a-1.dist-info/WHEEL", true},
	    {"a-1.dist-info/entry_points.txt", true},
	    {"a-1.dist-info/METADATA", true},
	    {"a-1.dist-info/LICENSE", false},
	    {"a-1.dist-info/sub/RECORD", false},
	    {"x/a-1.dist-info/RECORD", false},
	    {".dist-info/RECORD", false},
	    {"a-1.data/scripts/x", true},
	    {"a-1.data/scripts/sub/x", true},
	    {"a-1.data/scripts/", false},
	    {"a-1.data/purelib/x", false},
	    {"pkg/a-1.data/scripts/x", false},
	    {"RECORD", false},
	    {"a/b.py", false},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		if (tree_wants_file(cases[i].name) != cases[i].want)
			fprintf(stderr, "tree_wants_file(\"%s\")\n", cases[i].name);
		CHECK(tree_wants_file(cases[i].name) == cases[i].want);
	}
}

static void test_meta(void)
{
	struct wheel_meta m = {0};
	const char *names[] = {"a/RECORD", "b/WHEEL", "c", "d/x"};

	m.files = xcalloc(4, sizeof(*m.files));
	for (size_t i = 0; i < 4; i++) {
		m.files[i].name = xstrdup(names[i]);
		m.files[i].data = (uint8_t *)xstrdup(names[i]);
		m.files[i].len = strlen(names[i]);
	}
	m.nfiles = 4;
	for (size_t i = 0; i < 4; i++)
		CHECK(wheel_meta_file(&m, names[i]) == &m.files[i]);
	CHECK(wheel_meta_file(&m, "b") == NULL);
	CHECK(wheel_meta_file(&m, "e") == NULL);
	CHECK(wheel_meta_file(&m, "") == NULL);
	CHECK(wheel_meta_file(NULL, "a") == NULL);
	wheel_meta_clear(&m);
	CHECK(m.files == NULL && m.nfiles == 0 && m.cd == NULL);
	wheel_meta_clear(&m);
	wheel_meta_clear(NULL);
}

static void build_demo(struct hw *w)
{
	hw_init(w, "demo-1.0.dist-info");
	hw_entry(w, "demo/", S_IFDIR | 0755, NULL, 0);
	hw_entry(w, "demo/empty/", S_IFDIR | 0755, NULL, 0);
	hw_file(w, "demo/__init__.py", "X = 1\n");
	hw_entry(w, "demo/run.sh", S_IFREG | 0755, "#!/bin/sh\n", 0);
	hw_entry(w, "demo/dos.txt", 0, "made on DOS\n", 0);
	hw_entry(w, "demo/extra.txt", S_IFREG | 0644, "not in RECORD\n", F_UNLISTED);
	hw_entry(w, "demo/nohash.txt", S_IFREG | 0644, "no hash\n", F_NOHASH);
	hw_entry(w, "demo-1.0.data/scripts/fix", S_IFREG | 0644, "#!python -u\nprint(1)\n", 0);
	hw_entry(w, "demo-1.0.data/scripts/fixw", S_IFREG | 0755, "#!pythonw", 0);
	hw_entry(w, "demo-1.0.data/scripts/keep", S_IFREG | 0755, "#!/bin/sh\necho\n", 0);
	hw_entry(w, "demo-1.0.data/scripts/democli", S_IFREG | 0755, "#!python\nwrapper\n", 0);
	hw_entry(w, "demo-1.0.data/scripts/democli.exe", S_IFREG | 0755, "MZ", 0);
	hw_file(w, "demo-1.0.data/purelib/demo/p.py", "P = 1\n");
	hw_entry(w, "demo-1.0.data/platlib/demo/q.so", S_IFREG | 0755, "ELF", 0);
	hw_file(w, "demo-1.0.data/headers/demo.h", "int demo;\n");
	hw_file(w, "demo-1.0.data/data/share/demo/x.txt", "x\n");
	hw_std(w, "demo", "1.0");
	hw_file(w, "demo-1.0.dist-info/entry_points.txt",
		"[console_scripts]\r\ndemocli = demo.cli:main\n"
		"  spaced=demo.cli:main.sub [extra]  \n"
		"[gui_scripts]\ndemogui = demo.gui:run.part\n");
	hw_done(w, true);
}

static const char LAUNCHER_TAIL[] =
    "# -*- coding: utf-8 -*-\n"
    "import re\n"
    "import sys\n"
    "from demo.gui import run\n"
    "if __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "    sys.exit(run.part())\n";

static void test_demo(void)
{
	struct hw w;
	struct tree_opts o = opts_for("/venvs//demo/", NULL);
	struct tree_wheel tw = {.filename = "demo-1.0-py3-none-any.whl", .requested = true};
	struct tree *t = NULL;
	char err[512], *s, *exp;
	int64_t i;
	int r;

	build_demo(&w);
	tw.meta = &w.meta;
	r = tree_build(&o, &tw, 1, &t, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0) {
		fprintf(stderr, "%s\n", err);
		hw_free(&w);
		return;
	}
	check_invariants(t);
	CHECK_INT(t->nwarnings, 0);

	/* skeleton */
	s = text_of(t, tree_lookup_path(t, "pyvenv.cfg"));
	CHECK(str_startswith(s, "home = /usr/bin\ninclude-system-site-packages = false\n"
				"version = 3.11.2\nexecutable = /"));
	CHECK(str_endswith(s, "\ncommand = /usr/bin/python3 -m venv /venvs/demo\n"));
	free(s);
	CHECK_STR(link_of(t, tree_lookup_path(t, "bin/python3")), "/usr/bin/python3");
	CHECK_STR(link_of(t, tree_lookup_path(t, "bin/python")), "python3");
	CHECK_STR(link_of(t, tree_lookup_path(t, "bin/python3.11")), "python3");
	CHECK_STR(link_of(t, tree_lookup_path(t, "lib64")), "lib");
	CHECK_INT(mode_of(t, "lib64"), S_IFLNK | 0777);
	CHECK_INT(size_of(t, "lib64"), 3);
	CHECK_INT(mode_of(t, "include/python3.11"), S_IFDIR | 0755);
	CHECK_INT(mode_of(t, "lib/python3.11/site-packages"), S_IFDIR | 0755);
	CHECK(tree_lookup_path(t, "bin/activate") < 0); /* no stdlib given */

	/* root files */
	i = tree_lookup_path(t, "lib/python3.11/site-packages/demo/__init__.py");
	CHECK(i > 0);
	if (i > 0) {
		const struct tree_node *nd = &t->nodes[i];

		CHECK_INT(nd->kind, TREE_BODY);
		CHECK_INT(nd->mode, S_IFREG | 0644);
		CHECK_INT(nd->size, 6);
		CHECK_INT(nd->mtime, 1600000002);
		CHECK_INT(nd->body.wheel, 0);
		CHECK_STR(w.e[nd->body.entry].name, "demo/__init__.py");
		CHECK_INT(nd->has_sha, 1);
		uint8_t sha[32];
		sha256_buf("X = 1\n", 6, sha);
		CHECK(memcmp(sha, nd->sha256, 32) == 0);
	}
	CHECK_INT(mode_of(t, "lib/python3.11/site-packages/demo/run.sh"), S_IFREG | 0755);
	CHECK_INT(mode_of(t, "lib/python3.11/site-packages/demo/dos.txt"), S_IFREG | 0644);
	i = tree_lookup_path(t, "lib/python3.11/site-packages/demo/extra.txt");
	CHECK(i > 0 && t->nodes[i].has_sha == 0 && t->nodes[i].kind == TREE_BODY);
	i = tree_lookup_path(t, "lib/python3.11/site-packages/demo/nohash.txt");
	CHECK(i > 0 && t->nodes[i].has_sha == 0);
	CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/demo/empty") < 0);
	i = tree_lookup_path(t, "lib/python3.11/site-packages/demo");
	CHECK(i > 0 && t->nodes[i].kind == TREE_DIR && t->nodes[i].mtime == 1700000000);

	/* .data */
	CHECK_INT(mode_of(t, "lib/python3.11/site-packages/demo/p.py"), S_IFREG | 0644);
	CHECK_INT(mode_of(t, "lib/python3.11/site-packages/demo/q.so"), S_IFREG | 0755);
	CHECK_INT(size_of(t, "include/site/python3.11/demo/demo.h"), 10);
	CHECK_INT(size_of(t, "share/demo/x.txt"), 2);
	CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/demo-1.0.data") < 0);

	/* scripts: #!python rewritten (arguments dropped), mode kept from the zip */
	i = tree_lookup_path(t, "bin/fix");
	s = text_of(t, i);
	CHECK_STR(s, "#!/venvs/demo/bin/python\nprint(1)\n");
	free(s);
	CHECK_INT(mode_of(t, "bin/fix"), S_IFREG | 0644);
	CHECK(i > 0 && t->nodes[i].mtime == 1700000000 && t->nodes[i].has_sha);
	s = text_of(t, tree_lookup_path(t, "bin/fixw"));
	CHECK_STR(s, "#!/venvs/demo/bin/python\n");
	free(s);
	CHECK_INT(mode_of(t, "bin/fixw"), S_IFREG | 0755);
	i = tree_lookup_path(t, "bin/keep");
	CHECK(i > 0 && t->nodes[i].kind == TREE_BODY && t->nodes[i].mode == (S_IFREG | 0755));
	CHECK(tree_lookup_path(t, "bin/democli.exe") < 0); /* setuptools wrapper: skipped */

	/* launchers */
	s = text_of(t, tree_lookup_path(t, "bin/demogui"));
	exp = xasprintf("#!/venvs/demo/bin/python\n%s", LAUNCHER_TAIL);
	CHECK_STR(s, exp);
	free(exp);
	free(s);
	CHECK_INT(mode_of(t, "bin/demogui"), S_IFREG | 0755);
	s = text_of(t, tree_lookup_path(t, "bin/democli"));
	CHECK(strstr(s, "\nfrom demo.cli import main\n") && strstr(s, "sys.exit(main())\n"));
	CHECK(!strstr(s, "wrapper"));
	free(s);
	s = text_of(t, tree_lookup_path(t, "bin/spaced"));
	CHECK(strstr(s, "\nfrom demo.cli import main\n") && strstr(s, "sys.exit(main.sub())\n"));
	free(s);

	/* dist-info additions */
	s = text_of(t, tree_lookup_path(t, "lib/python3.11/site-packages/demo-1.0.dist-info/"
					   "INSTALLER"));
	CHECK_STR(s, "sitefs\n");
	free(s);
	CHECK_INT(size_of(t, "lib/python3.11/site-packages/demo-1.0.dist-info/REQUESTED"), 0);
	i = tree_lookup_path(t, "lib/python3.11/site-packages/demo-1.0.dist-info/RECORD");
	s = text_of(t, i);
	CHECK(i > 0 && t->nodes[i].mode == (S_IFREG | 0644));
	CHECK(has_line(s, "demo-1.0.dist-info/RECORD,,"));
	CHECK(has_line(s, "demo/extra.txt,,"));
	CHECK(has_line(s, "demo/nohash.txt,,"));
	CHECK(has_line(s, "demo-1.0.dist-info/INSTALLER,"
			  "sha256=dPr3le-3CqN0OXiG9cd2RTb5mBI2b_qwBzunv5cb9Y0,7"));
	CHECK(has_line(s, "demo-1.0.dist-info/REQUESTED,"
			  "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0"));
	CHECK(has_line(s, "demo/__init__.py,sha256=Crrh4K5yghbuRJk8Wjp1X4scOH2Uf8TE9yyrDkqEIUs,6"));
	CHECK(has_line(s, "../../../include/site/python3.11/demo/demo.h,"
			  "sha256=me0tbX_fNecPNKwvhoJd1YMtSG6s3fVsoOCq1dmhwUs,10"));
	CHECK(has_line(s, "../../../share/demo/x.txt,"
			  "sha256=c8s4WKaHqElMozIwUwFigvPa051Cz2LKTnndoqrH2aw,2"));
	CHECK(has_line(s, "demo/p.py,sha256=y9wdoDo9_kL7rVrYgAm8vCzTc_9USEY5-J1qLw3FJfk,6"));
	/* the rewritten script is rehashed; the skipped wrapper keeps its row */
	CHECK(
	    has_line(s, "../../../bin/fix,sha256=p13b-61xAjSd-S92wnPjYNwpeyxN8G3A5gq0s-E-xcg,34"));
	CHECK(has_line(s, "demo-1.0.data/scripts/democli,"
			  "sha256=X0VDTlV8NlF3aCrPF5AIvVCWjoEmpAdgyoSHfgeAfc0,17"));
	CHECK(
	    has_line(s, "../../../bin/keep,sha256=xOcTm9McoWofhgYl6L4fVgouCwRZ82EJdac6Yc5greE,15"));
	/* rows sorted, CRLF */
	{
		const char *p = s, *prev = NULL;
		size_t prevlen = 0, rows = 0;
		bool sorted = true, crlf = true;

		while (*p) {
			const char *e = strstr(p, "\r\n");

			if (!e) {
				crlf = false;
				break;
			}
			if (prev && strncmp(prev, p, MIN(prevlen, (size_t)(e - p))) > 0)
				sorted = false;
			prev = p;
			prevlen = (size_t)(e - p);
			p = e + 2;
			rows++;
		}
		CHECK(sorted);
		CHECK(crlf);
		CHECK_INT(rows, 23);
	}
	free(s);

	/* stats */
	CHECK(t->nbodies > 0 && t->nfiles > t->nbodies && t->body_bytes > 0);

	/* lookups */
	CHECK(tree_lookup_path(t, "") == 0);
	CHECK(tree_lookup_path(t, "/bin//python/") == tree_lookup_path(t, "bin/python"));
	CHECK(tree_lookup(t, (uint32_t)tree_lookup_path(t, "bin/python"), "x") < 0);
	CHECK(tree_lookup(t, 0, "nope") < 0);
	CHECK(tree_lookup(t, (uint32_t)t->n, "bin") < 0);
	{
		char buf[64];
		int64_t j = tree_lookup_path(t, "include/site/python3.11/demo/demo.h");

		CHECK_INT(tree_path(t, (uint32_t)j, buf, sizeof(buf)), 35);
		CHECK_STR(buf, "include/site/python3.11/demo/demo.h");
		CHECK_INT(tree_path(t, (uint32_t)j, buf, 35), -ENAMETOOLONG);
		CHECK_INT(tree_path(t, 0, buf, sizeof(buf)), 0);
		CHECK_STR(buf, "");
		CHECK_INT(tree_path(t, (uint32_t)t->n, buf, sizeof(buf)), -EINVAL);
	}
	tree_free(t);
	hw_free(&w);
}

/* venv templates: placeholders, shlex/ps1 quoting when the venv module does
 * it, modes copied. */
static void test_templates(void)
{
	char dir[] = "/tmp/test_tree.XXXXXX";
	struct tree *t = NULL;
	char err[256], *p, *s;
	struct tree_opts o;
	int r;

	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	p = xasprintf("%s/venv/scripts/common", dir);
	mkdir_p(p, 0755);
	free(p);
	p = xasprintf("%s/venv/scripts/posix", dir);
	mkdir_p(p, 0755);
	free(p);
	static const char tmpl[] = "D=__VENV_DIR__ N=__VENV_NAME__ P=__VENV_PROMPT__ "
				   "B=__VENV_BIN_NAME__ Y=__VENV_PYTHON__\n";
	p = xasprintf("%s/venv/scripts/common/activate", dir);
	file_write_atomic(p, tmpl, strlen(tmpl), 0644);
	free(p);
	p = xasprintf("%s/venv/scripts/common/Activate.ps1", dir);
	file_write_atomic(p, tmpl, strlen(tmpl), 0644);
	free(p);
	p = xasprintf("%s/venv/scripts/posix/activate.fish", dir);
	file_write_atomic(p, tmpl, strlen(tmpl), 0640);
	free(p);

	/* old style: plain substitution */
	o = opts_for("/tmp/my venv", dir);
	r = tree_build(&o, NULL, 0, &t, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0) {
		check_invariants(t);
		s = text_of(t, tree_lookup_path(t, "bin/activate"));
		CHECK_STR(s, "D=/tmp/my venv N=my venv P=(my venv)  B=bin "
			     "Y=/tmp/my venv/bin/python3\n");
		free(s);
		CHECK_INT(mode_of(t, "bin/activate"), S_IFREG | 0644);
		CHECK_INT(mode_of(t, "bin/activate.fish"), S_IFREG | 0640);
		CHECK(tree_lookup_path(t, "bin/Activate.ps1") > 0);
		tree_free(t);
		t = NULL;
	}

	/* gh-124651 style: quoted */
	p = xasprintf("%s/venv/__init__.py", dir);
	file_write_atomic(p, "quote = shlex.quote\n", 20, 0644);
	free(p);
	o = opts_for("/tmp/it's", dir);
	o.py.executable = "/opt/py/bin/python3.11";
	r = tree_build(&o, NULL, 0, &t, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r == 0) {
		s = text_of(t, tree_lookup_path(t, "bin/activate"));
		CHECK_STR(s, "D='/tmp/it'\"'\"'s' N='it'\"'\"'s' P='(it'\"'\"'s) ' B=bin "
			     "Y='/tmp/it'\"'\"'s/bin/python3.11'\n");
		free(s);
		s = text_of(t, tree_lookup_path(t, "bin/Activate.ps1"));
		CHECK_STR(s, "D='/tmp/it''s' N='it''s' P='(it''s) ' B='bin' "
			     "Y='/tmp/it''s/bin/python3.11'\n");
		free(s);
		/* bin links follow the executable's name */
		CHECK_STR(link_of(t, tree_lookup_path(t, "bin/python3.11")),
			  "/opt/py/bin/python3.11");
		CHECK_STR(link_of(t, tree_lookup_path(t, "bin/python")), "python3.11");
		CHECK_STR(link_of(t, tree_lookup_path(t, "bin/python3")), "python3.11");
		s = text_of(t, tree_lookup_path(t, "pyvenv.cfg"));
		CHECK(str_startswith(s, "home = /opt/py/bin\n"));
		CHECK(str_endswith(s, "command = /opt/py/bin/python3.11 -m venv /tmp/it's\n"));
		free(s);
		tree_free(t);
	}
	rm_rf(dir);
}

/* Long and spaced venv paths get distlib's /bin/sh trampoline. */
static void test_shebangs(void)
{
	struct hw w;
	struct tree_wheel tw = {.filename = "demo-1.0-py3-none-any.whl"};
	char longroot[160], err[256];
	struct tree *t = NULL;
	struct tree_opts o;
	char *s, *exp;

	build_demo(&w);
	tw.meta = &w.meta;
	o = opts_for("/with space", NULL);
	CHECK_INT(tree_build(&o, &tw, 1, &t, err, sizeof(err)), 0);
	if (t) {
		s = text_of(t, tree_lookup_path(t, "bin/demogui"));
		exp = xasprintf("#!/bin/sh\n'''exec' \"/with space/bin/python\" \"$0\" \"$@\"\n"
				"' '''\n%s",
				LAUNCHER_TAIL);
		CHECK_STR(s, exp);
		free(exp);
		free(s);
		/* #!python scripts get the plain path, unquoted */
		s = text_of(t, tree_lookup_path(t, "bin/fix"));
		CHECK_STR(s, "#!/with space/bin/python\nprint(1)\n");
		free(s);
		CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/demo-1.0.dist-info/"
					  "REQUESTED") < 0);
		t = tree_free(t);
	}
	/* 124 bytes of "#!" + path + "\n" is still plain, 128 is not */
	memset(longroot, 0, sizeof(longroot));
	longroot[0] = '/';
	memset(longroot + 1, 'x', 111);
	o = opts_for(longroot, NULL); /* "/xxx" 112 + "/bin/python" 11 = 123 + 3 = 126 */
	CHECK_INT(tree_build(&o, &tw, 1, &t, err, sizeof(err)), 0);
	if (t) {
		s = text_of(t, tree_lookup_path(t, "bin/demogui"));
		CHECK(str_startswith(s, "#!/xxx") && !str_startswith(s, "#!/bin/sh"));
		free(s);
		t = tree_free(t);
	}
	memset(longroot + 1, 'x', 114); /* 129 */
	o = opts_for(longroot, NULL);
	CHECK_INT(tree_build(&o, &tw, 1, &t, err, sizeof(err)), 0);
	if (t) {
		s = text_of(t, tree_lookup_path(t, "bin/demogui"));
		CHECK(str_startswith(s, "#!/bin/sh\n'''exec' /xxx"));
		free(s);
		t = tree_free(t);
	}
	hw_free(&w);
}

/* A namespace package over two wheels, one path written by both. */
static void test_two_wheels(void)
{
	struct hw a, b;
	struct tree_wheel tw[2] = {{.filename = "nsa-1-py3-none-any.whl", .requested = true},
				   {.filename = "nsb-1-py3-none-any.whl", .requested = false}};
	struct tree_opts o = opts_for("/v", NULL);
	struct tree *t = NULL;
	char err[256];
	int64_t i;

	hw_init(&a, "nsa-1.dist-info");
	hw_file(&a, "ns/a/__init__.py", "A\n");
	hw_file(&a, "ns/common.txt", "from a\n");
	hw_file(&a, "nsa-1.data/data/bin/activate", "not the venv's\n");
	hw_std(&a, "nsa", "1");
	hw_done(&a, true);
	hw_init(&b, "nsb-1.dist-info");
	hw_file(&b, "ns/b/__init__.py", "B\n");
	hw_file(&b, "ns/common.txt", "from b, longer\n");
	hw_file(&b, "nsb-1.data/data/lib64/python3.11/site-packages/viaLink.txt", "L\n");
	hw_std(&b, "nsb", "1");
	hw_done(&b, true);
	tw[0].meta = &a.meta;
	tw[1].meta = &b.meta;
	CHECK_INT(tree_build(&o, tw, 2, &t, err, sizeof(err)), 0);
	if (t) {
		check_invariants(t);
		CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/ns/a/__init__.py") > 0);
		CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/ns/b/__init__.py") > 0);
		i = tree_lookup_path(t, "lib/python3.11/site-packages/ns/common.txt");
		CHECK(i > 0 && t->nodes[i].body.wheel == 1 && t->nodes[i].size == 15);
		CHECK_INT(t->nwarnings, 1);
		if (t->nwarnings == 1) {
			CHECK(strstr(t->warnings[0], "lib/python3.11/site-packages/ns/common.txt"));
			CHECK(strstr(t->warnings[0], "nsa-1-py3-none-any.whl"));
			CHECK(strstr(t->warnings[0], "nsb-1-py3-none-any.whl"));
		}
		/* lib64 -> lib is followed */
		CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/viaLink.txt") > 0);
		CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/nsa-1.dist-info/"
					  "REQUESTED") > 0);
		CHECK(tree_lookup_path(t, "lib/python3.11/site-packages/nsb-1.dist-info/"
					  "REQUESTED") < 0);
		t = tree_free(t);
	}
	hw_free(&a);
	hw_free(&b);

	/* the skeleton's files can be overwritten too, with a warning */
	hw_init(&a, "nsa-1.dist-info");
	hw_file(&a, "nsa-1.data/data/bin/activate", "not the venv's\n");
	hw_file(&a, "nsa-1.data/data/pyvenv.cfg", "home = /elsewhere\n");
	hw_std(&a, "nsa", "1");
	hw_done(&a, true);
	tw[0].meta = &a.meta;
	CHECK_INT(tree_build(&o, tw, 1, &t, err, sizeof(err)), 0);
	if (t) {
		i = tree_lookup_path(t, "pyvenv.cfg");
		CHECK(i > 0 && t->nodes[i].kind == TREE_BODY);
		CHECK_INT(t->nwarnings, 1);
		t = tree_free(t);
	}
	hw_free(&a);
}

/* Wheels we must refuse, and the message must name wheel and entry. */
static void test_errors(void)
{
	static const struct {
		const char *what, *expect;
	} cases[] = {
	    {"no dist-info", "dist-info directory not found"},
	    {"two dist-info", "multiple .dist-info directories"},
	    {"no WHEEL", "x-1.dist-info/WHEEL"},
	    {"no RECORD", "x-1.dist-info/RECORD"},
	    {"Wheel-Version 2", "Wheel-Version (2.0)"},
	    {"Wheel-Version junk", "invalid Wheel-Version"},
	    {"no Wheel-Version", "missing Wheel-Version"},
	    {"bad key", "unknown scheme key \"lib\""},
	    {"data no subpath", "x-1.data/purelib"},
	    {"no suffix", "a callable suffix is required"},
	    {"bad brackets", "invalid entry point specification"},
	    {"script body missing", "x-1.data/scripts/s"},
	    {"name mismatch", "does not start with"},
	    {"RECORD not utf-8", "error decoding"},
	    {"entry points line", "bad line"},
	    {"unsafe", "unsafe path"},
	    {"file over dir", "is a directory"},
	    {"dir over file", "is a file"},
	};

	for (size_t k = 0; k < ARRAY_SIZE(cases); k++) {
		const char *what = cases[k].what;
		struct hw w, w2;
		struct tree_wheel tw[2] = {{.filename = "x-1-py3-none-any.whl"},
					   {.filename = "x2-1-py3-none-any.whl"}};
		struct tree_opts o = opts_for("/v", NULL);
		struct tree *t = NULL;
		char err[512] = "";
		size_t nw = 1;
		bool record = true;
		int r;

		hw_init(&w, "x-1.dist-info");
		hw_init(&w2, "x2-1.dist-info");
		hw_file(&w, "x/__init__.py", "");
		if (strcmp(what, "no dist-info") == 0) {
			record = false;
		} else if (strcmp(what, "two dist-info") == 0) {
			hw_std(&w, "x", "1");
			hw_file(&w, "y-1.dist-info/METADATA", "");
		} else if (strcmp(what, "no WHEEL") == 0) {
			hw_file(&w, "x-1.dist-info/METADATA", "");
		} else if (strcmp(what, "no RECORD") == 0) {
			hw_std(&w, "x", "1");
			record = false;
		} else if (strncmp(what, "Wheel-Version", 13) == 0 ||
			   strcmp(what, "no Wheel-Version") == 0) {
			hw_file(&w, "x-1.dist-info/WHEEL",
				strcmp(what, "Wheel-Version 2") == 0	? "Wheel-Version: 2.0\n"
				: strcmp(what, "no Wheel-Version") == 0 ? "Generator: x\n"
									: "Wheel-Version: one\n");
		} else if (strcmp(what, "bad key") == 0) {
			hw_std(&w, "x", "1");
			hw_file(&w, "x-1.data/lib/foo", "");
		} else if (strcmp(what, "data no subpath") == 0) {
			hw_std(&w, "x", "1");
			hw_file(&w, "x-1.data/purelib", "");
		} else if (strcmp(what, "no suffix") == 0 || strcmp(what, "bad brackets") == 0) {
			hw_std(&w, "x", "1");
			hw_file(&w, "x-1.dist-info/entry_points.txt",
				strcmp(what, "no suffix") == 0
				    ? "[console_scripts]\nx = x.main\n"
				    : "[console_scripts]\nx = x:m [a b]\n");
		} else if (strcmp(what, "script body missing") == 0) {
			hw_std(&w, "x", "1");
			hw_entry(&w, "x-1.data/scripts/s", S_IFREG | 0755, "#!python\n", F_NOKEEP);
		} else if (strcmp(what, "name mismatch") == 0) {
			hw_std(&w, "x", "1");
			tw[0].filename = "other-1-py3-none-any.whl";
		} else if (strcmp(what, "RECORD not utf-8") == 0) {
			hw_std(&w, "x", "1");
			buf_puts(&w.record, "x/\xff,,\n");
		} else if (strcmp(what, "entry points line") == 0) {
			hw_std(&w, "x", "1");
			hw_file(&w, "x-1.dist-info/entry_points.txt", "[any]\nno equals sign\n");
		} else if (strcmp(what, "unsafe") == 0) {
			hw_std(&w, "x", "1");
			hw_file(&w, "x/../../../../etc/passwd", "");
		} else if (strcmp(what, "file over dir") == 0 ||
			   strcmp(what, "dir over file") == 0) {
			bool fod = strcmp(what, "file over dir") == 0;

			hw_std(&w, "x", "1");
			hw_file(&w, fod ? "pkg/mod/x.py" : "pkg/mod", "");
			hw_std(&w2, "x2", "1");
			hw_file(&w2, fod ? "pkg/mod" : "pkg/mod/x.py", "");
			hw_done(&w2, true);
			nw = 2;
		}
		hw_done(&w, record);
		tw[0].meta = &w.meta;
		tw[1].meta = &w2.meta;
		r = tree_build(&o, tw, nw, &t, err, sizeof(err));
		if (r != -EINVAL || !strstr(err, cases[k].expect))
			fprintf(stderr, "case \"%s\": r=%d err=\"%s\"\n", what, r, err);
		CHECK_INT(r, -EINVAL);
		CHECK(strstr(err, cases[k].expect) != NULL);
		CHECK(strstr(err, tw[0].filename) != NULL || strstr(err, tw[1].filename) != NULL);
		CHECK(t == NULL);
		tree_free(t);
		hw_free(&w);
		hw_free(&w2);
	}
}

/* Entry point parsing corners: duplicates, pip's versioned names. */
static void test_entry_points(void)
{
	struct hw w;
	struct tree_wheel tw = {.filename = "x-1-py3-none-any.whl"};
	struct tree_opts o = opts_for("/v", NULL);
	struct tree *t = NULL;
	char err[256], *s;

	hw_init(&w, "x-1.dist-info");
	hw_std(&w, "x", "1");
	hw_file(&w, "x-1.dist-info/entry_points.txt",
		"ignored = before:section\n"
		"[[console_scripts]]\n"
		"dup = x:first\n"
		"pip2 = x:gone\n"
		"pip = x:pip\n"
		"dup = x:second\n"
		"weird/name = x:w\n"
		"easy_install-2.7 = x:gone\n"
		"easy_install = x:ei\n"
		"[gui_scripts]\n"
		"g = x.y.z:a.b.c\n");
	hw_done(&w, true);
	tw.meta = &w.meta;
	CHECK_INT(tree_build(&o, &tw, 1, &t, err, sizeof(err)), 0);
	if (!t) {
		fprintf(stderr, "%s\n", err);
		hw_free(&w);
		return;
	}
	s = text_of(t, tree_lookup_path(t, "bin/dup"));
	CHECK(strstr(s, "from x import second\n") != NULL);
	free(s);
	CHECK(tree_lookup_path(t, "bin/pip") > 0);
	CHECK(tree_lookup_path(t, "bin/pip3") > 0);
	CHECK(tree_lookup_path(t, "bin/pip3.11") > 0);
	CHECK(tree_lookup_path(t, "bin/pip2") < 0);
	CHECK(tree_lookup_path(t, "bin/easy_install") > 0);
	CHECK(tree_lookup_path(t, "bin/easy_install-3.11") > 0);
	CHECK(tree_lookup_path(t, "bin/easy_install-2.7") < 0);
	CHECK(tree_lookup_path(t, "bin/ignored") < 0);
	CHECK(tree_lookup_path(t, "bin/name") > 0); /* distlib's regex search */
	s = text_of(t, tree_lookup_path(t, "bin/g"));
	CHECK(strstr(s, "from x.y.z import a\n") && strstr(s, "sys.exit(a.b.c())\n"));
	free(s);
	tree_free(t);
	hw_free(&w);
}

/* Large scripts may be kept as a prefix: enough to see they stay as they
 * are; a #!python one must be whole. */
static void test_script_prefix(void)
{
	for (int k = 0; k < 3; k++) {
		struct hw w;
		struct tree_wheel tw = {.filename = "x-1-py3-none-any.whl"};
		struct tree_opts o = opts_for("/v", NULL);
		struct tree *t = NULL;
		const char *body = k == 0 ? "\x7f"
					    "ELF and many more bytes"
					  : "#!python\nmore\n";
		char err[256];
		int r;

		hw_init(&w, "x-1.dist-info");
		hw_std(&w, "x", "1");
		hw_entry(&w, "x-1.data/scripts/tool", S_IFREG | 0755, body, F_NOKEEP);
		hw_keep(&w, "x-1.data/scripts/tool", body, k == 2 ? 4 : 10);
		hw_done(&w, true);
		tw.meta = &w.meta;
		r = tree_build(&o, &tw, 1, &t, err, sizeof(err));
		if (k == 0) {
			int64_t i;

			CHECK_INT(r, 0);
			i = t ? tree_lookup_path(t, "bin/tool") : -1;
			CHECK(i > 0 && t->nodes[i].kind == TREE_BODY &&
			      t->nodes[i].size == strlen(body) && t->nodes[i].has_sha);
		} else {
			CHECK_INT(r, -EINVAL);
			CHECK(strstr(err, "x-1.data/scripts/tool") != NULL);
		}
		tree_free(t);
		hw_free(&w);
	}
}

/* A wheel of 20k files: builds fast, and RECORD maps every row. */
static void test_large(void)
{
	struct hw w;
	struct tree_wheel tw = {.filename = "big-1-py3-none-any.whl"};
	struct tree_opts o = opts_for("/v", NULL);
	struct tree *t = NULL;
	char err[256], name[64];
	uint64_t t0;
	int64_t i;

	hw_init(&w, "big-1.dist-info");
	for (int k = 0; k < 20000; k++) {
		snprintf(name, sizeof(name), "big/d%03d/f%05d.py", k % 200, k);
		hw_file(&w, name, "pass\n");
	}
	hw_std(&w, "big", "1");
	hw_done(&w, true);
	tw.meta = &w.meta;
	t0 = now_ns();
	CHECK_INT(tree_build(&o, &tw, 1, &t, err, sizeof(err)), 0);
	if (t) {
		printf("20k-file wheel: %zu nodes in %.1f ms, %zu bytes of nodes\n", t->n,
		       (double)(now_ns() - t0) / 1e6, t->n * sizeof(*t->nodes));
		CHECK(t->n > 20200);
		check_invariants(t);
		i = tree_lookup_path(t, "lib/python3.11/site-packages/big/d007/f19207.py");
		CHECK(i > 0 && t->nodes[i].has_sha);
		i = tree_lookup_path(t, "lib/python3.11/site-packages/big-1.dist-info/RECORD");
		CHECK(i > 0 && t->nodes[i].size > 20000 * 60);
		tree_free(t);
	}
	hw_free(&w);
}

/* ---- part 2: against pip ---- */

struct ref_node {
	char *path;
	char kind;
	uint32_t mode;
	uint64_t size;
	char *x;       /* sha256 hex or link target */
	char *content; /* full content for some files, or NULL */
};

struct scenario {
	char *root;
	char *exe, *version, *stdlib;
	int major, minor;
	struct hw **w;
	char **wnames;
	size_t nw;
	struct ref_node *nodes;
	size_t nn;
};

static char *unhex(const char *s, size_t *len)
{
	size_t n = strlen(s) / 2;
	char *out = xmalloc(n + 1);

	if (strcmp(s, "-") == 0)
		n = 0;
	else if (hex_decode(s, (uint8_t *)out, n) < 0)
		n = 0;
	out[n] = '\0';
	if (len)
		*len = n;
	return out;
}

static void scenario_free(struct scenario *sc)
{
	free(sc->root);
	free(sc->exe);
	free(sc->version);
	free(sc->stdlib);
	for (size_t i = 0; i < sc->nw; i++) {
		hw_free(sc->w[i]);
		free(sc->w[i]);
		free(sc->wnames[i]);
	}
	free(sc->w);
	free(sc->wnames);
	for (size_t i = 0; i < sc->nn; i++) {
		free(sc->nodes[i].path);
		free(sc->nodes[i].x);
		free(sc->nodes[i].content);
	}
	free(sc->nodes);
	memset(sc, 0, sizeof(*sc));
}

static void print_diff(const char *what, const char *a, const char *b)
{
	size_t i = 0, line = 1, ls = 0;

	while (a[i] && a[i] == b[i]) {
		if (a[i] == '\n')
			line++, ls = i + 1;
		i++;
	}
	fprintf(stderr, "%s differs at line %zu:\n  ours: %.120s\n  pip:  %.120s\n", what, line,
		a + ls, b + ls);
}

static int cmp_ref(const void *a, const void *b)
{
	return strcmp(((const struct ref_node *)a)->path, ((const struct ref_node *)b)->path);
}

static void compare(struct scenario *sc)
{
	struct tree_opts o = {
	    .venv_root = sc->root,
	    .installer = "pip",
	    .py = {.executable = sc->exe,
		   .version = sc->version,
		   .major = sc->major,
		   .minor = sc->minor,
		   .stdlib = sc->stdlib},
	    .mtime = 0,
	};
	struct tree_wheel *tw = xcalloc(sc->nw ? sc->nw : 1, sizeof(*tw));
	struct tree *t = NULL;
	char err[512], path[4096];
	size_t bad = 0, sha_skipped = 0;
	int r;

	for (size_t i = 0; i < sc->nw; i++) {
		tw[i].filename = sc->wnames[i];
		tw[i].meta = &sc->w[i]->meta;
		tw[i].requested = true;
	}
	r = tree_build(&o, tw, sc->nw, &t, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", sc->root, err);
		free(tw);
		return;
	}
	check_invariants(t);
	qsort(sc->nodes, sc->nn, sizeof(*sc->nodes), cmp_ref);
	for (size_t k = 0; k < sc->nn; k++) {
		const struct ref_node *rn = &sc->nodes[k];
		int64_t i = tree_lookup_path(t, rn->path);
		const struct tree_node *nd;
		bool ok = true;

		if (i < 0) {
			fprintf(stderr, "%s: missing \"%s\"\n", sc->root, rn->path);
			bad++;
			continue;
		}
		nd = &t->nodes[i];
		if (nd->mode != rn->mode) {
			fprintf(stderr, "%s: \"%s\": mode %o, pip %o\n", sc->root, rn->path,
				nd->mode, rn->mode);
			ok = false;
		}
		if (rn->kind == 'l') {
			if (nd->kind != TREE_LINK || strcmp(link_of(t, i), rn->x) != 0) {
				fprintf(stderr, "%s: \"%s\": link \"%s\", pip \"%s\"\n", sc->root,
					rn->path, link_of(t, i), rn->x);
				ok = false;
			}
		} else if (rn->kind == 'f') {
			char hex[65];

			if (nd->size != rn->size && strcmp(rn->path, "pyvenv.cfg") != 0) {
				fprintf(stderr, "%s: \"%s\": size %llu, pip %llu\n", sc->root,
					rn->path, (unsigned long long)nd->size,
					(unsigned long long)rn->size);
				ok = false;
			}
			hex_encode(nd->sha256, 32, hex);
			if (strcmp(rn->path, "pyvenv.cfg") == 0) {
				/* pip's reference venv was made with --without-pip */
				char *ours = text_of(t, i);
				struct buf b;
				char *cmd = strstr(ours, " -m venv ");

				buf_init(&b);
				if (cmd) {
					buf_append(&b, ours, (size_t)(cmd - ours) + 9);
					buf_puts(&b, "--without-pip ");
					buf_puts(&b, cmd + 9);
				}
				if (!b.data || !rn->content ||
				    strcmp((char *)b.data, rn->content)) {
					print_diff(rn->path, b.data ? (char *)b.data : "",
						   rn->content ? rn->content : "");
					ok = false;
				}
				buf_free(&b);
				free(ours);
			} else if (nd->kind == TREE_BODY && !nd->has_sha) {
				sha_skipped++;
			} else if (strcmp(hex, rn->x) != 0) {
				fprintf(stderr, "%s: \"%s\": sha256 differs (%s)\n", sc->root,
					rn->path, nd->kind == TREE_DATA ? "data" : "body");
				if (nd->kind == TREE_DATA && rn->content) {
					char *ours = text_of(t, i);

					print_diff(rn->path, ours, rn->content);
					free(ours);
				}
				ok = false;
			}
		} else if (nd->kind != TREE_DIR) {
			fprintf(stderr, "%s: \"%s\": not a directory\n", sc->root, rn->path);
			ok = false;
		}
		bad += !ok;
	}
	/* nothing more than pip made */
	for (size_t i = 1; i < t->n; i++) {
		struct ref_node key = {.path = path};

		if (tree_path(t, (uint32_t)i, path, sizeof(path)) < 0 ||
		    !bsearch(&key, sc->nodes, sc->nn, sizeof(*sc->nodes), cmp_ref)) {
			fprintf(stderr, "%s: extra \"%s\"\n", sc->root, path);
			bad++;
		}
	}
	CHECK_INT(bad, 0);
	CHECK_INT(t->n - 1, sc->nn);
	printf("compared %zu paths of %s with pip's (%zu wheels, %zu unhashed bodies by size)\n",
	       sc->nn, sc->root, sc->nw, sha_skipped);
	tree_free(t);
	free(tw);
}

static char *field(char **p)
{
	char *s = *p, *e;

	if (!s)
		return (char *)"";
	e = strchr(s, ' ');
	if (e) {
		*e = '\0';
		*p = e + 1;
	} else {
		*p = NULL;
	}
	return s;
}

static void test_against_pip(void)
{
	char dir[] = "/tmp/test_tree_ref.XXXXXX";
	char *cmd, *line = NULL;
	size_t cap = 0, scenarios = 0;
	struct scenario sc = {0};
	struct hw *cur = NULL;
	FILE *f;
	int status;

	if (access("/usr/bin/python3", X_OK) != 0 || access("unit/tree_ref.py", R_OK) != 0) {
		printf("SKIP comparison with pip: /usr/bin/python3 or unit/tree_ref.py missing\n");
		return;
	}
	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	cmd = xasprintf("/usr/bin/python3 unit/tree_ref.py '%s'", dir);
	f = popen(cmd, "r");
	free(cmd);
	CHECK(f != NULL);
	while (f && getline(&line, &cap, f) > 0) {
		char *p = line, *tag;

		line[strcspn(line, "\n")] = '\0';
		tag = field(&p);
		if (strcmp(tag, "scenario") == 0) {
			sc.root = unhex(field(&p), NULL);
		} else if (strcmp(tag, "python") == 0) {
			sc.exe = xstrdup(field(&p));
			sc.version = xstrdup(field(&p));
			sc.major = atoi(field(&p));
			sc.minor = atoi(field(&p));
			sc.stdlib = xstrdup(field(&p));
		} else if (strcmp(tag, "wheel") == 0) {
			if (cur)
				hw_done(cur, false);
			sc.w = xrealloc(sc.w, (sc.nw + 1) * sizeof(*sc.w));
			sc.wnames = xrealloc(sc.wnames, (sc.nw + 1) * sizeof(*sc.wnames));
			sc.wnames[sc.nw] = xstrdup(field(&p));
			cur = sc.w[sc.nw++] = xmalloc(sizeof(*cur));
			hw_init(cur, "");
		} else if (strcmp(tag, "e") == 0 && cur) {
			char *name = unhex(field(&p), NULL);

			if (cur->n == cur->cap) {
				cur->cap = cur->cap ? 2 * cur->cap : 64;
				cur->e = xrealloc(cur->e, cur->cap * sizeof(*cur->e));
			}
			memset(&cur->e[cur->n], 0, sizeof(cur->e[0]));
			cur->e[cur->n].name = name;
			cur->e[cur->n].mode = (uint32_t)strtoul(field(&p), NULL, 8);
			cur->e[cur->n].usize = strtoull(field(&p), NULL, 10);
			cur->e[cur->n].mtime = strtoll(field(&p), NULL, 10);
			cur->n++;
		} else if (strcmp(tag, "f") == 0 && cur) {
			size_t len;
			char *name = unhex(field(&p), NULL);
			char *data = unhex(field(&p), &len);

			hw_keep(cur, name, data, len);
			free(name);
			free(data);
		} else if (strcmp(tag, "n") == 0) {
			struct ref_node rn = {0};
			char *x;

			if (cur) {
				hw_done(cur, false);
				cur = NULL;
			}
			rn.path = unhex(field(&p), NULL);
			rn.kind = field(&p)[0];
			rn.mode = (uint32_t)strtoul(field(&p), NULL, 8);
			rn.size = strtoull(field(&p), NULL, 10);
			x = field(&p);
			rn.x = rn.kind == 'l' ? unhex(x, NULL) : xstrdup(x);
			if (p)
				rn.content = unhex(field(&p), NULL);
			sc.nodes = xrealloc(sc.nodes, (sc.nn + 1) * sizeof(*sc.nodes));
			sc.nodes[sc.nn++] = rn;
		} else if (strcmp(tag, "end") == 0) {
			if (cur) {
				hw_done(cur, false);
				cur = NULL;
			}
			compare(&sc);
			scenario_free(&sc);
			scenarios++;
		}
	}
	free(line);
	status = f ? pclose(f) : -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		printf("SKIP comparison with pip: Debian's pip wheel missing\n");
	} else {
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		CHECK_INT(scenarios, 3);
	}
	scenario_free(&sc);
	rm_rf(dir);
}

int main(void)
{
	test_wants();
	test_meta();
	test_demo();
	test_templates();
	test_shebangs();
	test_two_wheels();
	test_errors();
	test_entry_points();
	test_script_prefix();
	test_large();
	test_against_pip();
	return check_done("tree");
}
