/* index: simple repository API client (see index.h for the design). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/http.h"
#include "fetch/inflate.h"
#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fetch/zipcd.h"
#include "resolver/index.h"
#include "resolver/tags.h"

#define PAGE_MAX (64u << 20)	 /* a project page larger than this is hostile */
#define METADATA_MAX (16u << 20) /* a METADATA file, likewise */
#define ACCEPT_SIMPLE                                                                              \
	"application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "         \
	"text/html;q=0.01"

/* ------------------------------------------------------------------ URLs */

static bool has_scheme(const char *s, size_t *ret_len)
{
	const char *p = s;

	if (!isalpha((unsigned char)*p))
		return false;
	while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	if (*p != ':')
		return false;
	*ret_len = (size_t)(p - s);
	return true;
}

/* RFC 3986 5.2.4, in place on a path. */
static void remove_dot_segments(char *path)
{
	char *out = path, *in = path;

	while (*in) {
		if (!strncmp(in, "../", 3))
			in += 3;
		else if (!strncmp(in, "./", 2))
			in += 2;
		else if (!strncmp(in, "/./", 3))
			in += 2;
		else if (!strcmp(in, "/."))
			in[1] = '\0';
		else if (!strncmp(in, "/../", 4) || !strcmp(in, "/..")) {
			in += 3;
			if (*in == '/')
				; /* "/../x" -> "/x" */
			else
				*--in = '/';
			while (out > path && out[-1] != '/')
				out--;
			if (out > path)
				out--;
		} else if (!strcmp(in, ".") || !strcmp(in, "..")) {
			in += strlen(in);
		} else {
			if (*in == '/')
				*out++ = *in++;
			while (*in && *in != '/')
				*out++ = *in++;
		}
	}
	*out = '\0';
}

char *index_url_join(const char *base, const char *ref)
{
	size_t sl;

	if (has_scheme(ref, &sl))
		return xstrdup(ref);
	if (!base)
		return xstrdup(ref);
	/* A local base (a path): plain path arithmetic. */
	if (!has_scheme(base, &sl)) {
		if (ref[0] == '/')
			return xstrdup(ref);
		const char *slash = strrchr(base, '/');
		char *r =
		    slash ? xasprintf("%.*s/%s", (int)(slash - base), base, ref) : xstrdup(ref);

		return r;
	}
	const char *auth = base + sl + 1;
	const char *path = auth;

	if (!strncmp(auth, "//", 2)) {
		path = auth + 2 + strcspn(auth + 2, "/?#");
	}
	if (!strncmp(ref, "//", 2))
		return xasprintf("%.*s:%s", (int)sl, base, ref);
	if (ref[0] == '#' || ref[0] == '\0') {
		size_t n = strcspn(base, "#");
		return xasprintf("%.*s%s", (int)n, base, ref);
	}
	size_t pathlen = strcspn(path, "?#");
	char *merged;

	if (ref[0] == '?')
		return xasprintf("%.*s%s", (int)(path - base + pathlen), base, ref);
	if (ref[0] == '/') {
		merged = xstrdup(ref);
	} else {
		const char *last = NULL;

		for (const char *q = path; q < path + pathlen; q++)
			if (*q == '/')
				last = q;
		if (last)
			merged = xasprintf("%.*s%s", (int)(last - path + 1), path, ref);
		else
			merged = xasprintf("/%s", ref);
	}
	/* Dot segments only in the path part of merged, not its query. */
	size_t mp = strcspn(merged, "?#");
	char saved = merged[mp];
	_cleanup_free_ char *rest = xstrdup(merged + mp);

	merged[mp] = '\0';
	(void)saved;
	remove_dot_segments(merged);
	char *r = xasprintf("%.*s%s%s", (int)(path - base), base, merged, rest);

	free(merged);
	return r;
}

char *index_redact(const char *url)
{
	size_t sl;

	if (!url || !has_scheme(url, &sl) || strncmp(url + sl, "://", 3))
		return url ? xstrdup(url) : NULL;
	const char *auth = url + sl + 3;
	size_t alen = strcspn(auth, "/?#");
	const char *at = memchr(auth, '@', alen);

	if (!at)
		return xstrdup(url);
	return xasprintf("%.*s%s", (int)(auth - url), url, at + 1);
}

/* "scheme://user:pw@host:port/..." -> "user:pw" and "host:port" spans. */
static bool url_authority(const char *url, const char **ret_host, size_t *ret_hostlen,
			  const char **ret_user, size_t *ret_userlen)
{
	size_t sl;

	if (!url || !has_scheme(url, &sl) || strncmp(url + sl, "://", 3))
		return false;
	const char *auth = url + sl + 3;
	size_t alen = strcspn(auth, "/?#");
	const char *at = NULL;

	for (const char *q = auth; q < auth + alen; q++)
		if (*q == '@')
			at = q;
	*ret_user = at ? auth : NULL;
	*ret_userlen = at ? (size_t)(at - auth) : 0;
	*ret_host = at ? at + 1 : auth;
	*ret_hostlen = (size_t)(auth + alen - *ret_host);
	return true;
}

/* pip's rule: an index's credentials also go to file URLs on its host. */
static char *add_credentials(const char *index_url, char *url)
{
	const char *ih, *iu, *fh, *fu;
	size_t ihl, iul, fhl, ful, sl;

	if (!url_authority(index_url, &ih, &ihl, &iu, &iul) || !iu)
		return url;
	if (!url_authority(url, &fh, &fhl, &fu, &ful) || fu || ihl != fhl ||
	    strncasecmp(ih, fh, ihl))
		return url;
	has_scheme(url, &sl);
	char *r = xasprintf("%.*s%.*s@%s", (int)(sl + 3), url, (int)iul, iu, fh);

	free(url);
	return r;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static char *percent_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1), *o = out;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			*o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

/* Splits an absolute URL into the stored url (no fragment), the filename,
 * and a sha256 from a "#sha256=HEX" fragment.  Takes abs (freed on error). */
static int file_from_url(struct index_file *f, char *abs)
{
	char *frag = strchr(abs, '#');

	if (frag) {
		*frag++ = '\0';
		if (!strncmp(frag, "sha256=", 7) && strlen(frag + 7) == 64 &&
		    hex_decode(frag + 7, f->sha256, 32) == 0)
			f->has_sha256 = true;
	}
	size_t plen = strcspn(abs, "?");
	const char *seg = abs + plen;

	while (seg > abs && seg[-1] != '/')
		seg--;
	if (seg == abs + plen) {
		free(abs);
		return -EINVAL;
	}
	f->filename = percent_decode(seg, (size_t)(abs + plen - seg));
	if (!*f->filename || strchr(f->filename, '/')) {
		free(f->filename);
		f->filename = NULL;
		free(abs);
		return -EINVAL;
	}
	f->url = abs;
	return 0;
}

static void page_push(struct index_page *pg, struct index_file *f)
{
	pg->files = xrealloc(pg->files, (pg->nfiles + 1) * sizeof(*pg->files));
	pg->files[pg->nfiles++] = *f;
}

void index_file_clear(struct index_file *f)
{
	free(f->filename);
	free(f->url);
	free(f->requires_python);
	free(f->meta_errmsg);
	free(f->metadata);
	for (size_t i = 0; i < f->nrequires_dist; i++)
		free(f->requires_dist[i]);
	free(f->requires_dist);
	free(f->meta_requires_python);
	free(f->meta_version);
	memset(f, 0, sizeof(*f));
}

void index_page_free(struct index_page *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nfiles; i++)
		index_file_clear(&p->files[i]);
	free(p->files);
	p->files = NULL;
	p->nfiles = 0;
}

/* ------------------------------------------------------------------ HTML */

static void utf8_put(struct buf *b, unsigned long cp)
{
	char u[4];

	if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		cp = 0xfffd;
	if (cp < 0x80) {
		u[0] = (char)cp;
		buf_append(b, u, 1);
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		buf_append(b, u, 2);
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		buf_append(b, u, 3);
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		buf_append(b, u, 4);
	}
}

/* The character references attribute values use on real indexes. */
static char *entity_decode(const char *s, size_t n)
{
	static const struct {
		const char *name;
		unsigned long cp;
	} named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
	struct buf b;

	buf_init(&b);
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '&') {
			buf_append(&b, s + i, 1);
			continue;
		}
		size_t j = i + 1;

		while (j < n && j - i < 12 && s[j] != ';')
			j++;
		if (j >= n || s[j] != ';') {
			buf_append(&b, s + i, 1);
			continue;
		}
		const char *e = s + i + 1;
		size_t el = j - i - 1;
		bool done = false;

		if (el >= 2 && e[0] == '#') {
			unsigned long cp = 0;
			bool hex = e[1] == 'x' || e[1] == 'X';
			size_t k = hex ? 2 : 1;

			for (; k < el && cp < 0x110000; k++) {
				int d = hex ? hexval(e[k])
					    : (isdigit((unsigned char)e[k]) ? e[k] - '0' : -1);

				if (d < 0)
					break;
				cp = cp * (hex ? 16 : 10) + (unsigned long)d;
			}
			if (k == el && k > (hex ? 2u : 1u)) {
				utf8_put(&b, cp);
				done = true;
			}
		} else {
			for (size_t k = 0; k < ARRAY_SIZE(named); k++)
				if (strlen(named[k].name) == el && !strncmp(named[k].name, e, el)) {
					utf8_put(&b, named[k].cp);
					done = true;
				}
		}
		if (done)
			i = j;
		else
			buf_append(&b, s + i, 1);
	}
	return (char *)buf_steal(&b, NULL);
}

struct html_attr {
	const char *name, *val;
	size_t nlen, vlen;
	bool has_val;
};

/* Parses the attributes of a tag starting after its name; *pp ends after
 * '>'.  Returns the number of attributes (at most max). */
static size_t html_attrs(const char **pp, const char *end, struct html_attr *out, size_t max)
{
	const char *p = *pp;
	size_t n = 0;

	for (;;) {
		while (p < end && (isspace((unsigned char)*p) || *p == '/'))
			p++;
		if (p >= end || *p == '>') {
			if (p < end)
				p++;
			break;
		}
		struct html_attr a = {.name = p};

		while (p < end && !isspace((unsigned char)*p) && *p != '=' && *p != '>' &&
		       *p != '/')
			p++;
		a.nlen = (size_t)(p - a.name);
		while (p < end && isspace((unsigned char)*p))
			p++;
		if (p < end && *p == '=') {
			p++;
			while (p < end && isspace((unsigned char)*p))
				p++;
			a.has_val = true;
			if (p < end && (*p == '"' || *p == '\'')) {
				char q = *p++;

				a.val = p;
				while (p < end && *p != q)
					p++;
				a.vlen = (size_t)(p - a.val);
				if (p < end)
					p++;
			} else {
				a.val = p;
				while (p < end && !isspace((unsigned char)*p) && *p != '>')
					p++;
				a.vlen = (size_t)(p - a.val);
			}
		}
		if (a.nlen == 0) { /* stray character: skip it */
			p++;
			continue;
		}
		if (n < max)
			out[n++] = a;
	}
	*pp = p;
	return n;
}

static const struct html_attr *attr_get(const struct html_attr *a, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(name) == a[i].nlen && !strncasecmp(a[i].name, name, a[i].nlen))
			return &a[i];
	return NULL;
}

static bool tag_is(const char *p, const char *end, const char *name)
{
	size_t n = strlen(name);

	return (size_t)(end - p) > n && !strncasecmp(p, name, n) &&
	       (isspace((unsigned char)p[n]) || p[n] == '>' || p[n] == '/');
}

/* "sha256=HEX" or "true" (PEP 658/714 attribute values). */
static void metadata_attr(struct index_file *f, const char *v, size_t vn)
{
	_cleanup_free_ char *s = entity_decode(v, vn);

	if (!strcasecmp(s, "false"))
		return;
	f->has_metadata = true;
	if (!strncmp(s, "sha256=", 7) && strlen(s + 7) == 64 &&
	    hex_decode(s + 7, f->metadata_sha256, 32) == 0)
		f->has_metadata_sha256 = true;
}

int index_parse_html(const char *base_url, const char *text, size_t len, struct index_page *ret,
		     char *err, size_t errlen)
{
	const char *p = text, *end = text + len;
	_cleanup_free_ char *base = xstrdup(base_url ? base_url : "");

	while (p < end) {
		const char *lt = memchr(p, '<', (size_t)(end - p));

		if (!lt)
			break;
		p = lt + 1;
		if (p + 3 <= end && !strncmp(p, "!--", 3)) {
			const char *q = memmem(p, (size_t)(end - p), "-->", 3);

			p = q ? q + 3 : end;
			continue;
		}
		bool is_a = tag_is(p, end, "a"), is_base = tag_is(p, end, "base");

		if (!is_a && !is_base)
			continue;
		p += is_a ? 1 : 4;
		struct html_attr at[16];
		size_t na = html_attrs(&p, end, at, ARRAY_SIZE(at));
		const struct html_attr *href = attr_get(at, na, "href");

		if (!href || !href->has_val)
			continue;
		_cleanup_free_ char *h = entity_decode(href->val, href->vlen);

		if (is_base) {
			char *nb = index_url_join(base, h);

			free(base);
			base = nb;
			continue;
		}
		struct index_file f = {0};

		if (file_from_url(&f, index_url_join(base, h)) < 0) {
			index_file_clear(&f);
			continue;
		}
		const struct html_attr *a;

		if ((a = attr_get(at, na, "data-requires-python")) && a->has_val)
			f.requires_python = entity_decode(a->val, a->vlen);
		if ((a = attr_get(at, na, "data-yanked")))
			f.yanked = true;
		if ((a = attr_get(at, na, "data-core-metadata")) ||
		    (a = attr_get(at, na, "data-dist-info-metadata")))
			metadata_attr(&f, a->has_val ? a->val : "true", a->has_val ? a->vlen : 4);
		page_push(ret, &f);
	}
	(void)err;
	(void)errlen;
	return 0;
}

/* ------------------------------------------------------------------ JSON */

static void json_metadata(struct index_file *f, struct json_object *v)
{
	if (json_object_is_type(v, json_type_boolean)) {
		f->has_metadata = json_object_get_boolean(v);
		return;
	}
	if (!json_object_is_type(v, json_type_object))
		return;
	f->has_metadata = true;
	struct json_object *h;

	if (json_object_object_get_ex(v, "sha256", &h) &&
	    json_object_is_type(h, json_type_string) && json_object_get_string_len(h) == 64 &&
	    hex_decode(json_object_get_string(h), f->metadata_sha256, 32) == 0)
		f->has_metadata_sha256 = true;
}

int index_parse_json(const char *base_url, const char *text, size_t len, struct index_page *ret,
		     char *err, size_t errlen)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *root, *files, *v;
	int rc = 0;

	if (!tok)
		return -ENOMEM;
	if (len > INT32_MAX) {
		json_tokener_free(tok);
		snprintf(err, errlen, "JSON page too large");
		return -EBADMSG;
	}
	root = json_tokener_parse_ex(tok, text, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success) {
		snprintf(err, errlen, "bad JSON: %s",
			 json_tokener_error_desc(json_tokener_get_error(tok)));
		json_object_put(root);
		json_tokener_free(tok);
		return -EBADMSG;
	}
	for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
		if (!isspace((unsigned char)text[i])) {
			snprintf(err, errlen, "bad JSON: text after the object");
			json_object_put(root);
			json_tokener_free(tok);
			return -EBADMSG;
		}
	json_tokener_free(tok);
	if (!json_object_is_type(root, json_type_object) ||
	    !json_object_object_get_ex(root, "files", &files) ||
	    !json_object_is_type(files, json_type_array)) {
		snprintf(err, errlen, "JSON page without a \"files\" list");
		rc = -EBADMSG;
		goto out;
	}
	if (json_object_object_get_ex(root, "meta", &v) &&
	    json_object_is_type(v, json_type_object)) {
		struct json_object *av;

		if (json_object_object_get_ex(v, "api-version", &av) &&
		    json_object_is_type(av, json_type_string) &&
		    strncmp(json_object_get_string(av), "1.", 2)) {
			snprintf(err, errlen, "unsupported simple API version \"%s\"",
				 json_object_get_string(av));
			rc = -EBADMSG;
			goto out;
		}
	}
	for (size_t i = 0; i < json_object_array_length(files); i++) {
		struct json_object *o = json_object_array_get_idx(files, i), *u, *h;
		struct index_file f = {0};

		if (!json_object_is_type(o, json_type_object) ||
		    !json_object_object_get_ex(o, "url", &u) ||
		    !json_object_is_type(u, json_type_string))
			continue;
		if (file_from_url(&f, index_url_join(base_url, json_object_get_string(u))) < 0) {
			index_file_clear(&f);
			continue;
		}
		if (json_object_object_get_ex(o, "filename", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    !strchr(json_object_get_string(v), '/') && json_object_get_string_len(v) > 0) {
			free(f.filename);
			f.filename = xstrdup(json_object_get_string(v));
		}
		if (json_object_object_get_ex(o, "hashes", &v) &&
		    json_object_is_type(v, json_type_object) &&
		    json_object_object_get_ex(v, "sha256", &h) &&
		    json_object_is_type(h, json_type_string) &&
		    json_object_get_string_len(h) == 64 &&
		    hex_decode(json_object_get_string(h), f.sha256, 32) == 0)
			f.has_sha256 = true;
		if (json_object_object_get_ex(o, "requires-python", &v) &&
		    json_object_is_type(v, json_type_string))
			f.requires_python = xstrdup(json_object_get_string(v));
		if (json_object_object_get_ex(o, "yanked", &v))
			f.yanked = json_object_is_type(v, json_type_string) ||
				   (json_object_is_type(v, json_type_boolean) &&
				    json_object_get_boolean(v));
		if (json_object_object_get_ex(o, "core-metadata", &v) ||
		    json_object_object_get_ex(o, "dist-info-metadata", &v))
			json_metadata(&f, v);
		if (json_object_object_get_ex(o, "size", &v) &&
		    json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0)
			f.size = (uint64_t)json_object_get_int64(v);
		page_push(ret, &f);
	}
out:
	json_object_put(root);
	return rc;
}

/* ------------------------------------------------------------------ METADATA */

static void strv_push(char ***v, size_t *n, char *s)
{
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = s;
}

int index_parse_metadata(struct index_file *f, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	char **field = NULL; /* the field a continuation line extends */

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *line = p;

		p = nl ? nl + 1 : end;
		if (n && line[n - 1] == '\r')
			n--;
		if (n == 0)
			break; /* the body (description) follows */
		if (line[0] == ' ' || line[0] == '\t') {
			if (field && *field) {
				while (n && (*line == ' ' || *line == '\t')) {
					line++;
					n--;
				}
				char *s = xasprintf("%s %.*s", *field, (int)n, line);

				free(*field);
				*field = s;
			}
			continue;
		}
		const char *colon = memchr(line, ':', n);

		field = NULL;
		if (!colon)
			continue;
		size_t kn = (size_t)(colon - line);
		const char *v = colon + 1;

		while (v < line + n && (*v == ' ' || *v == '\t'))
			v++;
		char *val = xstrndup(v, (size_t)(line + n - v));

		while (*val && isspace((unsigned char)val[strlen(val) - 1]))
			val[strlen(val) - 1] = '\0';
		if (kn == 13 && !strncasecmp(line, "Requires-Dist", kn)) {
			strv_push(&f->requires_dist, &f->nrequires_dist, val);
			field = &f->requires_dist[f->nrequires_dist - 1];
		} else if (kn == 15 && !strncasecmp(line, "Requires-Python", kn)) {
			free(f->meta_requires_python);
			f->meta_requires_python = val;
			field = &f->meta_requires_python;
		} else if (kn == 7 && !strncasecmp(line, "Version", kn)) {
			free(f->meta_version);
			f->meta_version = val;
		} else {
			free(val);
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ client */

enum job_kind { JOB_PAGE, JOB_FLPAGE, JOB_META, JOB_PROBE, JOB_TAIL, JOB_CD, JOB_ENTRY, JOB_FULL };

struct index_job {
	struct http_req req; /* first: on_done gets &req */
	struct index_client *c;
	enum job_kind kind;
	char *url;
	struct buf body; /* engine thread appends until done */
	size_t max_body;
	bool too_big;
	int result;		/* protected by c->lock until picked up */
	bool submit_failed;	/* never reached the engine: no http_wait */
	struct index_job *next; /* done list, protected by c->lock */
	struct index_project *p;
	size_t index_i;
	struct index_file *f;
	struct sha256_ctx sha; /* JOB_FULL */
	uint64_t nbytes;
	/* the wheel tail a JOB_CD/JOB_ENTRY continues from */
	uint8_t *tail;
	size_t tail_len;
	uint64_t tail_off;
	int retries;
};

enum { META_NONE, META_RUNNING, META_DONE };

struct proj_priv {
	struct index_page *pages; /* one per index */
	int *status;		  /* 0 pending, 1 found, 2 not found, <0 error */
	char **errs;
	size_t pending;
	bool ready, started;
	struct index_project *next;
};

struct index_client {
	struct http_engine *e;
	struct index_config cfg;
	char **index_urls, **find_links;
	char *meta_dir;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct index_job *done_head; /* protected by lock */

	/* client thread only */
	unsigned inflight;
	struct index_project **projects;
	size_t nprojects, cap;
	struct index_page fl; /* files of every find-links source */
	size_t fl_pending;    /* find-links pages not yet in */
	bool fl_started;
	struct index_stats stats;
	int full_pending;
};

static void job_on_done(struct http_req *req, int result)
{
	struct index_job *j = (struct index_job *)req;
	struct index_client *c = j->c;

	pthread_mutex_lock(&c->lock);
	j->result = result;
	j->next = c->done_head;
	c->done_head = j;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static int job_sink(void *ud, const uint8_t *data, size_t len)
{
	struct index_job *j = ud;

	if (j->kind == JOB_FULL) {
		sha256_update(&j->sha, data, len);
		j->nbytes += len;
		return 0;
	}
	if (j->body.len + len > j->max_body) {
		j->too_big = true;
		return -EFBIG;
	}
	buf_append(&j->body, data, len);
	return 0;
}

static struct index_job *job_new(struct index_client *c, enum job_kind kind, const char *url,
				 uint64_t off, uint64_t len)
{
	struct index_job *j = xcalloc(1, sizeof(*j));

	j->c = c;
	j->kind = kind;
	j->url = xstrdup(url);
	buf_init(&j->body);
	j->max_body = kind == JOB_PAGE || kind == JOB_FLPAGE ? PAGE_MAX : METADATA_MAX;
	j->req.url = j->url;
	j->req.off = off;
	j->req.len = len;
	j->req.full_fd = -1;
	j->req.sink = job_sink;
	j->req.ud = j;
	j->req.on_done = job_on_done;
	if (kind == JOB_PAGE || kind == JOB_FLPAGE)
		j->req.accept = ACCEPT_SIMPLE;
	return j;
}

static void job_free(struct index_job *j)
{
	if (!j)
		return;
	if (j->kind == JOB_FULL)
		sha256_abort(&j->sha);
	free(j->url);
	buf_free(&j->body);
	free(j->tail);
	free(j);
}

/* Never called with c->lock held: a local file completes inside http_submit. */
static void job_submit(struct index_client *c, struct index_job *j)
{
	c->inflight++;
	int r = http_submit(c->e, &j->req);

	if (r < 0) {
		j->submit_failed = true;
		snprintf(j->req.err, sizeof(j->req.err), "cannot submit: %s", strerror(-r));
		job_on_done(&j->req, r);
	}
}

static void process(struct index_client *c, struct index_job *j, int r);

/* Handles every finished job; processing may submit more. */
static void pump(struct index_client *c)
{
	for (;;) {
		pthread_mutex_lock(&c->lock);
		struct index_job *j = c->done_head, *rev = NULL;

		c->done_head = NULL;
		pthread_mutex_unlock(&c->lock);
		if (!j)
			return;
		while (j) { /* oldest first */
			struct index_job *n = j->next;

			j->next = rev;
			rev = j;
			j = n;
		}
		for (j = rev; j;) {
			struct index_job *n = j->next;
			int r = j->submit_failed ? j->result : http_wait(&j->req);

			c->inflight--;
			process(c, j, r);
			j = n;
		}
	}
}

/* Runs the client until pred(arg) holds.  -EDEADLK if nothing is in flight
 * and it still does not (a bug, reported rather than hung on). */
static int wait_until(struct index_client *c, bool (*pred)(void *), void *arg)
{
	for (;;) {
		pump(c);
		if (pred(arg))
			return 0;
		if (c->inflight == 0)
			return -EDEADLK;
		pthread_mutex_lock(&c->lock);
		while (!c->done_head)
			pthread_cond_wait(&c->cond, &c->lock);
		pthread_mutex_unlock(&c->lock);
	}
}

/* --- projects */

static struct index_project *project_find(struct index_client *c, const char *norm)
{
	for (size_t i = 0; i < c->nprojects; i++)
		if (!strcmp(c->projects[i]->name, norm))
			return c->projects[i];
	return NULL;
}

static bool wheel_is_for(const char *filename, const char *norm)
{
	struct wheel_name wn;

	if (wheelname_parse(filename, &wn) < 0)
		return false;
	_cleanup_free_ char *n = tags_normalize_name(wn.dist);
	wheelname_free(&wn);
	return !strcmp(n, norm);
}

static void file_copy(struct index_file *dst, const struct index_file *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->filename = xstrdup(src->filename);
	dst->url = xstrdup(src->url);
	memcpy(dst->sha256, src->sha256, 32);
	dst->has_sha256 = src->has_sha256;
	dst->requires_python = src->requires_python ? xstrdup(src->requires_python) : NULL;
	dst->yanked = src->yanked;
	dst->has_metadata = src->has_metadata;
	memcpy(dst->metadata_sha256, src->metadata_sha256, 32);
	dst->has_metadata_sha256 = src->has_metadata_sha256;
	dst->size = src->size;
	dst->find_links = true;
}

/* Every index answered and the find-links pages are in: pick the first
 * index that has the project, add find-links files, tell the hook. */
static void project_finish(struct index_client *c, struct index_project *p)
{
	struct proj_priv *pp = p->priv;

	if (pp->ready || pp->pending || c->fl_pending)
		return;
	pp->ready = true;
	struct index_page *chosen = NULL;

	for (size_t i = 0; i < c->cfg.nindex; i++) {
		if (pp->status[i] < 0) {
			/* Not "not found": skipping to the next index here would let
			 * another index supply the project (dependency confusion). */
			_cleanup_free_ char *u = index_redact(c->index_urls[i]);

			p->err = pp->status[i];
			snprintf(p->errmsg, sizeof(p->errmsg), "index \"%s\": project '%s': %s", u,
				 p->name, pp->errs[i] ? pp->errs[i] : strerror(-p->err));
			break;
		}
		if (pp->status[i] == 1) {
			chosen = &pp->pages[i];
			p->index_url = c->cfg.index_urls[i];
			break;
		}
	}
	size_t n = 0, cap = (chosen ? chosen->nfiles : 0) + c->fl.nfiles;

	p->files = xcalloc(cap ? cap : 1, sizeof(*p->files));
	for (size_t i = 0; i < c->fl.nfiles; i++)
		if (wheel_is_for(c->fl.files[i].filename, p->name))
			file_copy(&p->files[n++], &c->fl.files[i]);
	if (chosen && !p->err) {
		for (size_t i = 0; i < chosen->nfiles; i++) {
			p->files[n] = chosen->files[i];
			p->files[n].url = add_credentials(p->index_url, p->files[n].url);
			n++;
		}
		free(chosen->files);
		chosen->files = NULL;
		chosen->nfiles = 0;
	}
	p->nfiles = n;
	for (size_t i = 0; i < c->cfg.nindex; i++)
		index_page_free(&pp->pages[i]);
	log_debug(LOG_CAT_RESOLVER, "project '%s': %zu files%s%s", p->name, p->nfiles,
		  p->index_url ? " from " : "", p->index_url ? p->index_url : "");
	if (c->cfg.hooks.project_ready)
		c->cfg.hooks.project_ready(c->cfg.hooks.ud, p);
}

static bool body_is_json(const struct index_job *j)
{
	const char *ct = j->req.content_type;

	if (*ct)
		return strcasestr(ct, "json") != NULL;
	for (size_t i = 0; i < j->body.len; i++)
		if (!isspace(j->body.data[i]))
			return j->body.data[i] == '{';
	return false;
}

static int parse_page(const struct index_job *j, struct index_page *pg, char *err, size_t errlen)
{
	/* Relative links resolve against the page URL. */
	if (body_is_json(j))
		return index_parse_json(j->url, (const char *)j->body.data, j->body.len, pg, err,
					errlen);
	return index_parse_html(j->url, (const char *)j->body.data, j->body.len, pg, err, errlen);
}

static void process_page(struct index_client *c, struct index_job *j, int r)
{
	struct index_project *p = j->p;
	struct proj_priv *pp = p->priv;
	size_t i = j->index_i;
	char err[256] = "";

	c->stats.pages++;
	if (r == 0) {
		r = parse_page(j, &pp->pages[i], err, sizeof(err));
		pp->status[i] = r < 0 ? r : 1;
		if (r < 0)
			pp->errs[i] = xstrdup(err);
	} else if (r == -ENOENT) {
		pp->status[i] = 2;
	} else {
		pp->status[i] = r;
		pp->errs[i] = xstrdup(j->req.err[0] ? j->req.err : strerror(-r));
	}
	pp->pending--;
	project_finish(c, p);
}

static void process_flpage(struct index_client *c, struct index_job *j, int r)
{
	char err[256];

	c->stats.pages++;
	if (r == 0)
		parse_page(j, &c->fl, err, sizeof(err));
	else
		log_warn("find-links page \"%s\": %s, ignoring", j->url,
			 j->req.err[0] ? j->req.err : strerror(-r));
	c->fl_pending--;
	if (!c->fl_pending)
		for (size_t k = 0; k < c->nprojects; k++)
			project_finish(c, c->projects[k]);
}

static void fl_start(struct index_client *c)
{
	if (c->fl_started)
		return;
	c->fl_started = true;
	for (size_t i = 0; i < c->cfg.nfind_links; i++)
		if (http_is_remote(c->find_links[i]))
			c->fl_pending++;
	for (size_t i = 0; i < c->cfg.nfind_links; i++)
		if (http_is_remote(c->find_links[i]))
			job_submit(c, job_new(c, JOB_FLPAGE, c->find_links[i], 0, 0));
}

struct index_project *index_project_start(struct index_client *c, const char *name)
{
	_cleanup_free_ char *norm = tags_normalize_name(name);
	struct index_project *p = project_find(c, norm);

	if (p)
		return p;
	p = xcalloc(1, sizeof(*p));
	struct proj_priv *pp = xcalloc(1, sizeof(*pp));

	p->name = xstrdup(norm);
	p->priv = pp;
	pp->pages = xcalloc(c->cfg.nindex + 1, sizeof(*pp->pages));
	pp->status = xcalloc(c->cfg.nindex + 1, sizeof(*pp->status));
	pp->errs = xcalloc(c->cfg.nindex + 1, sizeof(*pp->errs));
	pp->pending = c->cfg.nindex;
	if (c->nprojects == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->projects = xrealloc(c->projects, c->cap * sizeof(*c->projects));
	}
	c->projects[c->nprojects++] = p;
	fl_start(c);
	for (size_t i = 0; i < c->cfg.nindex; i++) {
		_cleanup_free_ char *url = xasprintf("%s/%s/", c->index_urls[i], norm);
		struct index_job *j = job_new(c, JOB_PAGE, url, 0, 0);

		j->p = p;
		j->index_i = i;
		job_submit(c, j);
	}
	project_finish(c, p); /* no index and no pending find-links page */
	return p;
}

static bool project_ready(void *arg)
{
	return ((struct proj_priv *)((struct index_project *)arg)->priv)->ready;
}

int index_project_wait(struct index_client *c, struct index_project *p)
{
	int r = wait_until(c, project_ready, p);

	return r < 0 ? r : p->err;
}

/* --- metadata */

static char *meta_cache_path(struct index_client *c, const struct index_file *f)
{
	char hex[65];

	if (!c->meta_dir || !f->has_sha256)
		return NULL;
	hex_encode(f->sha256, 32, hex);
	return xasprintf("%s/%s", c->meta_dir, hex);
}

static void meta_done(struct index_client *c, struct index_project *p, struct index_file *f,
		      uint8_t *text, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void meta_done(struct index_client *c, struct index_project *p, struct index_file *f,
		      uint8_t *text, size_t len, int err, const char *fmt, ...)
{
	f->meta_state = META_DONE;
	if (err < 0) {
		va_list ap;
		char msg[512];

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		f->meta_err = err;
		f->meta_errmsg = xasprintf("%s: %s", f->filename, msg);
		free(text);
	} else {
		f->metadata = (char *)text;
		index_parse_metadata(f, (const char *)text, len);
		_cleanup_free_ char *path = meta_cache_path(c, f);

		if (path && access(path, F_OK) < 0)
			file_write_atomic(path, text, len, 0644);
	}
	if (c->cfg.hooks.metadata_ready)
		c->cfg.hooks.metadata_ready(c->cfg.hooks.ud, p, f);
}

static void submit_for(struct index_client *c, enum job_kind kind, struct index_project *p,
		       struct index_file *f, uint64_t off, uint64_t len)
{
	struct index_job *j = job_new(c, kind, f->url, off, len);

	j->p = p;
	j->f = f;
	job_submit(c, j);
}

static void start_tail(struct index_client *c, struct index_project *p, struct index_file *f)
{
	uint64_t off = f->size > ZIPCD_TAIL_SIZE ? f->size - ZIPCD_TAIL_SIZE : 0;

	c->stats.metadata_ranges++;
	submit_for(c, JOB_TAIL, p, f, off, f->size - off);
}

/* The one top-level "*.dist-info/METADATA" (the project's, if several). */
static const struct zip_entry *find_metadata(const struct zip_cd *cd, const char *norm)
{
	const struct zip_entry *best = NULL;

	for (size_t i = 0; i < cd->n; i++) {
		const char *n = cd->entries[i].name, *slash = strchr(n, '/');

		if (!slash || strcmp(slash, "/METADATA") || slash - n < 11 ||
		    strncmp(slash - 10, ".dist-info", 10))
			continue;
		_cleanup_free_ char *dir = xstrndup(n, (size_t)(slash - n - 10));
		char *dash = strchr(dir, '-');

		if (dash)
			*dash = '\0';
		_cleanup_free_ char *dn = tags_normalize_name(dir);

		if (!best || !strcmp(dn, norm))
			best = &cd->entries[i];
	}
	return best;
}

/* Inflates the METADATA entry from buf (file bytes from buf_off) if it is
 * all there.  1 done, 0 need a request, <0 error. */
static int meta_from_buf(struct index_client *c, struct index_project *p, struct index_file *f,
			 const struct zip_entry *e, const uint8_t *buf, size_t len,
			 uint64_t buf_off)
{
	uint64_t data_off;
	char err[256];
	uint8_t sha[32];
	uint8_t *out = NULL;

	if (e->lho < buf_off || e->lho - buf_off >= len)
		return 0;
	const uint8_t *h = buf + (e->lho - buf_off);
	size_t hl = len - (size_t)(e->lho - buf_off);
	int r = zipcd_local_header(h, hl, e, &data_off);

	if (r == -EAGAIN)
		return 0;
	if (r < 0)
		return r;
	if (data_off - buf_off > len || e->csize > len - (data_off - buf_off))
		return 0;
	if (e->usize > METADATA_MAX)
		return -EFBIG;
	r = inflate_buffer(e->method, buf + (data_off - buf_off), (size_t)e->csize, e->usize,
			   e->crc32, &out, sha, err, sizeof(err));
	if (r < 0)
		return r;
	meta_done(c, p, f, out, (size_t)e->usize, 0, " ");
	return 1;
}

static void process_meta(struct index_client *c, struct index_job *j, int r)
{
	struct index_file *f = j->f;
	struct index_project *p = j->p;
	char err[256];

	switch (j->kind) {
	case JOB_META:
		if (r == 0) {
			uint8_t sha[32];

			sha256_buf(j->body.data, j->body.len, sha);
			if (f->has_metadata_sha256 && memcmp(sha, f->metadata_sha256, 32)) {
				meta_done(
				    c, p, f, NULL, 0, -EBADMSG,
				    "\"%s.metadata\" does not match the sha256 the index gives",
				    f->url);
				return;
			}
			size_t n;
			uint8_t *t = buf_steal(&j->body, &n);

			meta_done(c, p, f, t, n, 0, " ");
			return;
		}
		if (r != -ENOENT) {
			meta_done(c, p, f, NULL, 0, r, "\"%s.metadata\": %s", f->url, j->req.err);
			return;
		}
		/* announced but missing: read it from the wheel */
		if (f->size)
			start_tail(c, p, f);
		else
			submit_for(c, JOB_PROBE, p, f, 0, 1);
		c->stats.probes += !f->size;
		return;
	case JOB_PROBE:
		if (r == 0 && j->req.resource_size) {
			f->size = j->req.resource_size;
			start_tail(c, p, f);
		} else {
			meta_done(c, p, f, NULL, 0, r < 0 ? r : -EBADMSG, "\"%s\": %s", f->url,
				  r < 0 ? j->req.err : "the server does not say how large it is");
		}
		return;
	case JOB_TAIL:
	case JOB_CD: {
		if (r < 0) {
			meta_done(c, p, f, NULL, 0, r, "\"%s\": %s", f->url, j->req.err);
			return;
		}
		uint8_t *buf;
		size_t len;
		uint64_t off = j->req.off, need = 0;

		if (j->kind == JOB_CD) { /* prepend to the tail */
			buf = xmalloc(j->body.len + j->tail_len);
			memcpy(buf, j->body.data, j->body.len);
			memcpy(buf + j->body.len, j->tail, j->tail_len);
			len = j->body.len + j->tail_len;
		} else {
			buf = buf_steal(&j->body, &len);
		}
		struct zip_cd *cd = NULL;

		r = zipcd_parse(buf, len, off, f->size, &cd, &need, err, sizeof(err));
		if (r == -EAGAIN && j->kind == JOB_TAIL && need < off) {
			struct index_job *k = job_new(c, JOB_CD, f->url, need, off - need);

			k->p = p;
			k->f = f;
			k->tail = buf;
			k->tail_len = len;
			k->tail_off = off;
			job_submit(c, k);
			return;
		}
		if (r < 0) {
			free(buf);
			meta_done(c, p, f, NULL, 0, -EBADMSG, "\"%s\": %s", f->url,
				  r == -EAGAIN ? "central directory out of reach" : err);
			return;
		}
		const struct zip_entry *e = find_metadata(cd, p ? p->name : "");

		if (!e) {
			meta_done(c, p, f, NULL, 0, -EBADMSG, "wheel has no .dist-info/METADATA");
		} else {
			r = meta_from_buf(c, p, f, e, buf, len, off);
			if (r < 0)
				meta_done(c, p, f, NULL, 0, r, "METADATA: %s", strerror(-r));
			else if (r == 0) {
				struct index_job *k =
				    job_new(c, JOB_ENTRY, f->url, e->lho,
					    MIN(zipcd_span_guess(e), f->size - e->lho));

				k->p = p;
				k->f = f;
				/* keep the entry for when the answer comes */
				k->tail = xmalloc(sizeof(*e));
				memcpy(k->tail, e, sizeof(*e));
				((struct zip_entry *)k->tail)->name = xstrdup(e->name);
				job_submit(c, k);
			}
		}
		zipcd_free(cd);
		free(buf);
		return;
	}
	case JOB_ENTRY: {
		struct zip_entry *e = (struct zip_entry *)j->tail;

		if (r == 0) {
			r = meta_from_buf(c, p, f, e, j->body.data, j->body.len, j->req.off);
			if (r == 0 && j->retries == 0) {
				/* the local extra field was longer than the slack */
				uint64_t data_off = 0;

				zipcd_local_header(j->body.data, j->body.len, e, &data_off);
				uint64_t want = data_off > e->lho ? data_off - e->lho + e->csize
								  : 65536 + e->csize;
				struct index_job *k = job_new(c, JOB_ENTRY, f->url, e->lho,
							      MIN(want, f->size - e->lho));

				k->p = p;
				k->f = f;
				k->retries = 1;
				k->tail = j->tail;
				j->tail = NULL;
				job_submit(c, k);
				return;
			}
			if (r == 0)
				r = -EBADMSG;
		}
		if (r < 0)
			meta_done(c, p, f, NULL, 0, r, "\"%s\": METADATA: %s", f->url,
				  j->req.err[0] ? j->req.err : strerror(-r));
		free(e->name);
		return;
	}
	default:
		return;
	}
}

void index_metadata_start(struct index_client *c, struct index_project *p, struct index_file *f)
{
	if (f->meta_state != META_NONE)
		return;
	f->meta_state = META_RUNNING;
	_cleanup_free_ char *path = meta_cache_path(c, f);
	char *text;
	size_t len;

	if (path && file_read_all(path, &text, &len) == 0) {
		c->stats.metadata_cached++;
		meta_done(c, p, f, (uint8_t *)text, len, 0, " ");
		return;
	}
	if (f->has_metadata) {
		_cleanup_free_ char *u = xasprintf("%s.metadata", f->url);
		struct index_job *j = job_new(c, JOB_META, u, 0, 0);

		c->stats.metadata_files++;
		j->p = p;
		j->f = f;
		job_submit(c, j);
	} else if (f->size) {
		start_tail(c, p, f);
	} else {
		c->stats.probes++;
		submit_for(c, JOB_PROBE, p, f, 0, 1);
	}
}

static bool meta_ready(void *arg) { return ((struct index_file *)arg)->meta_state == META_DONE; }

int index_metadata_wait(struct index_client *c, struct index_project *p, struct index_file *f)
{
	index_metadata_start(c, p, f);
	int r = wait_until(c, meta_ready, f);

	return r < 0 ? r : f->meta_err;
}

/* --- whole files (hash) and sizes */

static void process_full(struct index_client *c, struct index_job *j, int r)
{
	struct index_file *f = j->f;

	c->full_pending--;
	if (r < 0) {
		f->meta_err = r;
		free(f->meta_errmsg);
		f->meta_errmsg = xasprintf("\"%s\": %s", f->url, j->req.err);
		return;
	}
	if (j->kind == JOB_PROBE) {
		f->size = j->req.resource_size;
		return;
	}
	sha256_final(&j->sha, f->sha256);
	j->kind = JOB_PAGE; /* the context is gone: job_free must not abort it */
	f->has_sha256 = true;
	f->size = j->nbytes;
}

static bool full_ready(void *arg) { return ((struct index_client *)arg)->full_pending == 0; }

int index_complete_files(struct index_client *c, struct index_file **files, size_t n, char *err,
			 size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		struct index_file *f = files[i];
		struct index_job *j;

		if (f->has_sha256 && f->size)
			continue;
		if (!f->has_sha256) {
			j = job_new(c, JOB_FULL, f->url, 0, 0);
			sha256_init(&j->sha);
		} else {
			j = job_new(c, JOB_PROBE, f->url, 0, 1);
			c->stats.probes++;
		}
		j->f = f;
		j->index_i = 1; /* marks "for completion" in process() */
		f->meta_err = 0;
		c->full_pending++;
		job_submit(c, j);
	}
	int r = wait_until(c, full_ready, c);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (files[i]->meta_err < 0 || !files[i]->size) {
			snprintf(err, errlen, "%s",
				 files[i]->meta_errmsg ? files[i]->meta_errmsg : "size unknown");
			return files[i]->meta_err < 0 ? files[i]->meta_err : -EBADMSG;
		}
	return 0;
}

static void process(struct index_client *c, struct index_job *j, int r)
{
	if (j->too_big && r < 0) {
		r = -EFBIG;
		snprintf(j->req.err, sizeof(j->req.err), "answer larger than %zu bytes",
			 j->max_body);
	}
	switch (j->kind) {
	case JOB_PAGE:
		process_page(c, j, r);
		break;
	case JOB_FLPAGE:
		process_flpage(c, j, r);
		break;
	case JOB_FULL:
		process_full(c, j, r);
		break;
	case JOB_PROBE:
		if (j->index_i == 1) {
			process_full(c, j, r);
			break;
		}
		/* fall through */
	default:
		process_meta(c, j, r);
		break;
	}
	job_free(j);
}

/* --- setup */

static int fl_dir(struct index_client *c, const char *dir, char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d) {
		snprintf(err, errlen, "find-links directory \"%s\": %s", dir, strerror(errno));
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!str_endswith(de->d_name, ".whl"))
			continue;
		struct index_file f = {0};
		struct stat st;

		f.url = xasprintf("%s/%s", dir, de->d_name);
		f.filename = xstrdup(de->d_name);
		if (stat(f.url, &st) == 0 && S_ISREG(st.st_mode)) {
			f.size = (uint64_t)st.st_size;
			page_push(&c->fl, &f);
		} else {
			index_file_clear(&f);
		}
	}
	closedir(d);
	return 0;
}

static char *strip_slash(const char *s)
{
	char *r = xstrdup(s);
	size_t n = strlen(r);

	while (n > 1 && r[n - 1] == '/')
		r[--n] = '\0';
	return r;
}

struct index_client *index_client_new(const struct index_config *cfg, struct http_engine *e,
				      char *err, size_t errlen)
{
	struct index_client *c = xcalloc(1, sizeof(*c));

	c->e = e;
	c->cfg = *cfg;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->index_urls = xcalloc(cfg->nindex + 1, sizeof(char *));
	for (size_t i = 0; i < cfg->nindex; i++)
		c->index_urls[i] = strip_slash(cfg->index_urls[i]);
	c->find_links = xcalloc(cfg->nfind_links + 1, sizeof(char *));
	for (size_t i = 0; i < cfg->nfind_links; i++) {
		const char *fl = cfg->find_links[i];

		if (!strncmp(fl, "file://", 7))
			fl += 7;
		c->find_links[i] = xstrdup(fl);
		if (!http_is_remote(fl) && fl_dir(c, fl, err, errlen) < 0)
			return index_client_free(c);
	}
	if (cfg->cache_dir) {
		c->meta_dir = xasprintf("%s/metadata", cfg->cache_dir);
		if (mkdir_p(c->meta_dir, 0755) < 0) {
			free(c->meta_dir);
			c->meta_dir = NULL;
		}
	}
	return c;
}

static bool nothing_inflight(void *arg) { return ((struct index_client *)arg)->inflight == 0; }

struct index_client *index_client_free(struct index_client *c)
{
	if (!c)
		return NULL;
	/* Speculative requests may still run: they point into c. */
	c->cfg.hooks.project_ready = NULL;
	c->cfg.hooks.metadata_ready = NULL;
	wait_until(c, nothing_inflight, c);
	for (size_t i = 0; i < c->nprojects; i++) {
		struct index_project *p = c->projects[i];
		struct proj_priv *pp = p->priv;

		for (size_t k = 0; k < p->nfiles; k++)
			index_file_clear(&p->files[k]);
		free(p->files);
		for (size_t k = 0; k < c->cfg.nindex; k++) {
			index_page_free(&pp->pages[k]);
			free(pp->errs[k]);
		}
		free(pp->pages);
		free(pp->status);
		free(pp->errs);
		free(pp);
		free(p->name);
		free(p);
	}
	free(c->projects);
	index_page_free(&c->fl);
	for (size_t i = 0; i < c->cfg.nindex; i++)
		free(c->index_urls[i]);
	free(c->index_urls);
	for (size_t i = 0; i < c->cfg.nfind_links; i++)
		free(c->find_links[i]);
	free(c->find_links);
	free(c->meta_dir);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return NULL;
}

void index_get_stats(const struct index_client *c, struct index_stats *ret) { *ret = c->stats; }
