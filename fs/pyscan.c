/* pyscan: import statements of a Python source (see pyscan.h).
 *
 * One pass over the bytes.  A logical line starts at a physical line that
 * is not inside brackets nor continued by a backslash; its indent decides
 * which blocks it is in (a stack of headers, each with the indent of its
 * header line and whether its body runs at import).  Its statements (split
 * at `;` outside brackets) are cut into a few token kinds — names, dots,
 * commas, parentheses, stars, colons and "other"; strings and comments are
 * skipped — and the import forms are parsed from those tokens.  Python's
 * own tokenizer is stricter; what this one accepts beyond it only makes
 * names that resolve to nothing. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/pyscan.h"

#define TOK_MAX 4096	 /* tokens kept per statement (the rest is not parsed) */
#define NAME_LEN_MAX 255 /* longer dotted names are skipped */
#define DEPTH_MAX 64	 /* blocks tracked; deeper headers replace the innermost */

enum kind { T_NAME, T_DOT, T_COMMA, T_LPAR, T_RPAR, T_STAR, T_COLON, T_OTHER };

struct token {
	const char *p;
	uint32_t len;
	uint8_t kind;
	bool nested; /* inside brackets */
};

struct block {
	size_t indent; /* of the header line; its body is indented more */
	bool live;     /* the body runs at import (its enclosing blocks' too) */
};

struct scan {
	const char *s;
	size_t n, i;
	enum pyscan_mode mode;
	pyscan_fn fn;
	void *ud;
	size_t found;
	struct token *toks;
	size_t ntok;
	struct block stack[DEPTH_MAX];
	size_t depth;
};

static bool ident_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c >= 0x80;
}

static bool tok_is(const struct token *t, const char *word)
{
	size_t l = strlen(word);
	return t->kind == T_NAME && t->len == l && memcmp(t->p, word, l) == 0;
}

/* s->i at a quote: moves past the string (an unterminated one-line string
 * ends before its newline, a triple-quoted one at the end of the input). */
static void skip_string(struct scan *sc)
{
	const char *s = sc->s;
	size_t n = sc->n, i = sc->i;
	char q = s[i];
	if (i + 2 < n && s[i + 1] == q && s[i + 2] == q) {
		for (i += 3; i < n;) {
			if (s[i] == '\\')
				i += 2;
			else if (s[i] == q && i + 2 < n && s[i + 1] == q && s[i + 2] == q) {
				i += 3;
				break;
			} else
				i++;
		}
	} else {
		for (i++; i < n;) {
			if (s[i] == '\\')
				i += 2;
			else if (s[i] == q) {
				i++;
				break;
			} else if (s[i] == '\n' || s[i] == '\r')
				break;
			else
				i++;
		}
	}
	sc->i = i < n ? i : n;
}

static void add(struct scan *sc, enum kind k, const char *p, size_t len, int par)
{
	if (sc->ntok < TOK_MAX)
		sc->toks[sc->ntok++] = (struct token){p, (uint32_t)len, (uint8_t)k, par > 0};
}

/* A string prefix (r, b, u, f and their pairs) directly before a quote. */
static bool string_prefix(const char *p, size_t len)
{
	if (len > 2)
		return false;
	for (size_t j = 0; j < len; j++)
		if (!strchr("rRbBuUfF", p[j]))
			return false;
	return true;
}

/* Reads one statement into sc->toks; returns true when it ended the
 * logical line (newline outside brackets, or the end), false at a `;`. */
static bool read_statement(struct scan *sc)
{
	const char *s = sc->s;
	int par = 0;
	sc->ntok = 0;
	while (sc->i < sc->n) {
		unsigned char c = (unsigned char)s[sc->i];
		if (c == ' ' || c == '\t' || c == '\f') {
			sc->i++;
		} else if (c == '\\') {
			sc->i++; /* a continuation joins the next line */
			if (sc->i < sc->n && s[sc->i] == '\r')
				sc->i++;
			if (sc->i < sc->n && s[sc->i] == '\n')
				sc->i++;
		} else if (c == '\n' || c == '\r') {
			sc->i++;
			if (c == '\r' && sc->i < sc->n && s[sc->i] == '\n')
				sc->i++;
			if (par == 0)
				return true;
		} else if (c == '#') {
			while (sc->i < sc->n && s[sc->i] != '\n' && s[sc->i] != '\r')
				sc->i++;
		} else if (c == '\'' || c == '"') {
			skip_string(sc);
			add(sc, T_OTHER, s + sc->i, 0, par);
		} else if (ident_char(c)) {
			size_t start = sc->i;
			while (sc->i < sc->n && ident_char((unsigned char)s[sc->i]))
				sc->i++;
			if (sc->i < sc->n && (s[sc->i] == '\'' || s[sc->i] == '"') &&
			    string_prefix(s + start, sc->i - start)) {
				skip_string(sc);
				add(sc, T_OTHER, s + start, 0, par);
			} else {
				add(sc, T_NAME, s + start, sc->i - start, par);
			}
		} else {
			enum kind k = T_OTHER;
			sc->i++;
			switch (c) {
			case '.': k = T_DOT; break;
			case ',': k = T_COMMA; break;
			case '*': k = T_STAR; break;
			case ':': k = T_COLON; break;
			case '(': k = T_LPAR; /* fall through */
			case '[':
			case '{':
				add(sc, k, s + sc->i - 1, 1, par);
				par += par < 1000;
				continue;
			case ')': k = T_RPAR; /* fall through */
			case ']':
			case '}':
				par -= par > 0;
				break;
			case ';':
				if (par == 0)
					return false;
				break;
			}
			add(sc, k, s + sc->i - 1, 1, par);
		}
	}
	return true;
}

/* A dotted name at toks[*j] into out (NUL-terminated); false if none or too long. */
static bool dotted(const struct scan *sc, size_t *j, char *out)
{
	size_t len = 0, k = *j;
	for (;;) {
		const struct token *t = k < sc->ntok ? &sc->toks[k] : NULL;
		if (!t || t->kind != T_NAME || (t->p[0] >= '0' && t->p[0] <= '9') ||
		    len + t->len + 1 > NAME_LEN_MAX)
			return false;
		memcpy(out + len, t->p, t->len);
		len += t->len;
		out[len] = '\0';
		k++;
		if (k + 1 < sc->ntok && sc->toks[k].kind == T_DOT && sc->toks[k + 1].kind == T_NAME) {
			out[len++] = '.';
			k++;
			continue;
		}
		*j = k;
		return true;
	}
}

static void report(struct scan *sc, unsigned level, const char *module, const char *name)
{
	sc->found++;
	if (sc->fn)
		sc->fn(sc->ud, level, module, name);
}

/* Parses toks[from, ntok) as an import statement. */
static void parse_import(struct scan *sc, size_t from)
{
	char mod[NAME_LEN_MAX + 1], name[NAME_LEN_MAX + 1];
	const struct token *t = sc->toks;
	size_t j = from + 1, k = sc->ntok;
	if (from >= k)
		return;
	if (tok_is(&t[from], "import")) {
		while (dotted(sc, &j, mod)) {
			if (j + 1 < k && tok_is(&t[j], "as"))
				j += 2;
			report(sc, 0, mod, NULL);
			if (j >= k || t[j].kind != T_COMMA)
				break;
			j++;
		}
		return;
	}
	if (!tok_is(&t[from], "from"))
		return;
	unsigned level = 0;
	for (; j < k && t[j].kind == T_DOT && level < 1000; j++)
		level++;
	mod[0] = '\0';
	if (j < k && !tok_is(&t[j], "import") && !dotted(sc, &j, mod))
		return;
	if (j >= k || !tok_is(&t[j], "import") || (!level && !mod[0]))
		return;
	j++;
	if (j < k && t[j].kind == T_LPAR)
		j++;
	if (j < k && t[j].kind == T_STAR) {
		report(sc, level, mod, "*");
		return;
	}
	while (j < k && t[j].kind == T_NAME && t[j].len <= NAME_LEN_MAX &&
	       !(t[j].p[0] >= '0' && t[j].p[0] <= '9')) {
		memcpy(name, t[j].p, t[j].len);
		name[t[j].len] = '\0';
		j++;
		if (j + 1 < k && tok_is(&t[j], "as"))
			j += 2;
		report(sc, level, mod, name);
		if (j >= k || t[j].kind != T_COMMA)
			break;
		j++;
	}
}

/* Whether the body of the compound statement whose header is toks[0, colon)
 * runs at import; -1 if toks is not a compound statement's header. */
static int header_live(const struct scan *sc, size_t colon)
{
	const struct token *t = sc->toks;
	if (tok_is(&t[0], "def") || tok_is(&t[0], "class"))
		return sc->mode == PYSCAN_ALL;
	if (tok_is(&t[0], "except"))
		return 0;
	if (tok_is(&t[0], "async"))
		return colon > 1 && (!tok_is(&t[1], "def") || sc->mode == PYSCAN_ALL);
	if (tok_is(&t[0], "if") || tok_is(&t[0], "elif")) {
		for (size_t j = 1; j < colon; j++)
			if (tok_is(&t[j], "TYPE_CHECKING") || tok_is(&t[j], "__name__"))
				return 0;
		if (colon == 2 && (tok_is(&t[1], "False") || tok_is(&t[1], "0")))
			return 0;
		return 1;
	}
	static const char *const live[] = {"else", "try", "finally", "with", "for", "while",
					   "match", "case"};
	for (size_t j = 0; j < sizeof(live) / sizeof(*live); j++)
		if (tok_is(&t[0], live[j]))
			return 1;
	return -1;
}

/* One statement of a logical line at indent; *live: whether it runs (an
 * inline block's header sets it for the rest of the line). */
static void statement(struct scan *sc, size_t indent, bool *live)
{
	if (!sc->ntok || sc->toks[0].kind != T_NAME)
		return;
	size_t colon = 0;
	while (colon < sc->ntok && !(sc->toks[colon].kind == T_COLON && !sc->toks[colon].nested))
		colon++;
	int hl = colon < sc->ntok ? header_live(sc, colon) : -1;
	if (hl < 0) {
		if (*live)
			parse_import(sc, 0);
		return;
	}
	bool body = *live && hl && sc->mode != PYSCAN_TOP;
	if (colon + 1 < sc->ntok) { /* `if x: import y` */
		*live = body;
		if (body)
			parse_import(sc, colon + 1);
		return;
	}
	if (sc->depth == DEPTH_MAX)
		sc->depth--; /* too deep: the innermost header stands for the rest */
	sc->stack[sc->depth++] = (struct block){indent, body};
}

size_t pyscan_imports(const char *src, size_t len, enum pyscan_mode mode, pyscan_fn fn, void *ud)
{
	struct scan sc = {.s = src, .n = len, .mode = mode, .fn = fn, .ud = ud};
	sc.toks = malloc(TOK_MAX * sizeof(*sc.toks));
	if (!sc.toks)
		return 0;
	if (len >= 3 && memcmp(src, "\xef\xbb\xbf", 3) == 0)
		sc.i = 3;
	while (sc.i < sc.n) {
		size_t col = 0;
		for (; sc.i < sc.n; sc.i++) {
			char c = sc.s[sc.i];
			if (c == ' ')
				col++;
			else if (c == '\t')
				col = (col / 8 + 1) * 8;
			else if (c == '\f')
				col = 0;
			else
				break;
			if (col > ((size_t)1 << 30))
				col = (size_t)1 << 30;
		}
		if (sc.i >= sc.n)
			break;
		char c = sc.s[sc.i];
		if (c == '#' || c == '\n' || c == '\r') { /* blank: no effect on blocks */
			while (sc.i < sc.n && sc.s[sc.i] != '\n' && sc.s[sc.i] != '\r')
				sc.i++;
			sc.i++;
			continue;
		}
		while (sc.depth && sc.stack[sc.depth - 1].indent >= col)
			sc.depth--;
		bool live = sc.depth ? sc.stack[sc.depth - 1].live : true;
		for (bool end = false; !end;) {
			end = read_statement(&sc);
			statement(&sc, col, &live);
		}
	}
	free(sc.toks);
	return sc.found;
}
