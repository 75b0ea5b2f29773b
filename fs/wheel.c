/* wheel: byte ranges of wheels, and loading their metadata in waves of
 * parallel range requests.
 *
 * Metadata of an uncached wheel costs one request for the last 64 KiB
 * (explicit start from the lock's size: no HEAD, no suffix range), one more
 * if the central directory starts earlier, and rarely one per kept member
 * (RECORD, WHEEL, ...) that lies outside the tail.  Each wave is submitted
 * at once to the fetch engine, so ~50 wheels cost ~1-3 round trips. */
#include <errno.h>
#include <fcntl.h>
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
	struct buf extra;  /* wave 2: bytes [need_off, tail_off) */
	uint64_t need_off;
	struct buf kept;   /* wave 3: one range covering kept members outside the tail */
	uint64_t kept_off;
	struct http_req req;
	char *tmp;         /* full_fd file of the first request */
	int tmpfd;
	struct zip_cd *cd;
};

static void wave_wait(struct fs_ctx *ctx, struct http_req **reqs, int *rs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		rs[i] = http_submit(ctx->http, reqs[i]);
	for (size_t i = 0; i < n; i++)
		if (rs[i] == 0)
			rs[i] = http_wait(reqs[i]);
}

/* "wheel NAME (URL): what went wrong", credentials redacted. */
static void fetch_error(const struct wheel_src *w, const struct http_req *req, char *err,
			size_t errlen)
{
	char url[512];
	http_redact_url(w->spec->url, url, sizeof(url));
	snprintf(err, errlen, "wheel \"%s\" (%s): %s", w->spec->filename, url, req->err);
}

static bool is_remote(const struct fs_wheel *s)
{
	return http_is_remote(s->url);
}

/* Bytes [off, off+len) of the wheel if the tail or the wave-3 buffer holds
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
#define KEPT_SPAN_MAX (8u << 20)
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

int wheel_load_all(struct fs_ctx *ctx, char *err, size_t errlen)
{
	struct catalog *cat;
	char *dbpath = xasprintf("%s/catalog.db", ctx->cache_dir);
	int r = catalog_open(dbpath, &cat, err, errlen);
	free(dbpath);
	if (r < 0)
		return r;

	size_t n = ctx->cfg.nwheels, np = 0;
	struct mload *ml = xcalloc(n, sizeof(*ml));
	struct http_req **reqs = xcalloc(n, sizeof(*reqs));
	int *rs = xcalloc(n, sizeof(*rs));

	/* Catalog hits cost no request at all. */
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
		struct mload *m = &ml[np++];
		m->w = w;
		m->tmpfd = -1;
		buf_init(&m->tail);
		buf_init(&m->extra);
		buf_init(&m->kept);
	}

	/* Wave 1: the tail of every uncached wheel. */
	for (size_t k = 0; k < np; k++) {
		struct mload *m = &ml[k];
		uint64_t size = m->w->spec->size;
		m->tail_off = size > ZIPCD_TAIL_SIZE ? size - ZIPCD_TAIL_SIZE : 0;
		if (is_remote(m->w->spec))
			m->tmpfd = cache_tmpfile(ctx->cache, &m->tmp);
		m->req = (struct http_req){.url = m->w->spec->url, .off = m->tail_off,
					   .len = size - m->tail_off, .sink = sink_buf,
					   .ud = &m->tail, .full_fd = m->tmpfd};
		reqs[k] = &m->req;
	}
	wave_wait(ctx, reqs, rs, np);

	r = 0;
	size_t nextra = 0;
	for (size_t k = 0; k < np && r == 0; k++) {
		struct mload *m = &ml[k];
		if (m->tmpfd >= 0) {
			close(m->tmpfd);
			m->tmpfd = -1;
		}
		if (rs[k] < 0) {
			fetch_error(m->w, &m->req, err, errlen);
			r = rs[k];
			break;
		}
		if (m->req.resource_size && m->req.resource_size != m->w->spec->size) {
			snprintf(err, errlen, "wheel \"%s\" (%s): the server's file has %llu bytes, "
				 "the lock says %llu", m->w->spec->filename, m->w->spec->url,
				 (unsigned long long)m->req.resource_size,
				 (unsigned long long)m->w->spec->size);
			r = -EBADMSG;
			break;
		}
		if (m->req.range_ignored && m->tmp) {
			/* the server sent the whole wheel: check it now, as a download */
			char *path;
			int q = adopt_whole_wheel(ctx, m->w, m->tmp, &path);
			m->tmp = NULL;
			if (q < 0) {
				snprintf(err, errlen, "wheel \"%s\": the file served does not match "
					 "the lock's sha256", m->w->spec->filename);
				r = q;
				break;
			}
			pthread_mutex_lock(&m->w->lock);
			free(m->w->local_path);
			m->w->local_path = path;
			pthread_mutex_unlock(&m->w->lock);
		} else if (m->tail_off == 0) {
			/* a small wheel: the tail is the whole file, so check it */
			uint8_t got[32];
			sha256_buf(m->tail.data, m->tail.len, got);
			if (memcmp(got, m->w->spec->sha256, 32)) {
				snprintf(err, errlen, "wheel \"%s\" (%s): does not match the lock's "
					 "sha256", m->w->spec->filename, m->w->spec->url);
				r = -EBADMSG;
				break;
			}
		}
		char msg[256];
		int q = zipcd_parse(m->tail.data, m->tail.len, m->tail_off, m->w->spec->size,
				    &m->cd, &m->need_off, msg, sizeof(msg));
		if (q == -EAGAIN) {
			const char *url = m->w->local_path ? m->w->local_path : m->w->spec->url;
			m->req = (struct http_req){.url = url, .off = m->need_off,
						   .len = m->tail_off - m->need_off,
						   .sink = sink_buf, .ud = &m->extra, .full_fd = -1};
			reqs[nextra++] = &m->req;
		} else if (q < 0) {
			snprintf(err, errlen, "wheel \"%s\" (%s): %s", m->w->spec->filename,
				 m->w->spec->url, msg);
			r = q;
		}
	}

	/* Wave 2: central directories longer than the tail. */
	if (r == 0 && nextra) {
		wave_wait(ctx, reqs, rs, nextra);
		for (size_t k = 0; k < np && r == 0; k++) {
			struct mload *m = &ml[k];
			if (m->cd)
				continue;
			size_t j;
			for (j = 0; j < nextra && reqs[j] != &m->req; j++)
				;
			if (rs[j] < 0) {
				fetch_error(m->w, &m->req, err, errlen);
				r = rs[j];
				break;
			}
			buf_append(&m->extra, m->tail.data, m->tail.len);
			buf_free(&m->tail);
			m->tail = m->extra;
			buf_init(&m->extra);
			m->tail_off = m->need_off;
			char msg[256];
			uint64_t need;
			int q = zipcd_parse(m->tail.data, m->tail.len, m->tail_off,
					    m->w->spec->size, &m->cd, &need, msg, sizeof(msg));
			if (q < 0) {
				snprintf(err, errlen, "wheel \"%s\" (%s): %s",
					 m->w->spec->filename, m->w->spec->url,
					 q == -EAGAIN ? "central directory moves" : msg);
				r = -EBADMSG;
			}
		}
	}

	/* Wave 3: kept members outside the tail, one covering range per wheel. */
	size_t nkept = 0;
	for (size_t k = 0; k < np && r == 0; k++) {
		struct mload *m = &ml[k];
		m->w->meta.cd = m->cd;
		m->cd = NULL;
		if (plan_kept_range(m))
			reqs[nkept++] = &m->req;
	}
	if (r == 0 && nkept) {
		wave_wait(ctx, reqs, rs, nkept);
		for (size_t j = 0; j < nkept; j++)
			if (rs[j] < 0) /* not fatal: load_kept_files asks again */
				buf_free(reqs[j]->ud);
	}

	/* Decode kept members, then one transaction per wheel into the catalog. */
	for (size_t k = 0; k < np && r == 0; k++) {
		struct mload *m = &ml[k];
		r = load_kept_files(ctx, m, err, errlen);
		if (r < 0)
			break;
		qsort(m->w->meta.files, m->w->meta.nfiles, sizeof(struct wheel_file), cmp_file);
		uint64_t cd_off = m->w->meta.cd->cd_off;
		int q = catalog_put(cat, m->w->key, m->w->spec->filename,
				    m->w->spec->size, m->tail.data + (cd_off - m->tail_off),
				    (size_t)(m->w->spec->size - cd_off), &m->w->meta);
		if (q < 0)
			log_warn("cannot store \"%s\" in the catalog (%s), ignoring",
				 m->w->spec->filename, strerror(-q));
	}

	for (size_t k = 0; k < np; k++) {
		struct mload *m = &ml[k];
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
	}
	free(ml);
	free(reqs);
	free(rs);
	catalog_close(cat);
	return r;
}
