/* profile: which bodies a run opened (--profile FILE), and their replay as
 * one parallel wave at the next mount.
 *
 * DESIGN
 * - The file is text: a header line, then one "<wheel filename>\t<entry
 *   name>\n" line per body.  It only grows: a write is the union of what
 *   the file holds at that moment (another mount may share it) and the
 *   bodies this mount opened, written to a temp file and renamed over it.
 *   Written at unmount and every PROFILE_WRITE_S seconds when something new
 *   was opened.  A file that is not a profile is ignored with a warning
 *   (and replaced by the next write); lines naming wheels or entries this
 *   mount does not have are skipped with a warning and kept in the file.
 * - Replay, on a thread started once the tree is built (the mount does not
 *   wait for it): each recorded body not in the cache is claimed
 *   (cache_claim: an opener that comes early waits for the claim instead of
 *   fetching), the claimed entries of a wheel are coalesced into ranges (a
 *   gap of at most GAP_MAX bytes, at most RANGE_MAX bytes each: one request
 *   per wheel when the entries are dense), all ranges are fetched at once by
 *   up to WORKERS threads, and every entry is inflated, checked against its
 *   CRC-32 and RECORD sha256, and published (cache_publish; on any failure
 *   the claim is given up and an opener fills the body itself).  Entries
 *   whose compressed size exceeds BIG_MIN are not buffered: they are filled
 *   by the ordinary streaming path (fs_body_open), one request each.
 *   Memory: at most WORKERS ranges of RANGE_MAX bytes (plus one inflated
 *   entry each) at a time.
 * - Recording is one store per opened node into a byte array (no lock). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetch/inflate.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fetch/zipcd.h"
#include "fs/fs_i.h"

#define PROFILE_HEADER "# sitefs profile 1\n"
#define PROFILE_MAX_BYTES (64u << 20)
#define PROFILE_WRITE_S 30
#define GAP_MAX (256u << 10)
#define RANGE_MAX (1u << 20)
#define BIG_MIN RANGE_MAX /* never buffer an entry larger than a range */
#define WORKERS 32

struct pentry { /* one claimed (or big) body of the replay */
	uint32_t node;
	size_t k; /* cd entry */
	struct cache_claim cl; /* key, verified, size; claimed by the replay */
};

struct prange {
	struct wheel_src *w;
	uint64_t lo, hi;
	struct pentry *e; /* claimed entries, lho increasing (ranges) or one big entry */
	size_t n;
	bool big;
};

struct profile {
	struct fs_ctx *ctx;
	char *path;
	_Atomic uint8_t *opened; /* per tree node: 1 = opened this run, not in the file yet */
	uint8_t *recorded;	 /* per tree node: named by the file as loaded */
	_Atomic bool dirty;

	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping; /* protected by lock */

	/* replay work, shared by the workers */
	struct prange *ranges;
	size_t nranges;
	_Atomic size_t next;
	_Atomic uint64_t bodies, bytes, failed;
};

/* --- the file ------------------------------------------------------------- */

/* Splits the file into lines after the header.  Returns the number of lines
 * (pointers into text, NUL-terminated in place), or -1 when text is not a
 * profile.  *ret_bad counts malformed lines (skipped). */
static ssize_t split_lines(char *text, size_t len, char ***ret, size_t *ret_bad)
{
	size_t hl = strlen(PROFILE_HEADER), n = 0, cap = 0, bad = 0;
	char **v = NULL;

	if (len < hl || memcmp(text, PROFILE_HEADER, hl) != 0 || memchr(text, '\0', len))
		return -1;
	for (char *s = text + hl, *end = text + len; s < end;) {
		char *nl = memchr(s, '\n', (size_t)(end - s));
		if (!nl)
			nl = end; /* a torn last line (cannot happen with rename; be lenient) */
		*nl = '\0';
		char *tab = strchr(s, '\t');
		if (!tab || tab == s || !tab[1] || strchr(tab + 1, '\t')) {
			if (*s)
				bad++;
		} else {
			if (n == cap)
				v = xrealloc(v, (cap = cap ? 2 * cap : 256) * sizeof(*v));
			v[n++] = s;
		}
		s = nl + 1;
	}
	*ret = v;
	*ret_bad = bad;
	return (ssize_t)n;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The node named by "<wheel>\t<entry>", or UINT32_MAX. */
static uint32_t node_of_line(struct fs_ctx *ctx, const char *line)
{
	const char *tab = strchr(line, '\t');
	size_t wl = (size_t)(tab - line);

	for (size_t w = 0; w < ctx->cfg.nwheels; w++) {
		struct wheel_src *ws = &ctx->wheels[w];
		if (strlen(ws->spec->filename) != wl || memcmp(ws->spec->filename, line, wl) != 0 ||
		    !ws->meta.cd)
			continue;
		const struct zip_entry *e = zipcd_find(ws->meta.cd, tab + 1);
		if (!e)
			return UINT32_MAX;
		uint32_t ni = ws->entry_node[e - ws->meta.cd->entries];
		if (ni == UINT32_MAX || ctx->tree->nodes[ni].kind != TREE_BODY)
			return UINT32_MAX;
		return ni;
	}
	return UINT32_MAX;
}

static char *line_of_node(struct fs_ctx *ctx, uint32_t i)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	const struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	const char *name = w->meta.cd->entries[nd->body.entry].name;

	if (strpbrk(name, "\t\n") || strpbrk(w->spec->filename, "\t\n"))
		return NULL; /* not representable; never seen in a real wheel */
	return xasprintf("%s\t%s", w->spec->filename, name);
}

static void load(struct profile *p)
{
	struct fs_ctx *ctx = p->ctx;
	char *text = NULL, **lines = NULL;
	size_t len = 0, bad = 0, stale = 0, found = 0;
	int r = file_read_all(p->path, &text, &len);

	if (r == -ENOENT)
		return; /* the first run: recorded at unmount */
	if (r < 0) {
		log_warn("profile \"%s\": %s; not replaying it", p->path, strerror(-r));
		return;
	}
	ssize_t n = len > PROFILE_MAX_BYTES ? -1 : split_lines(text, len, &lines, &bad);
	if (n < 0) {
		log_warn("profile \"%s\" is not a sitefs profile: ignoring it (it will be "
			 "replaced at unmount)", p->path);
		free(text);
		return;
	}
	for (ssize_t j = 0; j < n; j++) {
		uint32_t i = node_of_line(ctx, lines[j]);
		if (i == UINT32_MAX) {
			stale++;
		} else if (!p->recorded[i]) {
			p->recorded[i] = 1;
			found++;
		}
	}
	if (bad)
		log_warn("profile \"%s\": %zu malformed lines ignored", p->path, bad);
	if (stale)
		log_warn("profile \"%s\": %zu of %zd entries name files this mount does not "
			 "have; ignored", p->path, stale, n);
	log_debug(LOG_CAT_CACHE, "profile \"%s\": %zu bodies recorded", p->path, found);
	free(lines);
	free(text);
}

/* Appends what this run opened to the file (merged with what it holds now). */
static void save(struct profile *p)
{
	struct fs_ctx *ctx = p->ctx;
	char *text = NULL, **lines = NULL;
	size_t len = 0, bad = 0, added = 0;
	ssize_t n = -1;
	struct buf out;

	if (!atomic_exchange(&p->dirty, false))
		return;
	if (file_read_all(p->path, &text, &len) == 0 && len <= PROFILE_MAX_BYTES)
		n = split_lines(text, len, &lines, &bad);
	if (n < 0)
		n = 0;
	if (n)
		qsort(lines, (size_t)n, sizeof(*lines), cmp_str);
	buf_init(&out);
	buf_puts(&out, PROFILE_HEADER);
	for (ssize_t j = 0; j < n; j++)
		buf_printf(&out, "%s\n", lines[j]);
	for (size_t i = 0; i < ctx->tree->n; i++) {
		if (!atomic_load_explicit(&p->opened[i], memory_order_relaxed))
			continue;
		char *l = line_of_node(ctx, (uint32_t)i);
		if (l && !(n && bsearch(&l, lines, (size_t)n, sizeof(*lines), cmp_str))) {
			buf_printf(&out, "%s\n", l);
			added++;
		}
		free(l);
	}
	if (added) {
		int r = file_write_atomic(p->path, out.data, out.len, 0644);
		if (r < 0) {
			log_warn("profile \"%s\": cannot write it: %s", p->path, strerror(-r));
			atomic_store(&p->dirty, true);
		} else {
			log_debug(LOG_CAT_CACHE, "profile \"%s\": %zu bodies added", p->path, added);
		}
	}
	buf_free(&out);
	free(lines);
	free(text);
}

void profile_note(struct profile *p, uint32_t node)
{
	if (!p || p->recorded[node] ||
	    atomic_load_explicit(&p->opened[node], memory_order_relaxed))
		return;
	atomic_store_explicit(&p->opened[node], 1, memory_order_relaxed);
	atomic_store(&p->dirty, true);
}

/* --- replay ----------------------------------------------------------------- */

static int sink_buf(void *ud, const uint8_t *data, size_t len)
{
	buf_append(ud, data, len);
	return 0;
}

/* Inflates and checks entry pe of a fetched range; returns the body or NULL. */
static uint8_t *decode(struct fs_ctx *ctx, const struct prange *ru, const struct pentry *pe,
		       const struct buf *b)
{
	const struct zip_entry *e = &ru->w->meta.cd->entries[pe->k];
	const struct tree_node *nd = &ctx->tree->nodes[pe->node];
	uint64_t doff = 0;
	uint8_t *data = NULL, sha[32];
	char why[200];

	if (e->lho < ru->lo || e->lho - ru->lo >= b->len ||
	    zipcd_local_header(b->data + (e->lho - ru->lo), b->len - (e->lho - ru->lo), e,
			       &doff) < 0 ||
	    doff - ru->lo + e->csize > b->len)
		return NULL; /* a long local extra field: the opener's own fill copes */
	if (inflate_buffer(e->method, b->data + (doff - ru->lo), (size_t)e->csize, e->usize,
			   e->crc32, &data, sha, why, sizeof(why)) < 0)
		return NULL;
	if (nd->has_sha && memcmp(sha, nd->sha256, 32) != 0) {
		free(data);
		return NULL; /* the opener's fill logs the mismatch */
	}
	return data;
}

static void run_range(struct profile *p, struct prange *ru)
{
	struct fs_ctx *ctx = p->ctx;

	if (ru->big) {
		int fd = fs_body_open(ctx, ru->e[0].node);
		if (fd >= 0) {
			close(fd);
			atomic_fetch_add(&p->bodies, 1);
			atomic_fetch_add(&p->bytes, ctx->tree->nodes[ru->e[0].node].size);
		} else {
			atomic_fetch_add(&p->failed, 1);
		}
		return;
	}
	struct buf b;
	char err[300] = "";
	buf_init(&b);
	int r = wheel_read(ctx, ru->w, ru->lo, ru->hi - ru->lo, sink_buf, &b, err, sizeof(err));
	if (r < 0)
		log_debug(LOG_CAT_CACHE, "profile: wheel \"%s\" [%llu, %llu): %s",
			  ru->w->spec->filename, (unsigned long long)ru->lo,
			  (unsigned long long)ru->hi, err);
	for (size_t j = 0; j < ru->n; j++) {
		const struct tree_node *nd = &ctx->tree->nodes[ru->e[j].node];
		uint8_t *data = r == 0 ? decode(ctx, ru, &ru->e[j], &b) : NULL;
		cache_publish(ctx->cache, &ru->e[j].cl, data);
		if (data) {
			atomic_fetch_add(&p->bodies, 1);
			atomic_fetch_add(&p->bytes, nd->size);
		} else {
			atomic_fetch_add(&p->failed, 1);
		}
		free(data);
	}
	buf_free(&b);
}

static void *worker(void *arg)
{
	struct profile *p = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->nranges)
			return NULL;
		pthread_mutex_lock(&p->lock);
		bool stop = p->stopping;
		pthread_mutex_unlock(&p->lock);
		if (stop) { /* unmounting: give the claims up */
			for (size_t j = 0; !p->ranges[i].big && j < p->ranges[i].n; j++)
				cache_publish(p->ctx->cache, &p->ranges[i].e[j].cl, NULL);
			continue;
		}
		run_range(p, &p->ranges[i]);
	}
}

static int cmp_lho(const void *a, const void *b, void *ud)
{
	const struct zip_cd *cd = ud;
	uint64_t x = cd->entries[((const struct pentry *)a)->k].lho;
	uint64_t y = cd->entries[((const struct pentry *)b)->k].lho;
	return x < y ? -1 : x > y;
}

static void add_range(struct profile *p, size_t *cap, struct prange ru)
{
	if (p->nranges == *cap)
		p->ranges = xrealloc(p->ranges, (*cap = *cap ? 2 * *cap : 64) * sizeof(*p->ranges));
	p->ranges[p->nranges++] = ru;
}

/* Claims the recorded bodies not in the cache and plans the ranges. */
static void plan(struct profile *p)
{
	struct fs_ctx *ctx = p->ctx;
	size_t cap = 0;
	struct pentry *es = xmalloc(sizeof(*es) * (ctx->tree->n ? ctx->tree->n : 1));

	for (size_t w = 0; w < ctx->cfg.nwheels; w++) {
		struct wheel_src *ws = &ctx->wheels[w];
		const struct zip_cd *cd = ws->meta.cd;
		size_t n = 0;

		for (size_t k = 0; cd && k < cd->n; k++) {
			uint32_t ni = ws->entry_node[k];
			if (ni == UINT32_MAX || !p->recorded[ni])
				continue;
			const struct tree_node *nd = &ctx->tree->nodes[ni];
			if (nd->kind != TREE_BODY || nd->size == 0)
				continue;
			struct pentry pe = {.node = ni, .k = k};
			body_key(ctx, ni, pe.cl.key, &pe.cl.verified);
			pe.cl.size = nd->size;
			if (cd->entries[k].csize > BIG_MIN) {
				int fd = cache_peek(ctx->cache, pe.cl.key, pe.cl.verified, nd->size);
				if (fd >= 0) {
					close(fd);
					continue;
				}
				struct pentry *one = xmalloc(sizeof(*one));
				*one = pe;
				add_range(p, &cap, (struct prange){.w = ws, .e = one, .n = 1, .big = true});
				continue;
			}
			if (cache_claim(ctx->cache, &pe.cl))
				es[n++] = pe;
		}
		if (!n)
			continue;
		qsort_r(es, n, sizeof(*es), cmp_lho, (void *)cd);
		for (size_t j = 0; j < n;) {
			const struct zip_entry *e = &cd->entries[es[j].k];
			uint64_t lo = e->lho, hi = MIN(e->lho + zipcd_span_guess(e), ws->spec->size);
			size_t first = j++;
			for (; j < n; j++) {
				const struct zip_entry *f = &cd->entries[es[j].k];
				uint64_t end = MIN(f->lho + zipcd_span_guess(f), ws->spec->size);
				if (f->lho > hi + GAP_MAX || MAX(hi, end) - lo > RANGE_MAX)
					break;
				hi = MAX(hi, end);
			}
			struct pentry *part = xmalloc(sizeof(*part) * (j - first));
			memcpy(part, es + first, sizeof(*part) * (j - first));
			add_range(p, &cap,
				  (struct prange){.w = ws, .lo = lo, .hi = hi, .e = part, .n = j - first});
		}
	}
	free(es);
}

static void *profile_main(void *arg)
{
	struct profile *p = arg;
	uint64_t t0 = now_ns();
	struct http_stats h0, h1;

	http_get_stats(p->ctx->http, &h0);
	plan(p);
	if (p->nranges) {
		size_t nw = MIN(p->nranges, (size_t)WORKERS);
		pthread_t *th = xcalloc(nw, sizeof(*th));
		size_t started = 0;
		for (; started < nw; started++)
			if (pthread_create(&th[started], NULL, worker, p) != 0)
				break;
		if (!started)
			worker(p);
		for (size_t i = 0; i < started; i++)
			pthread_join(th[i], NULL);
		free(th);
		http_get_stats(p->ctx->http, &h1);
		log_notice("profile \"%s\": %llu bodies (%.1f MB) fetched in %zu ranges, "
			   "%llu requests, %.0f ms%s",
			   p->path, (unsigned long long)atomic_load(&p->bodies),
			   atomic_load(&p->bytes) / 1e6, p->nranges,
			   (unsigned long long)(h1.requests - h0.requests), (now_ns() - t0) / 1e6,
			   atomic_load(&p->failed) ? " (some left to their first open)" : "");
	} else {
		log_notice("profile \"%s\": nothing to fetch", p->path);
	}
	for (size_t i = 0; i < p->nranges; i++)
		free(p->ranges[i].e);
	free(p->ranges);
	p->ranges = NULL;
	p->nranges = 0;

	/* Then write what was opened now and then, until unmount. */
	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += PROFILE_WRITE_S;
		if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) != 0 && !p->stopping) {
			pthread_mutex_unlock(&p->lock);
			save(p);
			pthread_mutex_lock(&p->lock);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct profile *profile_open(struct fs_ctx *ctx, const char *path)
{
	struct profile *p = xcalloc(1, sizeof(*p));

	p->ctx = ctx;
	p->path = xstrdup(path);
	p->opened = xcalloc(ctx->tree->n ? ctx->tree->n : 1, sizeof(*p->opened));
	p->recorded = xcalloc(ctx->tree->n ? ctx->tree->n : 1, 1);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	load(p);
	int r = pthread_create(&p->thread, NULL, profile_main, p);
	if (r)
		log_warn("profile \"%s\": cannot start its thread: %s; not replaying it", path,
			 strerror(r));
	p->started = r == 0;
	return p;
}

struct profile *profile_close(struct profile *p)
{
	if (!p)
		return NULL;
	if (p->started) {
		pthread_mutex_lock(&p->lock);
		p->stopping = true;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->thread, NULL);
	}
	save(p);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->opened);
	free(p->recorded);
	free(p->path);
	free(p);
	return NULL;
}
