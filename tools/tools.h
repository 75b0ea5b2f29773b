/* tools: the command-line layer.  Globals of a command carry an arg_ prefix. */
#ifndef SITEFS_TOOLS_H
#define SITEFS_TOOLS_H

#include <stdbool.h>
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
/* The topmost mount at the absolute path mnt in /proc/self/mountinfo:
 * returns 0 with its filesystem type ("fuse.sitefs") and source (unescaped;
 * caller frees; either pointer may be NULL), -ENOENT when nothing is mounted
 * there, other -errno. */
int mountinfo_find(const char *mnt, char **ret_fstype, char **ret_source);
int cmd_lock(int argc, char **argv);
int cmd_run(int argc, char **argv);

/* Resolution inputs shared by `lock` and `run` (cmd_lock.c).  The strings
 * are borrowed from argv. */
struct lock_args {
	const char **reqfiles, **reqs, **constraints, **extra_index_urls, **find_links;
	size_t nreqfiles, nreqs, nconstraints, nextra_index_urls, nfind_links;
	const char *index_url, *python, *cache_dir;
	bool no_index, pre, verbose;
};
extern const char lock_args_help[];
/* Handles one getopt result of the shared options ('r' 'c' 'i' 'E' 'f' 'N'
 * 'R' 'P' 'C' 'v', and 'W' for a requirement); 1 if it was one, else 0. */
int lock_args_option(struct lock_args *a, int c, const char *arg);
void lock_args_free(struct lock_args *a);
/* Reads the requirements, resolves for ip and returns the lock text in
 * *ret_toml (caller frees), and in *ret_key (when not NULL; caller frees) a
 * hex digest of every input that decides the result.  With ret_toml NULL
 * only the key is computed (no network).  Returns 0, or -errno with a
 * message (for an unsatisfiable set: the explanation) in err. */
int lock_resolve(const struct lock_args *a, const struct interp *ip, const char *cache_dir,
		 char **ret_toml, char **ret_key, char *err, size_t errlen);

/* $SITEFS_CACHE_DIR, else $XDG_CACHE_HOME/sitefs, else ~/.cache/sitefs. Caller frees. */
char *tools_default_cache_dir(void);

/* Chooses, for every package of the lock that applies to this interpreter
 * (its marker), the most specific compatible wheel.  The returned specs
 * borrow strings from lf (keep it alive); caller frees the array.
 * Returns 0, or -EINVAL with a message naming the lock file, line and
 * package (sdist-only, no compatible wheel, missing size, bad marker). */
int lockplan_build(const struct lock_file *lf, const struct interp *ip, struct fs_wheel **ret,
		   size_t *ret_n, char *err, size_t errlen);
/* The wheels lockplan_build will pick whatever the interpreter, as far as
 * the lock alone tells: those of packages with no marker and one wheel (with
 * a URL and a size).  For asking for their metadata while the interpreter
 * is queried; a guess that proves wrong costs one request.  Borrows from lf;
 * caller frees the array (*ret_n may be 0). */
void lockplan_guess(const struct lock_file *lf, struct fs_wheel **ret, size_t *ret_n);

#endif
