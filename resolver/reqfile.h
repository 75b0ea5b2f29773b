/* reqfile: pip-style requirements files.
 *
 * Lines are processed as pip does: backslash continuations are joined
 * (errors name the first physical line), `${VAR}` (A-Z, 0-9, _) is expanded
 * from the environment (unset variables stay as written), comments start at
 * a `#` at the beginning of a line or after whitespace.  Option lines:
 * -r/--requirement and -c/--constraint (nested, paths relative to the file
 * that names them), -i/--index-url, --extra-index-url, -f/--find-links,
 * --no-index, --pre; --trusted-host, --prefer-binary, --only-binary,
 * --require-hashes are accepted and ignored.  Requirement lines are PEP 508
 * (or a bare path/URL of a wheel) followed by per-requirement --hash options.
 * Errors are "FILE:LINE: what is wrong". */
#ifndef SITEFS_REQFILE_H
#define SITEFS_REQFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "resolver/pep508.h"

struct reqfile_req {
	char *text; /* the requirement as written (after ${VAR} expansion) */
	char *file; /* where it came from ("<command line>" for arguments) */
	int line;
	bool constraint;       /* from a -c file: restricts, never adds a project */
	struct pep508_req req; /* url: absolute URL or absolute path for direct references */
	char **sha256;	       /* --hash=sha256:HEX values (lower-case hex); may be empty */
	size_t nsha256;
};

struct reqfile {
	struct reqfile_req *reqs; /* requirements and constraints in file order */
	size_t nreqs;
	char *index_url; /* last -i/--index-url seen, or NULL */
	char **extra_index_urls;
	size_t nextra_index_urls;
	char **find_links; /* URLs, or absolute directory paths */
	size_t nfind_links;
	bool no_index, pre;
};

/* Reads path (and the files it names) and appends to rf (zero it first).
 * constraint: the file was given with -c.  Returns 0, -ENOENT/-EACCES for an
 * unreadable top-level file, -EINVAL/-ELOOP with "FILE:LINE: ..." in err. */
int reqfile_load(struct reqfile *rf, const char *path, bool constraint, char *err, size_t errlen);
/* Parses text as the contents of a requirements file named name whose
 * relative paths resolve against dir.  Same returns as reqfile_load. */
int reqfile_parse(struct reqfile *rf, const char *name, const char *dir, const char *text,
		  bool constraint, char *err, size_t errlen);
/* Adds one requirement given on the command line.  0 or -EINVAL. */
int reqfile_add(struct reqfile *rf, const char *text, bool constraint, char *err, size_t errlen);
void reqfile_free(struct reqfile *rf);

#endif
