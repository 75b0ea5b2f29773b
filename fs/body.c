/* body: the first open of a file — one ranged request for the local header
 * and the compressed bytes, streamed through the inflater into a cache temp
 * file, checked against the zip CRC-32 and RECORD's sha256, then published.
 *
 * The local extra field's length is only known from the local header, so the
 * first request adds ZIPCD_LOCAL_SLACK bytes; when that is not enough the
 * missing compressed bytes are asked for in a second request that continues
 * the same stream.  Bodies that fail verification are never published. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fetch/inflate.h"
#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

struct fill {
	struct fs_ctx *ctx;
	struct wheel_src *w;
	const struct zip_entry *e;
	const struct tree_node *nd;
	int fd;
	struct inflater *inf;
	struct buf hdr;      /* bytes from e->lho until the local header is parsed */
	uint64_t data_off;   /* 0 until known */
	uint64_t fed;        /* compressed bytes given to the inflater */
	uint64_t pos;        /* file offset of the next byte the sink will see */
	bool inflate_failed; /* the inflater, not the transfer, stopped the fill */
};

static int out_write(void *ud, const uint8_t *data, size_t len)
{
	return write_full(*(int *)ud, data, len);
}

static int feed(struct fill *f, const uint8_t *p, size_t len)
{
	uint64_t left = f->e->csize - f->fed;
	if (len > left)
		len = (size_t)left; /* the rest is the next entry's header */
	if (!len)
		return 0;
	f->fed += len;
	int r = inflater_feed(f->inf, p, len);
	f->inflate_failed = r < 0;
	return r;
}

static int sink(void *ud, const uint8_t *data, size_t len)
{
	struct fill *f = ud;
	uint64_t at = f->pos;
	f->pos += len;
	if (f->data_off)
		return at < f->data_off + f->fed ? -EBADMSG : feed(f, data, len);
	buf_append(&f->hdr, data, len);
	uint64_t doff;
	int r = zipcd_local_header(f->hdr.data, f->hdr.len, f->e, &doff);
	if (r == -EAGAIN)
		return 0;
	if (r < 0)
		return r;
	f->data_off = doff;
	uint64_t skip = doff - f->e->lho;
	if (skip < f->hdr.len)
		r = feed(f, f->hdr.data + skip, f->hdr.len - (size_t)skip);
	buf_free(&f->hdr);
	return r;
}

static int body_fill(void *ud, int fd)
{
	struct fill *f = ud;
	const struct zip_entry *e = f->e;
	const char *whl = f->w->spec->filename;
	char err[300] = "";
	uint64_t size = f->w->spec->size;

	f->fd = fd;
	f->inf = inflater_new(e->method, e->usize, e->crc32, out_write, &f->fd);
	if (!f->inf)
		return -EIO;
	buf_init(&f->hdr);
	f->pos = e->lho;
	uint64_t want = MIN(zipcd_span_guess(e), size - e->lho);
	int r = wheel_read(f->ctx, f->w, e->lho, want, sink, f, err, sizeof(err));
	if (r == 0 && !f->data_off && f->hdr.len >= ZIPCD_LOCAL_HEADER_MIN) {
		/* A long local extra field: read again, knowing the header's length. */
		uint64_t doff = 0;
		zipcd_local_header(f->hdr.data, f->hdr.len, e, &doff);
		if (doff > e->lho && doff - e->lho <= 65536 + 65536 + 30) {
			buf_free(&f->hdr);
			f->pos = e->lho;
			want = MIN(doff - e->lho + e->csize, size - e->lho);
			r = wheel_read(f->ctx, f->w, e->lho, want, sink, f, err, sizeof(err));
		}
	}
	if (r == 0 && f->data_off && f->fed < e->csize) {
		f->pos = f->data_off + f->fed;
		r = wheel_read(f->ctx, f->w, f->pos, e->csize - f->fed, sink, f, err, sizeof(err));
	}
	if (r == 0 && (!f->data_off || f->fed != e->csize)) {
		snprintf(err, sizeof(err), "truncated entry data");
		r = -EBADMSG;
	}
	uint8_t got[32];
	if (r == 0 || f->inflate_failed) {
		/* the inflater knows why it stopped (corrupt stream, CRC, size) */
		int q = inflater_finish(f->inf, got, err, sizeof(err));
		r = r ? r : q;
	}
	if (r == 0 && f->nd->has_sha && memcmp(got, f->nd->sha256, 32) != 0) {
		char want_hex[65], got_hex[65];
		hex_encode(f->nd->sha256, 32, want_hex);
		hex_encode(got, 32, got_hex);
		log_err("wheel \"%s\": entry \"%s\": sha256 mismatch: RECORD says %s, got %s", whl,
			e->name, want_hex, got_hex);
		r = -EIO;
	} else if (r < 0) {
		log_err("wheel \"%s\": entry \"%s\": not served: %s", whl, e->name,
			err[0] ? err : strerror(-r));
		r = -EIO;
	}
	buf_free(&f->hdr);
	f->inf = inflater_free(f->inf);
	return r;
}

int fs_body_open(struct fs_ctx *ctx, uint32_t i)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	if (nd->kind != TREE_BODY)
		return -EINVAL;
	struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	struct fill f = {
		.ctx = ctx,
		.w = w,
		.e = &w->meta.cd->entries[nd->body.entry],
		.nd = nd,
	};
	uint8_t key[32];
	bool verified;
	body_key(ctx, i, key, &verified);
	return cache_get(ctx->cache, key, verified, nd->size, body_fill, &f);
}

void body_key(const struct fs_ctx *ctx, uint32_t i, uint8_t key[32], bool *ret_verified)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	const struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	*ret_verified = nd->has_sha;
	if (nd->has_sha) {
		memcpy(key, nd->sha256, 32);
		return;
	}
	/* No RECORD hash: key by (wheel, entry); CRC-32 still verifies it. */
	const char *name = w->meta.cd->entries[nd->body.entry].name;
	struct sha256_ctx h;
	sha256_init(&h);
	sha256_update(&h, w->spec->sha256, 32);
	sha256_update(&h, name, strlen(name));
	sha256_final(&h, key);
}
