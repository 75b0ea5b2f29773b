/* inflate: streaming decoding of a zip entry's data (stored or raw deflate),
 * with CRC-32, SHA-256 and size verification on the way.
 *
 * Output goes to a callback in bounded chunks, so a 700 MB entry never needs a
 * whole-file buffer.  Not thread-safe per object; one object per fill. */
#ifndef SITEFS_INFLATE_H
#define SITEFS_INFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "fetch/util/hash.h"

struct inflater;

/* Called with each decoded chunk; return 0 to go on, -errno to abort. */
typedef int (*inflate_out_fn)(void *ud, const uint8_t *data, size_t len);

/* method: 0 stored, 8 deflated.  usize/crc32: the expected values.
 * Returns NULL for an unsupported method. */
struct inflater *inflater_new(uint16_t method, uint64_t usize, uint32_t crc32, inflate_out_fn out,
			      void *ud);
/* Feed compressed bytes.  Returns 0, -EBADMSG on corrupt data or output
 * exceeding usize, or the callback's error. Bytes after the end of the deflate
 * stream are ignored. */
int inflater_feed(struct inflater *f, const uint8_t *in, size_t len);
/* Finish: checks the stream ended, size == usize, CRC matches.
 * Returns 0 and the SHA-256 of the output in ret_sha; -EBADMSG with a
 * reason in err otherwise. */
int inflater_finish(struct inflater *f, uint8_t ret_sha[SHA256_LEN], char *err, size_t errlen);
struct inflater *inflater_free(struct inflater *f);

/* Convenience: decode a whole in-memory entry into a malloc'd buffer
 * (caller frees).  Same checks and return values as above. */
int inflate_buffer(uint16_t method, const uint8_t *in, size_t inlen, uint64_t usize,
		   uint32_t crc32, uint8_t **ret, uint8_t ret_sha[SHA256_LEN], char *err,
		   size_t errlen);

#endif
