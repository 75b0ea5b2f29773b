/* resolve: backtracking with learning (see resolve.h for the design). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "resolver/resolve.h"
#include "resolver/tags.h"

#define DEFAULT_MAX_STEPS 200000
#define EXPLAIN_MAX_LINES 40

struct rcons {
	struct pep440_spec *spec; /* owned */
	char *text;		  /* "b<2" for messages (owned) */
	int src;		  /* decision index, or -1 for the top-level input */
	const char *where;	  /* top level: "req.txt:3" */
	bool only_constraint;	  /* -c: does not make the package needed */
	bool pins;		  /* "==V" / "===V": allows a yanked V */
};

struct rpkg {
	char *key;   /* "name" or "name[extra]" */
	char *name;  /* project (normalized) */
	char *extra; /* normalized extra, or NULL */
	size_t order;
	const struct resolve_candidate *cands;
	size_t ncands;
	bool loaded;
	int decided;  /* candidate index, or -1 */
	int decision; /* trail index, or -1 */
	struct rcons *cons;
	size_t ncons, capcons;
	unsigned activity;
	size_t *nogoods; /* ids of the nogoods that name this package */
	size_t nnogoods;
};

struct lit {
	int pkg, cand;
};

struct nogood {
	struct lit *lits;
	size_t n;
	char *why;
	size_t *used; /* nogoods this one was derived from */
	size_t nused;
};

struct decision {
	int pkg, cand;
	size_t log_start; /* constraint log length before this decision's deps */
};

struct rs {
	const struct resolve_provider *pv;
	const struct resolve_opts *opts;
	struct rpkg *pkgs;
	size_t npkgs, cappkgs;
	struct decision *trail;
	size_t ntrail, captrail;
	int *log; /* package that got each constraint, in order (undo stack) */
	size_t nlog, caplog;
	struct nogood *ng;
	size_t nng, capng;
	size_t steps, backjumps;
	char err[1024];
	const char *extra_now; /* marker environment override */
};

#define GROW(arr, n, cap)                                                                          \
	do {                                                                                       \
		if ((n) == (cap)) {                                                                \
			(cap) = (cap) ? 2 * (cap) : 16;                                            \
			(arr) = xrealloc((arr), (cap) * sizeof(*(arr)));                           \
		}                                                                                  \
	} while (0)

static int pkg_get(struct rs *s, const char *name, const char *extra)
{
	_cleanup_free_ char *n = tags_normalize_name(name);
	_cleanup_free_ char *x = extra ? tags_normalize_name(extra) : NULL;
	_cleanup_free_ char *key = x ? xasprintf("%s[%s]", n, x) : xstrdup(n);

	for (size_t i = 0; i < s->npkgs; i++)
		if (!strcmp(s->pkgs[i].key, key))
			return (int)i;
	GROW(s->pkgs, s->npkgs, s->cappkgs);
	struct rpkg *p = &s->pkgs[s->npkgs];

	memset(p, 0, sizeof(*p));
	p->key = xstrdup(key);
	p->name = xstrdup(n);
	p->extra = x ? xstrdup(x) : NULL;
	p->order = s->npkgs;
	p->decided = p->decision = -1;
	if (s->pv->hint)
		s->pv->hint(s->pv->ud, n);
	return (int)s->npkgs++;
}

static bool spec_pins(const char *text)
{
	/* a single "==V" (no wildcard) or "===V" clause */
	return !strncmp(text, "==", 2) && !strchr(text, ',') && !strchr(text, '*');
}

/* Adds a constraint on pkg; returns its index. */
static void cons_push(struct rs *s, int pkg, struct pep440_spec *spec, char *text, int src,
		      const char *where, bool only_constraint)
{
	struct rpkg *p = &s->pkgs[pkg];

	GROW(p->cons, p->ncons, p->capcons);
	p->cons[p->ncons++] = (struct rcons){.spec = spec,
					     .text = text,
					     .src = src,
					     .where = where,
					     .only_constraint = only_constraint,
					     .pins = spec_pins(text + strlen(p->key))};
	GROW(s->log, s->nlog, s->caplog);
	s->log[s->nlog++] = pkg;
}

static void cons_pop(struct rs *s)
{
	struct rpkg *p = &s->pkgs[s->log[--s->nlog]];
	struct rcons *c = &p->cons[--p->ncons];

	pep440_spec_free(c->spec);
	free(c->text);
}

static bool required(const struct rpkg *p)
{
	for (size_t i = 0; i < p->ncons; i++)
		if (!p->cons[i].only_constraint)
			return true;
	return false;
}

static int load(struct rs *s, struct rpkg *p)
{
	if (p->loaded)
		return 0;
	int r =
	    s->pv->candidates(s->pv->ud, p->name, &p->cands, &p->ncands, s->err, sizeof(s->err));

	if (r < 0)
		return r;
	p->loaded = true;
	return 0;
}

static bool pinned(const struct rpkg *p, size_t ci)
{
	for (size_t i = 0; i < p->ncons; i++)
		if (p->cons[i].pins && pep440_spec_contains(p->cons[i].spec, p->cands[ci].v, true))
			return true;
	return false;
}

/* Is nogood k violated if pkg takes cand (every other literal holds now)? */
static bool nogood_blocks(const struct rs *s, size_t k, int pkg, int cand)
{
	const struct nogood *g = &s->ng[k];
	bool mentions = false;

	for (size_t i = 0; i < g->n; i++) {
		const struct lit *l = &g->lits[i];

		if (l->pkg == pkg) {
			if (l->cand != cand)
				return false;
			mentions = true;
		} else if (s->pkgs[l->pkg].decided != l->cand) {
			return false;
		}
	}
	return mentions;
}

enum excl { EX_NONE, EX_STATIC, EX_CONS, EX_NOGOOD };

/* Why candidate ci of p cannot be taken now (first reason found). */
static enum excl excluded(const struct rs *s, int pkg, size_t ci, bool pre, size_t *ret_which)
{
	const struct rpkg *p = &s->pkgs[pkg];
	const struct resolve_candidate *c = &p->cands[ci];

	if (c->unusable || (c->yanked && !pinned(p, ci)))
		return EX_STATIC;
	for (size_t i = 0; i < p->ncons; i++)
		if (!pep440_spec_contains(p->cons[i].spec, c->v, pre)) {
			*ret_which = i;
			return EX_CONS;
		}
	for (size_t i = 0; i < p->nnogoods; i++)
		if (nogood_blocks(s, p->nogoods[i], pkg, (int)ci)) {
			*ret_which = p->nogoods[i];
			return EX_NOGOOD;
		}
	return EX_NONE;
}

static int choose(const struct rs *s, int pkg)
{
	const struct rpkg *p = &s->pkgs[pkg];
	size_t w;

	for (int pass = s->opts->pre ? 1 : 0; pass < 2; pass++)
		for (size_t i = 0; i < p->ncands; i++)
			if (excluded(s, pkg, i, pass == 1, &w) == EX_NONE)
				return (int)i;
	return -1;
}

static int pick(const struct rs *s)
{
	int best = -1;

	for (size_t i = 0; i < s->npkgs; i++) {
		const struct rpkg *p = &s->pkgs[i];

		if (p->decided >= 0 || !required(p))
			continue;
		if (best < 0 || p->activity > s->pkgs[best].activity ||
		    (p->activity == s->pkgs[best].activity && p->order < s->pkgs[best].order))
			best = (int)i;
	}
	return best;
}

static const char *env_with_extra(void *ud, const char *key)
{
	struct rs *s = ud;

	if (!strcmp(key, "extra"))
		return s->extra_now ? s->extra_now : "";
	return s->opts->env(s->opts->env_ud, key);
}

static void lit_str(const struct rs *s, const struct lit *l, struct buf *b)
{
	const struct rpkg *p = &s->pkgs[l->pkg];

	buf_printf(b, "%s %s", p->key, p->cands[l->cand].version);
}

static void lits_str(const struct rs *s, const struct lit *lits, size_t n, struct buf *b)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_puts(b, i + 1 == n ? " and " : ", ");
		lit_str(s, &lits[i], b);
	}
}

/* "a 1.0 requires b<2" / "the requirements ask for b>=3 (req.txt:2)" */
static void cons_str(const struct rs *s, const struct rcons *c, struct buf *b)
{
	if (c->src < 0) {
		buf_printf(b, "%s %s (%s)",
			   c->only_constraint ? "a constraint says" : "the requirements ask for",
			   c->text, c->where ? c->where : "command line");
		return;
	}
	const struct decision *d = &s->trail[c->src];
	struct lit l = {d->pkg, d->cand};

	lit_str(s, &l, b);
	buf_printf(b, " requires %s", c->text);
}

static const char *cannot_phrase(size_t n)
{
	return n == 1	? "cannot be installed"
	       : n == 2 ? "cannot both be installed"
			: "cannot all be installed together";
}

static void add_cause(int *cause, size_t *n, int dec)
{
	for (size_t i = 0; i < *n; i++)
		if (cause[i] == dec)
			return;
	cause[(*n)++] = dec;
}

/* No version of pkg is left.  Builds the nogood that explains it; returns
 * the nogood's id.  Its literals are the cause (empty: no solution). */
static size_t analyze(struct rs *s, int pkg)
{
	struct rpkg *p = &s->pkgs[pkg];
	int *cause = xcalloc(s->ntrail + 1, sizeof(int));
	size_t ncause = 0;
	bool *used_cons = xcalloc(p->ncons + 1, sizeof(bool));
	size_t *used_ng = NULL, nused = 0, capused = 0;
	struct buf why, statics;
	size_t nstatic = 0;

	buf_init(&why);
	buf_init(&statics);
	for (size_t ci = 0; ci < p->ncands; ci++) {
		const struct resolve_candidate *c = &p->cands[ci];
		size_t best = SIZE_MAX;

		if (c->unusable || (c->yanked && !pinned(p, ci))) {
			if (nstatic++ < 3)
				buf_printf(&statics, "%s%s %s %s", nstatic > 1 ? "; " : "", p->name,
					   c->version, c->unusable ? c->unusable : "is yanked");
			continue;
		}
		/* Prefer a constraint already used, then the oldest source. */
		for (size_t i = 0; i < p->ncons; i++) {
			if (pep440_spec_contains(p->cons[i].spec, c->v, true))
				continue;
			if (used_cons[i]) {
				best = i;
				break;
			}
			if (best == SIZE_MAX || p->cons[i].src < p->cons[best].src)
				best = i;
		}
		if (best != SIZE_MAX) {
			used_cons[best] = true;
			if (p->cons[best].src >= 0)
				add_cause(cause, &ncause, p->cons[best].src);
			continue;
		}
		for (size_t i = 0; i < p->nnogoods; i++) {
			size_t k = p->nogoods[i];

			if (!nogood_blocks(s, k, pkg, (int)ci))
				continue;
			for (size_t m = 0; m < s->ng[k].n; m++)
				if (s->ng[k].lits[m].pkg != pkg)
					add_cause(cause, &ncause,
						  s->pkgs[s->ng[k].lits[m].pkg].decision);
			bool seen = false;

			for (size_t m = 0; m < nused; m++)
				seen |= used_ng[m] == k;
			if (!seen) {
				GROW(used_ng, nused, capused);
				used_ng[nused++] = k;
			}
			break;
		}
	}
	/* What made the package needed (the oldest reason). */
	int req = -2;

	for (size_t i = 0; i < p->ncons; i++)
		if (!p->cons[i].only_constraint && (req == -2 || p->cons[i].src < req))
			req = p->cons[i].src;
	if (req >= 0)
		add_cause(cause, &ncause, req);

	/* The words. */
	bool first = true;

	for (size_t i = 0; i < p->ncons; i++) {
		if (!used_cons[i])
			continue;
		buf_puts(&why, first ? "" : "; ");
		cons_str(s, &p->cons[i], &why);
		first = false;
	}
	if (nstatic) {
		buf_printf(&why, "%s%s%s", first ? "" : "; ", (const char *)statics.data,
			   nstatic > 3 ? "; ..." : "");
		first = false;
	}
	for (size_t i = 0; i < nused; i++) {
		struct buf t;

		buf_init(&t);
		lits_str(s, s->ng[used_ng[i]].lits, s->ng[used_ng[i]].n, &t);
		buf_printf(&why, "%s%s %s (above)", first ? "" : "; ", (const char *)t.data,
			   cannot_phrase(s->ng[used_ng[i]].n));
		buf_free(&t);
		first = false;
	}
	if (p->ncands == 0)
		buf_printf(&why, "%sno index or find-links location has any version of %s",
			   first ? "" : "; ", p->name);
	else if (first)
		buf_printf(&why, "no version of %s is left", p->key);

	GROW(s->ng, s->nng, s->capng);
	struct nogood *g = &s->ng[s->nng];

	g->n = ncause;
	g->lits = xcalloc(ncause + 1, sizeof(*g->lits));
	/* oldest decision first reads best */
	for (size_t i = 0; i < ncause; i++)
		for (size_t k = i + 1; k < ncause; k++)
			if (cause[k] < cause[i]) {
				int t = cause[i];

				cause[i] = cause[k];
				cause[k] = t;
			}
	for (size_t i = 0; i < ncause; i++)
		g->lits[i] = (struct lit){s->trail[cause[i]].pkg, s->trail[cause[i]].cand};
	g->why = (char *)buf_steal(&why, NULL);
	g->used = used_ng;
	g->nused = nused;
	for (size_t i = 0; i < ncause; i++) {
		struct rpkg *q = &s->pkgs[g->lits[i].pkg];

		q->nogoods = xrealloc(q->nogoods, (q->nnogoods + 1) * sizeof(size_t));
		q->nogoods[q->nnogoods++] = s->nng;
		q->activity++;
	}
	p->activity += 2;
	buf_free(&statics);
	free(used_cons);
	free(cause);
	return s->nng++;
}

static void undo_to(struct rs *s, size_t level)
{
	while (s->ntrail > level) {
		struct decision *d = &s->trail[--s->ntrail];

		while (s->nlog > d->log_start)
			cons_pop(s);
		s->pkgs[d->pkg].decided = -1;
		s->pkgs[d->pkg].decision = -1;
	}
}

/* Adds the constraints of one requirement; on a clash with a decided
 * package returns that package's decision index (>= 0), else -1, or a
 * negative errno below -1. */
static int add_req(struct rs *s, const struct pep508_req *rq, int src, const char *where,
		   bool only_constraint)
{
	char why[256];
	int clash = -1;
	int base = pkg_get(s, rq->name, NULL);
	size_t nk = rq->nextras + 1;

	for (size_t k = 0; k < nk; k++) {
		int pk = k == 0 ? base : pkg_get(s, rq->name, rq->extras[k - 1]);
		struct pep440_spec *spec = pep440_spec_parse(rq->specifier, why, sizeof(why));

		if (!spec) {
			snprintf(s->err, sizeof(s->err), "bad specifier \"%s\" for %s: %s",
				 rq->specifier, rq->name, why);
			return -EINVAL - 1;
		}
		_cleanup_free_ char *st = pep440_spec_str(spec);
		cons_push(s, pk, spec, xasprintf("%s%s", s->pkgs[pk].key, st), src, where,
			  only_constraint);
		const struct rpkg *p = &s->pkgs[pk];

		if (p->decided >= 0 && !pep440_spec_contains(spec, p->cands[p->decided].v, true) &&
		    clash < 0)
			clash = p->decision;
	}
	return clash;
}

/* Decision d's dependencies become constraints.  Returns -1, a clashing
 * decision index, or an errno below -1. */
static int add_deps(struct rs *s, int dec)
{
	const struct decision *d = &s->trail[dec];
	struct rpkg *p = &s->pkgs[d->pkg];
	const char *const *deps;
	size_t ndeps;
	int r, clash = -1;
	char why[256];

	if (p->extra) {
		/* "name[x] V" needs "name == V" */
		struct pep508_req self = {
		    .name = p->name, .specifier = xasprintf("==%s", p->cands[d->cand].version)};

		r = add_req(s, &self, dec, NULL, false);
		free(self.specifier);
		if (r != -1)
			return r;
	}
	r = s->pv->dependencies(s->pv->ud, p->name, (size_t)d->cand, &deps, &ndeps, s->err,
				sizeof(s->err));
	if (r < 0)
		return r - 1;
	for (size_t i = 0; i < ndeps; i++) {
		struct pep508_req rq;

		if (pep508_req_parse(deps[i], &rq, why, sizeof(why)) < 0) {
			log_warn("%s %s: bad requirement \"%s\" in its metadata (%s), ignoring",
				 p->name, p->cands[d->cand].version, deps[i], why);
			continue;
		}
		if (rq.marker) {
			s->extra_now = p->extra;
			r = pep508_marker_eval(rq.marker, env_with_extra, s);
			s->extra_now = NULL;
			if (r <= 0) {
				pep508_req_free(&rq);
				continue;
			}
		}
		/* an extra's own dependencies are added by name[x]; the base gets
		 * only the unconditional ones (marker false for extra "") */
		r = add_req(s, &rq, dec, NULL, false);
		pep508_req_free(&rq);
		if (r < -1)
			return r;
		if (r >= 0 && clash < 0)
			clash = r;
	}
	return clash;
}

static void explain(struct rs *s, size_t root, struct buf *b)
{
	/* post-order over the nogoods used, each once */
	size_t *stack = xcalloc(s->nng + 1, sizeof(size_t)),
	       *iter = xcalloc(s->nng + 1, sizeof(size_t));
	bool *seen = xcalloc(s->nng + 1, sizeof(bool));
	size_t sp = 0, lines = 0, skipped = 0;

	buf_puts(b, "cannot install the requirements:\n");
	stack[sp++] = root;
	seen[root] = true;
	while (sp) {
		size_t k = stack[sp - 1];

		if (iter[k] < s->ng[k].nused) {
			size_t u = s->ng[k].used[iter[k]++];

			if (!seen[u]) {
				seen[u] = true;
				stack[sp++] = u;
			}
			continue;
		}
		sp--;
		const struct nogood *g = &s->ng[k];

		if (k != root && lines >= EXPLAIN_MAX_LINES) {
			skipped++;
			continue;
		}
		lines++;
		buf_printf(b, "  %s", g->why);
		if (g->n == 0) {
			buf_puts(b, ", so the requirements cannot be satisfied.\n");
		} else {
			buf_puts(b, ", so ");
			lits_str(s, g->lits, g->n, b);
			buf_printf(b, " %s.\n", cannot_phrase(g->n));
		}
	}
	if (skipped)
		buf_printf(b, "  (%zu more steps of the derivation left out)\n", skipped);
	free(stack);
	free(iter);
	free(seen);
}

static int cmp_pick(const void *a, const void *b)
{
	return strcmp(((const struct resolve_pick *)a)->name,
		      ((const struct resolve_pick *)b)->name);
}

static void rs_free(struct rs *s)
{
	while (s->nlog)
		cons_pop(s);
	for (size_t i = 0; i < s->npkgs; i++) {
		free(s->pkgs[i].key);
		free(s->pkgs[i].name);
		free(s->pkgs[i].extra);
		free(s->pkgs[i].cons);
		free(s->pkgs[i].nogoods);
	}
	free(s->pkgs);
	free(s->trail);
	free(s->log);
	for (size_t i = 0; i < s->nng; i++) {
		free(s->ng[i].lits);
		free(s->ng[i].why);
		free(s->ng[i].used);
	}
	free(s->ng);
}

int resolve_run(const struct resolve_provider *pv, const struct resolve_input *in, size_t nin,
		const struct resolve_opts *opts, struct resolve_result *ret, char **ret_explain)
{
	struct rs s = {.pv = pv, .opts = opts};
	size_t max_steps = opts->max_steps ? opts->max_steps : DEFAULT_MAX_STEPS;
	int r = 0;

	*ret_explain = NULL;
	for (size_t i = 0; i < nin; i++) {
		r = add_req(&s, in[i].req, -1, in[i].where, in[i].constraint);
		if (r < -1) {
			r = r + 1;
			goto fail;
		}
	}
	r = 0;
	for (;;) {
		int pk = pick(&s);

		if (pk < 0)
			break;
		if (++s.steps > max_steps) {
			snprintf(s.err, sizeof(s.err),
				 "gave up after %zu steps (%zu backjumps, %zu conflicts learned)",
				 max_steps, s.backjumps, s.nng);
			r = -ELOOP;
			goto fail;
		}
		r = load(&s, &s.pkgs[pk]);
		if (r < 0)
			goto fail;
		int ci = choose(&s, pk);

		if (ci < 0) {
			size_t k = analyze(&s, pk);

			if (s.ng[k].n == 0) {
				struct buf b;

				buf_init(&b);
				explain(&s, k, &b);
				*ret_explain = (char *)buf_steal(&b, NULL);
				rs_free(&s);
				return -ENOENT;
			}
			/* back to just before the newest decision of the cause */
			int newest = s.pkgs[s.ng[k].lits[s.ng[k].n - 1].pkg].decision;

			log_debug(LOG_CAT_RESOLVER, "conflict on %s: %s; back to step %d",
				  s.pkgs[pk].key, s.ng[k].why, newest);
			undo_to(&s, (size_t)newest);
			s.backjumps++;
			continue;
		}
		struct rpkg *p = &s.pkgs[pk];

		GROW(s.trail, s.ntrail, s.captrail);
		s.trail[s.ntrail] = (struct decision){.pkg = pk, .cand = ci, .log_start = s.nlog};
		p->decided = ci;
		p->decision = (int)s.ntrail++;
		if (pv->hint_candidate)
			pv->hint_candidate(pv->ud, p->name, (size_t)ci);
		log_debug(LOG_CAT_RESOLVER, "try %s %s", p->key, p->cands[ci].version);
		int clash = add_deps(&s, p->decision);

		if (clash < -1) {
			r = clash + 1;
			goto fail;
		}
		if (clash >= 0) {
			/* This version asks for something an earlier decision rules
			 * out: learn the pair, undo this decision. */
			GROW(s.ng, s.nng, s.capng);
			struct nogood *g = &s.ng[s.nng];
			const struct decision *o = &s.trail[clash];
			const struct rpkg *q = &s.pkgs[o->pkg];
			struct buf why;

			buf_init(&why);
			buf_printf(&why, "%s %s requires ", p->key, p->cands[ci].version);
			/* the clashing constraint is the newest on q from this decision */
			for (size_t i = q->ncons; i-- > 0;)
				if (q->cons[i].src == p->decision &&
				    !pep440_spec_contains(q->cons[i].spec, q->cands[q->decided].v,
							  true)) {
					buf_puts(&why, q->cons[i].text);
					break;
				}
			buf_printf(&why, ", but %s %s was chosen", q->key,
				   q->cands[q->decided].version);
			g->n = 2;
			g->lits = xcalloc(2, sizeof(*g->lits));
			g->lits[0] = (struct lit){o->pkg, o->cand};
			g->lits[1] = (struct lit){pk, ci};
			g->why = (char *)buf_steal(&why, NULL);
			g->used = NULL;
			g->nused = 0;
			for (size_t i = 0; i < 2; i++) {
				struct rpkg *t = &s.pkgs[g->lits[i].pkg];

				t->nogoods =
				    xrealloc(t->nogoods, (t->nnogoods + 1) * sizeof(size_t));
				t->nogoods[t->nnogoods++] = s.nng;
				t->activity++;
			}
			s.nng++;
			undo_to(&s, (size_t)p->decision);
			s.backjumps++;
		}
	}

	/* Every decided project (extras are folded into their project). */
	ret->picks = xcalloc(s.npkgs + 1, sizeof(*ret->picks));
	ret->npicks = 0;
	for (size_t i = 0; i < s.npkgs; i++) {
		const struct rpkg *p = &s.pkgs[i];

		if (p->extra || p->decided < 0)
			continue;
		struct resolve_pick *k = &ret->picks[ret->npicks++];

		k->name = xstrdup(p->name);
		k->idx = (size_t)p->decided;
		k->version = xstrdup(p->cands[p->decided].version);
	}
	qsort(ret->picks, ret->npicks, sizeof(*ret->picks), cmp_pick);
	ret->steps = s.steps;
	ret->backjumps = s.backjumps;
	ret->nogoods = s.nng;
	rs_free(&s);
	return 0;
fail:
	*ret_explain = xstrdup(s.err[0] ? s.err : strerror(-r));
	rs_free(&s);
	return r < 0 ? r : -EIO;
}

void resolve_result_free(struct resolve_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->npicks; i++) {
		free(r->picks[i].name);
		free(r->picks[i].version);
	}
	free(r->picks);
	memset(r, 0, sizeof(*r));
}
