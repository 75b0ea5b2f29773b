/* mountstate: what a running mount was made from, so that other commands
 * (materialize, prefetch) can take a mountpoint as their source.
 *
 * `sitefs mount` writes <cache>/mounts/<16 hex of sha256(mountpoint)>.state
 * (key=value lines: mountpoint, lock, cache, python) and mounts with
 * fsname=<that path>.  The kernel shows the fsname as the mount source in
 * /proc/self/mountinfo, so a mountpoint leads to its state file without
 * xattrs, magic files in the tree or a well-known runtime directory.  The
 * file is removed when the daemon exits cleanly; a stale one is harmless
 * (it is only read when mountinfo names it for a live fuse.sitefs mount). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "tools/tools.h"

static char *mountstate_path(const char *cache_dir, const char *mountpoint)
{
	uint8_t sha[32];
	char hex[65];
	sha256_buf(mountpoint, strlen(mountpoint), sha);
	hex_encode(sha, 32, hex);
	return xasprintf("%s/mounts/%.16s.state", cache_dir, hex);
}

static bool value_ok(const char *s)
{
	/* one line each */
	return s && !strpbrk(s, "\n\r");
}

int mountstate_write(const struct mountstate *ms, char **ret_path)
{
	if (!value_ok(ms->mountpoint) || !value_ok(ms->lock) || !value_ok(ms->cache) ||
	    !value_ok(ms->python))
		return -EINVAL;
	char *path = mountstate_path(ms->cache, ms->mountpoint);
	if (strpbrk(path, ", \t\\")) { /* ',' separates FUSE options */
		free(path);
		return -EINVAL;
	}
	char *dir = xasprintf("%s/mounts", ms->cache);
	int r = mkdir_p(dir, 0755);
	free(dir);
	char *text = xasprintf("mountpoint=%s\nlock=%s\ncache=%s\npython=%s\n", ms->mountpoint,
			       ms->lock, ms->cache, ms->python);
	if (r == 0)
		r = file_write_atomic(path, text, strlen(text), 0644);
	free(text);
	if (r < 0) {
		free(path);
		return r;
	}
	*ret_path = path;
	return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

int mountinfo_find(const char *mnt, char **ret_fstype, char **ret_source)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char *line = NULL;
	size_t cap = 0;
	int r = -ENOENT;
	/* the last match is the top of a stack of mounts */
	while (getline(&line, &cap, f) > 0) {
		/* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
		char *save, *tok[5];
		int n = 0;
		for (char *p = strtok_r(line, " \n", &save); p && n < 5;
		     p = strtok_r(NULL, " \n", &save))
			tok[n++] = p;
		if (n < 5)
			continue;
		unescape(tok[4]);
		if (strcmp(tok[4], mnt))
			continue;
		char *p;
		while ((p = strtok_r(NULL, " \n", &save)) && strcmp(p, "-"))
			;
		char *fstype = p ? strtok_r(NULL, " \n", &save) : NULL;
		char *source = fstype ? strtok_r(NULL, " \n", &save) : NULL;
		if (!fstype || !source)
			continue;
		unescape(source);
		if (ret_fstype) {
			free(*ret_fstype);
			*ret_fstype = xstrdup(fstype);
		}
		if (ret_source) {
			free(*ret_source);
			*ret_source = xstrdup(source);
		}
		r = 0;
	}
	free(line);
	fclose(f);
	return r;
}

/* The source field of the fuse.sitefs mount at mnt, or NULL. */
static char *mount_source(const char *mnt)
{
	char *fstype = NULL, *source = NULL;
	if (mountinfo_find(mnt, &fstype, &source) == 0 && !strcmp(fstype, "fuse.sitefs")) {
		free(fstype);
		return source;
	}
	free(fstype);
	free(source);
	return NULL;
}

struct mountstate *mountstate_free(struct mountstate *ms)
{
	if (!ms)
		return NULL;
	free(ms->mountpoint);
	free(ms->lock);
	free(ms->cache);
	free(ms->python);
	free(ms);
	return NULL;
}

int mountstate_find(const char *dir, struct mountstate **ret)
{
	char mnt[PATH_MAX];
	if (!realpath(dir, mnt))
		return -errno;
	char *src = mount_source(mnt);
	if (!src)
		return -ENOENT;
	char *text = NULL;
	size_t len;
	int r = src[0] == '/' ? file_read_all(src, &text, &len) : -ENOENT;
	free(src);
	if (r < 0)
		return r == -ENOENT ? -ENODATA : r;
	struct mountstate *ms = xcalloc(1, sizeof(*ms));
	char *save;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(l, '=');
		if (!eq)
			continue;
		*eq = 0;
		char **slot = !strcmp(l, "mountpoint") ? &ms->mountpoint
			      : !strcmp(l, "lock")     ? &ms->lock
			      : !strcmp(l, "cache")    ? &ms->cache
			      : !strcmp(l, "python")   ? &ms->python
						       : NULL;
		if (slot && !*slot)
			*slot = xstrdup(eq + 1);
	}
	free(text);
	if (!ms->mountpoint || strcmp(ms->mountpoint, mnt) || !ms->lock || !ms->cache ||
	    !ms->python) {
		mountstate_free(ms);
		return -ENODATA;
	}
	*ret = ms;
	return 0;
}
