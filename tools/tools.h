/* tools: the command-line layer.  Globals of a command carry an arg_ prefix. */
#ifndef SITEFS_TOOLS_H
#define SITEFS_TOOLS_H

#include <stddef.h>

#include "fs/fs.h"
#include "resolver/interp.h"
#include "resolver/lockfile.h"

int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_materialize(int argc, char **argv);
int cmd_prefetch(int argc, char **argv);

/* mountstate.c: what a running mount was made from (all absolute paths). */
struct mountstate {
	char *mountpoint, *lock, *cache, *python;
};
/* Writes <cache>/mounts/<id>.state; returns 0 and *ret_path (caller frees;
 * becomes the mount's fsname) or -errno (-EINVAL: a path unfit for it). */
int mountstate_write(const struct mountstate *ms, char **ret_path);
/* The state of the sitefs mount at dir: 0 and *ret (free with
 * mountstate_free); -ENOENT when dir is no sitefs mount, -ENODATA when the
 * mount left no (valid) state, other -errno. */
int mountstate_find(const char *dir, struct mountstate **ret);
struct mountstate *mountstate_free(struct mountstate *ms);

/* $SITEFS_CACHE_DIR, else $XDG_CACHE_HOME/sitefs, else ~/.cache/sitefs. Caller frees. */
char *tools_default_cache_dir(void);

/* Chooses, for every package of the lock that applies to this interpreter
 * (its marker), the most specific compatible wheel.  The returned specs
 * borrow strings from lf (keep it alive); caller frees the array.
 * Returns 0, or -EINVAL with a message naming the lock file, line and
 * package (sdist-only, no compatible wheel, missing size, bad marker). */
int lockplan_build(const struct lock_file *lf, const struct interp *ip, struct fs_wheel **ret,
		   size_t *ret_n, char *err, size_t errlen);

#endif
