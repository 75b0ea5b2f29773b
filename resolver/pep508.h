/* pep508: dependency specifiers and environment markers. */
#ifndef SITEFS_PEP508_H
#define SITEFS_PEP508_H

#include <stdbool.h>
#include <stddef.h>

struct pep508_marker; /* parsed marker expression */

/* Looks up a marker variable ("python_version", "extra", ...); NULL = unknown. */
typedef const char *(*pep508_env_fn)(void *ud, const char *key);

struct pep508_marker *pep508_marker_parse(const char *s, char *err, size_t errlen);
void pep508_marker_free(struct pep508_marker *m);
/* Evaluates as packaging.markers.Marker.evaluate: version comparison for
 * version-like variables, string comparison otherwise, `in`/`not in`.
 * Returns 1 true, 0 false, -EINVAL if a variable is unknown. */
int pep508_marker_eval(const struct pep508_marker *m, pep508_env_fn env, void *ud);

struct pep508_req {
	char *name;     /* as written */
	char **extras;
	size_t nextras;
	char *specifier; /* "" when none; parse with pep440_spec_parse */
	char *url;       /* for "name @ url", else NULL */
	struct pep508_marker *marker; /* or NULL */
};
/* Parses one requirement line.  Returns 0 or -EINVAL with a message naming the column. */
int pep508_req_parse(const char *s, struct pep508_req *ret, char *err, size_t errlen);
void pep508_req_free(struct pep508_req *r);

#endif
