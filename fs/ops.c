/* ops: the FUSE low-level handlers and the session loop.
 *
 * The tree is immutable for the life of the mount, so the kernel is told to
 * cache everything for a long time: entries, attributes, negative lookups
 * (imports probe many missing names), symlinks and page-cache contents
 * (keep_cache).  Inode numbers are node index + 1; forget is a no-op.
 * open and opendir are answered ENOSYS once where the kernel supports it:
 * it then opens by itself, fills start at a body's first read, and reads
 * are served from one descriptor per body (nodefd.c).
 * Bodies are served from cache files with fd-backed buffers (splice).
 * Every handler replies exactly once.  Writes fail with EROFS, except
 * Python's bytecode writes inside the virtual __pycache__ directories,
 * which pyc.c validates and keeps in the cache (inodes past the tree's). */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define TIMEOUT 86400.0 * 365 /* the tree never changes while mounted */
#define NO_FH UINT64_MAX

/* Request counters, per operation (benchmarks: FUSE ops per opened file).
 * Written as JSON to $SITEFS_STATS_FILE when the session ends. */
enum op_id {
	OP_LOOKUP, OP_GETATTR, OP_READLINK, OP_OPENDIR, OP_READDIR, OP_READDIRPLUS, OP_OPEN,
	OP_READ, OP_RELEASE, OP_STATFS, OP_CREATE, OP_WRITE, OP_RENAME, OP_UNLINK, OP_MKDIR,
	OP_SETATTR, OP_IOCTL, OP_OTHER, OP_MAX
};
static const char *const op_names[OP_MAX] = {
	"lookup", "getattr", "readlink", "opendir", "readdir", "readdirplus", "open",
	"read", "release", "statfs", "create", "write", "rename", "unlink", "mkdir",
	"setattr", "ioctl", "other",
};
static _Atomic uint64_t op_count[OP_MAX];
/* Set by op_init, before the kernel sends any other request. */
static bool no_opendir;
static bool no_open; /* then ctx->nodefd serves the reads (see op_open) */
#define COUNT(op) atomic_fetch_add_explicit(&op_count[op], 1, memory_order_relaxed)

static struct fs_ctx *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ino -> node index, or -1 if out of range. */
static int64_t node_of(const struct fs_ctx *ctx, fuse_ino_t ino)
{
	if (ino < 1 || ino > ctx->tree->n)
		return -1;
	return (int64_t)ino - 1;
}

/* Inodes past the tree's belong to the bytecode store (pyc.c). */
static enum pyc_kind pyc_kind_of(const struct fs_ctx *ctx, fuse_ino_t ino, uint64_t *ret_idx)
{
	if (!ctx->pyc || ino <= ctx->tree->n)
		return PYC_NONE;
	return pyc_classify(ctx->pyc, ino, ret_idx);
}

static void fill_attr(const struct fs_ctx *ctx, uint32_t i, struct stat *st)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	memset(st, 0, sizeof(*st));
	st->st_ino = i + 1;
	st->st_mode = nd->mode;
	st->st_nlink = 1; /* unknown subdir count: keeps find(1) from guessing */
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = (off_t)nd->size;
	st->st_blksize = 128 * 1024;
	st->st_blocks = (blkcnt_t)((nd->size + 511) / 512);
	st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = nd->mtime;
}

/* Descriptors the body table may keep: half of the limit fs_serve raised,
 * the rest for cache fills, the catalog and fetches. */
static unsigned node_fd_max(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return 1 << 16;
	return rl.rlim_cur / 2 > (1u << 20) ? 1u << 20 : (unsigned)(rl.rlim_cur / 2);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO; /* always plus: it fills the entry cache */
	conn->max_readahead = conn->max_readahead ? conn->max_readahead : 1 << 20;
	/* Directories never change (a __pycache__ lists only "." and ".."), so
	 * opendir has nothing to decide: answering it ENOSYS once makes the
	 * kernel skip opendir and releasedir from then on and cache listings
	 * (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR), two requests less per listing. */
	no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	/* Likewise for files: an ENOSYS to the first open makes the kernel
	 * open every file itself (FOPEN_KEEP_CACHE, fh 0) and send neither
	 * open nor release, two of the three requests a warm import makes per
	 * file (open, Python's isatty ioctl, release).  Fills then start at
	 * the first read, and reads are served from one descriptor per body
	 * (nodefd.c). */
	struct fs_ctx *ctx = userdata;
	no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) && !ctx->open_requests;
	if (no_open)
		ctx->nodefd = nodefd_new(ctx->tree->n, node_fd_max());
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	COUNT(OP_LOOKUP);
	struct fs_ctx *ctx = ctx_of(req);
	struct fuse_entry_param e = {.attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT};
	uint64_t pd;
	if (pyc_kind_of(ctx, parent, &pd) == PYC_DIR) {
		pyc_lookup(ctx->pyc, req, pd, name);
		return;
	}
	int64_t p = node_of(ctx, parent);
	if (p < 0 || ctx->tree->nodes[p].kind != TREE_DIR) {
		fuse_reply_err(req, p < 0 ? ESTALE : ENOTDIR);
		return;
	}
	int64_t i = tree_lookup(ctx->tree, (uint32_t)p, name);
	if (i >= 0) {
		e.ino = (fuse_ino_t)i + 1;
		fill_attr(ctx, (uint32_t)i, &e.attr);
	} else if (ctx->pyc && strcmp(name, "__pycache__") == 0) {
		int64_t d = pyc_dir_ino(ctx->pyc, (uint32_t)p);
		if (d >= 0) {
			e.ino = (fuse_ino_t)d;
			e.attr.st_ino = e.ino;
			e.attr.st_mode = S_IFDIR | 0755;
			e.attr.st_nlink = 1;
			e.attr.st_uid = getuid();
			e.attr.st_gid = getgid();
			e.attr.st_mtime = ctx->tree->nodes[p].mtime;
		}
	}
	/* ino 0 with a timeout is a cached negative entry */
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(OP_GETATTR);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (pyc_kind_of(ctx, ino, &px) != PYC_NONE) {
		pyc_getattr(ctx->pyc, req, ino);
		return;
	}
	int64_t i = node_of(ctx, ino);
	if (i < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	struct stat st;
	fill_attr(ctx, (uint32_t)i, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	COUNT(OP_READLINK);
	struct fs_ctx *ctx = ctx_of(req);
	int64_t i = node_of(ctx, ino);
	if (i < 0 || ctx->tree->nodes[i].kind != TREE_LINK) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_readlink(req, ctx->tree->strings + ctx->tree->nodes[i].link.target);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(OP_OPENDIR);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (no_opendir) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (pyc_kind_of(ctx, ino, &px) == PYC_DIR) {
		fuse_reply_open(req, fi); /* lists only "." and "..": not cached */
		return;
	}
	int64_t i = node_of(ctx, ino);
	if (i < 0 || ctx->tree->nodes[i].kind != TREE_DIR) {
		fuse_reply_err(req, i < 0 ? ESTALE : ENOTDIR);
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct fs_ctx *ctx = ctx_of(req);
	const struct tree *t = ctx->tree;
	uint64_t px;
	if (pyc_kind_of(ctx, ino, &px) == PYC_DIR) {
		/* the store's names are not listed (Python never asks) */
		char *b = xmalloc(size);
		size_t used = 0;
		struct stat st = {.st_ino = ino, .st_mode = S_IFDIR};
		for (off_t o = off; o < 2; o++) {
			const char *nm = o == 0 ? "." : "..";
			st.st_ino = o == 0 ? ino : px + 1;
			size_t n = fuse_add_direntry(req, b + used, size - used, nm, &st, o + 1);
			if (n > size - used)
				break;
			used += n;
		}
		fuse_reply_buf(req, b, used);
		free(b);
		return;
	}
	int64_t d = node_of(ctx, ino);
	if (d < 0 || t->nodes[d].kind != TREE_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	const struct tree_node *dn = &t->nodes[d];
	char *buf = xmalloc(size);
	size_t used = 0;
	/* offsets: 0 ".", 1 "..", k+2 the k-th child */
	for (uint64_t o = (uint64_t)off; o < (uint64_t)dn->dir.count + 2; o++) {
		uint32_t i;
		const char *name;
		if (o == 0) {
			i = (uint32_t)d, name = ".";
		} else if (o == 1) {
			i = dn->parent, name = "..";
		} else {
			i = t->children[dn->dir.first + (o - 2)];
			name = tree_name(t, &t->nodes[i]);
		}
		size_t n;
		if (plus) {
			struct fuse_entry_param e = {.attr_timeout = TIMEOUT,
						     .entry_timeout = TIMEOUT};
			fill_attr(ctx, i, &e.attr);
			/* "." and ".." must not create lookup counts */
			e.ino = o < 2 ? 0 : i + 1;
			if (o < 2)
				e.attr.st_ino = i + 1;
			n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						   (off_t)(o + 1));
		} else {
			struct stat st;
			fill_attr(ctx, i, &st);
			n = fuse_add_direntry(req, buf + used, size - used, name, &st,
					      (off_t)(o + 1));
		}
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	COUNT(OP_READDIR);
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	COUNT(OP_READDIRPLUS);
	do_readdir(req, ino, size, off, true);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(OP_OPEN);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (no_open) {
		/* "open them yourself": asked once, then never again (op_init) */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (pyc_kind_of(ctx, ino, &px) != PYC_NONE) {
		pyc_open(ctx->pyc, req, ino, fi);
		return;
	}
	int64_t i = node_of(ctx, ino);
	if (i < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	const struct tree_node *nd = &ctx->tree->nodes[i];
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (nd->kind == TREE_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1; /* nothing to flush: no FLUSH request at close */
	fi->fh = NO_FH;
	if (nd->kind == TREE_BODY && nd->size > 0) {
		/* A cached body is answered here; a miss goes to the fill pool,
		 * which answers it (async.c): no worker waits for the network. */
		profile_note(ctx->profile, (uint32_t)i); /* fs_body_open notes the rest */
		ahead_note(ctx->ahead, (uint32_t)i); /* a source's imports, if not scanned yet */
		uint8_t key[32];
		bool verified;
		body_key(ctx, (uint32_t)i, key, &verified);
		int fd = cache_peek(ctx->cache, key, verified, nd->size);
		if (fd == -ENOENT && ctx->async) {
			async_open(ctx->async, req, ino, (uint32_t)i, fi);
			return;
		}
		if (fd == -ENOENT)
			fd = fs_body_open(ctx, (uint32_t)i);
		if (fd < 0) {
			fuse_reply_err(req, fd == -ENOMEM || fd == -ENOSPC ? -fd : EIO);
			return;
		}
		fi->fh = (uint64_t)fd;
	}
	if (fuse_reply_open(req, fi) == -ENOENT && fi->fh != NO_FH)
		close((int)fi->fh); /* the opener was interrupted */
}

/* Answers a read from fd with an fd-backed buffer (splice). */
static void reply_fd(fuse_req_t req, int fd, size_t size, off_t off)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = fd;
	bv.buf[0].pos = off;
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

/* A read of body node i in no-open mode (size > 0, within the body): from
 * the node's descriptor, else the cache, else a fill (the pool answers). */
static void read_node(struct fs_ctx *ctx, fuse_req_t req, fuse_ino_t ino, uint32_t i,
		      size_t size, off_t off)
{
	int fd = nodefd_get(ctx->nodefd, i);
	bool owned = false;
	if (fd < 0) {
		if (nodefd_held(ctx->nodefd, i)) {
			fuse_reply_err(req, EIO); /* its fill failed a moment ago */
			return;
		}
		profile_note(ctx->profile, i); /* the first read stands for the open */
		ahead_note(ctx->ahead, i);     /* a source's imports, if not scanned yet */
		uint8_t key[32];
		bool verified;
		body_key(ctx, i, key, &verified);
		fd = cache_peek(ctx->cache, key, verified, ctx->tree->nodes[i].size);
		if (fd == -ENOENT) {
			async_read_node(ctx->async, req, ino, i, size, off);
			return;
		}
		if (fd < 0) {
			fuse_reply_err(req, fd == -ENOMEM || fd == -EMFILE || fd == -ENFILE ? -fd : EIO);
			return;
		}
		fd = nodefd_put(ctx->nodefd, i, fd, &owned);
	}
	reply_fd(req, fd, size, off);
	if (owned)
		close(fd);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	COUNT(OP_READ);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (pyc_kind_of(ctx, ino, &px) != PYC_NONE) {
		pyc_read(ctx->pyc, req, ino, size, off,
			 no_open || fi->fh == UINT64_MAX ? -1 : (int)fi->fh);
		return;
	}
	int64_t i = node_of(ctx, ino);
	if (i < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	const struct tree_node *nd = &ctx->tree->nodes[i];
	if (off < 0 || (uint64_t)off >= nd->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size = (size_t)MIN((uint64_t)size, nd->size - (uint64_t)off);
	if (nd->kind == TREE_DATA) {
		fuse_reply_buf(req, (const char *)ctx->tree->blob + nd->data.off + off, size);
		return;
	}
	if (no_open) {
		if (nd->kind != TREE_BODY)
			fuse_reply_err(req, EIO);
		else
			read_node(ctx, req, ino, (uint32_t)i, size, off);
		return;
	}
	if (fi->fh == NO_FH) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (fi->fh & FH_STREAM) {
		async_read(req, fi->fh, size, off);
		return;
	}
	reply_fd(req, (int)fi->fh, size, off);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(OP_RELEASE);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (pyc_kind_of(ctx, ino, &px) != PYC_NONE) {
		pyc_release(ctx->pyc, ino, fi);
		fuse_reply_err(req, 0);
		return;
	}
	if (fi->fh != NO_FH && (fi->fh & FH_STREAM))
		async_release(ctx->async, fi->fh);
	else if (fi->fh != NO_FH)
		close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	COUNT(OP_STATFS);
	struct fs_ctx *ctx = ctx_of(req);
	struct statvfs sv = {
		.f_bsize = 4096,
		.f_frsize = 4096,
		.f_blocks = (ctx->tree->body_bytes + 4095) / 4096,
		.f_files = ctx->tree->n,
		.f_namemax = 255,
		.f_flag = ST_RDONLY,
	};
	fuse_reply_statfs(req, &sv);
}

/* Everything that would change the tree. */
/* Everything that would change the tree fails with EROFS; inside a
 * __pycache__, Python's write-temp-then-rename goes to pyc.c. */
static bool in_pycache(fuse_req_t req, fuse_ino_t parent, uint64_t *ret_d)
{
	return pyc_kind_of(ctx_of(req), parent, ret_d) == PYC_DIR;
}

static void op_erofs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			     struct fuse_file_info *fi)
{
	COUNT(OP_SETATTR);
	uint64_t px;
	if (pyc_kind_of(ctx_of(req), ino, &px) != PYC_NONE) {
		pyc_setattr(ctx_of(req)->pyc, req, ino, attr, to_set);
		return;
	}
	fuse_reply_err(req, EROFS);
}
static void op_erofs_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t d)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m)
{
	COUNT(OP_MKDIR);
	struct fs_ctx *ctx = ctx_of(req);
	int64_t d = node_of(ctx, p);
	if (ctx->pyc && d >= 0) {
		pyc_mkdir(ctx->pyc, req, (uint32_t)d, n);
		return;
	}
	fuse_reply_err(req, EROFS);
}
static void op_erofs_unlink(fuse_req_t req, fuse_ino_t p, const char *n)
{
	COUNT(OP_UNLINK);
	uint64_t d;
	if (in_pycache(req, p, &d)) {
		pyc_unlink(ctx_of(req)->pyc, req, d, n);
		return;
	}
	fuse_reply_err(req, EROFS);
}
static void op_erofs_rmdir(fuse_req_t req, fuse_ino_t p, const char *n)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_symlink(fuse_req_t req, const char *l, fuse_ino_t p, const char *n)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_rename(fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np,
			    const char *nn, unsigned int flags)
{
	COUNT(OP_RENAME);
	uint64_t d, nd;
	if (in_pycache(req, p, &d) && in_pycache(req, np, &nd)) {
		pyc_rename(ctx_of(req)->pyc, req, d, n, nd, nn, flags);
		return;
	}
	fuse_reply_err(req, EROFS);
}
static void op_erofs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nn)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
			    struct fuse_file_info *fi)
{
	COUNT(OP_CREATE);
	uint64_t d;
	if (in_pycache(req, p, &d)) {
		pyc_create(ctx_of(req)->pyc, req, d, n, m, fi);
		return;
	}
	fuse_reply_err(req, EROFS);
}
static void op_erofs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	COUNT(OP_WRITE);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (pyc_kind_of(ctx, ino, &px) == PYC_TMP) {
		pyc_write(ctx->pyc, req, ino, buf, size, off);
		return;
	}
	fuse_reply_err(req, EROFS);
	/* Without open requests a write-open succeeds; write(2) leaves the
	 * pages it touched stale (refetched), but a shared writable mapping's
	 * pages would stay changed in the page cache: drop them. */
	if (no_open && ctx->async)
		async_inval(ctx->async, ino);
}
static void op_erofs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			      const char *value, size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

/* Python 3.11's open() asks isatty() of every file it opens, then reads it:
 * a pyc's pages are pushed into the kernel before the answer (pyc_opened),
 * so that read is no request. */
static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	COUNT(OP_IOCTL);
	struct fs_ctx *ctx = ctx_of(req);
	uint64_t px;
	if (pyc_kind_of(ctx, ino, &px) != PYC_NONE)
		pyc_opened(ctx->pyc, ino);
	fuse_reply_err(req, ENOTTY);
}

/* getxattr/listxattr are left unset: the kernel then caches ENOSYS and stops
 * asking (ls and Python probe security.* attributes otherwise). */
static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.statfs = op_statfs,
	.ioctl = op_ioctl,
	.setattr = op_erofs_setattr,
	.mknod = op_erofs_mknod,
	.mkdir = op_erofs_mkdir,
	.unlink = op_erofs_unlink,
	.rmdir = op_erofs_rmdir,
	.symlink = op_erofs_symlink,
	.rename = op_erofs_rename,
	.link = op_erofs_link,
	.create = op_erofs_create,
	.write = op_erofs_write,
	.setxattr = op_erofs_setxattr,
	.removexattr = op_erofs_removexattr,
};

const struct fuse_lowlevel_ops *ops_get(void)
{
	return &ops;
}

/* Writes the counters and the fetch totals as JSON to $SITEFS_STATS_FILE. */
static void write_stats(struct fs_ctx *ctx)
{
	const char *path = getenv("SITEFS_STATS_FILE");
	if (!path || !*path)
		return;
	FILE *f = fopen(path, "we");
	if (!f) {
		log_warn("cannot write statistics to \"%s\": %m, ignoring", path);
		return;
	}
	struct http_stats hs;
	http_get_stats(ctx->http, &hs);
	fprintf(f, "{\"requests\": %" PRIu64 ", \"wire_bytes\": %" PRIu64 ", \"ops\": {",
		hs.requests, hs.wire_bytes);
	for (int i = 0; i < OP_MAX; i++)
		fprintf(f, "%s\"%s\": %" PRIu64, i ? ", " : "", op_names[i],
			atomic_load(&op_count[i]));
	fprintf(f, "}}\n");
	fclose(f);
}

static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt, va_list ap)
{
	log_vmsg((int)level, fmt, ap);
}

int fs_serve(struct fs_ctx *ctx, const char *mountpoint, const char *fuse_opts, bool debug,
	     int ready_fd)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	int r = -EIO;

	fuse_set_log_func(fuse_log_to_ours);
	/* every open file holds a cache fd until its release: many processes
	 * on one mount need more than the usual soft limit of 1024 */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	fuse_opt_add_arg(&args, "sitefs");
	if (debug)
		fuse_opt_add_arg(&args, "-d");
	/* root mounts serve every user: a shared environment for many workers */
	/* not "ro": __pycache__ takes Python's pyc writes (pyc.c); every other
	 * write is refused by the handlers with EROFS */
	char *o = xasprintf("%sdefault_permissions,fsname=sitefs,subtype=sitefs%s%s%s",
			    ctx->pyc ? "" : "ro,", getuid() == 0 ? ",allow_other" : "", fuse_opts ? "," : "",
			    fuse_opts ? fuse_opts : "");
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, o);
	free(o);

	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), ctx);
	if (!se)
		goto out_args;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, mountpoint) != 0) {
		log_err("cannot mount on \"%s\"", mountpoint);
		goto out_signals;
	}
	if (ready_fd >= 0) {
		if (write(ready_fd, "0", 1) != 1) {
			/* the parent went away: serve anyway */
		}
		close(ready_fd);
		/* now a daemon: the terminal is the parent's again */
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0) {
			dup2(nul, 0), dup2(nul, 1), dup2(nul, 2);
			close(nul);
		}
		log_use_syslog("sitefs");
		if (chdir("/") < 0) {
		}
	}
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(lc, 64);
	fuse_loop_cfg_set_idle_threads(lc, 16);
	/* Opens that need a fill are answered by this pool (async.c): 32
	 * fills at once at most, however many opens wait. */
	ctx->async = async_new(ctx, se, 32);
	ctx->se = se;
	/* > 0: the signal that ended the loop, a clean exit */
	r = fuse_session_loop_mt(se, lc) < 0 ? -EIO : 0;
	fuse_loop_cfg_destroy(lc);
	compile_stop(ctx->compile); /* answers the lookups it holds */
	/* Fills in flight end now (their requests fail with -ECANCELED), their
	 * openers and readers get EIO: all answered before the unmount. */
	async_stop(ctx->async);
	http_cancel(ctx->http, NULL);
	ahead_stop(ctx->ahead); /* its fills answer waiting readers: before async_free */
	profile_stop(ctx->profile); /* so do the replay's */
	ctx->async = async_free(ctx->async);
	ctx->se = NULL;
	fuse_session_unmount(se);
	ctx->nodefd = nodefd_free(ctx->nodefd);
	write_stats(ctx);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_args:
	fuse_opt_free_args(&args);
	return r;
}
