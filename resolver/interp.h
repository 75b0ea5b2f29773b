/* interp: what we need to know about a Python interpreter, asked once by
 * running it with a short script, and cached under the cache directory keyed
 * by the interpreter's resolved path, size and mtime. */
#ifndef SITEFS_INTERP_H
#define SITEFS_INTERP_H

#include <stddef.h>

struct interp_kv {
	char *key, *value;
};

struct interp {
	char *python;       /* as given (e.g. "python3") */
	char *executable;   /* sys._base_executable (what venv links bin/python3 to) */
	char *version;      /* platform.python_version(): "3.11.2" */
	int major, minor;
	char *implementation; /* sys.implementation.name: "cpython" */
	char *cache_tag;      /* sys.implementation.cache_tag: "cpython-311" */
	char *magic;          /* importlib.util.MAGIC_NUMBER as hex */
	char *stdlib;         /* sysconfig stdlib dir (venv's activate templates live there) */
	char *platlib_rel;    /* "lib/python3.11/site-packages" */
	char *include_rel;    /* "include/site/python3.11" (headers go in <include_rel>/<dist>) */
	char **tags;          /* supported tags "py-abi-plat", most preferred first */
	size_t ntags;
	struct interp_kv *markers; /* PEP 508 environment (python_version, sys_platform, ...) */
	size_t nmarkers;
	void *tag_index;      /* private: tag -> priority hash */
};

/* Runs (or reads the cached answer of) python.  cache_dir may be NULL (no
 * caching).  Returns 0 and *ret (free with interp_free); -ENOENT if python
 * is not found on PATH; -EINVAL with a message if it fails or answers
 * garbage. */
int interp_query(const char *python, const char *cache_dir, struct interp **ret, char *err,
		 size_t errlen);
struct interp *interp_free(struct interp *ip);

/* Priority of a single tag "py-abi-plat" (0 = most preferred), or -1 if the
 * interpreter does not support it. O(1). */
int interp_tag_priority(const struct interp *ip, const char *tag);
/* Marker variable value, or NULL. */
const char *interp_marker(const struct interp *ip, const char *key);

#endif
