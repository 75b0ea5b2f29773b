/* wheel: byte ranges of wheels, and loading their metadata with parallel
 * range requests.
 *
 * Metadata of an uncached wheel costs one request for its tail (explicit
 * start from the lock's size: no HEAD, no suffix range), sized from the
 * wheel's size (wheel_tail_len) so that one answer usually holds the central
 * directory and the dist-info before it.  When the central directory starts
 * earlier, one more request covers it and, by a guess from its size, the
 * kept members (RECORD, WHEEL, ...) in front of it; only kept members still
 * missing then cost a third.  Every tail is submitted at once to the fetch
 * engine (most before the interpreter is known: wheel_prefetch_start), and
 * each wheel's next request goes out as soon as its previous answer is in,
 * so ~50 wheels cost 1-2 round trips, rarely 3.
 *
 * Threads: the preparing thread runs all of it; the engine thread only
 * queues a loader whose request completed (ml_done, under mqueue.lock, a
 * leaf) and, for a server that ignores Range, makes the temp file that keeps
 * the whole answer (tail_full_open). */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch/inflate.h"
#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define KEPT_FILE_MAX (64u << 20) /* bound on a kept member (RECORD of a huge wheel) */

/* The first request's length: 1/50 of the wheel, between 64 KiB and 1 MiB.
 * A central directory is ~0.4-2% of a wheel and the dist-info in front of it
 * (RECORD compresses to about half the central directory's size) as much
 * again, so 2% keeps most wheels to one request: on the benchmark's 49
 * wheels 3 need a second instead of 13, for 22% more bytes (3.6 MB instead
 * of 3.0 MB).  Wheels of many small files (jedi: a directory of 13%) or
 * with a large METADATA still need one. */
#define TAIL_FRACTION 50
#define TAIL_MAX (1u << 20)
uint64_t wheel_tail_len(uint64_t size)
{
	uint64_t t = size / TAIL_FRACTION;
	t = MAX(t, (uint64_t)ZIPCD_TAIL_SIZE);
	t = MIN(t, (uint64_t)TAIL_MAX);
	return MIN(t, size);
}

/* The request for a central directory that starts before the tail also
 * asks for this much in front of it, for the dist-info that usually sits
 * there: the directory's length again (RECORD's share) plus 64 KiB
 * (METADATA, WHEEL, entry points). */
#define KEPT_GUESS_EXTRA (64u << 10)
#define KEPT_SPAN_MAX (8u << 20) /* widest guess, and widest range of kept members */

void wheel_catalog_key(const uint8_t sha[32], const char *url, uint8_t ret[32])
{
	struct sha256_ctx h;
	sha256_init(&h);
	sha256_update(&h, "sitefs-catalog-2", 16);
	sha256_update(&h, sha, 32);
	sha256_update(&h, url, strlen(url) + 1);
	sha256_final(&h, ret);
}

static int sink_buf(void *ud, const uint8_t *data, size_t len)
{
	buf_append(ud, data, len);
	return 0;
}

/* Hashes a file and compares it with the lock's sha256. */
static int verify_file(const char *path, const uint8_t want[32])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct sha256_ctx h;
	sha256_init(&h);
	uint8_t *b = xmalloc(1 << 18);
	ssize_t n;
	while ((n = read(fd, b, 1 << 18)) > 0)
		sha256_update(&h, b, (size_t)n);
	free(b);
	close(fd);
	uint8_t got[32];
	sha256_final(&h, got);
	if (n < 0)
		return -EIO;
	return memcmp(got, want, 32) ? -EBADMSG : 0;
}

/* A whole wheel landed in tmp: verify it against the lock and publish it in
 * the cache.  Takes tmp; returns 0 and *ret_path (caller frees), or -EBADMSG
 * (logged) when the bytes are not the lock's, or -errno. */
static int adopt_whole_wheel(struct fs_ctx *ctx, struct wheel_src *w, char *tmp,
			     char **ret_path)
{
	int r = verify_file(tmp, w->spec->sha256);
	char *dst = cache_wheel_path(ctx->cache, w->spec->sha256);
	if (r == 0 && rename(tmp, dst) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		free(dst);
		if (r == -EBADMSG)
			log_err("wheel \"%s\": whole-file download does not match the lock's sha256",
				w->spec->url);
	} else {
		*ret_path = dst;
		log_info("\"%s\" ignores Range requests: using a whole copy of \"%s\"",
			 w->spec->url, w->spec->filename);
	}
	free(tmp);
	return r;
}

static int sink_fd(void *ud, const uint8_t *data, size_t len)
{
	return write_full(*(int *)ud, data, len);
}

/* Downloads the whole wheel once (a server that ignores Range), streaming it
 * to a cache file.  Caller holds w->lock, which this sets local_path under. */
static int fetch_whole_wheel(struct fs_ctx *ctx, struct wheel_src *w, char *err, size_t errlen)
{
	char *tmp;
	int fd = cache_tmpfile(ctx->cache, &tmp);
	if (fd < 0)
		return fd;
	struct http_req req = {.url = w->spec->url, .sink = sink_fd, .ud = &fd, .full_fd = -1};
	int r = http_fetch(ctx->http, &req);
	close(fd);
	if (r < 0) {
		snprintf(err, errlen, "%s", req.err);
		unlink(tmp);
		free(tmp);
		return r;
	}
	char *path;
	r = adopt_whole_wheel(ctx, w, tmp, &path);
	if (r < 0) {
		snprintf(err, errlen, "the whole wheel does not match the lock's sha256");
		return r;
	}
	free(w->local_path);
	w->local_path = path;
	return 0;
}

/* A request whose completion is signalled, so the caller can stop waiting
 * at a deadline (http_wait has no timeout). */
struct timed_req {
	struct http_req req; /* first: on_done gets &req */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void timed_done(struct http_req *req, int result)
{
	struct timed_req *t = (struct timed_req *)req;
	pthread_mutex_lock(&t->lock);
	t->done = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

/* http_fetch, cancelled at deadline_ns (CLOCK_MONOTONIC; 0: none). */
static int fetch_until(struct http_engine *e, struct timed_req *t, uint64_t deadline_ns)
{
	if (!deadline_ns)
		return http_fetch(e, &t->req);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&t->lock, NULL);
	t->done = false;
	t->req.on_done = timed_done;
	int r = http_submit(e, &t->req);
	bool late = false;
	if (r == 0) {
		struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000),
				      .tv_nsec = (long)(deadline_ns % 1000000000)};
		pthread_mutex_lock(&t->lock);
		while (!t->done && !late)
			late = pthread_cond_timedwait(&t->cond, &t->lock, &ts) == ETIMEDOUT;
		late = late && !t->done;
		pthread_mutex_unlock(&t->lock);
		if (late)
			http_cancel(e, &t->req);
		r = http_wait(&t->req);
		if (late && r == -ECANCELED) {
			snprintf(t->req.err, sizeof(t->req.err), "no complete answer before the deadline");
			r = -ETIMEDOUT;
		}
	}
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	return r;
}

int wheel_read(struct fs_ctx *ctx, struct wheel_src *w, uint64_t off, uint64_t len,
	       http_sink_fn sink, void *ud, char *err, size_t errlen)
{
	return wheel_read_by(ctx, w, off, len, sink, ud, 0, err, errlen);
}

int wheel_read_by(struct fs_ctx *ctx, struct wheel_src *w, uint64_t off, uint64_t len,
		  http_sink_fn sink, void *ud, uint64_t deadline_ns, char *err, size_t errlen)
{
	pthread_mutex_lock(&w->lock);
	char *local = w->local_path ? xstrdup(w->local_path) : NULL;
	bool whole = !local && w->full_fetch;
	pthread_mutex_unlock(&w->lock);

	if (whole) {
		/* A previous answer ignored Range: fetch the wheel once, serially. */
		pthread_mutex_lock(&w->lock);
		if (!w->local_path) {
			int r = fetch_whole_wheel(ctx, w, err, errlen);
			if (r < 0) {
				pthread_mutex_unlock(&w->lock);
				return r;
			}
		}
		local = xstrdup(w->local_path);
		pthread_mutex_unlock(&w->lock);
	}
	struct timed_req t = {.req = {
		.url = local ? local : w->spec->url,
		.off = off,
		.len = len,
		.sink = sink,
		.ud = ud,
		.full_fd = -1,
	}};
	int r = fetch_until(ctx->http, &t, deadline_ns);
	free(local);
	if (r < 0)
		snprintf(err, errlen, "%s", t.req.err);
	if (t.req.range_ignored) {
		pthread_mutex_lock(&w->lock);
		w->full_fetch = true;
		pthread_mutex_unlock(&w->lock);
	}
	return r;
}

/* Per-wheel state while loading metadata. */
struct mload {
	struct wheel_src *w;
	struct buf tail;   /* file bytes [tail_off, size) */
	uint64_t tail_off;
	struct buf extra;  /* the bytes in front of the tail: [need_off, tail_off) */
	uint64_t need_off;
	struct buf kept;   /* one range covering the kept members outside the tail */
	uint64_t kept_off;
	struct http_req req;
	struct cache *cache;
	char *tmp;         /* full_fd file of the first request, made by tail_full_open */
	int tmpfd;
	struct zip_cd *cd;
	char msg[256];     /* why the zip directory could not be read */
	int stage;         /* what m->req asks for next */
	int dir_rounds;    /* requests for bytes in front of the tail */
	bool inflight;     /* m->req was submitted and its completion not yet taken */
	int submit_rc;     /* what http_submit said then */
	bool finished;     /* kept members decoded, catalog row queued */
	struct mqueue *q;  /* where m goes when m->req completes */
	struct mload *qnext;
	char *url;         /* the tail's URL (own copy) */
	uint8_t sha[32];   /* and the wheel it was asked for, to match a prefetch */
	uint64_t size;
};

enum { ML_TAIL, ML_DIR, ML_KEPT, ML_DONE };

/* Loaders whose request completed, in no particular order: each wheel is
 * taken on as soon as its answer is in, not when the slowest of a wave is.
 * lock is a leaf (the engine thread takes it in on_done). */
struct mqueue {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct mload *head;
};

static struct mqueue *mqueue_new(void)
{
	struct mqueue *q = xcalloc(1, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	return q;
}

static void mqueue_free(struct mqueue *q)
{
	if (!q)
		return;
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
	free(q);
}

static void mqueue_push(struct mqueue *q, struct mload *m)
{
	pthread_mutex_lock(&q->lock);
	m->qnext = q->head;
	q->head = m;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static struct mload *mqueue_pop(struct mqueue *q)
{
	pthread_mutex_lock(&q->lock);
	while (!q->head)
		pthread_cond_wait(&q->cond, &q->lock);
	struct mload *m = q->head;
	q->head = m->qnext;
	pthread_mutex_unlock(&q->lock);
	return m;
}

static struct mload *mload_of(struct http_req *req)
{
	return (struct mload *)((char *)req - offsetof(struct mload, req));
}

/* Engine thread (or inside http_submit for a local file). */
static void ml_done(struct http_req *req, int result)
{
	struct mload *m = mload_of(req);
	mqueue_push(m->q, m);
}

/* Submits m->req; a refused submission completes at once, with its error. */
static void ml_submit(struct http_engine *http, struct mload *m)
{
	m->req.on_done = ml_done;
	m->inflight = true;
	m->submit_rc = http_submit(http, &m->req);
	if (m->submit_rc < 0)
		mqueue_push(m->q, m);
}

/* m's answer, once it came out of the queue. */
static int ml_result(struct mload *m)
{
	m->inflight = false;
	return m->submit_rc < 0 ? m->submit_rc : http_wait(&m->req);
}

/* A server that ignores Range sends the whole wheel to the tail request:
 * keep it, as a download (engine thread; the file is made only then). */
static int tail_full_open(struct http_req *req)
{
	struct mload *m = mload_of(req);
	if (m->tmpfd < 0)
		m->tmpfd = cache_tmpfile(m->cache, &m->tmp);
	return m->tmpfd < 0 ? -1 : m->tmpfd;
}

/* "wheel NAME (URL): what went wrong", credentials redacted. */
static void fetch_error(const struct wheel_src *w, const struct http_req *req, char *err,
			size_t errlen)
{
	char url[512];
	http_redact_url(w->spec->url, url, sizeof(url));
	snprintf(err, errlen, "wheel \"%s\" (%s): %s", w->spec->filename, url, req->err);
}

/* Bytes [off, off+len) of the wheel if the tail or the kept buffer holds
 * them (NULL otherwise); *ret_avail is what the buffer holds from off on. */
static const uint8_t *have_bytes(const struct mload *ml, uint64_t off, uint64_t len,
				 size_t *ret_avail)
{
	const struct buf *bs[] = {&ml->tail, &ml->kept};
	const uint64_t offs[] = {ml->tail_off, ml->kept_off};
	for (size_t i = 0; i < 2; i++) {
		if (bs[i]->len && off >= offs[i] && off + len <= offs[i] + bs[i]->len) {
			*ret_avail = bs[i]->len - (size_t)(off - offs[i]);
			return bs[i]->data + (off - offs[i]);
		}
	}
	return NULL;
}

static bool is_kept(const struct zip_entry *e)
{
	return tree_wants_file(e->name) && !str_endswith(e->name, "/");
}

/* Kept members outside the tail usually sit together (some wheels put the
 * dist-info first): one range covering them all, if it is not too wide. */
static bool plan_kept_range(struct mload *ml)
{
	const struct zip_cd *cd = ml->w->meta.cd;
	uint64_t lo = UINT64_MAX, hi = 0, size = ml->w->spec->size;
	for (size_t i = 0; i < cd->n; i++) {
		const struct zip_entry *e = &cd->entries[i];
		size_t avail;
		if (!is_kept(e) || have_bytes(ml, e->lho, MIN(zipcd_span_guess(e), size - e->lho),
					      &avail))
			continue;
		lo = MIN(lo, e->lho);
		hi = MAX(hi, MIN(e->lho + zipcd_span_guess(e), size));
	}
	if (lo >= hi || hi - lo > KEPT_SPAN_MAX)
		return false;
	ml->kept_off = lo;
	const struct wheel_src *w = ml->w;
	ml->req = (struct http_req){.url = w->local_path ? w->local_path : w->spec->url,
				    .off = lo, .len = hi - lo, .sink = sink_buf, .ud = &ml->kept,
				    .full_fd = -1};
	return true;
}

/* Parses the bytes in hand, [tail_off, size), into m->cd: 0.  When the
 * central directory (or a zip64 record) starts earlier: plans m->req for the
 * bytes in front, with the guess at the dist-info, and returns 1.  Else
 * -errno and m->msg. */
static int parse_or_plan(struct mload *m)
{
	uint64_t size = m->w->spec->size, need;
	int q = zipcd_parse(m->tail.data, m->tail.len, m->tail_off, size, &m->cd, &need, m->msg,
			    sizeof(m->msg));
	if (q != -EAGAIN)
		return q;
	uint64_t guess = MIN((size - need) + KEPT_GUESS_EXTRA, (uint64_t)KEPT_SPAN_MAX);
	m->need_off = need > guess ? need - guess : 0;
	const struct wheel_src *w = m->w;
	m->req = (struct http_req){.url = w->local_path ? w->local_path : w->spec->url,
				   .off = m->need_off, .len = m->tail_off - m->need_off,
				   .sink = sink_buf, .ud = &m->extra, .full_fd = -1};
	return 1;
}

/* Decodes the kept members (RECORD, WHEEL, ... and .data/scripts) of one
 * wheel from the buffers, fetching any still missing one by one. */
static int load_kept_files(struct fs_ctx *ctx, struct mload *ml, char *err, size_t errlen)
{
	struct wheel_src *w = ml->w;
	const struct zip_cd *cd = w->meta.cd;
	size_t cap = 0;
	for (size_t i = 0; i < cd->n; i++) {
		const struct zip_entry *e = &cd->entries[i];
		if (!is_kept(e))
			continue;
		if (e->usize > KEPT_FILE_MAX) {
			snprintf(err, errlen, "wheel \"%s\": entry \"%s\" is too large (%llu bytes)",
				 w->spec->filename, e->name, (unsigned long long)e->usize);
			return -EFBIG;
		}
		struct buf local;
		buf_init(&local);
		size_t avail = 0;
		uint64_t data_off = 0;
		int r = -EAGAIN;
		const uint8_t *p = have_bytes(ml, e->lho, ZIPCD_LOCAL_HEADER_MIN, &avail);
		if (p) {
			r = zipcd_local_header(p, avail, e, &data_off);
			if (r == 0 && data_off - e->lho + e->csize > avail)
				r = -EAGAIN;
		}
		for (int tries = 0; r == -EAGAIN && tries < 2; tries++) {
			/* Not in hand (or a long local extra): fetch it. */
			uint64_t want = tries == 0 ? zipcd_span_guess(e)
						   : (data_off - e->lho) + e->csize;
			if (want > w->spec->size - e->lho)
				want = w->spec->size - e->lho;
			buf_free(&local);
			r = wheel_read(ctx, w, e->lho, want, sink_buf, &local, err, errlen);
			if (r < 0) {
				buf_free(&local);
				return r;
			}
			p = local.data;
			avail = local.len;
			r = zipcd_local_header(p, avail, e, &data_off);
			if (r == 0 && data_off - e->lho + e->csize > avail)
				r = -EAGAIN;
		}
		if (r < 0) {
			buf_free(&local);
			snprintf(err, errlen, "wheel \"%s\": entry \"%s\": bad local header",
				 w->spec->filename, e->name);
			return -EBADMSG;
		}
		uint8_t *data, sha[32];
		char why[200];
		r = inflate_buffer(e->method, p + (data_off - e->lho), (size_t)e->csize, e->usize,
				   e->crc32, &data, sha, why, sizeof(why));
		buf_free(&local);
		if (r < 0) {
			snprintf(err, errlen, "wheel \"%s\": entry \"%s\": %s", w->spec->filename,
				 e->name, why);
			return r;
		}
		if (w->meta.nfiles == cap) {
			cap = cap ? 2 * cap : 8;
			w->meta.files = xrealloc(w->meta.files, cap * sizeof(*w->meta.files));
		}
		w->meta.files[w->meta.nfiles++] =
			(struct wheel_file){xstrdup(e->name), data, (size_t)e->usize};
	}
	return 0;
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct wheel_file *)a)->name, ((const struct wheel_file *)b)->name);
}

/* A loader for the wheel at url, its first request (the tail) planned. */
static struct mload *ml_new(struct cache *cache, struct mqueue *q, const char *url,
			    const uint8_t sha[32], uint64_t size)
{
	struct mload *m = xcalloc(1, sizeof(*m));
	m->q = q;
	m->tmpfd = -1;
	buf_init(&m->tail);
	buf_init(&m->extra);
	buf_init(&m->kept);
	m->cache = cache;
	m->url = xstrdup(url);
	memcpy(m->sha, sha, 32);
	m->size = size;
	m->tail_off = size - wheel_tail_len(size);
	m->req = (struct http_req){.url = m->url, .off = m->tail_off, .len = size - m->tail_off,
				   .sink = sink_buf, .ud = &m->tail, .full_fd = -1,
				   .full_open = http_is_remote(url) ? tail_full_open : NULL};
	m->stage = ML_TAIL;
	return m;
}

static void ml_free(struct mload *m)
{
	buf_free(&m->tail);
	buf_free(&m->extra);
	buf_free(&m->kept);
	zipcd_free(m->cd);
	if (m->tmpfd >= 0)
		close(m->tmpfd);
	if (m->tmp) {
		unlink(m->tmp);
		free(m->tmp);
	}
	free(m->url);
	free(m);
}

struct wheel_prefetch {
	struct http_engine *http;
	struct mqueue *q;  /* the completions of ml[], then of wheel_load_all's requests */
	struct mload **ml; /* NULL once adopted by wheel_load_all */
	size_t n;
};

struct wheel_prefetch *wheel_prefetch_start(struct http_engine *http, struct cache *cache,
					    struct catalog *cat, const struct fs_wheel *specs,
					    size_t n)
{
	struct wheel_prefetch *pf = xcalloc(1, sizeof(*pf));
	pf->http = http;
	pf->q = mqueue_new();
	pf->ml = xcalloc(n ? n : 1, sizeof(*pf->ml));
	for (size_t i = 0; i < n; i++) {
		const struct fs_wheel *s = &specs[i];
		uint8_t key[32];
		wheel_catalog_key(s->sha256, s->url, key);
		if (!http_is_remote(s->url) || (cat && catalog_has(cat, key, s->size)))
			continue; /* a local file, or no request at all */
		struct mload *m = ml_new(cache, pf->q, s->url, s->sha256, s->size);
		ml_submit(http, m);
		pf->ml[pf->n++] = m;
	}
	log_trace("metadata: %zu tails asked for before the interpreter is known", pf->n);
	return pf;
}

/* The prefetched loader of this wheel, if any (taken out of pf). */
static struct mload *prefetch_take(struct wheel_prefetch *pf, const struct fs_wheel *s)
{
	for (size_t i = 0; pf && i < pf->n; i++) {
		struct mload *m = pf->ml[i];
		if (m && m->size == s->size && !memcmp(m->sha, s->sha256, 32) &&
		    !strcmp(m->url, s->url)) {
			pf->ml[i] = NULL;
			return m;
		}
	}
	return NULL;
}

struct wheel_prefetch *wheel_prefetch_free(struct wheel_prefetch *pf)
{
	if (!pf)
		return NULL;
	size_t left = 0;
	for (size_t i = 0; i < pf->n; i++)
		if (pf->ml[i]) {
			if (pf->ml[i]->submit_rc == 0)
				http_cancel(pf->http, &pf->ml[i]->req);
			left++;
		}
	for (size_t i = 0; i < pf->n; i++) {
		if (!pf->ml[i])
			continue;
		if (pf->ml[i]->submit_rc == 0)
			http_wait(&pf->ml[i]->req); /* after it, no more on_done */
		ml_free(pf->ml[i]);
	}
	if (left)
		log_trace("metadata: %zu prefetched tails not used", left);
	mqueue_free(pf->q); /* what it still lists was freed just now */
	free(pf->ml);
	free(pf);
	return NULL;
}

/* One wheel's answer: checks it and plans the wheel's next request
 * (m->stage), or ends (ML_DONE).  -errno with err set when the mount
 * cannot go on. */
static int ml_step(struct fs_ctx *ctx, struct mload *m, int res, char *err, size_t errlen)
{
	struct wheel_src *w = m->w;
	int stage = m->stage;
	m->stage = ML_DONE;
	if (stage == ML_KEPT) {
		if (res < 0) /* not fatal: load_kept_files asks again */
			buf_free(&m->kept);
		return 0;
	}
	if (m->tmpfd >= 0) {
		close(m->tmpfd);
		m->tmpfd = -1;
	}
	if (res < 0) {
		fetch_error(w, &m->req, err, errlen);
		return res;
	}
	if (stage == ML_TAIL) {
		if (m->req.resource_size && m->req.resource_size != w->spec->size) {
			snprintf(err, errlen, "wheel \"%s\" (%s): the server's file has %llu bytes, "
				 "the lock says %llu", w->spec->filename, w->spec->url,
				 (unsigned long long)m->req.resource_size,
				 (unsigned long long)w->spec->size);
			return -EBADMSG;
		}
		if (m->req.range_ignored && m->tmp) {
			/* the server sent the whole wheel: check it now, as a download */
			char *path;
			int q = adopt_whole_wheel(ctx, w, m->tmp, &path);
			m->tmp = NULL;
			if (q < 0) {
				snprintf(err, errlen, "wheel \"%s\": the file served does not match "
					 "the lock's sha256", w->spec->filename);
				return q;
			}
			pthread_mutex_lock(&w->lock);
			free(w->local_path);
			w->local_path = path;
			pthread_mutex_unlock(&w->lock);
		} else if (m->tail_off == 0) {
			/* a small wheel: the tail is the whole file, so check it */
			uint8_t got[32];
			sha256_buf(m->tail.data, m->tail.len, got);
			if (memcmp(got, w->spec->sha256, 32)) {
				snprintf(err, errlen, "wheel \"%s\" (%s): does not match the lock's "
					 "sha256", w->spec->filename, w->spec->url);
				return -EBADMSG;
			}
		}
	} else { /* ML_DIR: the bytes in front of the tail */
		buf_append(&m->extra, m->tail.data, m->tail.len);
		buf_free(&m->tail);
		m->tail = m->extra;
		buf_init(&m->extra);
		m->tail_off = m->need_off;
	}
	int q = parse_or_plan(m);
	if (q > 0 && ++m->dir_rounds > 2) {
		/* zip64 records may point back once; a third time is a lie */
		snprintf(err, errlen, "wheel \"%s\" (%s): central directory moves",
			 w->spec->filename, w->spec->url);
		return -EBADMSG;
	}
	if (q > 0) {
		m->stage = ML_DIR;
		return 0;
	}
	if (q < 0) {
		snprintf(err, errlen, "wheel \"%s\" (%s): %s", w->spec->filename, w->spec->url,
			 m->msg);
		return q;
	}
	w->meta.cd = m->cd;
	m->cd = NULL;
	if (plan_kept_range(m))
		m->stage = ML_KEPT;
	return 0;
}

/* A wheel whose ranges are all in: decodes its kept members and hands its
 * catalog rows to the writer. */
static int ml_finish(struct fs_ctx *ctx, struct mload *m, struct catalog_writer *cw, char *err,
		     size_t errlen)
{
	m->finished = true;
	int r = load_kept_files(ctx, m, err, errlen);
	if (r < 0)
		return r;
	struct wheel_src *w = m->w;
	qsort(w->meta.files, w->meta.nfiles, sizeof(struct wheel_file), cmp_file);
	uint64_t cd_off = w->meta.cd->cd_off;
	size_t len = (size_t)(w->spec->size - cd_off);
	struct catalog_item it = {.filename = w->spec->filename, .size = w->spec->size,
				  .tail = xmalloc(len ? len : 1), .tail_len = len, .meta = &w->meta};
	memcpy(it.key, w->key, 32);
	memcpy(it.tail, m->tail.data + (cd_off - m->tail_off), len);
	catalog_writer_add(cw, &it);
	return 0;
}

int wheel_load_all(struct fs_ctx *ctx, struct catalog *cat, struct wheel_prefetch *pf,
		   char *err, size_t errlen)
{
	int r;
	if (!cat) {
		char *dbpath = xasprintf("%s/catalog.db", ctx->cache_dir);
		r = catalog_open(dbpath, &cat, err, errlen);
		free(dbpath);
		if (r < 0)
			return r;
		log_trace("metadata: catalog open");
	}

	size_t n = ctx->cfg.nwheels, np = 0, npf = 0;
	struct mload **ml = xcalloc(n ? n : 1, sizeof(*ml));
	struct mqueue *q = pf ? pf->q : mqueue_new();

	/* Catalog hits cost no request at all.  Every other wheel's tail is
	 * asked for at once (some are in flight already).  A wheel is taken on
	 * as soon as its answer is in, and its next request, if any, goes out
	 * right away: the central directory with the guess in front of it, or
	 * the kept members still missing.  One wheel waiting for its directory
	 * holds back no other. */
	for (size_t i = 0; i < n; i++) {
		struct wheel_src *w = &ctx->wheels[i];
		r = catalog_get(cat, w->key, w->spec->size, &w->meta);
		if (r == 0) {
			ctx->stats.wheels_from_catalog++;
			continue;
		}
		if (r != -ENOENT)
			log_warn("catalog entry of \"%s\" is unreadable (%s), fetching again",
				 w->spec->filename, strerror(-r));
		struct mload *m = prefetch_take(pf, w->spec);
		if (m)
			npf++;
		else
			m = ml_new(ctx->cache, q, w->spec->url, w->spec->sha256, w->spec->size);
		m->w = w;
		ml[np++] = m;
	}
	log_trace("metadata: %zu wheels, %zu from the catalog, %zu tails in flight", n, n - np,
		  npf);

	/* the catalog rows are written on the side (nothing else uses cat now) */
	struct catalog_writer *cw = NULL;
	if (np)
		ctx->catalog_writer = cw = catalog_writer_start(cat);
	else
		catalog_close(cat);
	size_t pending = 0, tails = np, nreq[ML_DONE] = {0};
	uint64_t bytes = 0;
	for (size_t k = 0; k < np; k++) {
		if (!ml[k]->inflight)
			ml_submit(ctx->http, ml[k]);
		nreq[ML_TAIL]++;
		pending++;
	}
	r = 0;
	while (pending) {
		struct mload *m = mqueue_pop(q);
		if (!m->w)
			continue; /* a guessed tail not used: wheel_prefetch_free's */
		pending--;
		int res = ml_result(m);
		bytes += m->req.wire_bytes;
		int stage = m->stage;
		int q2 = ml_step(ctx, m, res, err, errlen);
		if (q2 < 0 && r == 0)
			r = q2;
		if (stage == ML_TAIL && --tails == 0)
			log_trace("metadata: all %zu tails in", np);
		if (r < 0)
			continue; /* drain what is in flight */
		if (m->stage != ML_DONE) {
			nreq[m->stage]++;
			pending++;
			ml_submit(ctx->http, m);
		} else {
			/* decoded while the others are on the wire */
			r = ml_finish(ctx, m, cw, err, errlen);
		}
	}
	log_trace("metadata: all ranges in: %zu tails, %zu directories, %zu kept ranges, "
		  "%llu bytes", nreq[ML_TAIL], nreq[ML_DIR], nreq[ML_KEPT],
		  (unsigned long long)bytes);
	catalog_writer_finish(cw); /* inserted while the tree is built */

	for (size_t k = 0; k < np; k++)
		ml_free(ml[k]);
	free(ml);
	if (!pf)
		mqueue_free(q);
	return r;
}
