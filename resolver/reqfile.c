/* reqfile: pip-style requirements files (see reqfile.h for the grammar). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "resolver/reqfile.h"
#include "resolver/tags.h"

#define REQFILE_MAX_DEPTH 32

/* Files being read, innermost last: -r cycles are errors, not hangs. */
struct reqfile_stack {
	const char *paths[REQFILE_MAX_DEPTH];
	int depth;
};

static int errf(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int errf(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, errlen, "%s:%d: ", file, line);

	if (n < 0 || (size_t)n >= errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static void push_str(char ***arr, size_t *n, const char *s)
{
	*arr = xrealloc(*arr, (*n + 1) * sizeof(**arr));
	(*arr)[(*n)++] = xstrdup(s);
}

/* pip's ${VAR} rule: upper-case letters, digits and underscores only, so
 * "$HOME" or "${lower}" in a URL stay untouched. */
static char *expand_vars(const char *s)
{
	struct buf b;

	buf_init(&b);
	while (*s) {
		if (s[0] == '$' && s[1] == '{') {
			const char *p = s + 2;

			while ((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')
				p++;
			if (*p == '}' && p > s + 2) {
				char name[128];
				size_t len = (size_t)(p - s - 2);

				if (len < sizeof(name)) {
					memcpy(name, s + 2, len);
					name[len] = '\0';
					const char *v = getenv(name);

					if (v) {
						buf_puts(&b, v);
						s = p + 1;
						continue;
					}
				}
			}
		}
		buf_append(&b, s, 1);
		s++;
	}
	return (char *)buf_steal(&b, NULL);
}

/* Cuts a comment: '#' at the start or after whitespace (so URL fragments
 * like "x.whl#sha256=..." survive).  Trims both ends in place. */
static char *strip_comment(char *s)
{
	for (char *p = s; *p; p++)
		if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			break;
		}
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static bool is_comment_line(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return *s == '#';
}

/* Splits on whitespace, honouring simple '...' and "..." quoting. */
static size_t split_words(char *s, char **out, size_t max)
{
	size_t n = 0;

	while (*s && n < max) {
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		char *w = s, *o = s;
		char q = 0;

		while (*s && (q || !isspace((unsigned char)*s))) {
			if (!q && (*s == '"' || *s == '\'')) {
				q = *s++;
				continue;
			}
			if (q && *s == q) {
				q = 0;
				s++;
				continue;
			}
			*o++ = *s++;
		}
		if (*s)
			s++;
		*o = '\0';
		out[n++] = w;
	}
	return n;
}

static bool is_url(const char *s)
{
	const char *p = s;

	while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	return p > s && p[0] == ':' && p[1] == '/' && p[2] == '/';
}

/* A path relative to dir, or a URL, as stored: absolute path or URL. */
static char *resolve_path(const char *dir, const char *p)
{
	if (is_url(p) || p[0] == '/' || !dir)
		return xstrdup(p);
	return xasprintf("%s/%s", dir, p);
}

static char *dir_of(const char *path)
{
	char abs[PATH_MAX];
	const char *p = realpath(path, abs) ? abs : path;
	const char *slash = strrchr(p, '/');

	if (!slash)
		return xstrdup(".");
	if (slash == p)
		return xstrdup("/");
	return xstrndup(p, (size_t)(slash - p));
}

static int load_file(struct reqfile *rf, struct reqfile_stack *st, const char *path,
		     bool constraint, const char *from, int from_line, char *err, size_t errlen);

/* The value of an option given as "--opt=value", "--opt value" or "-ovalue". */
static const char *opt_value(char **w, size_t nw, size_t *i, const char *shortopt,
			     const char *longopt)
{
	const char *a = w[*i];
	size_t ll = longopt ? strlen(longopt) : 0;

	if (longopt && !strncmp(a, longopt, ll) && a[ll] == '=')
		return a + ll + 1;
	if ((longopt && !strcmp(a, longopt)) || (shortopt && !strcmp(a, shortopt)))
		return *i + 1 < nw ? w[++*i] : NULL;
	if (shortopt && !strncmp(a, shortopt, 2) && a[2])
		return a + 2;
	return NULL;
}

static bool opt_is(const char *a, const char *shortopt, const char *longopt)
{
	size_t ll = longopt ? strlen(longopt) : 0;

	if (longopt && !strncmp(a, longopt, ll) && (a[ll] == '\0' || a[ll] == '='))
		return true;
	return shortopt && !strncmp(a, shortopt, 2);
}

static int option_line(struct reqfile *rf, struct reqfile_stack *st, const char *name,
		       const char *dir, int line, char *text, char *err, size_t errlen)
{
	char *w[64];
	size_t nw = split_words(text, w, ARRAY_SIZE(w));

	for (size_t i = 0; i < nw; i++) {
		const char *a = w[i], *v;
		bool is_c = opt_is(a, "-c", "--constraint");

		if (is_c || opt_is(a, "-r", "--requirement")) {
			v = is_c ? opt_value(w, nw, &i, "-c", "--constraint")
				 : opt_value(w, nw, &i, "-r", "--requirement");
			if (!v)
				return errf(err, errlen, name, line, "%s needs a file", a);
			if (is_url(v))
				return errf(
				    err, errlen, name, line,
				    "requirements files from URLs (\"%s\") are not supported", v);
			_cleanup_free_ char *p = resolve_path(dir, v);
			/* A file named with -c inside a -c file is still constraints. */
			int r = load_file(rf, st, p, is_c, name, line, err, errlen);

			if (r < 0)
				return r;
		} else if (opt_is(a, "-i", "--index-url")) {
			v = opt_value(w, nw, &i, "-i", "--index-url");
			if (!v)
				return errf(err, errlen, name, line, "%s needs a URL", a);
			free(rf->index_url);
			rf->index_url = xstrdup(v);
		} else if (opt_is(a, NULL, "--extra-index-url")) {
			v = opt_value(w, nw, &i, NULL, "--extra-index-url");
			if (!v)
				return errf(err, errlen, name, line, "%s needs a URL", a);
			push_str(&rf->extra_index_urls, &rf->nextra_index_urls, v);
		} else if (opt_is(a, "-f", "--find-links")) {
			v = opt_value(w, nw, &i, "-f", "--find-links");
			if (!v)
				return errf(err, errlen, name, line, "%s needs a path or URL", a);
			_cleanup_free_ char *p = resolve_path(dir, v);
			push_str(&rf->find_links, &rf->nfind_links, p);
		} else if (!strcmp(a, "--no-index")) {
			rf->no_index = true;
		} else if (!strcmp(a, "--pre")) {
			rf->pre = true;
		} else if (!strcmp(a, "--prefer-binary") || !strcmp(a, "--require-hashes")) {
			/* wheels only, and hashes are always checked when given */
		} else if (opt_is(a, NULL, "--trusted-host") || opt_is(a, NULL, "--only-binary") ||
			   opt_is(a, NULL, "--no-binary") || opt_is(a, NULL, "--use-feature")) {
			if (!strchr(a, '='))
				i++;
		} else if (opt_is(a, "-e", "--editable")) {
			return errf(err, errlen, name, line,
				    "editable requirements are not supported (sitefs installs "
				    "wheels only)");
		} else {
			return errf(err, errlen, name, line, "unknown option \"%s\"", a);
		}
	}
	return 0;
}

/* "pkg-1.0-py3-none-any.whl" at the end of a path or URL -> its project name. */
static char *wheel_project(const char *ref)
{
	const char *base = strrchr(ref, '/');
	struct wheel_name wn;
	char fn[512];

	base = base ? base + 1 : ref;
	size_t n = strcspn(base, "#?");
	if (n >= sizeof(fn))
		return NULL;
	memcpy(fn, base, n);
	fn[n] = '\0';
	if (wheelname_parse(fn, &wn) < 0)
		return NULL;
	char *name = xstrdup(wn.dist);
	wheelname_free(&wn);
	return name;
}

static int req_line(struct reqfile *rf, const char *name, const char *dir, int line, char *text,
		    bool constraint, char *err, size_t errlen)
{
	/* pip: the requirement ends at the first word that starts with '-'. */
	char *opts = NULL;

	text = strip_comment(text);
	for (char *p = text; *p; p++)
		if (*p == '-' && p > text && isspace((unsigned char)p[-1])) {
			p[-1] = '\0';
			opts = p;
			break;
		}
	strip_comment(text);
	if (!*text)
		return errf(err, errlen, name, line, "options without a requirement");

	struct reqfile_req r = {.file = xstrdup(name), .line = line, .constraint = constraint};
	char why[256];
	int rc = 0;
	char *rq = text;
	_cleanup_free_ char *synth = NULL;

	r.text = xstrdup(text);
	/* Not PEP 508 but a path or URL: a wheel named by its file. */
	if (pep508_req_parse(rq, &r.req, why, sizeof(why)) < 0 &&
	    (is_url(rq) || strchr(rq, '/') || str_endswith(rq, ".whl"))) {
		_cleanup_free_ char *proj = wheel_project(rq);

		if (!proj) {
			rc = errf(err, errlen, name, line,
				  "\"%s\": only wheels can be named by path or URL", rq);
			goto fail;
		}
		_cleanup_free_ char *ref =
		    resolve_path(dir, rq[0] == '.' && rq[1] == '/' ? rq + 2 : rq);
		synth = xasprintf("%s @ %s%s", proj, ref[0] == '/' ? "file://" : "", ref);
		rq = synth;
		if (pep508_req_parse(rq, &r.req, why, sizeof(why)) < 0) {
			rc = errf(err, errlen, name, line, "invalid requirement \"%s\": %s", text,
				  why);
			goto fail;
		}
	} else if (!r.req.name) {
		rc = errf(err, errlen, name, line, "invalid requirement \"%s\": %s", text, why);
		goto fail;
	}
	if (constraint && r.req.nextras) {
		rc = errf(err, errlen, name, line,
			  "constraint \"%s\" names extras: constraints cannot", text);
		goto fail;
	}
	if (opts) {
		char *w[64];
		size_t nw = split_words(opts, w, ARRAY_SIZE(w));

		for (size_t i = 0; i < nw; i++) {
			const char *v = opt_value(w, nw, &i, NULL, "--hash");

			if (!v) {
				rc = errf(err, errlen, name, line,
					  "option \"%s\" is not allowed after a requirement", w[i]);
				goto fail;
			}
			if (strncmp(v, "sha256:", 7)) {
				rc = errf(err, errlen, name, line,
					  "--hash=%s: only sha256 hashes are supported", v);
				goto fail;
			}
			uint8_t tmp[32];
			char hex[65];
			if (strlen(v + 7) != 64 || hex_decode(v + 7, tmp, 32) < 0) {
				rc = errf(err, errlen, name, line, "--hash=%s: not a sha256 digest",
					  v);
				goto fail;
			}
			hex_encode(tmp, 32, hex);
			push_str(&r.sha256, &r.nsha256, hex);
		}
	}
	rf->reqs = xrealloc(rf->reqs, (rf->nreqs + 1) * sizeof(*rf->reqs));
	rf->reqs[rf->nreqs++] = r;
	return 0;
fail:
	free(r.text);
	free(r.file);
	pep508_req_free(&r.req);
	for (size_t i = 0; i < r.nsha256; i++)
		free(r.sha256[i]);
	free(r.sha256);
	return rc;
}

static int parse_text(struct reqfile *rf, struct reqfile_stack *st, const char *name,
		      const char *dir, const char *text, bool constraint, char *err, size_t errlen)
{
	struct buf logical;
	int lineno = 0, first = 0, rc = 0;
	const char *p = text;

	buf_init(&logical);
	while (*p && rc == 0) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		_cleanup_free_ char *phys = xstrndup(p, len);

		p = nl ? nl + 1 : p + len;
		lineno++;
		if (len && phys[len - 1] == '\r')
			phys[--len] = '\0';
		if (!logical.len)
			first = lineno;
		/* pip's join_lines: a trailing backslash continues the line,
		 * except on a comment line. */
		if (len && phys[len - 1] == '\\' && !is_comment_line(phys)) {
			buf_append(&logical, phys, len - 1);
			if (*p)
				continue;
		} else {
			buf_append(&logical, phys, len);
		}
		_cleanup_free_ char *exp = expand_vars((const char *)logical.data);
		logical.len = 0;
		logical.data[0] = '\0';
		char *s = exp;

		while (isspace((unsigned char)*s))
			s++;
		if (*s == '#' || !*s)
			continue;
		if (*s == '-')
			rc = option_line(rf, st, name, dir, first, strip_comment(s), err, errlen);
		else
			rc = req_line(rf, name, dir, first, s, constraint, err, errlen);
	}
	buf_free(&logical);
	return rc;
}

static int load_file(struct reqfile *rf, struct reqfile_stack *st, const char *path,
		     bool constraint, const char *from, int from_line, char *err, size_t errlen)
{
	_cleanup_free_ char *text = NULL, *dir = NULL;
	char abs[PATH_MAX];
	int r;

	if (st->depth == REQFILE_MAX_DEPTH)
		return from ? errf(err, errlen, from, from_line,
				   "requirements files nested too deep")
			    : -ELOOP;
	if (realpath(path, abs))
		for (int i = 0; i < st->depth; i++)
			if (!strcmp(st->paths[i], abs)) {
				errf(err, errlen, from, from_line,
				     "\"%s\" includes itself (through -r/-c)", path);
				return -ELOOP;
			}
	r = file_read_all(path, &text, NULL);
	if (r < 0) {
		if (from)
			return errf(err, errlen, from, from_line, "cannot read \"%s\": %s", path,
				    strerror(-r));
		snprintf(err, errlen, "cannot read \"%s\": %s", path, strerror(-r));
		return r;
	}
	dir = dir_of(path);
	st->paths[st->depth++] = abs;
	r = parse_text(rf, st, path, dir, text, constraint, err, errlen);
	st->depth--;
	return r;
}

int reqfile_load(struct reqfile *rf, const char *path, bool constraint, char *err, size_t errlen)
{
	struct reqfile_stack st = {.depth = 0};

	return load_file(rf, &st, path, constraint, NULL, 0, err, errlen);
}

int reqfile_parse(struct reqfile *rf, const char *name, const char *dir, const char *text,
		  bool constraint, char *err, size_t errlen)
{
	struct reqfile_stack st = {.depth = 0};

	return parse_text(rf, &st, name, dir, text, constraint, err, errlen);
}

int reqfile_add(struct reqfile *rf, const char *text, bool constraint, char *err, size_t errlen)
{
	char cwd[PATH_MAX];
	_cleanup_free_ char *t = xstrdup(text);

	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), ".");
	while (*t == ' ')
		memmove(t, t + 1, strlen(t));
	if (!*t || *t == '-' || *t == '#') {
		snprintf(err, errlen, "invalid requirement \"%s\"", text);
		return -EINVAL;
	}
	return req_line(rf, "<command line>", cwd, 1, t, constraint, err, errlen);
}

void reqfile_free(struct reqfile *rf)
{
	if (!rf)
		return;
	for (size_t i = 0; i < rf->nreqs; i++) {
		struct reqfile_req *r = &rf->reqs[i];

		free(r->text);
		free(r->file);
		pep508_req_free(&r->req);
		for (size_t k = 0; k < r->nsha256; k++)
			free(r->sha256[k]);
		free(r->sha256);
	}
	free(rf->reqs);
	free(rf->index_url);
	for (size_t i = 0; i < rf->nextra_index_urls; i++)
		free(rf->extra_index_urls[i]);
	free(rf->extra_index_urls);
	for (size_t i = 0; i < rf->nfind_links; i++)
		free(rf->find_links[i]);
	free(rf->find_links);
	memset(rf, 0, sizeof(*rf));
}
