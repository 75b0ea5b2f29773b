/* profile_fmt: the bytes of a --profile file — parsing and writing, nothing
 * else (no tree, no cache: profile.c gives them meaning).  The file is
 * untrusted input: every length is bounded and checked before it is used,
 * and a parse error says where and why.  Fuzzed by tests/fuzz/fuzz_profile.c.
 *
 * Version 2 (version 1 is the header line "# sitefs profile 1\n" followed by
 * the text section up to the end of the file, and no pycs):
 *
 *   "# sitefs profile 2 T N\n"   T and N in decimal, exactly 20 digits each
 *   T bytes of text: "<wheel filename>\t<entry name>\n" per body
 *   N pyc records, integers little-endian:
 *     u8[32] sha256 of the source (its RECORD hash: the store's key)
 *     u8     optimisation level, 0..2
 *     u8     L, then L bytes: the cache tag ("cpython-311"), 1..31 of [a-z0-9_-]
 *     u8[16] the pyc header: magic, flags (0), mtime (0: patched when served),
 *            source size
 *     u32    B: length of the rest of the pyc, 1..PFMT_PYC_MAX-16
 *     u32    F: length of the frame that follows, 1..ZSTD_compressBound(B)
 *     u8[F]  one zstd frame (content size and checksum set) holding those B bytes
 *   end of file (trailing bytes are an error). */
#ifndef SITEFS_PROFILE_FMT_H
#define SITEFS_PROFILE_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PFMT_HEADER_V1 "# sitefs profile 1\n"
#define PFMT_HEAD_MAX 80		/* the longest version-2 header line, and more */
#define PFMT_TEXT_MAX (64u << 20)	/* bound on the text section */
#define PFMT_PYC_MAX (64u << 20)	/* bound on one pyc (pyc.c's bound on a write) */
#define PFMT_NPYC_MAX (1u << 24)
#define PFMT_REC_HEAD_MAX (32 + 1 + 1 + 31 + 16 + 4 + 4)

/* Reads up to len bytes at off; returns the count (short only at the end of
 * the file) or -errno. */
typedef ssize_t (*pfmt_read_fn)(void *ud, uint64_t off, void *buf, size_t len);

struct pfmt_head {
	int version;		 /* 1 or 2 */
	uint64_t text_off, text_len;
	uint64_t npyc, pyc_off;	 /* records start at pyc_off (2 only) */
};

/* Parses the header at the start of head (len bytes: what the file holds
 * there, up to PFMT_HEAD_MAX) of a file of file_size bytes.  Returns 0, or
 * -EBADMSG with the reason in why. */
int pfmt_parse_head(const uint8_t *head, size_t len, uint64_t file_size, struct pfmt_head *ret,
		    char *why, size_t whylen);

/* Splits text (len bytes, NUL-terminated in place) into "<wheel>\t<entry>"
 * lines: returns their number and *ret (pointers into text; caller frees
 * the array); *ret_bad counts malformed lines (skipped).  -1: NUL bytes
 * (not text). */
ssize_t pfmt_split_lines(char *text, size_t len, char ***ret, size_t *ret_bad);

struct pfmt_pyc {
	uint8_t sha256[32];
	uint8_t opt;
	char tag[32];
	uint8_t hdr[16];
	uint32_t body_len;
	uint32_t frame_len;
	uint64_t off;	    /* of the record */
	uint64_t frame_off; /* of its frame; the record ends at frame_off + frame_len */
};

/* Reads the record at *off (end: where the records must end, the file
 * size); on success advances *off past it.  Returns 0, or -EBADMSG (or
 * -errno from read) with the reason in why. */
int pfmt_next_pyc(pfmt_read_fn read, void *ud, uint64_t *off, uint64_t end,
		  struct pfmt_pyc *ret, char *why, size_t whylen);

/* The whole pyc of record r (16 + r->body_len bytes, *ret: caller frees):
 * the frame decompressed and checked (content size, checksum).  dctx: a
 * ZSTD_DCtx to reuse, or NULL.  Returns 0, -EBADMSG with why, or -errno
 * from read. */
int pfmt_pyc_data(pfmt_read_fn read, void *ud, const struct pfmt_pyc *r, void *dctx,
		  uint8_t **ret, char *why, size_t whylen);

/* Writing.  The header line of a version-2 file (PFMT_HEAD_LEN bytes). */
#define PFMT_HEAD_LEN 61
void pfmt_format_head(char out[PFMT_HEAD_LEN + 1], uint64_t text_len, uint64_t npyc);
/* Encodes a record for pyc (len bytes, >= 17) into *ret (caller frees);
 * returns its length or 0 when it cannot be encoded (too big, bad tag). */
size_t pfmt_encode_pyc(const uint8_t sha[32], uint8_t opt, const char *tag, const uint8_t *pyc,
		       size_t len, int level, uint8_t **ret);

#endif
