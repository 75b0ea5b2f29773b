/* catalog: wheel metadata in SQLite, shared by every mount on the machine.
 *
 * A wheel is stored as the raw bytes of its central directory and end
 * records (zstd-compressed) plus the few small members the tree builder
 * needs.  On load the directory is parsed again with zipcd_parse: the cache
 * directory is untrusted input too, and re-parsing ~100 bytes per entry costs
 * microseconds.  Schema version: PRAGMA user_version. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define CATALOG_SCHEMA_VERSION 2
#define CATALOG_MAX_BLOB (512u << 20)

struct catalog {
	sqlite3 *db;
	sqlite3_stmt *get_wheel, *get_members, *put_wheel, *put_member, *has_wheel;
	ZSTD_CCtx *zc; /* kept between puts: a context per call costs more than
			* compressing a small member */
	ZSTD_DCtx *zd;
};

/* sha256 is the catalog key (wheel_catalog_key: the wheel's sha256 and URL). */
static const char schema[] =
	"CREATE TABLE IF NOT EXISTS wheel ("
	" sha256 BLOB PRIMARY KEY,"
	" filename TEXT NOT NULL,"
	" size INTEGER NOT NULL,"
	" cd_off INTEGER NOT NULL,"
	" tail_len INTEGER NOT NULL,"
	" tail BLOB NOT NULL," /* zstd of bytes [cd_off, size) */
	" added INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS member ("
	" sha256 BLOB NOT NULL,"
	" name TEXT NOT NULL,"
	" len INTEGER NOT NULL,"
	" data BLOB NOT NULL," /* zstd */
	" PRIMARY KEY (sha256, name)"
	") WITHOUT ROWID;";

static int sql_err(struct catalog *c, const char *what, char *err, size_t errlen)
{
	if (err)
		snprintf(err, errlen, "catalog: %s: %s", what, sqlite3_errmsg(c->db));
	int code = sqlite3_errcode(c->db);
	if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
		return -EBUSY;
	if (code == SQLITE_CANTOPEN || code == SQLITE_PERM || code == SQLITE_READONLY)
		return -EACCES;
	if (code == SQLITE_FULL)
		return -ENOSPC;
	return -EIO;
}

int catalog_open(const char *path, struct catalog **ret, char *err, size_t errlen)
{
	struct catalog *c = xcalloc(1, sizeof(*c));
	int r;
	if (sqlite3_open_v2(path, &c->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		r = sql_err(c, path, err, errlen);
		goto fail;
	}
	sqlite3_busy_timeout(c->db, 10000);
	/* WAL lets mounts read while another daemon inserts; NORMAL sync is
	 * safe with WAL (a crash loses at most the last transaction, which the
	 * next mount simply fetches again). */
	if (sqlite3_exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
			 NULL) != SQLITE_OK) {
		r = sql_err(c, path, err, errlen);
		goto fail;
	}
	int v = 0;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
		sqlite3_finalize(st);
	}
	if (v > CATALOG_SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "catalog %s has schema version %d, this sitefs knows %d: use another "
			 "--cache-dir",
			 path, v, CATALOG_SCHEMA_VERSION);
		r = -EPROTO;
		goto fail;
	}
	/* The catalog is a cache: an older schema (version 1 keyed rows by the
	 * wheel's sha256 alone) is dropped, not migrated. */
	char *upgrade = xasprintf("BEGIN IMMEDIATE; %s %s PRAGMA user_version=%d; COMMIT;",
				  v < CATALOG_SCHEMA_VERSION
					  ? "DROP TABLE IF EXISTS wheel; DROP TABLE IF EXISTS member;"
					  : "",
				  schema, CATALOG_SCHEMA_VERSION);
	int rc = v == CATALOG_SCHEMA_VERSION ? SQLITE_OK
					     : sqlite3_exec(c->db, upgrade, NULL, NULL, NULL);
	free(upgrade);
	if (rc != SQLITE_OK) {
		r = sql_err(c, path, err, errlen);
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
	if (sqlite3_prepare_v2(c->db,
			       "SELECT size, cd_off, tail_len, tail FROM wheel WHERE sha256 = ?",
			       -1, &c->get_wheel, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(c->db,
			       "SELECT name, len, data FROM member WHERE sha256 = ? ORDER BY name",
			       -1, &c->get_members, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(c->db,
			       "INSERT OR IGNORE INTO wheel VALUES (?, ?, ?, ?, ?, ?, ?)", -1,
			       &c->put_wheel, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(c->db, "INSERT OR IGNORE INTO member VALUES (?, ?, ?, ?)", -1,
			       &c->put_member, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(c->db, "SELECT 1 FROM wheel WHERE sha256 = ? AND size = ?", -1,
			       &c->has_wheel, NULL) != SQLITE_OK) {
		r = sql_err(c, "prepare", err, errlen);
		goto fail;
	}
	*ret = c;
	return 0;
fail:
	catalog_close(c);
	return r;
}

struct catalog *catalog_close(struct catalog *c)
{
	if (!c)
		return NULL;
	sqlite3_finalize(c->get_wheel);
	sqlite3_finalize(c->has_wheel);
	sqlite3_finalize(c->get_members);
	sqlite3_finalize(c->put_wheel);
	sqlite3_finalize(c->put_member);
	sqlite3_close(c->db);
	ZSTD_freeCCtx(c->zc);
	ZSTD_freeDCtx(c->zd);
	free(c);
	return NULL;
}

/* Decompresses a zstd column of known original length; NULL if corrupt. */
static uint8_t *unzstd(struct catalog *c, const void *src, size_t srclen, size_t len)
{
	if (len > CATALOG_MAX_BLOB)
		return NULL;
	uint8_t *out = xmalloc(len + 1);
	if (!c->zd)
		c->zd = ZSTD_createDCtx();
	size_t n = c->zd ? ZSTD_decompressDCtx(c->zd, out, len, src, srclen) : (size_t)-1;
	if (ZSTD_isError(n) || n != len) {
		free(out);
		return NULL;
	}
	out[len] = 0;
	return out;
}

static void *zstd(struct catalog *c, const void *src, size_t len, size_t *ret_len)
{
	size_t cap = ZSTD_compressBound(len);
	void *out = xmalloc(cap);
	if (!c->zc)
		c->zc = ZSTD_createCCtx();
	size_t n = c->zc ? ZSTD_compressCCtx(c->zc, out, cap, src, len, 1) : (size_t)-1;
	if (ZSTD_isError(n)) {
		free(out);
		return NULL;
	}
	*ret_len = n;
	return out;
}

int catalog_get(struct catalog *c, const uint8_t sha[32], uint64_t size, struct wheel_meta *ret)
{
	sqlite3_stmt *st = c->get_wheel;
	int r = -ENOENT;
	uint8_t *tail = NULL;
	struct wheel_meta m = {0};

	sqlite3_bind_blob(st, 1, sha, 32, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = rc == SQLITE_DONE ? -ENOENT : sql_err(c, "get", NULL, 0);
		sqlite3_reset(st);
		return r;
	}
	uint64_t rsize = (uint64_t)sqlite3_column_int64(st, 0);
	uint64_t cd_off = (uint64_t)sqlite3_column_int64(st, 1);
	uint64_t tail_len = (uint64_t)sqlite3_column_int64(st, 2);
	if (rsize != size || cd_off > size || size - cd_off != tail_len ||
	    !(tail = unzstd(c, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3),
			    (size_t)tail_len))) {
		sqlite3_reset(st);
		log_debug(LOG_CAT_SQL, "catalog row for a wheel of size %llu is corrupt",
			  (unsigned long long)size);
		return -EBADMSG;
	}
	sqlite3_reset(st);

	char msg[256];
	uint64_t need;
	if (zipcd_parse(tail, (size_t)tail_len, cd_off, size, &m.cd, &need, msg, sizeof(msg)) <
	    0) {
		log_debug(LOG_CAT_SQL, "catalog row does not parse: %s", msg);
		r = -EBADMSG;
		goto out;
	}

	st = c->get_members;
	sqlite3_bind_blob(st, 1, sha, 32, SQLITE_STATIC);
	size_t cap = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		size_t len = (size_t)sqlite3_column_int64(st, 1);
		uint8_t *data = unzstd(c, sqlite3_column_blob(st, 2),
				       (size_t)sqlite3_column_bytes(st, 2), len);
		if (!name || !data) {
			free(data);
			rc = SQLITE_CORRUPT;
			break;
		}
		if (m.nfiles == cap) {
			cap = cap ? 2 * cap : 8;
			m.files = xrealloc(m.files, cap * sizeof(*m.files));
		}
		m.files[m.nfiles++] = (struct wheel_file){xstrdup(name), data, len};
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		r = -EBADMSG;
		goto out;
	}
	*ret = m;
	memset(&m, 0, sizeof(m));
	r = 0;
out:
	wheel_meta_clear(&m);
	free(tail);
	return r;
}

/* One wheel's rows, compressed (by the writer thread, as wheels come). */
struct wrow {
	struct catalog_item it;
	void *ztail;
	size_t ztail_len;
	void **zm; /* per it.meta->files[i] */
	size_t *zm_len;
	struct wrow *next;
};

static int compress_row(struct catalog *c, struct wrow *w)
{
	const struct wheel_meta *m = w->it.meta;
	w->ztail = zstd(c, w->it.tail, w->it.tail_len, &w->ztail_len);
	w->zm = xcalloc(m->nfiles ? m->nfiles : 1, sizeof(*w->zm));
	w->zm_len = xcalloc(m->nfiles ? m->nfiles : 1, sizeof(*w->zm_len));
	if (!w->ztail)
		return -EIO;
	for (size_t i = 0; i < m->nfiles; i++)
		if (!(w->zm[i] = zstd(c, m->files[i].data, m->files[i].len, &w->zm_len[i])))
			return -EIO;
	return 0;
}

static void free_row(struct wrow *w)
{
	for (size_t i = 0; w->zm && i < w->it.meta->nfiles; i++)
		free(w->zm[i]);
	free(w->zm);
	free(w->zm_len);
	free(w->ztail);
	free(w->it.tail);
	free(w);
}

/* The rows of one wheel, inside the caller's transaction. */
static int put_rows(struct catalog *c, const struct wrow *w)
{
	const struct catalog_item *it = &w->it;
	const struct wheel_meta *m = it->meta;
	int r = 0;
	sqlite3_stmt *st = c->put_wheel;
	sqlite3_bind_blob(st, 1, it->key, 32, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, it->filename, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)it->size);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)(it->size - it->tail_len));
	sqlite3_bind_int64(st, 5, (sqlite3_int64)it->tail_len);
	sqlite3_bind_blob(st, 6, w->ztail, (int)w->ztail_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)time(NULL));
	if (sqlite3_step(st) != SQLITE_DONE)
		r = sql_err(c, "insert wheel", NULL, 0);
	sqlite3_reset(st);

	for (size_t i = 0; r == 0 && i < m->nfiles; i++) {
		const struct wheel_file *f = &m->files[i];
		st = c->put_member;
		sqlite3_bind_blob(st, 1, it->key, 32, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, f->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)f->len);
		sqlite3_bind_blob(st, 4, w->zm[i], (int)w->zm_len[i], SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = sql_err(c, "insert member", NULL, 0);
		sqlite3_reset(st);
	}
	return r;
}

bool catalog_has(struct catalog *c, const uint8_t sha[32], uint64_t size)
{
	sqlite3_stmt *st = c->has_wheel;
	sqlite3_bind_blob(st, 1, sha, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
	bool found = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_reset(st);
	return found;
}

/* The rows of a mount's misses: each wheel is compressed as soon as its
 * metadata is complete (while other wheels are still on the wire), and all
 * are inserted in one transaction once the last came (one WAL append
 * instead of one per wheel), while the tree is built.  The writer owns the
 * connection, the items' copies of the directory bytes and the compressed
 * rows; the metas stay the caller's. */
struct catalog_writer {
	struct catalog *c;
	pthread_t thread;
	bool threaded;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct wrow *in, **in_tail; /* added, not yet compressed; under lock */
	bool closed;                /* no more rows; under lock */
	bool stored;                /* committed (or failed); under lock */
	struct wrow *rows, **rows_tail; /* compressed: writer thread only */
	size_t n;
	int r;
};

/* Compresses what came; returns false once closed and nothing is left. */
static bool writer_compress(struct catalog_writer *w, bool wait)
{
	pthread_mutex_lock(&w->lock);
	while (wait && !w->in && !w->closed)
		pthread_cond_wait(&w->cond, &w->lock);
	struct wrow *batch = w->in;
	bool more = batch || !w->closed;
	w->in = NULL;
	w->in_tail = &w->in;
	pthread_mutex_unlock(&w->lock);
	while (batch) {
		struct wrow *row = batch;
		batch = row->next;
		row->next = NULL;
		if (w->r == 0)
			w->r = compress_row(w->c, row);
		*w->rows_tail = row;
		w->rows_tail = &row->next;
		w->n++;
	}
	return more;
}

static void writer_store(struct catalog_writer *w)
{
	uint64_t t0 = now_ns();
	struct catalog *c = w->c;
	int r = w->r;
	const char *name = "";
	if (r == 0 && sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		r = sql_err(c, "begin", NULL, 0);
	} else if (r == 0) {
		for (struct wrow *row = w->rows; r == 0 && row; row = row->next) {
			name = row->it.filename;
			r = put_rows(c, row);
		}
		if (sqlite3_exec(c->db, r == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) !=
			    SQLITE_OK &&
		    r == 0)
			r = sql_err(c, "commit", NULL, 0);
	}
	if (r < 0)
		log_warn("cannot store %zu wheels in the catalog (%s; at \"%s\"), ignoring", w->n,
			 strerror(-r), name);
	log_trace("catalog: %zu wheels stored (writer thread)", w->n);
	/* what the next mount needs is there: closing (a WAL checkpoint, an
	 * fsync) is no reason to keep this one waiting */
	pthread_mutex_lock(&w->lock);
	w->stored = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	w->c = catalog_close(w->c);
	log_debug(LOG_CAT_SQL, "catalog: %zu wheels stored in %.1f ms", w->n,
		  (now_ns() - t0) / 1e6);
}

static void *writer_main(void *arg)
{
	struct catalog_writer *w = arg;
	while (writer_compress(w, true))
		;
	writer_store(w);
	return NULL;
}

struct catalog_writer *catalog_writer_start(struct catalog *c)
{
	struct catalog_writer *w = xcalloc(1, sizeof(*w));
	w->c = c;
	w->in_tail = &w->in;
	w->rows_tail = &w->rows;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->threaded = pthread_create(&w->thread, NULL, writer_main, w) == 0;
	return w;
}

void catalog_writer_add(struct catalog_writer *w, const struct catalog_item *it)
{
	struct wrow *row = xcalloc(1, sizeof(*row));
	row->it = *it;
	pthread_mutex_lock(&w->lock);
	*w->in_tail = row;
	w->in_tail = &row->next;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void catalog_writer_finish(struct catalog_writer *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->closed = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void catalog_writer_wait(struct catalog_writer *w)
{
	if (!w)
		return;
	catalog_writer_finish(w);
	pthread_mutex_lock(&w->lock);
	if (w->threaded)
		while (!w->stored)
			pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	if (!w->threaded && !w->stored) {
		while (writer_compress(w, false))
			;
		writer_store(w);
	}
}

struct catalog_writer *catalog_writer_join(struct catalog_writer *w)
{
	if (!w)
		return NULL;
	catalog_writer_wait(w);
	if (w->threaded)
		pthread_join(w->thread, NULL);
	while (w->rows) {
		struct wrow *row = w->rows;
		w->rows = row->next;
		free_row(row);
	}
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
	return NULL;
}
