/* pep508: dependency specifiers and environment markers, as `packaging`
 * (23.x) parses and evaluates them.
 *
 * DESIGN: a recursive-descent parser that mirrors packaging's _parser.py
 * and the token regexes of its _tokenizer.py one for one, because the
 * grammar is defined by that code more than by PEP 508's prose:
 *   - tokens are matched at the current position only, with Python's \b
 *     (word = [A-Za-z0-9_], plus any non-ASCII byte, which approximates
 *     Python's Unicode letters) and "$" also matching before a final "\n";
 *   - a SPECIFIER token is the first match of packaging's unanchored
 *     specifier regex (spec_token), so "===" swallows commas and "==1.0a1.*"
 *     stops before ".*", exactly as packaging tokenizes;
 *   - quoted strings go through Python's literal_eval rules (escapes);
 *     values may therefore contain NUL and carry their length;
 *   - "name @ url" URLs are checked as packaging does with urllib.parse
 *     (url_valid), including the round trip required of file: URLs.
 *
 * Markers are an OR of AND-groups of atoms; an atom is a comparison or a
 * parenthesized marker.  Parentheses nest at most MAX_DEPTH deep, which
 * bounds the recursion of parse, eval and free.  Evaluation evaluates every
 * comparison like packaging (no short circuit), so an error anywhere is an
 * error.
 *
 * Deliberate differences from packaging 23.0 (both match later packaging
 * and PEP 508): a marker followed by other text is invalid, and a version
 * comparison whose left side is not a valid version falls back to Python's
 * string operators instead of raising.  Also missing: "\N{name}" escapes
 * (rejected) and NFKC checks of non-ASCII URL hosts (accepted). */
#include "resolver/pep508.h"
#include "resolver/pychars.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fetch/util/util.h"
#include "resolver/pep440.h"

#define MAX_DEPTH 100

enum mk_op { MK_LT, MK_LE, MK_EQ, MK_NE, MK_GE, MK_GT, MK_COMPAT, MK_ARB, MK_IN, MK_NOT_IN };

static const char *const mk_op_str[] = {
	[MK_LT] = "<",	[MK_LE] = "<=",	     [MK_EQ] = "==",   [MK_NE] = "!=",	 [MK_GE] = ">=",
	[MK_GT] = ">",	[MK_COMPAT] = "~=", [MK_ARB] = "===", [MK_IN] = "in", [MK_NOT_IN] = "not in",
};

struct mk_val {
	bool var; /* a variable (s is its canonical name) or a literal */
	char *s;  /* NUL-terminated, but literals may hold NULs: use len */
	size_t len;
};

struct mk_atom {
	struct pep508_marker *sub; /* parenthesized, or NULL for a comparison */
	struct mk_val lhs, rhs;
	enum mk_op op;
};

struct mk_group {
	size_t n;
	struct mk_atom *atoms;
};

struct pep508_marker {
	size_t n;
	struct mk_group *groups; /* OR of these */
};

/* ---- character classes ---- */

static bool is_word(unsigned char c)
{
	return is_alnum(c) || c == '_' || c >= 0x80;
}

static bool is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* ---- the tokenizer (packaging/_tokenizer.py DEFAULT_RULES) ---- */

struct parser {
	const char *s;
	size_t n, pos;
	int depth;
	char *err;
	size_t errlen;
	bool failed;
};

static bool boundary(const struct parser *p, size_t at)
{
	bool before = at > 0 && is_word(p->s[at - 1]);
	bool after = at < p->n && is_word(p->s[at]);

	return before != after;
}

__attribute__((format(printf, 3, 4))) static void perr(struct parser *p, size_t at,
							const char *fmt, ...)
{
	va_list ap;
	int l;

	if (p->failed)
		return;
	p->failed = true;
	if (!p->err || !p->errlen)
		return;
	l = snprintf(p->err, p->errlen, "column %zu: ", at + 1);
	if (l < 0 || (size_t)l >= p->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(p->err + l, p->errlen - (size_t)l, fmt, ap);
	va_end(ap);
}

static size_t tk_ws(const struct parser *p)
{
	size_t q = p->pos;

	while (q < p->n && (p->s[q] == ' ' || p->s[q] == '\t'))
		q++;
	return q - p->pos;
}

static void consume_ws(struct parser *p)
{
	p->pos += tk_ws(p);
}

static bool tk_end(const struct parser *p)
{
	return p->pos == p->n || (p->pos + 1 == p->n && p->s[p->pos] == '\n');
}

static bool tk_char(const struct parser *p, char c)
{
	return p->pos < p->n && p->s[p->pos] == c;
}

/* \bword\b */
static bool tk_word(const struct parser *p, const char *word)
{
	size_t l = strlen(word);

	return boundary(p, p->pos) && p->n - p->pos >= l && !memcmp(p->s + p->pos, word, l) &&
	       boundary(p, p->pos + l);
}

/* VARIABLE: returns the token length and the canonical name. */
static size_t tk_variable(const struct parser *p, const char **ret_name)
{
	static const struct {
		const char *tok, *name; /* '?' in tok: '.' or '_' */
	} vars[] = {
		{"python_version", "python_version"},
		{"python_full_version", "python_full_version"},
		{"os?name", "os_name"},
		{"sys?platform", "sys_platform"},
		{"platform_release", "platform_release"},
		{"platform_system", "platform_system"},
		{"platform?version", "platform_version"},
		{"platform?machine", "platform_machine"},
		{"platform?python_implementation", "platform_python_implementation"},
		{"python_implementation", "platform_python_implementation"},
		{"implementation_name", "implementation_name"},
		{"implementation_version", "implementation_version"},
		{"extra", "extra"},
	};

	if (!boundary(p, p->pos))
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++) {
		const char *t = vars[i].tok;
		size_t l = strlen(t), k;

		if (p->n - p->pos < l)
			continue;
		for (k = 0; k < l; k++) {
			char c = p->s[p->pos + k];

			if (t[k] == '?' ? (c != '.' && c != '_') : c != t[k])
				break;
		}
		if (k == l && boundary(p, p->pos + l)) {
			*ret_name = vars[i].name;
			return l;
		}
	}
	return 0;
}

static size_t tk_quoted(const struct parser *p)
{
	const char *e;
	char q;

	if (p->pos >= p->n || (p->s[p->pos] != '\'' && p->s[p->pos] != '"'))
		return 0;
	q = p->s[p->pos];
	e = memchr(p->s + p->pos + 1, q, p->n - p->pos - 1);
	return e ? (size_t)(e - (p->s + p->pos)) + 1 : 0;
}

static size_t tk_op(const struct parser *p, enum mk_op *ret)
{
	static const enum mk_op order[] = {MK_ARB, MK_EQ, MK_COMPAT, MK_NE,
					   MK_LE,  MK_GE, MK_LT,     MK_GT};

	for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
		size_t l = strlen(mk_op_str[order[i]]);

		if (p->n - p->pos >= l && !memcmp(p->s + p->pos, mk_op_str[order[i]], l)) {
			*ret = order[i];
			return l;
		}
	}
	return 0;
}

/* IDENTIFIER: \b[a-zA-Z0-9][a-zA-Z0-9._-]*\b, the regex backing off from
 * a trailing '.' or '-' until the final \b holds. */
static size_t tk_identifier(const struct parser *p)
{
	size_t e = p->pos;

	if (e >= p->n || !is_alnum(p->s[e]) || !boundary(p, e))
		return 0;
	while (e < p->n && (is_alnum(p->s[e]) || is_sep(p->s[e])))
		e++;
	for (; e > p->pos; e--)
		if (boundary(p, e))
			return e - p->pos;
	return 0;
}

static size_t tk_url(const struct parser *p)
{
	size_t q = p->pos;

	while (q < p->n && p->s[q] != ' ' && p->s[q] != '\t')
		q++;
	return q - p->pos;
}

/* ---- SPECIFIER: first match of packaging's unanchored specifier regex ---- */

#define NOMATCH ((size_t)-1)

enum spec_kind { SK_EQ, SK_COMPAT, SK_OTHER };

/* The optional "[-_.]?(word)[-_.]?[0-9]*" parts: the first word that
 * matches wins, since nothing after them can fail. */
static size_t spec_letter(const char *s, size_t n, size_t q, const char *const *words,
			  size_t nwords)
{
	for (int sep = 1; sep >= 0; sep--) {
		size_t r = q;

		if (sep) {
			if (r >= n || !is_sep(s[r]))
				continue;
			r++;
		}
		for (size_t w = 0; w < nwords; w++) {
			if (!match_ci(s, n, r, words[w]))
				continue;
			r += strlen(words[w]);
			if (r < n && is_sep(s[r]))
				r++;
			return r + count_digits(s, n, r);
		}
	}
	return q;
}

static size_t spec_rest(const char *s, size_t n, size_t q, enum spec_kind kind)
{
	static const char *const pre[] = {"alpha", "beta", "preview", "pre", "a", "b", "c", "rc"};
	static const char *const post[] = {"post", "rev", "r"};
	static const char *const dev[] = {"dev"};
	size_t d = count_digits(s, n, q), groups = 0;

	if (!d)
		return NOMATCH;
	q += d;
	while (q + 1 < n && s[q] == '.' && is_digit(s[q + 1])) {
		q += 1 + count_digits(s, n, q + 1);
		groups++;
	}
	if (kind == SK_COMPAT && !groups)
		return NOMATCH;
	if (kind == SK_EQ && q + 1 < n && s[q] == '.' && s[q + 1] == '*')
		return q + 2;
	q = spec_letter(s, n, q, pre, ARRAY_SIZE(pre));
	if (q + 1 < n && s[q] == '-' && is_digit(s[q + 1]))
		q += 1 + count_digits(s, n, q + 1);
	else
		q = spec_letter(s, n, q, post, ARRAY_SIZE(post));
	q = spec_letter(s, n, q, dev, ARRAY_SIZE(dev));
	if (kind == SK_EQ && q + 1 < n && s[q] == '+' && is_alnum(s[q + 1])) {
		q++;
		while (q < n && is_alnum(s[q]))
			q++;
		while (q + 1 < n && is_sep(s[q]) && is_alnum(s[q + 1])) {
			q++;
			while (q < n && is_alnum(s[q]))
				q++;
		}
	}
	return q;
}

static size_t spec_version(const char *s, size_t n, size_t q, enum spec_kind kind)
{
	size_t d, r;

	while (q < n && py_space(s[q]))
		q++;
	if (q < n && (s[q] == 'v' || s[q] == 'V'))
		q++;
	/* (?:[0-9]+!)? is retried without the epoch if the rest fails */
	d = count_digits(s, n, q);
	if (d && q + d < n && s[q + d] == '!' && (r = spec_rest(s, n, q + d + 1, kind)) != NOMATCH)
		return r;
	return spec_rest(s, n, q, kind);
}

static bool behind(const char *s, size_t q, const char *what)
{
	size_t l = strlen(what);

	return q >= l && !memcmp(s + q - l, what, l);
}

static size_t spec_token(const char *s, size_t n, size_t p)
{
	static const char *const ops[] = {"~=", "==", "!=", "<=", ">=", "<", ">", "==="};

	for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
		size_t l = strlen(ops[i]), q = p + l, e = NOMATCH;

		if (n - p < l || memcmp(s + p, ops[i], l))
			continue;
		/* the version alternatives are chosen by lookbehind */
		if (behind(s, q, "===")) {
			e = q;
			while (e < n && py_space(s[e]))
				e++;
			while (e < n && !py_space(s[e]) && s[e] != ';' && s[e] != ')')
				e++;
		} else if (behind(s, q, "==") || behind(s, q, "!=")) {
			e = spec_version(s, n, q, SK_EQ);
		} else if (behind(s, q, "~=")) {
			e = spec_version(s, n, q, SK_COMPAT);
		} else {
			e = spec_version(s, n, q, SK_OTHER);
		}
		if (e != NOMATCH)
			return e - p;
	}
	return 0;
}

/* ---- quoted strings: ast.literal_eval of a Python str literal ---- */

static void put_utf8(struct buf *b, uint32_t c)
{
	uint8_t u[4];
	size_t n;

	/* lone surrogates are encoded like any other code point (WTF-8),
	 * which keeps the byte order equal to Python's code point order */
	if (c < 0x80) {
		u[0] = (uint8_t)c;
		n = 1;
	} else if (c < 0x800) {
		u[0] = (uint8_t)(0xc0 | c >> 6);
		u[1] = (uint8_t)(0x80 | (c & 0x3f));
		n = 2;
	} else if (c < 0x10000) {
		u[0] = (uint8_t)(0xe0 | c >> 12);
		u[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
		u[2] = (uint8_t)(0x80 | (c & 0x3f));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xf0 | c >> 18);
		u[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3f));
		u[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
		u[3] = (uint8_t)(0x80 | (c & 0x3f));
		n = 4;
	}
	buf_append(b, u, n);
}

/* Decodes the literal at s (quotes included); 0 or a negative errno with
 * the offending offset in *ret_at. */
static int unquote(const char *s, size_t n, struct mk_val *ret, size_t *ret_at)
{
	struct buf b;
	size_t i = 1, end = n - 1;

	buf_init(&b);
	buf_puts(&b, "");
	while (i < end) {
		unsigned char c = s[i];
		uint32_t cp = 0;
		size_t k, want;

		if (c == '\n' || c == '\r')
			goto bad; /* unterminated string literal */
		if (c != '\\') {
			buf_append(&b, &c, 1);
			i++;
			continue;
		}
		if (i + 1 >= end)
			goto bad; /* the backslash escapes the closing quote */
		c = s[++i];
		i++;
		switch (c) {
		case '\n':
			break;
		case '\r':
			if (i < end && s[i] == '\n')
				i++;
			break;
		case '\\':
		case '\'':
		case '"':
			buf_append(&b, &c, 1);
			break;
		case 'a':
			put_utf8(&b, 7);
			break;
		case 'b':
			put_utf8(&b, 8);
			break;
		case 'f':
			put_utf8(&b, 12);
			break;
		case 'n':
			put_utf8(&b, 10);
			break;
		case 'r':
			put_utf8(&b, 13);
			break;
		case 't':
			put_utf8(&b, 9);
			break;
		case 'v':
			put_utf8(&b, 11);
			break;
		case '0' ... '7':
			cp = c - '0';
			for (k = 0; k < 2 && i < end && s[i] >= '0' && s[i] <= '7'; k++)
				cp = cp * 8 + (uint32_t)(s[i++] - '0');
			put_utf8(&b, cp);
			break;
		case 'x':
		case 'u':
		case 'U':
			want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
			for (k = 0; k < want; k++) {
				unsigned char h = i < end ? (unsigned char)s[i] : 0;

				if (!is_hex(h))
					goto bad;
				cp = cp * 16 + (uint32_t)(is_digit(h) ? h - '0' : to_lower(h) - 'a' + 10);
				i++;
			}
			if (cp > 0x10ffff)
				goto bad;
			put_utf8(&b, cp);
			break;
		case 'N':
			goto bad; /* \N{name}: no Unicode name table here */
		default:
			/* unknown escapes stay as written (Python only warns) */
			buf_append(&b, "\\", 1);
			i--;
			break;
		}
	}
	ret->var = false;
	ret->s = (char *)buf_steal(&b, &ret->len);
	return 0;
bad:
	*ret_at = i;
	buf_free(&b);
	return -EINVAL;
}

/* ---- markers ---- */

static void marker_free(struct pep508_marker *m);

static void atom_done(struct mk_atom *a)
{
	marker_free(a->sub);
	free(a->lhs.s);
	free(a->rhs.s);
}

static void marker_free(struct pep508_marker *m)
{
	if (!m)
		return;
	for (size_t g = 0; g < m->n; g++) {
		for (size_t i = 0; i < m->groups[g].n; i++)
			atom_done(&m->groups[g].atoms[i]);
		free(m->groups[g].atoms);
	}
	free(m->groups);
	free(m);
}

void pep508_marker_free(struct pep508_marker *m)
{
	marker_free(m);
}

static int parse_var(struct parser *p, struct mk_val *ret)
{
	const char *name;
	size_t l = tk_variable(p, &name), at;

	if (l) {
		ret->var = true;
		ret->s = xstrdup(name);
		ret->len = strlen(name);
		p->pos += l;
		return 0;
	}
	l = tk_quoted(p);
	if (l) {
		if (unquote(p->s + p->pos, l, ret, &at) < 0) {
			perr(p, p->pos + at, "invalid string literal");
			return -EINVAL;
		}
		p->pos += l;
		return 0;
	}
	perr(p, p->pos, "expected a marker variable or quoted string");
	return -EINVAL;
}

static int parse_op(struct parser *p, enum mk_op *ret)
{
	size_t l;

	if (tk_word(p, "in")) {
		p->pos += 2;
		*ret = MK_IN;
		return 0;
	}
	if (tk_word(p, "not")) {
		p->pos += 3;
		l = tk_ws(p);
		if (!l) {
			perr(p, p->pos, "expected whitespace after 'not'");
			return -EINVAL;
		}
		p->pos += l;
		if (!tk_word(p, "in")) {
			perr(p, p->pos, "expected 'in' after 'not'");
			return -EINVAL;
		}
		p->pos += 2;
		*ret = MK_NOT_IN;
		return 0;
	}
	l = tk_op(p, ret);
	if (!l) {
		perr(p, p->pos,
		     "expected marker operator, one of <=, <, !=, ==, >=, >, ~=, ===, in, not in");
		return -EINVAL;
	}
	p->pos += l;
	return 0;
}

static struct pep508_marker *parse_marker(struct parser *p);

static int parse_atom(struct parser *p, struct mk_atom *a)
{
	memset(a, 0, sizeof(*a));
	consume_ws(p);
	if (tk_char(p, '(')) {
		size_t open = p->pos;

		if (p->depth >= MAX_DEPTH) {
			perr(p, open, "markers nested too deeply");
			return -EINVAL;
		}
		p->pos++;
		p->depth++;
		consume_ws(p);
		a->sub = parse_marker(p);
		p->depth--;
		if (!a->sub)
			return -EINVAL;
		consume_ws(p);
		if (!tk_char(p, ')')) {
			perr(p, p->pos, "expected closing parenthesis (opened at column %zu)",
			     open + 1);
			return -EINVAL;
		}
		p->pos++;
	} else {
		if (parse_var(p, &a->lhs) < 0)
			return -EINVAL;
		consume_ws(p);
		if (parse_op(p, &a->op) < 0)
			return -EINVAL;
		consume_ws(p);
		if (parse_var(p, &a->rhs) < 0)
			return -EINVAL;
	}
	consume_ws(p);
	return 0;
}

static void group_add(struct mk_group *g, const struct mk_atom *a)
{
	g->atoms = xrealloc(g->atoms, (g->n + 1) * sizeof(*g->atoms));
	g->atoms[g->n++] = *a;
}

/* marker = marker_atom (BOOLOP marker_atom)*; "and" binds tighter. */
static struct pep508_marker *parse_marker(struct parser *p)
{
	struct pep508_marker *m = xcalloc(1, sizeof(*m));
	struct mk_atom a;

	m->groups = xcalloc(1, sizeof(*m->groups));
	m->n = 1;
	for (;;) {
		if (parse_atom(p, &a) < 0) {
			atom_done(&a);
			marker_free(m);
			return NULL;
		}
		group_add(&m->groups[m->n - 1], &a);
		if (tk_word(p, "and")) {
			p->pos += 3;
		} else if (tk_word(p, "or")) {
			p->pos += 2;
			m->groups = xrealloc(m->groups, (m->n + 1) * sizeof(*m->groups));
			m->groups[m->n++] = (struct mk_group){0};
		} else {
			return m;
		}
	}
}

static char *canon_name(const char *s, size_t n, size_t *ret_len);

/* packaging's _normalize_extra_values, which only looks at the first
 * comparison of the top level: against the variable "extra", the other
 * side becomes a literal with a normalized name.  That matters for
 * `os_name == extra`, which then compares "os-name" with the extra. */
static void normalize_extra_first(struct pep508_marker *m)
{
	struct mk_atom *a = &m->groups[0].atoms[0];
	struct mk_val *other;
	char *c;

	if (a->sub)
		return;
	if (a->lhs.var && !strcmp(a->lhs.s, "extra"))
		other = &a->rhs;
	else if (a->rhs.var && !strcmp(a->rhs.s, "extra"))
		other = &a->lhs;
	else
		return;
	c = canon_name(other->s, other->len, &other->len);
	free(other->s);
	other->s = c;
	other->var = false;
}

struct pep508_marker *pep508_marker_parse(const char *s, char *err, size_t errlen)
{
	struct parser p = {.s = s, .n = strlen(s), .err = err, .errlen = errlen};
	struct pep508_marker *m = parse_marker(&p);

	if (m && !tk_end(&p)) {
		perr(&p, p.pos, "expected end of marker expression");
		marker_free(m);
		return NULL;
	}
	if (m)
		normalize_extra_first(m);
	return m;
}

/* ---- marker evaluation ---- */

/* packaging.utils.canonicalize_name: runs of -_. become '-', lowercase. */
static char *canon_name(const char *s, size_t n, size_t *ret_len)
{
	char *o = xmalloc(n + 1);
	size_t k = 0;

	for (size_t i = 0; i < n;) {
		if (is_sep(s[i])) {
			while (i < n && is_sep(s[i]))
				i++;
			o[k++] = '-';
		} else {
			o[k++] = (char)to_lower(s[i++]);
		}
	}
	o[k] = 0;
	*ret_len = k;
	return o;
}

static int str_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, MIN(al, bl));

	if (c)
		return c;
	return (al > bl) - (al < bl);
}

/* Python's str operators, the fallback of _eval_op. */
static int string_op(const char *l, size_t ll, enum mk_op op, const char *r, size_t rl)
{
	switch (op) {
	case MK_IN:
		return memmem(r, rl, l, ll) != NULL;
	case MK_NOT_IN:
		return memmem(r, rl, l, ll) == NULL;
	case MK_LT:
		return str_cmp(l, ll, r, rl) < 0;
	case MK_LE:
		return str_cmp(l, ll, r, rl) <= 0;
	case MK_EQ:
		return str_cmp(l, ll, r, rl) == 0;
	case MK_NE:
		return str_cmp(l, ll, r, rl) != 0;
	case MK_GE:
		return str_cmp(l, ll, r, rl) >= 0;
	case MK_GT:
		return str_cmp(l, ll, r, rl) > 0;
	default:
		return -EINVAL; /* UndefinedComparison: ~= and === need versions */
	}
}

static struct pep440_version *as_version(const char *s, size_t n)
{
	return memchr(s, 0, n) ? NULL : pep440_parse(s);
}

/* Specifier(op + rhs).contains(lhs, prereleases=True) when both make
 * sense as versions, else the string operator. */
static int eval_op(const char *l, size_t ll, enum mk_op op, const char *r, size_t rl)
{
	struct pep440_version *v;
	int res;

	if (op == MK_ARB) {
		/* "===" takes any [^\s;)]* as its version, commas included,
		 * so it cannot go through pep440_spec_parse's comma split */
		size_t a = 0, b = rl;
		char *vs;

		while (a < b && py_space(r[a]))
			a++;
		while (b > a && py_space(r[b - 1]))
			b--;
		for (size_t i = a; i < b; i++)
			if (py_space(r[i]) || r[i] == ';' || r[i] == ')')
				return -EINVAL;
		v = as_version(l, ll);
		if (!v)
			return -EINVAL;
		vs = pep440_str(v);
		res = strlen(vs) == b - a;
		for (size_t i = 0; res && i < b - a; i++)
			res = to_lower(vs[i]) == to_lower(r[a + i]);
		free(vs);
		pep440_free(v);
		return res;
	}
	if (op != MK_IN && op != MK_NOT_IN && !memchr(r, ',', rl) && !memchr(r, 0, rl)) {
		char *spec_s = xasprintf("%s%s", mk_op_str[op], r);
		struct pep440_spec *spec = pep440_spec_parse(spec_s, NULL, 0);

		free(spec_s);
		if (spec) {
			v = as_version(l, ll);
			res = v ? pep440_spec_contains(spec, v, true) : -1;
			pep440_spec_free(spec);
			pep440_free(v);
			if (res >= 0)
				return res;
		}
	}
	return string_op(l, ll, op, r, rl);
}

static const char *env_get(pep508_env_fn env, void *ud, const char *key)
{
	const char *v = env(ud, key);

	/* Marker.evaluate() always defines "extra", as "" by default */
	if (!v && !strcmp(key, "extra"))
		v = "";
	return v;
}

static int eval_atom(const struct mk_atom *a, pep508_env_fn env, void *ud);

static int eval_marker(const struct pep508_marker *m, pep508_env_fn env, void *ud)
{
	bool any = false;
	int err = 0;

	for (size_t g = 0; g < m->n; g++) {
		bool all = true;

		for (size_t i = 0; i < m->groups[g].n; i++) {
			int r = eval_atom(&m->groups[g].atoms[i], env, ud);

			if (r < 0)
				err = r;
			else if (!r)
				all = false;
		}
		any = any || all;
	}
	return err ? err : any;
}

/* packaging's _evaluate_markers: the environment key is the left variable,
 * or else whatever the right side names (even a quoted string), and the
 * other side is used as written, a variable's name included. */
static int eval_atom(const struct mk_atom *a, pep508_env_fn env, void *ud)
{
	const char *key, *l, *r;
	size_t ll, rl;
	char *cl = NULL, *cr = NULL;
	int res;

	if (a->sub)
		return eval_marker(a->sub, env, ud);
	if (a->lhs.var) {
		key = a->lhs.s;
		l = env_get(env, ud, key);
		r = a->rhs.s;
		rl = a->rhs.len;
		if (!l)
			return -EINVAL;
		ll = strlen(l);
	} else {
		key = a->rhs.s;
		if (memchr(key, 0, a->rhs.len))
			return -EINVAL;
		r = env_get(env, ud, key);
		l = a->lhs.s;
		ll = a->lhs.len;
		if (!r)
			return -EINVAL;
		rl = strlen(r);
	}
	if (!strcmp(key, "extra")) { /* PEP 685: extras compare normalized */
		l = cl = canon_name(l, ll, &ll);
		r = cr = canon_name(r, rl, &rl);
	}
	res = eval_op(l, ll, a->op, r, rl);
	free(cl);
	free(cr);
	return res;
}

int pep508_marker_eval(const struct pep508_marker *m, pep508_env_fn env, void *ud)
{
	return eval_marker(m, env, ud);
}

/* ---- URLs: what packaging's Requirement accepts (urllib.parse) ---- */

/* ipaddress.IPv4Address: four decimal octets, no leading zeros. */
static bool ipv4_ok(const char *s, size_t n)
{
	size_t parts = 0, i = 0;

	for (;;) {
		size_t d = count_digits(s, n, i);
		unsigned val = 0;

		if (!d || d > 3 || (d > 1 && s[i] == '0'))
			return false;
		for (size_t k = 0; k < d; k++)
			val = val * 10 + (unsigned)(s[i + k] - '0');
		if (val > 255)
			return false;
		i += d;
		parts++;
		if (i == n)
			break;
		if (s[i] != '.')
			return false;
		i++;
	}
	return parts == 4;
}

/* ipaddress.IPv6Address, scope id included. */
static bool ipv6_ok(const char *s, size_t n)
{
	const char *pct = memchr(s, '%', n);
	size_t np = 0, k, skip = (size_t)-1, hi, lo;
	struct sspan {
		const char *p;
		size_t n;
	} parts[10];

	if (memchr(s, '/', n))
		return false;
	if (pct) {
		size_t sl = n - (size_t)(pct - s) - 1;

		if (!sl || memchr(pct + 1, '%', sl))
			return false;
		n = (size_t)(pct - s);
	}
	if (!n)
		return false;
	for (size_t i = 0, st = 0;; i++) {
		if (i == n || s[i] == ':') {
			if (np == ARRAY_SIZE(parts))
				return false;
			parts[np++] = (struct sspan){s + st, i - st};
			st = i + 1;
			if (i == n)
				break;
		}
	}
	if (np < 3)
		return false;
	if (memchr(parts[np - 1].p, '.', parts[np - 1].n)) {
		if (!ipv4_ok(parts[np - 1].p, parts[np - 1].n))
			return false;
		/* the IPv4 tail counts as two hextets */
		parts[np - 1] = (struct sspan){"0", 1};
		if (np == ARRAY_SIZE(parts))
			return false;
		parts[np++] = (struct sspan){"0", 1};
	}
	if (np > 9)
		return false;
	for (k = 1; k + 1 < np; k++) {
		if (!parts[k].n) {
			if (skip != (size_t)-1)
				return false;
			skip = k;
		}
	}
	if (skip != (size_t)-1) {
		hi = skip;
		lo = np - skip - 1;
		if (!parts[0].n && --hi)
			return false;
		if (!parts[np - 1].n && --lo)
			return false;
		if (hi + lo > 7)
			return false;
	} else {
		if (np != 8 || !parts[0].n || !parts[np - 1].n)
			return false;
		hi = np;
		lo = 0;
	}
	for (k = 0; k < np; k++) {
		if (k >= hi && k < np - lo)
			continue;
		if (!parts[k].n || parts[k].n > 4)
			return false;
		for (size_t i = 0; i < parts[k].n; i++)
			if (!is_hex(parts[k].p[i]))
				return false;
	}
	return true;
}

/* urllib.parse._check_bracketed_netloc */
static bool bracketed_netloc_ok(const char *nl, size_t n)
{
	const char *at = NULL, *h, *ob, *cb;
	size_t hl;

	for (size_t i = 0; i < n; i++)
		if (nl[i] == '@')
			at = nl + i;
	h = at ? at + 1 : nl;
	hl = n - (size_t)(h - nl);
	ob = memchr(h, '[', hl);
	if (ob) {
		if (ob != h)
			return false;
		cb = memchr(ob + 1, ']', hl - 1);
		if (cb) {
			size_t rest = hl - (size_t)(cb + 1 - h);

			if (rest && cb[1] != ':')
				return false;
			hl = (size_t)(cb - (ob + 1));
		} else {
			hl -= 1;
		}
		h = ob + 1;
	} else {
		const char *colon = memchr(h, ':', hl);

		if (colon)
			hl = (size_t)(colon - h);
	}
	if (hl && h[0] == 'v') { /* \Av[a-fA-F0-9]+\..+\Z */
		size_t i = 1;

		while (i < hl && is_hex(h[i]))
			i++;
		return i > 1 && i < hl && h[i] == '.' && i + 1 < hl;
	}
	return ipv6_ok(h, hl);
}

/* Requirement.__init__'s URL check: urlparse() must not raise; file: URLs
 * must survive urlunparse(urlparse(url)) unchanged, others need a scheme
 * and a host. */
static bool url_valid(const char *url)
{
	struct buf b, rt;
	const char *u, *colon, *netloc = "", *path, *q, *hash;
	size_t ul, schl = 0, nl = 0, pl, ql = 0, fl = 0;
	char scheme[64] = "";
	bool ok = true, has_q, has_f;

	/* lstrip C0 controls and space, then drop tab/CR/LF everywhere */
	u = url;
	while (*u && (unsigned char)*u <= ' ')
		u++;
	buf_init(&b);
	buf_puts(&b, "");
	for (; *u; u++)
		if (*u != '\t' && *u != '\r' && *u != '\n')
			buf_append(&b, u, 1);
	u = (const char *)b.data;
	ul = b.len;

	colon = memchr(u, ':', ul);
	if (colon && colon > u && is_alpha(u[0])) {
		size_t i;

		for (i = 0; u + i < colon; i++)
			if (!is_alnum(u[i]) && u[i] != '+' && u[i] != '-' && u[i] != '.')
				break;
		if (u + i == colon) {
			schl = i;
			for (i = 0; i < schl && i + 1 < sizeof(scheme); i++)
				scheme[i] = (char)to_lower(u[i]);
			scheme[i] = 0;
			if (schl >= sizeof(scheme)) /* longer than any known scheme */
				scheme[0] = '~';
			u += schl + 1;
			ul -= schl + 1;
		}
	}
	if (ul >= 2 && u[0] == '/' && u[1] == '/') {
		size_t e = 2;
		bool ob, cbr;

		while (e < ul && u[e] != '/' && u[e] != '?' && u[e] != '#')
			e++;
		netloc = u + 2;
		nl = e - 2;
		ob = memchr(netloc, '[', nl) != NULL;
		cbr = memchr(netloc, ']', nl) != NULL;
		if (ob != cbr || (ob && !bracketed_netloc_ok(netloc, nl)))
			ok = false;
		u += e;
		ul -= e;
	}
	path = u;
	hash = memchr(u, '#', ul);
	has_f = hash != NULL;
	pl = has_f ? (size_t)(hash - u) : ul;
	if (has_f)
		fl = ul - pl - 1;
	q = memchr(path, '?', pl);
	has_q = q != NULL;
	if (has_q) {
		ql = pl - (size_t)(q - path) - 1;
		pl = (size_t)(q - path);
	}

	if (!ok) {
		/* ValueError from urlsplit */
	} else if (!strcmp(scheme, "file")) {
		buf_init(&rt);
		buf_puts(&rt, scheme);
		buf_puts(&rt, ":");
		/* urlunsplit; "file" is in uses_netloc */
		if (nl || !(pl >= 2 && path[0] == '/' && path[1] == '/')) {
			buf_puts(&rt, "//");
			buf_append(&rt, netloc, nl);
			if (pl && path[0] != '/')
				buf_puts(&rt, "/");
		}
		buf_append(&rt, path, pl);
		if (has_q && ql) {
			buf_puts(&rt, "?");
			buf_append(&rt, q + 1, ql);
		}
		if (has_f && fl) {
			buf_puts(&rt, "#");
			buf_append(&rt, hash + 1, fl);
		}
		ok = strcmp((const char *)rt.data, url) == 0;
		buf_free(&rt);
	} else {
		ok = schl && nl;
	}
	buf_free(&b);
	return ok;
}

/* ---- requirements ---- */

static char *parse_specifier(struct parser *p)
{
	struct buf b;
	size_t open = p->pos, l;
	bool paren = tk_char(p, '(');

	if (paren)
		p->pos++;
	consume_ws(p);
	buf_init(&b);
	buf_puts(&b, "");
	while ((l = spec_token(p->s, p->n, p->pos))) {
		buf_append(&b, p->s + p->pos, l);
		p->pos += l;
		consume_ws(p);
		if (!tk_char(p, ','))
			break;
		buf_append(&b, ",", 1);
		p->pos++;
		consume_ws(p);
	}
	consume_ws(p);
	if (paren) {
		if (!tk_char(p, ')')) {
			perr(p, p->pos, "expected closing parenthesis (opened at column %zu)",
			     open + 1);
			buf_free(&b);
			return NULL;
		}
		p->pos++;
	}
	return (char *)buf_steal(&b, NULL);
}

static struct pep508_marker *parse_req_marker(struct parser *p, const char *after)
{
	struct pep508_marker *m;

	if (!tk_char(p, ';')) {
		perr(p, p->pos, "expected end or semicolon (after %s)", after);
		return NULL;
	}
	p->pos++;
	m = parse_marker(p);
	if (m) {
		normalize_extra_first(m);
		consume_ws(p);
	}
	return m;
}

static void extras_add(struct pep508_req *r, const char *s, size_t n)
{
	for (size_t i = 0; i < r->nextras; i++)
		if (strlen(r->extras[i]) == n && !memcmp(r->extras[i], s, n))
			return; /* packaging keeps a set */
	r->extras = xrealloc(r->extras, (r->nextras + 1) * sizeof(*r->extras));
	r->extras[r->nextras++] = xstrndup(s, n);
}

static int parse_extras(struct parser *p, struct pep508_req *r)
{
	size_t open = p->pos, l;

	if (!tk_char(p, '['))
		return 0;
	p->pos++;
	consume_ws(p);
	if ((l = tk_identifier(p))) {
		extras_add(r, p->s + p->pos, l);
		p->pos += l;
		for (;;) {
			consume_ws(p);
			if (tk_identifier(p)) {
				perr(p, p->pos, "expected comma between extra names");
				return -EINVAL;
			}
			if (!tk_char(p, ','))
				break;
			p->pos++;
			consume_ws(p);
			l = tk_identifier(p);
			if (!l) {
				perr(p, p->pos, "expected extra name after comma");
				return -EINVAL;
			}
			extras_add(r, p->s + p->pos, l);
			p->pos += l;
		}
	}
	consume_ws(p);
	if (!tk_char(p, ']')) {
		perr(p, p->pos, "expected closing bracket (opened at column %zu)", open + 1);
		return -EINVAL;
	}
	p->pos++;
	return 0;
}

int pep508_req_parse(const char *s, struct pep508_req *ret, char *err, size_t errlen)
{
	struct parser p = {.s = s, .n = strlen(s), .err = err, .errlen = errlen};
	struct pep508_req r = {0};
	struct pep440_spec *spec;
	size_t l, url_at = 0;

	consume_ws(&p);
	l = tk_identifier(&p);
	if (!l) {
		perr(&p, p.pos, "expected package name at the start of dependency specifier");
		goto fail;
	}
	r.name = xstrndup(s + p.pos, l);
	p.pos += l;
	consume_ws(&p);
	if (parse_extras(&p, &r) < 0)
		goto fail;
	consume_ws(&p);

	if (tk_char(&p, '@')) {
		p.pos++;
		consume_ws(&p);
		url_at = p.pos;
		l = tk_url(&p);
		if (!l) {
			perr(&p, p.pos, "expected URL after @");
			goto fail;
		}
		r.url = xstrndup(s + p.pos, l);
		p.pos += l;
		r.specifier = xstrdup("");
		if (!tk_end(&p)) {
			/* the URL ran up to a space or tab */
			consume_ws(&p);
			if (!tk_end(&p) && !(r.marker = parse_req_marker(&p, "URL and whitespace")))
				goto fail;
		}
	} else {
		r.specifier = parse_specifier(&p);
		if (!r.specifier)
			goto fail;
		consume_ws(&p);
		if (!tk_end(&p) &&
		    !(r.marker = parse_req_marker(&p, r.specifier[0] ? "version specifier"
								     : "name and no valid version specifier")))
			goto fail;
	}
	if (!tk_end(&p)) {
		perr(&p, p.pos, "expected end of dependency specifier");
		goto fail;
	}
	if (r.url && !url_valid(r.url)) {
		perr(&p, url_at, "invalid URL '%s'", r.url);
		goto fail;
	}
	spec = pep440_spec_parse(r.specifier, NULL, 0);
	if (!spec) {
		perr(&p, 0, "invalid version specifier '%s'", r.specifier);
		goto fail;
	}
	pep440_spec_free(spec);
	*ret = r;
	return 0;
fail:
	pep508_req_free(&r);
	return -EINVAL;
}

void pep508_req_free(struct pep508_req *r)
{
	if (!r)
		return;
	free(r->name);
	for (size_t i = 0; i < r->nextras; i++)
		free(r->extras[i]);
	free(r->extras);
	free(r->specifier);
	free(r->url);
	marker_free(r->marker);
	memset(r, 0, sizeof(*r));
}
