/* ahead: the import-graph prefetch.  Python imports one module at a time,
 * so a cold import of a stack pays one round trip per module fill; this
 * fetches what a module will import while Python still compiles and runs
 * it, so the graph arrives in about one round trip per import depth.
 *
 * DESIGN
 * - When a .py body has been opened (op_open → ahead_note, a hit or a
 *   miss, since a source that rode along another fill is not scanned until
 *   something says it is imported), its source is scanned (pyscan.c) for the imports that run
 *   at import time, and each name is resolved against the tree the way
 *   Python's path finder would find it in site-packages (absolute) or in
 *   the module's package (relative): the __init__.py of every package
 *   along a dotted path, then a package directory's __init__.py, an
 *   extension module (<name>.cpython-XY-*.so, .abi3.so, .so) or <name>.py;
 *   `from pkg import name` also wants pkg/name when that is a submodule.
 *   Names that are not in the tree (the standard library) cost a lookup.
 * - Every resolved body not wanted before is queued (one state byte per
 *   tree node, so each is considered once).  Up to WORKERS threads of this
 *   module take the queue and ask the cache (cache_begin, with the body's
 *   neighbour run as body_claims plans it, exactly as an open would):
 *   published → a source is scanned at once; a fill in flight (an opener's,
 *   a neighbour claim, the profile replay) → a waiter requeues the node
 *   when it ends (no thread held; the scan happens on our thread, never on
 *   the filler's, which has openers to answer); nothing in flight → this
 *   thread fills it (body_fill), then scans it.  Single flight is the
 *   cache's: an open that arrives meanwhile waits for our fill.
 * - So each prefetched source is scanned in turn and the reachable graph
 *   arrives in waves.  Requeued and opener-noted nodes go to the front of
 *   the queue (their bodies are there: a scan, no request); newly wanted
 *   ones to the back.
 * - Bounds: WORKERS fills at once; a fill with a neighbour run is admitted
 *   when its estimated buffer (the run, at most 1 MiB, plus its largest
 *   body) fits in MEM_BUDGET with those in flight (one alone may exceed
 *   it); sources over SCAN_MAX are not scanned; bodies that would be
 *   streamed (ctx->stream_min) are left to their opener, whose stream
 *   drops the kernel's pages when a check fails.
 * - Mode (SITEFS_IMPORT_AHEAD): 0 off, 1 imports at indent 0 only, 2 (the
 *   default) also those in top-level try/if/with blocks, 3 also those in
 *   functions (pyscan.h).  Measured (docs/benchmarks.md): 2 leaves ~40 of
 *   ~550 fills on the import's path at the cost of no byte; 3 leaves ~20
 *   but fetches 13% more than the import reads.
 * - Shutdown: ahead_stop after the engine's requests are cancelled and
 *   before the fill pool is freed (a waiting opener is answered from our
 *   fill's thread); ahead_free once no other fill can end (after the
 *   profile), since our waiters are called by whoever ends a fill.
 * - Locking: a->lock (queue, thread count, waiter count) is a
 *   leaf, never held across a fill, a scan or a cache call. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"
#include "fs/pyscan.h"

#define WORKERS 24
#define MEM_BUDGET (16u << 20)
#define RUN_MAX (1u << 20) /* body.c's SPAN_MAX: what one neighbour run buffers */
#define SCAN_MAX (8u << 20)

enum { ST_NONE, ST_WANTED, ST_DONE };

struct ahead {
	struct fs_ctx *ctx;
	enum pyscan_mode mode;
	uint32_t site;		/* the site-packages directory node */
	char ext_tag[32];	/* "cpython-311-": extension modules of this interpreter */
	_Atomic uint8_t *state; /* per tree node: ST_* */

	pthread_mutex_t lock;
	pthread_cond_t cond, wait_cond;
	uint32_t *q; /* a ring of nodes: q[(qhead + k) % qcap], k < qlen; protected by lock */
	size_t qhead, qlen, qcap;
	pthread_t threads[WORKERS];
	unsigned nthreads, idle; /* protected by lock, as is what follows */
	bool stopping, stopped;
	unsigned waiting; /* our waiters queued on others' fills */
	struct budget mem; /* ranges and inflated entries in flight */

	_Atomic uint64_t scanned, wanted, filled, fill_bytes, joined, failed;
};

struct ahead_wait {
	struct cache_waiter w; /* first: the cache calls back with &w */
	struct ahead *a;
	uint32_t node;
};

static void *worker(void *arg);

/* Caller holds a->lock. */
static void push(struct ahead *a, uint32_t node, bool front)
{
	if (a->stopping)
		return;
	if (a->qlen == a->qcap) {
		size_t cap = a->qcap ? 2 * a->qcap : 256;
		uint32_t *q = xmalloc(cap * sizeof(*q));
		for (size_t k = 0; k < a->qlen; k++)
			q[k] = a->q[(a->qhead + k) % a->qcap];
		free(a->q);
		a->q = q;
		a->qcap = cap;
		a->qhead = 0;
	}
	if (front) {
		a->qhead = (a->qhead + a->qcap - 1) % a->qcap;
		a->q[a->qhead] = node;
	} else {
		a->q[(a->qhead + a->qlen) % a->qcap] = node;
	}
	a->qlen++;
	if (!a->idle && a->nthreads < WORKERS &&
	    pthread_create(&a->threads[a->nthreads], NULL, worker, a) == 0)
		a->nthreads++;
	pthread_cond_signal(&a->cond);
}

static bool is_source(const struct tree *t, uint32_t i)
{
	const struct tree_node *nd = &t->nodes[i];
	return nd->kind == TREE_BODY && str_endswith(tree_name(t, nd), ".py");
}

/* Queues BODY node i unless it was considered before. */
static void want(struct ahead *a, int64_t i, bool front)
{
	const struct tree_node *nd;
	if (i < 0 || (nd = &a->ctx->tree->nodes[i])->kind != TREE_BODY || !nd->size)
		return;
	uint8_t none = ST_NONE;
	if (!atomic_compare_exchange_strong(&a->state[i], &none, ST_WANTED))
		return;
	atomic_fetch_add_explicit(&a->wanted, 1, memory_order_relaxed);
	pthread_mutex_lock(&a->lock);
	push(a, (uint32_t)i, front);
	pthread_mutex_unlock(&a->lock);
}

void ahead_note(struct ahead *a, uint32_t i)
{
	if (a && is_source(a->ctx->tree, i))
		want(a, i, true);
}

/* --- resolving a name ------------------------------------------------------- */

static int64_t lookup(const struct tree *t, uint32_t dir, const char *name, const char *suffix)
{
	char b[512];
	if ((size_t)snprintf(b, sizeof(b), "%s%s", name, suffix) >= sizeof(b))
		return -1;
	return tree_lookup(t, dir, b);
}

/* An extension module `name` in dir: name.cpython-XY-*.so, name.abi3.so or
 * name.so (the children are sorted by name: the candidates are together). */
static int64_t extension(const struct ahead *a, uint32_t dir, const char *name)
{
	const struct tree *t = a->ctx->tree;
	const struct tree_node *d = &t->nodes[dir];
	size_t nl = strlen(name), lo = 0, hi = d->dir.count;
	while (lo < hi) { /* the first child >= "name." */
		size_t mid = lo + (hi - lo) / 2;
		const char *c = tree_name(t, &t->nodes[t->children[d->dir.first + mid]]);
		int r = strncmp(c, name, nl);
		if (r < 0 || (r == 0 && (unsigned char)c[nl] < '.'))
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < d->dir.count; lo++) {
		uint32_t ci = t->children[d->dir.first + lo];
		const char *c = tree_name(t, &t->nodes[ci]);
		if (strncmp(c, name, nl) != 0 || c[nl] != '.')
			break;
		const char *rest = c + nl + 1;
		if (!str_endswith(rest, ".so"))
			continue;
		if (strcmp(rest, "so") == 0 || strcmp(rest, "abi3.so") == 0 ||
		    strncmp(rest, a->ext_tag, strlen(a->ext_tag)) == 0)
			return ci;
	}
	return -1;
}

/* Module `name` in directory dir as the path finder finds it; wants its
 * body.  Returns the package directory it names (to go on into), or -1. */
static int64_t module_in(struct ahead *a, uint32_t dir, const char *name)
{
	const struct tree *t = a->ctx->tree;
	int64_t c = tree_lookup(t, dir, name);
	bool is_dir = c >= 0 && t->nodes[c].kind == TREE_DIR;
	if (is_dir) {
		int64_t init = tree_lookup(t, (uint32_t)c, "__init__.py");
		if (init >= 0) {
			want(a, init, false);
			return c;
		}
	}
	int64_t m = extension(a, dir, name);
	if (m < 0)
		m = lookup(t, dir, name, ".py");
	if (m >= 0) {
		want(a, m, false);
		return -1;
	}
	return is_dir ? c : -1; /* a namespace package */
}

struct scan_ud {
	struct ahead *a;
	uint32_t node; /* the source scanned */
};

static void on_import(void *ud, unsigned level, const char *module, const char *name)
{
	struct scan_ud *su = ud;
	struct ahead *a = su->a;
	const struct tree *t = a->ctx->tree;
	int64_t dir = a->site;
	if (level) { /* the module's package, then up */
		dir = t->nodes[su->node].parent;
		for (unsigned k = 1; k < level && dir != a->site && dir != 0; k++)
			dir = t->nodes[dir].parent;
		if (dir == a->site || dir == 0)
			return; /* beyond the top-level package */
	}
	char part[256];
	for (const char *p = module; *p && dir >= 0;) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l >= sizeof(part))
			return;
		memcpy(part, p, l);
		part[l] = '\0';
		dir = module_in(a, (uint32_t)dir, part);
		p += l + (dot != NULL);
	}
	if (name && dir >= 0 && strcmp(name, "*") != 0)
		module_in(a, (uint32_t)dir, name); /* a submodule, if it is one */
}

static void scan(struct ahead *a, uint32_t node, int fd)
{
	uint64_t size = a->ctx->tree->nodes[node].size;
	if (size > SCAN_MAX)
		return;
	char *src = xmalloc(size ? (size_t)size : 1);
	size_t got = 0;
	while (got < size) {
		ssize_t n = pread(fd, src + got, (size_t)size - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	struct scan_ud su = {a, node};
	pyscan_imports(src, got, a->mode, on_import, &su);
	free(src);
	atomic_fetch_add_explicit(&a->scanned, 1, memory_order_relaxed);
}

/* --- fetching --------------------------------------------------------------- */

/* Another fill of the node ended: scan it on our thread (or, given up,
 * begin again). */
static void wait_done(struct cache_waiter *w, int fd)
{
	struct ahead_wait *aw = (struct ahead_wait *)w;
	struct ahead *a = aw->a;
	if (fd >= 0)
		close(fd);
	pthread_mutex_lock(&a->lock);
	if (fd >= 0 || fd == -EAGAIN)
		push(a, aw->node, true);
	else
		atomic_store(&a->state[aw->node], ST_DONE);
	a->waiting--;
	pthread_cond_broadcast(&a->wait_cond);
	pthread_mutex_unlock(&a->lock);
	free(aw);
}

/* What a fill of node with these claims holds in memory at most. */
static uint64_t mem_need(const struct tree_node *nd, const struct cache_claim *claims, size_t n)
{
	if (!n)
		return 64u << 10; /* one entry, streamed into its temp file */
	uint64_t sum = 0, most = nd->size;
	for (size_t k = 0; k < n; k++) {
		sum += claims[k].size;
		most = MAX(most, claims[k].size);
	}
	return MIN(sum, (uint64_t)RUN_MAX) + most;
}

static void process(struct ahead *a, uint32_t node)
{
	struct fs_ctx *ctx = a->ctx;
	const struct tree_node *nd = &ctx->tree->nodes[node];
	bool src = is_source(ctx->tree, node);
	if (ctx->stream_min && nd->size >= ctx->stream_min) {
		atomic_store(&a->state[node], ST_DONE);
		return;
	}
	uint8_t key[32];
	bool verified;
	body_key(ctx, node, key, &verified);
	struct cache_claim *claims = NULL;
	size_t n = body_claims(ctx, node, &claims);
	uint64_t need = mem_need(nd, claims, n);
	if (!budget_take(&a->mem, need)) {
		free(claims);
		return;
	}
	struct ahead_wait *aw = xcalloc(1, sizeof(*aw));
	*aw = (struct ahead_wait){.w.done = wait_done, .a = a, .node = node};
	struct cache_stream *s = NULL;
	int fd = -EIO;
	pthread_mutex_lock(&a->lock);
	a->waiting++; /* before the cache may call it */
	pthread_mutex_unlock(&a->lock);
	enum cache_begin b =
		cache_begin(ctx->cache, key, verified, nd->size, claims, n, &aw->w, &fd, &s);
	if (b != CACHE_WAIT) {
		pthread_mutex_lock(&a->lock);
		a->waiting--;
		pthread_mutex_unlock(&a->lock);
		free(aw);
	}
	switch (b) {
	case CACHE_WAIT:
		atomic_fetch_add_explicit(&a->joined, 1, memory_order_relaxed);
		break; /* wait_done requeues it */
	case CACHE_STREAM:
		cache_stream_unref(s);
		atomic_store(&a->state[node], ST_DONE);
		break;
	case CACHE_FILL:
		fd = body_fill(ctx, node, claims, n, NULL);
		if (fd >= 0) {
			atomic_fetch_add_explicit(&a->filled, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&a->fill_bytes, nd->size, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&a->failed, 1, memory_order_relaxed);
		}
		/* fall through */
	case CACHE_HIT:
		if (fd >= 0) {
			if (src)
				scan(a, node, fd);
			close(fd);
		}
		atomic_store(&a->state[node], ST_DONE);
		break;
	}
	budget_give(&a->mem, need);
	free(claims);
}

static void *worker(void *arg)
{
	struct ahead *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->qlen && !a->stopping) {
			a->idle++;
			pthread_cond_wait(&a->cond, &a->lock);
			a->idle--;
		}
		if (a->stopping)
			break;
		uint32_t node = a->q[a->qhead];
		a->qhead = (a->qhead + 1) % a->qcap;
		a->qlen--;
		pthread_mutex_unlock(&a->lock);
		process(a, node);
		pthread_mutex_lock(&a->lock);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* --- life ------------------------------------------------------------------- */

struct ahead *ahead_new(struct fs_ctx *ctx)
{
	const char *ev = getenv("SITEFS_IMPORT_AHEAD");
	enum pyscan_mode mode = PYSCAN_BLOCKS;
	if (ev && *ev)
		mode = (enum pyscan_mode)atoi(ev);
	if (mode != PYSCAN_TOP && mode != PYSCAN_BLOCKS && mode != PYSCAN_ALL)
		return NULL;
	char site[64];
	snprintf(site, sizeof(site), "lib/python%d.%d/site-packages", ctx->cfg.py.major,
		 ctx->cfg.py.minor);
	int64_t s = tree_lookup_path(ctx->tree, site);
	if (s < 0)
		return NULL;
	struct ahead *a = xcalloc(1, sizeof(*a));
	a->ctx = ctx;
	a->mode = mode;
	a->site = (uint32_t)s;
	snprintf(a->ext_tag, sizeof(a->ext_tag), "cpython-%d%d-", ctx->cfg.py.major,
		 ctx->cfg.py.minor);
	a->state = xcalloc(ctx->tree->n ? ctx->tree->n : 1, sizeof(*a->state));
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	budget_init(&a->mem, MEM_BUDGET);
	pthread_cond_init(&a->wait_cond, NULL);
	return a;
}

void ahead_stop(struct ahead *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	bool first = !a->stopped;
	a->stopping = a->stopped = true;
	a->qlen = 0;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	budget_stop(&a->mem);
	if (!first)
		return;
	/* no thread starts once stopping: nthreads is stable */
	for (unsigned i = 0; i < a->nthreads; i++)
		pthread_join(a->threads[i], NULL);
	if (atomic_load(&a->wanted))
		log_notice("import-ahead: %llu sources scanned, %llu bodies wanted, %llu fetched "
			   "(%.1f MB), %llu joined fills in flight, %llu failed",
			   (unsigned long long)atomic_load(&a->scanned),
			   (unsigned long long)atomic_load(&a->wanted),
			   (unsigned long long)atomic_load(&a->filled),
			   atomic_load(&a->fill_bytes) / 1e6,
			   (unsigned long long)atomic_load(&a->joined),
			   (unsigned long long)atomic_load(&a->failed));
}

struct ahead *ahead_free(struct ahead *a)
{
	if (!a)
		return NULL;
	ahead_stop(a);
	/* Our waiters are called by whoever ends the fill they wait on; every
	 * filler has ended by now (fill pool and profile joined). */
	pthread_mutex_lock(&a->lock);
	while (a->waiting)
		pthread_cond_wait(&a->wait_cond, &a->lock);
	pthread_mutex_unlock(&a->lock);
	pthread_cond_destroy(&a->cond);
	budget_destroy(&a->mem);
	pthread_cond_destroy(&a->wait_cond);
	pthread_mutex_destroy(&a->lock);
	free(a->q);
	free(a->state);
	free(a);
	return NULL;
}
