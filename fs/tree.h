/* tree: the venv tree builder.  Turns the metadata of a set of wheels into
 * the complete, immutable tree of a venv as `python -m venv` followed by
 * `pip install --no-deps` would lay it out.  Shared by the FUSE mount and by
 * materialize: both walk the same nodes.
 *
 * Pure: no I/O except reading the interpreter's venv activate templates.
 * Bodies are not needed: file nodes point at (wheel, zip entry) and carry
 * the sha256 RECORD promises.  The only bodies needed up front are the small
 * files kept in struct wheel_meta (dist-info RECORD/WHEEL/entry_points.txt/
 * METADATA and every <dist>.data/scripts/ member, whose #!python line is
 * rewritten and so whose size is known only from the body).
 *
 * Layout (what pip does; see shared/guide/packaging.md):
 *   pyvenv.cfg, bin/{python3 -> executable, python -> python3, pythonX.Y ->
 *   python3}, bin/activate{,.csh,.fish}, Activate.ps1, lib64 -> lib, include/,
 *   lib/pythonX.Y/site-packages/<wheel files>, .data/{purelib,platlib} ->
 *   site-packages, scripts -> bin (#!python rewritten, made executable),
 *   headers -> include/site/pythonX.Y/<dist>/, data -> venv root,
 *   console/gui entry points -> bin/ launchers, dist-info INSTALLER,
 *   REQUESTED (when requested) and a rewritten RECORD. */
#ifndef SITEFS_TREE_H
#define SITEFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fetch/zipcd.h"

/* A small wheel member whose bytes were read at metadata time. */
struct wheel_file {
	char *name; /* the zip entry name */
	uint8_t *data;
	size_t len;
};

/* What the catalog knows about one wheel. */
struct wheel_meta {
	struct zip_cd *cd;
	struct wheel_file *files; /* sorted by name */
	size_t nfiles;
};
/* true if this zip entry's bytes must be kept in wheel_meta.files. */
bool tree_wants_file(const char *entry_name);
const struct wheel_file *wheel_meta_file(const struct wheel_meta *m, const char *name);
void wheel_meta_clear(struct wheel_meta *m);

struct tree_wheel {
	const char *filename; /* wheel filename, for messages */
	const struct wheel_meta *meta; /* borrowed for the life of the tree */
	bool requested;       /* write REQUESTED */
};

struct tree_python {
	const char *executable; /* absolute path of the base interpreter */
	const char *version;    /* "3.11.2" */
	int major, minor;
	const char *stdlib;     /* dir holding venv/scripts/{common,posix}/ templates */
};

struct tree_opts {
	const char *venv_root;  /* absolute path the venv will live at (mountpoint / DEST) */
	const char *installer;  /* INSTALLER text, e.g. "sitefs" */
	struct tree_python py;
	int64_t mtime;          /* mtime for generated files and directories */
};

enum tree_kind {
	TREE_DIR,
	TREE_BODY, /* bytes come from a wheel entry */
	TREE_DATA, /* bytes generated in memory (tree->blob) */
	TREE_LINK, /* symlink, target in tree->strings */
};

struct tree_node {
	uint32_t parent;   /* node index; the root (index 0) is its own parent */
	uint32_t name;     /* offset of the NUL-terminated name in tree->strings */
	uint8_t kind;      /* enum tree_kind */
	uint8_t has_sha;   /* BODY: sha256 below comes from RECORD */
	uint32_t mode;     /* full st_mode (type | permissions) */
	uint64_t size;
	int64_t mtime;
	union {
		struct {
			uint32_t first, count; /* children: tree->children[first .. first+count), sorted by name */
		} dir;
		struct {
			uint32_t wheel, entry; /* index in the tree_wheel array, index in its cd */
		} body;
		struct {
			uint64_t off; /* bytes at tree->blob + off, size bytes */
		} data;
		struct {
			uint32_t target; /* offset in tree->strings */
		} link;
	};
	uint8_t sha256[32];
};

struct tree {
	struct tree_node *nodes; /* nodes[0] is the root; FUSE inode = index + 1 */
	size_t n;
	uint32_t *children;
	char *strings;
	uint8_t *blob;
	size_t nfiles, nbodies; /* counts for stats */
	uint64_t body_bytes;    /* sum of BODY sizes */
	char **warnings;        /* e.g. two wheels writing one path; caller may log */
	size_t nwarnings;
};

/* Builds the tree.  Returns 0 and *ret (free with tree_free); -EINVAL with a
 * message naming the wheel and entry for wheels we cannot install (no or
 * several dist-info dirs, missing WHEEL, bad RECORD, unsupported
 * Wheel-Version major). */
int tree_build(const struct tree_opts *opts, const struct tree_wheel *wheels, size_t nwheels,
	       struct tree **ret, char *err, size_t errlen);
struct tree *tree_free(struct tree *t);

static inline const char *tree_name(const struct tree *t, const struct tree_node *nd)
{
	return t->strings + nd->name;
}
/* Child named name of directory node dir, or -1. O(log n). */
int64_t tree_lookup(const struct tree *t, uint32_t dir, const char *name);
/* Resolve a '/'-separated path relative to the root; -1 if absent. */
int64_t tree_lookup_path(const struct tree *t, const char *path);
/* Writes the path of node i relative to the root into out; returns length or -ENAMETOOLONG. */
int tree_path(const struct tree *t, uint32_t i, char *out, size_t outlen);

#endif
