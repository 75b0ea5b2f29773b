/* test_inflate: stored and deflated decoding, verification and chunking. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fetch/inflate.h"
#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "check.h"

#define OUT_CHUNK_MAX (256 * 1024)

static uint8_t *raw_deflate(const uint8_t *in, size_t n, int level, size_t *ret_len)
{
	z_stream zs = {0};
	size_t cap = compressBound(n) + 64;
	uint8_t *out = xmalloc(cap);

	if (deflateInit2(&zs, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
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

static uint64_t rng = 88172645463325252ull;

static uint8_t rnd8(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint8_t)rng;
}

enum kind { RANDOM, TEXT, ZEROS };

static uint8_t *make_data(enum kind k, size_t n)
{
	uint8_t *p = xmalloc(n ? n : 1);

	for (size_t i = 0; i < n; i++)
		p[i] = k == RANDOM ? rnd8()
		       : k == TEXT ? "abcdefgh ijklmno\n"[(i * 7 + i / 13) % 17]
				   : 0;
	return p;
}

/* Collects output and checks the chunking contract. */
struct sink {
	uint8_t *data;
	size_t len, cap;
	size_t calls, max_chunk;
	size_t fail_after; /* nonzero: return -EIO on this call */
};

static int sink_out(void *ud, const uint8_t *p, size_t n)
{
	struct sink *s = ud;

	s->calls++;
	if (s->fail_after && s->calls == s->fail_after)
		return -EIO;
	CHECK(n > 0);
	s->max_chunk = MAX(s->max_chunk, n);
	if (s->len + n > s->cap) {
		s->cap = MAX(s->cap * 2, s->len + n);
		s->data = xrealloc(s->data, s->cap);
	}
	memcpy(s->data + s->len, p, n);
	s->len += n;
	return 0;
}

/* Feeds in pieces of `piece` bytes (0: all at once).  Returns the first
 * error of feed or finish. */
static int run(uint16_t method, const uint8_t *in, size_t inlen, uint64_t usize, uint32_t crc,
	       size_t piece, struct sink *s, uint8_t sha[SHA256_LEN], char *err, size_t errlen)
{
	struct inflater *f = inflater_new(method, usize, crc, sink_out, s);
	int r = 0;

	if (!f)
		return -ENOTSUP;
	for (size_t off = 0; off < inlen && r == 0;) {
		size_t n = piece ? MIN(piece, inlen - off) : inlen - off;

		r = inflater_feed(f, in + off, n);
		off += n;
	}
	if (r == 0)
		r = inflater_finish(f, sha, err, errlen);
	else
		CHECK_INT(inflater_finish(f, sha, err, errlen), r); /* errors are sticky */
	inflater_free(f);
	return r;
}

static void test_roundtrip(void)
{
	static const struct {
		enum kind kind;
		size_t n;
		uint16_t method;
		int level;
		size_t piece;
	} t[] = {
	    {TEXT, 0, 8, 6, 0},
	    {TEXT, 0, 0, 0, 0},
	    {TEXT, 1, 8, 6, 0},
	    {RANDOM, 1, 0, 0, 0},
	    {TEXT, 100000, 8, 9, 0},
	    {TEXT, 100000, 8, 1, 1},
	    {RANDOM, 100000, 8, 6, 0},
	    {RANDOM, 100000, 8, 0, 777}, /* deflate's own stored blocks */
	    {RANDOM, 300000, 0, 0, 0},
	    {RANDOM, 300000, 0, 0, 4096},
	    {ZEROS, 5 << 20, 8, 9, 0}, /* 1000:1, many output chunks per input byte */
	    {ZEROS, 5 << 20, 8, 9, 3},
	    {TEXT, 3 << 20, 8, 6, 65536},
	    {RANDOM, 3 << 20, 8, 6, 1 << 20},
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint8_t *plain = make_data(t[i].kind, t[i].n), *comp, *buf = NULL;
		size_t clen;
		uint32_t crc = crc32_update(0, plain, t[i].n);
		uint8_t want[SHA256_LEN], sha[SHA256_LEN], sha2[SHA256_LEN];
		struct sink s = {0};
		char err[256] = "";
		int r;

		sha256_buf(plain, t[i].n, want);
		if (t[i].method == 8) {
			comp = raw_deflate(plain, t[i].n, t[i].level, &clen);
		} else {
			comp = xmalloc(t[i].n ? t[i].n : 1);
			memcpy(comp, plain, t[i].n);
			clen = t[i].n;
		}
		r = run(t[i].method, comp, clen, t[i].n, crc, t[i].piece, &s, sha, err,
			sizeof(err));
		if (r)
			fprintf(stderr, "roundtrip %zu: %s\n", i, err);
		CHECK_INT(r, 0);
		CHECK_INT(s.len, t[i].n);
		CHECK(t[i].n == 0 || memcmp(s.data, plain, t[i].n) == 0);
		CHECK(memcmp(sha, want, SHA256_LEN) == 0);
		CHECK(s.max_chunk <= OUT_CHUNK_MAX);
		if (t[i].n >= (3u << 20))
			CHECK(s.calls >= t[i].n / OUT_CHUNK_MAX);

		r = inflate_buffer(t[i].method, comp, clen, t[i].n, crc, &buf, sha2, err,
				   sizeof(err));
		CHECK_INT(r, 0);
		CHECK(buf != NULL && (t[i].n == 0 || memcmp(buf, plain, t[i].n) == 0));
		CHECK(memcmp(sha2, want, SHA256_LEN) == 0);
		free(buf);
		free(s.data);
		free(comp);
		free(plain);
	}
}

static void test_errors(void)
{
	size_t n = 200000, clen;
	uint8_t *plain = make_data(TEXT, n);
	uint8_t *comp = raw_deflate(plain, n, 6, &clen);
	uint8_t *bad = xmalloc(clen + 16), *buf;
	uint32_t crc = crc32_update(0, plain, n);
	uint8_t sha[SHA256_LEN];
	static const struct {
		const char *what;
		uint16_t method;
		int64_t usize_delta;
		uint32_t crc_xor;
		size_t cut;	 /* bytes removed from the end of the stream */
		size_t flip;	 /* nonzero: xor 0xff into this byte */
		const char *msg; /* expected in err */
	} t[] = {
	    {"ok", 8, 0, 0, 0, 0, NULL},
	    {"trailing bytes ignored", 8, 0, 0, 0, 0, NULL},
	    {"wrong crc", 8, 0, 1, 0, 0, "CRC-32 mismatch: expected"},
	    {"usize too small", 8, -1, 0, 0, 0, "exceeds the expected 199999"},
	    {"usize too large", 8, 1, 0, 0, 0, "size mismatch: expected 200001 bytes, got 200000"},
	    {"truncated", 8, 0, 0, 10, 0, "truncated"},
	    {"truncated to nothing", 8, 0, 0, SIZE_MAX, 0, "truncated"},
	    {"corrupt header", 8, 0, 0, 0, 1, "corrupt"},
	    {"stored too long", 0, -5, 0, 0, 0, "exceeds"},
	    {"stored too short", 0, 5, 0, 0, 0, "size mismatch"},
	    {"stored wrong crc", 0, 0, 0x80000000, 0, 0, "CRC-32 mismatch"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		const uint8_t *in = t[i].method == 8 ? comp : plain;
		size_t inlen = t[i].method == 8 ? clen : n;
		struct sink s = {0};
		char err[256] = "";
		int r;

		memcpy(bad, in, MIN(inlen, clen));
		if (t[i].method == 8) {
			in = bad;
			if (i == 1) {
				memcpy(bad + clen, "GARBAGE!", 8);
				inlen += 8;
			}
			if (t[i].flip)
				bad[0] ^= 0xff;
			inlen -= MIN(inlen, t[i].cut);
		}
		for (size_t piece = 0; piece <= 1000; piece += 1000) {
			r = run(t[i].method, in, inlen, n + t[i].usize_delta, crc ^ t[i].crc_xor,
				piece, &s, sha, err, sizeof(err));
			if (!t[i].msg) {
				CHECK_INT(r, 0);
			} else {
				CHECK_INT(r, -EBADMSG);
				if (!strstr(err, t[i].msg))
					fprintf(stderr, "%s: err '%s'\n", t[i].what, err);
				CHECK(strstr(err, t[i].msg) != NULL);
			}
			/* Never more output than promised. */
			CHECK(s.len <= n + (t[i].usize_delta > 0 ? t[i].usize_delta : 0));
			s.len = 0;
		}
		r = inflate_buffer(t[i].method, in, inlen, n + t[i].usize_delta, crc ^ t[i].crc_xor,
				   &buf, sha, err, sizeof(err));
		CHECK_INT(r, t[i].msg ? -EBADMSG : 0);
		if (r == 0)
			free(buf);
		free(s.data);
	}
	free(bad);
	free(comp);
	free(plain);
}

/* Random garbage must fail cleanly, never overflow or hang. */
static void test_garbage(void)
{
	uint8_t in[4096], sha[SHA256_LEN], *buf;
	char err[256];
	int ok = 0;

	for (int round = 0; round < 500; round++) {
		size_t n = 1 + rnd8() * 16u;
		int r;

		for (size_t i = 0; i < n; i++)
			in[i] = rnd8();
		r = inflate_buffer(8, in, n, rnd8() * 100u, 0, &buf, sha, err, sizeof(err));
		CHECK(r == 0 || r == -EBADMSG);
		if (r == 0) {
			free(buf);
			ok++;
		}
	}
	CHECK(ok < 5); /* a random CRC rarely matches */
}

static void test_bomb(void)
{
	/* 64 MiB of zeros compresses to ~64 KiB; with usize 1000 the output
	 * must stop right after 1000 bytes, without decoding the rest. */
	size_t n = 64 << 20, clen;
	uint8_t *plain = xcalloc(1, n);
	uint8_t *comp = raw_deflate(plain, n, 9, &clen);
	struct sink s = {0};
	uint8_t sha[SHA256_LEN];
	char err[256] = "";

	free(plain);
	CHECK_INT(run(8, comp, clen, 1000, 0, 0, &s, sha, err, sizeof(err)), -EBADMSG);
	CHECK(s.len <= 1000);
	CHECK(strstr(err, "exceeds") != NULL);
	free(s.data);
	free(comp);
}

static void test_api(void)
{
	struct sink s = {.fail_after = 2};
	uint8_t *plain = make_data(RANDOM, 1 << 20), sha[SHA256_LEN], *buf = NULL;
	uint32_t crc = crc32_update(0, plain, 1 << 20);
	char err[256] = "";
	struct inflater *f;

	CHECK(inflater_new(12, 10, 0, sink_out, &s) == NULL);
	CHECK(inflater_new(99, 10, 0, sink_out, &s) == NULL);
	CHECK(inflater_free(NULL) == NULL);
	CHECK_INT(inflate_buffer(14, plain, 10, 10, 0, &buf, sha, err, sizeof(err)), -EBADMSG);
	CHECK(buf == NULL);

	/* A callback error aborts and is returned as is. */
	CHECK_INT(run(0, plain, 1 << 20, 1 << 20, crc, 0, &s, sha, err, sizeof(err)), -EIO);
	CHECK_INT(s.calls, 2);
	free(s.data);

	/* Finishing twice is a caller error, not a crash. */
	f = inflater_new(0, 3, crc32_update(0, "abc", 3), NULL, NULL);
	CHECK_INT(inflater_feed(f, (const uint8_t *)"abc", 3), 0);
	CHECK_INT(inflater_finish(f, sha, err, sizeof(err)), 0);
	CHECK(inflater_finish(f, sha, err, sizeof(err)) < 0);
	inflater_free(f);

	/* Freed mid-stream: nothing leaks (ASan build). */
	f = inflater_new(8, 100, 0, sink_out, &s);
	inflater_free(f);
	free(plain);
}

int main(void)
{
	test_roundtrip();
	test_errors();
	test_garbage();
	test_bomb();
	test_api();
	return check_done("inflate");
}
