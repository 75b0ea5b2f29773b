/* fuzz_profile: libFuzzer target for the --profile file parser.
 *
 * The input is a whole profile file: the header is parsed, the text split
 * into lines, and every pyc record read and decompressed through a reader
 * over the input (as the daemon reads the file with pread).  Whatever a
 * record says, it must lie inside the input; a record the parser accepts
 * must survive an encode/parse round trip. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "fs/profile_fmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
	const uint8_t *p;
	size_t n;
};

static ssize_t mem_read(void *ud, uint64_t off, void *buf, size_t len)
{
	struct mem *m = ud;
	if (off >= m->n)
		return 0;
	size_t k = len < m->n - off ? len : (size_t)(m->n - off);
	memcpy(buf, m->p + off, k);
	return (ssize_t)k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pfmt_head h;
	char why[200];
	struct mem m = {data, size};

	if (pfmt_parse_head(data, size < PFMT_HEAD_MAX ? size : PFMT_HEAD_MAX, size, &h, why,
			    sizeof(why)) < 0)
		return 0;
	if (h.text_off + h.text_len > size)
		abort();
	char *text = malloc(h.text_len + 1), **lines = NULL;
	size_t bad;
	memcpy(text, data + h.text_off, h.text_len);
	text[h.text_len] = '\0';
	ssize_t n = pfmt_split_lines(text, h.text_len, &lines, &bad);
	for (ssize_t i = 0; i < n; i++)
		if (!strchr(lines[i], '\t'))
			abort();
	free(lines);
	free(text);

	uint64_t off = h.pyc_off;
	ZSTD_DCtx *dctx = ZSTD_createDCtx(); /* reused, as the daemon does */
	for (uint64_t j = 0; h.version == 2 && j < h.npyc; j++) {
		struct pfmt_pyc r;
		uint64_t at = off;
		if (pfmt_next_pyc(mem_read, &m, &off, size, &r, why, sizeof(why)) < 0)
			break;
		if (off <= at || off > size || r.frame_off + r.frame_len != off || r.opt > 2)
			abort();
		uint8_t *pyc;
		if (pfmt_pyc_data(mem_read, &m, &r, dctx, &pyc, why, sizeof(why)) < 0)
			continue;
		if (memcmp(pyc, r.hdr, 16) != 0)
			abort();
		/* round trip */
		uint8_t *rec;
		size_t rl = pfmt_encode_pyc(r.sha256, r.opt, r.tag, pyc, 16 + r.body_len, 1, &rec);
		if (!rl)
			abort();
		struct mem m2 = {rec, rl};
		struct pfmt_pyc r2;
		uint64_t o2 = 0;
		uint8_t *pyc2;
		if (pfmt_next_pyc(mem_read, &m2, &o2, rl, &r2, why, sizeof(why)) < 0 || o2 != rl ||
		    pfmt_pyc_data(mem_read, &m2, &r2, NULL, &pyc2, why, sizeof(why)) < 0 ||
		    memcmp(pyc, pyc2, 16 + r.body_len) != 0 || r2.opt != r.opt ||
		    strcmp(r2.tag, r.tag) != 0 || memcmp(r2.sha256, r.sha256, 32) != 0)
			abort();
		free(pyc2);
		free(rec);
		free(pyc);
	}
	ZSTD_freeDCtx(dctx);
	return 0;
}
