/* nodefd: the descriptors reads are served from when the kernel opens
 * files without asking us (FUSE_NO_OPEN_SUPPORT).
 *
 * DESIGN
 * - With no open request there is no per-open handle: every read of a body
 *   arrives with fh 0.  So each body node keeps one O_RDONLY descriptor on
 *   its published cache file, opened by the first read that finds the body
 *   and shared by every later reader (reads use offsets: no file position
 *   is shared).  It stays open until the mount ends: a published body never
 *   changes.
 * - Bounded: at most `max` descriptors are kept; past that a reader opens
 *   its own and closes it after the reply (nodefd_put says so).
 * - A failed fill is remembered for HOLD_MS: the kernel retries a failed
 *   page read at once (the readahead's, then read_folio's; measured: 2
 *   requests for one read() without this), and that retry must not start
 *   the same doomed fetch (or wait out a second deadline).  After that the
 *   next read tries again, as the next open did with open requests.
 * - Locking: none; slots are atomics, installed by compare-and-swap. */
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define HOLD_MS 500

struct nodefd_slot {
	_Atomic int fd;            /* -1: none yet */
	_Atomic uint32_t fail_ms;  /* ms clock of the last failed fill, 0: none */
};

struct nodefd {
	uint32_t n;
	unsigned max;
	_Atomic unsigned open; /* descriptors kept */
	uint64_t t0_ns;        /* fail_ms is counted from here (never 0 once set) */
	struct nodefd_slot *slots;
};

struct nodefd *nodefd_new(uint32_t n, unsigned max)
{
	struct nodefd *t = xcalloc(1, sizeof(*t));
	t->n = n;
	t->max = max;
	t->t0_ns = now_ns();
	t->slots = xcalloc(n ? n : 1, sizeof(*t->slots));
	for (uint32_t i = 0; i < n; i++)
		atomic_init(&t->slots[i].fd, -1);
	return t;
}

struct nodefd *nodefd_free(struct nodefd *t)
{
	if (!t)
		return NULL;
	for (uint32_t i = 0; i < t->n; i++)
		if (atomic_load(&t->slots[i].fd) >= 0)
			close(atomic_load(&t->slots[i].fd));
	free(t->slots);
	free(t);
	return NULL;
}

int nodefd_get(struct nodefd *t, uint32_t i)
{
	return atomic_load_explicit(&t->slots[i].fd, memory_order_acquire);
}

int nodefd_put(struct nodefd *t, uint32_t i, int fd, bool *ret_owned)
{
	*ret_owned = false;
	if (atomic_fetch_add(&t->open, 1) >= t->max) {
		atomic_fetch_sub(&t->open, 1);
		*ret_owned = true; /* full: the caller's, to close after its reply */
		return fd;
	}
	int none = -1;
	if (atomic_compare_exchange_strong_explicit(&t->slots[i].fd, &none, fd,
						    memory_order_acq_rel, memory_order_acquire)) {
		atomic_store(&t->slots[i].fail_ms, 0);
		return fd;
	}
	/* another reader installed one first: use theirs */
	atomic_fetch_sub(&t->open, 1);
	close(fd);
	return none;
}

static uint32_t ms_now(const struct nodefd *t)
{
	return (uint32_t)((now_ns() - t->t0_ns) / 1000000) + 1;
}

void nodefd_failed(struct nodefd *t, uint32_t i)
{
	atomic_store(&t->slots[i].fail_ms, ms_now(t));
}

bool nodefd_held(struct nodefd *t, uint32_t i)
{
	uint32_t f = atomic_load(&t->slots[i].fail_ms);
	return f && ms_now(t) - f < HOLD_MS;
}
