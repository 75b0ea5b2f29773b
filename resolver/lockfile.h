/* lockfile: reads a PEP 751 pylock.toml into packages and their wheels.
 *
 * Errors name the file, the line and what is wrong
 * ("pylock.toml:12:1: package 'foo': wheel has no sha256 hash"). */
#ifndef SITEFS_LOCKFILE_H
#define SITEFS_LOCKFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lock_wheel {
	char *filename; /* "name" key, else the last segment of url/path */
	char *url;      /* absolute URL, or NULL when path is given */
	char *path;     /* local path resolved against the lock file's directory, or NULL */
	uint64_t size;
	bool has_size;
	uint8_t sha256[32];
	bool has_sha256;
	int line;
};

struct lock_package {
	char *name; /* as written */
	char *version; /* may be NULL (PEP 751 allows it for some sources) */
	char *marker;  /* PEP 508 marker or NULL */
	char *index;   /* or NULL */
	char *requires_python;
	struct lock_wheel *wheels;
	size_t nwheels;
	bool has_sdist; /* also true for vcs / directory / archive sources */
	bool requested; /* [packages.tool.sitefs] requested = true: a top-level requirement */
	int line;
};

struct lock_file {
	char *path;
	char *lock_version;
	char *requires_python;
	char *created_by;
	char **extras, **dependency_groups; /* top-level lists (may be empty) */
	size_t nextras, ndependency_groups;
	struct lock_package *pkgs;
	size_t npkgs;
};

/* Loads and validates path.  Returns 0 and *ret (free with lockfile_free),
 * -ENOENT/-EACCES when unreadable, -EINVAL with a message for bad content. */
int lockfile_load(const char *path, struct lock_file **ret, char *err, size_t errlen);
/* Same, from a buffer; path is only used in messages and to resolve relative paths. */
int lockfile_parse(const char *path, const char *text, size_t len, struct lock_file **ret,
		   char *err, size_t errlen);
struct lock_file *lockfile_free(struct lock_file *lf);

#endif
