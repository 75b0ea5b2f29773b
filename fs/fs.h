/* fs: the filesystem side of sitefs — the only header tools/ includes.
 *
 * A mount is prepared in the foreground (catalog lookups, metadata range
 * requests, tree build), then served.  fs/ never sees the resolver: tools/
 * turns a lock file into fs_wheel specs. */
#ifndef SITEFS_FS_H
#define SITEFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs/tree.h"

struct fs_wheel {
	const char *filename; /* wheel filename (messages, cache of whole wheels) */
	const char *url;      /* http(s)://, file:// or a local path */
	uint64_t size;        /* from the lock: needed for the tail range */
	uint8_t sha256[32];   /* of the whole wheel file */
	bool requested;
};

struct fs_config {
	const char *cache_dir;    /* created if missing */
	const char *venv_root;    /* absolute path baked into scripts */
	const char *installer;    /* INSTALLER text; NULL = "sitefs" */
	struct tree_python py;
	const struct fs_wheel *wheels;
	size_t nwheels;
	const char *profile; /* absolute path: record opened bodies there, replay it (or NULL) */
	struct fs_early *early; /* or NULL: taken by fs_prepare (even when it fails) */
	const char *pyc_magic; /* the interpreter's importlib.util.MAGIC_NUMBER in hex, or NULL
				  (then a profile carries no pycs) */
};

struct fs_ctx;

/* The part of preparing a mount that needs no interpreter, started while
 * the interpreter is still being asked: opens the cache and the catalog,
 * starts the fetch engine and asks for the metadata tails of guess[] (the
 * wheels the lock names whatever the interpreter; those in the catalog are
 * skipped).  fs_prepare, given it in fs_config.early, uses the answers of
 * the wheels it mounts and cancels the rest.  Starts a thread: call after
 * any fork().  guess[] may be freed on return.  Returns 0 and *ret, or
 * -errno with a message (then fs_prepare alone would fail the same way). */
struct fs_early;
int fs_early_start(const char *cache_dir, const struct fs_wheel *guess, size_t n,
		   struct fs_early **ret, char *err, size_t errlen);
/* When fs_prepare is not called after all. */
struct fs_early *fs_early_free(struct fs_early *e);

/* Opens the cache and catalog, loads every wheel's metadata (from the
 * catalog, else with range requests, in parallel) and builds the tree.
 * Starts the fetch engine thread: call after any fork().
 * Returns 0 and *ret; -errno with a message naming the wheel/URL in err. */
int fs_prepare(const struct fs_config *cfg, struct fs_ctx **ret, char *err, size_t errlen);
struct fs_ctx *fs_free(struct fs_ctx *ctx);
const struct tree *fs_tree(const struct fs_ctx *ctx);

/* Statistics of the preparation, for the CLI to print. */
struct fs_prepare_stats {
	size_t wheels, wheels_from_catalog;
	uint64_t requests, wire_bytes;
	uint64_t elapsed_ns;
};
void fs_get_prepare_stats(const struct fs_ctx *ctx, struct fs_prepare_stats *ret);

/* Returns an O_RDONLY fd on the verified body of BODY node i (fetching,
 * inflating, verifying and caching it on first use; single-flight).  Caller
 * closes.  -EIO when the body fails verification or cannot be fetched. */
int fs_body_open(struct fs_ctx *ctx, uint32_t i);

/* Mounts at mountpoint and serves until unmounted or signalled.
 * fuse_opts: extra "-o" option string or NULL.  When mounted, writes one
 * byte '0' to ready_fd (if >= 0) and closes it — the daemon handshake.
 * Returns 0 on clean unmount, -errno on failure (logged). */
int fs_serve(struct fs_ctx *ctx, const char *mountpoint, const char *fuse_opts, bool debug,
	     int ready_fd);

/* --- materialize.c: writing the tree out as an ordinary directory. */
enum fs_link_mode {
	FS_LINK_AUTO,     /* clone, else hardlink, else copy (per file, sticky downgrade) */
	FS_LINK_CLONE,    /* reflink (FICLONE); fails where unsupported */
	FS_LINK_HARDLINK, /* link to a per-mode copy under <cache>/links/ */
	FS_LINK_COPY,
};
/* "auto", "clone", "hardlink", "copy". */
const char *fs_link_mode_name(enum fs_link_mode m);

/* Called from worker threads, one at a time, at most every ~50 ms and once at the end. */
typedef void (*fs_progress_fn)(void *ud, uint64_t done_bytes, uint64_t total_bytes);

struct fs_materialize_opts {
	const char *dest;          /* existing empty directory to fill; NULL = only fill the cache */
	enum fs_link_mode link_mode;
	unsigned threads;          /* workers; 0 = 8 */
	fs_progress_fn progress;   /* or NULL */
	void *progress_ud;
	const volatile int *cancel; /* or NULL; non-zero stops the run with -ECANCELED */
};

struct fs_materialize_stats {
	size_t files, dirs, links;  /* created in dest */
	size_t cloned, hardlinked, copied; /* how the body files were written */
	size_t wheels_fetched;      /* whole-wheel downloads (one request each) */
	uint64_t fetched_bytes;     /* their size */
	size_t bodies_filled;       /* bodies that were not in the cache (nor in links/) */
	uint64_t body_bytes;        /* bytes of all bodies of the tree */
	uint64_t elapsed_ns;
};

/* Writes the whole tree below o->dest or, without it, makes every body of
 * the tree available in the body store.  A wheel with bodies missing from
 * the cache is downloaded whole in one request (in parallel with others),
 * checked against the lock's sha256 and kept in the cache (wheels/); with
 * a dest, hardlink and copy mode inflate its missing bodies straight into
 * dest, the other modes through the body store.  Files are created by
 * o->threads workers.
 * Call after fs_prepare, with no FUSE session running on ctx.
 * Returns 0 and fills *ret (may be NULL); -errno with a message in err
 * (-ECANCELED when *o->cancel became non-zero).  On failure dest holds a
 * partial tree: the caller removes it. */
int fs_materialize(struct fs_ctx *ctx, const struct fs_materialize_opts *o,
		   struct fs_materialize_stats *ret, char *err, size_t errlen);

#endif
