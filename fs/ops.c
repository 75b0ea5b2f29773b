/* ops: the FUSE low-level handlers and the session loop.
 *
 * The tree is immutable for the life of the mount, so the kernel is told to
 * cache everything for a long time: entries, attributes, negative lookups
 * (imports probe many missing names), symlinks and page-cache contents
 * (keep_cache).  Inode numbers are node index + 1; forget is a no-op.
 * Bodies are served from cache files with fd-backed buffers (splice).
 * Every handler replies exactly once.  Writes fail with EROFS (the mount is
 * also "ro", so the kernel usually answers before we are asked). */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
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
	OP_SETATTR, OP_OTHER, OP_MAX
};
static const char *const op_names[OP_MAX] = {
	"lookup", "getattr", "readlink", "opendir", "readdir", "readdirplus", "open",
	"read", "release", "statfs", "create", "write", "rename", "unlink", "mkdir",
	"setattr", "other",
};
static _Atomic uint64_t op_count[OP_MAX];
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
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	COUNT(OP_LOOKUP);
	struct fs_ctx *ctx = ctx_of(req);
	struct fuse_entry_param e = {.attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT};
	int64_t p = node_of(ctx, parent);
	if (p < 0 || ctx->tree->nodes[p].kind != TREE_DIR) {
		fuse_reply_err(req, p < 0 ? ESTALE : ENOTDIR);
		return;
	}
	int64_t i = tree_lookup(ctx->tree, (uint32_t)p, name);
	if (i >= 0) {
		e.ino = (fuse_ino_t)i + 1;
		fill_attr(ctx, (uint32_t)i, &e.attr);
	}
	/* ino 0 with a timeout is a cached negative entry */
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(OP_GETATTR);
	struct fs_ctx *ctx = ctx_of(req);
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
	fi->fh = NO_FH;
	if (nd->kind == TREE_BODY && nd->size > 0) {
		int fd = fs_body_open(ctx, (uint32_t)i);
		if (fd < 0) {
			fuse_reply_err(req, fd == -ENOMEM || fd == -ENOSPC ? -fd : EIO);
			return;
		}
		fi->fh = (uint64_t)fd;
	}
	if (fuse_reply_open(req, fi) == -ENOENT && fi->fh != NO_FH)
		close((int)fi->fh); /* the opener was interrupted */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	COUNT(OP_READ);
	struct fs_ctx *ctx = ctx_of(req);
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
	if (fi->fh == NO_FH) {
		fuse_reply_err(req, EIO);
		return;
	}
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = (int)fi->fh;
	bv.buf[0].pos = off;
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	COUNT(OP_RELEASE);
	if (fi->fh != NO_FH)
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
static void op_erofs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			     struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t d)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_unlink(fuse_req_t req, fuse_ino_t p, const char *n)
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
	fuse_reply_err(req, EROFS);
}
static void op_erofs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nn)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
			    struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}
static void op_erofs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
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
	.setattr = op_erofs_setattr,
	.mknod = op_erofs_mknod,
	.mkdir = op_erofs_mkdir,
	.unlink = op_erofs_unlink,
	.rmdir = op_erofs_unlink,
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
	fuse_opt_add_arg(&args, "sitefs");
	if (debug)
		fuse_opt_add_arg(&args, "-d");
	/* root mounts serve every user: a shared environment for many workers */
	char *o = xasprintf("ro,default_permissions,fsname=sitefs,subtype=sitefs%s%s%s",
			    getuid() == 0 ? ",allow_other" : "", fuse_opts ? "," : "",
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
	/* > 0: the signal that ended the loop, a clean exit */
	r = fuse_session_loop_mt(se, lc) < 0 ? -EIO : 0;
	fuse_loop_cfg_destroy(lc);
	fuse_session_unmount(se);
	write_stats(ctx);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_args:
	fuse_opt_free_args(&args);
	return r;
}
