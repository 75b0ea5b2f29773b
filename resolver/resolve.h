/* resolve: dependency resolution by backtracking with learning.
 *
 * DESIGN
 * - Packages are projects, plus one virtual package "name[extra]" per extra
 *   in use, which depends on "name==V" and on the dependencies the extra
 *   adds (the scheme resolvelib and uv use), so extras never need special
 *   cases in the search.
 * - The search decides one package at a time: newest acceptable version
 *   first (pre-releases only with `pre`, when a specifier names one, or when
 *   nothing else matches; yanked versions only when pinned with ==/===).
 *   Each decision adds its dependencies as constraints.
 * - A dead end (no version of P is left) is explained by a set of earlier
 *   decisions: the ones whose constraints exclude every version of P, the
 *   one that made P needed, and the other halves of learned nogoods that
 *   exclude versions.  That set is learned as a nogood ("these cannot all be
 *   installed"), the search jumps back to the newest decision in it, and the
 *   nogood keeps it from being repeated (conflict-driven backjumping with
 *   clause learning, as in CDCL solvers).  A dead end explained by the
 *   top-level requirements alone means there is no solution; the chain of
 *   nogoods that led there is the explanation.
 * - Which package next: the one most involved in conflicts, then the
 *   earliest discovered.
 * - The provider supplies versions and dependencies and may prefetch: the
 *   resolver calls hint() as soon as a package shows up, so the data can be
 *   on its way before it is needed.
 * Not thread-safe; one resolution per struct. */
#ifndef SITEFS_RESOLVE_H
#define SITEFS_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>

#include "resolver/pep440.h"
#include "resolver/pep508.h"

struct resolve_candidate {
	const char *version;		/* as the project spells it */
	const struct pep440_version *v; /* parsed (owned by the provider) */
	bool yanked;
	const char *unusable; /* why it cannot be installed, or NULL */
};

struct resolve_provider {
	void *ud;
	/* Versions of a project (PEP 503 normalized name), newest first.  The
	 * array stays valid (and unchanged) for the whole resolution.  0, or
	 * -errno with a message. */
	int (*candidates)(void *ud, const char *name, const struct resolve_candidate **ret,
			  size_t *ret_n, char *err, size_t errlen);
	/* Requires-Dist lines of one candidate (index into candidates()).
	 * Valid for the whole resolution.  0 or -errno with a message. */
	int (*dependencies)(void *ud, const char *name, size_t idx, const char *const **ret,
			    size_t *ret_n, char *err, size_t errlen);
	/* Optional: name will be needed soon (start fetching). */
	void (*hint)(void *ud, const char *name);
	/* Optional: candidate idx of name is being tried (fetch its metadata). */
	void (*hint_candidate)(void *ud, const char *name, size_t idx);
};

struct resolve_input {
	const char *text;	      /* as written, for messages */
	const char *where;	      /* "req.txt:3", for messages */
	const struct pep508_req *req; /* markers already known to apply */
	bool constraint;	      /* -c: restricts, never adds */
};

struct resolve_opts {
	bool pre;	   /* --pre */
	pep508_env_fn env; /* marker environment (without "extra") */
	void *env_ud;
	size_t max_steps; /* 0: default (200000 decisions) */
};

struct resolve_pick {
	char *name;    /* normalized project name */
	size_t idx;    /* candidate index */
	char *version; /* copy of the candidate's version */
};

struct resolve_result {
	struct resolve_pick *picks; /* sorted by name */
	size_t npicks;
	size_t steps, backjumps, nogoods;
};

/* Resolves.  Returns 0 and fills *ret (free with resolve_result_free);
 * -ENOENT when there is no solution (*ret_explain: a multi-line
 * explanation, caller frees); other -errno (provider failures, too many
 * steps) with *ret_explain saying what. */
int resolve_run(const struct resolve_provider *pv, const struct resolve_input *in, size_t nin,
		const struct resolve_opts *opts, struct resolve_result *ret, char **ret_explain);
void resolve_result_free(struct resolve_result *r);

#endif
