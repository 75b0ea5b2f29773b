/* hash: SHA-256 (OpenSSL libcrypto), CRC-32 (zlib) and their encodings. */
#ifndef SITEFS_HASH_H
#define SITEFS_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64

struct sha256_ctx {
	void *md; /* EVP_MD_CTX, owned */
};
void sha256_init(struct sha256_ctx *c);
void sha256_update(struct sha256_ctx *c, const void *p, size_t n);
/* Writes 32 bytes and frees the context. */
void sha256_final(struct sha256_ctx *c, uint8_t out[SHA256_LEN]);
/* Releases a context without producing a digest (error paths). */
void sha256_abort(struct sha256_ctx *c);
void sha256_buf(const void *p, size_t n, uint8_t out[SHA256_LEN]);

uint32_t crc32_update(uint32_t crc, const void *p, size_t n);

/* Lower-case hex; out must hold 2*n+1 bytes. */
void hex_encode(const uint8_t *in, size_t n, char *out);
/* Parses exactly 2*n hex digits (either case); returns 0 or -EINVAL. */
int hex_decode(const char *in, uint8_t *out, size_t n);
/* URL-safe base64 without padding (RECORD's hash encoding); out holds 4*ceil(n/3)+1. */
void b64url_encode(const uint8_t *in, size_t n, char *out);
/* Decodes URL-safe base64 with or without padding into exactly n bytes; 0 or -EINVAL. */
int b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t n);

#endif
