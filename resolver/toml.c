/* toml: a TOML 1.0 parser into a tree of toml_value.
 *
 * DESIGN: the whole input is first checked to be valid UTF-8, then parsed in
 * one recursive-descent pass.  Each value is allocated as a struct node whose
 * first member is the public struct toml_value, so toml_free() can free it
 * through the public pointer; the rest of the node holds parser-private
 * bookkeeping:
 *   - flags that implement the "a table may be defined only once" rules
 *     (TF_EXPLICIT: [header]; TF_DOTTED: created or extended by dotted keys;
 *     TF_INLINE: inline tables and literal arrays, frozen; TF_AOT: array of
 *     tables made by [[header]]).  Tables with no flag were created
 *     implicitly as parents in a header and may be defined once later.
 *   - the tree depth, bounded by TOML_MAX_DEPTH, which bounds both the C
 *     recursion of the parser (nested arrays / inline tables) and of
 *     toml_free();
 *   - for tables with many keys, an open-addressing hash index so that
 *     duplicate-key checks and toml_get() stay O(1).
 *
 * Line and column numbers are computed lazily from byte positions with a
 * cursor that only moves forward in the common case (columns count UTF-8
 * characters, not bytes).
 *
 * Deliberately missing: strings containing U+0000 (the API hands out C
 * strings), integers outside int64 (TOML allows parsers to reject them), and
 * datetimes are only validated, then kept as text. */
#include "resolver/toml.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fetch/util/util.h"

#define TOML_MAX_DEPTH 128
#define TOML_MAX_KEY_PARTS TOML_MAX_DEPTH
#define TOML_MAX_LEN ((size_t)1 << 30)
#define HASH_MIN_KEYS 8

enum {
	TF_EXPLICIT = 1 << 0,
	TF_DOTTED = 1 << 1,
	TF_INLINE = 1 << 2,
	TF_AOT = 1 << 3,
};

struct node {
	struct toml_value v; /* first: freed through the public pointer */
	unsigned flags;
	int depth;
	size_t cap;	/* allocated slots of arr.items or tab.keys/vals */
	uint32_t *hash; /* tables: index + 1 of each key, 0 = empty slot */
	size_t hashcap; /* power of two, or 0 without index */
};

struct lc {
	int line, col;
};

struct key {
	char *parts[TOML_MAX_KEY_PARTS];
	struct lc at[TOML_MAX_KEY_PARTS];
	int n;
};

struct parser {
	const char *start, *p, *end;
	char *err;
	size_t errlen;
	bool failed;
	struct node *root, *cur;
	/* line/column cursor: position lc_pos is at lc_line:lc_col */
	const char *lc_pos;
	int lc_line, lc_col;
};

static inline struct node *N(struct toml_value *v) { return (struct node *)v; }

/* ---- positions and errors ---- */

static struct lc lc_at(struct parser *P, const char *pos)
{
	if (pos < P->lc_pos) {
		P->lc_pos = P->start;
		P->lc_line = 1;
		P->lc_col = 1;
	}
	const char *q = P->lc_pos;
	for (;;) {
		const char *nl = memchr(q, '\n', (size_t)(pos - q));
		if (!nl)
			break;
		P->lc_line++;
		P->lc_col = 1;
		q = nl + 1;
	}
	for (; q < pos; q++)
		if (((unsigned char)*q & 0xc0) != 0x80)
			P->lc_col++;
	P->lc_pos = pos;
	return (struct lc){P->lc_line, P->lc_col};
}

static int perr_v(struct parser *P, struct lc at, const char *fmt, va_list ap)
{
	if (P->failed)
		return -EINVAL;
	P->failed = true;
	if (!P->err || !P->errlen)
		return -EINVAL;
	int n = snprintf(P->err, P->errlen, "%d:%d: ", at.line, at.col);
	if (n >= 0 && (size_t)n < P->errlen)
		vsnprintf(P->err + n, P->errlen - (size_t)n, fmt, ap);
	return -EINVAL;
}

static int __attribute__((format(printf, 3, 4)))
perr(struct parser *P, const char *pos, const char *fmt, ...)
{
	if (P->failed)
		return -EINVAL;
	va_list ap;
	va_start(ap, fmt);
	perr_v(P, lc_at(P, pos > P->end ? P->end : pos), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int __attribute__((format(printf, 3, 4)))
perr_lc(struct parser *P, struct lc at, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	perr_v(P, at, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Joins key parts for messages; control characters become '?'. */
static const char *key_str(const struct key *k, int n, char *out, size_t outlen)
{
	size_t o = 0;
	for (int i = 0; i < n && o + 1 < outlen; i++) {
		if (i)
			out[o++] = '.';
		for (const char *s = k->parts[i]; s && *s && o + 1 < outlen; s++)
			out[o++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	}
	if (o + 1 >= outlen && outlen > 4)
		memcpy(out + outlen - 4, "...", 3), o = outlen - 1;
	out[o < outlen ? o : outlen - 1] = 0;
	return out;
}

/* ---- nodes ---- */

static struct node *node_new(enum toml_type type, struct lc at, int depth)
{
	struct node *n = xcalloc(1, sizeof(*n));
	n->v.type = type;
	n->v.line = at.line;
	n->v.col = at.col;
	n->depth = depth;
	return n;
}

struct toml_value *toml_free(struct toml_value *v)
{
	if (!v)
		return NULL;
	switch (v->type) {
	case TOML_STRING:
	case TOML_DATETIME:
		free(v->s);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->arr.n; i++)
			toml_free(v->arr.items[i]);
		free(v->arr.items);
		break;
	case TOML_TABLE:
		for (size_t i = 0; i < v->tab.n; i++) {
			free(v->tab.keys[i]);
			toml_free(v->tab.vals[i]);
		}
		free(v->tab.keys);
		free(v->tab.vals);
		free(N(v)->hash);
		break;
	default:
		break;
	}
	free(v);
	return NULL;
}

static uint32_t str_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void table_reindex(struct node *t)
{
	size_t cap = 32;
	while (cap < 2 * t->cap)
		cap *= 2;
	free(t->hash);
	t->hash = xcalloc(cap, sizeof(*t->hash));
	t->hashcap = cap;
	for (size_t i = 0; i < t->v.tab.n; i++) {
		size_t h = str_hash(t->v.tab.keys[i]) & (cap - 1);
		while (t->hash[h])
			h = (h + 1) & (cap - 1);
		t->hash[h] = (uint32_t)(i + 1);
	}
}

static struct toml_value *table_find(const struct node *t, const char *key)
{
	if (t->hash) {
		size_t h = str_hash(key) & (t->hashcap - 1);
		for (; t->hash[h]; h = (h + 1) & (t->hashcap - 1)) {
			size_t i = t->hash[h] - 1;
			if (strcmp(t->v.tab.keys[i], key) == 0)
				return t->v.tab.vals[i];
		}
		return NULL;
	}
	for (size_t i = 0; i < t->v.tab.n; i++)
		if (strcmp(t->v.tab.keys[i], key) == 0)
			return t->v.tab.vals[i];
	return NULL;
}

/* Takes ownership of key and val; the caller checked key is absent. */
static void table_add(struct node *t, char *key, struct node *val)
{
	struct toml_value *v = &t->v;
	if (v->tab.n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 4;
		v->tab.keys = xrealloc(v->tab.keys, t->cap * sizeof(*v->tab.keys));
		v->tab.vals = xrealloc(v->tab.vals, t->cap * sizeof(*v->tab.vals));
		if (t->cap > HASH_MIN_KEYS)
			table_reindex(t);
	}
	size_t i = v->tab.n++;
	v->tab.keys[i] = key;
	v->tab.vals[i] = &val->v;
	if (t->hash) {
		size_t h = str_hash(key) & (t->hashcap - 1);
		while (t->hash[h])
			h = (h + 1) & (t->hashcap - 1);
		t->hash[h] = (uint32_t)(i + 1);
	}
}

static void array_add(struct node *a, struct node *val)
{
	struct toml_value *v = &a->v;
	if (v->arr.n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 4;
		v->arr.items = xrealloc(v->arr.items, a->cap * sizeof(*v->arr.items));
	}
	v->arr.items[v->arr.n++] = &val->v;
}

static void key_clear(struct key *k)
{
	for (int i = 0; i < k->n; i++)
		free(k->parts[i]);
	k->n = 0;
}

/* ---- lexical helpers ---- */

static inline bool is_ws(char c) { return c == ' ' || c == '\t'; }

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

static inline bool is_bare(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
	       c == '-';
}

/* Control characters TOML forbids in strings and comments (tab is fine). */
static inline bool is_ctrl(char c) { return ((unsigned char)c < 0x20 && c != '\t') || c == 0x7f; }

static void skip_ws(struct parser *P)
{
	while (P->p < P->end && is_ws(*P->p))
		P->p++;
}

static bool at_newline(const struct parser *P)
{
	return P->p < P->end &&
	       (*P->p == '\n' || (*P->p == '\r' && P->p + 1 < P->end && P->p[1] == '\n'));
}

/* 1 if a newline was consumed, 0 if none is here, -EINVAL on a bare CR. */
static int eat_newline(struct parser *P)
{
	if (P->p >= P->end)
		return 0;
	if (*P->p == '\n') {
		P->p++;
		return 1;
	}
	if (*P->p == '\r') {
		if (P->p + 1 < P->end && P->p[1] == '\n') {
			P->p += 2;
			return 1;
		}
		return perr(P, P->p, "carriage return not followed by a newline");
	}
	return 0;
}

static int skip_comment(struct parser *P)
{
	if (P->p >= P->end || *P->p != '#')
		return 0;
	for (P->p++; P->p < P->end && !at_newline(P); P->p++)
		if (is_ctrl(*P->p))
			return perr(P, P->p, "control character U+%04X in comment",
				    (unsigned char)*P->p);
	return 0;
}

/* Whitespace, comments and newlines (inside arrays). */
static int skip_ws_nl(struct parser *P)
{
	for (;;) {
		skip_ws(P);
		if (skip_comment(P) < 0)
			return -EINVAL;
		int r = eat_newline(P);
		if (r < 0)
			return r;
		if (r == 0)
			return 0;
	}
}

/* Returns a pointer to the first byte that is not valid UTF-8, or NULL. */
static const char *utf8_check(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	while (p < end) {
		unsigned c = *p;
		if (c < 0x80) {
			p++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0)
			n = 2, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			n = 3, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			n = 4, cp = c & 0x07, min = 0x10000;
		else
			return (const char *)p;
		if ((size_t)(end - p) < n)
			return (const char *)p;
		for (size_t i = 1; i < n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return (const char *)p;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return (const char *)p;
		p += n;
	}
	return NULL;
}

static void utf8_put(struct buf *b, uint32_t cp)
{
	char o[4];
	size_t n;
	if (cp < 0x80) {
		o[0] = (char)cp, n = 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		o[0] = (char)(0xf0 | (cp >> 18));
		o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	buf_append(b, o, n);
}

/* ---- strings ---- */

static int parse_escape(struct parser *P, struct buf *b)
{
	const char *at = P->p; /* the backslash */
	if (P->p + 1 >= P->end)
		return perr(P, at, "unterminated string");
	char c = P->p[1];
	P->p += 2;
	switch (c) {
	case 'b':
		buf_append(b, "\b", 1);
		return 0;
	case 't':
		buf_append(b, "\t", 1);
		return 0;
	case 'n':
		buf_append(b, "\n", 1);
		return 0;
	case 'f':
		buf_append(b, "\f", 1);
		return 0;
	case 'r':
		buf_append(b, "\r", 1);
		return 0;
	case '"':
		buf_append(b, "\"", 1);
		return 0;
	case '\\':
		buf_append(b, "\\", 1);
		return 0;
	case 'u':
	case 'U': {
		int n = c == 'u' ? 4 : 8;
		uint32_t cp = 0;
		if (P->end - P->p < n)
			return perr(P, at, "\\%c escape needs %d hex digits", c, n);
		for (int i = 0; i < n; i++) {
			int h = hex_digit(P->p[i]);
			if (h < 0)
				return perr(P, at, "\\%c escape needs %d hex digits", c, n);
			cp = (cp << 4) | (uint32_t)h;
		}
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return perr(P, at, "\\%c escape is not a Unicode scalar value", c);
		if (cp == 0)
			return perr(P, at, "NUL character in string is not supported");
		P->p += n;
		utf8_put(b, cp);
		return 0;
	}
	default:
		if (is_ctrl(c) || (unsigned char)c >= 0x80)
			return perr(P, at, "invalid escape sequence");
		return perr(P, at, "invalid escape sequence '\\%c'", c);
	}
}

/* Multi-line strings may end with up to two extra quotes before the
 * closing delimiter. Returns how many quote chars start at P->p. */
static int count_quotes(const struct parser *P, char q)
{
	int n = 0;
	while (P->p + n < P->end && P->p[n] == q)
		n++;
	return n;
}

static int parse_string(struct parser *P, bool allow_multi, char **ret)
{
	const char *start = P->p;
	char q = *P->p;
	bool literal = q == '\'';
	bool multi = allow_multi && P->end - P->p >= 3 && P->p[1] == q && P->p[2] == q;
	struct buf b;
	buf_init(&b);
	buf_reserve(&b, 0);
	b.data[0] = 0;

	P->p += multi ? 3 : 1;
	if (multi) {
		/* a newline right after the opening delimiter is trimmed */
		int r = eat_newline(P);
		if (r < 0)
			goto fail;
	}
	for (;;) {
		if (P->p >= P->end) {
			perr(P, start, "unterminated string");
			goto fail;
		}
		char c = *P->p;
		if (c == q) {
			if (!multi) {
				P->p++;
				break;
			}
			int n = count_quotes(P, q);
			if (n < 3) {
				buf_append(&b, P->p, (size_t)n);
				P->p += n;
				continue;
			}
			if (n > 5) {
				perr(P, P->p + 5,
				     "too many quotes at the end of a multi-line string");
				goto fail;
			}
			buf_append(&b, P->p, (size_t)n - 3);
			P->p += n;
			break;
		}
		if (c == '\\' && !literal) {
			if (multi) {
				/* line-ending backslash: "\" ws* newline, then trim */
				const char *s = P->p + 1;
				while (s < P->end && is_ws(*s))
					s++;
				if (s < P->end && (*s == '\n' || (*s == '\r' && s + 1 < P->end &&
								  s[1] == '\n'))) {
					P->p = s;
					for (;;) {
						skip_ws(P);
						int r = eat_newline(P);
						if (r < 0)
							goto fail;
						if (r == 0)
							break;
					}
					continue;
				}
			}
			if (parse_escape(P, &b) < 0)
				goto fail;
			continue;
		}
		if (multi && (c == '\n' || c == '\r')) {
			int r = eat_newline(P);
			if (r < 0)
				goto fail;
			buf_append(&b, "\n", 1); /* CRLF is normalized to LF */
			continue;
		}
		if (c == '\n' || c == '\r') {
			perr(P, start, "unterminated string");
			goto fail;
		}
		if (is_ctrl(c)) {
			perr(P, P->p, "control character U+%04X in string", (unsigned char)c);
			goto fail;
		}
		/* copy a run of ordinary bytes */
		const char *s = P->p;
		while (P->p < P->end && *P->p != q && *P->p != '\\' && !is_ctrl(*P->p))
			P->p++;
		if (literal)
			while (P->p < P->end && *P->p == '\\')
				P->p++;
		buf_append(&b, s, (size_t)(P->p - s));
	}
	*ret = (char *)buf_steal(&b, NULL);
	return 0;
fail:
	buf_free(&b);
	return -EINVAL;
}

/* ---- keys ---- */

static int parse_key(struct parser *P, struct key *k)
{
	k->n = 0;
	for (;;) {
		const char *pos = P->p;
		char *part;
		if (k->n == TOML_MAX_KEY_PARTS) {
			perr(P, pos, "key has more than %d parts", TOML_MAX_KEY_PARTS);
			goto fail;
		}
		if (pos < P->end && (*pos == '"' || *pos == '\'')) {
			if (parse_string(P, false, &part) < 0)
				goto fail;
		} else {
			while (P->p < P->end && is_bare(*P->p))
				P->p++;
			if (P->p == pos) {
				if (pos >= P->end || at_newline(P))
					perr(P, pos, "expected a key");
				else if (*pos == '=')
					perr(P, pos, "expected a key before '='");
				else
					perr(P, pos, "invalid character in key");
				goto fail;
			}
			part = xstrndup(pos, (size_t)(P->p - pos));
		}
		k->at[k->n] = lc_at(P, pos);
		k->parts[k->n++] = part;
		skip_ws(P);
		if (P->p < P->end && *P->p == '.') {
			P->p++;
			skip_ws(P);
			continue;
		}
		return 0;
	}
fail:
	key_clear(k);
	return -EINVAL;
}

/* ---- scalars ---- */

static bool value_ends(const struct parser *P)
{
	if (P->p >= P->end)
		return true;
	char c = *P->p;
	return is_ws(c) || c == '\n' || c == '\r' || c == '#' || c == ',' || c == ']' || c == '}';
}

static inline bool is_tok(char c) { return is_bare(c) || c == '+' || c == '.' || c == ':'; }

static bool digits_at(const char *s, const char *end, int n)
{
	if (end - s < n)
		return false;
	for (int i = 0; i < n; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

static int num2(const char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* Validates [s, end) as HH:MM:SS(.frac)?; returns the end or NULL. */
static const char *check_time(const char *s, const char *end)
{
	if (!digits_at(s, end, 2) || end - s < 8 || s[2] != ':' || !digits_at(s + 3, end, 2) ||
	    s[5] != ':' || !digits_at(s + 6, end, 2))
		return NULL;
	if (num2(s) > 23 || num2(s + 3) > 59 || num2(s + 6) > 59)
		return NULL;
	s += 8;
	if (s < end && *s == '.') {
		s++;
		if (s >= end || !is_digit(*s))
			return NULL;
		while (s < end && is_digit(*s))
			s++;
	}
	return s;
}

static const char *check_date(const char *s, const char *end)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (!digits_at(s, end, 4) || end - s < 10 || s[4] != '-' || !digits_at(s + 5, end, 2) ||
	    s[7] != '-' || !digits_at(s + 8, end, 2))
		return NULL;
	int y = num2(s) * 100 + num2(s + 2), m = num2(s + 5), d = num2(s + 8);
	if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return NULL;
	if (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return NULL;
	return s + 10;
}

static bool check_datetime(const char *s, const char *end)
{
	const char *q = check_date(s, end);
	if (!q) /* local time */
		return (q = check_time(s, end)) && q == end;
	if (q == end) /* local date */
		return true;
	if (*q != 'T' && *q != 't' && *q != ' ')
		return false;
	q = check_time(q + 1, end);
	if (!q)
		return false;
	if (q == end) /* local date-time */
		return true;
	if ((*q == 'Z' || *q == 'z') && q + 1 == end)
		return true;
	if ((*q == '+' || *q == '-') && end - q == 6 && digits_at(q + 1, end, 2) && q[3] == ':' &&
	    digits_at(q + 4, end, 2) && num2(q + 1) <= 23 && num2(q + 4) <= 59)
		return true;
	return false;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* Scans digits (of the given radix) with single underscores between them.
 * Returns the end, or NULL if empty or an underscore is misplaced. */
static const char *scan_digits(const char *s, const char *end, int radix)
{
	const char *start = s;
	bool prev_digit = false;
	for (; s < end; s++) {
		int v = hex_digit(*s);
		if (v >= 0 && v < radix) {
			prev_digit = true;
		} else if (*s == '_') {
			if (!prev_digit || s + 1 >= end || hex_digit(s[1]) < 0 ||
			    hex_digit(s[1]) >= radix)
				return NULL;
			prev_digit = false;
		} else {
			break;
		}
	}
	return s > start && prev_digit ? s : NULL;
}

static int parse_number(struct parser *P, const char *s, const char *end, struct node *n)
{
	const char *tok = s;
	bool neg = false, sign = false;
	if (*s == '+' || *s == '-')
		neg = *s == '-', sign = true, s++;
	size_t rest = (size_t)(end - s);
	if (rest == 3 && (!memcmp(s, "inf", 3) || !memcmp(s, "nan", 3))) {
		n->v.type = TOML_FLOAT;
		n->v.f = s[0] == 'i' ? (neg ? -HUGE_VAL : HUGE_VAL) : (neg ? -NAN : NAN);
		return 0;
	}
	if (!sign && rest > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b')) {
		int radix = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
		const char *q = scan_digits(s + 2, end, radix);
		if (q != end)
			return perr(P, tok, "invalid %s integer",
				    radix == 16	 ? "hexadecimal"
				    : radix == 8 ? "octal"
						 : "binary");
		uint64_t v = 0;
		for (q = s + 2; q < end; q++) {
			if (*q == '_')
				continue;
			if (v > (uint64_t)INT64_MAX / (uint64_t)radix)
				return perr(P, tok, "integer out of range");
			v = v * (uint64_t)radix + (uint64_t)hex_digit(*q);
			if (v > (uint64_t)INT64_MAX)
				return perr(P, tok, "integer out of range");
		}
		n->v.type = TOML_INTEGER;
		n->v.i = (int64_t)v;
		return 0;
	}
	const char *ip = s, *q = scan_digits(s, end, 10);
	if (!q)
		return perr(P, tok, "invalid number");
	if (*ip == '0' && q - ip > 1)
		return perr(P, tok, "leading zeros are not allowed");
	bool isfloat = false;
	if (q < end && *q == '.') {
		q = scan_digits(q + 1, end, 10);
		if (!q)
			return perr(P, tok, "invalid float: needs digits after '.'");
		isfloat = true;
	}
	if (q < end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < end && (*q == '+' || *q == '-'))
			q++;
		q = scan_digits(q, end, 10);
		if (!q)
			return perr(P, tok, "invalid float exponent");
		isfloat = true;
	}
	if (q != end)
		return perr(P, tok, "invalid number");
	if (isfloat) {
		char tmp[128];
		size_t o = 0;
		for (const char *c = tok; c < end; c++) {
			if (*c == '_')
				continue;
			if (o + 1 >= sizeof(tmp))
				return perr(P, tok, "float literal too long");
			tmp[o++] = *c;
		}
		tmp[o] = 0;
		pthread_once(&c_locale_once, c_locale_init);
		if (!c_locale)
			return perr(P, tok, "cannot create the C locale");
		n->v.type = TOML_FLOAT;
		n->v.f = strtod_l(tmp, NULL, c_locale);
		return 0;
	}
	uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (const char *c = ip; c < end; c++) {
		if (*c == '_')
			continue;
		unsigned d = (unsigned)(*c - '0');
		if (v > (lim - d) / 10)
			return perr(P, tok, "integer out of range");
		v = v * 10 + d;
	}
	n->v.type = TOML_INTEGER;
	n->v.i = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

/* ---- values ---- */

static int parse_value(struct parser *P, int depth, struct node **ret);
static int insert_kv(struct parser *P, struct node *t, struct key *k, struct node *val);

static int check_depth(struct parser *P, const char *pos, int depth)
{
	if (depth > TOML_MAX_DEPTH)
		return perr(P, pos, "nesting deeper than %d levels", TOML_MAX_DEPTH);
	return 0;
}

static int parse_array(struct parser *P, struct node *a)
{
	a->flags = TF_INLINE;
	P->p++; /* [ */
	for (;;) {
		if (skip_ws_nl(P) < 0)
			return -EINVAL;
		if (P->p >= P->end)
			return perr(P, P->p, "unterminated array");
		if (*P->p == ']') {
			P->p++;
			return 0;
		}
		struct node *item;
		if (parse_value(P, a->depth + 1, &item) < 0)
			return -EINVAL;
		array_add(a, item);
		if (skip_ws_nl(P) < 0)
			return -EINVAL;
		if (P->p < P->end && *P->p == ',') {
			P->p++;
			continue;
		}
		if (P->p < P->end && *P->p == ']') {
			P->p++;
			return 0;
		}
		return perr(P, P->p,
			    P->p >= P->end ? "unterminated array" : "expected ',' or ']' in array");
	}
}

static int parse_inline_table(struct parser *P, struct node *t)
{
	P->p++; /* { */
	skip_ws(P);
	if (P->p < P->end && *P->p == '}') {
		P->p++;
		t->flags = TF_INLINE;
		return 0;
	}
	for (;;) {
		struct key k;
		skip_ws(P);
		if (P->p < P->end && *P->p == '}')
			return perr(P, P->p, "trailing comma in inline table");
		if (parse_key(P, &k) < 0)
			return -EINVAL;
		if (P->p >= P->end || *P->p != '=') {
			key_clear(&k);
			return perr(P, P->p, "expected '=' after key in inline table");
		}
		P->p++;
		skip_ws(P);
		struct node *val;
		if (t->depth + k.n > TOML_MAX_DEPTH) {
			perr_lc(P, k.at[0], "nesting deeper than %d levels", TOML_MAX_DEPTH);
			key_clear(&k);
			return -EINVAL;
		}
		if (parse_value(P, t->depth + k.n, &val) < 0) {
			key_clear(&k);
			return -EINVAL;
		}
		if (insert_kv(P, t, &k, val) < 0) {
			key_clear(&k);
			toml_free(&val->v);
			return -EINVAL;
		}
		key_clear(&k);
		skip_ws(P);
		if (P->p < P->end && *P->p == ',') {
			P->p++;
			continue;
		}
		if (P->p < P->end && *P->p == '}') {
			P->p++;
			t->flags = TF_INLINE;
			return 0;
		}
		if (P->p >= P->end)
			return perr(P, P->p, "unterminated inline table");
		if (at_newline(P) || *P->p == '\r')
			return perr(P, P->p, "newline in inline table");
		return perr(P, P->p, "expected ',' or '}' in inline table");
	}
}

static int parse_value(struct parser *P, int depth, struct node **ret)
{
	const char *pos = P->p;
	if (check_depth(P, pos, depth) < 0)
		return -EINVAL;
	if (pos >= P->end || at_newline(P) || *pos == '#')
		return perr(P, pos, "expected a value");
	struct node *n = node_new(TOML_STRING, lc_at(P, pos), depth);
	char c = *pos;
	int r;
	if (c == '"' || c == '\'') {
		n->v.type = TOML_STRING;
		r = parse_string(P, true, &n->v.s);
		if (r == 0 && !value_ends(P))
			r = perr(P, P->p, "unexpected text after string");
	} else if (c == '[') {
		n->v.type = TOML_ARRAY;
		r = parse_array(P, n);
	} else if (c == '{') {
		n->v.type = TOML_TABLE;
		r = parse_inline_table(P, n);
	} else if (is_tok(c)) {
		const char *end = pos;
		while (end < P->end && is_tok(*end))
			end++;
		/* "1979-05-27 07:32:00": a date, a space, then a time */
		if (end - pos == 10 && check_date(pos, end) && end + 1 < P->end && *end == ' ' &&
		    digits_at(end + 1, P->end, 2) && end + 3 < P->end && end[3] == ':') {
			end++;
			while (end < P->end && is_tok(*end))
				end++;
		}
		P->p = end;
		if (end - pos == 4 && !memcmp(pos, "true", 4)) {
			n->v.type = TOML_BOOL;
			n->v.b = true;
			r = 0;
		} else if (end - pos == 5 && !memcmp(pos, "false", 5)) {
			n->v.type = TOML_BOOL;
			n->v.b = false;
			r = 0;
		} else if ((digits_at(pos, end, 4) && end - pos > 4 && pos[4] == '-') ||
			   (digits_at(pos, end, 2) && end - pos > 2 && pos[2] == ':')) {
			if (check_datetime(pos, end)) {
				n->v.type = TOML_DATETIME;
				n->v.s = xstrndup(pos, (size_t)(end - pos));
				r = 0;
			} else {
				r = perr(P, pos, "invalid date or time");
			}
		} else if (is_digit(c) || c == '+' || c == '-' ||
			   (end - pos == 3 && (!memcmp(pos, "inf", 3) || !memcmp(pos, "nan", 3)))) {
			r = parse_number(P, pos, end, n);
		} else {
			r = perr(P, pos, "expected a value");
		}
		if (r == 0 && !value_ends(P))
			r = perr(P, P->p, "unexpected text after value");
	} else {
		r = perr(P, pos, "expected a value");
	}
	if (r < 0) {
		toml_free(&n->v);
		return -EINVAL;
	}
	*ret = n;
	return 0;
}

/* Stores val at the dotted key k below table t (a [header] table, the root,
 * or an inline table being parsed).  Takes ownership of val and of the key
 * parts it stores (they are set to NULL) on success only. */
static int insert_kv(struct parser *P, struct node *t, struct key *k, struct node *val)
{
	char name[256];
	for (int i = 0; i < k->n - 1; i++) {
		struct toml_value *c = table_find(t, k->parts[i]);
		if (!c) {
			struct node *child = node_new(TOML_TABLE, k->at[i], t->depth + 1);
			child->flags = TF_DOTTED;
			table_add(t, k->parts[i], child);
			k->parts[i] = NULL;
			t = child;
			continue;
		}
		if (c->type != TOML_TABLE)
			return perr_lc(P, k->at[i], "key '%s' is already a %s, not a table",
				       key_str(k, i + 1, name, sizeof(name)),
				       toml_type_name(c->type));
		if (N(c)->flags & TF_INLINE)
			return perr_lc(P, k->at[i], "cannot add keys to inline table '%s'",
				       key_str(k, i + 1, name, sizeof(name)));
		if (N(c)->flags & TF_EXPLICIT)
			return perr_lc(
			    P, k->at[i],
			    "cannot add keys with dotted keys to table '%s' defined by a "
			    "[header]",
			    key_str(k, i + 1, name, sizeof(name)));
		N(c)->flags |= TF_DOTTED;
		t = N(c);
	}
	const char *last = k->parts[k->n - 1];
	if (table_find(t, last))
		return perr_lc(P, k->at[k->n - 1], "duplicate key '%s'",
			       key_str(k, k->n, name, sizeof(name)));
	table_add(t, k->parts[k->n - 1], val);
	k->parts[k->n - 1] = NULL;
	return 0;
}

static int parse_keyval(struct parser *P)
{
	struct key k;
	if (parse_key(P, &k) < 0)
		return -EINVAL;
	if (P->p >= P->end || *P->p != '=') {
		key_clear(&k);
		return perr(P, P->p, "expected '=' after key");
	}
	P->p++;
	skip_ws(P);
	struct node *val;
	if (P->cur->depth + k.n > TOML_MAX_DEPTH) {
		perr_lc(P, k.at[0], "nesting deeper than %d levels", TOML_MAX_DEPTH);
		key_clear(&k);
		return -EINVAL;
	}
	if (parse_value(P, P->cur->depth + k.n, &val) < 0) {
		key_clear(&k);
		return -EINVAL;
	}
	int r = insert_kv(P, P->cur, &k, val);
	if (r < 0)
		toml_free(&val->v);
	key_clear(&k);
	return r;
}

static int parse_header(struct parser *P)
{
	const char *pos = P->p;
	struct lc at = lc_at(P, pos); /* before the key: lc_at is fast going forward */
	bool aot = P->p + 1 < P->end && P->p[1] == '[';
	char name[256];
	struct key k;
	int r = -EINVAL;

	P->p += aot ? 2 : 1;
	skip_ws(P);
	if (parse_key(P, &k) < 0)
		return -EINVAL;
	if (P->p >= P->end || *P->p != ']' || (aot && (P->p + 1 >= P->end || P->p[1] != ']'))) {
		perr(P, P->p,
		     aot ? "expected ']]' to end the table header"
			 : "expected ']' to end the table header");
		goto out;
	}
	P->p += aot ? 2 : 1;

	struct node *t = P->root;
	for (int i = 0; i < k.n - 1; i++) {
		struct toml_value *c = table_find(t, k.parts[i]);
		if (!c) {
			if (check_depth(P, pos, t->depth + 1) < 0)
				goto out;
			struct node *child = node_new(TOML_TABLE, at, t->depth + 1);
			table_add(t, k.parts[i], child);
			k.parts[i] = NULL;
			t = child;
		} else if (c->type == TOML_TABLE && !(N(c)->flags & TF_INLINE)) {
			t = N(c);
		} else if (c->type == TOML_ARRAY && (N(c)->flags & TF_AOT)) {
			t = N(c->arr.items[c->arr.n - 1]);
		} else {
			perr(P, pos, "cannot define table '%s': '%s' is %s",
			     key_str(&k, k.n, name, sizeof(name)), k.parts[i] ? k.parts[i] : "",
			     c->type == TOML_TABLE   ? "an inline table"
			     : c->type == TOML_ARRAY ? "a static array"
						     : "not a table");
			goto out;
		}
	}
	const char *last = k.parts[k.n - 1];
	struct toml_value *c = table_find(t, last);
	if (check_depth(P, pos, t->depth + (aot ? 2 : 1)) < 0)
		goto out;
	if (!aot) {
		if (!c) {
			struct node *child = node_new(TOML_TABLE, at, t->depth + 1);
			child->flags = TF_EXPLICIT;
			table_add(t, k.parts[k.n - 1], child);
			k.parts[k.n - 1] = NULL;
			P->cur = child;
		} else if (c->type == TOML_TABLE && !N(c)->flags) {
			N(c)->flags = TF_EXPLICIT;
			c->line = at.line;
			c->col = at.col;
			P->cur = N(c);
		} else if (c->type == TOML_TABLE) {
			perr(P, pos, "table '%s' is already defined%s",
			     key_str(&k, k.n, name, sizeof(name)),
			     N(c)->flags & TF_INLINE	 ? " as an inline table"
			     : N(c)->flags & TF_EXPLICIT ? ""
							 : " by dotted keys");
			goto out;
		} else {
			perr(P, pos, "cannot define table '%s': the key already holds %s %s",
			     key_str(&k, k.n, name, sizeof(name)),
			     c->type == TOML_ARRAY || c->type == TOML_INTEGER ? "an" : "a",
			     c->type == TOML_ARRAY && (N(c)->flags & TF_AOT)
				 ? "array of tables"
				 : toml_type_name(c->type));
			goto out;
		}
	} else {
		struct node *arr;
		if (!c) {
			arr = node_new(TOML_ARRAY, at, t->depth + 1);
			arr->flags = TF_AOT;
			table_add(t, k.parts[k.n - 1], arr);
			k.parts[k.n - 1] = NULL;
		} else if (c->type == TOML_ARRAY && (N(c)->flags & TF_AOT)) {
			arr = N(c);
		} else {
			perr(P, pos, "cannot append to '%s': it is %s",
			     key_str(&k, k.n, name, sizeof(name)),
			     c->type == TOML_ARRAY   ? "a static array"
			     : c->type == TOML_TABLE ? "a table"
						     : "not an array of tables");
			goto out;
		}
		struct node *elem = node_new(TOML_TABLE, at, arr->depth + 1);
		elem->flags = TF_EXPLICIT;
		array_add(arr, elem);
		P->cur = elem;
	}
	r = 0;
out:
	key_clear(&k);
	return r;
}

int toml_parse(const char *text, size_t len, struct toml_value **ret, char *err, size_t errlen)
{
	struct parser P = {
	    .start = text,
	    .p = text,
	    .end = text + len,
	    .err = err,
	    .errlen = errlen,
	    .lc_pos = text,
	    .lc_line = 1,
	    .lc_col = 1,
	};
	if (err && errlen)
		err[0] = 0;
	if (len > TOML_MAX_LEN)
		return perr(&P, text, "document larger than %zu bytes", TOML_MAX_LEN);
	const char *bad = utf8_check(text, len);
	if (bad)
		return perr(&P, bad, "invalid UTF-8");

	P.root = node_new(TOML_TABLE, (struct lc){1, 1}, 0);
	P.cur = P.root;
	while (P.p < P.end) {
		skip_ws(&P);
		if (P.p >= P.end)
			break;
		char c = *P.p;
		int r = 0;
		if (c == '[')
			r = parse_header(&P);
		else if (c != '#' && c != '\n' && c != '\r')
			r = parse_keyval(&P);
		if (r < 0)
			goto fail;
		skip_ws(&P);
		if (skip_comment(&P) < 0)
			goto fail;
		if (P.p >= P.end)
			break;
		r = eat_newline(&P);
		if (r < 0)
			goto fail;
		if (r == 0) {
			if (is_ctrl(*P.p))
				perr(&P, P.p, "control character U+%04X", (unsigned char)*P.p);
			else
				perr(&P, P.p, "expected a newline or end of file");
			goto fail;
		}
	}
	*ret = &P.root->v;
	return 0;
fail:
	toml_free(&P.root->v);
	return -EINVAL;
}

const struct toml_value *toml_get(const struct toml_value *table, const char *key)
{
	if (!table || table->type != TOML_TABLE || !key)
		return NULL;
	return table_find((const struct node *)table, key);
}

const char *toml_get_string(const struct toml_value *table, const char *key)
{
	const struct toml_value *v = toml_get(table, key);
	return v && v->type == TOML_STRING ? v->s : NULL;
}

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_STRING:
		return "string";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_BOOL:
		return "boolean";
	case TOML_DATETIME:
		return "datetime";
	case TOML_ARRAY:
		return "array";
	case TOML_TABLE:
		return "table";
	}
	return "unknown";
}
