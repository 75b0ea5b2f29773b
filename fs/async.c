/* async: opens (or, without open requests, reads) that need a fill,
 * answered from a bounded pool of fill threads; reads of streamed bodies,
 * answered as the fill reaches them.
 *
 * DESIGN
 * - A FUSE worker never waits for the network.  op_open answers a cached
 *   body itself (open + fstat); a miss becomes an open job on the queue of
 *   this pool and the worker returns.  Without open requests (ops.c,
 *   FUSE_NO_OPEN_SUPPORT) the first read of a body does the same with a
 *   read job, answered with the data once the body is published (its fd
 *   goes into ctx->nodefd) or from the stream it joins.  libfuse's low-level API lets any
 *   thread reply to a request, exactly once.
 * - A pool thread takes a job and asks the cache (cache_begin): published
 *   → reply; a fill in flight → the job waits on it as a callback (no
 *   thread is held; the filler's thread replies when the fill ends, or
 *   queues the job again when a neighbour's fill gave the body up);
 *   nothing in flight → this thread fills (body_fill, bounded by the fill
 *   deadline) and replies.  Single-flight is the cache's.
 * - Streams: a body of ctx->stream_min bytes or more is answered as soon as
 *   its fill is started: the open gets a handle on the fill's
 *   cache_stream (fh = FH_STREAM | pointer), and reads are answered from
 *   the temp file as the inflater writes it (at once when the bytes are
 *   there, else from the fill's progress callback, on the fetch engine
 *   thread).  Openers that arrive during the fill join the stream.  The
 *   read that returns the last byte is answered only after the CRC-32 and
 *   sha256 checks.  A failed fill answers every pending and later read
 *   with EIO and drops the kernel's cached pages of the inodes that read
 *   the stream (notify_inval_inode), so no unverified page outlives the
 *   detection.  Bytes read before the end were not verified: see
 *   docs/architecture.md.
 * - Shutdown (async_free, after the session loop and http_cancel(NULL)):
 *   queued opens get EIO, running fills end at once (their requests are
 *   cancelled), threads are joined, then the session may unmount.
 * - Locking: a->lock protects the queue and the thread counts; taken
 *   alone, never across a fill or a reply. */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

enum job_kind {
	JOB_OPEN,  /* an open that needs a fill (open requests) */
	JOB_READ,  /* a read that needs a fill (no-open mode) */
	JOB_INVAL, /* drop an inode's pages (async_inval) */
};

struct job {
	struct cache_waiter w; /* first: the cache calls back with &w */
	struct async *a;
	enum job_kind kind;
	fuse_req_t req;             /* JOB_OPEN, JOB_READ */
	struct fuse_file_info fi;   /* JOB_OPEN */
	size_t size;                /* JOB_READ */
	off_t off;
	fuse_ino_t ino;
	uint32_t node;
	struct job *next;
};

/* An open handle on a stream (fh = FH_STREAM | pointer).  Listed, so that
 * handles the kernel never released (the session ended) are freed too. */
struct handle {
	struct cache_stream *s;
	struct handle *prev, *next; /* protected by async->lock */
};

struct async {
	struct fs_ctx *ctx;
	struct fuse_session *se;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail; /* protected by lock, as is what follows */
	unsigned nthreads, idle, max;
	pthread_t *threads;
	bool stopping;
	struct handle *handles; /* protected by lock */
};

static void reply_open_err(fuse_req_t req, int err)
{
	fuse_reply_err(req, err == -ENOMEM || err == -ENOSPC ? -err : EIO);
}

static void *pool_main(void *arg);

/* Answers a read from fd (taken), through the node's table.  Copies rather
 * than splices: this may run on a thread that outlives the session (the
 * filler of a waiter), where libfuse's per-thread splice pipe would leak. */
static void reply_read_fd(struct async *a, fuse_req_t req, uint32_t node, int fd, size_t size,
			  off_t off)
{
	bool owned;
	fd = nodefd_put(a->ctx->nodefd, node, fd, &owned);
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = fd;
	bv.buf[0].pos = off;
	fuse_reply_data(req, &bv, FUSE_BUF_NO_SPLICE);
	if (owned)
		close(fd);
}

static void job_failed(struct job *j, int err)
{
	if (j->kind == JOB_READ)
		nodefd_failed(j->a->ctx->nodefd, j->node);
	reply_open_err(j->req, err);
}

/* Queues a job; answers it with EIO once the pool is stopping. */
static void enqueue(struct async *a, struct job *j)
{
	pthread_mutex_lock(&a->lock);
	if (a->stopping) {
		pthread_mutex_unlock(&a->lock);
		if (j->kind != JOB_INVAL)
			reply_open_err(j->req, -EIO);
		free(j);
		return;
	}
	j->next = NULL;
	if (a->tail)
		a->tail->next = j;
	else
		a->head = j;
	a->tail = j;
	if (!a->idle && a->nthreads < a->max &&
	    pthread_create(&a->threads[a->nthreads], NULL, pool_main, a) == 0)
		a->nthreads++;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

/* The cache's answer for a job that waited (or a fill's own result). */
static void job_done(struct cache_waiter *w, int fd)
{
	struct job *j = (struct job *)w;
	if (fd == -EAGAIN) {
		enqueue(j->a, j); /* the fill was given up: begin again */
		return;
	}
	if (fd < 0) {
		job_failed(j, fd);
	} else if (j->kind == JOB_READ) {
		reply_read_fd(j->a, j->req, j->node, fd, j->size, j->off);
	} else {
		j->fi.fh = (uint64_t)fd;
		j->fi.keep_cache = 1;
		j->fi.noflush = 1;
		if (fuse_reply_open(j->req, &j->fi) == -ENOENT)
			close(fd); /* the opener was interrupted */
	}
	free(j);
}

/* --- reads of a stream ------------------------------------------------------ */

struct stream_read {
	struct cache_stream_reader rd; /* first */
	struct nodefd *nodefd; /* a read without a handle (no-open mode), else NULL */
	uint32_t node;
	fuse_req_t req;
	size_t size;
	off_t off;
	bool later; /* answered from the fill's progress: the engine thread */
};

static void read_done(struct cache_stream_reader *rd, int fd)
{
	struct stream_read *r = (struct stream_read *)rd;
	if (fd < 0) {
		if (r->nodefd)
			nodefd_failed(r->nodefd, r->node);
		fuse_reply_err(r->req, EIO);
	} else {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(r->size);
		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = fd;
		bv.buf[0].pos = r->off;
		/* libfuse keeps a splice pipe per replying thread, freed at the
		 * thread's exit only while the session lives: the engine thread
		 * outlives it, so it copies */
		fuse_reply_data(r->req, &bv, r->later ? FUSE_BUF_NO_SPLICE : FUSE_BUF_SPLICE_MOVE);
	}
	free(r);
}

/* Queues read r on stream s, or answers it now. */
static void stream_read_start(struct cache_stream *s, struct stream_read *r)
{
	r->later = true; /* before it is queued: it may be answered at once */
	int fd = cache_stream_read(s, &r->rd);
	if (fd != -EINPROGRESS) {
		r->later = false;
		read_done(&r->rd, fd);
	}
}

/* Answers the open with a handle on stream s (takes the caller's reference). */
static void open_stream(struct job *j, struct cache_stream *s)
{
	if (j->kind == JOB_READ) {
		/* the reader joins the stream; its pages are dropped if it fails */
		cache_stream_tag(s, j->ino);
		struct stream_read *r = xmalloc(sizeof(*r));
		*r = (struct stream_read){
			.rd = {.start = (uint64_t)j->off,
			       .end = (uint64_t)j->off + j->size,
			       .done = read_done},
			.nodefd = j->a->ctx->nodefd,
			.node = j->node,
			.req = j->req,
			.size = j->size,
			.off = j->off,
		};
		stream_read_start(s, r);
		cache_stream_unref(s);
		free(j);
		return;
	}
	int r = cache_stream_result(s);
	if (r < 0 && r != -EINPROGRESS) {
		job_failed(j, r);
		cache_stream_unref(s);
	} else {
		struct async *a = j->a;
		cache_stream_tag(s, j->ino);
		struct handle *h = xcalloc(1, sizeof(*h));
		h->s = s;
		pthread_mutex_lock(&a->lock);
		h->next = a->handles;
		if (h->next)
			h->next->prev = h;
		a->handles = h;
		pthread_mutex_unlock(&a->lock);
		j->fi.fh = FH_STREAM | (uint64_t)(uintptr_t)h;
		j->fi.keep_cache = 0; /* pages of this inode come from this stream only */
		j->fi.noflush = 1;
		if (fuse_reply_open(j->req, &j->fi) == -ENOENT)
			async_release(a, j->fi.fh);
	}
	free(j);
}

/* A failed stream: the kernel must not keep pages it read from it.  Only
 * [0, below) while reads are pending (their pages stay locked until they
 * are answered: invalidating those would wait for ourselves), then all. */
static void drop_pages(void *ud, struct cache_stream *s, uint64_t below)
{
	struct async *a = ud;
	pthread_mutex_lock(&a->lock);
	bool stopping = a->stopping; /* no worker would answer the kernel's reads */
	pthread_mutex_unlock(&a->lock);
	if (stopping || below == 0)
		return;
	uint64_t *inos;
	size_t n = cache_stream_tags(s, &inos);
	for (size_t i = 0; i < n; i++)
		fuse_lowlevel_notify_inval_inode(a->se, (fuse_ino_t)inos[i], 0,
						 below == UINT64_MAX ? 0 : (off_t)below);
	free(inos);
}

static void run_job(struct async *a, struct job *j)
{
	struct fs_ctx *ctx = a->ctx;
	if (j->kind == JOB_INVAL) {
		pthread_mutex_lock(&a->lock);
		bool stopping = a->stopping; /* no worker would answer the kernel */
		pthread_mutex_unlock(&a->lock);
		if (!stopping)
			fuse_lowlevel_notify_inval_inode(a->se, j->ino, 0, 0);
		free(j);
		return;
	}
	const struct tree_node *nd = &ctx->tree->nodes[j->node];
	uint8_t key[32];
	bool verified;
	body_key(ctx, j->node, key, &verified);
	int fd = -EIO;
	struct cache_stream *s = NULL;
	/* A streamed body brings no neighbours; others claim their run with
	 * the key (cache_begin), as fs_body_open does. */
	bool stream = ctx->stream_min && nd->size >= ctx->stream_min;
	struct cache_claim *claims = NULL;
	size_t n = stream ? 0 : body_claims(ctx, j->node, &claims);
	switch (cache_begin(ctx->cache, key, verified, nd->size, claims, n, &j->w, &fd, &s)) {
	case CACHE_HIT:
		job_done(&j->w, fd);
		break;
	case CACHE_WAIT:
		break; /* job_done comes from the filler */
	case CACHE_STREAM:
		open_stream(j, s);
		break;
	case CACHE_FILL:
		if (stream) {
			uint32_t node = j->node;
			s = cache_stream_new(ctx->cache, key, verified, nd->size);
			cache_stream_on_fail(s, drop_pages, a);
			open_stream(j, cache_stream_ref(s)); /* frees j */
			fd = body_fill(ctx, node, NULL, 0, s);
			if (fd >= 0) {
				close(fd);
			} else {
				if (ctx->nodefd)
					nodefd_failed(ctx->nodefd, node);
				drop_pages(a, s, UINT64_MAX);
			}
			cache_stream_unref(s);
		} else {
			job_done(&j->w, body_fill(ctx, j->node, claims, n, NULL));
		}
		break;
	}
	free(claims);
}

static void *pool_main(void *arg)
{
	struct async *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->head && !a->stopping) {
			a->idle++;
			pthread_cond_wait(&a->cond, &a->lock);
			a->idle--;
		}
		struct job *j = a->head;
		if (!j)
			break; /* stopping, nothing left */
		a->head = j->next;
		if (!a->head)
			a->tail = NULL;
		pthread_mutex_unlock(&a->lock);
		run_job(a, j);
		pthread_mutex_lock(&a->lock);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

struct async *async_new(struct fs_ctx *ctx, struct fuse_session *se, unsigned max_threads)
{
	struct async *a = xcalloc(1, sizeof(*a));
	a->ctx = ctx;
	a->se = se;
	a->max = max_threads ? max_threads : 1;
	a->threads = xcalloc(a->max, sizeof(*a->threads));
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	return a;
}

struct async *async_free(struct async *a)
{
	if (!a)
		return NULL;
	pthread_mutex_lock(&a->lock);
	a->stopping = true;
	struct job *j = a->head;
	a->head = a->tail = NULL;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	for (struct job *next; j; j = next) {
		next = j->next;
		if (j->kind != JOB_INVAL)
			reply_open_err(j->req, -EIO);
		free(j);
	}
	/* no new threads once stopping: nthreads is stable */
	for (unsigned i = 0; i < a->nthreads; i++)
		pthread_join(a->threads[i], NULL);
	/* handles still open when the session ended: no release will come */
	while (a->handles)
		async_release(a, FH_STREAM | (uint64_t)(uintptr_t)a->handles);
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->lock);
	free(a->threads);
	free(a);
	return NULL;
}

void async_stop(struct async *a)
{
	pthread_mutex_lock(&a->lock);
	a->stopping = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

static struct job *job_new(struct async *a, enum job_kind kind, fuse_req_t req, fuse_ino_t ino,
			   uint32_t node)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->w.done = job_done;
	j->a = a;
	j->kind = kind;
	j->req = req;
	j->ino = ino;
	j->node = node;
	return j;
}

void async_open(struct async *a, fuse_req_t req, fuse_ino_t ino, uint32_t node,
		struct fuse_file_info *fi)
{
	struct job *j = job_new(a, JOB_OPEN, req, ino, node);
	j->fi = *fi;
	enqueue(a, j);
}

void async_read_node(struct async *a, fuse_req_t req, fuse_ino_t ino, uint32_t node,
		     size_t size, off_t off)
{
	struct job *j = job_new(a, JOB_READ, req, ino, node);
	j->size = size;
	j->off = off;
	enqueue(a, j);
}

void async_inval(struct async *a, fuse_ino_t ino)
{
	enqueue(a, job_new(a, JOB_INVAL, NULL, ino, 0));
}

static struct handle *handle_of(uint64_t fh)
{
	return (struct handle *)(uintptr_t)(fh & ~FH_STREAM);
}

void async_read(fuse_req_t req, uint64_t fh, size_t size, off_t off)
{
	struct cache_stream *s = handle_of(fh)->s;
	struct stream_read *r = xmalloc(sizeof(*r));
	*r = (struct stream_read){
		.rd = {.start = (uint64_t)off, .end = (uint64_t)off + size, .done = read_done},
		.req = req,
		.size = size,
		.off = off,
	};
	stream_read_start(s, r);
}

void async_release(struct async *a, uint64_t fh)
{
	struct handle *h = handle_of(fh);
	pthread_mutex_lock(&a->lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		a->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&a->lock);
	cache_stream_unref(h->s);
	free(h);
}
