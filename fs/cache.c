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
 *   nothing after a successful fill treats the key as never filled (it is
 *   called with -EAGAIN and begins again).
 * - A fill may also publish neighbours that rode the same request: the
 *   caller that becomes the filler (cache_begin → CACHE_FILL) claims them
 *   (an in-flight record each) under the same lock as its own key, so two
 *   first openers of sibling files cannot both start a fill of the same
 *   run: the second waits.  The fill publishes or abandons each
 *   (cache_publish); cache_fill gives up any it left; waiters of an
 *   abandoned neighbour begin again and fill it themselves.  The profile
 *   replay claims bodies on its own (cache_claim).
 * - cache_fill looks for the body again once it is registered as filler: a
 *   fill that ended between the caller's miss and its registration
 *   published first.  Claimed neighbours published by then are let go
 *   before the fill starts (fill_run then leaves them out of the range
 *   when they are at its ends).
 * - Waiting is by callback (struct cache_waiter, called once by the thread
 *   that ends the fill, with its own fd on the body or the error), so a
 *   FUSE reply can be sent from there: nobody needs a thread to wait.
 *   cache_get (materialize) wraps it in a condvar.
 * - Streams: a big body's fill may carry a struct cache_stream; openers
 *   that arrive during the fill join the stream instead of waiting, and
 *   read the temp file as the fill writes it (cache_stream_read: answered
 *   at once when the bytes are there, else by callback as they arrive).
 *   The last byte is readable only once the body is verified; after a
 *   failed check every read fails (fs/async.c, docs/architecture.md).
 * - Locking: cache->lock protects the in-flight list only; it is never held
 *   across a fill (network I/O) nor across a callback.  A stream's lock
 *   protects its progress and readers; taken after cache->lock, if both.
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
	struct cache_waiter *waiters; /* protected by cache->lock */
	struct cache_stream *stream;  /* a streamed fill (a reference), or NULL */
	struct inflight *next;
};

struct cache {
	char *dir;
	pthread_mutex_t lock;
	struct inflight *inflight; /* protected by lock */
};

/* A fill that readers follow as it goes (see fs_i.h). */
struct cache_stream {
	pthread_mutex_t lock;
	int refs;          /* protected by lock, as is everything below */
	int fd;            /* the fill's temp file (dup), -1 until it exists */
	uint64_t size;     /* the body's size */
	uint64_t progress; /* bytes written to fd */
	bool done;
	int result;        /* 0: verified and published; -errno: failed */
	struct cache_stream_reader *readers;
	uint64_t *tags;
	size_t ntags;
	cache_stream_fail_fn on_fail;
	void *on_fail_ud;
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
	*ret = c;
	return 0;
}

struct cache *cache_close(struct cache *c)
{
	if (!c)
		return NULL;
	pthread_mutex_destroy(&c->lock);
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
 * have replaced it, a torn copy's cleanup may have dropped it), or -errno.
 * With a stream, the stream gets a dup of the temp fd before the fill
 * starts. */
static int fill_and_publish(struct cache *c, const char *path, uint64_t size, cache_fill_fn fill,
			    void *ud, struct cache_stream *s)
{
	char *tmp;
	int fd = cache_tmpfile(c, &tmp);
	if (fd < 0)
		return fd;
	int r = 0;
	if (s) {
		int sfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		r = sfd < 0 ? -errno : 0;
		pthread_mutex_lock(&s->lock);
		s->fd = sfd;
		pthread_mutex_unlock(&s->lock);
	}
	if (r == 0)
		r = fill(ud, fd);
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
	f->next = c->inflight;
	c->inflight = f;
	return f;
}

/* Ends the fill of key: unlinks its record, then (without the lock) hands
 * every waiter its own fd on the published body, or result. */
static void end_inflight(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
			 int result)
{
	pthread_mutex_lock(&c->lock);
	struct inflight *f = find_inflight(c, key, verified);
	if (f)
		for (struct inflight **p = &c->inflight; *p; p = &(*p)->next)
			if (*p == f) {
				*p = f->next;
				break;
			}
	pthread_mutex_unlock(&c->lock);
	if (!f)
		return;
	struct cache_waiter *w = f->waiters, *next;
	char *path = result == 0 && w ? body_path(c, key, verified) : NULL;
	for (; w; w = next) {
		next = w->next; /* done() may free w */
		int fd = path ? open_checked(path, size) : result;
		if (path && fd == -ENOENT)
			fd = -EAGAIN; /* published, then dropped: as if never published */
		w->done(w, fd);
	}
	free(path);
	cache_stream_unref(f->stream);
	free(f);
}

static bool published(struct cache *c, const struct cache_claim *cl)
{
	char *path = body_path(c, cl->key, cl->verified);
	struct stat st;
	bool have = stat(path, &st) == 0 && (uint64_t)st.st_size == cl->size;
	free(path);
	return have;
}

enum cache_begin cache_begin(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
			     struct cache_claim *claims, size_t nclaims, struct cache_waiter *w,
			     int *ret_fd, struct cache_stream **ret_stream)
{
	char *path = body_path(c, key, verified);
	int fd = open_checked(path, size);
	free(path);
	for (size_t k = 0; k < nclaims; k++)
		claims[k].claimed = false;
	if (fd != -ENOENT) {
		*ret_fd = fd;
		return CACHE_HIT;
	}
	for (size_t k = 0; k < nclaims; k++) /* candidates; stat outside the lock */
		claims[k].claimed = !published(c, &claims[k]);
	enum cache_begin r;
	pthread_mutex_lock(&c->lock);
	struct inflight *f = find_inflight(c, key, verified);
	if (!f) {
		add_inflight(c, key, verified);
		for (size_t k = 0; k < nclaims; k++) {
			struct cache_claim *cl = &claims[k];
			if (cl->claimed && find_inflight(c, cl->key, cl->verified))
				cl->claimed = false; /* another fill's (or key itself) */
			else if (cl->claimed)
				add_inflight(c, cl->key, cl->verified);
		}
		r = CACHE_FILL;
	} else if (f->stream) {
		*ret_stream = cache_stream_ref(f->stream);
		r = CACHE_STREAM;
	} else {
		w->next = f->waiters;
		f->waiters = w;
		r = CACHE_WAIT;
	}
	if (r != CACHE_FILL)
		for (size_t k = 0; k < nclaims; k++)
			claims[k].claimed = false;
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* A stream whose fill found the body published already: its readers read
 * that file.  Takes fd's dup. */
static void stream_adopt(struct cache_stream *s, int fd)
{
	int sfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_lock(&s->lock);
	if (s->fd < 0 && sfd >= 0) {
		s->fd = sfd;
		s->progress = s->size;
		sfd = -1;
	}
	pthread_mutex_unlock(&s->lock);
	if (sfd >= 0)
		close(sfd);
}

int cache_fill(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
	       struct cache_claim *claims, size_t nclaims, cache_fill_fn fill, void *ud,
	       struct cache_stream *s)
{
	char *path = body_path(c, key, verified);
	/* A fill that ended between our miss and the lock published first:
	 * look again now that no new fill of key can start. */
	int fd = open_checked(path, size);
	if (fd >= 0 && s)
		stream_adopt(s, fd);
	if (fd == -ENOENT) {
		/* The same for the claims: one published between cache_begin's
		 * look and its claim (a fill ending then, another daemon) is let
		 * go, so the fill does not fetch it again; its waiters open it. */
		for (size_t k = 0; k < nclaims; k++)
			if (claims[k].claimed && published(c, &claims[k])) {
				end_inflight(c, claims[k].key, claims[k].verified, claims[k].size, 0);
				claims[k].claimed = false;
			}
		fd = fill_and_publish(c, path, size, fill, ud, s);
	}
	free(path);
	for (size_t k = 0; k < nclaims; k++)
		if (claims[k].claimed)
			cache_publish(c, &claims[k], NULL); /* the fill never got to it */
	if (s)
		cache_stream_end(s, fd < 0 ? fd : 0);
	end_inflight(c, key, verified, size, fd < 0 ? fd : 0);
	return fd;
}

/* cache_get's waiter: a condvar. */
struct sync_waiter {
	struct cache_waiter w; /* first */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int fd;
};

static void sync_done(struct cache_waiter *w, int fd)
{
	struct sync_waiter *sw = (struct sync_waiter *)w;
	pthread_mutex_lock(&sw->lock);
	sw->fd = fd;
	sw->done = true;
	pthread_cond_signal(&sw->cond);
	pthread_mutex_unlock(&sw->lock);
}

static void sync_done_reader(struct cache_stream_reader *rd, int fd)
{
	sync_done(rd->ud, fd);
}

int cache_get(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
	      struct cache_claim *claims, size_t nclaims, cache_fill_fn fill, void *ud)
{
	for (;;) {
		struct sync_waiter sw = {.w.done = sync_done};
		struct cache_stream *s = NULL;
		int fd = -EIO;
		pthread_mutex_init(&sw.lock, NULL);
		pthread_cond_init(&sw.cond, NULL);
		switch (cache_begin(c, key, verified, size, claims, nclaims, &sw.w, &fd, &s)) {
		case CACHE_HIT:
			break;
		case CACHE_FILL:
			fd = cache_fill(c, key, verified, size, claims, nclaims, fill, ud, NULL);
			break;
		case CACHE_STREAM: {
			/* someone streams it: wait for the verified end */
			struct cache_stream_reader rd = {
				.end = size, .done = sync_done_reader, .ud = &sw.w};
			int q = cache_stream_read(s, &rd);
			if (q == -EINPROGRESS) {
				pthread_mutex_lock(&sw.lock);
				while (!sw.done)
					pthread_cond_wait(&sw.cond, &sw.lock);
				pthread_mutex_unlock(&sw.lock);
				q = sw.fd;
			}
			cache_stream_unref(s);
			fd = q < 0 ? q : -EAGAIN; /* published: open it by path */
			break;
		}
		case CACHE_WAIT:
			pthread_mutex_lock(&sw.lock);
			while (!sw.done)
				pthread_cond_wait(&sw.cond, &sw.lock);
			pthread_mutex_unlock(&sw.lock);
			fd = sw.fd;
			break;
		}
		pthread_cond_destroy(&sw.cond);
		pthread_mutex_destroy(&sw.lock);
		if (fd != -EAGAIN)
			return fd; /* -EAGAIN: a neighbour's fill gave it up, or a stream ended */
	}
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
		int fd = fill_and_publish(c, path, cl->size, write_data, &b, NULL);
		if (fd >= 0)
			close(fd);
		r = fd < 0 ? -EAGAIN : 0;
		free(path);
	}
	end_inflight(c, cl->key, cl->verified, cl->size, r);
	cl->claimed = false;
}

/* --- streams --------------------------------------------------------------- */

struct cache_stream *cache_stream_new(struct cache *c, const uint8_t key[32], bool verified,
				      uint64_t size)
{
	struct cache_stream *s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->refs = 2; /* the caller's and the in-flight record's */
	s->fd = -1;
	s->size = size;
	pthread_mutex_lock(&c->lock);
	struct inflight *f = find_inflight(c, key, verified);
	if (f && !f->stream)
		f->stream = s;
	else
		s->refs = 1; /* not ours to stream: nobody can join */
	pthread_mutex_unlock(&c->lock);
	return s;
}

struct cache_stream *cache_stream_ref(struct cache_stream *s)
{
	pthread_mutex_lock(&s->lock);
	s->refs++;
	pthread_mutex_unlock(&s->lock);
	return s;
}

struct cache_stream *cache_stream_unref(struct cache_stream *s)
{
	if (!s)
		return NULL;
	pthread_mutex_lock(&s->lock);
	bool last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last) {
		if (s->fd >= 0)
			close(s->fd);
		free(s->tags);
		pthread_mutex_destroy(&s->lock);
		free(s);
	}
	return NULL;
}

/* What readers may have: everything once verified; before that what was
 * written, less the last byte (a read that reaches the end of the body is
 * answered only after the checks).  Caller holds s->lock. */
static uint64_t readable(const struct cache_stream *s)
{
	if (s->done)
		return s->result == 0 ? s->size : 0;
	if (s->fd < 0)
		return 0;
	return s->progress < s->size ? s->progress : s->size - 1;
}

/* Takes the readers that can be answered now off the list (all of them once
 * the stream is done).  Caller holds s->lock. */
static struct cache_stream_reader *take_ready(struct cache_stream *s)
{
	struct cache_stream_reader *ready = NULL, **p = &s->readers;
	uint64_t have = readable(s);
	while (*p) {
		struct cache_stream_reader *rd = *p;
		if (s->done || rd->end <= have) {
			*p = rd->next;
			rd->next = ready;
			ready = rd;
		} else {
			p = &rd->next;
		}
	}
	return ready;
}

/* code: the stream's fd, or -EIO; the readers' references keep fd open. */
static void answer(struct cache_stream *s, struct cache_stream_reader *ready, int code)
{
	for (struct cache_stream_reader *rd = ready, *next; rd; rd = next) {
		next = rd->next; /* done() may free rd */
		rd->done(rd, code);
		cache_stream_unref(s); /* the reader's reference */
	}
}

int cache_stream_read(struct cache_stream *s, struct cache_stream_reader *rd)
{
	pthread_mutex_lock(&s->lock);
	int r;
	if (s->done && s->result < 0)
		r = -EIO;
	else if (rd->end <= readable(s))
		r = s->fd;
	else {
		rd->next = s->readers;
		s->readers = rd;
		s->refs++;
		r = -EINPROGRESS;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

void cache_stream_advance(struct cache_stream *s, uint64_t n)
{
	pthread_mutex_lock(&s->lock);
	s->progress += n;
	struct cache_stream_reader *ready = s->readers ? take_ready(s) : NULL;
	int code = s->fd;
	pthread_mutex_unlock(&s->lock);
	answer(s, ready, code);
}

void cache_stream_end(struct cache_stream *s, int result)
{
	pthread_mutex_lock(&s->lock);
	s->done = true;
	s->result = result;
	struct cache_stream_reader *ready = take_ready(s);
	int code = result == 0 && s->fd >= 0 ? s->fd : -EIO;
	uint64_t below = UINT64_MAX;
	for (struct cache_stream_reader *rd = ready; rd; rd = rd->next)
		below = MIN(below, rd->start);
	cache_stream_fail_fn on_fail = s->on_fail;
	pthread_mutex_unlock(&s->lock);
	/* Later reads fail already; what was read before must go before any
	 * reader learns of the failure (pages of the pending reads are locked
	 * until they are answered: only those below them). */
	if (code < 0 && on_fail)
		on_fail(s->on_fail_ud, s, below);
	answer(s, ready, code);
}

void cache_stream_on_fail(struct cache_stream *s, cache_stream_fail_fn fn, void *ud)
{
	pthread_mutex_lock(&s->lock);
	s->on_fail = fn;
	s->on_fail_ud = ud;
	pthread_mutex_unlock(&s->lock);
}

int cache_stream_result(struct cache_stream *s)
{
	pthread_mutex_lock(&s->lock);
	int r = s->done ? s->result : -EINPROGRESS;
	pthread_mutex_unlock(&s->lock);
	return r;
}

void cache_stream_tag(struct cache_stream *s, uint64_t tag)
{
	pthread_mutex_lock(&s->lock);
	size_t i;
	for (i = 0; i < s->ntags && s->tags[i] != tag; i++)
		;
	if (i == s->ntags) {
		s->tags = xrealloc(s->tags, (s->ntags + 1) * sizeof(*s->tags));
		s->tags[s->ntags++] = tag;
	}
	pthread_mutex_unlock(&s->lock);
}

size_t cache_stream_tags(struct cache_stream *s, uint64_t **ret)
{
	pthread_mutex_lock(&s->lock);
	size_t n = s->ntags;
	*ret = NULL;
	if (n) {
		*ret = xmalloc(n * sizeof(*s->tags));
		memcpy(*ret, s->tags, n * sizeof(*s->tags));
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}
