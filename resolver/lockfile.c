/* lockfile: PEP 751 pylock.toml -> struct lock_file.
 *
 * Only what sitefs needs is kept (packages, their wheels, markers), but the
 * whole document is type-checked so that a malformed lock fails loudly with
 * "FILE:LINE:COL: package 'x': what is wrong" instead of half-working.
 * Unknown keys are ignored (the format may grow; [tool] tables are free).
 *
 * Wheels: "url" (http, https or file) and/or "path" (relative to the lock
 * file's directory); a path wins when both are given.  Remote wheels need
 * "size" because the filesystem reads the zip central directory with a
 * range request before downloading anything, and every wheel needs a
 * sha256 hash.  The filename is "name", else the last URL or path segment
 * (percent-decoded); it must be a valid wheel filename of this package. */
#include "resolver/lockfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "resolver/tags.h"
#include "resolver/toml.h"

struct ctx {
	const char *path; /* for messages */
	char *base_dir;	  /* absolute directory of the lock file */
	char *err;
	size_t errlen;
	const char *pkg; /* package being read, for messages */
};

static int __attribute__((format(printf, 3, 4)))
lerr(struct ctx *c, const struct toml_value *at, const char *fmt, ...)
{
	int n =
	    snprintf(c->err, c->errlen, "%s:%d:%d: ", c->path, at ? at->line : 1, at ? at->col : 1);
	if (n >= 0 && (size_t)n < c->errlen && c->pkg)
		n += snprintf(c->err + n, c->errlen - (size_t)n, "package '%s': ", c->pkg);
	if (n >= 0 && (size_t)n < c->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- typed getters: absent is fine, the wrong type is an error ---- */

static int get_typed(struct ctx *c, const struct toml_value *tab, const char *key,
		     enum toml_type type, const struct toml_value **ret)
{
	const struct toml_value *v = toml_get(tab, key);
	*ret = NULL;
	if (!v)
		return 0;
	if (v->type != type)
		return lerr(c, v, "'%s' must be a%s %s, not a%s %s", key,
			    type == TOML_ARRAY || type == TOML_INTEGER ? "n" : "",
			    toml_type_name(type),
			    v->type == TOML_ARRAY || v->type == TOML_INTEGER ? "n" : "",
			    toml_type_name(v->type));
	*ret = v;
	return 0;
}

static int get_string(struct ctx *c, const struct toml_value *tab, const char *key, char **ret)
{
	const struct toml_value *v;
	*ret = NULL;
	if (get_typed(c, tab, key, TOML_STRING, &v) < 0)
		return -EINVAL;
	if (v)
		*ret = xstrdup(v->s);
	return 0;
}

/* An array whose items are all of one type; *ret is NULL when absent. */
static int get_array_of(struct ctx *c, const struct toml_value *tab, const char *key,
			enum toml_type type, const struct toml_value **ret)
{
	if (get_typed(c, tab, key, TOML_ARRAY, ret) < 0)
		return -EINVAL;
	for (size_t i = 0; *ret && i < (*ret)->arr.n; i++) {
		const struct toml_value *it = (*ret)->arr.items[i];
		if (it->type != type)
			return lerr(c, it, "items of '%s' must be %ss, not %ss", key,
				    toml_type_name(type), toml_type_name(it->type));
	}
	return 0;
}

static int get_string_list(struct ctx *c, const struct toml_value *tab, const char *key,
			   char ***ret, size_t *ret_n)
{
	const struct toml_value *a;
	if (get_array_of(c, tab, key, TOML_STRING, &a) < 0)
		return -EINVAL;
	size_t n = a ? a->arr.n : 0;
	char **v = xcalloc(n ? n : 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = xstrdup(a->arr.items[i]->s);
	*ret = v;
	*ret_n = n;
	return 0;
}

/* ---- names, URLs, paths ---- */

static bool alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* PEP 508 names: ^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$, case-insensitively. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	if (!n || !alnum(s[0]) || !alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

static int hexdig(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes %XX escapes of s[0..n); NULL on a bad escape or a decoded NUL. */
static char *percent_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		int hi = i + 1 < n ? hexdig(s[i + 1]) : -1;
		int lo = i + 2 < n ? hexdig(s[i + 2]) : -1;
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		out[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	out[o] = 0;
	return out;
}

/* Lexically normalizes an absolute path: "//", "." and ".." go away. */
static char *normalize_path(const char *p)
{
	size_t n = strlen(p);
	char *out = xmalloc(n + 2);
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		while (i < n && p[i] == '/')
			i++;
		size_t s = i;
		while (i < n && p[i] != '/')
			i++;
		size_t len = i - s;
		if (len == 0 || (len == 1 && p[s] == '.'))
			continue;
		if (len == 2 && p[s] == '.' && p[s + 1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--; /* the slash */
			continue;
		}
		out[o++] = '/';
		memcpy(out + o, p + s, len);
		o += len;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = 0;
	return out;
}

static char *base_dir_of(const char *lock_path)
{
	const char *slash = strrchr(lock_path, '/');
	char *dir = slash ? xstrndup(lock_path, (size_t)(slash - lock_path) + 1) : xstrdup(".");
	if (dir[0] != '/') {
		char *cwd = getcwd(NULL, 0);
		if (cwd) {
			char *abs = xasprintf("%s/%s", cwd, dir);
			free(cwd);
			free(dir);
			dir = abs;
		}
	}
	char *norm = dir[0] == '/' ? normalize_path(dir) : xstrdup(dir);
	free(dir);
	return norm;
}

static char *resolve_path(const struct ctx *c, const char *p)
{
	if (p[0] == '/')
		return normalize_path(p);
	char *joined = xasprintf("%s/%s", c->base_dir, p);
	char *r = joined[0] == '/' ? normalize_path(joined) : xstrdup(joined);
	free(joined);
	return r;
}

static bool has_scheme(const char *url, const char *scheme)
{
	size_t n = strlen(scheme);
	return strncasecmp(url, scheme, n) == 0 && url[n] == ':' && url[n + 1] == '/' &&
	       url[n + 2] == '/';
}

/* ---- packages and wheels ---- */

static int read_wheel(struct ctx *c, const struct toml_value *w, struct lock_wheel *out)
{
	const struct toml_value *size, *hashes;
	char *name = NULL, *url = NULL, *path = NULL;
	int r = -EINVAL;

	memset(out, 0, sizeof(*out));
	out->line = w->line;
	if (get_string(c, w, "name", &name) < 0 || get_string(c, w, "url", &url) < 0 ||
	    get_string(c, w, "path", &path) < 0 ||
	    get_typed(c, w, "size", TOML_INTEGER, &size) < 0 ||
	    get_typed(c, w, "hashes", TOML_TABLE, &hashes) < 0)
		goto out;
	if (!url && !path) {
		lerr(c, w, "wheel%s%s%s has neither url nor path", name ? " '" : "",
		     name ? name : "", name ? "'" : "");
		goto out;
	}
	if (url && !has_scheme(url, "http") && !has_scheme(url, "https") &&
	    !has_scheme(url, "file")) {
		lerr(c, toml_get(w, "url"), "wheel url \"%s\" is not http, https or file", url);
		goto out;
	}
	if (url && has_scheme(url, "file")) {
		/* file://[localhost]/abs/path: a local wheel */
		const char *p = url + 7;
		if (strncasecmp(p, "localhost/", 10) == 0)
			p += 9;
		char *dec = p[0] == '/' ? percent_decode(p, strlen(p)) : NULL;
		if (!dec) {
			lerr(c, toml_get(w, "url"), "wheel url \"%s\" is not a local file URL",
			     url);
			goto out;
		}
		if (!path)
			path = dec;
		else
			free(dec);
		free(url);
		url = NULL;
	}

	/* the filename */
	if (name) {
		out->filename = name;
		name = NULL;
	} else {
		const char *src = url ? url : path;
		size_t end = strcspn(src, url ? "?#" : "");
		size_t start = end;
		while (start > 0 && src[start - 1] != '/')
			start--;
		out->filename = url ? percent_decode(src + start, end - start)
				    : xstrndup(src + start, end - start);
		if (!out->filename || !out->filename[0]) {
			lerr(c, w, "cannot take a wheel filename from \"%s\"", src);
			goto out;
		}
	}
	struct wheel_name wn;
	if (strchr(out->filename, '/') || wheelname_parse(out->filename, &wn) < 0) {
		lerr(c, w, "\"%s\" is not a valid wheel filename", out->filename);
		goto out;
	}
	char *a = tags_normalize_name(wn.dist), *b = tags_normalize_name(c->pkg);
	bool same = strcmp(a, b) == 0;
	free(a);
	free(b);
	wheelname_free(&wn);
	if (!same) {
		lerr(c, w, "wheel '%s' belongs to another project", out->filename);
		goto out;
	}

	if (size) {
		if (size->i < 0) {
			lerr(c, size, "wheel '%s' has a negative size", out->filename);
			goto out;
		}
		out->size = (uint64_t)size->i;
		out->has_size = true;
	} else if (!path) {
		lerr(c, w,
		     "wheel '%s' has no size: sitefs needs it to read the zip directory with a "
		     "range request",
		     out->filename);
		goto out;
	}

	const char *sha = hashes ? toml_get_string(hashes, "sha256") : NULL;
	if (!hashes) {
		lerr(c, w, "wheel '%s' has no hashes (sitefs needs a sha256 hash)", out->filename);
		goto out;
	}
	if (!sha) {
		const struct toml_value *h = toml_get(hashes, "sha256");
		lerr(c, h ? h : w, "wheel '%s' has no sha256 hash", out->filename);
		goto out;
	}
	if (strlen(sha) != SHA256_HEX_LEN || hex_decode(sha, out->sha256, SHA256_LEN) < 0) {
		lerr(c, toml_get(hashes, "sha256"), "wheel '%s' has a malformed sha256 hash",
		     out->filename);
		goto out;
	}
	out->has_sha256 = true;

	if (path) {
		out->path = resolve_path(c, path);
	} else {
		out->url = url;
		url = NULL;
	}
	r = 0;
out:
	if (r < 0) {
		free(out->filename);
		free(out->path);
		free(out->url);
		memset(out, 0, sizeof(*out));
	}
	free(name);
	free(url);
	free(path);
	return r;
}

static void package_clear(struct lock_package *p)
{
	free(p->name);
	free(p->version);
	free(p->marker);
	free(p->index);
	free(p->requires_python);
	for (size_t i = 0; i < p->nwheels; i++) {
		free(p->wheels[i].filename);
		free(p->wheels[i].url);
		free(p->wheels[i].path);
	}
	free(p->wheels);
	memset(p, 0, sizeof(*p));
}

static int read_package(struct ctx *c, const struct toml_value *t, struct lock_package *p)
{
	const struct toml_value *v, *wheels, *src[4];
	static const char *const src_keys[4] = {"vcs", "directory", "archive", "sdist"};

	memset(p, 0, sizeof(*p));
	p->line = t->line;
	c->pkg = NULL;
	if (get_string(c, t, "name", &p->name) < 0)
		goto fail;
	if (!p->name) {
		lerr(c, t, "package has no name");
		goto fail;
	}
	if (!valid_name(p->name)) {
		lerr(c, toml_get(t, "name"), "invalid package name \"%s\"", p->name);
		goto fail;
	}
	c->pkg = p->name;
	if (get_string(c, t, "version", &p->version) < 0 ||
	    get_string(c, t, "marker", &p->marker) < 0 ||
	    get_string(c, t, "requires-python", &p->requires_python) < 0 ||
	    get_string(c, t, "index", &p->index) < 0 ||
	    get_array_of(c, t, "dependencies", TOML_TABLE, &v) < 0 ||
	    get_array_of(c, t, "attestation-identities", TOML_TABLE, &v) < 0 ||
	    get_typed(c, t, "tool", TOML_TABLE, &v) < 0 ||
	    get_array_of(c, t, "wheels", TOML_TABLE, &wheels) < 0)
		goto fail;
	/* PEP 751 has no notion of top-level requirements: sitefs reads
	 * [packages.tool.sitefs] requested = true (REQUESTED in dist-info). */
	const struct toml_value *tool = toml_get(t, "tool"), *sfs = NULL;
	if (tool && (get_typed(c, tool, "sitefs", TOML_TABLE, &sfs) < 0 ||
		     (sfs && get_typed(c, sfs, "requested", TOML_BOOL, &v) < 0)))
		goto fail;
	p->requested = sfs && v && v->b;
	int nsrc = 0;
	for (int i = 0; i < 4; i++) {
		if (get_typed(c, t, src_keys[i], TOML_TABLE, &src[i]) < 0)
			goto fail;
		if (src[i] && i < 3)
			nsrc++;
	}
	if (nsrc > 1 || (nsrc == 1 && (src[3] || wheels))) {
		lerr(c, t, "vcs, directory and archive exclude each other and sdist/wheels");
		goto fail;
	}
	p->has_sdist = nsrc > 0 || src[3];
	if (wheels) {
		p->wheels = xcalloc(wheels->arr.n ? wheels->arr.n : 1, sizeof(*p->wheels));
		for (size_t i = 0; i < wheels->arr.n; i++) {
			if (read_wheel(c, wheels->arr.items[i], &p->wheels[i]) < 0)
				goto fail;
			p->nwheels++;
		}
	}
	c->pkg = NULL;
	return 0;
fail:
	c->pkg = NULL;
	package_clear(p);
	return -EINVAL;
}

static int check_lock_version(struct ctx *c, const struct toml_value *root, char **ret)
{
	const struct toml_value *v;
	if (get_typed(c, root, "lock-version", TOML_STRING, &v) < 0)
		return -EINVAL;
	if (!v)
		return lerr(c, NULL, "no lock-version: not a pylock.toml file");
	const char *s = v->s, *dot = strchr(s, '.');
	size_t i = 0;
	bool ok = dot && dot > s && dot[1];
	for (i = 0; ok && s[i]; i++)
		if ((s[i] < '0' || s[i] > '9') && s + i != dot)
			ok = false;
	if (!ok)
		return lerr(c, v, "malformed lock-version \"%s\"", s);
	if (dot - s != 1 || s[0] != '1')
		return lerr(c, v, "unsupported lock-version \"%s\": sitefs reads version 1.x", s);
	if (strspn(dot + 1, "0") != strlen(dot + 1))
		log_warn("%s: lock-version \"%s\" is newer than 1.0, reading it as 1.0", c->path,
			 s);
	*ret = xstrdup(s);
	return 0;
}

int lockfile_parse(const char *path, const char *text, size_t len, struct lock_file **ret,
		   char *err, size_t errlen)
{
	char dummy[1];
	if (!err || !errlen)
		err = dummy, errlen = sizeof(dummy);
	struct ctx c = {.path = path, .err = err, .errlen = errlen};
	struct toml_value *root = NULL;
	char terr[256];
	if (toml_parse(text, len, &root, terr, sizeof(terr)) < 0) {
		snprintf(err, errlen, "%s:%s", path, terr);
		return -EINVAL;
	}
	c.base_dir = base_dir_of(path);

	struct lock_file *lf = xcalloc(1, sizeof(*lf));
	lf->path = xstrdup(path);
	const struct toml_value *v, *pkgs;
	char **envs = NULL;
	size_t nenvs = 0;
	int r = -EINVAL;
	if (check_lock_version(&c, root, &lf->lock_version) < 0 ||
	    get_string(&c, root, "requires-python", &lf->requires_python) < 0 ||
	    get_string(&c, root, "created-by", &lf->created_by) < 0 ||
	    get_string_list(&c, root, "extras", &lf->extras, &lf->nextras) < 0 ||
	    get_string_list(&c, root, "dependency-groups", &lf->dependency_groups,
			    &lf->ndependency_groups) < 0 ||
	    get_string_list(&c, root, "environments", &envs, &nenvs) < 0 ||
	    get_array_of(&c, root, "default-groups", TOML_STRING, &v) < 0 ||
	    get_typed(&c, root, "tool", TOML_TABLE, &v) < 0 ||
	    get_array_of(&c, root, "packages", TOML_TABLE, &pkgs) < 0)
		goto out;
	if (!pkgs) {
		lerr(&c, NULL, "no [[packages]] array");
		goto out;
	}
	lf->pkgs = xcalloc(pkgs->arr.n ? pkgs->arr.n : 1, sizeof(*lf->pkgs));
	for (size_t i = 0; i < pkgs->arr.n; i++) {
		if (read_package(&c, pkgs->arr.items[i], &lf->pkgs[i]) < 0)
			goto out;
		lf->npkgs++;
	}
	*ret = lf;
	lf = NULL;
	r = 0;
out:
	for (size_t i = 0; i < nenvs; i++)
		free(envs[i]);
	free(envs);
	lockfile_free(lf);
	free(c.base_dir);
	toml_free(root);
	return r;
}

int lockfile_load(const char *path, struct lock_file **ret, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int r = file_read_all(path, &text, &len);
	if (r < 0) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	r = lockfile_parse(path, text, len, ret, err, errlen);
	free(text);
	return r;
}

struct lock_file *lockfile_free(struct lock_file *lf)
{
	if (!lf)
		return NULL;
	free(lf->path);
	free(lf->lock_version);
	free(lf->requires_python);
	free(lf->created_by);
	for (size_t i = 0; i < lf->nextras; i++)
		free(lf->extras[i]);
	free(lf->extras);
	for (size_t i = 0; i < lf->ndependency_groups; i++)
		free(lf->dependency_groups[i]);
	free(lf->dependency_groups);
	for (size_t i = 0; i < lf->npkgs; i++)
		package_clear(&lf->pkgs[i]);
	free(lf->pkgs);
	free(lf);
	return NULL;
}
