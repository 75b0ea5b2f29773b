/* pyc: a writable __pycache__ in every directory of the tree that holds
 * Python sources, backed by a bytecode store in the cache shared by every
 * mount and process on the machine.
 *
 * DESIGN
 * - Without bytecode, imports from a read-only tree compile every module in
 *   every process (~3x slower).  Python already knows how to cache: it
 *   stats <dir>/__pycache__, opens <stem>.<tag>.pyc, and on a miss writes
 *   <name>.<digits> (O_CREAT|O_EXCL) and renames it over <name>.  We let
 *   exactly that sequence through, and nothing else: the tree itself stays
 *   immutable.
 * - Store: <cache>/pyc/<2 hex>/<62 hex>.<tag>[.opt-N].pyc, keyed by the
 *   source's sha256 (from RECORD: known without fetching the source) and
 *   the cache tag (cpython-311 names one magic number for a CPython
 *   release).  The 4-byte mtime field of the stored header is zeroed; reads
 *   patch in the source node's mtime, so one entry serves every wheel and
 *   version that ships the same file.
 * - A rename is accepted only for <stem>.<tag>[.opt-N].pyc whose <stem>.py
 *   is a body with a RECORD hash in the same directory, from a temp file
 *   created for that very name, holding a timestamp pyc header (magic ending
 *   in \r\n, flags 0) whose size field matches the source and whose mtime
 *   field matches the source node: a write for one source can never land
 *   under another source's key.  Anything else gets EACCES, which Python
 *   ignores (it then just does not cache).
 * - Publishing: link(temp, store) — the first writer wins and a published
 *   file never changes (so the kernel may cache it).  A file with another
 *   magic number (another build with the same tag) is replaced by rename.
 *   The temp's inode lives on in the kernel under the final name: it keeps
 *   serving the bytes it was written with (the store file when the link
 *   succeeded, else its own fd, kept until unmount).
 * - Inodes: 1..n the tree; n+1+d the __pycache__ of dir node d; 2n+1+3s+o
 *   the published pyc of source node s at optimisation level o; 5n+1+k the
 *   k-th temp file created by this mount.
 * - Negative entries: a missing pyc is answered with ENOENT and no timeout
 *   (it may appear any moment, written by another mount); found ones and
 *   the __pycache__ directories get the tree's long timeouts.
 * - Only the mount's owner (root for a shared mount) may write: the
 *   __pycache__ directories are 0755, and default_permissions applies.
 * - Locking: pyc->lock protects the temp table; taken alone, never across
 *   I/O other than the open/close of a temp file. */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define TIMEOUT 86400.0 * 365
#define PYC_MAX (64u << 20) /* bound on a written pyc */
#define PYC_TMPS_MAX 65536       /* temps per mount (each renamed pyc keeps its slot) */
#define HDR 16
#define PUSH_MAX (1u << 20) /* bigger pycs are read on demand */

struct pyc_tmp {
	uint32_t dir, src; /* tree nodes: the directory and the source */
	uint8_t opt;
	char *name;        /* the temp's name in __pycache__; NULL once renamed or gone */
	char *path;        /* temp file in <cache>/tmp; kept after a rename that lost
			      the race to publish (it serves this inode); else NULL */
	int fd;            /* written through until the rename, then -1 */
	bool renamed;      /* now the pyc of src */
	_Atomic bool pushed; /* its pages were pushed (pyc_rename) */
	bool gone;
};

struct pyc {
	struct fs_ctx *ctx;
	char tag[32];      /* "cpython-311" */
	uint8_t magic[4];  /* the interpreter's (cfg.pyc_magic) */
	bool have_magic;   /* else no pyc is seeded or recorded for a profile */
	bool push;         /* push pycs into the page cache (SITEFS_PYC_PUSH=0: no) */
	_Atomic uint64_t *pushed; /* a bit per published pyc inode: its pages were pushed */
	pthread_mutex_t lock;
	struct pyc_tmp **tmps; /* protected by lock; slots are never reused */
	size_t ntmps, cap;
};

static const char *const opt_suffix[3] = {"", ".opt-1", ".opt-2"};

struct pyc *pyc_new(struct fs_ctx *ctx)
{
	struct pyc *p = xcalloc(1, sizeof(*p));
	p->ctx = ctx;
	snprintf(p->tag, sizeof(p->tag), "cpython-%d%d", ctx->cfg.py.major, ctx->cfg.py.minor);
	const char *m = ctx->cfg.pyc_magic;
	p->have_magic = m && strlen(m) == 8 && hex_decode(m, p->magic, 4) == 0;
	const char *push = getenv("SITEFS_PYC_PUSH");
	p->push = !push || strcmp(push, "0") != 0;
	p->pushed = xcalloc((3 * (size_t)ctx->tree->n + 63) / 64 + 1, sizeof(*p->pushed));
	pthread_mutex_init(&p->lock, NULL);
	char *d = xasprintf("%s/pyc", ctx->cache_dir);
	mkdir_p(d, 0755);
	free(d);
	return p;
}

struct pyc *pyc_free(struct pyc *p)
{
	if (!p)
		return NULL;
	for (size_t i = 0; i < p->ntmps; i++) {
		struct pyc_tmp *t = p->tmps[i];
		if (t->fd >= 0)
			close(t->fd);
		if (t->path)
			unlink(t->path);
		free(t->path);
		free(t->name);
		free(t);
	}
	free(p->tmps);
	pthread_mutex_destroy(&p->lock);
	free(p->pushed);
	free(p);
	return NULL;
}

/* --- inode space ---------------------------------------------------------- */

static uint64_t tn(const struct pyc *p)
{
	return p->ctx->tree->n;
}

enum pyc_kind pyc_classify(const struct pyc *p, fuse_ino_t ino, uint64_t *ret_idx)
{
	uint64_t n = tn(p);
	if (ino >= 1 && ino <= n)
		return PYC_NONE;
	if (ino > n && ino <= 2 * n) {
		*ret_idx = ino - n - 1;
		return PYC_DIR;
	}
	if (ino > 2 * n && ino <= 5 * n) {
		*ret_idx = ino - 2 * n - 1;
		return PYC_FILE;
	}
	if (ino > 5 * n) {
		*ret_idx = ino - 5 * n - 1;
		return PYC_TMP;
	}
	return PYC_NONE;
}

/* true if directory node d holds a .py body with a RECORD hash */
static bool has_sources(const struct tree *t, uint32_t d)
{
	const struct tree_node *dn = &t->nodes[d];
	if (dn->kind != TREE_DIR)
		return false;
	for (uint32_t k = 0; k < dn->dir.count; k++) {
		const struct tree_node *c = &t->nodes[t->children[dn->dir.first + k]];
		if (c->kind == TREE_BODY && c->has_sha && str_endswith(tree_name(t, c), ".py"))
			return true;
	}
	return false;
}

int64_t pyc_dir_ino(const struct pyc *p, uint32_t d)
{
	if (!has_sources(p->ctx->tree, d))
		return -1;
	return (int64_t)(tn(p) + 1 + d);
}

/* "<stem>.<tag>[.opt-N].pyc" -> source node and level; -ENOENT if not ours. */
static int parse_pyc_name(const struct pyc *p, uint32_t d, const char *name, uint32_t *ret_src,
			  uint8_t *ret_opt)
{
	size_t len = strlen(name);
	for (uint8_t o = 0; o < 3; o++) {
		char suffix[64];
		int sl = snprintf(suffix, sizeof(suffix), ".%s%s.pyc", p->tag, opt_suffix[o]);
		if (len <= (size_t)sl || strcmp(name + len - sl, suffix) != 0)
			continue;
		size_t stem = len - (size_t)sl;
		if (stem + 4 > 255)
			return -ENOENT;
		char src[260];
		memcpy(src, name, stem);
		memcpy(src + stem, ".py", 4);
		const struct tree *t = p->ctx->tree;
		int64_t s = tree_lookup(t, d, src);
		if (s < 0 || t->nodes[s].kind != TREE_BODY || !t->nodes[s].has_sha)
			return -ENOENT;
		*ret_src = (uint32_t)s;
		*ret_opt = o;
		return 0;
	}
	return -ENOENT;
}

static char *store_path(const struct pyc *p, uint32_t src, uint8_t opt)
{
	char hex[65];
	hex_encode(p->ctx->tree->nodes[src].sha256, 32, hex);
	return xasprintf("%s/pyc/%.2s/%s.%s%s.pyc", p->ctx->cache_dir, hex, hex + 2, p->tag,
			 opt_suffix[opt]);
}

static void dir_attr(const struct pyc *p, uint32_t d, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = tn(p) + 1 + d;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_mtime = st->st_ctime = st->st_atime = p->ctx->tree->nodes[d].mtime;
}

static void file_attr(fuse_ino_t ino, uint64_t size, int64_t mtime, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFREG | 0644;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = (off_t)size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_mtime = st->st_ctime = st->st_atime = mtime;
}

static struct pyc_tmp *tmp_get(struct pyc *p, uint64_t k)
{
	pthread_mutex_lock(&p->lock);
	struct pyc_tmp *t = k < p->ntmps ? p->tmps[k] : NULL;
	pthread_mutex_unlock(&p->lock);
	return t;
}

/* Size of what a temp/renamed node serves now. */
static int tmp_size(struct pyc *p, struct pyc_tmp *t, uint64_t *ret)
{
	struct stat st;
	int r = 0;
	if (t->fd >= 0) {
		r = fstat(t->fd, &st) < 0 ? -errno : 0;
	} else if (t->path) {
		r = stat(t->path, &st) < 0 ? -errno : 0;
	} else {
		char *sp = store_path(p, t->src, t->opt);
		r = stat(sp, &st) < 0 ? -errno : 0;
		free(sp);
	}
	if (r == 0)
		*ret = (uint64_t)st.st_size;
	return r;
}

/* --- handlers ------------------------------------------------------------- */

static int open_fd(struct pyc *p, fuse_ino_t ino);

/* Stored pycs have a zero mtime field: bytes 8..11 of what is served are
 * the source node's mtime (buf holds bytes [off, off + n)). */
static void patch_mtime(const struct pyc *p, uint32_t src, char *buf, off_t off, size_t n)
{
	uint32_t mt = (uint32_t)p->ctx->tree->nodes[src].mtime;
	for (int b = 8; b < 12; b++)
		if (off <= b && (uint64_t)b < (uint64_t)off + n)
			buf[b - off] = (char)(mt >> (8 * (b - 8)));
}

/* Puts the bytes of pyc inode ino (fd: on its file, size bytes) into the
 * kernel's page cache, so that the read that follows is served by the
 * kernel: a round trip less per module.  The inode must be known to the
 * kernel (after a lookup's reply it may not be yet: its requester makes it). */
static void push_pages(struct pyc *p, fuse_ino_t ino, int fd, uint64_t size, uint32_t src)
{
	struct fuse_session *se = p->ctx->se;
	if (!se || size == 0 || size > PUSH_MAX || !p->push)
		return;
	char *buf = xmalloc(size);
	if (pread_full(fd, buf, size, 0) == 0) {
		patch_mtime(p, src, buf, 0, size);
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
		bv.buf[0].mem = buf;
		fuse_lowlevel_notify_store(se, ino, 0, &bv, 0);
	}
	free(buf);
}

/* push_pages of pyc inode ino, the pyc of source node src. */
static void push_open(struct pyc *p, fuse_ino_t ino, uint32_t src)
{
	int fd = open_fd(p, ino);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0)
		push_pages(p, ino, fd, (uint64_t)st.st_size, src);
	if (fd >= 0)
		close(fd);
}

void pyc_opened(struct pyc *p, fuse_ino_t ino)
{
	uint64_t idx;
	enum pyc_kind k = pyc_classify(p, ino, &idx);
	if (!p->push || k == PYC_DIR)
		return;
	uint32_t src = (uint32_t)(idx / 3);
	if (k == PYC_TMP) {
		struct pyc_tmp *t = tmp_get(p, idx);
		if (!t || !t->renamed || atomic_exchange(&t->pushed, true))
			return;
		src = t->src;
	} else {
		uint64_t bit = 1ull << (idx % 64);
		if (atomic_fetch_or(&p->pushed[idx / 64], bit) & bit)
			return;
	}
	push_open(p, ino, src);
}

void pyc_lookup(struct pyc *p, fuse_req_t req, uint64_t d, const char *name)
{
	struct fuse_entry_param e = {.attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT};
	uint32_t src;
	uint8_t opt;
	if (parse_pyc_name(p, (uint32_t)d, name, &src, &opt) == 0) {
		for (int again = 0; again < 2; again++) {
			char *sp = store_path(p, src, opt);
			struct stat st;
			int r = stat(sp, &st);
			free(sp);
			if (r == 0 && S_ISREG(st.st_mode)) {
				e.ino = 2 * tn(p) + 1 + 3 * (uint64_t)src + opt;
				file_attr(e.ino, (uint64_t)st.st_size,
					  p->ctx->tree->nodes[src].mtime, &e.attr);
				fuse_reply_entry(req, &e);
				return;
			}
			/* compile ahead may have it in hand (then it answers req) */
			enum compile_miss m = again ? COMPILE_MISS
						    : compile_lookup_miss(p->ctx->compile, src,
									  opt, req, d, name);
			if (m == COMPILE_HELD)
				return;
			if (m == COMPILE_MISS)
				break;
		}
	}
	/* a temp created here (Python never looks them up, but stat(1) may) */
	pthread_mutex_lock(&p->lock);
	struct pyc_tmp *found = NULL;
	size_t k;
	for (k = 0; k < p->ntmps; k++) {
		struct pyc_tmp *t = p->tmps[k];
		if (t->dir == d && t->name && !t->gone && strcmp(t->name, name) == 0) {
			found = t;
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	uint64_t size;
	if (found && tmp_size(p, found, &size) == 0) {
		e.ino = 5 * tn(p) + 1 + k;
		e.attr_timeout = e.entry_timeout = 0;
		file_attr(e.ino, size, p->ctx->tree->nodes[found->src].mtime, &e.attr);
		fuse_reply_entry(req, &e);
		return;
	}
	/* no negative caching: another process or mount may write it next */
	fuse_reply_err(req, ENOENT);
}

void pyc_getattr(struct pyc *p, fuse_req_t req, fuse_ino_t ino)
{
	uint64_t idx;
	struct stat st;
	switch (pyc_classify(p, ino, &idx)) {
	case PYC_DIR:
		dir_attr(p, (uint32_t)idx, &st);
		fuse_reply_attr(req, &st, TIMEOUT);
		return;
	case PYC_FILE: {
		uint32_t src = (uint32_t)(idx / 3);
		char *sp = store_path(p, src, (uint8_t)(idx % 3));
		int r = stat(sp, &st);
		free(sp);
		if (r < 0) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		file_attr(ino, (uint64_t)st.st_size, p->ctx->tree->nodes[src].mtime, &st);
		fuse_reply_attr(req, &st, TIMEOUT);
		return;
	}
	case PYC_TMP: {
		struct pyc_tmp *t = tmp_get(p, idx);
		uint64_t size;
		if (!t || t->gone || tmp_size(p, t, &size) < 0) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		file_attr(ino, size, p->ctx->tree->nodes[t->src].mtime, &st);
		fuse_reply_attr(req, &st, t->renamed ? TIMEOUT : 0);
		return;
	}
	default:
		fuse_reply_err(req, ESTALE);
	}
}

void pyc_setattr(struct pyc *p, fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set)
{
	uint64_t idx;
	if (pyc_classify(p, ino, &idx) != PYC_TMP) {
		fuse_reply_err(req, EROFS);
		return;
	}
	struct pyc_tmp *t = tmp_get(p, idx);
	if (!t || t->gone || t->renamed || t->fd < 0) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) &&
	    ((uint64_t)attr->st_size > PYC_MAX || ftruncate(t->fd, attr->st_size) < 0)) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	pyc_getattr(p, req, ino); /* mode, times: accepted and ignored */
}

void pyc_mkdir(struct pyc *p, fuse_req_t req, uint32_t d, const char *name)
{
	fuse_reply_err(req, strcmp(name, "__pycache__") == 0 && pyc_dir_ino(p, d) >= 0 ? EEXIST
										       : EROFS);
}

void pyc_create(struct pyc *p, fuse_req_t req, uint64_t d, const char *name, mode_t mode,
		struct fuse_file_info *fi)
{
	/* "<pyc name>.<anything>" for a pyc name of a source in this directory */
	const char *dot = strstr(name, ".pyc.");
	uint32_t src;
	uint8_t opt;
	if (!dot || !dot[5] || strchr(dot + 5, '.') || (size_t)(dot - name) + 4 >= 256) {
		fuse_reply_err(req, EACCES);
		return;
	}
	char target[260];
	memcpy(target, name, (size_t)(dot - name) + 4);
	target[dot - name + 4] = '\0';
	if (parse_pyc_name(p, (uint32_t)d, target, &src, &opt) < 0 ||
	    (fi->flags & O_ACCMODE) == O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	pthread_mutex_lock(&p->lock);
	for (size_t k = 0; k < p->ntmps; k++) {
		struct pyc_tmp *t = p->tmps[k];
		if (t->dir == d && t->name && !t->gone && strcmp(t->name, name) == 0) {
			pthread_mutex_unlock(&p->lock);
			fuse_reply_err(req, EEXIST);
			return;
		}
	}
	if (p->ntmps >= PYC_TMPS_MAX) {
		pthread_mutex_unlock(&p->lock);
		fuse_reply_err(req, ENOSPC);
		return;
	}
	char *path;
	int fd = cache_tmpfile(p->ctx->cache, &path);
	if (fd < 0) {
		pthread_mutex_unlock(&p->lock);
		fuse_reply_err(req, -fd);
		return;
	}
	struct pyc_tmp *t = xcalloc(1, sizeof(*t));
	*t = (struct pyc_tmp){.dir = (uint32_t)d, .src = src, .opt = opt, .name = xstrdup(name),
			      .path = path, .fd = fd};
	if (p->ntmps == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 256;
		p->tmps = xrealloc(p->tmps, p->cap * sizeof(*p->tmps));
	}
	size_t k = p->ntmps++;
	p->tmps[k] = t;
	pthread_mutex_unlock(&p->lock);

	struct fuse_entry_param e = {.ino = 5 * tn(p) + 1 + k};
	file_attr(e.ino, 0, p->ctx->tree->nodes[src].mtime, &e.attr);
	fi->fh = UINT64_MAX;
	fi->direct_io = 1; /* nothing to cache while it is being written */
	fuse_reply_create(req, &e, fi);
}

void pyc_write(struct pyc *p, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	       off_t off)
{
	uint64_t idx;
	struct pyc_tmp *t = pyc_classify(p, ino, &idx) == PYC_TMP ? tmp_get(p, idx) : NULL;
	if (!t || t->gone || t->renamed || t->fd < 0) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0 || (uint64_t)off + size > PYC_MAX) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	ssize_t n = pwrite(t->fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

/* The header Python writes for a timestamp pyc of this source. */
static int check_header(const uint8_t *h, const struct tree_node *src)
{
	uint32_t flags = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
			 (uint32_t)h[7] << 24;
	uint32_t mt = (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 |
		      (uint32_t)h[11] << 24;
	uint32_t sz = (uint32_t)h[12] | (uint32_t)h[13] << 8 | (uint32_t)h[14] << 16 |
		      (uint32_t)h[15] << 24;
	if (h[2] != '\r' || h[3] != '\n' || flags != 0)
		return -EACCES;
	if (mt != (uint32_t)src->mtime || sz != (uint32_t)src->size)
		return -EACCES;
	return 0;
}

void pyc_unlink(struct pyc *p, fuse_req_t req, uint64_t d, const char *name)
{
	pthread_mutex_lock(&p->lock);
	for (size_t k = 0; k < p->ntmps; k++) {
		struct pyc_tmp *t = p->tmps[k];
		if (t->dir == d && t->name && !t->gone && strcmp(t->name, name) == 0) {
			t->gone = true;
			free(t->name);
			t->name = NULL;
			if (t->fd >= 0)
				close(t->fd);
			t->fd = -1;
			if (t->path)
				unlink(t->path);
			free(t->path);
			t->path = NULL;
			pthread_mutex_unlock(&p->lock);
			fuse_reply_err(req, 0);
			return;
		}
	}
	pthread_mutex_unlock(&p->lock);
	fuse_reply_err(req, EROFS);
}

void pyc_rename(struct pyc *p, fuse_req_t req, uint64_t d, const char *name, uint64_t nd,
		const char *newname, unsigned int flags)
{
	uint32_t src;
	uint8_t opt;
	if (nd != d || flags || parse_pyc_name(p, (uint32_t)d, newname, &src, &opt) < 0) {
		fuse_reply_err(req, EACCES);
		return;
	}
	pthread_mutex_lock(&p->lock);
	struct pyc_tmp *t = NULL;
	size_t k;
	for (k = 0; k < p->ntmps; k++) {
		struct pyc_tmp *c = p->tmps[k];
		if (c->dir == d && c->name && !c->gone && strcmp(c->name, name) == 0) {
			t = c;
			break;
		}
	}
	int r = -EACCES;
	const struct tree_node *sn = &p->ctx->tree->nodes[src];
	uint8_t h[HDR];
	struct stat st;
	/* only to the name it was created for */
	if (!t || t->src != src || t->opt != opt || t->fd < 0)
		goto out;
	if (fstat(t->fd, &st) < 0 || st.st_size < HDR + 1 || pread_full(t->fd, h, HDR, 0) < 0)
		goto out;
	if (check_header(h, sn) < 0) {
		log_debug(LOG_CAT_CACHE, "pyc for \"%s\": header does not match the source, refused",
			  newname);
		goto out;
	}
	/* store with a zeroed mtime field: served patched with each node's mtime */
	static const uint8_t zero[4];
	if (pwrite(t->fd, zero, 4, 8) != 4)
		goto out;
	fchmod(t->fd, 0444);
	char *sp = store_path(p, src, opt);
	char *dir = xstrndup(sp, (size_t)(strrchr(sp, '/') - sp));
	mkdir_p(dir, 0755);
	free(dir);
	bool linked = link(t->path, sp) == 0;
	if (!linked && errno == EEXIST) {
		/* first writer wins, unless the stored one is for another magic */
		uint8_t old[4];
		int ofd = open(sp, O_RDONLY | O_CLOEXEC);
		if (ofd >= 0 && pread_full(ofd, old, 4, 0) == 0 && memcmp(old, h, 4) != 0)
			linked = rename(t->path, sp) == 0;
		if (ofd >= 0)
			close(ofd);
	}
	free(sp);
	/* No fd is kept (32 processes compiling at once would hold one per
	 * pyc each): a loser of the race keeps its own file in tmp/ (removed at
	 * unmount) and is opened by path, like the store file. */
	close(t->fd);
	t->fd = -1;
	if (linked) {
		unlink(t->path);
		free(t->path);
		t->path = NULL;
	}
	free(t->name);
	t->name = NULL;
	t->renamed = true;
	r = 0;
	profile_note_pyc(p->ctx->profile); /* a profile carries it at its next write */
out:
	pthread_mutex_unlock(&p->lock);
	fuse_reply_err(req, -r);
	if (r == 0) {
		/* the temp's inode now serves the pyc: the next process reads it
		 * from the page cache (its writes went around it, direct_io) */
		atomic_store(&t->pushed, true);
		push_open(p, 5 * tn(p) + 1 + k, src);
	}
}

/* An O_RDONLY descriptor on the bytes of pyc inode ino, or -errno. */
static int open_fd(struct pyc *p, fuse_ino_t ino)
{
	uint64_t idx;
	enum pyc_kind k = pyc_classify(p, ino, &idx);
	if (k == PYC_DIR)
		return -EISDIR;
	uint32_t src = (uint32_t)(idx / 3);
	uint8_t opt = (uint8_t)(idx % 3);
	char *sp = NULL;
	if (k == PYC_TMP) {
		struct pyc_tmp *t = tmp_get(p, idx);
		if (!t || t->gone || !t->renamed)
			return t && !t->gone ? -EACCES : -ENOENT;
		src = t->src;
		opt = t->opt;
		/* path is set once at create and cleared only before renamed */
		if (t->path)
			sp = xstrdup(t->path);
	}
	if (!sp)
		sp = store_path(p, src, opt);
	int fd = open(sp, O_RDONLY | O_CLOEXEC);
	free(sp);
	/* a source used through its pyc (one compiled ahead, say) is never
	 * read: the profile names it too, so that it carries the pyc (empty
	 * sources are never named: their one pyc always goes with the file) */
	if (fd >= 0 && p->ctx->tree->nodes[src].size > 0) {
		profile_note(p->ctx->profile, src);
		/* one compiled ahead was filled here, as a neighbour: what it
		 * imports is prefetched as if it had been read (a warm mount's
		 * sources are not scanned again) */
		if (compile_done(p->ctx->compile, src))
			ahead_note(p->ctx->ahead, src);
	}
	return fd < 0 ? -ENOENT : fd;
}

void pyc_open(struct pyc *p, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		uint64_t idx;
		fuse_reply_err(req, pyc_classify(p, ino, &idx) == PYC_DIR ? EISDIR : EROFS);
		return;
	}
	int fd = open_fd(p, ino);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	fi->fh = (uint64_t)fd;
	if (fuse_reply_open(req, fi) == -ENOENT)
		close(fd);
}

void pyc_read(struct pyc *p, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int fd)
{
	uint64_t idx;
	enum pyc_kind k = pyc_classify(p, ino, &idx);
	uint32_t src = (uint32_t)(idx / 3);
	if (k == PYC_TMP) {
		struct pyc_tmp *t = tmp_get(p, idx);
		if (!t) {
			fuse_reply_err(req, EIO);
			return;
		}
		src = t->src;
	}
	if (off < 0 || k == PYC_DIR) {
		fuse_reply_err(req, EIO);
		return;
	}
	int own = -1; /* no handle (no-open mode): a descriptor for this read */
	if (fd < 0) {
		own = fd = open_fd(p, ino);
		if (fd < 0) {
			fuse_reply_err(req, -fd);
			return;
		}
	}
	size = MIN(size, (size_t)PYC_MAX);
	char *buf = xmalloc(size ? size : 1);
	ssize_t n = pread(fd, buf, size, off);
	int err = errno;
	if (own >= 0)
		close(own);
	if (n < 0) {
		fuse_reply_err(req, err);
		free(buf);
		return;
	}
	patch_mtime(p, src, buf, off, (size_t)n);
	fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

void pyc_release(struct pyc *p, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (fi->fh != UINT64_MAX)
		close((int)fi->fh);
}

/* --- the profile's pycs (profile.c) --------------------------------------- */

const char *pyc_tag(const struct pyc *p)
{
	return p->tag;
}

bool pyc_stored_magic(const struct pyc *p, const uint8_t hdr[4])
{
	return p->have_magic && memcmp(hdr, p->magic, 4) == 0;
}

/* A stored-form pyc (mtime field zero) this interpreter would load for
 * source node src: its magic, flags 0 (timestamp-based), the source's size. */
static bool stored_form_ok(const struct pyc *p, const struct tree_node *sn, const uint8_t *h,
			   size_t len)
{
	static const uint8_t zero[8];
	uint32_t sz = (uint32_t)h[12] | (uint32_t)h[13] << 8 | (uint32_t)h[14] << 16 |
		      (uint32_t)h[15] << 24;
	return p->have_magic && len > HDR && len <= PYC_MAX && memcmp(h, p->magic, 4) == 0 &&
	       memcmp(h + 4, zero, 8) == 0 && sz == (uint32_t)sn->size;
}

/* src is a .py body with a RECORD hash: the sources pycs exist for. */
static const struct tree_node *source_node(const struct pyc *p, uint32_t src)
{
	const struct tree *t = p->ctx->tree;
	if (src >= t->n)
		return NULL;
	const struct tree_node *sn = &t->nodes[src];
	if (sn->kind != TREE_BODY || !sn->has_sha || !str_endswith(tree_name(t, sn), ".py"))
		return NULL;
	return sn;
}

/* The stored pyc of (src, opt), a regular file (not followed through a
 * link): an fd and its stat, or -errno (-EBADMSG: not a regular file). */
static int store_open(struct pyc *p, uint32_t src, uint8_t opt, struct stat *st)
{
	char *sp = store_path(p, src, opt);
	int fd = open(sp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(sp);
	if (fd < 0)
		return -errno;
	int r = fstat(fd, st) < 0 ? -errno : S_ISREG(st->st_mode) ? 0 : -EBADMSG;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int pyc_load(struct pyc *p, uint32_t src, uint8_t opt, uint8_t **ret, size_t *ret_len)
{
	const struct tree_node *sn = source_node(p, src);
	*ret = NULL;
	if (!sn || opt > 2 || !p->have_magic)
		return -EINVAL;
	struct stat st;
	int fd = store_open(p, src, opt, &st);
	if (fd < 0)
		return fd;
	int r = st.st_size <= HDR || st.st_size > PYC_MAX ? -EBADMSG : 0;
	uint8_t *data = NULL;
	if (r == 0) {
		data = xmalloc((size_t)st.st_size);
		r = pread_full(fd, data, (size_t)st.st_size, 0);
	}
	close(fd);
	if (r == 0 && !stored_form_ok(p, sn, data, (size_t)st.st_size))
		r = -EBADMSG; /* another build's, or not for this source */
	if (r < 0) {
		free(data);
		return r;
	}
	*ret = data;
	*ret_len = (size_t)st.st_size;
	return 0;
}

bool pyc_stored(struct pyc *p, uint32_t src, uint8_t opt)
{
	const struct tree_node *sn = source_node(p, src);
	if (!sn || opt > 2 || !p->have_magic)
		return false;
	uint8_t h[HDR];
	struct stat st;
	int fd = store_open(p, src, opt, &st);
	bool ok = fd >= 0 && pread_full(fd, h, HDR, 0) == 0 &&
		  stored_form_ok(p, sn, h, (size_t)st.st_size);
	if (fd >= 0)
		close(fd);
	return ok;
}

int pyc_seed(struct pyc *p, uint32_t src, uint8_t opt, const uint8_t *data, size_t len)
{
	const struct tree_node *sn = source_node(p, src);
	if (!sn || opt > 2 || !stored_form_ok(p, sn, data, len))
		return -EBADMSG;
	char *sp = store_path(p, src, opt);
	char *dir = xstrndup(sp, (size_t)(strrchr(sp, '/') - sp));
	/* One inode, no temp name: O_TMPFILE in the store's directory, linked
	 * in when written (first writer wins: published files never change,
	 * and a stale magic is Python's to replace); else a cache temp file.
	 * The directory is made only when missing (2012 seeds: no mkdir each). */
	char *tmp = NULL;
	int r = 0, fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0444);
	if (fd < 0 && errno == ENOENT && mkdir_p(dir, 0755) == 0)
		fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0444);
	if (fd < 0) {
		mkdir_p(dir, 0755);
		fd = cache_tmpfile(p->ctx->cache, &tmp);
	}
	free(dir);
	if (fd < 0) {
		free(sp);
		return fd; /* cache_tmpfile's -errno */
	}
	r = write_full(fd, data, len);
	if (r == 0 && fchmod(fd, 0444) < 0)
		r = -errno;
	if (r == 0) {
		if (tmp) {
			r = link(tmp, sp) < 0 ? -errno : 0;
		} else {
			char proc[64];
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
			r = linkat(AT_FDCWD, proc, AT_FDCWD, sp, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
		}
	}
	close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(sp);
	return r;
}
