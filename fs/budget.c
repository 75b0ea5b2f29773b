/* budget: a bound on the bytes that background fetchers (the profile
 * replay, the import-graph prefetch) hold in flight at once.
 *
 * DESIGN
 * - A taker waits until its bytes fit with those in flight; one alone may
 *   exceed the bound (nothing else in flight), so no request is too big to
 *   ever run.  After budget_stop every taker, waiting or new, gets false.
 * - Locking: b->lock is a leaf, held only inside these calls. */
#include "fetch/util/util.h"
#include "fs/fs_i.h"

void budget_init(struct budget *b, uint64_t max)
{
	*b = (struct budget){.max = max};
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
}

void budget_destroy(struct budget *b)
{
	pthread_cond_destroy(&b->cond);
	pthread_mutex_destroy(&b->lock);
}

bool budget_take(struct budget *b, uint64_t need)
{
	pthread_mutex_lock(&b->lock);
	while (!b->stopping && b->used && b->used + need > b->max)
		pthread_cond_wait(&b->cond, &b->lock);
	bool ok = !b->stopping;
	if (ok) {
		b->used += need;
		b->peak = MAX(b->peak, b->used);
	}
	pthread_mutex_unlock(&b->lock);
	return ok;
}

void budget_give(struct budget *b, uint64_t need)
{
	pthread_mutex_lock(&b->lock);
	b->used -= need;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

void budget_stop(struct budget *b)
{
	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

uint64_t budget_peak(struct budget *b)
{
	pthread_mutex_lock(&b->lock);
	uint64_t peak = b->peak;
	pthread_mutex_unlock(&b->lock);
	return peak;
}
