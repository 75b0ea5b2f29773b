/* cache: the content-addressed body store.
 *
 * DESIGN
 * - A body lives at <dir>/bodies/<2 hex>/<62 hex> named by the sha256 of its
 *   bytes (RECORD's hash), so identical files of different wheels and
 *   versions share one copy.  Entries without a RECORD hash are keyed by
 *   sha256(wheel sha256 || entry name) under bodies/x<2 hex>/ instead, so a
 *   key never pretends to be a content hash.
 * - Fills are single-flight per key: the first caller fills a temp file in
 *   <dir>/tmp and renames it into place; concurrent callers for the same key
 *   wait on the in-flight record and then open the published file.  Several
 *   daemons may fill the same key at once: rename() makes the last one win
 *   with identical bytes.
 * - The store is untrusted on read: a body whose size is wrong is removed
 *   and fetched again.  No fsync: a torn file after a crash fails that check.
 * - A published body may vanish at any time (that removal racing a new
 *   fill, another daemon, an rm of the cache): the filler returns an fd on
 *   the file it published, never reopens the path, and a waiter that finds
 *   nothing after a successful fill treats the key as never filled.
 * - A fill may also publish neighbours that rode the same request: the
 *   caller that becomes the filler claims them (an in-flight record each)
 *   under the same lock as its own key, so two first openers of sibling
 *   files cannot both start a fill of the same run: the second waits.  The
 *   fill publishes or abandons each (cache_publish); waiters of an
 *   abandoned neighbour fill it themselves.
 * - Locking: cache->lock protects the in-flight list only; it is never held
 *   across a fill (network I/O).
 * Deliberately missing (for now): size limits and LRU eviction. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

struct inflight {
	uint8_t key[32];
	bool verified;
	bool done;
	int result;
	int refs; /* protected by cache->lock */
	struct inflight *next;
};

struct cache {
	char *dir;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast when any fill completes */
	struct inflight *inflight; /* protected by lock */
};

/* Fills left behind by a killed process: a live fill writes all the time, so
 * a temp file untouched for an hour has no writer any more. */
#define TMP_STALE_S 3600
static void sweep_tmp(const char *dir)
{
	char *tmp = xasprintf("%s/tmp", dir);
	DIR *d = opendir(tmp);
	if (d) {
		struct dirent *de;
		time_t now = time(NULL);
		while ((de = readdir(d))) {
			struct stat st;
			if (de->d_name[0] == '.' ||
			    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    now - st.st_mtime < TMP_STALE_S)
				continue;
			if (unlinkat(dirfd(d), de->d_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) == 0)
				log_debug(LOG_CAT_CACHE, "removed stale \"%s/%s\"", tmp, de->d_name);
		}
		closedir(d);
	}
	free(tmp);
}

int cache_open(const char *dir, struct cache **ret)
{
	char *sub[] = {xasprintf("%s/bodies", dir), xasprintf("%s/tmp", dir),
		       xasprintf("%s/wheels", dir)};
	int r = 0;
	for (size_t i = 0; i < ARRAY_SIZE(sub); i++) {
		if (r == 0)
			r = mkdir_p(sub[i], 0755);
		free(sub[i]);
	}
	if (r < 0)
		return r;
	sweep_tmp(dir);
	struct cache *c = xcalloc(1, sizeof(*c));
	c->dir = xstrdup(dir);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	*ret = c;
	return 0;
}

struct cache *cache_close(struct cache *c)
{
	if (!c)
		return NULL;
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->dir);
	free(c);
	return NULL;
}

static char *body_path(struct cache *c, const uint8_t key[32], bool verified)
{
	char hex[65];
	hex_encode(key, 32, hex);
	return xasprintf("%s/bodies/%s%.2s/%s", c->dir, verified ? "" : "x", hex, hex + 2);
}

char *cache_wheel_path(struct cache *c, const uint8_t sha[32])
{
	char hex[65];
	hex_encode(sha, 32, hex);
	return xasprintf("%s/wheels/%s.whl", c->dir, hex);
}

int cache_tmpfile(struct cache *c, char **ret_path)
{
	char *path = xasprintf("%s/tmp/fill.XXXXXX", c->dir);
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		free(path);
		return r;
	}
	*ret_path = path;
	return fd;
}

/* Opens a published body; a wrong size means a torn or tampered file.  It
 * is dropped only while path still names it: a fill (of this process or
 * another) may have published a good copy there since the open.  (Between
 * that check and the unlink a good copy can still go: callers treat a body
 * that vanishes as one never published.) */
static int open_checked(const char *path, uint64_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ELOOP ? -ENOENT : -errno;
	struct stat st, now;
	if (fstat(fd, &st) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == size)
		return fd;
	close(fd);
	if (stat(path, &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino) {
		log_debug(LOG_CAT_CACHE, "\"%s\" has the wrong size, dropping it", path);
		unlink(path);
	}
	return -ENOENT;
}

/* Fills a temp file and renames it to path.  Returns an O_RDONLY fd on the
 * file it published, not on whatever path names by then (another fill may
 * have replaced it, a torn copy's cleanup may have dropped it), or -errno. */
static int fill_and_publish(struct cache *c, const char *path, uint64_t size, cache_fill_fn fill,
			    void *ud)
{
	char *tmp;
	int fd = cache_tmpfile(c, &tmp);
	if (fd < 0)
		return fd;
	int r = fill(ud, fd);
	struct stat st;
	if (r == 0 && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size))
		r = -EIO;
	if (r == 0 && fchmod(fd, 0444) < 0)
		r = -errno;
	close(fd);
	int ro = -1;
	if (r == 0 && (ro = open(tmp, O_RDONLY | O_CLOEXEC)) < 0)
		r = -errno;
	if (r == 0) {
		char *dir = xstrndup(path, (size_t)(strrchr(path, '/') - path));
		r = mkdir_p(dir, 0755);
		free(dir);
		if (r == 0 && rename(tmp, path) < 0)
			r = -errno;
	}
	if (r < 0) {
		unlink(tmp);
		if (ro >= 0)
			close(ro);
	}
	free(tmp);
	return r < 0 ? r : ro;
}

/* The in-flight record of key, or NULL.  Caller holds c->lock. */
static struct inflight *find_inflight(struct cache *c, const uint8_t key[32], bool verified)
{
	struct inflight *f;
	for (f = c->inflight; f; f = f->next)
		if (f->verified == verified && !memcmp(f->key, key, 32))
			return f;
	return NULL;
}

static struct inflight *add_inflight(struct cache *c, const uint8_t key[32], bool verified)
{
	struct inflight *f = xcalloc(1, sizeof(*f));
	memcpy(f->key, key, 32);
	f->verified = verified;
	f->refs = 1;
	f->next = c->inflight;
	c->inflight = f;
	return f;
}

/* Unlinks f, records the result and wakes its waiters.  Caller holds c->lock. */
static void end_inflight(struct cache *c, struct inflight *f, int result)
{
	for (struct inflight **p = &c->inflight; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
	f->done = true;
	f->result = result;
	if (--f->refs == 0)
		free(f);
	pthread_cond_broadcast(&c->cond);
}

static bool published(struct cache *c, const struct cache_claim *cl)
{
	char *path = body_path(c, cl->key, cl->verified);
	struct stat st;
	bool have = stat(path, &st) == 0 && (uint64_t)st.st_size == cl->size;
	free(path);
	return have;
}

int cache_get(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
	      struct cache_claim *claims, size_t nclaims, cache_fill_fn fill, void *ud)
{
	char *path = body_path(c, key, verified);
	int fd;
again:
	fd = open_checked(path, size);
	if (fd >= 0 || fd != -ENOENT)
		goto out;
	for (size_t k = 0; k < nclaims; k++) /* candidates; stat outside the lock */
		claims[k].claimed = !published(c, &claims[k]);

	pthread_mutex_lock(&c->lock);
	struct inflight *f = find_inflight(c, key, verified);
	if (f) {
		for (size_t k = 0; k < nclaims; k++)
			claims[k].claimed = false;
		f->refs++;
		while (!f->done)
			pthread_cond_wait(&c->cond, &c->lock);
		int r = f->result;
		if (--f->refs == 0)
			free(f);
		pthread_mutex_unlock(&c->lock);
		if (r == -EAGAIN)
			goto again; /* a neighbour's fill gave it up: fill it ourselves */
		fd = r < 0 ? r : open_checked(path, size);
		if (r == 0 && fd == -ENOENT)
			goto again; /* published, then dropped: as if never published */
		goto out;
	}
	f = add_inflight(c, key, verified);
	for (size_t k = 0; k < nclaims; k++) {
		struct cache_claim *cl = &claims[k];
		if (cl->claimed && find_inflight(c, cl->key, cl->verified))
			cl->claimed = false; /* another fill's (or key itself) */
		else if (cl->claimed)
			add_inflight(c, cl->key, cl->verified);
	}
	pthread_mutex_unlock(&c->lock);

	/* A fill that ended between our miss and the lock published first:
	 * look again now that no new fill of key can start. */
	fd = open_checked(path, size);
	if (fd == -ENOENT)
		fd = fill_and_publish(c, path, size, fill, ud);
	for (size_t k = 0; k < nclaims; k++)
		if (claims[k].claimed)
			cache_publish(c, &claims[k], NULL); /* the fill never got to it */

	pthread_mutex_lock(&c->lock);
	end_inflight(c, f, fd < 0 ? fd : 0);
	pthread_mutex_unlock(&c->lock);
out:
	free(path);
	return fd;
}

int cache_peek(struct cache *c, const uint8_t key[32], bool verified, uint64_t size)
{
	char *path = body_path(c, key, verified);
	int fd = open_checked(path, size);
	free(path);
	return fd;
}

bool cache_claim(struct cache *c, struct cache_claim *cl)
{
	cl->claimed = false;
	if (published(c, cl))
		return false;
	pthread_mutex_lock(&c->lock);
	if (!find_inflight(c, cl->key, cl->verified)) {
		add_inflight(c, cl->key, cl->verified);
		cl->claimed = true;
	}
	pthread_mutex_unlock(&c->lock);
	return cl->claimed;
}

static int write_data(void *ud, int fd)
{
	const struct buf *b = ud;
	return write_full(fd, b->data, b->len);
}

void cache_publish(struct cache *c, struct cache_claim *cl, const void *data)
{
	if (!cl->claimed)
		return;
	int r = -EAGAIN;
	if (data) {
		char *path = body_path(c, cl->key, cl->verified);
		struct buf b = {.data = (uint8_t *)data, .len = (size_t)cl->size};
		int fd = fill_and_publish(c, path, cl->size, write_data, &b);
		if (fd >= 0)
			close(fd);
		r = fd < 0 ? -EAGAIN : 0;
		free(path);
	}
	pthread_mutex_lock(&c->lock);
	struct inflight *f = find_inflight(c, cl->key, cl->verified);
	if (f)
		end_inflight(c, f, r);
	pthread_mutex_unlock(&c->lock);
	cl->claimed = false;
}
