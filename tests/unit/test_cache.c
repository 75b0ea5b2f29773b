/* test_cache: the body store's single flight, claims and publishing
 * (cache.c), with threads.
 *
 * - one fill for many concurrent callers of one key, also when one of them
 *   missed the body just before the fill ended;
 * - claims: a fill's neighbours are in flight before it starts; their
 *   openers wait and get the published body, or fill it themselves when the
 *   claim is given up (also by a fill that fails before publishing);
 *   one published after it was claimed is let go before the fill;
 * - first opens of two sibling files at once: one fill, not two;
 * - a body that disappears from the store right after it was published
 *   (a torn copy's cleanup in another thread or process, an rm of the
 *   cache) is no error: the filler returns its own inode, a waiter that
 *   finds nothing fills again.
 * - a torn copy dropped by one caller while another publishes a good one:
 *   the good one stays. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

static const char BODY[] = "print('a body of the cache')\n";
#define BODY_LEN (sizeof(BODY) - 1)

static char *dir;
static struct cache *cache;
static uint8_t key[32];
static char *path; /* bodies/<ab>/<rest> of key */

struct fill_ud {
	int calls; /* atomic */
	useconds_t delay;
};

static int fill_body(void *ud, int fd)
{
	struct fill_ud *f = ud;
	__atomic_add_fetch(&f->calls, 1, __ATOMIC_RELAXED);
	if (f->delay)
		usleep(f->delay);
	return write_full(fd, BODY, BODY_LEN);
}

/* The fd holds exactly BODY. */
static bool is_body(int fd)
{
	char b[BODY_LEN + 1];
	ssize_t n = pread(fd, b, sizeof(b), 0);
	return n == (ssize_t)BODY_LEN && memcmp(b, BODY, BODY_LEN) == 0;
}

static void setup(const char *name)
{
	char tmpl[] = "/tmp/test_cache.XXXXXX";
	dir = xstrdup(mkdtemp(tmpl));
	CHECK_INT(cache_open(dir, &cache), 0);
	struct sha256_ctx h;
	sha256_init(&h);
	sha256_update(&h, name, strlen(name));
	sha256_final(&h, key);
	char hex[65];
	hex_encode(key, 32, hex);
	path = xasprintf("%s/bodies/%.2s/%s", dir, hex, hex + 2);
}

static void teardown(void)
{
	cache = cache_close(cache);
	rm_rf(dir);
	free(dir);
	free(path);
}

/* ---- single flight ---- */

struct getter {
	struct fill_ud *fill;
	int rounds;
	int bad; /* calls that failed or returned wrong bytes */
	int first_err;
};

static void *get_loop(void *ud)
{
	struct getter *g = ud;
	for (int k = 0; k < g->rounds; k++) {
		int fd = cache_get(cache, key, true, BODY_LEN, NULL, 0, fill_body, g->fill);
		if (fd < 0 || !is_body(fd)) {
			if (!g->bad)
				g->first_err = fd < 0 ? fd : 0;
			g->bad++;
		}
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static void test_single_flight(void)
{
	setup("single");
	struct fill_ud fill = {.delay = 50000};
	struct getter g[8];
	pthread_t th[8];
	for (int k = 0; k < 8; k++) {
		g[k] = (struct getter){.fill = &fill, .rounds = 1};
		pthread_create(&th[k], NULL, get_loop, &g[k]);
	}
	for (int k = 0; k < 8; k++) {
		pthread_join(th[k], NULL);
		CHECK_INT(g[k].bad, 0);
	}
	CHECK_INT(fill.calls, 1);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0444);
	int fd = cache_peek(cache, key, true, BODY_LEN);
	CHECK(fd >= 0 && is_body(fd));
	if (fd >= 0)
		close(fd);
	CHECK_INT(cache_peek(cache, key, true, BODY_LEN + 1), -ENOENT);
	teardown();

	/* Many rounds of first opens with a quick fill: an opener that missed
	 * the body just before the fill ended must not fill it again. */
	setup("single-rounds");
	int twice = 0;
	for (int round = 0; round < 1000; round++) {
		unlink(path);
		fill = (struct fill_ud){0};
		for (int k = 0; k < 8; k++) {
			g[k] = (struct getter){.fill = &fill, .rounds = 1};
			pthread_create(&th[k], NULL, get_loop, &g[k]);
		}
		for (int k = 0; k < 8; k++) {
			pthread_join(th[k], NULL);
			CHECK_INT(g[k].bad, 0);
		}
		twice += fill.calls != 1;
	}
	CHECK_INT(twice, 0);
	teardown();
}

/* ---- claims ---- */

static const char NB[] = "a neighbour\n";
#define NB_LEN (sizeof(NB) - 1)

/* A fill of the target that brings the neighbour along: it waits for the
 * test to let it go, then publishes the neighbour (unless give_up). */
struct run_fill {
	struct cache_claim *claims; /* [0]: the neighbour */
	int calls;		    /* atomic */
	bool give_up;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started, go;
};

static int fill_run(void *ud, int fd)
{
	struct run_fill *f = ud;
	__atomic_add_fetch(&f->calls, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&f->lock);
	f->started = true;
	pthread_cond_broadcast(&f->cond);
	while (!f->go)
		pthread_cond_wait(&f->cond, &f->lock);
	pthread_mutex_unlock(&f->lock);
	if (!f->give_up)
		cache_publish(cache, &f->claims[0], NB);
	return write_full(fd, BODY, BODY_LEN);
}

struct opener {
	const uint8_t *key;
	uint64_t size;
	struct cache_claim *claims;
	size_t nclaims;
	cache_fill_fn fill;
	void *ud;
	int fd;
};

static void *open_one(void *ud)
{
	struct opener *o = ud;
	o->fd = cache_get(cache, o->key, true, o->size, o->claims, o->nclaims, o->fill, o->ud);
	return NULL;
}

static int fill_nb(void *ud, int fd)
{
	__atomic_add_fetch((int *)ud, 1, __ATOMIC_RELAXED);
	return write_full(fd, NB, NB_LEN);
}

static bool fd_is(int fd, const char *want, size_t len)
{
	char b[64];
	ssize_t n = pread(fd, b, sizeof(b), 0);
	return fd >= 0 && n == (ssize_t)len && memcmp(b, want, len) == 0;
}

/* The target's fill claims the neighbour before it starts; an opener of
 * the neighbour waits for it.  give_up: the fill drops the claim, the
 * opener fills the neighbour itself. */
static void claim_case(bool give_up)
{
	setup(give_up ? "claims-given-up" : "claims");
	struct cache_claim nb = {.verified = true, .size = NB_LEN};
	struct sha256_ctx h;
	sha256_init(&h);
	sha256_update(&h, NB, NB_LEN);
	sha256_final(&h, nb.key);
	struct run_fill rf = {.claims = &nb, .give_up = give_up};
	pthread_mutex_init(&rf.lock, NULL);
	pthread_cond_init(&rf.cond, NULL);
	struct opener t = {key, BODY_LEN, &nb, 1, fill_run, &rf, -1};
	pthread_t tt, tn;
	pthread_create(&tt, NULL, open_one, &t);
	pthread_mutex_lock(&rf.lock);
	while (!rf.started)
		pthread_cond_wait(&rf.cond, &rf.lock);
	pthread_mutex_unlock(&rf.lock);
	CHECK(nb.claimed); /* in flight before the fill started */

	int nb_fills = 0;
	struct opener n = {nb.key, NB_LEN, NULL, 0, fill_nb, &nb_fills, -1};
	pthread_create(&tn, NULL, open_one, &n);
	usleep(50000);
	CHECK_INT(__atomic_load_n(&nb_fills, __ATOMIC_RELAXED), 0); /* waiting */
	pthread_mutex_lock(&rf.lock);
	rf.go = true;
	pthread_cond_broadcast(&rf.cond);
	pthread_mutex_unlock(&rf.lock);
	pthread_join(tt, NULL);
	pthread_join(tn, NULL);
	CHECK(fd_is(t.fd, BODY, BODY_LEN));
	CHECK(fd_is(n.fd, NB, NB_LEN));
	CHECK_INT(nb_fills, give_up ? 1 : 0);
	CHECK(!nb.claimed);
	if (t.fd >= 0)
		close(t.fd);
	if (n.fd >= 0)
		close(n.fd);
	/* published now: not claimed again */
	CHECK_INT(unlink(path), 0);
	rf = (struct run_fill){.claims = &nb, .go = true};
	pthread_mutex_init(&rf.lock, NULL);
	pthread_cond_init(&rf.cond, NULL);
	int fd = cache_get(cache, key, true, BODY_LEN, &nb, 1, fill_run, &rf);
	CHECK(fd_is(fd, BODY, BODY_LEN) && !nb.claimed);
	if (fd >= 0)
		close(fd);
	teardown();
}

/* A fill that never calls cache_publish (an error before the request):
 * cache_get gives the claim up, so its waiters do not hang. */
static int fill_fails(void *ud, int fd)
{
	(void)fd;
	usleep(50000);
	__atomic_add_fetch((int *)ud, 1, __ATOMIC_RELAXED);
	return -EIO;
}

static void test_claims(void)
{
	claim_case(false);
	claim_case(true);

	setup("claims-failed-fill");
	struct cache_claim nb = {.verified = true, .size = NB_LEN};
	memset(nb.key, 7, 32);
	int calls = 0, nb_fills = 0;
	struct opener t = {key, BODY_LEN, &nb, 1, fill_fails, &calls, -1};
	struct opener n = {nb.key, NB_LEN, NULL, 0, fill_nb, &nb_fills, -1};
	pthread_t tt, tn;
	pthread_create(&tt, NULL, open_one, &t);
	usleep(20000);
	pthread_create(&tn, NULL, open_one, &n);
	pthread_join(tt, NULL);
	pthread_join(tn, NULL);
	CHECK_INT(t.fd, -EIO);
	CHECK(fd_is(n.fd, NB, NB_LEN));
	CHECK_INT(nb_fills, 1);
	if (n.fd >= 0)
		close(n.fd);
	teardown();
}

/* A neighbour published after the fill claimed it (a fill that ended
 * between cache_begin's look and its claim, another daemon) is let go
 * before the fill starts: the fill does not fetch it again, and its waiter
 * gets the published file rather than -EAGAIN. */
static bool nb_claimed_in_fill;

static int fill_sees_claim(void *ud, int fd)
{
	nb_claimed_in_fill = ((struct cache_claim *)ud)->claimed;
	return write_full(fd, BODY, BODY_LEN);
}

struct nb_waiter {
	struct cache_waiter w; /* first */
	int fd;
};

static void nb_done(struct cache_waiter *w, int fd)
{
	((struct nb_waiter *)w)->fd = fd;
}

static void test_claim_published_meanwhile(void)
{
	setup("claim-published-meanwhile");
	struct cache_claim nb = {.verified = true, .size = NB_LEN};
	sha256_buf(NB, NB_LEN, nb.key);
	struct cache_waiter unused = {0};
	struct cache_stream *s = NULL;
	int fd = -1;
	CHECK_INT(cache_begin(cache, key, true, BODY_LEN, &nb, 1, &unused, &fd, &s), CACHE_FILL);
	CHECK(nb.claimed);
	struct nb_waiter wn = {.w.done = nb_done, .fd = -100};
	CHECK_INT(cache_begin(cache, nb.key, true, NB_LEN, NULL, 0, &wn.w, &fd, &s), CACHE_WAIT);
	char hex[65];
	hex_encode(nb.key, 32, hex);
	char *nbdir = xasprintf("%s/bodies/%.2s", dir, hex);
	char *nbpath = xasprintf("%s/%s", nbdir, hex + 2);
	CHECK_INT(mkdir_p(nbdir, 0755), 0);
	CHECK_INT(file_write_atomic(nbpath, NB, NB_LEN, 0444), 0); /* another daemon */
	fd = cache_fill(cache, key, true, BODY_LEN, &nb, 1, fill_sees_claim, &nb, NULL);
	CHECK(fd_is(fd, BODY, BODY_LEN));
	CHECK(!nb_claimed_in_fill);
	CHECK(!nb.claimed);
	CHECK(fd_is(wn.fd, NB, NB_LEN));
	if (fd >= 0)
		close(fd);
	if (wn.fd >= 0)
		close(wn.fd);
	free(nbdir);
	free(nbpath);
	teardown();
}

/* First opens of two sibling files at once, each listing the other as its
 * neighbour: one fill brings both and every other opener waits for it or
 * finds them published, never a second fill.  (Fills used to claim their
 * neighbours only once started, and a caller that missed the body just
 * before a fill ended became a filler of a published body.) */
static int pair_fills;

static int fill_pair(void *ud, int fd)
{
	struct cache_claim *other = ud; /* the other file's claim */
	__atomic_add_fetch(&pair_fills, 1, __ATOMIC_RELAXED);
	bool target_is_body = other->size == NB_LEN;
	cache_publish(cache, other, target_is_body ? NB : BODY);
	return target_is_body ? write_full(fd, BODY, BODY_LEN) : write_full(fd, NB, NB_LEN);
}

#define PAIR_OPENERS 8

static void test_sibling_first_opens(void)
{
	setup("siblings");
	uint8_t nbkey[32];
	memset(nbkey, 9, 32);
	char hex[65];
	hex_encode(nbkey, 32, hex);
	char *nbpath = xasprintf("%s/bodies/%.2s/%s", dir, hex, hex + 2);
	int twice = 0, wrong = 0;
	for (int round = 0; round < 1000; round++) {
		unlink(path);
		unlink(nbpath);
		pair_fills = 0;
		struct cache_claim cl[PAIR_OPENERS];
		struct opener o[PAIR_OPENERS];
		pthread_t th[PAIR_OPENERS];
		for (int k = 0; k < PAIR_OPENERS; k++) {
			bool t = k % 2 == 0; /* opens the target, lists the neighbour */
			cl[k] =
			    (struct cache_claim){.verified = true, .size = t ? NB_LEN : BODY_LEN};
			memcpy(cl[k].key, t ? nbkey : key, 32);
			o[k] = (struct opener){t ? key : nbkey,
					       t ? BODY_LEN : NB_LEN,
					       &cl[k],
					       1,
					       fill_pair,
					       &cl[k],
					       -1};
			pthread_create(&th[k], NULL, open_one, &o[k]);
		}
		for (int k = 0; k < PAIR_OPENERS; k++) {
			pthread_join(th[k], NULL);
			bool t = k % 2 == 0;
			wrong += !fd_is(o[k].fd, t ? BODY : NB, t ? BODY_LEN : NB_LEN);
			if (o[k].fd >= 0)
				close(o[k].fd);
		}
		twice += pair_fills != 1;
	}
	CHECK_INT(wrong, 0);
	CHECK_INT(twice, 0);
	free(nbpath);
	teardown();
}

/* ---- bodies vanishing under a fill ---- */

static int stop_deleter;

static void *deleter(void *ud)
{
	(void)ud;
	while (!__atomic_load_n(&stop_deleter, __ATOMIC_RELAXED))
		unlink(path);
	return NULL;
}

static void test_vanishing_body(void)
{
	setup("vanishing");
	struct fill_ud fill = {0};
	struct getter g[4];
	pthread_t th[4], del;
	stop_deleter = 0;
	pthread_create(&del, NULL, deleter, NULL);
	for (int k = 0; k < 4; k++) {
		g[k] = (struct getter){.fill = &fill, .rounds = 3000};
		pthread_create(&th[k], NULL, get_loop, &g[k]);
	}
	int bad = 0, err = 0;
	for (int k = 0; k < 4; k++) {
		pthread_join(th[k], NULL);
		bad += g[k].bad;
		if (g[k].bad && !err)
			err = g[k].first_err;
	}
	__atomic_store_n(&stop_deleter, 1, __ATOMIC_RELAXED);
	pthread_join(del, NULL);
	CHECK_INT(bad, 0);
	CHECK_INT(err, 0);
	teardown();
}

/* ---- torn copies ---- */

static void plant_torn(void)
{
	char *d = xstrndup(path, (size_t)(strrchr(path, '/') - path));
	mkdir_p(d, 0755);
	free(d);
	FILE *f = fopen(path, "w");
	if (f) {
		fputs("torn", f);
		fclose(f);
	}
}

static void test_torn_copies(void)
{
	setup("torn");
	for (int round = 0; round < 200; round++) {
		plant_torn();
		struct fill_ud fill = {0};
		struct getter g[4];
		pthread_t th[4];
		for (int k = 0; k < 4; k++) {
			g[k] = (struct getter){.fill = &fill, .rounds = 1};
			pthread_create(&th[k], NULL, get_loop, &g[k]);
		}
		int bad = 0;
		for (int k = 0; k < 4; k++) {
			pthread_join(th[k], NULL);
			bad += g[k].bad;
		}
		CHECK_INT(bad, 0);
		/* the good copy stays published */
		int fd = cache_peek(cache, key, true, BODY_LEN);
		CHECK(fd >= 0 && is_body(fd));
		if (fd >= 0)
			close(fd);
		if (bad || fd < 0)
			break;
	}
	teardown();
}

int main(void)
{
	test_single_flight();
	test_claims();
	test_claim_published_meanwhile();
	test_sibling_first_opens();
	test_vanishing_body();
	test_torn_copies();
	return check_done("cache");
}
