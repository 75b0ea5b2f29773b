/* pep440: versions and specifiers, as the `packaging` library (23.x) has them.
 *
 * DESIGN: packaging is the reference, so this file follows its code rather
 * than the prose of PEP 440 wherever the two could differ:
 *   - Versions are matched against packaging's VERSION_PATTERN with the
 *     regex engine's own rules: a small depth-first matcher tries every
 *     alternative in the order the regex would (vm_stage), so ambiguous
 *     spellings such as "1.0a-1" capture the same groups (a1, not a0.post1).
 *   - Numbers are kept as digit strings without leading zeros and compared
 *     by length, then bytes: Python ints do not overflow, so neither may we.
 *   - Ordering is packaging's _cmpkey: epoch, release without trailing
 *     zeros, pre (a dev-only release sorts before any pre-release), post,
 *     dev, local (numeric segments above alphanumeric ones).
 *   - "==X.*" and "~=" are emulated on strings, exactly like packaging's
 *     _version_split / _pad_version / canonicalize_version, including its
 *     quirks (e.g. "~=1.4c1" implies "==1.4.*" but "~=1.4rc1" "==1.*").
 *
 * Deliberately missing: non-ASCII input.  Python's \s, \b, isdigit() and
 * case folding are Unicode-aware; here only ASCII digits, letters and
 * whitespace (including \x1c-\x1f, which Python's isspace() accepts) count,
 * so a few exotic inputs that packaging accepts are rejected. */
#include "resolver/pep440.h"
#include "resolver/pychars.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fetch/util/util.h"

/* A digit string without leading zeros ("0" for zero) inside v->text, or
 * len 0 for an implicit zero (the epoch, which str() omits when 0). */
struct pnum {
	size_t off, len;
};

struct plocal {
	size_t off, len;
	bool numeric;
};

enum { PRE_NONE, PRE_A, PRE_B, PRE_RC };

struct pep440_version {
	char *text; /* normalized, as str(Version(s)) */
	struct pnum epoch;
	size_t rel_start, rel_end; /* release segment inside text */
	size_t nrel;
	size_t nrel_cmp; /* release length without trailing zeros */
	struct pnum *rel;
	int pre;
	struct pnum pre_n;
	bool has_post, has_dev;
	struct pnum post_n, dev_n;
	size_t public_len; /* text up to "+local" */
	size_t nlocal;     /* 0: no local segment */
	struct plocal *local;
};

/* ---- character classes (ASCII versions of Python's) ---- */

/* ---- version matching: VERSION_PATTERN, anchored, re.I ---- */

struct span {
	size_t off, len;
	bool set;
};

struct vm {
	const char *s;
	size_t n;
	struct span epoch, rel, pre_l, pre_n, post_n1, post_l, post_n2, dev_l, dev_n, local;
};

static const struct span unset;

static struct span mkspan(size_t off, size_t len)
{
	return (struct span){.off = off, .len = len, .set = true};
}

static bool vm_stage(struct vm *m, int stage, size_t p);

/* One "[-_.]?(word)[-_.]?([0-9]+)?" component, alternatives in regex
 * order: with the separator before without, each word in turn, trailing
 * separator before none, number before none.  Continues with next_stage. */
static bool vm_letter(struct vm *m, size_t p, const char *const *words, size_t nwords,
		      struct span *ret_l, struct span *ret_n, int next_stage)
{
	const char *s = m->s;
	size_t n = m->n;

	for (int sep = 1; sep >= 0; sep--) {
		size_t q = p;

		if (sep) {
			if (q >= n || !is_sep(s[q]))
				continue;
			q++;
		}
		for (size_t w = 0; w < nwords; w++) {
			size_t wl = strlen(words[w]);

			if (!match_ci(s, n, q, words[w]))
				continue;
			for (int tsep = 1; tsep >= 0; tsep--) {
				size_t t = q + wl, d;

				if (tsep) {
					if (t >= n || !is_sep(s[t]))
						continue;
					t++;
				}
				d = count_digits(s, n, t);
				for (int num = 1; num >= 0; num--) {
					if (num && !d)
						continue;
					*ret_l = mkspan(q, wl);
					*ret_n = num ? mkspan(t, d) : unset;
					if (vm_stage(m, next_stage, t + (num ? d : 0)))
						return true;
				}
			}
		}
	}
	*ret_l = unset;
	*ret_n = unset;
	return vm_stage(m, next_stage, p);
}

static bool vm_stage(struct vm *m, int stage, size_t p)
{
	static const char *const pre_words[] = {"a",   "b",    "c",   "rc",
						"alpha", "beta", "pre", "preview"};
	static const char *const post_words[] = {"post", "rev", "r"};
	static const char *const dev_words[] = {"dev"};
	const char *s = m->s;
	size_t n = m->n, d, q;

	switch (stage) {
	case 0: /* v? */
		if (p < n && (s[p] == 'v' || s[p] == 'V') && vm_stage(m, 1, p + 1))
			return true;
		return vm_stage(m, 1, p);
	case 1: /* (?:([0-9]+)!)? */
		d = count_digits(s, n, p);
		if (d && p + d < n && s[p + d] == '!') {
			m->epoch = mkspan(p, d);
			if (vm_stage(m, 2, p + d + 1))
				return true;
		}
		m->epoch = unset;
		return vm_stage(m, 2, p);
	case 2: /* [0-9]+(?:\.[0-9]+)*: a shorter match would leave a digit
		 * or ".digit" that nothing later accepts, so only the longest. */
		d = count_digits(s, n, p);
		if (!d)
			return false;
		q = p + d;
		while (q + 1 < n && s[q] == '.' && is_digit(s[q + 1]))
			q += 1 + count_digits(s, n, q + 1);
		m->rel = mkspan(p, q - p);
		return vm_stage(m, 3, q);
	case 3:
		return vm_letter(m, p, pre_words, ARRAY_SIZE(pre_words), &m->pre_l, &m->pre_n, 4);
	case 4: /* (?:-([0-9]+))|(?:[-_.]?(post|rev|r)[-_.]?([0-9]+)?) */
		m->post_l = m->post_n2 = unset;
		if (p + 1 < n && s[p] == '-' && (d = count_digits(s, n, p + 1))) {
			m->post_n1 = mkspan(p + 1, d);
			if (vm_stage(m, 5, p + 1 + d))
				return true;
		}
		m->post_n1 = unset;
		return vm_letter(m, p, post_words, ARRAY_SIZE(post_words), &m->post_l, &m->post_n2,
				 5);
	case 5:
		return vm_letter(m, p, dev_words, ARRAY_SIZE(dev_words), &m->dev_l, &m->dev_n, 6);
	case 6: /* (?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?, then only \s*$ may
		 * follow, so only the longest local can succeed. */
		if (p + 1 < n && s[p] == '+' && is_alnum(s[p + 1])) {
			q = p + 1;
			while (q < n && is_alnum(s[q]))
				q++;
			while (q + 1 < n && is_sep(s[q]) && is_alnum(s[q + 1])) {
				q++;
				while (q < n && is_alnum(s[q]))
					q++;
			}
			m->local = mkspan(p + 1, q - p - 1);
			if (vm_stage(m, 7, q))
				return true;
		}
		m->local = unset;
		return vm_stage(m, 7, p);
	default: /* \s*$ */
		while (p < n && py_space(s[p]))
			p++;
		return p == n;
	}
}

/* ---- building a version from the captured groups ---- */

/* Appends the digits without leading zeros. */
static struct pnum put_num(struct buf *b, const char *d, size_t len)
{
	struct pnum r;

	while (len > 1 && d[0] == '0') {
		d++;
		len--;
	}
	r.off = b->len;
	r.len = len;
	buf_append(b, d, len);
	return r;
}

static bool span_is_zero(const char *s, struct span sp)
{
	for (size_t i = 0; i < sp.len; i++)
		if (s[sp.off + i] != '0')
			return false;
	return true;
}

static struct pep440_version *version_build(const struct vm *m)
{
	struct pep440_version *v = xcalloc(1, sizeof(*v));
	const char *s = m->s;
	struct buf b;
	size_t i, start;

	buf_init(&b);
	if (m->epoch.set && !span_is_zero(s, m->epoch)) {
		v->epoch = put_num(&b, s + m->epoch.off, m->epoch.len);
		buf_append(&b, "!", 1);
	}

	v->rel_start = b.len;
	v->nrel = 1;
	for (i = 0; i < m->rel.len; i++)
		if (s[m->rel.off + i] == '.')
			v->nrel++;
	v->rel = xcalloc(v->nrel, sizeof(*v->rel));
	start = m->rel.off;
	for (size_t k = 0; k < v->nrel; k++) {
		size_t e = start;

		while (e < m->rel.off + m->rel.len && s[e] != '.')
			e++;
		if (k)
			buf_append(&b, ".", 1);
		v->rel[k] = put_num(&b, s + start, e - start);
		start = e + 1;
	}
	v->rel_end = b.len;
	v->nrel_cmp = v->nrel;
	while (v->nrel_cmp > 0 && v->rel[v->nrel_cmp - 1].len == 1 &&
	       b.data[v->rel[v->nrel_cmp - 1].off] == '0')
		v->nrel_cmp--;

	if (m->pre_l.set) {
		unsigned char c = to_lower(s[m->pre_l.off]);

		/* alpha -> a, beta -> b; c, pre, preview, rc -> rc */
		v->pre = c == 'a' ? PRE_A : c == 'b' ? PRE_B : PRE_RC;
		buf_puts(&b, v->pre == PRE_A ? "a" : v->pre == PRE_B ? "b" : "rc");
		if (m->pre_n.set)
			v->pre_n = put_num(&b, s + m->pre_n.off, m->pre_n.len);
		else
			v->pre_n = put_num(&b, "0", 1);
	}
	if (m->post_n1.set || m->post_l.set) {
		const struct span *pn = m->post_n1.set ? &m->post_n1 : &m->post_n2;

		v->has_post = true;
		buf_puts(&b, ".post");
		if (pn->set)
			v->post_n = put_num(&b, s + pn->off, pn->len);
		else
			v->post_n = put_num(&b, "0", 1);
	}
	if (m->dev_l.set) {
		v->has_dev = true;
		buf_puts(&b, ".dev");
		if (m->dev_n.set)
			v->dev_n = put_num(&b, s + m->dev_n.off, m->dev_n.len);
		else
			v->dev_n = put_num(&b, "0", 1);
	}
	v->public_len = b.len;

	if (m->local.set) {
		size_t end = m->local.off + m->local.len;

		v->nlocal = 1;
		for (i = m->local.off; i < end; i++)
			if (is_sep(s[i]))
				v->nlocal++;
		v->local = xcalloc(v->nlocal, sizeof(*v->local));
		buf_append(&b, "+", 1);
		start = m->local.off;
		for (size_t k = 0; k < v->nlocal; k++) {
			size_t e = start;
			bool numeric = true;

			while (e < end && !is_sep(s[e])) {
				if (!is_digit(s[e]))
					numeric = false;
				e++;
			}
			if (k)
				buf_append(&b, ".", 1);
			if (numeric) {
				struct pnum pn = put_num(&b, s + start, e - start);

				v->local[k] = (struct plocal){pn.off, pn.len, true};
			} else {
				v->local[k] = (struct plocal){b.len, e - start, false};
				for (i = start; i < e; i++) {
					char c = (char)to_lower(s[i]);

					buf_append(&b, &c, 1);
				}
			}
			start = e + 1;
		}
	}
	v->text = (char *)buf_steal(&b, NULL);
	return v;
}

static struct pep440_version *version_parse_n(const char *s, size_t n)
{
	struct vm m = {.s = s, .n = n};
	size_t p = 0;

	if (memchr(s, '\0', n))
		return NULL;
	while (p < n && py_space(s[p]))
		p++;
	if (!vm_stage(&m, 0, p))
		return NULL;
	return version_build(&m);
}

struct pep440_version *pep440_parse(const char *s)
{
	if (!s)
		return NULL;
	return version_parse_n(s, strlen(s));
}

void pep440_free(struct pep440_version *v)
{
	if (!v)
		return;
	free(v->text);
	free(v->rel);
	free(v->local);
	free(v);
}

char *pep440_str(const struct pep440_version *v)
{
	return xstrdup(v->text);
}

bool pep440_is_prerelease(const struct pep440_version *v)
{
	return v->pre != PRE_NONE || v->has_dev;
}

/* ---- ordering ---- */

static int numcmp(const struct pep440_version *a, struct pnum x, const struct pep440_version *b,
		  struct pnum y)
{
	const char *xs = x.len ? a->text + x.off : "0", *ys = y.len ? b->text + y.off : "0";
	size_t xl = x.len ? x.len : 1, yl = y.len ? y.len : 1;
	int c;

	if (xl != yl)
		return xl < yl ? -1 : 1;
	c = memcmp(xs, ys, xl);
	return (c > 0) - (c < 0);
}

/* Rank of packaging's _pre key: -Infinity for a dev-only release, the
 * (letter, n) tuple for pre-releases, +Infinity otherwise. */
static int pre_rank(const struct pep440_version *v)
{
	if (v->pre != PRE_NONE)
		return 1;
	return !v->has_post && v->has_dev ? 0 : 2;
}

static int release_cmp(const struct pep440_version *a, const struct pep440_version *b)
{
	size_t n = MIN(a->nrel_cmp, b->nrel_cmp);
	int c;

	if (numcmp(a, a->epoch, b, b->epoch))
		return numcmp(a, a->epoch, b, b->epoch);
	for (size_t i = 0; i < n; i++) {
		c = numcmp(a, a->rel[i], b, b->rel[i]);
		if (c)
			return c;
	}
	return (a->nrel_cmp > b->nrel_cmp) - (a->nrel_cmp < b->nrel_cmp);
}

static int local_cmp(const struct pep440_version *a, const struct pep440_version *b)
{
	size_t n = MIN(a->nlocal, b->nlocal);

	for (size_t i = 0; i < n; i++) {
		const struct plocal *x = &a->local[i], *y = &b->local[i];
		int c;

		/* (NegativeInfinity, str) < (int, "") */
		if (x->numeric != y->numeric)
			return x->numeric ? 1 : -1;
		if (x->numeric) {
			c = numcmp(a, (struct pnum){x->off, x->len}, b, (struct pnum){y->off, y->len});
		} else {
			c = memcmp(a->text + x->off, b->text + y->off, MIN(x->len, y->len));
			c = c ? c : (x->len > y->len) - (x->len < y->len);
		}
		if (c)
			return c > 0 ? 1 : -1;
	}
	return (a->nlocal > b->nlocal) - (a->nlocal < b->nlocal);
}

/* a_public: compare as Version(a.public), i.e. without a's local part. */
static int vcmp(const struct pep440_version *a, const struct pep440_version *b, bool a_public)
{
	int c, ra, rb;
	size_t al = a_public ? 0 : a->nlocal;

	c = release_cmp(a, b);
	if (c)
		return c;
	ra = pre_rank(a);
	rb = pre_rank(b);
	if (ra != rb)
		return ra < rb ? -1 : 1;
	if (ra == 1) {
		if (a->pre != b->pre)
			return a->pre < b->pre ? -1 : 1;
		c = numcmp(a, a->pre_n, b, b->pre_n);
		if (c)
			return c;
	}
	if (a->has_post != b->has_post)
		return a->has_post ? 1 : -1;
	if (a->has_post) {
		c = numcmp(a, a->post_n, b, b->post_n);
		if (c)
			return c;
	}
	if (a->has_dev != b->has_dev)
		return a->has_dev ? -1 : 1;
	if (a->has_dev) {
		c = numcmp(a, a->dev_n, b, b->dev_n);
		if (c)
			return c;
	}
	if (!al || !b->nlocal)
		return (al > 0) - (b->nlocal > 0);
	return local_cmp(a, b);
}

int pep440_cmp(const struct pep440_version *a, const struct pep440_version *b)
{
	return vcmp(a, b, false);
}

/* ---- packaging.utils.canonicalize_version and specifier string helpers ---- */

/* canonicalize_version(v): str() with, when strip_zero, trailing ".0"
 * release components removed (the first one always stays). */
static void canon_append(struct buf *b, const struct pep440_version *v, bool strip_zero,
			 bool with_local)
{
	size_t k = strip_zero ? MAX(v->nrel_cmp, (size_t)1) : v->nrel;
	size_t rel_end = v->rel[k - 1].off + v->rel[k - 1].len;

	buf_append(b, v->text, rel_end);
	buf_append(b, v->text + v->rel_end, v->public_len - v->rel_end);
	if (with_local)
		buf_append(b, v->text + v->public_len, strlen(v->text + v->public_len));
}

/* canonicalize_version(str): unparseable strings come back unchanged. */
static char *canon_str(const char *s, size_t n, bool strip_zero)
{
	struct pep440_version *v = version_parse_n(s, n);
	struct buf b;

	if (!v)
		return xstrndup(s, n);
	buf_init(&b);
	canon_append(&b, v, strip_zero, true);
	pep440_free(v);
	return (char *)buf_steal(&b, NULL);
}

struct sspan {
	const char *p;
	size_t n;
};

/* ^([0-9]+)((?:a|b|c|rc)[0-9]+)$ on one item; returns the split point. */
static size_t prefix_split(const char *s, size_t n)
{
	size_t d = count_digits(s, n, 0), q = d, l;

	if (!d || q >= n)
		return 0;
	if (s[q] == 'a' || s[q] == 'b' || s[q] == 'c')
		l = 1;
	else if (n - q >= 2 && s[q] == 'r' && s[q + 1] == 'c')
		l = 2;
	else
		return 0;
	if (q + l >= n || count_digits(s, n, q + l) != n - q - l)
		return 0;
	return d;
}

/* specifiers._version_split: split on '.', and "1rc2" into "1", "rc2". */
static size_t version_split(const char *s, size_t n, struct sspan **ret)
{
	size_t cap = 2, cnt = 0, start = 0;
	struct sspan *v;

	for (size_t i = 0; i < n; i++)
		if (s[i] == '.')
			cap += 2;
	v = xcalloc(cap, sizeof(*v));
	for (;;) {
		size_t e = start, k;

		while (e < n && s[e] != '.')
			e++;
		k = prefix_split(s + start, e - start);
		if (k) {
			v[cnt++] = (struct sspan){s + start, k};
			v[cnt++] = (struct sspan){s + start + k, e - start - k};
		} else {
			v[cnt++] = (struct sspan){s + start, e - start};
		}
		if (e >= n)
			break;
		start = e + 1;
	}
	*ret = v;
	return cnt;
}

static bool sspan_isdigit(struct sspan x)
{
	return x.n && count_digits(x.p, x.n, 0) == x.n;
}

static bool sspan_eq(struct sspan x, struct sspan y)
{
	return x.n == y.n && memcmp(x.p, y.p, x.n) == 0;
}

static bool sspan_startswith(struct sspan x, const char *pfx)
{
	size_t l = strlen(pfx);

	return x.n >= l && memcmp(x.p, pfx, l) == 0;
}

/* ---- specifiers ---- */

enum spec_op { OP_COMPAT, OP_EQ, OP_NE, OP_LE, OP_GE, OP_LT, OP_GT, OP_ARB };

static const char *const op_str[] = {
	[OP_COMPAT] = "~=", [OP_EQ] = "==", [OP_NE] = "!=", [OP_LE] = "<=",
	[OP_GE] = ">=",     [OP_LT] = "<",  [OP_GT] = ">",  [OP_ARB] = "===",
};

/* A prefix match ("==X.*", or the "==P.*" half of "~="), as the split
 * list of canonicalize_version(X, strip_trailing_zero=False). */
struct prefix {
	char *canon; /* the spans below point into it */
	struct sspan *items;
	size_t nitems, nrel; /* nrel: leading all-digit items */
};

struct clause {
	enum spec_op op;
	char *ver;                  /* the version as written, stripped */
	struct pep440_version *v;   /* NULL only for "===" junk */
	bool wildcard;              /* "==X.*" / "!=X.*" */
	struct prefix pfx;          /* wildcard and ~= */
	bool names_pre;             /* Specifier.prereleases with no override */
	char *canon;                /* identity for the set (_canonical_spec) */
};

struct pep440_spec {
	size_t n;
	struct clause *c;
};

static void prefix_init(struct prefix *p, const char *s, size_t n)
{
	p->canon = canon_str(s, n, false);
	p->nitems = version_split(p->canon, strlen(p->canon), &p->items);
	p->nrel = 0;
	while (p->nrel < p->nitems && sspan_isdigit(p->items[p->nrel]))
		p->nrel++;
}

/* _compare_compatible's prefix: everything but the last item of the
 * release, taken from the version as written. */
static void compat_prefix_init(struct prefix *p, const char *ver)
{
	static const char *const suffixes[] = {"dev", "a", "b", "rc", "post"};
	struct sspan *items;
	size_t n = version_split(ver, strlen(ver), &items), keep = 0;
	struct buf b;

	while (keep < n) {
		bool suffix = false;

		for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++)
			if (sspan_startswith(items[keep], suffixes[i]))
				suffix = true;
		if (suffix)
			break;
		keep++;
	}
	buf_init(&b);
	for (size_t i = 0; i + 1 < keep; i++) {
		if (i)
			buf_append(&b, ".", 1);
		buf_append(&b, items[i].p, items[i].n);
	}
	prefix_init(p, (const char *)b.data ? (const char *)b.data : "", b.len);
	buf_free(&b);
	free(items);
}

static void prefix_done(struct prefix *p)
{
	free(p->canon);
	free(p->items);
}

/* _compare_equal for a prefix spec: the prospective version, canonical
 * and without local, zero-padded in its release and cut to length. */
static bool prefix_match(const struct prefix *p, const struct pep440_version *v)
{
	struct sspan *items;
	struct buf b;
	size_t n, nrel = 0, pad, i;
	bool ok = true;

	buf_init(&b);
	canon_append(&b, v, true, false);
	n = version_split((const char *)b.data, b.len, &items);
	while (nrel < n && sspan_isdigit(items[nrel]))
		nrel++;
	pad = p->nrel > nrel ? p->nrel - nrel : 0;
	if (n + pad < p->nitems) {
		ok = false;
	} else {
		for (i = 0; i < p->nitems && ok; i++) {
			struct sspan x;

			if (i < nrel)
				x = items[i];
			else if (i < nrel + pad)
				x = (struct sspan){"0", 1};
			else
				x = items[i - pad];
			ok = sspan_eq(x, p->items[i]);
		}
	}
	free(items);
	buf_free(&b);
	return ok;
}

static bool ascii_caseeq(const char *a, const char *b)
{
	while (*a && to_lower(*a) == to_lower(*b)) {
		a++;
		b++;
	}
	return !*a && !*b;
}

static bool same_base(const struct pep440_version *a, const struct pep440_version *b)
{
	return release_cmp(a, b) == 0;
}

static bool clause_contains(const struct clause *c, const struct pep440_version *p)
{
	int r;

	switch (c->op) {
	case OP_EQ:
	case OP_NE:
		if (c->wildcard)
			r = prefix_match(&c->pfx, p);
		else /* no local in the spec: ignore the candidate's */
			r = vcmp(p, c->v, c->v->nlocal == 0) == 0;
		return c->op == OP_EQ ? r : !r;
	case OP_LE:
		return vcmp(p, c->v, true) <= 0;
	case OP_GE:
		return vcmp(p, c->v, true) >= 0;
	case OP_COMPAT:
		return vcmp(p, c->v, true) >= 0 && prefix_match(&c->pfx, p);
	case OP_LT:
		/* <3.1 must not match 3.1.dev0 unless it names a pre-release */
		if (vcmp(p, c->v, false) >= 0)
			return false;
		return !(!pep440_is_prerelease(c->v) && pep440_is_prerelease(p) &&
			 same_base(p, c->v));
	case OP_GT:
		/* >3.1 matches neither 3.1.post1 (unless named) nor 3.1+local */
		if (vcmp(p, c->v, false) <= 0)
			return false;
		if (!c->v->has_post && p->has_post && same_base(p, c->v))
			return false;
		return !(p->nlocal && same_base(p, c->v));
	case OP_ARB: /* str(v).lower() == spec.lower() */
		return ascii_caseeq(p->text, c->ver);
	}
	return false;
}

static void clause_done(struct clause *c)
{
	free(c->ver);
	pep440_free(c->v);
	if (c->wildcard || c->op == OP_COMPAT)
		prefix_done(&c->pfx);
	free(c->canon);
}

/* [vV]?([0-9]+!)?[0-9]+(\.[0-9]+)*, the part before a ".*" */
static bool is_wild_base(const char *s, size_t n)
{
	size_t p = 0, d;

	if (p < n && (s[p] == 'v' || s[p] == 'V'))
		p++;
	d = count_digits(s, n, p);
	if (d && p + d < n && s[p + d] == '!')
		p += d + 1;
	d = count_digits(s, n, p);
	if (!d)
		return false;
	p += d;
	while (p + 1 < n && s[p] == '.' && is_digit(s[p + 1]))
		p += 1 + count_digits(s, n, p + 1);
	return p == n;
}

/* Specifier(s) for s already stripped; 0 or -EINVAL. */
static int clause_parse(struct clause *c, const char *s, size_t n)
{
	static const enum spec_op order[] = {OP_ARB, OP_COMPAT, OP_EQ, OP_NE,
					     OP_LE,  OP_GE,     OP_LT, OP_GT};
	const char *ver;
	size_t i, vn, ol = 0;

	memset(c, 0, sizeof(*c));
	/* "===" is tried before "==": the regex tries "==" first, but its
	 * version branch cannot start with '=', so "===" wins either way. */
	for (i = 0; i < ARRAY_SIZE(order); i++) {
		ol = strlen(op_str[order[i]]);
		if (n >= ol && memcmp(s, op_str[order[i]], ol) == 0)
			break;
	}
	if (i == ARRAY_SIZE(order))
		return -EINVAL;
	c->op = order[i];
	ver = s + ol;
	vn = n - ol;
	while (vn && py_space(*ver)) {
		ver++;
		vn--;
	}

	if (c->op == OP_ARB) {
		/* [^\s;)]*: anything, matched later as a string */
		for (i = 0; i < vn; i++)
			if (py_space(ver[i]) || ver[i] == ';' || ver[i] == ')')
				return -EINVAL;
		c->v = version_parse_n(ver, vn);
	} else if ((c->op == OP_EQ || c->op == OP_NE) && vn >= 2 && ver[vn - 2] == '.' &&
		   ver[vn - 1] == '*') {
		if (!is_wild_base(ver, vn - 2))
			return -EINVAL;
		c->wildcard = true;
		c->v = version_parse_n(ver, vn - 2);
		if (!c->v)
			return -EINVAL;
		prefix_init(&c->pfx, ver, vn - 2);
	} else {
		c->v = version_parse_n(ver, vn);
		if (!c->v)
			return -EINVAL;
		/* only == and != may carry a local version, ~= needs X.Y */
		if (c->v->nlocal && c->op != OP_EQ && c->op != OP_NE)
			goto fail;
		if (c->op == OP_COMPAT && c->v->nrel < 2)
			goto fail;
	}
	c->ver = xstrndup(ver, vn);
	if (c->op == OP_COMPAT)
		compat_prefix_init(&c->pfx, c->ver);
	/* Inclusive operators naming a pre-release allow pre-releases;
	 * packaging raises for "===" with a non-version, we say no. */
	if (c->op == OP_EQ || c->op == OP_GE || c->op == OP_LE || c->op == OP_COMPAT ||
	    c->op == OP_ARB)
		c->names_pre = c->v && pep440_is_prerelease(c->v);
	c->canon = canon_str(ver, vn, c->op != OP_COMPAT);
	return 0;
fail:
	pep440_free(c->v);
	c->v = NULL;
	return -EINVAL;
}

/* SpecifierSet keeps a Python set of Specifier objects, equal when
 * operator and canonical version are; the first one added stays.  Not
 * only cosmetic: "===1.0,===1.0.0" is just "===1.0". */
static bool clause_dup(const struct pep440_spec *set, const struct clause *c)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->c[i].op == c->op && !strcmp(set->c[i].canon, c->canon))
			return true;
	return false;
}

struct pep440_spec *pep440_spec_parse(const char *s, char *err, size_t errlen)
{
	struct pep440_spec *set = xcalloc(1, sizeof(*set));
	size_t cap = 1;
	const char *p = s;

	for (const char *q = s; *q; q++)
		if (*q == ',')
			cap++;
	set->c = xcalloc(cap, sizeof(*set->c));
	for (;;) {
		const char *e = strchrnul(p, ',');
		const char *a = p, *b = e;

		while (a < b && py_space(*a))
			a++;
		while (b > a && py_space(b[-1]))
			b--;
		if (a < b) {
			struct clause *c = &set->c[set->n];

			if (clause_parse(c, a, (size_t)(b - a)) < 0) {
				if (err && errlen)
					snprintf(err, errlen, "invalid specifier '%.*s'",
						 (int)MIN((size_t)(b - a), (size_t)200), a);
				pep440_spec_free(set);
				return NULL;
			}
			if (clause_dup(set, c))
				clause_done(c);
			else
				set->n++;
		}
		if (!*e)
			break;
		p = e + 1;
	}
	return set;
}

void pep440_spec_free(struct pep440_spec *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		clause_done(&s->c[i]);
	free(s->c);
	free(s);
}

bool pep440_spec_contains(const struct pep440_spec *s, const struct pep440_version *v,
			  bool prereleases)
{
	bool pre = prereleases;

	for (size_t i = 0; i < s->n && !pre; i++)
		pre = s->c[i].names_pre;
	if (!pre && pep440_is_prerelease(v))
		return false;
	for (size_t i = 0; i < s->n; i++)
		if (!clause_contains(&s->c[i], v))
			return false;
	return true;
}

static int strp_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* str(SpecifierSet): the clauses as written, sorted, joined by ','. */
char *pep440_spec_str(const struct pep440_spec *s)
{
	char **strs = xcalloc(s->n + 1, sizeof(*strs));
	size_t n = 0;
	struct buf b;

	for (size_t i = 0; i < s->n; i++)
		strs[n++] = xasprintf("%s%s", op_str[s->c[i].op], s->c[i].ver);
	qsort(strs, n, sizeof(*strs), strp_cmp);
	buf_init(&b);
	buf_puts(&b, "");
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(&b, ",", 1);
		buf_puts(&b, strs[i]);
		free(strs[i]);
	}
	free(strs);
	return (char *)buf_steal(&b, NULL);
}
