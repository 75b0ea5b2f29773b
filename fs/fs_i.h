/* fs internals shared by catalog.c, wheel.c, cache.c and ops.c. */
#ifndef SITEFS_FS_I_H
#define SITEFS_FS_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fetch/http.h"
#include "fs/fs.h"
#include "fs/tree.h"

/* --- catalog.c: SQLite store of wheel metadata, keyed by wheel sha256.
 * One struct catalog is one connection: use it from one thread at a time
 * (each thread opens its own).  Rows are immutable once written; several
 * processes may insert the same wheel at once (INSERT OR IGNORE). */
struct catalog;
/* Opens (creating the schema) path.  Returns 0 or -errno with a message. */
int catalog_open(const char *path, struct catalog **ret, char *err, size_t errlen);
struct catalog *catalog_close(struct catalog *c);
/* Loads a wheel's metadata into *ret (caller clears with wheel_meta_clear).
 * Returns 0, -ENOENT if unknown, -EBADMSG if the stored row is corrupt. */
int catalog_get(struct catalog *c, const uint8_t sha[32], uint64_t size, struct wheel_meta *ret);
/* Whether a row for the wheel exists (not whether it is readable). */
bool catalog_has(struct catalog *c, const uint8_t sha[32], uint64_t size);
/* Stores the metadata of the wheels a mount fetched, on a thread of its
 * own: catalog_writer_add hands over one wheel (its tail, malloc'd, is
 * taken; filename and meta are borrowed until the join, and the meta must
 * not change any more), and the rows are compressed as they come; once told
 * there are no more, the thread inserts them all in one transaction, then
 * closes the catalog (taken by catalog_writer_start); the join waits for all
 * of it and frees what was taken.  Failures are logged
 * warnings: the next mount fetches again. */
struct catalog_item {
	uint8_t key[32]; /* the catalog key: wheel_catalog_key */
	const char *filename;
	uint64_t size;
	uint8_t *tail; /* bytes [size - tail_len, size): central directory and end records */
	size_t tail_len;
	const struct wheel_meta *meta;
};
struct catalog_writer;
struct catalog_writer *catalog_writer_start(struct catalog *c);
void catalog_writer_add(struct catalog_writer *w, const struct catalog_item *it);
/* No more rows: the thread inserts them now. */
void catalog_writer_finish(struct catalog_writer *w);
/* catalog_writer_finish, then returns once the rows are committed (the
 * catalog may still be closing). */
void catalog_writer_wait(struct catalog_writer *w);
struct catalog_writer *catalog_writer_join(struct catalog_writer *w);

/* --- wheel.c: reading byte ranges of a wheel, wherever it is. */
struct wheel_src {
	const struct fs_wheel *spec;
	uint8_t key[32]; /* catalog key: wheel_catalog_key(spec) */
	struct wheel_meta meta;
	char *local_path; /* whole wheel in the cache (or the lock's local path), or NULL */
	pthread_mutex_t lock; /* protects local_path and full_fetch below */
	bool full_fetch;      /* the server ignores Range: whole-wheel download done or going */
	uint32_t *entry_node; /* cd entry -> tree node (UINT32_MAX: none); set after tree_build */
};

struct fs_ctx {
	struct fs_config cfg;
	char *cache_dir;
	struct http_engine *http;
	struct wheel_src *wheels;
	struct tree_wheel *twheels;
	struct tree *tree;
	struct cache *cache;
	struct pyc *pyc; /* NULL: no bytecode store (read-only __pycache__-less tree) */
	struct async *async; /* while serving: the fill pool (async.c) */
	struct fuse_session *se; /* while serving (pyc.c pushes pages with it) */
	struct nodefd *nodefd; /* while serving without open requests (ops.c), else NULL */
	bool open_requests;    /* SITEFS_OPEN_REQUESTS=1: keep open/release (ops.c) */
	unsigned fill_timeout_s; /* SITEFS_FILL_TIMEOUT: a fill's deadline base (0: none) */
	uint64_t stream_min;     /* SITEFS_STREAM_MIN: bodies this big are streamed (0: never) */
	struct profile *profile; /* NULL: no --profile */
	struct compile *compile; /* NULL: no compile ahead (compile.c) */
	struct ahead *ahead;  /* NULL: no import-graph prefetch */
	struct fs_prepare_stats stats;
	struct catalog_writer *catalog_writer; /* rows of this mount's misses, until joined */
};

/* Metadata read by range requests cannot be checked against the lock's
 * sha256 (that needs the whole file), so the catalog keys it by the wheel's
 * sha256 *and* where it came from: a lock that pairs a known sha256 with
 * another URL cannot plant its files under the real wheel's key. */
void wheel_catalog_key(const uint8_t sha[32], const char *url, uint8_t ret[32]);
/* Length of the first metadata request of a wheel of size bytes. */
uint64_t wheel_tail_len(uint64_t size);

/* Tails asked for before the wheels are known for sure (fs_early_start):
 * every remote wheel of specs not in the catalog (cat NULL: a new cache).  wheel_load_all takes the
 * ones it needs; wheel_prefetch_free cancels the rest. */
struct wheel_prefetch;
struct wheel_prefetch *wheel_prefetch_start(struct http_engine *http, struct cache *cache,
					    struct catalog *cat, const struct fs_wheel *specs,
					    size_t n);
struct wheel_prefetch *wheel_prefetch_free(struct wheel_prefetch *pf);
/* Loads metadata for all wheels (catalog first, then parallel range
 * requests, using pf's tails where they match), filling ctx->wheels[i].meta.
 * Takes cat (NULL: opens the catalog itself).  Returns 0 or -errno + message. */
int wheel_load_all(struct fs_ctx *ctx, struct catalog *cat, struct wheel_prefetch *pf,
		   char *err, size_t errlen);
/* Streams bytes [off, off+len) of wheel w to sink.  Uses the local copy when
 * there is one; on a server that ignores Range, downloads the whole wheel
 * once into the cache (verified against the lock's sha256) and reads from
 * it.  Returns 0 or -errno with a reason in err. */
int wheel_read(struct fs_ctx *ctx, struct wheel_src *w, uint64_t off, uint64_t len,
	       http_sink_fn sink, void *ud, char *err, size_t errlen);
/* The same, given up at deadline_ns (now_ns() clock; 0: never) with
 * -ETIMEDOUT: the request is cancelled in the engine. */
int wheel_read_by(struct fs_ctx *ctx, struct wheel_src *w, uint64_t off, uint64_t len,
		  http_sink_fn sink, void *ud, uint64_t deadline_ns, char *err, size_t errlen);

/* --- body.c */
struct cache_stream;
/* The cache key of BODY node i: its RECORD sha256, or sha256(wheel sha256 ||
 * entry name) when RECORD has none (*ret_verified false). */
void body_key(const struct fs_ctx *ctx, uint32_t i, uint8_t key[32], bool *ret_verified);
struct cache_claim;
/* The neighbours a fill of BODY node i would bring along (its run, the
 * target's own slot included, never claimed), to pass to cache_begin:
 * returns their number (0: none) and *ret (caller frees; NULL when 0). */
size_t body_claims(struct fs_ctx *ctx, uint32_t i, struct cache_claim **ret);
/* The fill of BODY node i after cache_begin said CACHE_FILL (with the
 * claims body_claims gave and cache_begin took, and stream s, or NULL and
 * no claims): cache_fill with the body's fetch, inflate and checks, bounded
 * by the fill deadline.  Returns fd on the body or -errno. */
int body_fill(struct fs_ctx *ctx, uint32_t i, struct cache_claim *claims, size_t nclaims,
	      struct cache_stream *s);

/* --- cache.c: content-addressed body store with single-flight fills. */
struct cache;
int cache_open(const char *dir, struct cache **ret);
struct cache *cache_close(struct cache *c);
/* Fills a temp fd with the verified body; returns 0 or -errno. */
typedef int (*cache_fill_fn)(void *ud, int fd);
/* A body that will ride along a fill (a neighbour in the same request). */
struct cache_claim {
	uint8_t key[32];
	bool verified;
	uint64_t size;
	bool claimed; /* set by cache_get: in flight for this fill */
};
/* Returns an O_RDONLY fd on the body with this key and size, calling fill
 * (in this thread) on a miss; concurrent callers for one key wait for the
 * single fill.  Returns fd or -errno (the filler's error for all waiters).
 * claims: bodies the fill will bring along.  A caller that becomes the
 * filler claims, in the same step as key, those neither published nor in
 * flight (claimed = true): a concurrent opener of one of them then waits
 * for this fill instead of starting its own.  fill calls cache_publish for
 * each claimed one; cache_get gives up any it left. */
int cache_get(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
	      struct cache_claim *claims, size_t nclaims, cache_fill_fn fill, void *ud);

/* The asynchronous form.  A waiter is called exactly once, on the thread
 * that ends the fill, without locks held, with an fd on the published body
 * (the waiter's to close) or -errno; -EAGAIN: the fill was given up (a
 * neighbour's), begin again. */
struct cache_waiter {
	void (*done)(struct cache_waiter *w, int fd);
	struct cache_waiter *next;
};
struct cache_stream;
enum cache_begin {
	CACHE_HIT,    /* *ret_fd: fd on the published body, or -errno (not -ENOENT) */
	CACHE_FILL,   /* the caller fills it now: cache_fill, exactly once */
	CACHE_WAIT,   /* w is queued on the fill in flight */
	CACHE_STREAM, /* a streamed fill is in flight: *ret_stream (caller unrefs) */
};
/* claims as for cache_get: taken (claimed = true) only on CACHE_FILL, in
 * the same step as key; cleared otherwise.  A waiter is called with -EAGAIN
 * too when the body was published but vanished before it could open it. */
enum cache_begin cache_begin(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
			     struct cache_claim *claims, size_t nclaims, struct cache_waiter *w,
			     int *ret_fd, struct cache_stream **ret_stream);
/* The fill of a CACHE_FILL: looks for the body again (a fill that ended
 * since the miss), else fills, verifies and publishes; gives up the claims
 * fill left, ends stream s (or NULL) and then calls every waiter.  Returns
 * an fd on the file it published (or found) or -errno. */
int cache_fill(struct cache *c, const uint8_t key[32], bool verified, uint64_t size,
	       struct cache_claim *claims, size_t nclaims, cache_fill_fn fill, void *ud,
	       struct cache_stream *s);

/* Streams: made by the filler after CACHE_FILL, before cache_fill.  Returns
 * the caller's reference; later cache_begin callers get their own. */
struct cache_stream *cache_stream_new(struct cache *c, const uint8_t key[32], bool verified,
				      uint64_t size);
struct cache_stream *cache_stream_ref(struct cache_stream *s);
struct cache_stream *cache_stream_unref(struct cache_stream *s);
/* A reader of bytes [0, end): called once, without locks, with the stream's
 * fd (valid during the call; read with pread/splice) or -EIO. */
struct cache_stream_reader {
	uint64_t start, end;
	void (*done)(struct cache_stream_reader *rd, int fd);
	void *ud;
	struct cache_stream_reader *next;
};
/* Returns the fd when [0, rd->end) is readable now, -EIO when the fill
 * failed, or -EINPROGRESS: rd is queued (it holds a reference until done). */
int cache_stream_read(struct cache_stream *s, struct cache_stream_reader *rd);
/* The fill wrote n more bytes (answers the readers they cover). */
void cache_stream_advance(struct cache_stream *s, uint64_t n);
/* The fill ended (0: verified and published): answers every reader. */
void cache_stream_end(struct cache_stream *s, int result);
/* Called by cache_stream_end of a failed fill, after later reads fail and
 * before the pending readers are answered, with the lowest offset a pending
 * reader wants (UINT64_MAX: none). */
typedef void (*cache_stream_fail_fn)(void *ud, struct cache_stream *s, uint64_t below);
void cache_stream_on_fail(struct cache_stream *s, cache_stream_fail_fn fn, void *ud);
/* 0 or -errno once ended, -EINPROGRESS before. */
int cache_stream_result(struct cache_stream *s);
/* Opaque tags remembered for whoever ends the stream (inode numbers). */
void cache_stream_tag(struct cache_stream *s, uint64_t tag);
size_t cache_stream_tags(struct cache_stream *s, uint64_t **ret);

/* Like cache_get without filling: fd on the published body, -ENOENT on a miss. */
int cache_peek(struct cache *c, const uint8_t key[32], bool verified, uint64_t size);
/* Claims a body for a fill that is not a cache_get (the profile replay):
 * true (cl->claimed) if it was neither published nor in flight; the caller
 * must then cache_publish it. */
bool cache_claim(struct cache *c, struct cache_claim *cl);
/* Publishes a claimed body of cl->size bytes (data NULL: gives the claim
 * up; waiters then fill it themselves), wakes its waiters, clears
 * cl->claimed. */
void cache_publish(struct cache *c, struct cache_claim *cl, const void *data);
/* Where whole wheels go: "<dir>/wheels/<hex>.whl" (caller frees). */
char *cache_wheel_path(struct cache *c, const uint8_t sha[32]);
/* A new temp file in the cache's tmp dir: returns fd and *ret_path (caller frees). */
int cache_tmpfile(struct cache *c, char **ret_path);

/* --- pyc.c: the writable __pycache__ over a shared bytecode store (see the
 * DESIGN note there).  Handlers reply exactly once. */
#include <fuse_lowlevel.h>
struct pyc;
enum pyc_kind { PYC_NONE, PYC_DIR, PYC_FILE, PYC_TMP };
struct pyc *pyc_new(struct fs_ctx *ctx);
struct pyc *pyc_free(struct pyc *p);
/* What ino names beyond the tree's nodes; *ret_idx is its index in that space. */
enum pyc_kind pyc_classify(const struct pyc *p, fuse_ino_t ino, uint64_t *ret_idx);
/* Inode of the __pycache__ of directory node d, or -1 if d has no sources. */
int64_t pyc_dir_ino(const struct pyc *p, uint32_t d);
void pyc_lookup(struct pyc *p, fuse_req_t req, uint64_t d, const char *name);
void pyc_getattr(struct pyc *p, fuse_req_t req, fuse_ino_t ino);
void pyc_setattr(struct pyc *p, fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set);
void pyc_mkdir(struct pyc *p, fuse_req_t req, uint32_t d, const char *name);
void pyc_create(struct pyc *p, fuse_req_t req, uint64_t d, const char *name, mode_t mode,
		struct fuse_file_info *fi);
void pyc_write(struct pyc *p, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	       off_t off);
void pyc_unlink(struct pyc *p, fuse_req_t req, uint64_t d, const char *name);
void pyc_rename(struct pyc *p, fuse_req_t req, uint64_t d, const char *name, uint64_t nd,
		const char *newname, unsigned int flags);
void pyc_open(struct pyc *p, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* fd: the open's descriptor, or -1 without one (no-open mode) */
void pyc_read(struct pyc *p, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int fd);
void pyc_release(struct pyc *p, fuse_ino_t ino, struct fuse_file_info *fi);
/* Pyc inode ino was opened (Python's isatty ioctl right after its open):
 * the first time, its bytes are pushed into the kernel's page cache, so the
 * read that follows is no request. */
void pyc_opened(struct pyc *p, fuse_ino_t ino);
/* For profiles.  A stored pyc is in its stored form: mtime field zero. */
const char *pyc_tag(const struct pyc *p);
/* true if hdr starts with this interpreter's magic number (known). */
bool pyc_stored_magic(const struct pyc *p, const uint8_t hdr[4]);
/* The stored pyc of source node src at level opt, if this interpreter would
 * load it (its magic, flags 0, the source's size): 0 and *ret (caller
 * frees), -ENOENT, -EBADMSG (another build's), -errno. */
int pyc_load(struct pyc *p, uint32_t src, uint8_t opt, uint8_t **ret, size_t *ret_len);
/* true if pyc_load would succeed (reads the header only). */
bool pyc_stored(struct pyc *p, uint32_t src, uint8_t opt);
/* Publishes data (stored form) as the pyc of src at level opt after the
 * checks pyc_load makes (src a .py body with a RECORD hash): 0, -EEXIST
 * (one is stored already: kept), -EBADMSG (refused), -errno. */
int pyc_seed(struct pyc *p, uint32_t src, uint8_t opt, const uint8_t *data, size_t len);

/* --- compile.c: compile ahead — sources a fill brought along are compiled
 * into the bytecode store before Python asks (see the DESIGN note there). */
struct compile;
/* NULL when off (SITEFS_COMPILE_AHEAD=0, no store, no magic number).
 * Nothing runs until the first compile_lookup_miss. */
struct compile *compile_new(struct fs_ctx *ctx);
/* After the session loop, before the unmount: answers the lookups it
 * holds, ends the compiler process and joins the thread; later calls of
 * the hooks do nothing.  Accepts NULL. */
void compile_stop(struct compile *c);
struct compile *compile_free(struct compile *c);
/* A fill published source node src along with the body it was asked for:
 * compile it ahead.  Never blocks (drops it when behind).  Accepts NULL. */
void compile_note(struct compile *c, uint32_t src);
/* Whether this mount's compile ahead took src (a neighbour filled here). */
bool compile_done(struct compile *c, uint32_t src);
enum compile_miss {
	COMPILE_MISS,  /* reply ENOENT: Python compiles it (and compile.c will not) */
	COMPILE_HELD,  /* being compiled: req is answered by pyc_lookup once it is done */
	COMPILE_AGAIN, /* compiled since: look again */
};
/* pyc_lookup found no pyc of src at level opt (in directory d, as name). */
enum compile_miss compile_lookup_miss(struct compile *c, uint32_t src, uint8_t opt,
				      fuse_req_t req, uint64_t d, const char *name);

/* --- async.c: the fill pool behind op_open, and reads of streamed bodies
 * (see the DESIGN note there).  Every function replies exactly once. */
struct async;
/* fh of an open streamed body: this bit set, the rest async.c's handle. */
#define FH_STREAM (1ull << 63)
struct async *async_new(struct fs_ctx *ctx, struct fuse_session *se, unsigned max_threads);
/* After the session loop: later opens get EIO and no kernel page is dropped. */
void async_stop(struct async *a);
/* Answers queued opens with EIO and joins the threads (cancel the fetch
 * engine first, so that running fills end at once). */
struct async *async_free(struct async *a);
/* Open of BODY node `node` (inode ino) that is not in the cache. */
void async_open(struct async *a, fuse_req_t req, fuse_ino_t ino, uint32_t node,
		struct fuse_file_info *fi);
/* Read / release of an FH_STREAM handle. */
void async_read(fuse_req_t req, uint64_t fh, size_t size, off_t off);
void async_release(struct async *a, uint64_t fh);

/* Read of BODY node `node` (inode ino) without an open handle (no-open
 * mode) that is not in the cache: answered once the fill has the bytes;
 * the fd is installed in ctx->nodefd. */
void async_read_node(struct async *a, fuse_req_t req, fuse_ino_t ino, uint32_t node,
		     size_t size, off_t off);
/* A tree inode was written through a shared writable mapping (the write
 * got EROFS): its pages are dropped off the workers' threads. */
void async_inval(struct async *a, fuse_ino_t ino);

/* --- nodefd.c: one descriptor per body for reads without open handles
 * (see the DESIGN note there).  Thread-safe. */
struct nodefd;
struct nodefd *nodefd_new(uint32_t n, unsigned max);
struct nodefd *nodefd_free(struct nodefd *t);
/* The descriptor of node i, or -1. */
int nodefd_get(struct nodefd *t, uint32_t i);
/* Installs fd (taken) for node i; returns the descriptor to read from: fd,
 * or the one another reader installed first.  *ret_owned: the table is
 * full, the caller closes the returned fd after its reply. */
int nodefd_put(struct nodefd *t, uint32_t i, int fd, bool *ret_owned);
/* A fill of node i failed: its reads get EIO for a moment (nodefd_held). */
void nodefd_failed(struct nodefd *t, uint32_t i);
bool nodefd_held(struct nodefd *t, uint32_t i);

/* --- budget.c: bytes in flight under a bound, for background fetchers
 * (see the DESIGN note there).  Thread-safe. */
struct budget {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t max, used, peak; /* protected by lock */
	bool stopping;
};
void budget_init(struct budget *b, uint64_t max);
void budget_destroy(struct budget *b);
/* Waits until need more bytes fit (or nothing else is in flight): true, or
 * false once stopped (then nothing was taken). */
bool budget_take(struct budget *b, uint64_t need);
void budget_give(struct budget *b, uint64_t need);
/* Takers get false from now on; waiting ones are woken. */
void budget_stop(struct budget *b);
uint64_t budget_peak(struct budget *b);

/* --- profile.c: --profile FILE (see the DESIGN note there). */
struct profile;
/* Loads path (a missing, unreadable or corrupt file is a warning, never an
 * error) and starts the replay of its bodies in the background. */
struct profile *profile_open(struct fs_ctx *ctx, const char *path);
/* Stops the replay (joins it: the fills it ran have answered their
 * waiters). Accepts NULL; profile_close does it too. */
void profile_stop(struct profile *p);
/* Stops the replay and writes what this mount opened. Accepts NULL. */
struct profile *profile_close(struct profile *p);
/* Records that tree node i (a body) was opened. Accepts p == NULL. */
void profile_note(struct profile *p, uint32_t i);
/* A pyc was published in the store (the next write looks for new ones). */
void profile_note_pyc(struct profile *p);

/* --- ahead.c: the import-graph prefetch (see the DESIGN note there). */
struct ahead;
/* NULL when SITEFS_IMPORT_AHEAD=0 (or the tree has no site-packages). */
struct ahead *ahead_new(struct fs_ctx *ctx);
/* BODY node i was opened (op_open: hit or miss) or filled for an opener
 * (body_fill): a source is scanned once, and what it imports fetched in the
 * background.  Cheap (a CAS, a queue push); accepts a == NULL. */
void ahead_note(struct ahead *a, uint32_t i);
/* Ends the prefetch: call once the engine's requests are cancelled and
 * before the fill pool is freed (joins its threads).  Accepts NULL. */
void ahead_stop(struct ahead *a);
/* Frees it once no fill can end any more (after the profile). */
struct ahead *ahead_free(struct ahead *a);

/* --- ops.c */
const struct fuse_lowlevel_ops *ops_get(void);

#endif
