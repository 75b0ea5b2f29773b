/* zipcd: defensive parsing of a zip's end records and central directory
 * from a buffer holding the file's tail, and of local file headers.
 *
 * Everything here treats its input as hostile: every length and offset is
 * bounded by the buffer and the file size, names are checked, entries whose
 * local data would overlap each other or the central directory are rejected.
 * No I/O: callers fetch bytes (range requests, pread) and hand them in. */
#ifndef SITEFS_ZIPCD_H
#define SITEFS_ZIPCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZIPCD_TAIL_SIZE (64 * 1024) /* first request: the last 64 KiB */
#define ZIPCD_LOCAL_HEADER_MIN 30
#define ZIP_METHOD_STORED 0
#define ZIP_METHOD_DEFLATED 8

struct zip_entry {
	char *name;       /* NUL-free, validated relative path; dirs end in '/' */
	uint16_t method;  /* ZIP_METHOD_* (others are rejected at parse time) */
	uint16_t flags;   /* general purpose bit flags (bit 3: data descriptor) */
	uint32_t crc32;
	uint64_t csize;   /* compressed size */
	uint64_t usize;   /* uncompressed size */
	uint64_t lho;     /* local header offset */
	uint32_t mode;    /* st_mode from external attributes if made on Unix, else 0 */
	int64_t mtime;    /* seconds since the epoch (DOS time, read as UTC), or the
			     extended-timestamp extra field when present */
};

struct zip_cd {
	struct zip_entry *entries; /* in central-directory order */
	size_t n;
	uint64_t cd_off, cd_size; /* where the central directory lies in the file */
};

/* Parses the end records and central directory.
 *
 * buf holds bytes [buf_off, buf_off+len) of a file of file_size bytes, and
 * must reach the end of the file (buf_off + len == file_size).
 * Returns 0 and sets *ret (caller frees with zipcd_free);
 * -EAGAIN with *ret_need_off set when the central directory (or zip64
 *   records) start before buf_off: fetch from *ret_need_off and call again;
 * -EBADMSG (malformed, hostile or unsupported zip) with a message in err
 *   that names the entry when there is one. */
int zipcd_parse(const uint8_t *buf, size_t len, uint64_t buf_off, uint64_t file_size,
		struct zip_cd **ret, uint64_t *ret_need_off, char *err, size_t errlen);
struct zip_cd *zipcd_free(struct zip_cd *cd);

/* Checks a zip entry name: relative, no "..", no empty segments other than a
 * trailing '/', no backslash, no NUL, no drive letters.  true if safe. */
bool zipcd_name_ok(const char *name, size_t len);

/* Bytes to request to be likely to get an entry's local header and data in
 * one go: the fixed header, the name, and some slack for the local extra field. */
#define ZIPCD_LOCAL_SLACK 256
uint64_t zipcd_span_guess(const struct zip_entry *e);

/* Parses the local header at the start of buf (which holds file bytes from
 * e->lho).  Checks the signature and that the name matches e->name.
 * Returns 0 and sets *ret_data_off to the absolute file offset of the
 * compressed data; -EAGAIN if len is too short to hold the header (need at
 * least *ret_data_off - e->lho bytes, set when known); -EBADMSG otherwise. */
int zipcd_local_header(const uint8_t *buf, size_t len, const struct zip_entry *e,
		       uint64_t *ret_data_off);

/* Binary search for name in cd (entries sorted by zipcd_parse into a private
 * index); NULL if absent. */
const struct zip_entry *zipcd_find(const struct zip_cd *cd, const char *name);

#endif
