/* materialize: writing a prepared tree out as an ordinary directory, and
 * filling the body cache in bulk.
 *
 * DESIGN
 * - Phase 1 (calling thread): every BODY node's cache key is looked up in
 *   the body store (cache_peek); a wheel with any body missing will be
 *   downloaded whole.  Directories, symlinks and generated files (DATA
 *   nodes: pyvenv.cfg, activate, launchers, RECORD...) are created here too:
 *   they are few and cheap, and the workers then never need to mkdir.
 * - Phase 2 (o->threads workers): one work item per wheel, biggest missing
 *   download first.  A worker downloads a wheel that needs it with ONE plain
 *   GET into a cache temp file, hashing on the way, checks size and sha256
 *   against the lock, points the wheel's local_path at it, and then opens
 *   every body through fs_body_open: misses are inflated from the local
 *   copy with the same verified fill the mount uses (CRC-32, RECORD sha256),
 *   hits are plain opens.  Each body is then placed in dest by reflink,
 *   hardlink or copy.  Downloads run on the fetch engine's thread while
 *   other workers inflate and write, so the network and the CPUs overlap.
 * - Hardlinks share one inode, hence one mode: cache bodies are 0444, the
 *   tree wants 0644/0755.  So hardlink mode links to a per-mode copy kept
 *   under <cache>/links/<mode>/ (made once from the body, temp + link():
 *   the first copy wins and is never replaced while good),
 *   never to the verified body itself: editing a hardlinked file in place
 *   changes that shared copy (and every venv linked to it), never what a
 *   mount serves.
 * - Link mode AUTO starts with clone and downgrades once, for every
 *   worker, to hardlink (clone unsupported) and then to copy (hardlink
 *   impossible, e.g. another filesystem).  A single file that hits the
 *   link limit (EMLINK) is copied.
 * - Locks: m->lock protects the first error and progress reporting only;
 *   m->relink serializes the replacement of a damaged links/ copy (local
 *   stat + rename); both are leaves.  Counters are atomics.  w->lock
 *   (wheel.c) guards local_path as usual.
 * Deliberately missing: fsync (the caller's rename is the commit point, a
 * crash before it leaves only a temp directory), xattrs, ownership. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define DEFAULT_THREADS 8
#define PROGRESS_NS (50 * 1000 * 1000ull)

struct mat {
	struct fs_ctx *ctx;
	const struct fs_materialize_opts *o;
	int destfd; /* -1 when only filling the cache */
	mode_t umask;
	uint32_t *nodes; /* BODY node indices grouped by wheel */
	size_t *first;	 /* wheel w's nodes: nodes[first[w] .. first[w+1]) */
	size_t *missing; /* per wheel: bodies not in the cache */
	uint32_t *order; /* wheels in work order */
	size_t norder;
	size_t next; /* next index in order (atomic) */
	int mode;    /* current enum fs_link_mode (atomic; AUTO downgrades) */
	int failed;  /* atomic */
	pthread_mutex_t lock;
	pthread_mutex_t relink;		/* replacing a damaged links/ copy */
	int err;			/* first error; protected by lock */
	char *errmsg;			/* protected by lock */
	uint64_t done;			/* body bytes done (atomic) */
	uint64_t last_report;		/* protected by lock */
	struct fs_materialize_stats st; /* counters updated atomically */
};

const char *fs_link_mode_name(enum fs_link_mode m)
{
	static const char *const names[] = {"auto", "clone", "hardlink", "copy"};
	return (unsigned)m < ARRAY_SIZE(names) ? names[m] : "?";
}

#define ADD(field, n) __atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)

static int mfail(struct mat *m, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int mfail(struct mat *m, int r, const char *fmt, ...)
{
	pthread_mutex_lock(&m->lock);
	if (!m->err) {
		va_list ap;
		char msg[1024];
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		m->err = r;
		m->errmsg = xstrdup(msg);
	}
	pthread_mutex_unlock(&m->lock);
	__atomic_store_n(&m->failed, 1, __ATOMIC_RELAXED);
	return r;
}

static bool stopping(struct mat *m)
{
	if (m->o->cancel && *m->o->cancel) {
		mfail(m, -ECANCELED, "interrupted");
		return true;
	}
	return __atomic_load_n(&m->failed, __ATOMIC_RELAXED);
}

static void progress(struct mat *m, uint64_t add, bool final)
{
	uint64_t done = ADD(m->done, add);
	if (!m->o->progress)
		return;
	uint64_t now = now_ns();
	pthread_mutex_lock(&m->lock);
	if (final || now - m->last_report >= PROGRESS_NS) {
		m->last_report = now;
		m->o->progress(m->o->progress_ud, done, m->st.body_bytes);
	}
	pthread_mutex_unlock(&m->lock);
}

/* ---- placing one file ---- */

/* Copies bytes [0, size) of src to dst's offset.  Reads at explicit offsets:
 * src is one fd per body, read more than once (the links/ copy, then a copy
 * into DEST when hardlinking fails), so its file offset means nothing. */
static int copy_fd(int src, int dst, uint64_t size)
{
	uint64_t left = size;
	loff_t in = 0;
	bool fallback = false;
	while (left && !fallback) {
		ssize_t n = copy_file_range(src, &in, dst, NULL, MIN(left, 1u << 30), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 &&
		    (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
			fallback = true;
		else if (n < 0)
			return -errno;
		else if (n == 0)
			return -EIO; /* the source is shorter than its size */
		else
			left -= (uint64_t)n;
	}
	if (!left)
		return 0;
	uint8_t *b = xmalloc(1 << 17);
	off_t off = (off_t)(size - left);
	int r = 0;
	while (left && r == 0) {
		size_t want = MIN(left, 1u << 17);
		r = pread_full(src, b, want, off);
		if (r == 0)
			r = write_full(dst, b, want);
		off += (off_t)want;
		left -= want;
	}
	free(b);
	return r;
}

static bool clone_unsupported(int e)
{
	return e == EOPNOTSUPP || e == ENOTTY || e == EXDEV || e == EINVAL || e == ENOSYS ||
	       e == EPERM;
}

/* Creates path (relative to destfd) with the tree's mode as open() would
 * (umask applies, as for pip's files). */
static int create_at(struct mat *m, const char *path, mode_t mode)
{
	int fd = openat(m->destfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

/* A usable link source: a regular file of this size and mode. */
static bool link_source_ok(const char *path, uint64_t size, mode_t mode)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size &&
	       (st.st_mode & 07777) == mode;
}

/* <cache>/links/<mode>/<ab>/<rest>: a copy of the body with this mode, for
 * hardlinking (see DESIGN).  Returns the path (caller frees) or NULL.
 *
 * The copy is published with link(), first writer wins, never renamed over
 * a good one: other workers (and other processes) hardlink to this path as
 * soon as it exists, and linkat() on a name whose inode loses its last link
 * between the lookup and the link fails with ENOENT (vfs_link refuses an
 * inode with i_nlink 0).  Only a damaged copy (wrong size or mode, e.g.
 * chmod in a venv) is replaced with rename(), once per process; another
 * process may still replace one under us: hardlink_at() retries on ENOENT. */
static char *link_source(struct mat *m, uint32_t i, int src, mode_t mode, int *ret_err)
{
	struct fs_ctx *ctx = m->ctx;
	const struct tree_node *nd = &ctx->tree->nodes[i];
	uint8_t key[32];
	bool verified;
	char hex[65];
	body_key(ctx, i, key, &verified);
	hex_encode(key, 32, hex);
	char *path = xasprintf("%s/links/%04o/%s%.2s/%s", ctx->cache_dir, (unsigned)mode,
			       verified ? "" : "x", hex, hex + 2);
	if (link_source_ok(path, nd->size, mode))
		return path;
	char *tmp;
	int fd = cache_tmpfile(ctx->cache, &tmp);
	if (fd < 0) {
		*ret_err = fd;
		free(path);
		return NULL;
	}
	int r = copy_fd(src, fd, nd->size);
	if (r == 0 && fchmod(fd, mode) < 0)
		r = -errno;
	close(fd);
	bool renamed = false;
	if (r == 0) {
		char *dir = xstrndup(path, (size_t)(strrchr(path, '/') - path));
		r = mkdir_p(dir, 0755);
		free(dir);
		if (r == 0 && link(tmp, path) < 0)
			r = -errno;
		if (r == -EEXIST && link_source_ok(path, nd->size, mode)) {
			r = 0; /* another worker's copy */
		} else if (r == -EEXIST) {
			/* a damaged copy: replace it, once (checked again under the
			 * lock: another worker may have replaced it and be linking) */
			pthread_mutex_lock(&m->relink);
			r = 0;
			if (!link_source_ok(path, nd->size, mode)) {
				renamed = rename(tmp, path) == 0;
				r = renamed ? 0 : -errno;
			}
			pthread_mutex_unlock(&m->relink);
		}
	}
	if (!renamed)
		unlink(tmp);
	free(tmp);
	if (r < 0) {
		*ret_err = r;
		free(path);
		return NULL;
	}
	return path;
}

/* Hardlinks path to the links/ copy of BODY node i.  ENOENT is retried: a
 * damaged copy replaced by another process between linkat's lookup and its
 * link (see link_source); the replacement is good. */
static int hardlink_at(struct mat *m, uint32_t i, int src, mode_t mode, const char *path)
{
	int r = -ENOENT;
	for (int tries = 0; tries < 4 && r == -ENOENT; tries++) {
		r = 0;
		char *ls = link_source(m, i, src, mode, &r);
		if (ls) {
			r = linkat(AT_FDCWD, ls, m->destfd, path, 0) < 0 ? -errno : 0;
			free(ls);
		}
	}
	return r;
}

static void downgrade(struct mat *m, int from, int to, const char *why)
{
	if (__atomic_compare_exchange_n(&m->mode, &from, to, false, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		log_debug(LOG_CAT_CACHE, "link mode %s -> %s: %s", fs_link_mode_name(from),
			  fs_link_mode_name(to), why);
}

/* Writes BODY node i (source fd src) at path below dest. */
static int place(struct mat *m, uint32_t i, int src, const char *path)
{
	const struct tree_node *nd = &m->ctx->tree->nodes[i];
	mode_t mode = nd->mode & 07777;
	bool explicit = m->o->link_mode != FS_LINK_AUTO;
	int r;

	for (;;) {
		int lm = __atomic_load_n(&m->mode, __ATOMIC_RELAXED);
		if (lm == FS_LINK_CLONE || lm == FS_LINK_AUTO) {
			int fd = create_at(m, path, mode);
			if (fd < 0)
				return fd;
			r = ioctl(fd, FICLONE, src) < 0 ? -errno : 0;
			close(fd);
			if (r == 0) {
				ADD(m->st.cloned, 1);
				return 0;
			}
			unlinkat(m->destfd, path, 0);
			if (explicit || !clone_unsupported(-r))
				return mfail(m, r, "\"%s\": cannot clone: %s%s", path, strerror(-r),
					     clone_unsupported(-r) ? " (the filesystem has no "
								     "reflinks; try --link-mode "
								     "hardlink or copy)"
								   : "");
			downgrade(m, FS_LINK_AUTO, FS_LINK_HARDLINK, strerror(-r));
			continue;
		}
		if (lm == FS_LINK_HARDLINK) {
			r = hardlink_at(m, i, src, mode, path);
			if (r == 0) {
				ADD(m->st.hardlinked, 1);
				return 0;
			}
			if (r == -EMLINK)
				goto copy; /* this inode is full; the next one may not be */
			if (explicit || (r != -EXDEV && r != -EPERM && r != -EOPNOTSUPP))
				return mfail(m, r, "\"%s\": cannot hardlink from the cache: %s",
					     path, strerror(-r));
			downgrade(m, FS_LINK_HARDLINK, FS_LINK_COPY, strerror(-r));
			continue;
		}
		break;
	}
copy:;
	int fd = create_at(m, path, mode);
	if (fd < 0)
		return mfail(m, fd, "\"%s\": %s", path, strerror(-fd));
	r = copy_fd(src, fd, nd->size);
	close(fd);
	if (r < 0)
		return mfail(m, r, "\"%s\": copy: %s", path, strerror(-r));
	ADD(m->st.copied, 1);
	return 0;
}

/* ---- one wheel ---- */

struct dl {
	int fd;
	uint64_t got;
	struct sha256_ctx h;
};

static int dl_sink(void *ud, const uint8_t *data, size_t len)
{
	struct dl *d = ud;
	sha256_update(&d->h, data, len);
	d->got += len;
	return write_full(d->fd, data, len);
}

/* One GET for the whole wheel into a cache temp file, checked against the
 * lock.  Returns 0 and *ret_path (caller unlinks and frees) or -errno. */
static int download(struct mat *m, struct wheel_src *w, char **ret_path)
{
	char *tmp;
	struct dl d = {.fd = cache_tmpfile(m->ctx->cache, &tmp)};
	if (d.fd < 0)
		return mfail(m, d.fd, "cache temp file: %s", strerror(-d.fd));
	sha256_init(&d.h);
	struct http_req req = {.url = w->spec->url, .sink = dl_sink, .ud = &d, .full_fd = -1};
	int r = http_fetch(m->ctx->http, &req);
	uint8_t got[32];
	sha256_final(&d.h, got);
	close(d.fd);
	if (r < 0) {
		char url[512];
		http_redact_url(w->spec->url, url, sizeof(url));
		mfail(m, r, "wheel \"%s\" (%s): %s", w->spec->filename, url, req.err);
	} else if (d.got != w->spec->size || memcmp(got, w->spec->sha256, 32)) {
		r = mfail(m, -EBADMSG,
			  "wheel \"%s\": download (%llu bytes) does not match the lock's size "
			  "and sha256",
			  w->spec->filename, (unsigned long long)d.got);
	}
	if (r < 0) {
		unlink(tmp);
		free(tmp);
		return r;
	}
	ADD(m->st.wheels_fetched, 1);
	ADD(m->st.fetched_bytes, d.got);
	*ret_path = tmp;
	return 0;
}

static int do_wheel(struct mat *m, uint32_t wi)
{
	struct fs_ctx *ctx = m->ctx;
	struct wheel_src *w = &ctx->wheels[wi];
	char *whole = NULL;
	int r = 0;

	pthread_mutex_lock(&w->lock);
	bool have_local = w->local_path != NULL;
	pthread_mutex_unlock(&w->lock);
	if (m->missing[wi] && http_is_remote(w->spec->url) && !have_local) {
		r = download(m, w, &whole);
		if (r < 0)
			return r;
		pthread_mutex_lock(&w->lock);
		w->local_path = xstrdup(whole);
		pthread_mutex_unlock(&w->lock);
	}
	for (size_t k = m->first[wi]; k < m->first[wi + 1] && !stopping(m); k++) {
		uint32_t i = m->nodes[k];
		const struct tree_node *nd = &ctx->tree->nodes[i];
		int fd = fs_body_open(ctx, i);
		if (fd < 0) {
			r = mfail(m, fd, "wheel \"%s\": entry \"%s\": %s", w->spec->filename,
				  w->meta.cd->entries[nd->body.entry].name, strerror(-fd));
			break;
		}
		if (m->destfd >= 0) {
			char path[PATH_MAX];
			r = tree_path(ctx->tree, i, path, sizeof(path));
			r = r < 0 ? mfail(m, r, "path too long") : place(m, i, fd, path);
		}
		close(fd);
		if (r < 0)
			break;
		progress(m, nd->size, false);
	}
	if (whole) {
		pthread_mutex_lock(&w->lock);
		free(w->local_path);
		w->local_path = NULL;
		pthread_mutex_unlock(&w->lock);
		unlink(whole);
		free(whole);
	}
	return r;
}

static void *worker(void *ud)
{
	struct mat *m = ud;
	while (!stopping(m)) {
		size_t k = __atomic_fetch_add(&m->next, 1, __ATOMIC_RELAXED);
		if (k >= m->norder)
			break;
		do_wheel(m, m->order[k]);
	}
	return NULL;
}

/* ---- phase 1 ---- */

static int write_data(struct mat *m, const struct tree_node *nd, const char *path)
{
	int fd = create_at(m, path, nd->mode & 07777);
	if (fd < 0)
		return fd;
	int r = write_full(fd, m->ctx->tree->blob + nd->data.off, (size_t)nd->size);
	close(fd);
	return r;
}

/* Directories, symlinks and generated files, parents before children. */
static int make_skeleton(struct mat *m, uint32_t dir)
{
	const struct tree *t = m->ctx->tree;
	const struct tree_node *d = &t->nodes[dir];
	char path[PATH_MAX];
	for (uint32_t c = 0; c < d->dir.count; c++) {
		uint32_t i = t->children[d->dir.first + c];
		const struct tree_node *nd = &t->nodes[i];
		int r = tree_path(t, i, path, sizeof(path));
		if (r < 0)
			return mfail(m, r, "path too long below \"%s\"", tree_name(t, d));
		r = 0;
		switch (nd->kind) {
		case TREE_DIR:
			if (mkdirat(m->destfd, path, nd->mode & 07777) < 0)
				r = -errno;
			else
				m->st.dirs++;
			if (r == 0)
				r = make_skeleton(m, i);
			break;
		case TREE_LINK:
			if (symlinkat(t->strings + nd->link.target, m->destfd, path) < 0)
				r = -errno;
			else
				m->st.links++;
			break;
		case TREE_DATA:
			r = write_data(m, nd, path);
			if (r == 0)
				m->st.files++;
			break;
		default:
			break;
		}
		if (r < 0)
			return m->err ? r : mfail(m, r, "\"%s\": %s", path, strerror(-r));
	}
	return 0;
}

static struct mat *mat_done(struct mat *m)
{
	free(m->nodes);
	free(m->first);
	free(m->missing);
	free(m->order);
	free(m->errmsg);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->relink);
	if (m->destfd >= 0)
		close(m->destfd);
	return NULL;
}

static int cmp_work(const void *a, const void *b, void *ud)
{
	const struct mat *sort_m = ud;
	const struct fs_ctx *ctx = sort_m->ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	/* downloads first, biggest first: the long poles start early */
	bool mx = sort_m->missing[x] > 0, my = sort_m->missing[y] > 0;
	if (mx != my)
		return mx ? -1 : 1;
	uint64_t sx = ctx->wheels[x].spec->size, sy = ctx->wheels[y].spec->size;
	return sx > sy ? -1 : sx < sy ? 1 : (x > y) - (x < y);
}

int fs_materialize(struct fs_ctx *ctx, const struct fs_materialize_opts *o,
		   struct fs_materialize_stats *ret, char *err, size_t errlen)
{
	uint64_t t0 = now_ns();
	const struct tree *t = ctx->tree;
	size_t nw = ctx->cfg.nwheels;
	struct mat m = {.ctx = ctx, .o = o, .destfd = -1, .mode = o->link_mode};
	int r = 0;

	pthread_mutex_init(&m.lock, NULL);
	pthread_mutex_init(&m.relink, NULL);
	m.umask = umask(0);
	umask(m.umask);
	if (o->dest) {
		m.destfd = open(o->dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (m.destfd < 0) {
			r = -errno;
			snprintf(err, errlen, "\"%s\": %s", o->dest, strerror(errno));
			goto out;
		}
	}

	/* Group BODY nodes by wheel; find what the cache lacks. */
	m.first = xcalloc(nw + 2, sizeof(*m.first));
	m.missing = xcalloc(nw + 1, sizeof(*m.missing));
	m.nodes = xcalloc(t->nbodies + 1, sizeof(*m.nodes));
	for (size_t i = 0; i < t->n; i++)
		if (t->nodes[i].kind == TREE_BODY)
			m.first[t->nodes[i].body.wheel + 1]++;
	for (size_t w = 0; w < nw; w++)
		m.first[w + 1] += m.first[w];
	size_t *fill = xcalloc(nw + 1, sizeof(*fill));
	for (size_t i = 0; i < t->n; i++) {
		const struct tree_node *nd = &t->nodes[i];
		if (nd->kind != TREE_BODY)
			continue;
		uint32_t w = nd->body.wheel;
		m.nodes[m.first[w] + fill[w]++] = (uint32_t)i;
		m.st.body_bytes += nd->size;
		uint8_t key[32];
		bool verified;
		body_key(ctx, (uint32_t)i, key, &verified);
		int fd = cache_peek(ctx->cache, key, verified, nd->size);
		if (fd >= 0)
			close(fd);
		else
			m.missing[w]++;
	}
	free(fill);
	m.order = xcalloc(nw + 1, sizeof(*m.order));
	for (size_t w = 0; w < nw; w++) {
		m.st.bodies_filled += m.missing[w];
		if (m.first[w + 1] > m.first[w])
			m.order[m.norder++] = (uint32_t)w;
	}
	qsort_r(m.order, m.norder, sizeof(*m.order), cmp_work, &m);

	if (m.destfd >= 0 && (r = make_skeleton(&m, 0)) < 0)
		goto out;

	unsigned nt = o->threads ? o->threads : DEFAULT_THREADS;
	if (nt > m.norder)
		nt = m.norder ? (unsigned)m.norder : 1;
	pthread_t *th = xcalloc(nt, sizeof(*th));
	unsigned started = 0;
	for (; started < nt; started++)
		if (pthread_create(&th[started], NULL, worker, &m) != 0)
			break;
	if (!started)
		worker(&m);
	for (unsigned k = 0; k < started; k++)
		pthread_join(th[k], NULL);
	free(th);
	r = m.err;
	if (r == 0)
		progress(&m, 0, true);
out:
	if (r < 0 && m.errmsg)
		snprintf(err, errlen, "%s", m.errmsg);
	m.st.files += m.st.cloned + m.st.hardlinked + m.st.copied;
	m.st.elapsed_ns = now_ns() - t0;
	if (ret)
		*ret = m.st;
	mat_done(&m);
	return r;
}
