/* tree: the venv tree builder.
 *
 * DESIGN
 *
 * The reference is `python -m venv V` followed by `V/bin/python -m pip
 * install --no-deps WHEELS` with pip 23 (pip/_internal/operations/install/
 * wheel.py, distlib's ScriptMaker, venv/__init__.py of the interpreter).
 * Every rule below mirrors one of theirs; where we deliberately differ it
 * says so.
 *
 * Build phase: nodes live in one growable array (no per-node malloc), names
 * and link targets in one string pool, generated bodies in one blob.  While
 * building, a hash table maps (parent, name) to a node and each directory
 * keeps an unsorted singly linked child list (side arrays first/next); a
 * path written twice reuses its node (pip: last wins), so no node is ever
 * orphaned.  Finalization sorts every directory's children by strcmp into
 * one contiguous tree->children array and drops the side arrays.
 *
 * Per wheel, the order of writes is pip's: root files, then the non-script
 * .data files, then .data/scripts (minus setuptools' entry point
 * wrappers), then console launchers, gui launchers, INSTALLER, REQUESTED
 * and the rewritten RECORD.  Empty directories of the zip are not created
 * (pip skips directory entries).
 *
 * Deliberate differences from pip: no byte-compilation (no __pycache__
 * rows in RECORD), no direct_url.json, BODY nodes carry the zip entry's
 * mtime (pip's files get the install time), blank RECORD lines are
 * skipped (pip crashes on them), and two wheels writing one path add a
 * warning (pip is silent). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "fs/tree.h"

#define NO_NODE UINT32_MAX
#define OWNER_NONE UINT32_MAX
#define OWNER_VENV (UINT32_MAX - 1)
#define MAX_NODES (UINT32_MAX - 16)
#define SHEBANG_MAX 127 /* distlib's limit for a plain #! line on Linux */

/* ---- wheel_meta ---- */

bool tree_wants_file(const char *name)
{
	const char *slash = strchr(name, '/');
	size_t toplen;

	if (!slash)
		return false;
	toplen = (size_t)(slash - name);
	if (toplen > 10 && memcmp(slash - 10, ".dist-info", 10) == 0) {
		const char *rest = slash + 1;

		return strcmp(rest, "RECORD") == 0 || strcmp(rest, "WHEEL") == 0 ||
		       strcmp(rest, "entry_points.txt") == 0 || strcmp(rest, "METADATA") == 0;
	}
	if (toplen > 5 && memcmp(slash - 5, ".data", 5) == 0)
		return strncmp(slash + 1, "scripts/", 8) == 0 && slash[9] != '\0';
	return false;
}

const struct wheel_file *wheel_meta_file(const struct wheel_meta *m, const char *name)
{
	size_t lo = 0, hi;

	if (!m || !name)
		return NULL;
	hi = m->nfiles;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = strcmp(m->files[mid].name, name);

		if (r == 0)
			return &m->files[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void wheel_meta_clear(struct wheel_meta *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfiles; i++) {
		free(m->files[i].name);
		free(m->files[i].data);
	}
	free(m->files);
	zipcd_free(m->cd);
	memset(m, 0, sizeof(*m));
}

/* ---- small text helpers ---- */

static bool utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			k = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 3, cp = c & 0x07;
		else
			return false;
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* Python's str.isspace() for ASCII. */
static bool py_space(int c)
{
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Python's \w (Unicode mode): ASCII alnum and '_'; every non-ASCII byte is
 * taken as part of a word character (approximation). */
static bool py_word(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || (unsigned char)c >= 0x80;
}

/* One line of str.splitlines(): sets *len to the line's length and returns
 * the offset of the next line. */
static size_t next_line(const char *s, size_t n, size_t i, size_t *len)
{
	size_t j = i;

	while (j < n) {
		unsigned char c = (unsigned char)s[j];

		if (c == '\n' || c == '\v' || c == '\f' || c == 0x1c || c == 0x1d || c == 0x1e) {
			*len = j - i;
			return j + 1;
		}
		if (c == '\r') {
			*len = j - i;
			return j + 1 < n && s[j + 1] == '\n' ? j + 2 : j + 1;
		}
		if (c == 0xc2 && j + 1 < n && (unsigned char)s[j + 1] == 0x85) {
			*len = j - i;
			return j + 2;
		}
		if (c == 0xe2 && j + 2 < n && (unsigned char)s[j + 1] == 0x80 &&
		    ((unsigned char)s[j + 2] == 0xa8 || (unsigned char)s[j + 2] == 0xa9)) {
			*len = j - i;
			return j + 3;
		}
		j++;
	}
	*len = j - i;
	return n;
}

static void strip(const char **p, size_t *len)
{
	while (*len && py_space((unsigned char)**p))
		(*p)++, (*len)--;
	while (*len && py_space((unsigned char)(*p)[*len - 1]))
		(*len)--;
}

/* packaging.utils.canonicalize_name: runs of -_. become '-', lower case. */
static char *canonicalize(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '-' || c == '_' || c == '.') {
			while (i + 1 < n && (s[i + 1] == '-' || s[i + 1] == '_' || s[i + 1] == '.'))
				i++;
			out[o++] = '-';
			continue;
		}
		out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[o] = '\0';
	return out;
}

/* shlex.quote */
static void shell_quote(struct buf *out, const char *s)
{
	bool safe = *s != '\0';

	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (!((c < 0x80 && py_word(c)) || strchr("@%+=:,./-", c))) {
			safe = false;
			break;
		}
	}
	if (safe) {
		buf_puts(out, s);
		return;
	}
	buf_puts(out, "'");
	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			buf_puts(out, "'\"'\"'");
		else
			buf_append(out, p, 1);
	}
	buf_puts(out, "'");
}

static void ps1_quote(struct buf *out, const char *s)
{
	buf_puts(out, "'");
	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			buf_puts(out, "''");
		else
			buf_append(out, p, 1);
	}
	buf_puts(out, "'");
}

/* Replaces every occurrence of key in *text by val (str.replace). */
static void replace_all(struct buf *text, const char *key, const char *val)
{
	size_t klen = strlen(key), vlen = strlen(val);
	struct buf out;
	const char *s = (const char *)text->data;
	size_t n = text->len, i = 0;

	if (!s || !memmem(s, n, key, klen))
		return;
	buf_init(&out);
	while (i < n) {
		const char *hit = memmem(s + i, n - i, key, klen);

		if (!hit) {
			buf_append(&out, s + i, n - i);
			break;
		}
		buf_append(&out, s + i, (size_t)(hit - (s + i)));
		buf_append(&out, val, vlen);
		i = (size_t)(hit - s) + klen;
	}
	buf_free(text);
	*text = out;
}

static void record_hash(const uint8_t sha[32], char out[8 + 44])
{
	memcpy(out, "sha256=", 7);
	b64url_encode(sha, 32, out + 7);
}

/* ---- the builder ---- */

struct builder {
	const struct tree_opts *opts;
	const struct tree_wheel *wheels;
	struct tree_node *nodes;
	size_t n, cap;
	uint32_t *first, *next, *owner; /* per node, build time only */
	uint32_t *ht;			/* node index + 1; 0 = empty */
	size_t htcap;
	struct buf strings, blob;
	char **warnings;
	size_t nwarnings, capw;
	char *err;
	size_t errlen;
	char *root;   /* normalized venv root ("/x/y", or "/") */
	char *prefix; /* root without the trailing '/': "" for "/" */
	char *python; /* <root>/bin/python, what pip's sys.executable is */
	char *pyxy;   /* "python3.11" */
	uint32_t sp, bin;
};

static int fail(struct builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct builder *b, const char *fmt, ...)
{
	va_list ap;

	if (b->err && b->errlen) {
		va_start(ap, fmt);
		vsnprintf(b->err, b->errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static void warn(struct builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct builder *b, const char *fmt, ...)
{
	va_list ap;
	struct buf m;

	buf_init(&m);
	va_start(ap, fmt);
	{
		va_list ap2;
		char tmp[1];
		int len;

		va_copy(ap2, ap);
		len = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
		va_end(ap2);
		if (len > 0) {
			buf_reserve(&m, (size_t)len + 1);
			vsnprintf((char *)m.data, (size_t)len + 1, fmt, ap);
			m.len = (size_t)len;
		}
	}
	va_end(ap);
	if (b->nwarnings == b->capw) {
		b->capw = b->capw ? 2 * b->capw : 8;
		b->warnings = xrealloc(b->warnings, b->capw * sizeof(*b->warnings));
	}
	b->warnings[b->nwarnings++] = (char *)buf_steal(&m, NULL);
}

static const char *wname(const struct builder *b, uint32_t owner)
{
	if (owner == OWNER_VENV)
		return "the venv skeleton";
	if (owner < OWNER_VENV && b->wheels[owner].filename)
		return b->wheels[owner].filename;
	return "?";
}

static const char *bname(const struct builder *b, uint32_t i)
{
	return (const char *)b->strings.data + b->nodes[i].name;
}

static uint32_t hash_key(uint32_t parent, const char *name, size_t len)
{
	uint32_t h = 2166136261u ^ (parent * 0x9e3779b1u);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 16777619u;
	return h ^ (h >> 15);
}

static void ht_insert(struct builder *b, uint32_t i)
{
	const char *name = bname(b, i);
	size_t mask = b->htcap - 1;
	size_t h = hash_key(b->nodes[i].parent, name, strlen(name)) & mask;

	while (b->ht[h])
		h = (h + 1) & mask;
	b->ht[h] = i + 1;
}

static void ht_grow(struct builder *b)
{
	b->htcap = b->htcap ? 2 * b->htcap : 1024;
	free(b->ht);
	b->ht = xcalloc(b->htcap, sizeof(*b->ht));
	for (size_t i = 1; i < b->n; i++)
		ht_insert(b, (uint32_t)i);
}

static uint32_t child_find(const struct builder *b, uint32_t parent, const char *name, size_t len)
{
	size_t mask = b->htcap - 1;
	size_t h = hash_key(parent, name, len) & mask;

	for (;;) {
		uint32_t v = b->ht[h];
		const char *s;

		if (!v)
			return NO_NODE;
		s = bname(b, v - 1);
		if (b->nodes[v - 1].parent == parent && strncmp(s, name, len) == 0 &&
		    s[len] == '\0')
			return v - 1;
		h = (h + 1) & mask;
	}
}

static uint32_t str_add(struct builder *b, const char *s, size_t len)
{
	uint32_t off = (uint32_t)b->strings.len;

	if (b->strings.len + len + 1 > UINT32_MAX) {
		/* 4 GiB of names: not a venv. */
		fprintf(stderr, "sitefs: tree string pool overflow\n");
		abort();
	}
	buf_append(&b->strings, s, len);
	buf_append(&b->strings, "", 1);
	return off;
}

static uint32_t node_new(struct builder *b, uint32_t parent, const char *name, size_t len)
{
	uint32_t i;

	if (b->n >= MAX_NODES) {
		fprintf(stderr, "sitefs: tree node count overflow\n");
		abort();
	}
	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 256;
		b->nodes = xrealloc(b->nodes, b->cap * sizeof(*b->nodes));
		b->first = xrealloc(b->first, b->cap * sizeof(*b->first));
		b->next = xrealloc(b->next, b->cap * sizeof(*b->next));
		b->owner = xrealloc(b->owner, b->cap * sizeof(*b->owner));
	}
	i = (uint32_t)b->n++;
	memset(&b->nodes[i], 0, sizeof(b->nodes[i]));
	b->nodes[i].parent = parent;
	b->nodes[i].name = str_add(b, name, len);
	b->first[i] = NO_NODE;
	b->owner[i] = OWNER_NONE;
	b->next[i] = b->first[parent];
	b->first[parent] = i;
	if ((b->n + 1) * 2 > b->htcap)
		ht_grow(b);
	else
		ht_insert(b, i);
	return i;
}

/* Path of node i relative to the root, on any node array. */
static int node_path(const struct tree_node *nodes, const char *strings, uint32_t i, char *out,
		     size_t outlen)
{
	size_t len = 0, pos;
	uint32_t j;

	if (!outlen)
		return -ENAMETOOLONG;
	for (j = i; j != 0; j = nodes[j].parent)
		len += strlen(strings + nodes[j].name) + (len ? 1 : 0);
	if (len + 1 > outlen)
		return -ENAMETOOLONG;
	out[len] = '\0';
	pos = len;
	for (j = i; j != 0; j = nodes[j].parent) {
		const char *s = strings + nodes[j].name;
		size_t l = strlen(s);

		if (pos != len)
			out[--pos] = '/';
		pos -= l;
		memcpy(out + pos, s, l);
	}
	return (int)len;
}

static const char *bpath(const struct builder *b, uint32_t i, char *out, size_t outlen)
{
	if (node_path(b->nodes, (const char *)b->strings.data, i, out, outlen) < 0)
		snprintf(out, outlen, "(long path)");
	return out;
}

/* What a file node becomes. */
struct fspec {
	uint8_t kind;
	uint32_t mode; /* permission bits */
	int64_t mtime;
	uint64_t size;	       /* BODY */
	uint32_t wheel, entry; /* BODY */
	bool has_sha;	       /* BODY */
	uint8_t sha[32];       /* BODY */
	const void *data;      /* DATA: size bytes; LINK: NUL-terminated target */
};

static uint32_t mkdir_node(struct builder *b, uint32_t parent, const char *name, size_t len)
{
	uint32_t i = node_new(b, parent, name, len);

	b->nodes[i].kind = TREE_DIR;
	b->nodes[i].mode = S_IFDIR | 0755;
	b->nodes[i].mtime = b->opts->mtime;
	return i;
}

static bool link_is_sibling(const char *t)
{
	return *t && !strchr(t, '/') && strcmp(t, ".") != 0 && strcmp(t, "..") != 0;
}

/* The directory named by component [name, name+len) of parent, created if
 * missing; a symlink to a sibling directory (lib64 -> lib) is followed, as
 * the kernel would for pip.  NO_NODE if a file is in the way. */
static uint32_t dir_step(struct builder *b, uint32_t parent, const char *name, size_t len)
{
	uint32_t c = child_find(b, parent, name, len);

	if (c == NO_NODE)
		return mkdir_node(b, parent, name, len);
	if (b->nodes[c].kind == TREE_DIR)
		return c;
	if (b->nodes[c].kind == TREE_LINK) {
		const char *t = (const char *)b->strings.data + b->nodes[c].link.target;

		if (link_is_sibling(t)) {
			uint32_t d = child_find(b, parent, t, strlen(t));

			if (d != NO_NODE && b->nodes[d].kind == TREE_DIR)
				return d;
		}
	}
	return NO_NODE;
}

/* Checks a relative path: no empty, "." or ".." components, no leading '/'. */
static bool rel_ok(const char *p)
{
	const char *s = p;

	if (!*p)
		return false;
	for (;;) {
		const char *e = strchr(s, '/');
		size_t l = e ? (size_t)(e - s) : strlen(s);

		if (l == 0 || (l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		if (!e)
			return true;
		s = e + 1;
	}
}

/* Writes a file (BODY, DATA or LINK) at rel below directory base, creating
 * directories on the way.  A file already there is replaced (pip: last
 * wins; a warning when another wheel or the skeleton wrote it).  owner is
 * the writing wheel's index (or OWNER_VENV); what names the entry for
 * messages.  Returns 0 and *ret (node index), or -EINVAL. */
static int put_file(struct builder *b, uint32_t base, const char *rel, const struct fspec *f,
		    uint32_t owner, const char *what, uint32_t *ret)
{
	char pbuf[PATH_MAX];
	const char *s = rel;
	uint32_t dir = base, i;
	struct tree_node *nd;

	if (!rel_ok(rel))
		return fail(b, "wheel \"%s\": entry \"%s\": unsafe path \"%s\"", wname(b, owner),
			    what, rel);
	for (;;) {
		const char *e = strchr(s, '/');

		if (!e)
			break;
		uint32_t d = dir_step(b, dir, s, (size_t)(e - s));

		if (d == NO_NODE) {
			uint32_t c = child_find(b, dir, s, (size_t)(e - s));

			return fail(b,
				    "wheel \"%s\": entry \"%s\": \"%s\" is a file, written by %s, "
				    "and cannot hold \"%s\"",
				    wname(b, owner), what, bpath(b, c, pbuf, sizeof(pbuf)),
				    wname(b, b->owner[c]), e + 1);
		}
		dir = d;
		s = e + 1;
	}
	i = child_find(b, dir, s, strlen(s));
	if (i == NO_NODE) {
		i = node_new(b, dir, s, strlen(s));
	} else if (b->nodes[i].kind == TREE_DIR) {
		return fail(b, "wheel \"%s\": entry \"%s\": \"%s\" is a directory", wname(b, owner),
			    what, bpath(b, i, pbuf, sizeof(pbuf)));
	} else if (b->owner[i] != owner && b->owner[i] != OWNER_NONE) {
		warn(b, "\"%s\": written by %s, overwritten by %s (\"%s\")",
		     bpath(b, i, pbuf, sizeof(pbuf)), wname(b, b->owner[i]), wname(b, owner), what);
	}
	b->owner[i] = owner;
	nd = &b->nodes[i];
	nd->kind = f->kind;
	nd->mtime = f->mtime;
	nd->has_sha = 0;
	memset(nd->sha256, 0, sizeof(nd->sha256));
	switch (f->kind) {
	case TREE_BODY:
		nd->mode = S_IFREG | f->mode;
		nd->size = f->size;
		nd->body.wheel = f->wheel;
		nd->body.entry = f->entry;
		nd->has_sha = f->has_sha;
		if (f->has_sha)
			memcpy(nd->sha256, f->sha, 32);
		break;
	case TREE_DATA:
		nd->mode = S_IFREG | f->mode;
		nd->size = f->size;
		nd->data.off = b->blob.len;
		buf_append(&b->blob, f->data, f->size);
		sha256_buf(f->data, f->size, nd->sha256);
		nd->has_sha = 1;
		break;
	case TREE_LINK: {
		size_t l = strlen(f->data);
		uint32_t t = str_add(b, f->data, l);

		nd = &b->nodes[i];
		nd->mode = S_IFLNK | 0777;
		nd->size = l;
		nd->link.target = t;
		break;
	}
	default:
		abort();
	}
	if (ret)
		*ret = i;
	return 0;
}

static int put_data(struct builder *b, uint32_t base, const char *rel, const void *data, size_t len,
		    uint32_t mode, uint32_t owner, const char *what, uint32_t *ret)
{
	struct fspec f = {
	    .kind = TREE_DATA, .mode = mode, .mtime = b->opts->mtime, .size = len, .data = data};

	return put_file(b, base, rel, &f, owner, what, ret);
}

static int put_link(struct builder *b, uint32_t base, const char *rel, const char *target)
{
	struct fspec f = {.kind = TREE_LINK, .mtime = b->opts->mtime, .data = target};

	return put_file(b, base, rel, &f, OWNER_VENV, rel, NULL);
}

/* ---- the venv skeleton ---- */

static char *normalize_root(const char *p);

static bool read_text(const char *path, struct buf *out)
{
	char *data;
	size_t len;

	if (file_read_all(path, &data, &len) < 0)
		return false;
	buf_init(out);
	out->data = (uint8_t *)data;
	out->len = len;
	out->cap = len + 1;
	return true;
}

static int cmp_str(const void *a, const void *c)
{
	return strcmp(*(char *const *)a, *(char *const *)c);
}

/* venv.EnvBuilder.replace_variables: each placeholder in turn, the value
 * quoted for the script's shell when the venv module quotes. */
static void substitute(const struct builder *b, struct buf *text, const char *fname, bool quoting)
{
	const char *exe = b->opts->py.executable;
	const char *env_name = strrchr(b->root, '/') + 1;
	char *prompt = xasprintf("(%s) ", env_name);
	char *env_exe = xasprintf("%s/bin/%s", b->prefix, strrchr(exe, '/') + 1);
	const char *keys[] = {"__VENV_DIR__", "__VENV_NAME__", "__VENV_PROMPT__",
			      "__VENV_BIN_NAME__", "__VENV_PYTHON__"};
	const char *vals[] = {b->root, env_name, prompt, "bin", env_exe};

	for (size_t q = 0; q < ARRAY_SIZE(keys); q++) {
		struct buf v;

		buf_init(&v);
		if (!quoting || str_endswith(fname, ".bat"))
			buf_puts(&v, vals[q]);
		else if (str_endswith(fname, ".ps1"))
			ps1_quote(&v, vals[q]);
		else
			shell_quote(&v, vals[q]);
		replace_all(text, keys[q], (const char *)v.data);
		buf_free(&v);
	}
	free(prompt);
	free(env_exe);
}

/* venv.EnvBuilder.install_scripts for one template directory: files go to
 * bin/<subdirs below the platform dir>/, with the placeholders replaced. */
static int install_templates(struct builder *b, const char *dir, const char *sub, bool quoting)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t nn = 0, capn = 0;
	int r = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (nn == capn) {
			capn = capn ? 2 * capn : 8;
			names = xrealloc(names, capn * sizeof(*names));
		}
		names[nn++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (nn)
		qsort(names, nn, sizeof(*names), cmp_str);
	for (size_t k = 0; k < nn && r == 0; k++) {
		char *src = xasprintf("%s/%s", dir, names[k]);
		char *rel = *sub ? xasprintf("%s/%s", sub, names[k]) : xstrdup(names[k]);
		struct stat st;
		struct buf text;

		if (stat(src, &st) < 0) {
			/* vanished: ignore */
		} else if (S_ISDIR(st.st_mode)) {
			r = install_templates(b, src, rel, quoting);
		} else if (S_ISREG(st.st_mode) && read_text(src, &text)) {
			bool binary =
			    str_endswith(names[k], ".exe") || str_endswith(names[k], ".pdb");

			if (!binary && !utf8_valid(text.data, text.len)) {
				warn(b, "venv template \"%s\" is not UTF-8, skipped", src);
			} else {
				if (!binary)
					substitute(b, &text, names[k], quoting);
				r = put_data(b, b->bin, rel, text.data, text.len,
					     st.st_mode & 07777, OWNER_VENV, rel, NULL);
			}
			buf_free(&text);
		}
		free(src);
		free(rel);
	}
	for (size_t k = 0; k < nn; k++)
		free(names[k]);
	free(names);
	return r;
}

static int build_skeleton(struct builder *b)
{
	const struct tree_python *py = &b->opts->py;
	const char *exe = py->executable;
	const char *exename = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
	char real[PATH_MAX];
	struct buf cfg;
	char *home, *names[3];
	uint32_t lib, inc;
	int r;

	/* pyvenv.cfg as venv 3.11 writes it for `<executable> -m venv <root>`. */
	/* home = dirname(abspath(executable)) */
	home = normalize_root(exe);
	*strrchr(home, '/') = '\0';
	if (!*home)
		strcpy(home, "/");
	if (!realpath(exe, real))
		snprintf(real, sizeof(real), "%s", exe);
	buf_init(&cfg);
	buf_printf(&cfg,
		   "home = %s\ninclude-system-site-packages = false\nversion = %s\n"
		   "executable = %s\ncommand = %s -m venv %s\n",
		   home, py->version, real, exe, b->root);
	free(home);
	r = put_data(b, 0, "pyvenv.cfg", cfg.data, cfg.len, 0644, OWNER_VENV, "pyvenv.cfg", NULL);
	buf_free(&cfg);
	if (r < 0)
		return r;

	inc = mkdir_node(b, 0, "include", 7);
	mkdir_node(b, inc, b->pyxy, strlen(b->pyxy));
	lib = mkdir_node(b, 0, "lib", 3);
	lib = mkdir_node(b, lib, b->pyxy, strlen(b->pyxy));
	b->sp = mkdir_node(b, lib, "site-packages", 13);
	if (sizeof(void *) > 4) {
		r = put_link(b, 0, "lib64", "lib");
		if (r < 0)
			return r;
	}
	b->bin = mkdir_node(b, 0, "bin", 3);

	/* bin/<exename> -> executable; python, python3, pythonX.Y -> exename. */
	r = put_link(b, b->bin, exename, exe);
	names[0] = xstrdup("python");
	names[1] = xasprintf("python%d", py->major);
	names[2] = xasprintf("python%d.%d", py->major, py->minor);
	for (size_t k = 0; k < 3 && r == 0; k++)
		if (strcmp(names[k], exename) != 0)
			r = put_link(b, b->bin, names[k], exename);
	for (size_t k = 0; k < 3; k++)
		free(names[k]);
	if (r < 0)
		return r;

	if (py->stdlib) {
		char *init = xasprintf("%s/venv/__init__.py", py->stdlib);
		char *common = xasprintf("%s/venv/scripts/common", py->stdlib);
		char *posix = xasprintf("%s/venv/scripts/posix", py->stdlib);
		struct buf src;
		bool quoting = false;

		/* gh-124651: newer venvs shell-quote the substituted values (and
		 * ship templates with bare placeholders). */
		if (read_text(init, &src)) {
			quoting = memmem(src.data, src.len, "shlex.quote", 11) != NULL;
			buf_free(&src);
		}
		r = install_templates(b, common, "", quoting);
		if (r == 0)
			r = install_templates(b, posix, "", quoting);
		free(init);
		free(common);
		free(posix);
	}
	return r;
}

/* ---- one wheel ---- */

/* A string arena addressed by offsets (stable across growth). */
static uint32_t arena_add(struct buf *a, const char *s, size_t len)
{
	uint32_t off = (uint32_t)a->len;

	buf_append(a, s, len);
	buf_append(a, "", 1);
	return off;
}

struct rec_row {
	uint32_t f[3]; /* path, hash, size (offsets; hash/size "" when absent) */
	uint32_t nf;
};

struct ep {
	char *name, *value;
};

struct inst {
	uint32_t src;  /* cd entry */
	uint32_t rec;  /* arena offset of the installed RECORD path */
	uint32_t node; /* where it landed */
	bool changed;  /* script whose #! line was rewritten */
	bool popped;   /* matched by a RECORD row */
};

struct gen {
	uint32_t rec;
	uint32_t node;
};

struct wctx {
	struct builder *b;
	uint32_t wi;
	const struct tree_wheel *w;
	const struct zip_cd *cd;
	const char *fname;
	char *info;    /* "<name>-<ver>.dist-info" */
	char *project; /* the name pip knows the project by (headers dir) */
	struct buf arena;
	struct rec_row *rows;
	size_t nrows, caprows;
	uint32_t *rows_by_path;
	struct ep *console, *gui;
	size_t nconsole, ngui;
	struct inst *insts;
	size_t ninsts, capinsts;
	struct gen *gens;
	size_t ngens, capgens;
};

static const char *A(const struct wctx *c, uint32_t off)
{
	return (const char *)c->arena.data + off;
}

static void wctx_free(struct wctx *c)
{
	free(c->info);
	free(c->project);
	buf_free(&c->arena);
	free(c->rows);
	free(c->rows_by_path);
	for (size_t i = 0; i < c->nconsole; i++)
		free(c->console[i].name), free(c->console[i].value);
	for (size_t i = 0; i < c->ngui; i++)
		free(c->gui[i].name), free(c->gui[i].value);
	free(c->console);
	free(c->gui);
	free(c->insts);
	free(c->gens);
}

static int wfail(struct wctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int wfail(struct wctx *c, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return fail(c->b, "wheel \"%s\": %s", c->fname, msg);
}

/* utils/wheel.py wheel_dist_info_dir: exactly one top-level *.dist-info. */
static int find_info_dir(struct wctx *c)
{
	const char *found = NULL;
	size_t flen = 0;

	for (size_t i = 0; i < c->cd->n; i++) {
		const char *name = c->cd->entries[i].name;
		const char *slash = strchr(name, '/');
		size_t l = slash ? (size_t)(slash - name) : strlen(name);

		if (l < 10 || memcmp(name + l - 10, ".dist-info", 10) != 0)
			continue;
		if (!found) {
			found = name, flen = l;
		} else if (flen != l || memcmp(found, name, l) != 0) {
			return wfail(c, "multiple .dist-info directories found: %.*s, %.*s",
				     (int)flen, found, (int)l, name);
		}
	}
	if (!found)
		return wfail(c, ".dist-info directory not found");
	c->info = xstrndup(found, flen);
	return 0;
}

/* The project name pip gets from the wheel filename ('_' -> '-'), checked
 * against the dist-info directory as pip does; without a usable filename,
 * the dist-info directory's name part. */
static int find_project(struct wctx *c)
{
	const char *fn = c->w->filename;
	const char *dash;
	char *cn, *ci;
	bool ok;

	if (fn && strrchr(fn, '/'))
		fn = strrchr(fn, '/') + 1;
	if (fn && str_endswith(fn, ".whl") && (dash = strchr(fn, '-')) && dash > fn) {
		c->project = xstrndup(fn, (size_t)(dash - fn));
		for (char *p = c->project; *p; p++)
			if (*p == '_')
				*p = '-';
		cn = canonicalize(c->project, strlen(c->project));
		ci = canonicalize(c->info, strlen(c->info));
		ok = str_startswith(ci, cn);
		free(cn);
		free(ci);
		if (!ok)
			return wfail(c, ".dist-info directory \"%s\" does not start with \"%s\"",
				     c->info, c->project);
	} else {
		dash = strchr(c->info, '-');
		c->project =
		    xstrndup(c->info, dash ? (size_t)(dash - c->info) : strlen(c->info) - 10);
	}
	if (!rel_ok(c->project) || strchr(c->project, '/'))
		return wfail(c, "unusable project name \"%s\"", c->project);
	return 0;
}

static const struct wheel_file *info_file(struct wctx *c, const char *base)
{
	char *p = xasprintf("%s/%s", c->info, base);
	const struct wheel_file *f = wheel_meta_file(c->w->meta, p);

	free(p);
	return f;
}

/* WHEEL: RFC 822 headers; Wheel-Version major must not exceed 1. */
static int parse_wheel_file(struct wctx *c)
{
	const struct wheel_file *f = info_file(c, "WHEEL");
	const char *s, *val = NULL;
	size_t n, i = 0, vlen = 0;
	unsigned long major = 0, minor = 0;
	int part = 0;

	if (!f)
		return wfail(c, "could not read \"%s/WHEEL\"", c->info);
	if (!utf8_valid(f->data, f->len))
		return wfail(c, "error decoding \"%s/WHEEL\"", c->info);
	s = (const char *)f->data;
	n = f->len;
	while (i < n) {
		size_t len, next = i, colon;

		while (next < n && s[next] != '\n')
			next++;
		len = next - i;
		if (len && s[i + len - 1] == '\r')
			len--;
		if (len == 0)
			break; /* end of headers */
		if (s[i] == ' ' || s[i] == '\t') {
			i = next + 1; /* a folded continuation line */
			continue;
		}
		/* email.feedparser: "name:" with printable name chars, else the
		 * body starts here */
		for (colon = 0; colon < len && s[i + colon] != ':'; colon++)
			if ((unsigned char)s[i + colon] < 0x21 ||
			    (unsigned char)s[i + colon] > 0x7e)
				break;
		if (colon == len || s[i + colon] != ':')
			break;
		if (!val && colon < len && colon == 13 &&
		    strncasecmp(s + i, "Wheel-Version", 13) == 0) {
			val = s + i + colon + 1;
			vlen = len - colon - 1;
		}
		i = next + 1;
	}
	if (!val)
		return wfail(c, "WHEEL is missing Wheel-Version");
	strip(&val, &vlen);
	for (size_t k = 0; k <= vlen; k++) {
		if (k == vlen || val[k] == '.') {
			if (k == 0 || val[k - 1] == '.')
				goto bad;
			part++;
			continue;
		}
		if (val[k] < '0' || val[k] > '9')
			goto bad;
		if (part == 0)
			major = major * 10 + (unsigned long)(val[k] - '0');
		else if (part == 1)
			minor = minor * 10 + (unsigned long)(val[k] - '0');
		if (major > 1000 || minor > 1000)
			goto bad;
	}
	if (major > 1)
		return wfail(c, "Wheel-Version (%.*s) is not compatible with this installer",
			     (int)vlen, val);
	if (major == 1 && (minor > 0 || part > 2))
		warn(c->b, "wheel \"%s\": installing from a newer Wheel-Version (%.*s)", c->fname,
		     (int)vlen, val);
	return 0;
bad:
	return wfail(c, "invalid Wheel-Version: \"%.*s\"", (int)vlen, val);
}

static void add_row(struct wctx *c, const uint32_t *f, uint32_t nf)
{
	if (c->nrows == c->caprows) {
		c->caprows = c->caprows ? 2 * c->caprows : 64;
		c->rows = xrealloc(c->rows, c->caprows * sizeof(*c->rows));
	}
	struct rec_row *r = &c->rows[c->nrows++];
	uint32_t empty = 0;

	r->nf = nf;
	for (uint32_t k = 0; k < 3; k++)
		r->f[k] = k < nf ? f[k] : empty;
}

static int cmp_row_path(const void *a, const void *b, void *ud)
{
	const struct wctx *c = ud;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	int r = strcmp(A(c, c->rows[x].f[0]), A(c, c->rows[y].f[0]));

	return r ? r : (x < y ? -1 : x > y);
}

/* RECORD through csv.reader(text.splitlines()) (excel dialect, not strict). */
static int parse_record(struct wctx *c)
{
	const struct wheel_file *f = info_file(c, "RECORD");
	enum { START_RECORD, START_FIELD, IN_FIELD, IN_QUOTED, QUOTE_IN_QUOTED } st = START_RECORD;
	struct buf field;
	uint32_t fields[3];
	uint32_t nf = 0;
	const char *s;
	size_t n, i = 0;

	if (!f)
		return wfail(c, "could not read \"%s/RECORD\"", c->info);
	if (!utf8_valid(f->data, f->len))
		return wfail(c, "error decoding \"%s/RECORD\"", c->info);
	if (memchr(f->data, '\0', f->len))
		return wfail(c, "\"%s/RECORD\" contains NUL", c->info);
	s = (const char *)f->data;
	n = f->len;
	buf_init(&field);

#define SAVE_FIELD()                                                                               \
	do {                                                                                       \
		uint32_t off_ =                                                                    \
		    arena_add(&c->arena, field.data ? (const char *)field.data : "", field.len);   \
		if (nf < 3)                                                                        \
			fields[nf] = off_;                                                         \
		nf++;                                                                              \
		field.len = 0;                                                                     \
	} while (0)

	while (i < n) {
		size_t len, next = next_line(s, n, i, &len);

		for (size_t k = 0; k < len;) {
			const char *p = s + i + k, *e;
			char ch = *p;
			size_t run;

			/* runs of plain characters are copied at once: a
			 * byte at a time was half of building the tree */
			switch (st) {
			case START_RECORD:
			case START_FIELD:
				if (ch == '"') {
					st = IN_QUOTED;
					k++;
					break;
				} else if (ch == ',') {
					SAVE_FIELD();
					st = START_FIELD;
					k++;
					break;
				}
				st = IN_FIELD; /* ch starts the field */
				/* fall through */
			case IN_FIELD:
				e = memchr(p, ',', len - k);
				run = e ? (size_t)(e - p) : len - k;
				buf_append(&field, p, run);
				k += run;
				if (e) {
					SAVE_FIELD();
					st = START_FIELD;
					k++;
				}
				break;
			case IN_QUOTED:
				e = memchr(p, '"', len - k);
				run = e ? (size_t)(e - p) : len - k;
				buf_append(&field, p, run);
				k += run;
				if (e) {
					st = QUOTE_IN_QUOTED;
					k++;
				}
				break;
			case QUOTE_IN_QUOTED:
				k++;
				if (ch == '"') {
					buf_append(&field, &ch, 1);
					st = IN_QUOTED;
				} else if (ch == ',') {
					SAVE_FIELD();
					st = START_FIELD;
				} else {
					buf_append(&field, &ch, 1);
					st = IN_FIELD;
				}
				break;
			}
		}
		/* end of line */
		if (st == IN_QUOTED) {
			/* the quoted field goes on on the next line */
		} else if (st == START_RECORD) {
			/* blank line: csv yields [], on which pip fails; skip it */
		} else {
			SAVE_FIELD();
			if (nf > 3)
				warn(c->b, "wheel \"%s\": RECORD line has more than three elements",
				     c->fname);
			add_row(c, fields, nf < 3 ? nf : 3);
			nf = 0;
			st = START_RECORD;
		}
		i = next;
	}
	if (st == IN_QUOTED) {
		SAVE_FIELD();
		add_row(c, fields, nf < 3 ? nf : 3);
	}
#undef SAVE_FIELD
	buf_free(&field);

	c->rows_by_path = xmalloc((c->nrows ? c->nrows : 1) * sizeof(uint32_t));
	for (size_t k = 0; k < c->nrows; k++)
		c->rows_by_path[k] = (uint32_t)k;
	qsort_r(c->rows_by_path, c->nrows, sizeof(uint32_t), cmp_row_path, c);
	return 0;
}

/* The first RECORD row for path, or NULL. */
static const struct rec_row *row_for(const struct wctx *c, const char *path)
{
	size_t lo = 0, hi = c->nrows;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(A(c, c->rows[c->rows_by_path[mid]].f[0]), path) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < c->nrows && strcmp(A(c, c->rows[c->rows_by_path[lo]].f[0]), path) == 0)
		return &c->rows[c->rows_by_path[lo]];
	return NULL;
}

static void ep_set(struct ep **v, size_t *n, const char *name, size_t nlen, const char *val,
		   size_t vlen)
{
	for (size_t i = 0; i < *n; i++) {
		if (strlen((*v)[i].name) == nlen && memcmp((*v)[i].name, name, nlen) == 0) {
			free((*v)[i].value);
			(*v)[i].value = xstrndup(val, vlen);
			return;
		}
	}
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[*n].name = xstrndup(name, nlen);
	(*v)[*n].value = xstrndup(val, vlen);
	(*n)++;
}

/* entry_points.txt as importlib.metadata reads it (Sectioned/Pair). */
static int parse_entry_points(struct wctx *c)
{
	const struct wheel_file *f = info_file(c, "entry_points.txt");
	const char *s, *sect = NULL;
	size_t n, i = 0, sectlen = 0;

	if (!f)
		return 0;
	if (!utf8_valid(f->data, f->len))
		return wfail(c, "error decoding \"%s/entry_points.txt\"", c->info);
	s = (const char *)f->data;
	n = f->len;
	while (i < n) {
		size_t len, next = next_line(s, n, i, &len);
		const char *l = s + i;

		i = next;
		strip(&l, &len);
		if (len == 0 || l[0] == '#')
			continue;
		if (l[0] == '[' && l[len - 1] == ']') {
			sect = l, sectlen = len;
			while (sectlen && (*sect == '[' || *sect == ']'))
				sect++, sectlen--;
			while (sectlen && (sect[sectlen - 1] == '[' || sect[sectlen - 1] == ']'))
				sectlen--;
			continue;
		}
		if (!sect)
			continue;
		const char *eq = memchr(l, '=', len);

		if (!eq)
			return wfail(c, "bad line in \"%s/entry_points.txt\": \"%.*s\"", c->info,
				     (int)len, l);
		const char *name = l, *val = eq + 1;
		size_t nlen = (size_t)(eq - l), vlen = len - nlen - 1;

		strip(&name, &nlen);
		strip(&val, &vlen);
		if (sectlen == 15 && memcmp(sect, "console_scripts", 15) == 0)
			ep_set(&c->console, &c->nconsole, name, nlen, val, vlen);
		else if (sectlen == 11 && memcmp(sect, "gui_scripts", 11) == 0)
			ep_set(&c->gui, &c->ngui, name, nlen, val, vlen);
	}
	return 0;
}

static bool ep_has(const struct ep *v, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(v[i].name) == len && memcmp(v[i].name, name, len) == 0)
			return true;
	return false;
}

/* pip's is_entrypoint_wrapper: a .data/scripts file named after an entry
 * point (EP, EP.exe, EP-script.py, EP.pya) is setuptools' and is skipped. */
static bool is_ep_wrapper(const struct wctx *c, const char *dest)
{
	const char *base = strrchr(dest, '/') ? strrchr(dest, '/') + 1 : dest;
	size_t len = strlen(base);

	if (len >= 4 && strcasecmp(base + len - 4, ".exe") == 0)
		len -= 4;
	else if (len >= 10 && strcasecmp(base + len - 10, "-script.py") == 0)
		len -= 10;
	else if (len >= 4 && strcasecmp(base + len - 4, ".pya") == 0)
		len -= 4;
	return ep_has(c->console, c->nconsole, base, len) || ep_has(c->gui, c->ngui, base, len);
}

/* os.path.relpath(root/dest, site-packages), lexically. */
static uint32_t record_path(struct wctx *c, const char *dest)
{
	const char *sp[3] = {"lib", c->b->pyxy, "site-packages"};
	const char *s = dest;
	int k = 0;
	struct buf t;
	uint32_t off;

	while (k < 3) {
		size_t l = strlen(sp[k]);

		if (strncmp(s, sp[k], l) != 0 || s[l] != '/')
			break;
		s += l + 1;
		k++;
	}
	buf_init(&t);
	for (int j = k; j < 3; j++)
		buf_puts(&t, "../");
	buf_puts(&t, s);
	off = arena_add(&c->arena, (const char *)t.data, t.len);
	buf_free(&t);
	return off;
}

static char *sp_rel(const struct builder *b, const char *rel)
{
	return xasprintf("lib/%s/site-packages/%s", b->pyxy, rel);
}

static void add_inst(struct wctx *c, uint32_t src, uint32_t rec, uint32_t node, bool changed)
{
	if (c->ninsts == c->capinsts) {
		c->capinsts = c->capinsts ? 2 * c->capinsts : 64;
		c->insts = xrealloc(c->insts, c->capinsts * sizeof(*c->insts));
	}
	c->insts[c->ninsts++] = (struct inst){src, rec, node, changed, false};
}

static void add_gen(struct wctx *c, const char *dest, uint32_t node)
{
	if (c->ngens == c->capgens) {
		c->capgens = c->capgens ? 2 * c->capgens : 16;
		c->gens = xrealloc(c->gens, c->capgens * sizeof(*c->gens));
	}
	c->gens[c->ngens].rec = record_path(c, dest);
	c->gens[c->ngens].node = node;
	c->ngens++;
}

/* Installs zip entry ei at dest (relative to the venv root). */
static int install_entry(struct wctx *c, uint32_t ei, const char *dest, bool script)
{
	struct builder *b = c->b;
	const struct zip_entry *e = &c->cd->entries[ei];
	const struct rec_row *row = row_for(c, e->name);
	/* pip's zip_item_is_executable: a regular file with any x bit */
	bool exec = S_ISREG(e->mode) && (e->mode & 0111);
	struct fspec f = {.kind = TREE_BODY,
			  .mode = exec ? 0755 : 0644,
			  .mtime = e->mtime,
			  .size = e->usize,
			  .wheel = c->wi,
			  .entry = ei};
	uint32_t node;
	bool changed = false;
	struct buf body;
	int r;

	buf_init(&body);
	if (row && row->nf > 1) {
		const char *h = A(c, row->f[1]);

		if (strncmp(h, "sha256=", 7) == 0 &&
		    b64url_decode(h + 7, strlen(h + 7), f.sha, 32) == 0)
			f.has_sha = true;
	}
	if (script) {
		const struct wheel_file *wf = wheel_meta_file(c->w->meta, e->name);

		if (!wf)
			return wfail(c, "entry \"%s\": script body not provided", e->name);
		/* A kept prefix of a large script is enough when it shows the
		 * script will not be rewritten. */
		if (wf->len > e->usize || (wf->len != e->usize && wf->len < 8))
			return wfail(c, "entry \"%s\": kept script body has %zu of %llu bytes",
				     e->name, wf->len, (unsigned long long)e->usize);
		/* fix_script: a first line starting with #!python becomes
		 * #!<venv>/bin/python (any arguments are dropped). */
		if (wf->len >= 8 && memcmp(wf->data, "#!python", 8) == 0) {
			const uint8_t *nl;
			size_t rest;

			if (wf->len != e->usize)
				return wfail(c,
					     "entry \"%s\": script body truncated (%zu of %llu "
					     "bytes)",
					     e->name, wf->len, (unsigned long long)e->usize);
			nl = memchr(wf->data, '\n', wf->len);
			rest = nl ? wf->len - (size_t)(nl + 1 - wf->data) : 0;
			buf_printf(&body, "#!%s\n", b->python);
			if (rest)
				buf_append(&body, nl + 1, rest);
			f.kind = TREE_DATA;
			f.data = body.data;
			f.size = body.len;
			f.mtime = b->opts->mtime;
			changed = true;
		}
	}
	r = put_file(b, 0, dest, &f, c->wi, e->name, &node);
	buf_free(&body);
	if (r < 0)
		return r;
	add_inst(c, ei, record_path(c, dest), node, changed);
	return 0;
}

/* Three passes in pip's order: root files, other .data, .data/scripts. */
static int install_files(struct wctx *c)
{
	struct builder *b = c->b;
	int r = 0;

	for (int pass = 0; pass < 3 && r == 0; pass++) {
		for (uint32_t ei = 0; ei < c->cd->n && r == 0; ei++) {
			const char *name = c->cd->entries[ei].name;
			const char *slash = strchr(name, '/');
			size_t toplen = slash ? (size_t)(slash - name) : strlen(name);
			bool is_data = toplen >= 5 && memcmp(name + toplen - 5, ".data", 5) == 0;
			bool is_script = is_data && slash && strncmp(slash + 1, "scripts/", 8) == 0;
			char *dest = NULL;

			if (str_endswith(name, "/"))
				continue;
			if ((pass == 0) != !is_data || (pass == 2) != is_script)
				continue;
			if (!rel_ok(name))
				return wfail(c, "entry \"%s\": unsafe path", name);
			if (pass == 0) {
				dest = sp_rel(b, name);
			} else {
				const char *key = slash ? slash + 1 : NULL;
				const char *sub = key ? strchr(key, '/') : NULL;
				size_t klen = sub ? (size_t)(sub - key) : 0;

				if (!sub)
					return wfail(c,
						     "unexpected file \"%s\": .data directory "
						     "contents should be named like "
						     "'<scheme key>/<path>'",
						     name);
				sub++;
				if ((klen == 7 && memcmp(key, "purelib", 7) == 0) ||
				    (klen == 7 && memcmp(key, "platlib", 7) == 0))
					dest = sp_rel(b, sub);
				else if (klen == 7 && memcmp(key, "headers", 7) == 0)
					dest = xasprintf("include/site/%s/%s/%s", b->pyxy,
							 c->project, sub);
				else if (klen == 7 && memcmp(key, "scripts", 7) == 0)
					dest = xasprintf("bin/%s", sub);
				else if (klen == 4 && memcmp(key, "data", 4) == 0)
					dest = xstrdup(sub);
				else
					return wfail(c,
						     "unknown scheme key \"%.*s\" (for file "
						     "\"%s\"): valid keys are data, headers, "
						     "platlib, purelib, scripts",
						     (int)klen, key, name);
				if (pass == 2 && is_ep_wrapper(c, dest)) {
					free(dest);
					continue;
				}
			}
			r = install_entry(c, ei, dest, pass == 2);
			free(dest);
		}
	}
	return r;
}

/* distlib's get_export_entry on "name = value" (ENTRY_RE.search).
 * Returns 0 with the parts, -ENOENT when nothing matches, -EINVAL when the
 * spec is invalid, -ENOEXEC when the callable has no ":attr" suffix. */
static int export_entry(const char *s, size_t *nstart, size_t *nlen, size_t *cstart, size_t *clen)
{
	size_t len = strlen(s);
	bool bracket = strchr(s, '[') || strchr(s, ']');

	for (size_t i = 0; i < len; i++) {
		size_t j = i, k, m, c0, c1, colons = 0;
		bool flags = false;

#define NAMECH(ch) (py_word((unsigned char)(ch)) || (ch) == '-' || (ch) == '.' || (ch) == '+')
#define WORD(ch) ((ch) && py_word((unsigned char)(ch)))
		if (!NAMECH(s[i]) || s[i] == '\0')
			continue;
		while (s[j] && NAMECH(s[j]))
			j++;
		k = j;
		while (s[k] && py_space((unsigned char)s[k]))
			k++;
		if (s[k] != '=')
			continue;
		k++;
		while (s[k] && py_space((unsigned char)s[k]))
			k++;
		if (!WORD(s[k]))
			continue;
		c0 = k;
		while (WORD(s[k]))
			k++;
		while ((s[k] == ':' || s[k] == '.') && WORD(s[k + 1])) {
			k++;
			while (WORD(s[k]))
				k++;
		}
		c1 = k;
		/* \s*(\[\s*(?P<flags>[\w-]+(=\w+)?(,\s*\w+(=\w+)?)*)\s*\])? */
		m = k;
		while (s[m] && py_space((unsigned char)s[m]))
			m++;
		if (s[m] == '[') {
			m++;
			while (s[m] && py_space((unsigned char)s[m]))
				m++;
			if (WORD(s[m]) || s[m] == '-') {
				while (WORD(s[m]) || s[m] == '-')
					m++;
				if (s[m] == '=' && WORD(s[m + 1]))
					for (m++; WORD(s[m]); m++)
						;
				for (;;) {
					size_t t = m;

					if (s[t] != ',')
						break;
					t++;
					while (s[t] && py_space((unsigned char)s[t]))
						t++;
					if (!WORD(s[t]))
						break;
					while (WORD(s[t]))
						t++;
					if (s[t] == '=' && WORD(s[t + 1]))
						for (t++; WORD(s[t]); t++)
							;
					m = t;
				}
				while (s[m] && py_space((unsigned char)s[m]))
					m++;
				flags = s[m] == ']';
			}
		}
#undef NAMECH
#undef WORD
		if (!flags && bracket)
			return -EINVAL;
		for (size_t q = c0; q < c1; q++)
			colons += s[q] == ':';
		if (colons > 1)
			return -EINVAL;
		if (colons == 0)
			return -ENOEXEC;
		*nstart = i;
		*nlen = j - i;
		*cstart = c0;
		*clen = c1 - c0;
		return 0;
	}
	return bracket ? -EINVAL : -ENOENT;
}

/* distlib ScriptMaker._build_shebang for <venv>/bin/python. */
static void shebang(const struct builder *b, struct buf *out)
{
	const char *exe = b->python;
	bool space = strchr(exe, ' ') != NULL;
	char *q = space ? xasprintf("\"%s\"", exe) : xstrdup(exe);

	if (!space && strlen(q) + 3 <= SHEBANG_MAX)
		buf_printf(out, "#!%s\n", q);
	else
		buf_printf(out, "#!/bin/sh\n'''exec' %s \"$0\" \"$@\"\n' '''\n", q);
	free(q);
}

static int make_launcher(struct wctx *c, const char *name, const char *value)
{
	struct builder *b = c->b;
	char *spec = xasprintf("%s = %s", name, value);
	size_t ns = 0, nl = 0, cs = 0, cl = 0;
	int r = export_entry(spec, &ns, &nl, &cs, &cl);
	struct buf text;
	char *ename, *module, *func, *dest;
	size_t flen;
	const char *colon;
	uint32_t node;

	if (r == -ENOEXEC)
		r = wfail(c, "invalid script entry point: \"%s\" - a callable suffix is required",
			  spec);
	else if (r < 0)
		r = wfail(c, "invalid entry point specification \"%s\"", spec);
	if (r < 0) {
		free(spec);
		return r;
	}
	ename = xstrndup(spec + ns, nl);
	colon = memchr(spec + cs, ':', cl);
	module = xstrndup(spec + cs, (size_t)(colon - (spec + cs)));
	func = xstrndup(colon + 1, cl - (size_t)(colon + 1 - (spec + cs)));
	flen = strcspn(func, ".");
	buf_init(&text);
	shebang(b, &text);
	buf_printf(&text,
		   "# -*- coding: utf-8 -*-\n"
		   "import re\n"
		   "import sys\n"
		   "from %s import %.*s\n"
		   "if __name__ == '__main__':\n"
		   "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
		   "    sys.exit(%s())\n",
		   module, (int)flen, func, func);
	dest = xasprintf("bin/%s", ename);
	r = put_data(b, 0, dest, text.data, text.len, 0755, c->wi, spec, &node);
	if (r == 0)
		add_gen(c, dest, node);
	free(dest);
	buf_free(&text);
	free(ename);
	free(module);
	free(func);
	free(spec);
	return r;
}

/* re.match(r"pip(\d+(\.\d+)?)?$") and r"easy_install(-\d+\.\d+)?$" */
static bool versioned(const char *s, const char *base, bool dash)
{
	size_t l = strlen(base), d = 0;

	if (strncmp(s, base, l) != 0)
		return false;
	s += l;
	if (!*s)
		return true;
	if (dash && *s++ != '-')
		return false;
	while (*s >= '0' && *s <= '9')
		s++, d++;
	if (!d)
		return false;
	if (!*s)
		return !dash;
	if (*s++ != '.')
		return false;
	for (d = 0; *s >= '0' && *s <= '9'; s++)
		d++;
	return d && !*s;
}

/* get_console_script_specs, then the gui scripts. */
static int make_launchers(struct wctx *c)
{
	const struct tree_python *py = &c->b->opts->py;
	const char *pip = NULL, *ei = NULL;
	int r = 0;

	for (size_t i = 0; i < c->nconsole; i++) {
		if (strcmp(c->console[i].name, "pip") == 0)
			pip = c->console[i].value;
		else if (strcmp(c->console[i].name, "easy_install") == 0)
			ei = c->console[i].value;
	}
	if (pip) {
		char *n1 = xasprintf("pip%d", py->major);
		char *n2 = xasprintf("pip%d.%d", py->major, py->minor);

		r = make_launcher(c, "pip", pip);
		if (r == 0)
			r = make_launcher(c, n1, pip);
		if (r == 0)
			r = make_launcher(c, n2, pip);
		free(n1);
		free(n2);
	}
	if (ei && r == 0) {
		char *n = xasprintf("easy_install-%d.%d", py->major, py->minor);

		r = make_launcher(c, "easy_install", ei);
		if (r == 0)
			r = make_launcher(c, n, ei);
		free(n);
	}
	for (size_t i = 0; i < c->nconsole && r == 0; i++) {
		const char *n = c->console[i].name;

		if (pip && versioned(n, "pip", false))
			continue;
		if (ei && versioned(n, "easy_install", true))
			continue;
		r = make_launcher(c, n, c->console[i].value);
	}
	for (size_t i = 0; i < c->ngui && r == 0; i++)
		r = make_launcher(c, c->gui[i].name, c->gui[i].value);
	return r;
}

struct out_row {
	const char *f[3];
};

static int cmp_out_row(const void *a, const void *b)
{
	const struct out_row *x = a, *y = b;

	for (int k = 0; k < 3; k++) {
		int r = strcmp(x->f[k], y->f[k]);

		if (r)
			return r;
	}
	return 0;
}

/* csv.writer (QUOTE_MINIMAL, lineterminator \r\n) */
static void csv_field(struct buf *out, const char *s)
{
	if (!strpbrk(s, ",\"\r\n")) {
		buf_puts(out, s);
		return;
	}
	buf_puts(out, "\"");
	for (; *s; s++) {
		if (*s == '"')
			buf_puts(out, "\"\"");
		else
			buf_append(out, s, 1);
	}
	buf_puts(out, "\"");
}

/* Digest and size of what node i holds now (pip's rehash). */
static void node_digest(struct wctx *c, uint32_t i, uint32_t *hash, uint32_t *size)
{
	const struct tree_node *nd = &c->b->nodes[i];
	char h[8 + 44], sz[24];

	if (nd->has_sha) {
		record_hash(nd->sha256, h);
		*hash = arena_add(&c->arena, h, strlen(h));
	} else {
		*hash = 0; /* a BODY RECORD gave no hash for: nothing to say */
	}
	snprintf(sz, sizeof(sz), "%llu", (unsigned long long)nd->size);
	*size = arena_add(&c->arena, sz, strlen(sz));
}

static int cmp_inst_src(const void *a, const void *b, void *ud)
{
	const struct wctx *c = ud;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	int r = strcmp(c->cd->entries[c->insts[x].src].name, c->cd->entries[c->insts[y].src].name);

	return r ? r : (x < y ? -1 : x > y);
}

/* get_csv_rows_for_installed + the sorted csv.writer output. */
static int write_record(struct wctx *c)
{
	struct builder *b = c->b;
	uint32_t *by_src = xmalloc((c->ninsts ? c->ninsts : 1) * sizeof(uint32_t));
	uint32_t *changed_idx = xmalloc((c->ninsts ? c->ninsts : 1) * sizeof(uint32_t));
	size_t nchanged = 0;
	uint32_t(*rows)[3];
	size_t nrows = 0;
	size_t cap = c->nrows + c->ngens + c->ninsts + 1;
	struct out_row *out;
	struct buf text;
	char *dest;
	int r;

	rows = xmalloc(cap * sizeof(*rows));
	for (size_t k = 0; k < c->ninsts; k++)
		by_src[k] = (uint32_t)k;
	qsort_r(by_src, c->ninsts, sizeof(uint32_t), cmp_inst_src, c);
	/* the `changed` set: rewritten scripts, usually none or a few */
	for (size_t k = 0; k < c->ninsts; k++)
		if (c->insts[k].changed)
			changed_idx[nchanged++] = (uint32_t)k;

	for (size_t k = 0; k < c->nrows; k++) {
		const struct rec_row *row = &c->rows[k];
		const char *old = A(c, row->f[0]);
		uint32_t newp = row->f[0];
		size_t lo = 0, hi = c->ninsts;
		bool changed = false;
		uint32_t cnode = 0;

		/* installed.pop(old, old): the last-inserted inst for src */
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (strcmp(c->cd->entries[c->insts[by_src[mid]].src].name, old) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t q = lo; q < c->ninsts &&
				    strcmp(c->cd->entries[c->insts[by_src[q]].src].name, old) == 0;
		     q++) {
			struct inst *in = &c->insts[by_src[q]];

			if (!in->popped) {
				in->popped = true;
				newp = in->rec;
				break;
			}
		}
		for (size_t q = 0; q < nchanged; q++) {
			const struct inst *in = &c->insts[changed_idx[q]];

			if (strcmp(A(c, in->rec), A(c, newp)) == 0) {
				changed = true;
				cnode = in->node;
			}
		}
		rows[nrows][0] = newp;
		if (changed) {
			node_digest(c, cnode, &rows[nrows][1], &rows[nrows][2]);
		} else {
			rows[nrows][1] = row->nf > 1 ? row->f[1] : 0;
			rows[nrows][2] = row->nf > 2 ? row->f[2] : 0;
		}
		nrows++;
	}
	for (size_t k = 0; k < c->ngens; k++) {
		rows[nrows][0] = c->gens[k].rec;
		node_digest(c, c->gens[k].node, &rows[nrows][1], &rows[nrows][2]);
		nrows++;
	}
	for (size_t k = 0; k < c->ninsts; k++) {
		if (c->insts[k].popped)
			continue;
		rows[nrows][0] = c->insts[k].rec;
		rows[nrows][1] = 0;
		rows[nrows][2] = 0;
		nrows++;
		c->insts[k].popped = true; /* a dict holds each src once */
	}
	free(by_src);
	free(changed_idx);

	out = xmalloc((nrows ? nrows : 1) * sizeof(*out));
	for (size_t k = 0; k < nrows; k++)
		for (int q = 0; q < 3; q++)
			out[k].f[q] = A(c, rows[k][q]);
	qsort(out, nrows, sizeof(*out), cmp_out_row);
	buf_init(&text);
	for (size_t k = 0; k < nrows; k++) {
		csv_field(&text, out[k].f[0]);
		buf_puts(&text, ",");
		csv_field(&text, out[k].f[1]);
		buf_puts(&text, ",");
		csv_field(&text, out[k].f[2]);
		buf_puts(&text, "\r\n");
	}
	free(out);
	free(rows);
	dest = xasprintf("%s/RECORD", c->info);
	{
		char *full = sp_rel(b, dest);

		r = put_data(b, 0, full, text.data, text.len, 0644, c->wi, dest, NULL);
		free(full);
	}
	free(dest);
	buf_free(&text);
	return r;
}

static int put_generated(struct wctx *c, const char *base, const char *data)
{
	char *rel = xasprintf("%s/%s", c->info, base);
	char *dest = sp_rel(c->b, rel);
	uint32_t node;
	int r = put_data(c->b, 0, dest, data, strlen(data), 0644, c->wi, rel, &node);

	if (r == 0)
		add_gen(c, dest, node);
	free(rel);
	free(dest);
	return r;
}

static int install_wheel(struct builder *b, uint32_t wi)
{
	struct wctx c = {.b = b, .wi = wi, .w = &b->wheels[wi]};
	char *installer;
	int r;

	c.fname = c.w->filename ? c.w->filename : "(unnamed)";
	buf_init(&c.arena);
	buf_append(&c.arena, "", 1); /* offset 0 is "" (absent RECORD fields) */
	if (!c.w->meta || !c.w->meta->cd) {
		r = wfail(&c, "no central directory");
		goto out;
	}
	c.cd = c.w->meta->cd;
	for (size_t i = 0; i < c.cd->n; i++) {
		if (!c.cd->entries[i].name) {
			r = wfail(&c, "entry %zu has no name", i);
			goto out;
		}
	}
	r = find_info_dir(&c);
	if (r == 0)
		r = find_project(&c);
	if (r == 0)
		r = parse_wheel_file(&c);
	if (r == 0)
		r = parse_record(&c);
	if (r == 0)
		r = parse_entry_points(&c);
	if (r == 0)
		r = install_files(&c);
	if (r == 0)
		r = make_launchers(&c);
	if (r < 0)
		goto out;
	installer = xasprintf("%s\n", b->opts->installer ? b->opts->installer : "sitefs");
	r = put_generated(&c, "INSTALLER", installer);
	free(installer);
	if (r == 0 && c.w->requested)
		r = put_generated(&c, "REQUESTED", "");
	if (r == 0)
		r = write_record(&c);
out:
	wctx_free(&c);
	return r;
}

/* ---- finalization ---- */

static int cmp_child(const void *a, const void *b, void *ud)
{
	const struct builder *bd = ud;

	return strcmp(bname(bd, *(const uint32_t *)a), bname(bd, *(const uint32_t *)b));
}

static void builder_free(struct builder *b)
{
	free(b->nodes);
	free(b->first);
	free(b->next);
	free(b->owner);
	free(b->ht);
	buf_free(&b->strings);
	buf_free(&b->blob);
	for (size_t i = 0; i < b->nwarnings; i++)
		free(b->warnings[i]);
	free(b->warnings);
	free(b->root);
	free(b->prefix);
	free(b->python);
	free(b->pyxy);
}

static struct tree *finalize(struct builder *b)
{
	struct tree *t = xcalloc(1, sizeof(*t));
	size_t nch = b->n - 1, pos = 0;

	t->children = xmalloc((nch ? nch : 1) * sizeof(uint32_t));
	for (size_t i = 0; i < b->n; i++) {
		struct tree_node *nd = &b->nodes[i];
		uint32_t first = (uint32_t)pos;

		if (nd->kind != TREE_DIR) {
			t->nfiles += nd->kind != TREE_LINK;
			if (nd->kind == TREE_BODY) {
				t->nbodies++;
				t->body_bytes += nd->size;
			}
			continue;
		}
		for (uint32_t c = b->first[i]; c != NO_NODE; c = b->next[c])
			t->children[pos++] = c;
		qsort_r(t->children + first, pos - first, sizeof(uint32_t), cmp_child, b);
		nd->dir.first = first;
		nd->dir.count = (uint32_t)(pos - first);
	}
	t->nodes = xrealloc(b->nodes, b->n * sizeof(*b->nodes));
	b->nodes = NULL;
	t->n = b->n;
	t->strings = (char *)buf_steal(&b->strings, NULL);
	t->blob = buf_steal(&b->blob, NULL);
	t->warnings = b->warnings;
	t->nwarnings = b->nwarnings;
	b->warnings = NULL;
	b->nwarnings = 0;
	return t;
}

/* os.path.abspath on an absolute path: collapses "//", "." and "..". */
static char *normalize_root(const char *p)
{
	char *out = xmalloc(strlen(p) + 2);
	size_t o = 0;
	const char *s = p;

	while (*s) {
		const char *e;
		size_t l;

		while (*s == '/')
			s++;
		e = strchr(s, '/');
		l = e ? (size_t)(e - s) : strlen(s);
		if (l == 0)
			break;
		if (l == 1 && s[0] == '.') {
			/* skip */
		} else if (l == 2 && s[0] == '.' && s[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else {
			out[o++] = '/';
			memcpy(out + o, s, l);
			o += l;
		}
		s += l;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	return out;
}

int tree_build(const struct tree_opts *opts, const struct tree_wheel *wheels, size_t nwheels,
	       struct tree **ret, char *err, size_t errlen)
{
	struct builder b = {.opts = opts, .wheels = wheels, .err = err, .errlen = errlen};
	int r;

	if (err && errlen)
		err[0] = '\0';
	if (!opts || !ret || (nwheels && !wheels))
		return -EINVAL;
	if (!opts->venv_root || opts->venv_root[0] != '/')
		return fail(&b, "venv root must be an absolute path");
	if (!opts->py.executable || opts->py.executable[0] != '/' || !opts->py.version)
		return fail(&b, "the interpreter's absolute path and version are required");
	if (nwheels >= OWNER_VENV)
		return fail(&b, "too many wheels");

	buf_init(&b.strings);
	buf_init(&b.blob);
	buf_append(&b.strings, "", 1); /* the root's name: "" at offset 0 */
	b.root = normalize_root(opts->venv_root);
	b.prefix = xstrdup(strcmp(b.root, "/") == 0 ? "" : b.root);
	b.python = xasprintf("%s/bin/python", b.prefix);
	b.pyxy = xasprintf("python%d.%d", opts->py.major, opts->py.minor);

	/* the root */
	b.cap = 256;
	b.nodes = xcalloc(b.cap, sizeof(*b.nodes));
	b.first = xmalloc(b.cap * sizeof(*b.first));
	b.next = xmalloc(b.cap * sizeof(*b.next));
	b.owner = xmalloc(b.cap * sizeof(*b.owner));
	b.n = 1;
	b.nodes[0].kind = TREE_DIR;
	b.nodes[0].mode = S_IFDIR | 0755;
	b.nodes[0].mtime = opts->mtime;
	b.first[0] = NO_NODE;
	b.next[0] = NO_NODE;
	b.owner[0] = OWNER_VENV;
	ht_grow(&b);

	r = build_skeleton(&b);
	for (size_t i = 0; i < nwheels && r == 0; i++)
		r = install_wheel(&b, (uint32_t)i);
	if (r == 0)
		*ret = finalize(&b);
	builder_free(&b);
	return r;
}

struct tree *tree_free(struct tree *t)
{
	if (!t)
		return NULL;
	free(t->nodes);
	free(t->children);
	free(t->strings);
	free(t->blob);
	for (size_t i = 0; i < t->nwarnings; i++)
		free(t->warnings[i]);
	free(t->warnings);
	free(t);
	return NULL;
}

int64_t tree_lookup(const struct tree *t, uint32_t dir, const char *name)
{
	const struct tree_node *d;
	size_t lo = 0, hi;

	if (!t || dir >= t->n || !name)
		return -1;
	d = &t->nodes[dir];
	if (d->kind != TREE_DIR)
		return -1;
	hi = d->dir.count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint32_t c = t->children[d->dir.first + mid];
		int r = strcmp(t->strings + t->nodes[c].name, name);

		if (r == 0)
			return c;
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int64_t tree_lookup_path(const struct tree *t, const char *path)
{
	int64_t cur = 0;
	char comp[NAME_MAX + 1];

	if (!t || !path)
		return -1;
	while (*path) {
		const char *e = strchr(path, '/');
		size_t l = e ? (size_t)(e - path) : strlen(path);

		if (l > NAME_MAX)
			return -1;
		if (l) {
			memcpy(comp, path, l);
			comp[l] = '\0';
			cur = tree_lookup(t, (uint32_t)cur, comp);
			if (cur < 0)
				return -1;
		}
		path += l;
		if (*path == '/')
			path++;
	}
	return cur;
}

int tree_path(const struct tree *t, uint32_t i, char *out, size_t outlen)
{
	if (!t || i >= t->n)
		return -EINVAL;
	return node_path(t->nodes, t->strings, i, out, outlen);
}
