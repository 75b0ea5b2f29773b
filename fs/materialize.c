/* materialize: writing a prepared tree out as an ordinary directory, and
 * filling the body cache in bulk.
 *
 * DESIGN
 * - Cost model: creating an inode is what a cold run pays for (the kernel's
 *   inode allocator; on an ext4 without a journal it also skips, one by
 *   one, every inode freed in the last ~35 s).  So a cold run creates ONE
 *   inode per file: the file in dest, nothing else.
 * - Phase 1 (calling thread): where each BODY node is (src[]): a good
 *   links/ copy (hardlink mode), the body store (cache_peek), or nowhere;
 *   a wheel with a body nowhere is read whole.  Duplicate keys are marked.
 *   Link mode AUTO first tries one reflink on a scratch file, so a
 *   filesystem without them never gets a body store file made for a clone.
 * - Phase 2 (o->threads workers): work items are pieces of wheels (~8 MiB
 *   of bodies, so a big wheel is not left to one core at the end), all
 *   first pieces first, biggest missing download first.  The worker of a
 *   wheel's first piece downloads it (the others wait, m->dl_lock), with ONE plain
 *   GET into a cache temp file, hashing on the way, checks size and sha256
 *   against the lock and keeps it as <cache>/wheels/<sha256>.whl (the
 *   wheel's local_path: a later mount reads its bodies from there, ctx.c,
 *   with no request).  In hardlink and copy mode a missing body is then
 *   inflated straight from that file (or the lock's own local file) into
 *   its new file in dest, entries in zip order through a 1 MiB read window,
 *   checked as a fill checks (size, CRC-32, RECORD sha256; a mismatch fails
 *   the run naming wheel and entry).  Bodies in the store, clone mode and
 *   prefetch go through fs_body_open (the mount's verified fill).
 *   Meanwhile the calling thread makes directories, symlinks and generated
 *   files (pyvenv.cfg, launchers, RECORD...); a worker makes the
 *   directories it needs itself (m->made), so nobody waits for the other.
 * - Hardlinks share one inode, hence one mode: cache bodies are 0444, the
 *   tree wants 0644/0755.  So hardlink mode links to a per-mode copy,
 *   <cache>/links/<mode>/<ab>/<rest>, never to the verified body itself:
 *   editing a hardlinked file in place changes that shared copy (and every
 *   venv linked to it), never what a mount serves.  A cold run makes the
 *   copy by link()ing its complete, verified dest file there (first
 *   writer wins); a file whose key is out already is linked from there
 *   instead, so a venv's identical files share one inode.  A damaged copy
 *   (wrong size or mode) is replaced by rename(), once per process.
 * - Link mode AUTO starts with clone and downgrades once, for every
 *   worker, to hardlink (clone unsupported) and then to copy (hardlink
 *   impossible, e.g. another filesystem: the file made is kept as the
 *   copy).  A single file that hits the link limit (EMLINK) is copied.
 * - Locks: m->lock protects the first error and progress reporting only;
 *   m->relink serializes the replacement of a damaged links/ copy (local
 *   stat + rename); m->dl_lock the download states (never held across the
 *   download: waiters sleep on m->dl_cond); all are leaves.  Counters and m->made are atomics.
 *   w->lock (wheel.c) guards local_path as usual.
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

#include "fetch/inflate.h"
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
	uint32_t *nodes; /* BODY node indices grouped by wheel, in zip order */
	uint8_t *src;	 /* per nodes[] slot: SRC_* found in phase 1 */
	size_t *first;	 /* wheel w's nodes: nodes[first[w] .. first[w+1]) */
	size_t *missing; /* per wheel: bodies neither in the cache nor in links/ */
	uint32_t *order; /* wheels in work order */
	size_t norder;
	struct item *items; /* work items: pieces of wheels, in work order */
	size_t nitems;
	pthread_mutex_t dl_lock; /* dl[] and temps[]: downloads shared by a wheel's items */
	pthread_cond_t dl_cond;
	int *dl;		/* per wheel: 0 not started, 1 running, 2 done, -errno */
	char **temps;		/* per wheel: a download that could not be kept, or NULL */
	size_t next; /* next index in order (atomic) */
	int mode;    /* current enum fs_link_mode (atomic; AUTO downgrades) */
	int failed;  /* atomic */
	pthread_mutex_t lock;
	pthread_mutex_t relink;		/* replacing a damaged links/ copy */
	uint8_t *made;			/* per tree node: directory exists (atomic) */
	int err;			/* first error; protected by lock */
	char *errmsg;			/* protected by lock */
	uint64_t done;			/* body bytes done (atomic) */
	uint64_t last_report;		/* protected by lock */
	struct fs_materialize_stats st; /* counters updated atomically */
};

/* A piece of a wheel: its nodes[lo .. hi).  A big wheel is cut into pieces
 * of about PIECE bytes of bodies, so its files are written by several
 * workers and it is not left to one core at the end of a run. */
struct item {
	uint32_t wheel;
	uint32_t piece; /* 0 for the first: the one that downloads */
	size_t lo, hi;
};
#define PIECE (8u << 20)

/* Where phase 1 found a body (src[]). */
enum {
	SRC_MISSING = 0, /* nowhere: inflate it from the wheel */
	SRC_BODY = 1,	 /* in the body store */
	SRC_LINK = 2,	 /* hardlink mode: a good links/ copy */
	SRC_DUP = 4,	 /* flag: an earlier node has the same key */
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

/* Makes directory node d below dest (and its parents) unless made: the
 * calling thread makes the skeleton while the workers already write
 * files, each making the directories it needs first (EEXIST: the other
 * one was first). */
static int make_dir(struct mat *m, uint32_t d)
{
	if (__atomic_load_n(&m->made[d], __ATOMIC_ACQUIRE))
		return 0;
	const struct tree *t = m->ctx->tree;
	int r = make_dir(m, t->nodes[d].parent);
	char path[PATH_MAX];
	if (r == 0 && (r = tree_path(t, d, path, sizeof(path))) > 0)
		r = 0; /* its length */
	if (r == 0 && mkdirat(m->destfd, path, t->nodes[d].mode & 07777) == 0)
		ADD(m->st.dirs, 1);
	else if (r == 0 && errno != EEXIST)
		r = -errno;
	if (r == 0)
		__atomic_store_n(&m->made[d], 1, __ATOMIC_RELEASE);
	return r;
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

/* <cache>/links/<mode>/<ab>/<rest> of BODY node i (caller frees). */
static char *links_path(struct mat *m, uint32_t i, mode_t mode)
{
	uint8_t key[32];
	bool verified;
	char hex[65];
	body_key(m->ctx, i, key, &verified);
	hex_encode(key, 32, hex);
	return xasprintf("%s/links/%04o/%s%.2s/%s", m->ctx->cache_dir, (unsigned)mode,
			 verified ? "" : "x", hex, hex + 2);
}

/* Hardlinks path (below dest) to node i's links/ copy, if there is a good
 * one (checked: already looked at by phase 1).  0, -ENOENT when there is
 * none (or it went away), or -errno of linkat. */
static int link_existing(struct mat *m, uint32_t i, const char *path, bool checked)
{
	const struct tree_node *nd = &m->ctx->tree->nodes[i];
	mode_t mode = nd->mode & 07777;
	char *lp = links_path(m, i, mode);
	int r = checked || link_source_ok(lp, nd->size, mode) ? 0 : -ENOENT;
	if (r == 0 && linkat(AT_FDCWD, lp, m->destfd, path, 0) < 0)
		r = -errno;
	free(lp);
	return r;
}

/* Node i's file at path (below dest, complete and good) becomes its
 * links/ copy: link() into the cache, first writer wins.  A good copy
 * there already (another worker, another process, a duplicate body) takes
 * the place of ours, so a venv's identical files share one inode as they
 * always did; a damaged one (wrong size or mode, e.g. a chmod in a venv)
 * is replaced, once per process (m->relink), by rename(): other workers
 * and processes may be linking to that name, and linkat() on a name whose
 * inode loses its last link between lookup and link fails with ENOENT.
 * Returns 0 (*ret_shared: path is a hardlink now) or -errno of link(). */
static int publish_link(struct mat *m, uint32_t i, const char *path, bool *ret_shared)
{
	const struct tree_node *nd = &m->ctx->tree->nodes[i];
	mode_t mode = nd->mode & 07777;
	char *lp = links_path(m, i, mode);
	int r = linkat(m->destfd, path, AT_FDCWD, lp, 0) < 0 ? -errno : 0;
	if (r == -ENOENT) {
		char *dir = xstrndup(lp, (size_t)(strrchr(lp, '/') - lp));
		r = mkdir_p(dir, 0755);
		free(dir);
		if (r == 0 && linkat(m->destfd, path, AT_FDCWD, lp, 0) < 0)
			r = -errno;
	}
	*ret_shared = r == 0;
	if (r != -EEXIST) {
		free(lp);
		return r;
	}
	char *tmp = xasprintf("%s.sitefs-%d-%lx", lp, (int)getpid(), (unsigned long)pthread_self());
	if (link_source_ok(lp, nd->size, mode)) {
		/* share the published copy: link it next to ours, rename over ours */
		char *dtmp = xasprintf("%s.sitefs-ln", path);
		if (linkat(AT_FDCWD, lp, m->destfd, dtmp, 0) == 0) {
			if (renameat(m->destfd, dtmp, m->destfd, path) == 0)
				*ret_shared = true;
			else
				unlinkat(m->destfd, dtmp, 0);
		}
		free(dtmp);
		r = 0; /* else ours stays: a copy, as good */
	} else {
		pthread_mutex_lock(&m->relink);
		r = 0;
		if (!link_source_ok(lp, nd->size, mode)) {
			unlink(tmp); /* a killed run's */
			r = linkat(m->destfd, path, AT_FDCWD, tmp, 0) < 0 ? -errno : 0;
			if (r == 0 && rename(tmp, lp) < 0) {
				r = -errno;
				unlink(tmp);
			}
			*ret_shared = r == 0;
		}
		pthread_mutex_unlock(&m->relink);
		if (r < 0) /* ours stays a copy; the next run repairs the cache */
			log_debug(LOG_CAT_CACHE, "\"%s\": cannot replace a damaged copy: %s", lp,
				  strerror(-r));
		r = 0;
	}
	free(tmp);
	free(lp);
	return r;
}

/* ---- inflating straight from the wheel ---- */

#define WINDOW (1u << 20)

/* A read window over a local whole wheel: entries are taken in zip order,
 * so one pread serves the many small files of a directory. */
struct wsrc {
	int fd;
	uint64_t size;	/* the lock's size (checked when downloaded) */
	uint8_t *buf;	/* WINDOW bytes */
	uint64_t off;	/* file offset of buf[0] */
	size_t len;	/* valid bytes in buf */
};

/* Bytes [off, off+want) of the wheel (want <= WINDOW); *ret_avail: how many
 * the window holds from off on.  NULL with *ret_err when the file ends. */
static const uint8_t *win_at(struct wsrc *ws, uint64_t off, size_t want, size_t *ret_avail,
			     int *ret_err)
{
	if (!(off >= ws->off && off + want <= ws->off + ws->len)) {
		size_t n = off < ws->size ? (size_t)MIN((uint64_t)WINDOW, ws->size - off) : 0;
		if (n < want) {
			*ret_err = -EBADMSG;
			return NULL;
		}
		int r = pread_full(ws->fd, ws->buf, n, (off_t)off);
		if (r < 0) {
			ws->len = 0;
			*ret_err = r;
			return NULL;
		}
		ws->off = off;
		ws->len = n;
	}
	*ret_avail = (size_t)(ws->off + ws->len - off);
	return ws->buf + (off - ws->off);
}

static int out_fd(void *ud, const uint8_t *data, size_t len)
{
	return write_full(*(int *)ud, data, len);
}

/* Inflates node i's entry from the local wheel into fd, checking size,
 * CRC-32 and RECORD's sha256 as a fill does.  Returns 0 or fails the run
 * (the message names the wheel and the entry). */
static int inflate_into(struct mat *m, struct wsrc *ws, uint32_t i, int fd)
{
	struct fs_ctx *ctx = m->ctx;
	const struct tree_node *nd = &ctx->tree->nodes[i];
	const struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	const struct zip_entry *e = &w->meta.cd->entries[nd->body.entry];
	char err[300] = "";
	size_t avail = 0;
	uint64_t doff = 0;
	int r = 0;
	size_t hdr = ZIPCD_LOCAL_HEADER_MIN + strlen(e->name) + ZIPCD_LOCAL_SLACK;
	const uint8_t *p = NULL;
	if (e->lho >= ws->size)
		r = -EBADMSG;
	else
		p = win_at(ws, e->lho, (size_t)MIN((uint64_t)hdr, ws->size - e->lho), &avail, &r);
	if (p)
		r = zipcd_local_header(p, avail, e, &doff);
	if (r == -EAGAIN && doff > e->lho && doff - e->lho <= WINDOW) {
		p = win_at(ws, e->lho, (size_t)(doff - e->lho), &avail, &r);
		if (p)
			r = zipcd_local_header(p, avail, e, &doff);
	}
	if (r == 0 && (doff > ws->size || e->csize > ws->size - doff))
		r = -EBADMSG;
	if (r < 0)
		snprintf(err, sizeof(err), "bad local header: %s", strerror(-r));
	struct inflater *inf = r == 0 ? inflater_new(e->method, e->usize, e->crc32, out_fd, &fd)
				      : NULL;
	if (r == 0 && !inf) {
		snprintf(err, sizeof(err), "compression method %u is not supported", e->method);
		r = -EBADMSG;
	}
	for (uint64_t pos = doff, left = e->csize; r == 0 && left;) {
		size_t n = (size_t)MIN(left, (uint64_t)WINDOW);
		p = win_at(ws, pos, n, &avail, &r);
		if (!p)
			snprintf(err, sizeof(err), "reading the wheel at %llu: %s",
				 (unsigned long long)pos, strerror(-r));
		else
			r = inflater_feed(inf, p, n);
		pos += n;
		left -= n;
	}
	uint8_t got[32];
	if (inf) { /* the inflater says why it stopped, unless we know */
		int q = inflater_finish(inf, got, err[0] ? NULL : err, sizeof(err));
		r = r ? r : q;
		inflater_free(inf);
	}
	if (r == 0 && nd->has_sha && memcmp(got, nd->sha256, 32) != 0) {
		char want_hex[65], got_hex[65];
		hex_encode(nd->sha256, 32, want_hex);
		hex_encode(got, 32, got_hex);
		snprintf(err, sizeof(err), "sha256 mismatch: RECORD says %s, got %s", want_hex,
			 got_hex);
		r = -EBADMSG;
	}
	if (r < 0)
		return mfail(m, r, "wheel \"%s\": entry \"%s\": %s", w->spec->filename, e->name,
			     err[0] ? err : strerror(-r));
	return 0;
}

static void downgrade(struct mat *m, int from, int to, const char *why)
{
	if (__atomic_compare_exchange_n(&m->mode, &from, to, false, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		log_debug(LOG_CAT_CACHE, "link mode %s -> %s: %s", fs_link_mode_name(from),
			  fs_link_mode_name(to), why);
}

/* Creates node i's file at path and fills it from src (a body) or, with
 * src < 0, by inflating from ws; in hardlink mode it then becomes the
 * links/ copy (publish_link): one inode per file, no temp file.  The
 * file is complete and verified before anything links to it; a failure
 * leaves it in dest, which the caller deletes. */
static int write_new(struct mat *m, uint32_t i, const char *path, int src, struct wsrc *ws,
		     bool hardlink)
{
	const struct tree_node *nd = &m->ctx->tree->nodes[i];
	mode_t mode = nd->mode & 07777;
	int fd = create_at(m, path, mode);
	if (fd < 0)
		return mfail(m, fd, "\"%s\": %s", path, strerror(-fd));
	int r = 0;
	if (hardlink && (mode & m->umask) && fchmod(fd, mode) < 0) /* links/<mode> means it */
		r = mfail(m, -errno, "\"%s\": chmod: %s", path, strerror(errno));
	if (r == 0 && src >= 0 && (r = copy_fd(src, fd, nd->size)) < 0)
		mfail(m, r, "\"%s\": copy: %s", path, strerror(-r));
	else if (r == 0 && src < 0)
		r = inflate_into(m, ws, i, fd);
	close(fd);
	if (r < 0)
		return r;
	bool shared = false;
	if (hardlink) {
		r = publish_link(m, i, path, &shared);
		if (r < 0 && m->o->link_mode != FS_LINK_AUTO)
			return mfail(m, r, "\"%s\": cannot hardlink into the cache: %s", path,
				     strerror(-r));
		if (r == -EXDEV || r == -EPERM || r == -EOPNOTSUPP)
			downgrade(m, FS_LINK_HARDLINK, FS_LINK_COPY, strerror(-r));
		else if (r < 0)
			return mfail(m, r, "\"%s\": cannot hardlink into the cache: %s", path,
				     strerror(-r));
	}
	if (shared)
		ADD(m->st.hardlinked, 1);
	else
		ADD(m->st.copied, 1);
	return 0;
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
			/* a good links/ copy, retried: a damaged one replaced by another
			 * process between linkat's lookup and its link */
			r = -ENOENT;
			for (int tries = 0; tries < 4 && r == -ENOENT; tries++)
				r = link_existing(m, i, path, false);
			if (r == 0) {
				ADD(m->st.hardlinked, 1);
				return 0;
			}
			if (r == -ENOENT || r == -EMLINK) /* none, or that inode is full */
				return write_new(m, i, path, src, NULL, true);
			if (explicit || (r != -EXDEV && r != -EPERM && r != -EOPNOTSUPP))
				return mfail(m, r, "\"%s\": cannot hardlink from the cache: %s",
					     path, strerror(-r));
			downgrade(m, FS_LINK_HARDLINK, FS_LINK_COPY, strerror(-r));
			continue;
		}
		break;
	}
	return write_new(m, i, path, src, NULL, false);
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
 * lock, then kept as <cache>/wheels/<sha256>.whl: a later mount of the same
 * lock reads its bodies from there (ctx.c) with no request, and a later
 * materialize inflates from it.  Returns 0 and *ret_path (caller frees;
 * *ret_temp: a temp file the caller deletes, when it could not be kept), or
 * -errno. */
static int download(struct mat *m, struct wheel_src *w, char **ret_path, bool *ret_temp)
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
	if (r == 0 && fchmod(d.fd, 0444) < 0)
		r = -errno;
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
	char *keep = cache_wheel_path(m->ctx->cache, w->spec->sha256);
	*ret_temp = rename(tmp, keep) < 0;
	if (*ret_temp) {
		log_debug(LOG_CAT_CACHE, "\"%s\": %s", keep, strerror(errno));
		free(keep);
		keep = tmp;
	} else {
		free(tmp);
	}
	*ret_path = keep;
	return 0;
}

/* Opens the whole local copy of wheel w for inflating: the download kept
 * in the cache, or the lock's own file.  -1 when there is none. */
static int open_local_wheel(struct wheel_src *w)
{
	pthread_mutex_lock(&w->lock);
	char *path = w->local_path ? xstrdup(w->local_path) : NULL;
	pthread_mutex_unlock(&w->lock);
	if (!path && !http_is_remote(w->spec->url) && http_local_path(w->spec->url, &path) < 0)
		path = NULL;
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	struct stat st;
	if (fd >= 0 && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != w->spec->size)) {
		close(fd); /* not the wheel the metadata describes */
		fd = -1;
	}
	free(path);
	return fd;
}

/* Writes node i (slot k) at path: from a links/ copy or the wheel when
 * phase 1 saw fit, else through the body store (fs_body_open). */
static int do_node(struct mat *m, size_t k, uint32_t i, const char *path, struct wsrc *ws)
{
	int lm = __atomic_load_n(&m->mode, __ATOMIC_RELAXED);
	int src = m->src[k] & 3;
	bool dup = m->src[k] & SRC_DUP;
	if (lm == FS_LINK_HARDLINK && (src == SRC_LINK || (src == SRC_MISSING && dup))) {
		/* a duplicate's first copy may be out by now */
		if (link_existing(m, i, path, src == SRC_LINK) == 0) {
			ADD(m->st.hardlinked, 1);
			return 0;
		}
	}
	if (src == SRC_MISSING && ws->fd >= 0 && (lm == FS_LINK_HARDLINK || lm == FS_LINK_COPY))
		return write_new(m, i, path, -1, ws, lm == FS_LINK_HARDLINK);
	int fd = fs_body_open(m->ctx, i);
	if (fd < 0) {
		const struct tree_node *nd = &m->ctx->tree->nodes[i];
		const struct wheel_src *w = &m->ctx->wheels[nd->body.wheel];
		return mfail(m, fd, "wheel \"%s\": entry \"%s\": %s", w->spec->filename,
			     w->meta.cd->entries[nd->body.entry].name, strerror(-fd));
	}
	int r = place(m, i, fd, path);
	close(fd);
	return r;
}

/* Makes sure wheel wi is local if it has missing bodies: the first of its
 * items downloads it, later ones wait for that.  0 or -errno. */
static int need_wheel(struct mat *m, uint32_t wi)
{
	struct wheel_src *w = &m->ctx->wheels[wi];
	pthread_mutex_lock(&w->lock);
	bool have_local = w->local_path != NULL;
	pthread_mutex_unlock(&w->lock);
	if (!m->missing[wi] || !http_is_remote(w->spec->url) || have_local)
		return 0;
	pthread_mutex_lock(&m->dl_lock);
	bool mine = m->dl[wi] == 0;
	if (mine)
		m->dl[wi] = 1;
	while (!mine && m->dl[wi] == 1)
		pthread_cond_wait(&m->dl_cond, &m->dl_lock);
	int r = m->dl[wi] == 2 ? 0 : m->dl[wi];
	pthread_mutex_unlock(&m->dl_lock);
	if (!mine)
		return r;
	char *whole = NULL;
	bool temp = false;
	r = download(m, w, &whole, &temp);
	if (r == 0) {
		pthread_mutex_lock(&w->lock);
		free(w->local_path);
		w->local_path = xstrdup(whole);
		pthread_mutex_unlock(&w->lock);
	}
	pthread_mutex_lock(&m->dl_lock);
	m->dl[wi] = r == 0 ? 2 : r;
	if (temp)
		m->temps[wi] = whole; /* deleted at the end of the run */
	else
		free(whole);
	pthread_cond_broadcast(&m->dl_cond);
	pthread_mutex_unlock(&m->dl_lock);
	return r;
}

static int do_item(struct mat *m, const struct item *it)
{
	struct fs_ctx *ctx = m->ctx;
	uint32_t wi = it->wheel;
	struct wheel_src *w = &ctx->wheels[wi];
	int r = need_wheel(m, wi);
	if (r < 0)
		return r;
	/* Missing bodies are inflated straight from the wheel into dest (hardlink
	 * and copy modes); the body store is for mounts, clones and prefetch. */
	struct wsrc ws = {.fd = -1, .size = w->spec->size};
	int lm = __atomic_load_n(&m->mode, __ATOMIC_RELAXED);
	if (m->missing[wi] && m->destfd >= 0 && (lm == FS_LINK_HARDLINK || lm == FS_LINK_COPY)) {
		ws.fd = open_local_wheel(w);
		if (ws.fd >= 0)
			ws.buf = xmalloc(WINDOW);
	}
	for (size_t k = it->lo; r == 0 && k < it->hi && !stopping(m); k++) {
		uint32_t i = m->nodes[k];
		const struct tree_node *nd = &ctx->tree->nodes[i];
		if (m->destfd >= 0) {
			char path[PATH_MAX];
			r = tree_path(ctx->tree, i, path, sizeof(path));
			if (r < 0)
				r = mfail(m, r, "path too long");
			else if ((r = make_dir(m, nd->parent)) < 0)
				r = mfail(m, r, "\"%s\": directory: %s", path, strerror(-r));
			else
				r = do_node(m, k, i, path, &ws);
		} else {
			int fd = fs_body_open(ctx, i);
			if (fd < 0)
				r = mfail(m, fd, "wheel \"%s\": entry \"%s\": %s",
					  w->spec->filename,
					  w->meta.cd->entries[nd->body.entry].name, strerror(-fd));
			else
				close(fd);
		}
		if (r < 0)
			break;
		progress(m, nd->size, false);
	}
	if (ws.fd >= 0)
		close(ws.fd);
	free(ws.buf);
	return r;
}

static void *worker(void *ud)
{
	struct mat *m = ud;
	while (!stopping(m)) {
		size_t k = __atomic_fetch_add(&m->next, 1, __ATOMIC_RELAXED);
		if (k >= m->nitems)
			break;
		do_item(m, &m->items[k]);
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
			r = make_dir(m, i);
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
	free(m->src);
	free(m->first);
	free(m->missing);
	free(m->order);
	free(m->errmsg);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->relink);
	free(m->made);
	free(m->items);
	for (size_t w = 0; m->temps && w < m->ctx->cfg.nwheels; w++) {
		if (m->temps[w]) {
			struct wheel_src *ws = &m->ctx->wheels[w];
			pthread_mutex_lock(&ws->lock);
			free(ws->local_path);
			ws->local_path = NULL;
			pthread_mutex_unlock(&ws->lock);
			unlink(m->temps[w]);
			free(m->temps[w]);
		}
	}
	free(m->temps);
	free(m->dl);
	pthread_mutex_destroy(&m->dl_lock);
	pthread_cond_destroy(&m->dl_cond);
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

/* A wheel's nodes in zip order: inflating walks the file forwards. */
static int cmp_zip(const void *a, const void *b, void *ud)
{
	const struct fs_ctx *ctx = ud;
	const struct tree_node *x = &ctx->tree->nodes[*(const uint32_t *)a];
	const struct tree_node *y = &ctx->tree->nodes[*(const uint32_t *)b];
	const struct zip_entry *es = ctx->wheels[x->body.wheel].meta.cd->entries;
	uint64_t lx = es[x->body.entry].lho, ly = es[y->body.entry].lho;
	return lx < ly ? -1 : lx > ly;
}

/* Cuts the wheels (in work order) into items; all first pieces come first,
 * so downloads start in the same order as before, then the rest. */
static void make_items(struct mat *m)
{
	const struct tree *t = m->ctx->tree;
	size_t cap = m->norder + 1;
	m->items = xcalloc(cap, sizeof(*m->items));
	for (size_t o = 0; o < m->norder; o++) {
		uint32_t w = m->order[o];
		uint32_t piece = 0;
		for (size_t lo = m->first[w]; lo < m->first[w + 1]; piece++) {
			size_t hi = lo;
			uint64_t bytes = 0;
			while (hi < m->first[w + 1] && (hi == lo || bytes < PIECE))
				bytes += t->nodes[m->nodes[hi++]].size;
			if (m->nitems == cap)
				m->items = xrealloc(m->items, (cap *= 2) * sizeof(*m->items));
			m->items[m->nitems++] = (struct item){w, piece, lo, hi};
			lo = hi;
		}
	}
	/* stable by piece: the wheels' order within each piece number */
	for (size_t a = 1; a < m->nitems; a++)
		for (size_t b = a; b > 0 && m->items[b - 1].piece > m->items[b].piece; b--) {
			struct item x = m->items[b];
			m->items[b] = m->items[b - 1];
			m->items[b - 1] = x;
		}
}

/* Auto mode: whether dest takes reflinks from the cache, tried once on a
 * scratch file rather than on the first body (which would need a body
 * store file only a clone wants). */
static void probe_clone(struct mat *m)
{
	char *tmp;
	int src = cache_tmpfile(m->ctx->cache, &tmp);
	if (src < 0)
		return;
	int r = write_full(src, "sitefs", 6);
	int dst = openat(m->destfd, ".sitefs-clone-probe", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			 0600);
	if (r == 0 && dst >= 0) {
		r = ioctl(dst, FICLONE, src) < 0 ? -errno : 0;
		if (r < 0 && clone_unsupported(-r))
			downgrade(m, FS_LINK_AUTO, FS_LINK_HARDLINK, strerror(-r));
	}
	if (dst >= 0) {
		close(dst);
		unlinkat(m->destfd, ".sitefs-clone-probe", 0);
	}
	close(src);
	unlink(tmp);
	free(tmp);
}

/* Keys seen in phase 1 (open addressing; a duplicate body is linked, not
 * inflated twice, once its first copy is out). */
struct keyset {
	uint8_t (*k)[33]; /* key + verified, [32] == 2: empty */
	size_t mask;
};

static bool keyset_add(struct keyset *s, const uint8_t key[32], bool verified)
{
	size_t h;
	memcpy(&h, key, sizeof(h));
	for (h &= s->mask;; h = (h + 1) & s->mask) {
		if (s->k[h][32] == 2) {
			memcpy(s->k[h], key, 32);
			s->k[h][32] = verified;
			return true;
		}
		if (s->k[h][32] == verified && !memcmp(s->k[h], key, 32))
			return false;
	}
}

/* Where each body is: a links/ copy (hardlink mode), the body store, or
 * nowhere (its wheel will be read). */
static void find_bodies(struct mat *m)
{
	struct fs_ctx *ctx = m->ctx;
	const struct tree *t = ctx->tree;
	int lm = __atomic_load_n(&m->mode, __ATOMIC_RELAXED);
	size_t cap = 16;
	while (cap < 2 * (t->nbodies + 1))
		cap *= 2;
	struct keyset ks = {.k = xmalloc(cap * 33), .mask = cap - 1};
	memset(ks.k, 2, cap * 33);
	for (size_t k = 0; k < m->first[ctx->cfg.nwheels]; k++) {
		uint32_t i = m->nodes[k];
		const struct tree_node *nd = &t->nodes[i];
		uint8_t key[32];
		bool verified;
		body_key(ctx, i, key, &verified);
		m->src[k] = keyset_add(&ks, key, verified) ? 0 : SRC_DUP;
		if (lm == FS_LINK_HARDLINK && m->destfd >= 0) {
			char *lp = links_path(m, i, nd->mode & 07777);
			bool ok = link_source_ok(lp, nd->size, nd->mode & 07777);
			free(lp);
			if (ok) {
				m->src[k] |= SRC_LINK;
				continue;
			}
		}
		int fd = cache_peek(ctx->cache, key, verified, nd->size);
		if (fd >= 0) {
			close(fd);
			m->src[k] |= SRC_BODY;
		} else {
			m->missing[nd->body.wheel]++;
		}
	}
	free(ks.k);
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
	pthread_mutex_init(&m.dl_lock, NULL);
	pthread_cond_init(&m.dl_cond, NULL);
	m.umask = umask(0);
	umask(m.umask);
	if (o->dest) {
		m.destfd = open(o->dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (m.destfd < 0) {
			r = -errno;
			snprintf(err, errlen, "\"%s\": %s", o->dest, strerror(errno));
			goto out;
		}
		if (o->link_mode == FS_LINK_AUTO)
			probe_clone(&m);
	}

	/* Group BODY nodes by wheel, in zip order; find what the cache lacks. */
	m.first = xcalloc(nw + 2, sizeof(*m.first));
	m.missing = xcalloc(nw + 1, sizeof(*m.missing));
	m.nodes = xcalloc(t->nbodies + 1, sizeof(*m.nodes));
	m.src = xcalloc(t->nbodies + 1, sizeof(*m.src));
	m.made = xcalloc(t->n + 1, 1);
	m.made[0] = 1; /* dest itself */
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
	}
	free(fill);
	for (size_t w = 0; w < nw; w++)
		qsort_r(m.nodes + m.first[w], m.first[w + 1] - m.first[w], sizeof(*m.nodes),
			cmp_zip, ctx);
	find_bodies(&m);
	m.order = xcalloc(nw + 1, sizeof(*m.order));
	for (size_t w = 0; w < nw; w++) {
		m.st.bodies_filled += m.missing[w];
		if (m.first[w + 1] > m.first[w])
			m.order[m.norder++] = (uint32_t)w;
	}
	qsort_r(m.order, m.norder, sizeof(*m.order), cmp_work, &m);
	make_items(&m);
	m.dl = xcalloc(nw + 1, sizeof(*m.dl));
	m.temps = xcalloc(nw + 1, sizeof(*m.temps));

	unsigned nt = o->threads ? o->threads : DEFAULT_THREADS;
	if (nt > m.nitems)
		nt = m.nitems ? (unsigned)m.nitems : 1;
	pthread_t *th = xcalloc(nt, sizeof(*th));
	unsigned started = 0;
	for (; started < nt; started++)
		if (pthread_create(&th[started], NULL, worker, &m) != 0)
			break;
	/* the skeleton while the workers download and write */
	if (m.destfd >= 0)
		make_skeleton(&m, 0);
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
