/* inflate: stored copy or raw-deflate decoding of one zip entry, verified
 * on the way (size, CRC-32) and hashed (SHA-256) for the cache.
 *
 * The expected size comes from an untrusted central directory, so it bounds
 * the output (a deflate bomb stops at usize + 1 bytes) but never sizes an
 * allocation beyond OUT_CHUNK.  Errors are sticky: after one, feed keeps
 * returning it and finish reports why. */
#include "fetch/inflate.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fetch/util/util.h"
#include "fetch/zipcd.h"

#define OUT_CHUNK (256 * 1024)
#define IN_CHUNK (1u << 30) /* z_stream counts in uInt */

struct inflater {
	z_stream zs;
	bool zs_live;
	bool stream_end; /* deflate saw its final block */
	uint16_t method;
	uint64_t usize, done;
	uint32_t crc_want, crc;
	struct sha256_ctx sha;
	bool sha_live;
	int error; /* sticky, 0 or -errno */
	char msg[128];
	inflate_out_fn out;
	void *ud;
	uint8_t *obuf;
	size_t ocap;
};

static int __attribute__((format(printf, 3, 4)))
set_error(struct inflater *f, int r, const char *fmt, ...)
{
	va_list ap;

	if (f->error)
		return f->error;
	va_start(ap, fmt);
	vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
	va_end(ap);
	f->error = r;
	return r;
}

struct inflater *inflater_new(uint16_t method, uint64_t usize, uint32_t crc32, inflate_out_fn out,
			      void *ud)
{
	struct inflater *f;

	if (method != ZIP_METHOD_STORED && method != ZIP_METHOD_DEFLATED)
		return NULL;
	f = xcalloc(1, sizeof(*f));
	f->method = method;
	f->usize = usize;
	f->crc_want = crc32;
	f->out = out;
	f->ud = ud;
	sha256_init(&f->sha);
	f->sha_live = true;
	if (method == ZIP_METHOD_DEFLATED) {
		/* One byte more than expected, so overlong output shows. */
		f->ocap = usize < OUT_CHUNK ? (size_t)usize + 1 : OUT_CHUNK;
		f->obuf = xmalloc(f->ocap);
		if (inflateInit2(&f->zs, -MAX_WBITS) != Z_OK) {
			inflater_free(f);
			return NULL;
		}
		f->zs_live = true;
	}
	return f;
}

static int emit(struct inflater *f, const uint8_t *p, size_t n)
{
	int r;

	if (!n)
		return 0;
	if (n > f->usize - f->done)
		return set_error(f, -EBADMSG, "output exceeds the expected %llu bytes",
				 (unsigned long long)f->usize);
	f->done += n;
	f->crc = crc32_update(f->crc, p, n);
	sha256_update(&f->sha, p, n);
	r = f->out ? f->out(f->ud, p, n) : 0;
	if (r < 0)
		return set_error(f, r, "output callback failed: %s", strerror(-r));
	return 0;
}

static int feed_stored(struct inflater *f, const uint8_t *in, size_t len)
{
	while (len) {
		size_t n = MIN(len, (size_t)OUT_CHUNK);
		int r = emit(f, in, n);

		if (r < 0)
			return r;
		in += n;
		len -= n;
	}
	return 0;
}

static int feed_deflated(struct inflater *f, const uint8_t *in, size_t len)
{
	while (len && !f->stream_end) {
		uInt chunk = (uInt)MIN(len, (size_t)IN_CHUNK);

		f->zs.next_in = (Bytef *)in;
		f->zs.avail_in = chunk;
		/* Run until zlib has consumed the input and has no output
		 * pending (a full output buffer may hide more). */
		for (;;) {
			int zr, r;

			f->zs.next_out = f->obuf;
			f->zs.avail_out = (uInt)f->ocap;
			zr = inflate(&f->zs, Z_NO_FLUSH);
			if (zr == Z_NEED_DICT || zr == Z_DATA_ERROR || zr == Z_STREAM_ERROR)
				return set_error(f, -EBADMSG, "corrupt deflate stream: %s",
						 f->zs.msg ? f->zs.msg : "bad data");
			if (zr == Z_MEM_ERROR)
				return set_error(f, -ENOMEM, "out of memory in inflate");
			r = emit(f, f->obuf, f->ocap - f->zs.avail_out);
			if (r < 0)
				return r;
			if (zr == Z_STREAM_END) {
				f->stream_end = true; /* trailing bytes are ignored */
				break;
			}
			if (f->zs.avail_in == 0 && f->zs.avail_out != 0)
				break;
			if (zr == Z_BUF_ERROR && f->zs.avail_out != 0)
				break; /* no progress possible without more input */
		}
		in += chunk - f->zs.avail_in;
		len -= chunk - f->zs.avail_in;
		if (f->zs.avail_in && !f->stream_end)
			return set_error(f, -EBADMSG, "inflate made no progress");
	}
	return 0;
}

int inflater_feed(struct inflater *f, const uint8_t *in, size_t len)
{
	if (f->error)
		return f->error;
	if (f->method == ZIP_METHOD_STORED)
		return feed_stored(f, in, len);
	return feed_deflated(f, in, len);
}

int inflater_finish(struct inflater *f, uint8_t ret_sha[SHA256_LEN], char *err, size_t errlen)
{
	if (!f->error && !f->sha_live)
		set_error(f, -EINVAL, "inflater already finished");
	if (!f->error && f->method == ZIP_METHOD_DEFLATED && !f->stream_end)
		set_error(f, -EBADMSG, "deflate stream truncated after %llu of %llu bytes",
			  (unsigned long long)f->done, (unsigned long long)f->usize);
	if (!f->error && f->done != f->usize)
		set_error(f, -EBADMSG, "size mismatch: expected %llu bytes, got %llu",
			  (unsigned long long)f->usize, (unsigned long long)f->done);
	if (!f->error && f->crc != f->crc_want)
		set_error(f, -EBADMSG, "CRC-32 mismatch: expected %08x, got %08x", f->crc_want,
			  f->crc);
	if (f->error) {
		if (err && errlen)
			snprintf(err, errlen, "%s", f->msg);
		return f->error;
	}
	sha256_final(&f->sha, ret_sha);
	f->sha_live = false;
	return 0;
}

struct inflater *inflater_free(struct inflater *f)
{
	if (!f)
		return NULL;
	if (f->zs_live)
		inflateEnd(&f->zs);
	if (f->sha_live)
		sha256_abort(&f->sha);
	free(f->obuf);
	free(f);
	return NULL;
}

struct collect {
	uint8_t *data;
	size_t len, cap;
};

static int collect_out(void *ud, const uint8_t *p, size_t n)
{
	struct collect *c = ud;

	if (n > c->cap - c->len) {
		c->cap = MAX(c->cap * 2, c->len + n);
		c->data = xrealloc(c->data, c->cap);
	}
	memcpy(c->data + c->len, p, n);
	c->len += n;
	return 0;
}

int inflate_buffer(uint16_t method, const uint8_t *in, size_t inlen, uint64_t usize, uint32_t crc32,
		   uint8_t **ret, uint8_t ret_sha[SHA256_LEN], char *err, size_t errlen)
{
	struct collect c = {0};
	struct inflater *f;
	int r;

	f = inflater_new(method, usize, crc32, collect_out, &c);
	if (!f) {
		if (err && errlen)
			snprintf(err, errlen, "compression method %u is not supported", method);
		return -EBADMSG;
	}
	/* usize is untrusted: reserve up front only what is plausible. */
	c.cap = (size_t)MIN(usize, (uint64_t)64 << 20);
	c.data = xmalloc(c.cap ? c.cap : 1);
	r = inflater_feed(f, in, inlen);
	if (r == 0)
		r = inflater_finish(f, ret_sha, err, errlen);
	else if (err && errlen)
		snprintf(err, errlen, "%s", f->msg);
	inflater_free(f);
	if (r < 0) {
		free(c.data);
		return r;
	}
	*ret = c.data;
	return 0;
}
