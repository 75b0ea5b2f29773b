/* lockwrite: a deterministic PEP 751 pylock.toml writer.
 *
 * Same input, same bytes: packages sorted by name, no timestamps, fixed key
 * order, one wheel per package (the one chosen for the target interpreter).
 * URLs must already be free of credentials (index_redact). */
#ifndef SITEFS_LOCKWRITE_H
#define SITEFS_LOCKWRITE_H

#include <stddef.h>
#include <stdint.h>

struct lockwrite_pkg {
	const char *name; /* normalized */
	const char *version;
	const char *index; /* index URL, or NULL (find-links, direct reference) */
	const char *filename;
	const char *url;  /* http(s):// URL, or NULL */
	const char *path; /* absolute local path, or NULL */
	uint64_t size;
	uint8_t sha256[32];
};

struct lockwrite_meta {
	const char *environment;     /* a PEP 508 marker the lock was made for, or NULL */
	const char *requires_python; /* or NULL */
	const char *created_by;	     /* NULL: "sitefs" */
};

/* Returns the TOML text (caller frees). */
char *lockwrite_toml(const struct lockwrite_pkg *pkgs, size_t n, const struct lockwrite_meta *m);

#endif
