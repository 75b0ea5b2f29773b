/* profile_fmt: parsing and writing the bytes of a --profile file (the
 * layout is in profile_fmt.h).  Pure: no global state, reads through the
 * caller's callback, allocates only what a checked length allows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "fetch/util/util.h"
#include "fs/profile_fmt.h"

#define HEAD_V2 "# sitefs profile 2 "

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* exactly 20 decimal digits */
static bool parse_u64(const uint8_t *s, uint64_t *ret)
{
	uint64_t v = 0;
	for (int i = 0; i < 20; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*ret = v;
	return true;
}

int pfmt_parse_head(const uint8_t *head, size_t len, uint64_t file_size, struct pfmt_head *ret,
		    char *why, size_t whylen)
{
	size_t v1 = strlen(PFMT_HEADER_V1), v2 = strlen(HEAD_V2);

	memset(ret, 0, sizeof(*ret));
	if (len >= v1 && memcmp(head, PFMT_HEADER_V1, v1) == 0) {
		ret->version = 1;
		ret->text_off = v1;
		ret->text_len = file_size - v1;
		if (ret->text_len > PFMT_TEXT_MAX) {
			snprintf(why, whylen, "text of %llu bytes (more than %u)",
				 (unsigned long long)ret->text_len, PFMT_TEXT_MAX);
			return -EBADMSG;
		}
		return 0;
	}
	if (len < PFMT_HEAD_LEN || memcmp(head, HEAD_V2, v2) != 0 ||
	    !parse_u64(head + v2, &ret->text_len) || head[v2 + 20] != ' ' ||
	    !parse_u64(head + v2 + 21, &ret->npyc) || head[PFMT_HEAD_LEN - 1] != '\n') {
		snprintf(why, whylen, "no \"# sitefs profile 1\" or \"%s<text> <pycs>\" header",
			 HEAD_V2);
		return -EBADMSG;
	}
	ret->version = 2;
	ret->text_off = PFMT_HEAD_LEN;
	if (ret->text_len > PFMT_TEXT_MAX || ret->text_len > file_size - PFMT_HEAD_LEN) {
		snprintf(why, whylen, "text of %llu bytes in a file of %llu (truncated?)",
			 (unsigned long long)ret->text_len, (unsigned long long)file_size);
		return -EBADMSG;
	}
	ret->pyc_off = ret->text_off + ret->text_len;
	if (ret->npyc > PFMT_NPYC_MAX) {
		snprintf(why, whylen, "%llu pycs (more than %u)", (unsigned long long)ret->npyc,
			 PFMT_NPYC_MAX);
		return -EBADMSG;
	}
	return 0;
}

ssize_t pfmt_split_lines(char *text, size_t len, char ***ret, size_t *ret_bad)
{
	size_t n = 0, cap = 0, bad = 0;
	char **v = NULL;

	*ret = NULL;
	*ret_bad = 0;
	if (memchr(text, '\0', len))
		return -1;
	for (char *s = text, *end = text + len; s < end;) {
		char *nl = memchr(s, '\n', (size_t)(end - s));
		if (!nl)
			nl = end; /* a torn last line (cannot happen with rename; be lenient) */
		*nl = '\0';
		char *tab = strchr(s, '\t');
		if (!tab || tab == s || !tab[1] || strchr(tab + 1, '\t')) {
			if (*s)
				bad++;
		} else {
			if (n == cap)
				v = xrealloc(v, (cap = cap ? 2 * cap : 256) * sizeof(*v));
			v[n++] = s;
		}
		s = nl + 1;
	}
	*ret = v;
	*ret_bad = bad;
	return (ssize_t)n;
}

static bool tag_ok(const uint8_t *t, size_t n)
{
	if (n < 1 || n > 31)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_' ||
		      t[i] == '-'))
			return false;
	return true;
}

int pfmt_next_pyc(pfmt_read_fn read, void *ud, uint64_t *off, uint64_t end,
		  struct pfmt_pyc *ret, char *why, size_t whylen)
{
	uint8_t h[PFMT_REC_HEAD_MAX];
	uint64_t at = *off;

	memset(ret, 0, sizeof(*ret));
	if (at >= end) {
		snprintf(why, whylen, "file ends at %llu before the next pyc",
			 (unsigned long long)end);
		return -EBADMSG;
	}
	size_t want = (size_t)MIN((uint64_t)sizeof(h), end - at);
	ssize_t n = read(ud, at, h, want);
	if (n < 0) {
		snprintf(why, whylen, "%s", strerror((int)-n));
		return (int)n;
	}
	if ((size_t)n < 34 || (size_t)n < 34 + (size_t)h[33] + 24) {
		snprintf(why, whylen, "pyc record at %llu cut short", (unsigned long long)at);
		return -EBADMSG;
	}
	size_t tl = h[33];
	if (h[32] > 2 || !tag_ok(h + 34, tl)) {
		snprintf(why, whylen, "pyc record at %llu: bad level or cache tag",
			 (unsigned long long)at);
		return -EBADMSG;
	}
	memcpy(ret->sha256, h, 32);
	ret->opt = h[32];
	memcpy(ret->tag, h + 34, tl);
	ret->tag[tl] = '\0';
	memcpy(ret->hdr, h + 34 + tl, 16);
	ret->body_len = le32(h + 34 + tl + 16);
	ret->frame_len = le32(h + 34 + tl + 20);
	ret->off = at;
	ret->frame_off = at + 34 + tl + 24;
	if (ret->body_len < 1 || ret->body_len > PFMT_PYC_MAX - 16 || ret->frame_len < 1 ||
	    ret->frame_len > ZSTD_compressBound(ret->body_len)) {
		snprintf(why, whylen, "pyc record at %llu: bad lengths (%u, frame %u)",
			 (unsigned long long)at, ret->body_len, ret->frame_len);
		return -EBADMSG;
	}
	if (ret->frame_len > end - ret->frame_off || ret->frame_off > end) {
		snprintf(why, whylen, "pyc record at %llu: its %u bytes run past the end (%llu)",
			 (unsigned long long)at, ret->frame_len, (unsigned long long)end);
		return -EBADMSG;
	}
	*off = ret->frame_off + ret->frame_len;
	return 0;
}

int pfmt_pyc_data(pfmt_read_fn read, void *ud, const struct pfmt_pyc *r, void *dctx,
		  uint8_t **ret, char *why, size_t whylen)
{
	uint8_t *frame = xmalloc(r->frame_len), *out = NULL;
	int rc = -EBADMSG;

	*ret = NULL;
	ssize_t n = read(ud, r->frame_off, frame, r->frame_len);
	if (n < 0) {
		snprintf(why, whylen, "%s", strerror((int)-n));
		rc = (int)n;
		goto out;
	}
	if ((size_t)n != r->frame_len) {
		snprintf(why, whylen, "pyc frame at %llu cut short", (unsigned long long)r->frame_off);
		goto out;
	}
	unsigned long long cs = ZSTD_getFrameContentSize(frame, r->frame_len);
	if (cs != r->body_len) {
		snprintf(why, whylen, "pyc frame at %llu: not a zstd frame of %u bytes",
			 (unsigned long long)r->frame_off, r->body_len);
		goto out;
	}
	out = xmalloc(16 + (size_t)r->body_len);
	memcpy(out, r->hdr, 16);
	size_t d = dctx ? ZSTD_decompressDCtx(dctx, out + 16, r->body_len, frame, r->frame_len)
			: ZSTD_decompress(out + 16, r->body_len, frame, r->frame_len);
	if (ZSTD_isError(d) || d != r->body_len) {
		snprintf(why, whylen, "pyc frame at %llu: %s", (unsigned long long)r->frame_off,
			 ZSTD_isError(d) ? ZSTD_getErrorName(d) : "short");
		free(out);
		out = NULL;
		goto out;
	}
	*ret = out;
	rc = 0;
out:
	free(frame);
	return rc;
}

void pfmt_format_head(char out[PFMT_HEAD_LEN + 1], uint64_t text_len, uint64_t npyc)
{
	snprintf(out, PFMT_HEAD_LEN + 1, HEAD_V2 "%020llu %020llu\n", (unsigned long long)text_len,
		 (unsigned long long)npyc);
}

size_t pfmt_encode_pyc(const uint8_t sha[32], uint8_t opt, const char *tag, const uint8_t *pyc,
		       size_t len, int level, uint8_t **ret)
{
	size_t tl = strlen(tag);

	*ret = NULL;
	if (len < 17 || len > PFMT_PYC_MAX || opt > 2 || !tag_ok((const uint8_t *)tag, tl))
		return 0;
	size_t body = len - 16, hl = 34 + tl + 24, bound = ZSTD_compressBound(body);
	uint8_t *rec = xmalloc(hl + bound);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	if (!cc) {
		free(rec);
		return 0;
	}
	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1);
	size_t f = ZSTD_compress2(cc, rec + hl, bound, pyc + 16, body);
	ZSTD_freeCCtx(cc);
	if (ZSTD_isError(f) || f == 0) {
		free(rec);
		return 0;
	}
	memcpy(rec, sha, 32);
	rec[32] = opt;
	rec[33] = (uint8_t)tl;
	memcpy(rec + 34, tag, tl);
	memcpy(rec + 34 + tl, pyc, 16);
	put_le32(rec + 34 + tl + 16, (uint32_t)body);
	put_le32(rec + 34 + tl + 20, (uint32_t)f);
	*ret = rec;
	return hl + f;
}
