/* pep440: versions and specifiers (PEP 440, as the `packaging` library
 * implements it: the oracle for the tests). */
#ifndef SITEFS_PEP440_H
#define SITEFS_PEP440_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pep440_version; /* opaque; parsed and normalized */

/* Returns NULL if s is not a valid PEP 440 version. Caller frees with pep440_free. */
struct pep440_version *pep440_parse(const char *s);
void pep440_free(struct pep440_version *v);
/* <0, 0, >0 like strcmp, by PEP 440 ordering. */
int pep440_cmp(const struct pep440_version *a, const struct pep440_version *b);
/* Normalized string form (as packaging's str(Version(s))); caller frees. */
char *pep440_str(const struct pep440_version *v);
bool pep440_is_prerelease(const struct pep440_version *v); /* pre or dev */

struct pep440_spec; /* a comma-separated specifier set */
/* Returns NULL with a message in err if invalid.  "" is the empty set (matches all). */
struct pep440_spec *pep440_spec_parse(const char *s, char *err, size_t errlen);
void pep440_spec_free(struct pep440_spec *s);
/* Does v satisfy every clause? prereleases: allow pre-releases (as
 * packaging's SpecifierSet.contains(v, prereleases=...)); when false a
 * pre-release still matches if a clause names a pre-release explicitly. */
bool pep440_spec_contains(const struct pep440_spec *s, const struct pep440_version *v,
			  bool prereleases);
char *pep440_spec_str(const struct pep440_spec *s);

#endif
