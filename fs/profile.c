/* profile: which bodies a run opened (--profile FILE), and the bytecode
 * compiled for them; their replay as one parallel wave at the next mount.
 *
 * DESIGN
 * - The file (layout: profile_fmt.h) is a text section, one "<wheel
 *   filename>\t<entry name>\n" line per body, and a pyc section: the
 *   stored-form pycs (source sha256 + cache tag + level, zstd) of the
 *   sources it names, as the store held them when the file was written.
 *   It only grows: a write is the union of what the file holds at that
 *   moment (another mount may share it) and what this mount opened or
 *   found in the store, streamed to a temp file and renamed over it.
 *   Written at unmount and every PROFILE_WRITE_S seconds when something new
 *   was opened or compiled.  A file that is not a profile is ignored with a
 *   warning (and replaced by the next write); lines naming wheels or entries
 *   this mount does not have, and pycs for other sources or interpreters,
 *   are skipped and kept in the file.
 * - Pycs are code: they are seeded only from a file owned by the mount's
 *   user (or root) and writable by nobody else, and only after the checks
 *   pyc.c makes (pyc_seed: this interpreter's magic, a timestamp header for
 *   the source's size, a .py body of this tree with that RECORD hash), with
 *   an intact zstd frame (content size, checksum).  A bad one is logged and
 *   skipped: Python compiles that module as without a profile.
 * - Replay, on a thread started once the tree is built (the mount does not
 *   wait for it): each recorded body not in the cache is claimed
 *   (cache_claim: an opener that comes early waits for the claim instead of
 *   fetching), except sources whose pyc the profile or the store provides
 *   (Python loads the pyc and never opens them: they stay lazy); the
 *   claimed entries of a wheel are coalesced into ranges (a gap of at most
 *   GAP_MAX bytes, at most RANGE_MAX bytes each), fetched by up to WORKERS
 *   threads, and every entry is inflated, checked against its CRC-32 and
 *   RECORD sha256, and published (cache_publish; on any failure the claim
 *   is given up and an opener fills the body itself).  Entries whose
 *   compressed size exceeds BIG_MIN, or whose size exceeds BIG_USIZE, are
 *   not buffered: they are filled by the ordinary streaming path
 *   (fs_body_open), one request each.  Meanwhile the profile's thread
 *   seeds the pycs, in the order their sources were first opened.
 * - Memory: a range is started only when its bytes plus its largest
 *   inflated entry fit in MEM_BUDGET with those in flight (one range at a
 *   time may exceed it alone), so the replay holds at most MEM_BUDGET
 *   whatever WORKERS is.  Writing streams the pyc section: one pyc at a
 *   time.
 * - Recording is one store per opened node into an array (no lock): the
 *   order of first opens, which orders the pycs.
 * - Locking: p->lock (the stop flag) is a leaf, as is the budget's. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "fetch/inflate.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fetch/zipcd.h"
#include "fs/fs_i.h"
#include "fs/profile_fmt.h"

#define PROFILE_WRITE_S 30
#define GAP_MAX (256u << 10)
#define RANGE_MAX (1u << 20)
#define BIG_MIN RANGE_MAX     /* never buffer an entry larger than a range */
#define BIG_USIZE (4u << 20)  /* nor one inflating to more than this */
#define WORKERS 12 /* about what the budget admits; fewer threads, fewer malloc arenas */
#define MEM_BUDGET (12u << 20) /* ranges + inflated entries in flight */
#define PYC_LEVEL 3            /* zstd level of the pycs written */

struct pentry { /* one claimed (or big) body of the replay */
	uint32_t node;
	size_t k; /* cd entry */
	struct cache_claim cl; /* key, verified, size; claimed by the replay */
};

struct prange {
	struct wheel_src *w;
	uint64_t lo, hi;
	uint64_t need; /* bytes held while it runs: the range + its largest entry */
	struct pentry *e; /* claimed entries, lho increasing (ranges) or one big entry */
	size_t n;
	bool big;
};

struct seed { /* a pyc of the file to seed */
	struct pfmt_pyc rec;
	uint32_t node;
};

struct srcsha { /* a .py body with a RECORD hash, by sha */
	const uint8_t *sha;
	uint32_t node;
};

struct profile {
	struct fs_ctx *ctx;
	char *path;
	_Atomic uint32_t *opened; /* per tree node: order of its first open this run (0: not
				     opened, or named by the file as loaded) */
	_Atomic uint32_t seq;
	uint8_t *recorded;	 /* per tree node: named by the file as loaded */
	uint8_t *has_pyc;	 /* per tree node: a level-0 pyc is to be seeded */
	_Atomic bool dirty;

	struct srcsha *srcs; /* sorted by sha */
	size_t nsrcs;
	int fd;		     /* the file as loaded, while seeding (-1: none) */
	struct seed *seeds;
	size_t nseeds;

	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;	   /* protected by lock */
	struct budget mem; /* ranges + inflated entries in flight */

	/* replay work, shared by the workers */
	struct prange *ranges;
	size_t nranges;
	_Atomic size_t next;
	_Atomic uint64_t bodies, bytes, failed;
	size_t lazy; /* sources not fetched: their pyc is there */
	size_t seeded, seed_present, seed_bad;
};

/* --- the file ------------------------------------------------------------- */

static ssize_t read_fd(void *ud, uint64_t off, void *buf, size_t len)
{
	int fd = *(int *)ud;
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* What an open profile file holds: header, text (NUL-terminated), size. */
struct pfile {
	int fd;
	uint64_t size;
	struct pfmt_head h;
	char *text;
};

/* 0, -ENOENT, -EBADMSG (not a profile: why), or -errno. */
static int pfile_open(const char *path, struct pfile *f, char *why, size_t whylen)
{
	struct stat st;
	uint8_t head[PFMT_HEAD_MAX];

	memset(f, 0, sizeof(*f));
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return -errno;
	int r = fstat(f->fd, &st) < 0 ? -errno : 0;
	if (r == 0 && !S_ISREG(st.st_mode))
		r = -EINVAL;
	ssize_t n = r == 0 ? read_fd(&f->fd, 0, head, sizeof(head)) : 0;
	if (n < 0)
		r = (int)n;
	if (r == 0) {
		f->size = (uint64_t)st.st_size;
		r = pfmt_parse_head(head, (size_t)n, f->size, &f->h, why, whylen);
	}
	if (r == 0) {
		f->text = xmalloc((size_t)f->h.text_len + 1);
		n = read_fd(&f->fd, f->h.text_off, f->text, (size_t)f->h.text_len);
		if (n != (ssize_t)f->h.text_len) {
			snprintf(why, whylen, "cannot read its text");
			r = n < 0 ? (int)n : -EBADMSG;
		}
		f->text[f->h.text_len] = '\0';
	}
	if (r < 0) {
		close(f->fd);
		free(f->text);
		memset(f, 0, sizeof(*f));
		f->fd = -1;
	}
	return r;
}

static void pfile_close(struct pfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	free(f->text);
	f->fd = -1;
	f->text = NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_srcsha(const void *a, const void *b)
{
	const struct srcsha *x = a, *y = b;
	int c = memcmp(x->sha, y->sha, 32);
	return c ? c : (x->node > y->node) - (x->node < y->node);
}

/* The first source node with this sha (srcs index), or -1. */
static ssize_t src_find(const struct profile *p, const uint8_t sha[32])
{
	size_t lo = 0, hi = p->nsrcs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (memcmp(p->srcs[mid].sha, sha, 32) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p->nsrcs && memcmp(p->srcs[lo].sha, sha, 32) == 0 ? (ssize_t)lo : -1;
}

static bool is_source(const struct tree *t, const struct tree_node *nd)
{
	return nd->kind == TREE_BODY && nd->has_sha && str_endswith(tree_name(t, nd), ".py");
}

static void index_sources(struct profile *p)
{
	const struct tree *t = p->ctx->tree;
	p->srcs = xmalloc(sizeof(*p->srcs) * (t->n ? t->n : 1));
	for (size_t i = 0; i < t->n; i++)
		if (is_source(t, &t->nodes[i]))
			p->srcs[p->nsrcs++] = (struct srcsha){t->nodes[i].sha256, (uint32_t)i};
	qsort(p->srcs, p->nsrcs, sizeof(*p->srcs), cmp_srcsha);
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

static const char *entry_name(struct fs_ctx *ctx, uint32_t i)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	return ctx->wheels[nd->body.wheel].meta.cd->entries[nd->body.entry].name;
}

static char *line_of_node(struct fs_ctx *ctx, uint32_t i)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	const struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	const char *name = entry_name(ctx, i);

	if (strpbrk(name, "\t\n") || strpbrk(w->spec->filename, "\t\n"))
		return NULL; /* not representable; never seen in a real wheel */
	return xasprintf("%s\t%s", w->spec->filename, name);
}

/* The pyc section of the file being loaded: the records for this tree's
 * sources and this interpreter become seeds. */
static void load_pycs(struct profile *p, struct pfile *f, const struct stat *st)
{
	struct pyc *pyc = p->ctx->pyc;
	uint64_t off = f->h.pyc_off;
	size_t cap = 0, other = 0, stale = 0, bad = 0;
	char why[200];

	if (!f->h.npyc || !pyc)
		return;
	if ((st->st_uid != geteuid() && st->st_uid != 0) || (st->st_mode & 022)) {
		log_warn("profile \"%s\": not using its %llu pycs: the file must belong to this "
			 "user (or root) and be writable by nobody else",
			 p->path, (unsigned long long)f->h.npyc);
		return;
	}
	for (uint64_t j = 0; j < f->h.npyc; j++) {
		struct pfmt_pyc rec;
		int r = pfmt_next_pyc(read_fd, &f->fd, &off, f->size, &rec, why, sizeof(why));
		if (r < 0) {
			log_warn("profile \"%s\": %s; its %llu pycs from there on are ignored", p->path,
				 why, (unsigned long long)(f->h.npyc - j));
			off = f->size;
			break;
		}
		ssize_t s = src_find(p, rec.sha256);
		if (s < 0) {
			stale++;
			continue;
		}
		uint32_t node = p->srcs[s].node;
		const struct tree_node *nd = &p->ctx->tree->nodes[node];
		uint32_t sz = (uint32_t)rec.hdr[12] | (uint32_t)rec.hdr[13] << 8 |
			      (uint32_t)rec.hdr[14] << 16 | (uint32_t)rec.hdr[15] << 24;
		static const uint8_t zero[8];
		if (strcmp(rec.tag, pyc_tag(pyc)) != 0 || !pyc_stored_magic(pyc, rec.hdr)) {
			other++; /* another interpreter's: kept in the file, never served */
			continue;
		}
		if (memcmp(rec.hdr + 4, zero, 8) != 0 || sz != (uint32_t)nd->size) {
			bad++;
			log_info("profile \"%s\": pyc of \"%s\" ignored: its header does not match "
				 "the source", p->path, entry_name(p->ctx, node));
			continue;
		}
		if (p->nseeds == cap)
			p->seeds = xrealloc(p->seeds, (cap = cap ? 2 * cap : 256) * sizeof(*p->seeds));
		p->seeds[p->nseeds++] = (struct seed){rec, node};
		for (size_t k = (size_t)s; rec.opt == 0 && k < p->nsrcs &&
					   memcmp(p->srcs[k].sha, rec.sha256, 32) == 0; k++)
			p->has_pyc[p->srcs[k].node] = 1;
	}
	if (off != f->size)
		log_warn("profile \"%s\": %llu bytes after its last pyc ignored", p->path,
			 (unsigned long long)(f->size - off));
	if (bad)
		log_warn("profile \"%s\": %zu pycs whose header does not match their source "
			 "ignored", p->path, bad);
	if (other)
		log_notice("profile \"%s\": %zu pycs for another interpreter (not %s with this "
			   "magic number) not used", p->path, other, pyc_tag(pyc));
	log_debug(LOG_CAT_CACHE, "profile \"%s\": %zu pycs to seed, %zu for other sources",
		  p->path, p->nseeds, stale);
	if (p->nseeds) { /* kept for the seeding (the file may be replaced meanwhile) */
		p->fd = f->fd;
		f->fd = -1;
	}
}

static void load(struct profile *p)
{
	struct fs_ctx *ctx = p->ctx;
	char **lines = NULL, why[200] = "";
	size_t bad = 0, stale = 0, found = 0;
	struct pfile f;
	int r = pfile_open(p->path, &f, why, sizeof(why));

	if (r == -ENOENT)
		return; /* the first run: recorded at unmount */
	if (r == -EBADMSG) {
		log_warn("profile \"%s\" is not a sitefs profile: ignoring it (%s; it will be "
			 "replaced at unmount)", p->path, why);
		return;
	}
	if (r < 0) {
		log_warn("profile \"%s\": %s; not replaying it", p->path, strerror(-r));
		return;
	}
	ssize_t n = pfmt_split_lines(f.text, (size_t)f.h.text_len, &lines, &bad);
	if (n < 0) {
		log_warn("profile \"%s\" is not a sitefs profile: ignoring it (NUL bytes in its "
			 "text; it will be replaced at unmount)", p->path);
		pfile_close(&f);
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
	struct stat st;
	if (fstat(f.fd, &st) == 0)
		load_pycs(p, &f, &st);
	free(lines);
	pfile_close(&f);
}

/* --- writing ---------------------------------------------------------------- */

struct pkey { /* a pyc of the file, or one to add */
	uint8_t sha[32];
	uint8_t opt;
	uint32_t node;
	uint64_t order;
};

static int cmp_pkey(const void *a, const void *b)
{
	const struct pkey *x = a, *y = b;
	int c = memcmp(x->sha, y->sha, 32);
	if (c)
		return c;
	if (x->opt != y->opt)
		return x->opt < y->opt ? -1 : 1;
	return (x->order > y->order) - (x->order < y->order);
}

static int cmp_pkey_noorder(const void *a, const void *b)
{
	const struct pkey *x = a, *y = b;
	int c = memcmp(x->sha, y->sha, 32);
	return c ? c : (x->opt > y->opt) - (x->opt < y->opt);
}

static int cmp_order(const void *a, const void *b)
{
	const struct pkey *x = a, *y = b;
	return (x->order > y->order) - (x->order < y->order);
}

/* Copies bytes [off, off+len) of fd to out. */
static int copy_range(int fd, uint64_t off, uint64_t len, int out)
{
	uint8_t b[65536];
	while (len) {
		size_t n = (size_t)MIN(len, (uint64_t)sizeof(b));
		if (read_fd(&fd, off, b, n) != (ssize_t)n)
			return -EIO;
		int r = write_full(out, b, n);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

/* Appends what this run opened, and the pycs the store holds for the
 * sources named, to the file (merged with what it holds now). */
static void save(struct profile *p)
{
	struct fs_ctx *ctx = p->ctx;
	struct pyc *pyc = ctx->pyc;
	char **lines = NULL, why[200];
	size_t bad = 0, added = 0, nold = 0, nnew = 0, cap = 0, written = 0;
	ssize_t n = 0;
	struct pfmt_pyc *old = NULL;
	struct pkey *keys = NULL, *add = NULL;
	struct buf text;
	struct pfile f;
	int r, fd = -1;
	char *tmp = NULL;

	if (!atomic_exchange(&p->dirty, false))
		return;
	bool have = pfile_open(p->path, &f, why, sizeof(why)) == 0;
	if (have) {
		n = pfmt_split_lines(f.text, (size_t)f.h.text_len, &lines, &bad);
		if (n < 0)
			n = 0;
		/* the pycs it holds: kept, in their order (a corrupt tail is dropped) */
		uint64_t off = f.h.pyc_off;
		for (uint64_t j = 0; j < f.h.npyc; j++) {
			struct pfmt_pyc rec;
			if (pfmt_next_pyc(read_fd, &f.fd, &off, f.size, &rec, why, sizeof(why)) < 0)
				break;
			if (nold == cap) {
				cap = cap ? 2 * cap : 256;
				old = xrealloc(old, cap * sizeof(*old));
				keys = xrealloc(keys, cap * sizeof(*keys));
			}
			old[nold] = rec;
			keys[nold] = (struct pkey){.opt = rec.opt};
			memcpy(keys[nold].sha, rec.sha256, 32);
			/* another tag's record never shadows one of ours */
			if (!pyc || strcmp(rec.tag, pyc_tag(pyc)) != 0)
				keys[nold].opt = 0xff;
			nold++;
		}
		if (nold)
			qsort(keys, nold, sizeof(*keys), cmp_pkey);
	}
	if (n)
		qsort(lines, (size_t)n, sizeof(*lines), cmp_str);
	buf_init(&text);
	for (ssize_t j = 0; j < n; j++)
		buf_printf(&text, "%s\n", lines[j]);
	for (size_t i = 0; i < ctx->tree->n; i++) {
		uint32_t o = atomic_load_explicit(&p->opened[i], memory_order_relaxed);
		if (!o)
			continue;
		char *l = line_of_node(ctx, (uint32_t)i);
		if (l && !(n && bsearch(&l, lines, (size_t)n, sizeof(*lines), cmp_str))) {
			buf_printf(&text, "%s\n", l);
			added++;
		}
		free(l);
	}
	/* The store's pycs of the sources named (first opened first), not in the file yet. */
	cap = 0;
	for (size_t i = 0; pyc && i < ctx->tree->n; i++) {
		uint32_t o = atomic_load_explicit(&p->opened[i], memory_order_relaxed);
		const struct tree_node *nd = &ctx->tree->nodes[i];
		/* empty sources are never noted (no open reaches us), and share one pyc */
		if ((!o && !p->recorded[i] && nd->size) || !is_source(ctx->tree, nd))
			continue;
		for (uint8_t opt = 0; opt < 3; opt++) {
			struct pkey k = {.opt = opt, .node = (uint32_t)i,
					 .order = o ? o : (1ull << 32) + i};
			memcpy(k.sha, ctx->tree->nodes[i].sha256, 32);
			if (nold && bsearch(&k, keys, nold, sizeof(*keys), cmp_pkey_noorder))
				continue;
			if (!pyc_stored(pyc, (uint32_t)i, opt))
				continue;
			if (nnew == cap)
				add = xrealloc(add, (cap = cap ? 2 * cap : 256) * sizeof(*add));
			add[nnew++] = k;
		}
	}
	if (nnew) { /* one per sha and level, the first opened */
		qsort(add, nnew, sizeof(*add), cmp_pkey);
		size_t m = 0;
		for (size_t j = 0; j < nnew; j++)
			if (!m || cmp_pkey_noorder(&add[m - 1], &add[j]) != 0)
				add[m++] = add[j];
		nnew = m;
		qsort(add, nnew, sizeof(*add), cmp_order);
	}
	if (!added && !nnew)
		goto out;

	tmp = xasprintf("%s.tmp.%d.%lx", p->path, (int)getpid(), (unsigned long)now_ns());
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	r = fd < 0 ? -errno : 0;
	char head[PFMT_HEAD_LEN + 1];
	pfmt_format_head(head, text.len, 0);
	if (r == 0)
		r = write_full(fd, head, PFMT_HEAD_LEN);
	if (r == 0)
		r = write_full(fd, text.data, text.len);
	for (size_t j = 0; r == 0 && j < nold; j++, written++)
		r = copy_range(f.fd, old[j].off, old[j].frame_off + old[j].frame_len - old[j].off, fd);
	for (size_t j = 0; r == 0 && j < nnew; j++) {
		uint8_t *data, *rec;
		size_t len;
		if (pyc_load(pyc, add[j].node, add[j].opt, &data, &len) < 0)
			continue; /* gone meanwhile */
		size_t rl = pfmt_encode_pyc(add[j].sha, add[j].opt, pyc_tag(pyc), data, len,
					    PYC_LEVEL, &rec);
		free(data);
		if (!rl)
			continue;
		r = write_full(fd, rec, rl);
		free(rec);
		written++;
	}
	pfmt_format_head(head, text.len, written);
	if (r == 0 && pwrite(fd, head, PFMT_HEAD_LEN, 0) != PFMT_HEAD_LEN)
		r = -EIO;
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, p->path) < 0)
		r = -errno;
	if (r < 0) {
		if (fd >= 0)
			unlink(tmp);
		log_warn("profile \"%s\": cannot write it: %s", p->path, strerror(-r));
		atomic_store(&p->dirty, true);
	} else {
		log_debug(LOG_CAT_CACHE, "profile \"%s\": %zu bodies, %zu pycs added", p->path,
			  added, nnew);
	}
out:
	free(tmp);
	buf_free(&text);
	free(lines);
	free(old);
	free(keys);
	free(add);
	if (have)
		pfile_close(&f);
}

void profile_note(struct profile *p, uint32_t node)
{
	if (!p || p->recorded[node] ||
	    atomic_load_explicit(&p->opened[node], memory_order_relaxed))
		return;
	uint32_t zero = 0, seq = atomic_fetch_add_explicit(&p->seq, 1, memory_order_relaxed) + 1;
	atomic_compare_exchange_strong_explicit(&p->opened[node], &zero, seq, memory_order_relaxed,
						memory_order_relaxed);
	atomic_store(&p->dirty, true);
}

void profile_note_pyc(struct profile *p)
{
	if (p)
		atomic_store(&p->dirty, true);
}

/* --- seeding ------------------------------------------------------------------ */

static void seed_all(struct profile *p)
{
	char why[200];
	ZSTD_DCtx *dctx = p->nseeds ? ZSTD_createDCtx() : NULL; /* one for all */
	for (size_t j = 0; j < p->nseeds; j++) {
		pthread_mutex_lock(&p->lock);
		bool stop = p->stopping;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			break;
		struct seed *s = &p->seeds[j];
		uint8_t *data;
		int r = pfmt_pyc_data(read_fd, &p->fd, &s->rec, dctx, &data, why, sizeof(why));
		if (r == 0) {
			r = pyc_seed(p->ctx->pyc, s->node, s->rec.opt, data,
				     16 + (size_t)s->rec.body_len);
			if (r == -EBADMSG)
				snprintf(why, sizeof(why), "not a pyc of this source");
			else if (r < 0 && r != -EEXIST)
				snprintf(why, sizeof(why), "%s", strerror(-r));
			free(data);
		}
		if (r == 0) {
			p->seeded++;
		} else if (r == -EEXIST) {
			p->seed_present++;
		} else {
			p->seed_bad++;
			log_warn("profile \"%s\": pyc of \"%s\" ignored: %s", p->path,
				 entry_name(p->ctx, s->node), why);
		}
	}
	ZSTD_freeDCtx(dctx);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
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
	buf_reserve(&b, (size_t)(ru->hi - ru->lo)); /* no doubling: the budget counts it once */
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
		struct prange *ru = &p->ranges[i];
		if (!budget_take(&p->mem, ru->need)) { /* unmounting: give the claims up */
			for (size_t j = 0; !ru->big && j < ru->n; j++)
				cache_publish(p->ctx->cache, &ru->e[j].cl, NULL);
			continue;
		}
		run_range(p, ru);
		budget_give(&p->mem, ru->need);
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
			/* Python loads the pyc and never opens the source: leave it lazy */
			if (is_source(ctx->tree, nd) &&
			    (p->has_pyc[ni] || (ctx->pyc && pyc_stored(ctx->pyc, ni, 0)))) {
				p->lazy++;
				continue;
			}
			struct pentry pe = {.node = ni, .k = k};
			body_key(ctx, ni, pe.cl.key, &pe.cl.verified);
			pe.cl.size = nd->size;
			if (cd->entries[k].csize > BIG_MIN || cd->entries[k].usize > BIG_USIZE) {
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
			uint64_t most = 0;
			for (size_t q = first; q < j; q++)
				most = MAX(most, cd->entries[es[q].k].usize);
			add_range(p, &cap,
				  (struct prange){.w = ws, .lo = lo, .hi = hi, .need = hi - lo + most,
						  .e = part, .n = j - first});
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
	size_t nw = MIN(p->nranges, (size_t)WORKERS), started = 0;
	pthread_t *th = xcalloc(nw ? nw : 1, sizeof(*th));
	for (; started < nw; started++)
		if (pthread_create(&th[started], NULL, worker, p) != 0)
			break;
	if (nw && !started)
		worker(p);
	seed_all(p); /* local work, while the ranges are on the wire */
	uint64_t t_seed = now_ns() - t0;
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	char pycs[200];
	snprintf(pycs, sizeof(pycs),
		 "; %zu pycs seeded in %.0f ms (%zu were there, %zu refused), %zu sources "
		 "left to their first open; replay memory peak %.1f MB",
		 p->seeded, t_seed / 1e6, p->seed_present, p->seed_bad, p->lazy,
		 budget_peak(&p->mem) / 1e6);
	if (p->nranges) {
		http_get_stats(p->ctx->http, &h1);
		log_notice("profile \"%s\": %llu bodies (%.1f MB) fetched in %zu ranges, "
			   "%llu requests, %.0f ms%s%s",
			   p->path, (unsigned long long)atomic_load(&p->bodies),
			   atomic_load(&p->bytes) / 1e6, p->nranges,
			   (unsigned long long)(h1.requests - h0.requests), (now_ns() - t0) / 1e6,
			   atomic_load(&p->failed) ? " (some left to their first open)" : "", pycs);
	} else {
		log_notice("profile \"%s\": nothing to fetch%s", p->path, pycs);
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
	p->has_pyc = xcalloc(ctx->tree->n ? ctx->tree->n : 1, 1);
	p->fd = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	budget_init(&p->mem, MEM_BUDGET);
	index_sources(p);
	load(p);
	int r = pthread_create(&p->thread, NULL, profile_main, p);
	if (r)
		log_warn("profile \"%s\": cannot start its thread: %s; not replaying it", path,
			 strerror(r));
	p->started = r == 0;
	return p;
}

void profile_stop(struct profile *p)
{
	if (!p || !p->started)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	budget_stop(&p->mem);
	pthread_join(p->thread, NULL);
	p->started = false;
}

struct profile *profile_close(struct profile *p)
{
	if (!p)
		return NULL;
	profile_stop(p);
	save(p);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	budget_destroy(&p->mem);
	if (p->fd >= 0)
		close(p->fd);
	free(p->seeds);
	free(p->srcs);
	free(p->has_pyc);
	free(p->opened);
	free(p->recorded);
	free(p->path);
	free(p);
	return NULL;
}
