/* body: the first open of a file — one ranged request for the local header
 * and the compressed bytes, streamed through the inflater into a cache temp
 * file, checked against the zip CRC-32 and RECORD's sha256, then published.
 *
 * The local extra field's length is only known from the local header, so the
 * first request adds ZIPCD_LOCAL_SLACK bytes; when that is not enough the
 * missing compressed bytes are asked for in a second request that continues
 * the same stream.  Bodies that fail verification are never published.
 *
 * Neighbours: Python reads a package's small files together, and a wheel
 * stores a directory's files next to each other.  The first open of a
 * small body (compressed <= NEIGHBOUR_MAX) asks for one range covering the
 * run of entries of the same directory around it (contiguous in the file,
 * each small, the run <= SPAN_MAX bytes), inflates and verifies each, and
 * publishes the neighbours it could claim along with the body asked for:
 * one round trip instead of one per file.  The run is planned before the
 * fill (body_claims) and its bodies are claimed together with the target
 * (cache_get, or cache_begin for the fill pool's opens), so concurrent
 * first opens of sibling files make one request, not one each.  A streamed
 * body brings no neighbours. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/inflate.h"
#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

struct run;

struct fill {
	struct fs_ctx *ctx;
	struct wheel_src *w;
	const struct zip_entry *e;
	const struct tree_node *nd;
	const struct run *run;	    /* neighbours to bring along, or NULL */
	struct cache_claim *claims; /* per entry of the run (the target's: never claimed) */
	int fd;
	struct cache_stream *stream; /* readers follow the temp file, or NULL */
	uint64_t deadline_ns;        /* the whole fill's (0: none) */
	struct inflater *inf;
	struct buf hdr;      /* bytes from e->lho until the local header is parsed */
	uint64_t data_off;   /* 0 until known */
	uint64_t fed;        /* compressed bytes given to the inflater */
	uint64_t pos;        /* file offset of the next byte the sink will see */
	bool inflate_failed; /* the inflater, not the transfer, stopped the fill */
};

static int sink_buf_body(void *ud, const uint8_t *data, size_t len)
{
	buf_append(ud, data, len);
	return 0;
}

/* Where the bytes of entry k can end: its span guess (header, name, slack,
 * data), cut at the next entry's local header when the directory lists them
 * in file order, so a request never reaches into its neighbour's bytes. */
static uint64_t entry_end(const struct wheel_src *w, size_t k)
{
	const struct zip_cd *cd = w->meta.cd;
	const struct zip_entry *e = &cd->entries[k];
	uint64_t end = MIN(e->lho + zipcd_span_guess(e), w->spec->size);
	if (k + 1 < cd->n && cd->entries[k + 1].lho > e->lho)
		end = MIN(end, cd->entries[k + 1].lho);
	return end;
}

static int out_write(void *ud, const uint8_t *data, size_t len)
{
	struct fill *f = ud;
	int r = write_full(f->fd, data, len);
	if (r == 0 && f->stream)
		cache_stream_advance(f->stream, len);
	return r;
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

static int entry_fill(void *ud, int fd)
{
	struct fill *f = ud;
	const struct zip_entry *e = f->e;
	const char *whl = f->w->spec->filename;
	char err[300] = "";
	uint64_t size = f->w->spec->size;

	f->fd = fd;
	f->inf = inflater_new(e->method, e->usize, e->crc32, out_write, f);
	if (!f->inf)
		return -EIO;
	buf_init(&f->hdr);
	f->pos = e->lho;
	uint64_t want = entry_end(f->w, (size_t)(e - f->w->meta.cd->entries)) - e->lho;
	int r = wheel_read_by(f->ctx, f->w, e->lho, want, sink, f, f->deadline_ns, err, sizeof(err));
	if (r == 0 && !f->data_off && f->hdr.len >= ZIPCD_LOCAL_HEADER_MIN) {
		/* A long local extra field: read again, knowing the header's length. */
		uint64_t doff = 0;
		zipcd_local_header(f->hdr.data, f->hdr.len, e, &doff);
		if (doff > e->lho && doff - e->lho <= 65536 + 65536 + 30) {
			buf_free(&f->hdr);
			f->pos = e->lho;
			want = MIN(doff - e->lho + e->csize, size - e->lho);
			r = wheel_read_by(f->ctx, f->w, e->lho, want, sink, f, f->deadline_ns, err,
					  sizeof(err));
		}
	}
	if (r == 0 && f->data_off && f->fed < e->csize) {
		f->pos = f->data_off + f->fed;
		r = wheel_read_by(f->ctx, f->w, f->pos, e->csize - f->fed, sink, f, f->deadline_ns,
				  err, sizeof(err));
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
	} else if (r == -ECANCELED) {
		log_info("wheel \"%s\": entry \"%s\": not served: the daemon is stopping", whl,
			 e->name);
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

#define NEIGHBOUR_MAX (256u << 10)
#define SPAN_MAX (1u << 20)

static size_t dir_len(const char *name)
{
	const char *sl = strrchr(name, '/');
	return sl ? (size_t)(sl - name) + 1 : 0;
}

static bool same_dir(const char *a, const char *b)
{
	size_t la = dir_len(a);
	return la == dir_len(b) && memcmp(a, b, la) == 0;
}

static void entry_key(const struct wheel_src *w, const struct zip_entry *e,
		      const struct tree_node *nd, uint8_t key[32])
{
	if (nd->has_sha) {
		memcpy(key, nd->sha256, 32);
		return;
	}
	/* No RECORD hash: key by (wheel, entry); CRC-32 still verifies it. */
	struct sha256_ctx h;
	sha256_init(&h);
	sha256_update(&h, w->key, 32); /* the source too: see wheel_catalog_key */
	sha256_update(&h, e->name, strlen(e->name));
	sha256_final(&h, key);
}

/* A neighbour entry k worth riding along: a small body of the tree. */
static const struct tree_node *neighbour_node(struct fs_ctx *ctx, struct wheel_src *w, size_t k)
{
	const struct zip_entry *e = &w->meta.cd->entries[k];
	uint32_t ni = w->entry_node[k];
	if (ni == UINT32_MAX || e->csize > NEIGHBOUR_MAX)
		return NULL;
	const struct tree_node *nd = &ctx->tree->nodes[ni];
	return nd->kind == TREE_BODY && nd->size > 0 ? nd : NULL;
}

struct run {
	size_t first, last; /* cd indexes; entries first..last, lho increasing */
	uint64_t lo, hi;    /* byte range covering them */
};

static void plan_run(struct fs_ctx *ctx, struct wheel_src *w, size_t t, struct run *ru)
{
	const struct zip_cd *cd = w->meta.cd;
	const struct zip_entry *te = &cd->entries[t];
	ru->first = ru->last = t;
	ru->lo = te->lho;
	ru->hi = entry_end(w, t);
	for (bool grew = true; grew;) {
		grew = false;
		if (ru->first > 0) {
			const struct zip_entry *e = &cd->entries[ru->first - 1];
			if (e->lho < ru->lo && same_dir(e->name, te->name) &&
			    neighbour_node(ctx, w, ru->first - 1) && ru->hi - e->lho <= SPAN_MAX) {
				ru->first--;
				ru->lo = e->lho;
				grew = true;
			}
		}
		if (ru->last + 1 < cd->n) {
			const struct zip_entry *e = &cd->entries[ru->last + 1];
			uint64_t end = entry_end(w, ru->last + 1);
			if (e->lho >= cd->entries[ru->last].lho + 30 && e->lho < ru->hi + 4096 &&
			    same_dir(e->name, te->name) && neighbour_node(ctx, w, ru->last + 1) &&
			    end - ru->lo <= SPAN_MAX) {
				ru->last++;
				ru->hi = MAX(ru->hi, end);
				grew = true;
			}
		}
	}
}

/* One request for the run around the target; writes the target to fd and
 * publishes the claimed neighbours.  Returns 0, or -EAGAIN when the target
 * could not be decoded from the range (the caller then streams it alone). */
static int fill_run(struct fill *f, int fd)
{
	struct fs_ctx *ctx = f->ctx;
	struct wheel_src *w = f->w;
	const struct zip_cd *cd = w->meta.cd;
	size_t t = (size_t)(f->e - cd->entries);
	struct run ru = *f->run;
	/* Ends that another fill has in flight (or has published) stay out of
	 * the range: their bytes are on the wire already. */
	while (ru.first < t && !f->claims[ru.first - f->run->first].claimed)
		ru.first++;
	while (ru.last > t && !f->claims[ru.last - f->run->first].claimed)
		ru.last--;
	ru.lo = cd->entries[ru.first].lho;
	ru.hi = 0;
	for (size_t k = ru.first; k <= ru.last; k++)
		ru.hi = MAX(ru.hi, entry_end(w, k));
	struct buf b;
	buf_init(&b);
	char err[300] = "";
	int r = wheel_read_by(ctx, w, ru.lo, ru.hi - ru.lo, sink_buf_body, &b, f->deadline_ns, err,
			      sizeof(err));
	int target = -EAGAIN;
	for (size_t k = ru.first; k <= ru.last; k++) {
		struct cache_claim *cl = &f->claims[k - f->run->first];
		if (k != t && !cl->claimed)
			continue;
		const struct zip_entry *e = &cd->entries[k];
		const struct tree_node *nd = k == t ? f->nd : neighbour_node(ctx, w, k);
		uint8_t *data = NULL, sha[32];
		uint64_t doff = 0;
		char why[200];
		int q = r;
		if (q == 0)
			q = zipcd_local_header(b.data + (e->lho - ru.lo), b.len - (e->lho - ru.lo), e,
					       &doff);
		if (q == 0 && doff - ru.lo + e->csize > b.len)
			q = -EAGAIN;
		if (q == 0)
			q = inflate_buffer(e->method, b.data + (doff - ru.lo), (size_t)e->csize,
					   e->usize, e->crc32, &data, sha, why, sizeof(why));
		if (q == 0 && nd->has_sha && memcmp(sha, nd->sha256, 32) != 0)
			q = -EBADMSG; /* the target's own path logs it when it retries */
		if (k == t) {
			target = q == 0 ? write_full(fd, data, (size_t)e->usize) : -EAGAIN;
		} else {
			bool ok = q == 0 && e->usize == cl->size;
			cache_publish(ctx->cache, cl, ok ? data : NULL);
			if (ok) /* a source Python may import next: compile it now */
				compile_note(ctx->compile, w->entry_node[k]);
		}
		free(data);
	}
	buf_free(&b);
	return target;
}

static int body_fill_any(void *ud, int fd)
{
	struct fill *f = ud;
	if (f->run && !f->stream) {
		int r = fill_run(f, fd);
		if (r != -EAGAIN)
			return r;
		if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
			return -errno;
	}
	return entry_fill(ud, fd);
}

static void fill_init(struct fs_ctx *ctx, uint32_t i, struct fill *f)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	*f = (struct fill){
		.ctx = ctx,
		.w = w,
		.e = &w->meta.cd->entries[nd->body.entry],
		.nd = nd,
	};
	/* The whole fill's deadline: a base, plus a second per MiB compressed
	 * (a floor of 1 MiB/s); cancelled requests end the fill with EIO. */
	if (ctx->fill_timeout_s > 0)
		f->deadline_ns = now_ns() + ((uint64_t)ctx->fill_timeout_s + (f->e->csize >> 20)) *
						    1000000000ull;
}

/* Plans the run of neighbours of node i and fills in a claim per entry of
 * it (the target's slot: its own key, in flight by then, never claimed). */
static size_t plan_claims(struct fs_ctx *ctx, uint32_t i, struct run *ru,
			  struct cache_claim **ret)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	const struct zip_entry *e = &w->meta.cd->entries[nd->body.entry];
	*ret = NULL;
	*ru = (struct run){0};
	if (e->csize > NEIGHBOUR_MAX || getenv("SITEFS_NO_NEIGHBOURS"))
		return 0;
	size_t t = nd->body.entry;
	plan_run(ctx, w, t, ru);
	size_t n = ru->last > ru->first ? ru->last - ru->first + 1 : 0;
	if (!n)
		return 0;
	struct cache_claim *claims = xcalloc(n, sizeof(*claims));
	for (size_t k = ru->first; k <= ru->last; k++) {
		struct cache_claim *cl = &claims[k - ru->first];
		const struct tree_node *kn = k == t ? nd : neighbour_node(ctx, w, k);
		entry_key(w, &w->meta.cd->entries[k], kn, cl->key);
		cl->verified = kn->has_sha;
		cl->size = kn->size;
	}
	*ret = claims;
	return n;
}

size_t body_claims(struct fs_ctx *ctx, uint32_t i, struct cache_claim **ret)
{
	struct run ru;
	return plan_claims(ctx, i, &ru, ret);
}

int fs_body_open(struct fs_ctx *ctx, uint32_t i)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	if (nd->kind != TREE_BODY)
		return -EINVAL;
	profile_note(ctx->profile, i);
	struct fill f;
	fill_init(ctx, i, &f);
	uint8_t key[32];
	entry_key(f.w, f.e, nd, key);
	int fd = cache_peek(ctx->cache, key, nd->has_sha, nd->size);
	if (fd != -ENOENT)
		return fd;
	/* A miss: plan the run of neighbours, to be claimed with the target. */
	struct run ru;
	size_t n = plan_claims(ctx, i, &ru, &f.claims);
	if (n)
		f.run = &ru;
	fd = cache_get(ctx->cache, key, nd->has_sha, nd->size, f.claims, n, body_fill_any, &f);
	free(f.claims);
	return fd;
}

int body_fill(struct fs_ctx *ctx, uint32_t i, struct cache_claim *claims, size_t nclaims,
	      struct cache_stream *s)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	struct fill f;
	fill_init(ctx, i, &f);
	f.stream = s;
	/* the run body_claims planned (plan_run is a function of the tree) */
	struct run ru;
	struct cache_claim *mine;
	size_t n = plan_claims(ctx, i, &ru, &mine);
	free(mine);
	if (nclaims && n == nclaims) {
		f.run = &ru;
		f.claims = claims;
	}
	uint8_t key[32];
	entry_key(f.w, f.e, nd, key);
	int fd = cache_fill(ctx->cache, key, nd->has_sha, nd->size, claims, nclaims, body_fill_any,
			    &f, s);
	if (fd >= 0)
		ahead_note(ctx->ahead, i); /* what it imports is fetched meanwhile */
	return fd;
}

void body_key(const struct fs_ctx *ctx, uint32_t i, uint8_t key[32], bool *ret_verified)
{
	const struct tree_node *nd = &ctx->tree->nodes[i];
	const struct wheel_src *w = &ctx->wheels[nd->body.wheel];
	*ret_verified = nd->has_sha;
	entry_key(w, &w->meta.cd->entries[nd->body.entry], nd, key);
}
