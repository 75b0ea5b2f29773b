/* util: the small shared base — growable buffers, string helpers, file
 * helpers, cleanup attributes.  No dependency beyond libc. */
#ifndef SITEFS_UTIL_H
#define SITEFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void freep(void *p) { free(*(void **)p); }
#define _cleanup_free_ __attribute__((cleanup(freep)))

/* Abort on OOM: the daemon cannot do anything useful without memory, and
 * every caller checking NULL for tiny allocations is noise. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer; data is always NUL-terminated (not counted in len). */
struct buf {
	uint8_t *data;
	size_t len, cap;
};
void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Transfer ownership of the bytes to the caller (caller frees); b is reset. */
uint8_t *buf_steal(struct buf *b, size_t *ret_len);

bool str_startswith(const char *s, const char *prefix);
bool str_endswith(const char *s, const char *suffix);

/* Read a whole file (NUL-terminated); returns 0 or -errno.  Caller frees. */
int file_read_all(const char *path, char **ret, size_t *ret_len);
/* Write data to path atomically (temp in the same dir + fsync-free rename). */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* mkdir -p; returns 0 or -errno. */
int mkdir_p(const char *path, mode_t mode);
/* rm -rf (does not cross mount points); returns 0 or -errno. */
int rm_rf(const char *path);
/* pread/pwrite loops handling short I/O and EINTR; return 0 or -errno (-EIO on short read). */
int pread_full(int fd, void *buf, size_t len, off_t off);
int write_full(int fd, const void *buf, size_t len);

/* The value of a hex digit (either case), or -1. */
static inline int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

#endif
