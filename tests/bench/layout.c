/* layout: the cache-layout study of issue 5.  Small bodies stored as one
 * file each (what fs/cache.c does) against zstd-compressed rows of one
 * SQLite WAL database; docs/benchmarks.md ("Cache layout") has the command
 * and the figures, docs/architecture.md the decision.  Not installed.
 *
 * usage: layout [-m MAX] [-b BATCH] [-t THREADS] [-r RUNS] [-d] SRC WORK
 *   SRC    a directory whose regular files are the bodies (a venv: the
 *          inflated entries of its wheels; __pycache__ is skipped); files of
 *          1..MAX bytes (default 65536), deduplicated by sha256
 *   WORK   emptied, then holds both stores
 *   -b     rows per SQLite transaction (default 1: a fill publishes before
 *          it replies, so a daemon commits per fill)
 *   -t     filling threads (default 1), as the fill pool publishes in
 *          parallel: files need no lock, SQLite has one writer at a time
 *   -r     warm read passes (median reported, default 5)
 *   -d     also read with the page cache dropped (root; drops it for the
 *          whole machine)
 *
 * Reads are by one thread, in a shuffled order.  A publish's latency (what
 * an opener waiting on the fill pays) is reported as median and p99. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"

struct body {
	uint8_t key[32];
	uint8_t *data;
	size_t len;
};

static struct body *bodies;
static size_t nbodies, cap;
static uint64_t max_size = 65536;

static void die(const char *what)
{
	fprintf(stderr, "layout: %s\n", what);
	exit(1);
}

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_D && !strcmp(path + ftw->base, "__pycache__"))
		return FTW_SKIP_SUBTREE;
	if (type != FTW_F || !S_ISREG(st->st_mode) || st->st_size == 0 ||
	    (uint64_t)st->st_size > max_size)
		return FTW_CONTINUE;
	char *data;
	size_t len;
	if (file_read_all(path, &data, &len) < 0)
		return FTW_CONTINUE;
	if (nbodies == cap) {
		cap = cap ? 2 * cap : 1024;
		bodies = xrealloc(bodies, cap * sizeof(*bodies));
	}
	struct body *b = &bodies[nbodies++];
	b->data = (uint8_t *)data;
	b->len = len;
	sha256_buf(data, len, b->key);
	return FTW_CONTINUE;
}

static int by_key(const void *a, const void *b)
{
	return memcmp(((const struct body *)a)->key, ((const struct body *)b)->key, 32);
}

static uint64_t du_total;
static int du(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	du_total += (uint64_t)st->st_blocks * 512;
	return 0;
}

static uint64_t disk_usage(const char *path)
{
	du_total = 0;
	nftw(path, du, 64, FTW_PHYS);
	return du_total;
}

static double ms_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e6;
}

static void drop_caches(void)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd < 0 || write(fd, "3", 1) != 1)
		die("cannot drop the page cache (root?)");
	close(fd);
}

/* --- one file per body: fs/cache.c's publish path ----------------------- */

static char *files_path(const char *dir, const uint8_t key[32])
{
	char hex[65];
	hex_encode(key, 32, hex);
	return xasprintf("%s/bodies/%.2s/%s", dir, hex, hex + 2);
}

/* mkostemp in tmp/, write, 0444, reopen read-only, rename into bodies/. */
static void files_put(const char *dir, const struct body *b)
{
	char *tmp = xasprintf("%s/tmp/fill.XXXXXX", dir), *path = files_path(dir, b->key);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0 || write_full(fd, b->data, b->len) < 0 || fchmod(fd, 0444) < 0)
		die("files: write");
	close(fd);
	int ro = open(tmp, O_RDONLY | O_CLOEXEC);
	*strrchr(path, '/') = 0;
	if (ro < 0 || mkdir_p(path, 0755) < 0)
		die("files: reopen");
	path[strlen(path)] = '/';
	if (rename(tmp, path) < 0)
		die("files: rename");
	close(ro);
	free(tmp);
	free(path);
}

/* What a FUSE open costs the daemon (open_checked: open + fstat; the kernel
 * splices the data later), and with data: the bytes read as well. */
static void files_get(const char *dir, const struct body *b, uint8_t *buf, bool data)
{
	char *path = files_path(dir, b->key);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || (size_t)st.st_size != b->len)
		die("files: open");
	if (data && (pread_full(fd, buf, b->len, 0) < 0 || memcmp(buf, b->data, b->len)))
		die("files: read");
	close(fd);
	free(path);
}

/* --- SQLite: zstd rows in one WAL database ------------------------------- */

struct db {
	sqlite3 *db;
	sqlite3_stmt *put, *get;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	uint8_t *zbuf;
};

static void db_exec(struct db *d, const char *sql)
{
	if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		die(sqlite3_errmsg(d->db));
}

static void db_open(struct db *d, const char *path)
{
	if (sqlite3_open(path, &d->db) != SQLITE_OK)
		die("sqlite: open");
	sqlite3_busy_timeout(d->db, 10000); /* as the catalog */
	db_exec(d, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
		   "CREATE TABLE IF NOT EXISTS body(key BLOB PRIMARY KEY, size INTEGER, data BLOB)");
	if (sqlite3_prepare_v2(d->db, "INSERT OR IGNORE INTO body VALUES (?, ?, ?)", -1, &d->put,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(d->db, "SELECT data FROM body WHERE key = ?", -1, &d->get, NULL) !=
		    SQLITE_OK)
		die(sqlite3_errmsg(d->db));
	d->cctx = ZSTD_createCCtx();
	d->dctx = ZSTD_createDCtx();
	d->zbuf = xmalloc(ZSTD_compressBound(max_size));
}

static void db_close(struct db *d)
{
	sqlite3_finalize(d->put);
	sqlite3_finalize(d->get);
	sqlite3_close(d->db);
	ZSTD_freeCCtx(d->cctx);
	ZSTD_freeDCtx(d->dctx);
	free(d->zbuf);
}

/* Level 3, as the catalog compresses. */
static void db_put(struct db *d, const struct body *b)
{
	size_t n = ZSTD_compressCCtx(d->cctx, d->zbuf, ZSTD_compressBound(b->len), b->data, b->len,
				     3);
	if (ZSTD_isError(n))
		die("zstd: compress");
	sqlite3_bind_blob(d->put, 1, b->key, 32, SQLITE_STATIC);
	sqlite3_bind_int64(d->put, 2, (sqlite3_int64)b->len);
	sqlite3_bind_blob(d->put, 3, d->zbuf, (int)n, SQLITE_STATIC);
	if (sqlite3_step(d->put) != SQLITE_DONE)
		die(sqlite3_errmsg(d->db));
	sqlite3_reset(d->put);
}

/* select + decompress into buf: what a daemon must do before it can reply
 * (from its own memory: fuse_reply_buf, a copy). */
static void db_get(struct db *d, const struct body *b, uint8_t *buf)
{
	sqlite3_bind_blob(d->get, 1, b->key, 32, SQLITE_STATIC);
	if (sqlite3_step(d->get) != SQLITE_ROW)
		die("sqlite: missing row");
	const void *z = sqlite3_column_blob(d->get, 0);
	size_t n = ZSTD_decompressDCtx(d->dctx, buf, max_size, z,
				       (size_t)sqlite3_column_bytes(d->get, 0));
	if (ZSTD_isError(n) || n != b->len || memcmp(buf, b->data, b->len))
		die("sqlite: read");
	sqlite3_reset(d->get);
}

/* --- the study ------------------------------------------------------------ */

/* A fill: threads take batches of the shuffled order; lat[i] is the time
 * from the start of body i's batch until it was published. */
struct filler {
	pthread_t th;
	const char *fdir, *dbpath; /* one of them */
	int batch;
	const size_t *order;
	size_t *next; /* shared, atomic */
	double *lat;
};

static void *fill_thread(void *ud)
{
	struct filler *fl = ud;
	struct db d;
	if (fl->dbpath)
		db_open(&d, fl->dbpath);
	for (;;) {
		size_t i = __atomic_fetch_add(fl->next, (size_t)fl->batch, __ATOMIC_RELAXED);
		if (i >= nbodies)
			break;
		size_t end = MIN(nbodies, i + (size_t)fl->batch);
		uint64_t t0 = now_ns();
		if (fl->dbpath) {
			db_exec(&d, "BEGIN IMMEDIATE");
			for (size_t k = i; k < end; k++)
				db_put(&d, &bodies[fl->order[k]]);
			db_exec(&d, "COMMIT");
			for (size_t k = i; k < end; k++)
				fl->lat[k] = ms_since(t0);
		} else {
			for (size_t k = i; k < end; k++) {
				files_put(fl->fdir, &bodies[fl->order[k]]);
				fl->lat[k] = ms_since(t0);
			}
		}
	}
	if (fl->dbpath)
		db_close(&d);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Fills one store with threads, then syncs; prints one line. */
static void fill(const char *label, const char *fdir, const char *dbpath, int batch,
		 int threads, const size_t *order)
{
	struct filler *fl = xcalloc((size_t)threads, sizeof(*fl));
	double *lat = xmalloc(nbodies * sizeof(*lat));
	size_t next = 0;
	if (dbpath) { /* the schema, outside the timing */
		struct db d;
		db_open(&d, dbpath);
		db_close(&d);
	}
	sync();
	uint64_t t0 = now_ns();
	for (int i = 0; i < threads; i++) {
		fl[i] = (struct filler){.fdir = fdir, .dbpath = dbpath, .batch = batch,
					.order = order, .next = &next, .lat = lat};
		if (pthread_create(&fl[i].th, NULL, fill_thread, &fl[i]))
			die("pthread_create");
	}
	for (int i = 0; i < threads; i++)
		pthread_join(fl[i].th, NULL);
	double t = ms_since(t0);
	sync();
	double ts = ms_since(t0);
	qsort(lat, nbodies, sizeof(*lat), cmp_double);
	printf("  %-28s %8.1f  %8.1f  %8.1f  %8.3f  %8.3f\n", label, t, t * 1e3 / nbodies, ts,
	       lat[nbodies / 2], lat[nbodies * 99 / 100]);
	free(lat);
	free(fl);
}

enum reader { FILES_OPEN, FILES_READ, DB_READ };
static const char *const reader_name[] = {
	"files: open+fstat (fd to FUSE)", "files: open+fstat+pread", "sqlite: select+zstd"};

static double read_all(enum reader how, const char *fdir, struct db *d, const size_t *order,
		       uint8_t *buf)
{
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < nbodies; i++) {
		const struct body *b = &bodies[order[i]];
		if (how == DB_READ)
			db_get(d, b, buf);
		else
			files_get(fdir, b, buf, how == FILES_READ);
	}
	return ms_since(t0);
}

#define USAGE "usage: layout [-m MAX] [-b BATCH] [-t THREADS] [-r RUNS] [-d] SRC WORK"

int main(int argc, char **argv)
{
	int batch = 1, threads = 1, runs = 5, opt;
	bool cold = false;
	while ((opt = getopt(argc, argv, "m:b:t:r:d")) != -1) {
		switch (opt) {
		case 'm': max_size = strtoull(optarg, NULL, 0); break;
		case 'b': batch = atoi(optarg); break;
		case 't': threads = atoi(optarg); break;
		case 'r': runs = atoi(optarg); break;
		case 'd': cold = true; break;
		default: die(USAGE);
		}
	}
	if (argc - optind != 2 || batch < 1 || threads < 1 || runs < 1 || max_size < 1)
		die(USAGE);
	const char *src = argv[optind], *work = argv[optind + 1];

	nftw(src, collect, 64, FTW_PHYS | FTW_ACTIONRETVAL);
	qsort(bodies, nbodies, sizeof(*bodies), by_key);
	size_t n = 0;
	uint64_t bytes = 0;
	for (size_t i = 0; i < nbodies; i++)
		if (n == 0 || memcmp(bodies[n - 1].key, bodies[i].key, 32))
			bodies[n++] = bodies[i];
		else
			free(bodies[i].data);
	nbodies = n;
	for (size_t i = 0; i < nbodies; i++)
		bytes += bodies[i].len;
	if (!nbodies)
		die("no bodies");
	size_t *order = xmalloc(nbodies * sizeof(*order));
	srand(5);
	for (size_t i = 0; i < nbodies; i++) {
		size_t j = (size_t)rand() % (i + 1);
		order[i] = order[j];
		order[j] = i;
	}
	printf("bodies: %zu distinct files of 1..%llu bytes from %s, %.1f MB, mean %.0f B\n",
	       nbodies, (unsigned long long)max_size, src, bytes / 1e6, (double)bytes / nbodies);

	rm_rf(work);
	char *fdir = xasprintf("%s/files", work), *ftmp = xasprintf("%s/tmp", fdir);
	char *dbpath = xasprintf("%s/bodies.db", work);
	if (mkdir_p(ftmp, 0755) < 0)
		die("cannot make WORK");

	/* fill: what the daemon does per body, then the writeback it causes */
	printf("\nfill (%zu bodies, %d thread%s)    total ms   us/body   +sync ms  "
	       "publish ms: median   p99\n", nbodies, threads, threads > 1 ? "s" : "");
	fill("files (temp + rename)", fdir, NULL, 1, threads, order);
	char *label = xasprintf("sqlite (zstd-3, %d/txn)", batch);
	fill(label, NULL, dbpath, batch, threads, order);
	free(label);
	struct db d;
	db_open(&d, dbpath);
	db_exec(&d, "PRAGMA wal_checkpoint(TRUNCATE)");
	uint64_t files_du = disk_usage(fdir), db_du = disk_usage(work) - files_du;
	printf("\ndisk usage: files %.1f MB (bodies/ and its directories), sqlite %.1f MB "
	       "(checkpointed), logical %.1f MB\n",
	       files_du / 1e6, db_du / 1e6, bytes / 1e6);

	uint8_t *buf = xmalloc(max_size);
	printf("\nread every body, shuffled       total ms   us/body\n");
	for (enum reader how = FILES_OPEN; how <= DB_READ; how++) {
		double *t = xmalloc((size_t)runs * sizeof(*t));
		read_all(how, fdir, &d, order, buf); /* warm the page cache */
		for (int r = 0; r < runs; r++)
			t[r] = read_all(how, fdir, &d, order, buf);
		qsort(t, (size_t)runs, sizeof(*t), cmp_double);
		printf("  warm  %-30s %8.1f  %8.2f   (min %.1f, max %.1f, %d runs)\n",
		       reader_name[how], t[runs / 2], t[runs / 2] * 1e3 / nbodies, t[0],
		       t[runs - 1], runs);
		free(t);
	}
	if (cold) {
		for (enum reader how = FILES_READ; how <= DB_READ; how++) {
			db_close(&d);
			drop_caches();
			db_open(&d, dbpath); /* as a new daemon would */
			double t = read_all(how, fdir, &d, order, buf);
			printf("  cold  %-30s %8.1f  %8.2f\n", reader_name[how], t,
			       t * 1e3 / nbodies);
		}
	}
	db_close(&d);
	rm_rf(work);
	for (size_t i = 0; i < nbodies; i++)
		free(bodies[i].data);
	free(bodies);
	free(buf);
	free(order);
	free(fdir);
	free(ftmp);
	free(dbpath);
	return 0;
}
