/* test_zipcd: central-directory parsing of well-formed and hostile zips.
 *
 * Hostile zips are written byte by byte here (a small builder, then patches
 * at known offsets); zips from Python's zipfile (unit/make_zips.py) and from
 * the builder are cross-checked against libzip's reading of the same bytes. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include "fetch/inflate.h"
#include "fetch/util/util.h"
#include "fetch/zipcd.h"
#include "check.h"

#define MAXE 2100

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static void app16(struct buf *b, uint16_t v)
{
	uint8_t t[2];

	put16(t, v);
	buf_append(b, t, 2);
}

static void app32(struct buf *b, uint32_t v)
{
	uint8_t t[4];

	put32(t, v);
	buf_append(b, t, 4);
}

static void app64(struct buf *b, uint64_t v)
{
	uint8_t t[8];

	put64(t, v);
	buf_append(b, t, 8);
}

static uint8_t *raw_deflate(const uint8_t *in, size_t n, size_t *ret_len)
{
	z_stream zs = {0};
	size_t cap = compressBound(n) + 64;
	uint8_t *out = xmalloc(cap);

	if (deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		abort();
	*ret_len = zs.total_out;
	deflateEnd(&zs);
	return out;
}

/* --- a zip writer with knobs for every field we parse --- */

#define Z64_USIZE 1
#define Z64_CSIZE 2
#define Z64_LHO 4

struct zb_entry {
	const char *name;
	size_t namelen; /* 0: strlen(name) */
	uint16_t method;
	uint16_t flags;
	const char *data; /* NULL: empty */
	uint16_t made_by; /* 0: Unix, zip 2.0 */
	uint32_t mode;	  /* 0: 0100644 (or 040755 for dirs) */
	uint16_t dtime, ddate;
	uint32_t xtime;	 /* nonzero: extended timestamp extra with this mtime */
	unsigned z64;	 /* Z64_*: fields saturated in the CD and put in a zip64 extra */
	bool descriptor; /* sizes and CRC after the data (flag bit 3) */
};

struct zip_built {
	uint8_t *data;
	size_t len;
	size_t n;
	uint64_t lho[MAXE], cdh[MAXE];
	uint64_t cd_off, cd_size, z64_off, eocd_off;
};

struct zb_opts {
	bool zip64;	     /* zip64 end record and locator, saturated EOCD fields */
	const char *comment; /* archive comment */
	size_t commentlen;
	size_t gap; /* zero bytes between the last entry and the CD */
};

static void zb_build(const struct zb_entry *es, size_t n, const struct zb_opts *o,
		     struct zip_built *z)
{
	struct buf b;
	uint32_t crc[MAXE];
	size_t clen[MAXE];
	static const struct zb_opts none;

	if (!o)
		o = &none;
	buf_init(&b);
	memset(z, 0, sizeof(*z));
	z->n = n;
	for (size_t i = 0; i < n; i++) {
		const struct zb_entry *e = &es[i];
		size_t nl = e->namelen ? e->namelen : strlen(e->name);
		size_t dl = e->data ? strlen(e->data) : 0;
		uint8_t *comp = NULL;
		const uint8_t *cd;
		uint16_t flags = e->flags | (e->descriptor ? 8 : 0);

		if (e->method == 8) {
			comp = raw_deflate((const uint8_t *)e->data, dl, &clen[i]);
			cd = comp;
		} else {
			clen[i] = dl;
			cd = (const uint8_t *)e->data;
		}
		crc[i] = (uint32_t)crc32(0, (const Bytef *)e->data, (uInt)dl);
		z->lho[i] = b.len;
		app32(&b, 0x04034b50);
		app16(&b, 20);
		app16(&b, flags);
		app16(&b, e->method);
		app16(&b, e->dtime);
		app16(&b, e->ddate);
		app32(&b, e->descriptor ? 0 : crc[i]);
		app32(&b, e->descriptor ? 0 : (e->z64 ? 0xffffffff : (uint32_t)clen[i]));
		app32(&b, e->descriptor ? 0 : (e->z64 ? 0xffffffff : (uint32_t)dl));
		app16(&b, (uint16_t)nl);
		app16(&b, e->z64 ? 20 : 0);
		buf_append(&b, e->name, nl);
		if (e->z64) {
			app16(&b, 1);
			app16(&b, 16);
			app64(&b, dl);
			app64(&b, clen[i]);
		}
		buf_append(&b, cd, clen[i]);
		if (e->descriptor) {
			app32(&b, 0x08074b50);
			app32(&b, crc[i]);
			app32(&b, (uint32_t)clen[i]);
			app32(&b, (uint32_t)dl);
		}
		free(comp);
	}
	for (size_t i = 0; i < o->gap; i++)
		buf_append(&b, "", 1);
	z->cd_off = b.len;
	for (size_t i = 0; i < n; i++) {
		const struct zb_entry *e = &es[i];
		size_t nl = e->namelen ? e->namelen : strlen(e->name);
		size_t dl = e->data ? strlen(e->data) : 0;
		bool dir = nl && e->name[nl - 1] == '/';
		uint32_t mode = e->mode ? e->mode : dir ? 040755 : 0100644;
		size_t z64len = 8 * !!(e->z64 & Z64_USIZE) + 8 * !!(e->z64 & Z64_CSIZE) +
				8 * !!(e->z64 & Z64_LHO);
		size_t xl = (z64len ? 4 + z64len : 0) + (e->xtime ? 9 : 0);

		z->cdh[i] = b.len;
		app32(&b, 0x02014b50);
		app16(&b, e->made_by ? e->made_by : 0x0314);
		app16(&b, 20);
		app16(&b, e->flags | (e->descriptor ? 8 : 0));
		app16(&b, e->method);
		app16(&b, e->dtime);
		app16(&b, e->ddate);
		app32(&b, crc[i]);
		app32(&b, e->z64 & Z64_CSIZE ? 0xffffffff : (uint32_t)clen[i]);
		app32(&b, e->z64 & Z64_USIZE ? 0xffffffff : (uint32_t)dl);
		app16(&b, (uint16_t)nl);
		app16(&b, (uint16_t)xl);
		app16(&b, 0);
		app16(&b, 0);
		app16(&b, 0);
		app32(&b, mode << 16);
		app32(&b, e->z64 & Z64_LHO ? 0xffffffff : (uint32_t)z->lho[i]);
		buf_append(&b, e->name, nl);
		if (z64len) {
			app16(&b, 1);
			app16(&b, (uint16_t)z64len);
			if (e->z64 & Z64_USIZE)
				app64(&b, dl);
			if (e->z64 & Z64_CSIZE)
				app64(&b, clen[i]);
			if (e->z64 & Z64_LHO)
				app64(&b, z->lho[i]);
		}
		if (e->xtime) {
			app16(&b, 0x5455);
			app16(&b, 5);
			buf_append(&b, "\x01", 1);
			app32(&b, e->xtime);
		}
	}
	z->cd_size = b.len - z->cd_off;
	if (o->zip64) {
		z->z64_off = b.len;
		app32(&b, 0x06064b50);
		app64(&b, 44);
		app16(&b, 0x032d);
		app16(&b, 45);
		app32(&b, 0);
		app32(&b, 0);
		app64(&b, n);
		app64(&b, n);
		app64(&b, z->cd_size);
		app64(&b, z->cd_off);
		app32(&b, 0x07064b50);
		app32(&b, 0);
		app64(&b, z->z64_off);
		app32(&b, 1);
	}
	z->eocd_off = b.len;
	app32(&b, 0x06054b50);
	app16(&b, 0);
	app16(&b, 0);
	app16(&b, o->zip64 ? 0xffff : (uint16_t)n);
	app16(&b, o->zip64 ? 0xffff : (uint16_t)n);
	app32(&b, o->zip64 ? 0xffffffff : (uint32_t)z->cd_size);
	app32(&b, o->zip64 ? 0xffffffff : (uint32_t)z->cd_off);
	app16(&b, (uint16_t)o->commentlen);
	buf_append(&b, o->comment, o->commentlen);
	z->data = buf_steal(&b, &z->len);
}

/* Parses the whole buffer at once. */
static int parse_all(const struct zip_built *z, struct zip_cd **cd, char *err, size_t errlen)
{
	uint64_t need = 0;

	*cd = NULL;
	return zipcd_parse(z->data, z->len, 0, z->len, cd, &need, err, errlen);
}

/* Parses as the daemon does: the 64 KiB tail first, then whatever it asks
 * for.  Returns the rounds taken (or -errno). */
static int parse_tail(const uint8_t *data, size_t len, struct zip_cd **cd, char *err, size_t errlen)
{
	uint64_t off = len > ZIPCD_TAIL_SIZE ? len - ZIPCD_TAIL_SIZE : 0;

	for (int round = 1; round <= 5; round++) {
		uint64_t need = UINT64_MAX;
		int r = zipcd_parse(data + off, len - off, off, len, cd, &need, err, errlen);

		if (r != -EAGAIN)
			return r < 0 ? r : round;
		if (need >= off)
			return -ELOOP; /* must ask for earlier bytes */
		off = need;
	}
	return -ELOOP;
}

/* --- libzip cross-check --- */

static void decode_entry(const uint8_t *data, size_t len, const struct zip_entry *e, uint8_t **ret,
			 const char *label)
{
	uint64_t data_off = 0;
	uint8_t sha[SHA256_LEN];
	char err[256] = "";
	int r;

	*ret = NULL;
	r = zipcd_local_header(data + e->lho, len - e->lho, e, &data_off);
	CHECK_INT(r, 0);
	if (r < 0 || data_off + e->csize > len) {
		fprintf(stderr, "%s: entry '%s' local header: %d\n", label, e->name, r);
		CHECK(0);
		return;
	}
	r = inflate_buffer(e->method, data + data_off, e->csize, e->usize, e->crc32, ret, sha, err,
			   sizeof(err));
	if (r < 0)
		fprintf(stderr, "%s: entry '%s': %s\n", label, e->name, err);
	CHECK_INT(r, 0);
}

/* Compares every entry zipcd sees with libzip's view of the same bytes,
 * contents included.  xtime: the zip has extended timestamps, which libzip
 * does not read, so mtimes are not compared. */
static void crosscheck(const uint8_t *data, size_t len, const char *label, bool xtime)
{
	zip_error_t ze;
	zip_source_t *src;
	zip_t *za;
	struct zip_cd *cd = NULL;
	char err[256] = "";
	int r;
	size_t fails = check_fail;

	zip_error_init(&ze);
	src = zip_source_buffer_create(data, len, 0, &ze);
	za = src ? zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze) : NULL;
	if (!za) {
		fprintf(stderr, "%s: libzip cannot open: %s\n", label, zip_error_strerror(&ze));
		CHECK(0);
		zip_source_free(src);
		zip_error_fini(&ze);
		return;
	}
	r = parse_tail(data, len, &cd, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "%s: %s\n", label, err);
	CHECK(r > 0);
	if (r < 0)
		goto out;
	CHECK_INT(cd->n, zip_get_num_entries(za, 0));
	for (zip_int64_t i = 0; i < zip_get_num_entries(za, 0); i++) {
		zip_stat_t st;
		zip_uint8_t opsys;
		zip_uint32_t attr;
		const struct zip_entry *e;
		uint8_t *ours = NULL, *theirs;
		zip_file_t *zf;

		CHECK_INT(zip_stat_index(za, (zip_uint64_t)i, 0, &st), 0);
		e = zipcd_find(cd, st.name);
		CHECK(e == &cd->entries[i]);
		if (!e)
			continue;
		CHECK_STR(e->name, st.name);
		CHECK_INT(e->usize, st.size);
		CHECK_INT(e->csize, st.comp_size);
		CHECK_INT(e->crc32, st.crc);
		CHECK_INT(e->method, st.comp_method);
		if (!xtime)
			CHECK_INT(e->mtime, st.mtime);
		CHECK_INT(zip_file_get_external_attributes(za, (zip_uint64_t)i, 0, &opsys, &attr),
			  0);
		CHECK_INT(e->mode, opsys == ZIP_OPSYS_UNIX ? attr >> 16 : 0);

		decode_entry(data, len, e, &ours, label);
		theirs = xmalloc(st.size + 1);
		zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
		CHECK(zf != NULL);
		if (zf) {
			CHECK_INT(zip_fread(zf, theirs, st.size), st.size);
			zip_fclose(zf);
		}
		CHECK(ours && memcmp(ours, theirs, st.size) == 0);
		free(ours);
		free(theirs);
	}
	if (check_fail != fails)
		fprintf(stderr, "%s: libzip cross-check failed\n", label);
out:
	zipcd_free(cd);
	zip_close(za);
	zip_error_fini(&ze);
}

/* --- tests --- */

static void test_names(void)
{
	static const struct {
		const char *name;
		size_t len; /* 0: strlen */
		bool ok;
	} t[] = {
	    {"a", 0, true},	     {"a/b/c.py", 0, true},
	    {"dir/", 0, true},	     {"a..b/..c/d..", 0, true},
	    {".hidden/.x", 0, true}, {"ab:c", 0, true},
	    {"a:b", 0, false},	     {"", 0, false},
	    {"/abs", 0, false},	     {"/", 0, false},
	    {"../x", 0, false},	     {"a/../b", 0, false},
	    {"a/..", 0, false},	     {"..", 0, false},
	    {"./a", 0, false},	     {"a/./b", 0, false},
	    {".", 0, false},	     {"a//b", 0, false},
	    {"a//", 0, false},	     {"a\\b", 0, false},
	    {"..\\x", 0, false},     {"a\0b", 3, false},
	    {"C:x", 0, false},	     {"c:/x", 0, false},
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		size_t len = t[i].len ? t[i].len : strlen(t[i].name);
		bool ok = zipcd_name_ok(t[i].name, len);

		if (ok != t[i].ok)
			fprintf(stderr, "name '%s': expected %d\n", t[i].name, t[i].ok);
		CHECK(ok == t[i].ok);
	}
}

static void test_basic(void)
{
	static const char text[] = "hello hello hello hello hello hello hello\n";
	const struct zb_entry es[] = {
	    {.name = "pkg/", .mode = 040755},
	    {.name = "pkg/__init__.py",
	     .method = 8,
	     .data = text,
	     .mode = 0100644,
	     .ddate = (40 << 9) | (6 << 5) | 15,
	     .dtime = (12 << 11) | (34 << 5) | 28},
	    {.name = "pkg/raw.txt", .data = "stored bytes", .mode = 0100755},
	    {.name = "pkg/x.py", .method = 8, .data = "x = 1\n", .xtime = 1700000000},
	    {.name = "dos.txt", .data = "dos", .made_by = 0x0014, .mode = 0xffff},
	    {.name = "pkg/empty", .method = 8},
	};
	struct zip_built z;
	struct zip_cd *cd;
	char err[256] = "";
	const struct zip_entry *e;
	uint64_t data_off;
	uint8_t *out;

	zb_build(es, ARRAY_SIZE(es), NULL, &z);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	if (!cd) {
		fprintf(stderr, "basic: %s\n", err);
		free(z.data);
		return;
	}
	CHECK_INT(cd->n, ARRAY_SIZE(es));
	CHECK_INT(cd->cd_off, z.cd_off);
	CHECK_INT(cd->cd_size, z.cd_size);
	CHECK_STR(cd->entries[0].name, "pkg/");
	CHECK_INT(cd->entries[0].mode, 040755);

	e = zipcd_find(cd, "pkg/__init__.py");
	CHECK(e == &cd->entries[1]);
	CHECK_INT(e->method, 8);
	CHECK_INT(e->usize, strlen(text));
	CHECK(e->csize < e->usize);
	CHECK_INT(e->crc32, crc32(0, (const Bytef *)text, strlen(text)));
	CHECK_INT(e->lho, z.lho[1]);
	CHECK_INT(e->mode, 0100644);
	CHECK_INT(e->mtime, 1592224496); /* 2020-06-15 12:34:56 UTC */
	CHECK_INT(zipcd_local_header(z.data + e->lho, z.len - e->lho, e, &data_off), 0);
	CHECK_INT(data_off, e->lho + 30 + strlen(e->name));
	CHECK_INT(zipcd_span_guess(e), 30 + strlen(e->name) + e->csize + ZIPCD_LOCAL_SLACK);
	CHECK_INT(inflate_buffer(e->method, z.data + data_off, e->csize, e->usize, e->crc32, &out,
				 (uint8_t[SHA256_LEN]){0}, err, sizeof(err)),
		  0);
	CHECK(memcmp(out, text, strlen(text)) == 0);
	free(out);

	e = zipcd_find(cd, "pkg/raw.txt");
	CHECK(e && e->method == 0 && e->csize == 12 && e->usize == 12 && e->mode == 0100755);
	e = zipcd_find(cd, "pkg/x.py");
	CHECK(e && e->mtime == 1700000000);
	e = zipcd_find(cd, "dos.txt");
	CHECK(e && e->mode == 0);
	e = zipcd_find(cd, "pkg/empty");
	CHECK(e && e->usize == 0 && e->mtime == 312768000); /* DOS zero: 1979-11-30 */
	CHECK(zipcd_find(cd, "pkg") == NULL);
	CHECK(zipcd_find(cd, "pkg/x.pyc") == NULL);
	CHECK(zipcd_find(cd, "") == NULL);
	cd = zipcd_free(cd);
	CHECK(cd == NULL);
	CHECK(zipcd_free(NULL) == NULL);
	crosscheck(z.data, z.len, "builder basic", true);
	free(z.data);
}

static void test_empty_and_comment(void)
{
	static const char tricky[] = "comment PK\x05\x06 with a fake end record inside........";
	struct zip_built z;
	struct zip_cd *cd;
	char err[256] = "";
	const struct zb_entry es[] = {{.name = "a", .data = "A"}};
	struct zb_opts o = {.comment = tricky, .commentlen = sizeof(tricky) - 1};

	zb_build(NULL, 0, NULL, &z);
	CHECK_INT(z.len, 22);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	CHECK(cd && cd->n == 0 && zipcd_find(cd, "a") == NULL);
	zipcd_free(cd);
	free(z.data);

	zb_build(es, 1, &o, &z);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	CHECK(cd && cd->n == 1 && zipcd_find(cd, "a"));
	zipcd_free(cd);
	free(z.data);
}

static void test_zip64(void)
{
	const struct zb_entry es[] = {
	    {.name = "all",
	     .method = 8,
	     .data = "zip64 zip64 zip64 zip64",
	     .z64 = Z64_USIZE | Z64_CSIZE | Z64_LHO},
	    {.name = "lho-only", .data = "lho", .z64 = Z64_LHO},
	    {.name = "csize-lho",
	     .method = 8,
	     .data = "cccccccccccccc",
	     .z64 = Z64_CSIZE | Z64_LHO},
	    {.name = "usize", .method = 8, .data = "uuuuuuuuuuuuuuuuuu", .z64 = Z64_USIZE},
	    {.name = "plain", .data = "plain"},
	};
	struct zb_opts o = {.zip64 = true};
	struct zip_built z;
	struct zip_cd *cd;
	char err[256] = "";
	uint8_t *out;
	uint8_t sha[SHA256_LEN];

	zb_build(es, ARRAY_SIZE(es), &o, &z);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	if (!cd) {
		fprintf(stderr, "zip64: %s\n", err);
		free(z.data);
		return;
	}
	CHECK_INT(cd->n, ARRAY_SIZE(es));
	CHECK_INT(cd->cd_off, z.cd_off);
	CHECK_INT(cd->cd_size, z.cd_size);
	for (size_t i = 0; i < cd->n; i++) {
		const struct zip_entry *e = &cd->entries[i];
		uint64_t data_off;

		CHECK_STR(e->name, es[i].name);
		CHECK_INT(e->lho, z.lho[i]);
		CHECK_INT(e->usize, strlen(es[i].data));
		CHECK_INT(zipcd_local_header(z.data + e->lho, z.len - e->lho, e, &data_off), 0);
		CHECK_INT(data_off, e->lho + 30 + strlen(e->name) + (es[i].z64 ? 20 : 0));
		CHECK_INT(inflate_buffer(e->method, z.data + data_off, e->csize, e->usize, e->crc32,
					 &out, sha, err, sizeof(err)),
			  0);
		CHECK(out && memcmp(out, es[i].data, e->usize) == 0);
		free(out);
	}
	zipcd_free(cd);
	crosscheck(z.data, z.len, "builder zip64", false);

	/* A non-saturated EOCD field must agree with the zip64 record. */
	put16(z.data + z.eocd_off + 10, 4);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, "disagrees") != NULL);
	put16(z.data + z.eocd_off + 10, 0xffff);
	/* Zip64 record spanning disks. */
	put32(z.data + z.z64_off + 16, 1);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	put32(z.data + z.z64_off + 16, 0);
	/* Locator pointing at garbage, and past itself. */
	put64(z.data + z.z64_off + 56 + 8, z.z64_off - 1);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	put64(z.data + z.z64_off + 56 + 8, z.z64_off + 4);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	put64(z.data + z.z64_off + 56 + 8, UINT64_MAX - 10);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	put64(z.data + z.z64_off + 56 + 8, z.z64_off);
	/* Huge counts and sizes in the zip64 record. */
	put64(z.data + z.z64_off + 24, UINT64_MAX);
	put64(z.data + z.z64_off + 32, UINT64_MAX);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	put64(z.data + z.z64_off + 24, 1000);
	put64(z.data + z.z64_off + 32, 1000);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, "cannot fit") != NULL);
	put64(z.data + z.z64_off + 24, ARRAY_SIZE(es));
	put64(z.data + z.z64_off + 32, ARRAY_SIZE(es));
	put64(z.data + z.z64_off + 40, UINT64_MAX);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	put64(z.data + z.z64_off + 40, z.cd_size);
	/* A zip64 extra too short for the saturated fields. */
	put16(z.data + z.cdh[0] + 46 + 3 + 2, 16);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, "entry 'all': zip64 extra field too short") != NULL);
	put16(z.data + z.cdh[0] + 46 + 3 + 2, 24);
	/* A zip64 lho pointing into another entry. */
	put64(z.data + z.cdh[1] + 46 + 8 + 4, z.lho[0] + 2);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, "overlaps") != NULL);
	put64(z.data + z.cdh[1] + 46 + 8 + 4, z.lho[1]);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	zipcd_free(cd);
	free(z.data);
}

static void test_descriptor(void)
{
	const struct zb_entry es[] = {
	    {.name = "d/a.py", .method = 8, .data = "print('descriptor')\n", .descriptor = true},
	    {.name = "d/b.txt", .data = "stored with descriptor", .descriptor = true},
	};
	struct zip_built z;
	struct zip_cd *cd;
	char err[256] = "";

	zb_build(es, ARRAY_SIZE(es), NULL, &z);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	CHECK(cd && (cd->entries[0].flags & 8) && cd->entries[1].usize == 22);
	zipcd_free(cd);
	crosscheck(z.data, z.len, "builder descriptor", false);
	free(z.data);
}

/* Builds a zip from es, applies patch, expects -EBADMSG with msg in err. */
struct hostile {
	const char *what;
	struct zb_entry es[3];
	size_t n;
	void (*patch)(struct zip_built *z);
	const char *msg;
};

static void p_truncate_eocd(struct zip_built *z) { z->len -= 3; }

static void p_garbage(struct zip_built *z) { memset(z->data, 'G', z->len); }

static void p_comment_len(struct zip_built *z) { put16(z->data + z->eocd_off + 20, 5); }

static void p_cd_off(struct zip_built *z)
{
	put32(z->data + z->eocd_off + 16, (uint32_t)z->cd_off + 1);
}

static void p_cd_off_huge(struct zip_built *z) { put32(z->data + z->eocd_off + 16, 0xfffffff0); }

static void p_cd_size(struct zip_built *z)
{
	put32(z->data + z->eocd_off + 12, (uint32_t)z->cd_size - 1);
}

static void p_count_more(struct zip_built *z)
{
	put16(z->data + z->eocd_off + 8, 3);
	put16(z->data + z->eocd_off + 10, 3);
}

static void p_count_less(struct zip_built *z)
{
	put16(z->data + z->eocd_off + 8, 1);
	put16(z->data + z->eocd_off + 10, 1);
}

static void p_disk(struct zip_built *z) { put16(z->data + z->eocd_off + 4, 1); }

static void p_disk_count(struct zip_built *z) { put16(z->data + z->eocd_off + 8, 1); }

static void p_entry_disk(struct zip_built *z) { put16(z->data + z->cdh[1] + 34, 1); }

static void p_cd_sig(struct zip_built *z) { z->data[z->cdh[1]] = 'X'; }

static void p_lho_same(struct zip_built *z)
{
	put32(z->data + z->cdh[1] + 42, (uint32_t)z->lho[0]);
}

static void p_lho_into_cd(struct zip_built *z)
{
	put32(z->data + z->cdh[1] + 42, (uint32_t)z->cd_off - 20);
}

static void p_lho_past_end(struct zip_built *z) { put32(z->data + z->cdh[1] + 42, 0xfffffff0); }

static void p_csize_overlap(struct zip_built *z)
{
	put32(z->data + z->cdh[0] + 20, 10);
	put32(z->data + z->cdh[0] + 24, 10);
}

static void p_csize_huge(struct zip_built *z)
{
	put32(z->data + z->cdh[1] + 20, 0xfffffff0);
	put32(z->data + z->cdh[1] + 24, 0xfffffff0);
}

static void p_namelen_huge(struct zip_built *z) { put16(z->data + z->cdh[1] + 28, 0xffff); }

static void p_extralen_huge(struct zip_built *z) { put16(z->data + z->cdh[0] + 30, 300); }

static void p_encrypted(struct zip_built *z) { put16(z->data + z->cdh[1] + 8, 1); }

static void p_method(struct zip_built *z) { put16(z->data + z->cdh[1] + 10, 12); }

static void p_stored_sizes(struct zip_built *z) { put32(z->data + z->cdh[1] + 24, 2); }

static void p_z64_no_extra(struct zip_built *z) { put32(z->data + z->eocd_off + 16, 0xffffffff); }

static void test_hostile(void)
{
	static const struct hostile t[] = {
	    {"truncated EOCD",
	     {{.name = "a", .data = "A"}},
	     1,
	     p_truncate_eocd,
	     "no end of central directory"},
	    {"garbage", {{.name = "a", .data = "A"}}, 1, p_garbage, "no end of central directory"},
	    {"comment length",
	     {{.name = "a", .data = "A"}},
	     1,
	     p_comment_len,
	     "no end of central directory"},
	    {"cd offset", {{.name = "a", .data = "A"}}, 1, p_cd_off, "does not end"},
	    {"cd offset huge", {{.name = "a", .data = "A"}}, 1, p_cd_off_huge, "does not end"},
	    {"cd size", {{.name = "a", .data = "A"}}, 1, p_cd_size, "does not end"},
	    {"count more", {{.name = "a"}, {.name = "b"}}, 2, p_count_more, "cannot fit"},
	    {"count less", {{.name = "a"}, {.name = "b"}}, 2, p_count_less, "bytes after"},
	    {"disk", {{.name = "a"}}, 1, p_disk, "multi-disk"},
	    {"disk count", {{.name = "a"}, {.name = "b"}}, 2, p_disk_count, "multi-disk"},
	    {"entry disk",
	     {{.name = "a"}, {.name = "b"}},
	     2,
	     p_entry_disk,
	     "entry 'b': multi-disk"},
	    {"cd signature",
	     {{.name = "a"}, {.name = "b"}},
	     2,
	     p_cd_sig,
	     "entry 1: bad central directory header"},
	    {"same lho",
	     {{.name = "a", .data = "A"}, {.name = "b", .data = "B"}},
	     2,
	     p_lho_same,
	     "entry 'b': local data overlaps entry 'a'"},
	    {"lho in cd",
	     {{.name = "a", .data = "A"}, {.name = "b", .data = "B"}},
	     2,
	     p_lho_into_cd,
	     "entry 'b': local data at"},
	    {"lho past end",
	     {{.name = "a", .data = "A"}, {.name = "b", .data = "B"}},
	     2,
	     p_lho_past_end,
	     "runs into the central directory"},
	    {"csize overlap",
	     {{.name = "a", .data = "A"}, {.name = "b", .data = "B"}},
	     2,
	     p_csize_overlap,
	     "entry 'b': local data overlaps entry 'a'"},
	    {"csize huge",
	     {{.name = "a", .data = "A"}, {.name = "b", .data = "B"}},
	     2,
	     p_csize_huge,
	     "entry 'b': local data"},
	    {"name length",
	     {{.name = "a"}, {.name = "b"}},
	     2,
	     p_namelen_huge,
	     "entry 1: header runs past"},
	    {"extra length",
	     {{.name = "a"}, {.name = "b"}},
	     2,
	     p_extralen_huge,
	     "entry 0: header runs past"},
	    {"encrypted", {{.name = "a"}, {.name = "b"}}, 2, p_encrypted, "entry 'b': encrypted"},
	    {"method",
	     {{.name = "a"}, {.name = "b"}},
	     2,
	     p_method,
	     "entry 'b': compression method 12"},
	    {"stored sizes",
	     {{.name = "a"}, {.name = "b", .data = "B"}},
	     2,
	     p_stored_sizes,
	     "entry 'b': stored entry"},
	    {"zip64 without locator", {{.name = "a"}}, 1, p_z64_no_extra, "does not end"},
	    {"duplicate",
	     {{.name = "a/b", .data = "1"}, {.name = "a/b", .data = "2"}},
	     2,
	     NULL,
	     "entry 'a/b': duplicate name"},
	    {"file and dir",
	     {{.name = "a/b", .data = "1"}, {.name = "a"}},
	     2,
	     NULL,
	     "entry 'a': both a file and a directory"},
	    {"file and dir entry",
	     {{.name = "x"}, {.name = "x-y"}, {.name = "x/"}},
	     3,
	     NULL,
	     "entry 'x': both a file and a directory"},
	    {"dotdot",
	     {{.name = "ok"}, {.name = "a/../b"}},
	     2,
	     NULL,
	     "entry 'a/../b': name escapes the tree"},
	    {"parent", {{.name = "../x"}}, 1, NULL, "entry '../x': name escapes the tree"},
	    {"absolute", {{.name = "/abs"}}, 1, NULL, "entry '/abs': absolute path"},
	    {"backslash", {{.name = "a\\b"}}, 1, NULL, "entry 'a\\x5cb': backslash"},
	    {"nul", {{.name = "a\0b", .namelen = 3}}, 1, NULL, "entry 'a\\x00b': NUL in name"},
	    {"drive", {{.name = "C:x"}}, 1, NULL, "entry 'C:x': drive letter"},
	    {"empty name", {{.name = "", .namelen = 0}}, 1, NULL, "entry '': empty name"},
	    {"empty segment", {{.name = "a//b"}}, 1, NULL, "empty path segment"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct zip_built z;
		struct zip_cd *cd = NULL;
		char err[256] = "";
		int r;

		zb_build(t[i].es, t[i].n, NULL, &z);
		if (t[i].patch)
			t[i].patch(&z);
		r = parse_all(&z, &cd, err, sizeof(err));
		if (r != -EBADMSG || !strstr(err, t[i].msg))
			fprintf(stderr, "hostile '%s': r=%d err='%s', want '%s'\n", t[i].what, r,
				err, t[i].msg);
		CHECK_INT(r, -EBADMSG);
		CHECK(strstr(err, t[i].msg) != NULL);
		CHECK(cd == NULL);
		/* Every shorter tail must fail cleanly too (never crash). */
		for (size_t cut = 1; cut < z.len && cut < 200; cut++) {
			uint64_t need = 0;

			r = zipcd_parse(z.data + cut, z.len - cut, cut, z.len, &cd, &need, err,
					sizeof(err));
			CHECK(r == -EBADMSG || (r == -EAGAIN && need < cut));
			if (r == 0)
				zipcd_free(cd);
		}
		free(z.data);
	}
}

static void test_local_header(void)
{
	const struct zb_entry es[] = {{.name = "pkg/mod.py", .method = 8, .data = "x = 1\n"},
				      {.name = "pkg/other.py", .data = "y"}};
	struct zip_built z;
	struct zip_cd *cd;
	char err[256] = "";
	struct zip_entry e;
	uint64_t off = 0;
	char other[] = "pkg/mod.pz";

	zb_build(es, ARRAY_SIZE(es), NULL, &z);
	CHECK_INT(parse_all(&z, &cd, err, sizeof(err)), 0);
	if (!cd) {
		free(z.data);
		return;
	}
	e = cd->entries[0];
	CHECK_INT(zipcd_local_header(z.data, 29, &e, &off), -EAGAIN);
	CHECK_INT(off, 30 + 10);
	CHECK_INT(zipcd_local_header(z.data, 35, &e, &off), -EAGAIN);
	CHECK_INT(off, 40);
	CHECK_INT(zipcd_local_header(z.data, 40, &e, &off), 0);
	CHECK_INT(off, 40);
	/* Wrong entry for these bytes: name and method differ. */
	CHECK_INT(zipcd_local_header(z.data, z.len, &cd->entries[1], &off), -EBADMSG);
	e.name = other;
	CHECK_INT(zipcd_local_header(z.data, z.len, &e, &off), -EBADMSG);
	e = cd->entries[0];
	z.data[0] = 'X';
	CHECK_INT(zipcd_local_header(z.data, z.len, &e, &off), -EBADMSG);
	z.data[0] = 'P';
	/* A local extra field moves the data. */
	put16(z.data + 28, 8);
	CHECK_INT(zipcd_local_header(z.data, 45, &e, &off), -EAGAIN);
	CHECK_INT(off, 48);
	CHECK_INT(zipcd_local_header(z.data, z.len, &e, &off), 0);
	CHECK_INT(off, 48);
	/* A hostile csize near 2^64 must not wrap the data range. */
	e.csize = UINT64_MAX - 20;
	CHECK_INT(zipcd_local_header(z.data, z.len, &e, &off), -EBADMSG);
	zipcd_free(cd);
	free(z.data);
}

/* A central directory larger than the 64 KiB tail needs a second request,
 * and a zip64 one may need several. */
static void test_eagain(void)
{
	static struct zb_entry es[2000];
	static char names[2000][48];
	struct zip_built z;
	struct zip_cd *cd;
	char err[256] = "";
	uint64_t need = 0, tail;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(es); i++) {
		snprintf(names[i], sizeof(names[i]), "pkg/sub/module_with_long_name_%04zu.py", i);
		es[i] = (struct zb_entry){.name = names[i], .data = "#", .method = i % 2 ? 8 : 0};
	}
	zb_build(es, ARRAY_SIZE(es), NULL, &z);
	CHECK(z.cd_size > ZIPCD_TAIL_SIZE);
	tail = z.len - ZIPCD_TAIL_SIZE;
	r = zipcd_parse(z.data + tail, ZIPCD_TAIL_SIZE, tail, z.len, &cd, &need, err, sizeof(err));
	CHECK_INT(r, -EAGAIN);
	CHECK_INT(need, z.cd_off);
	r = zipcd_parse(z.data + need, z.len - need, need, z.len, &cd, &need, err, sizeof(err));
	CHECK_INT(r, 0);
	CHECK(cd && cd->n == 2000 && zipcd_find(cd, names[1234]) == &cd->entries[1234]);
	for (size_t i = 0; cd && i < cd->n; i++)
		if (zipcd_find(cd, names[i]) != &cd->entries[i])
			CHECK(0);
	zipcd_free(cd);
	crosscheck(z.data, z.len, "builder 2000 entries", false);
	/* Not reaching the end of the file is a caller bug. */
	CHECK_INT(zipcd_parse(z.data, 100, 0, z.len, &cd, &need, err, sizeof(err)), -EINVAL);
	free(z.data);

	/* zip64: from the last 22 bytes, each round asks for earlier bytes. */
	struct zb_opts o = {.zip64 = true};
	zb_build(es, ARRAY_SIZE(es), &o, &z);
	tail = z.len - 22;
	r = zipcd_parse(z.data + tail, 22, tail, z.len, &cd, &need, err, sizeof(err));
	CHECK_INT(r, -EAGAIN);
	CHECK_INT(need, z.eocd_off - 20);
	tail = need;
	r = zipcd_parse(z.data + tail, z.len - tail, tail, z.len, &cd, &need, err, sizeof(err));
	CHECK_INT(r, -EAGAIN);
	CHECK_INT(need, z.z64_off);
	tail = need;
	r = zipcd_parse(z.data + tail, z.len - tail, tail, z.len, &cd, &need, err, sizeof(err));
	CHECK_INT(r, -EAGAIN);
	CHECK_INT(need, z.cd_off);
	CHECK_INT(parse_tail(z.data, z.len, &cd, err, sizeof(err)), 2);
	CHECK(cd && cd->n == 2000);
	zipcd_free(cd);
	free(z.data);

	/* A 64 KiB comment hides the end record from the first request. */
	{
		char *comment = xmalloc(0xffff);
		struct zb_opts oc = {.comment = comment, .commentlen = 0xffff};

		memset(comment, 'c', 0xffff);
		zb_build(es, 3, &oc, &z);
		tail = z.len - ZIPCD_TAIL_SIZE;
		r = zipcd_parse(z.data + tail, ZIPCD_TAIL_SIZE, tail, z.len, &cd, &need, err,
				sizeof(err));
		CHECK_INT(r, -EAGAIN);
		CHECK_INT(need, z.len - 65557);
		CHECK_INT(parse_tail(z.data, z.len, &cd, err, sizeof(err)), 3);
		CHECK(cd && cd->n == 3);
		zipcd_free(cd);
		free(z.data);
		free(comment);
	}
}

static void test_entry_cap(void)
{
	/* An EOCD announcing 0xFFFF entries in a tiny file is rejected before
	 * anything is allocated for them. */
	uint8_t eocd[22] = {0x50, 0x4b, 0x05, 0x06};
	struct zip_cd *cd = NULL;
	uint64_t need;
	char err[256];

	put16(eocd + 8, 0xffff);
	put16(eocd + 10, 0xffff);
	CHECK_INT(zipcd_parse(eocd, sizeof(eocd), 0, sizeof(eocd), &cd, &need, err, sizeof(err)),
		  -EBADMSG);
	CHECK_INT(zipcd_parse(eocd, 10, 12, 22, &cd, &need, err, sizeof(err)), -EAGAIN);
	CHECK_INT(need, 0);
	CHECK_INT(zipcd_parse(eocd, 10, 0, 10, &cd, &need, err, sizeof(err)), -EBADMSG);
	CHECK(cd == NULL);
}

/* Zips written by Python's zipfile, the writer of most wheels. */
static void test_python_zips(void)
{
	static const char *const files[] = {"basic", "big", "many", "forced64", "descriptor"};
	char dir[] = "/tmp/test_zipcd.XXXXXX";
	char cmd[512];

	if (access("/usr/bin/python3", X_OK) != 0 || access("unit/make_zips.py", R_OK) != 0) {
		printf("python zips: skipped (no /usr/bin/python3 or unit/make_zips.py)\n");
		return;
	}
	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 unit/make_zips.py %s", dir);
	CHECK_INT(system(cmd), 0);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char path[256], *data = NULL;
		size_t len = 0;
		struct zip_cd *cd;
		char err[256] = "";

		snprintf(path, sizeof(path), "%s/%s.zip", dir, files[i]);
		CHECK_INT(file_read_all(path, &data, &len), 0);
		if (!data)
			continue;
		crosscheck((const uint8_t *)data, len, files[i], false);
		if (strcmp(files[i], "basic") == 0) {
			CHECK(parse_tail((uint8_t *)data, len, &cd, err, sizeof(err)) == 1);
			const struct zip_entry *e = cd ? zipcd_find(cd, "pkg/tool") : NULL;
			CHECK(e && e->mode == 0100755 && e->mtime == 1614834368);
			e = cd ? zipcd_find(cd, "pkg/caf\xc3\xa9.txt") : NULL;
			CHECK(e && e->mtime == 946684798); /* 1999-12-31 23:59:58 */
			e = cd ? zipcd_find(cd, "dosfile.txt") : NULL;
			CHECK(e && e->mode == 0);
			zipcd_free(cd);
		}
		if (strcmp(files[i], "many") == 0) {
			CHECK(parse_tail((uint8_t *)data, len, &cd, err, sizeof(err)) == 2);
			CHECK(cd && cd->n == 66000 && zipcd_find(cd, "m/65999"));
			zipcd_free(cd);
		}
		free(data);
	}
	rm_rf(dir);
}

int main(void)
{
	/* libzip reports DOS times in local time; ours are UTC. */
	setenv("TZ", "UTC", 1);
	tzset();
	test_names();
	test_basic();
	test_empty_and_comment();
	test_zip64();
	test_descriptor();
	test_hostile();
	test_local_header();
	test_eagain();
	test_entry_cap();
	test_python_zips();
	return check_done("zipcd");
}
