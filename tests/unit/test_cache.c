/* test_cache: the body store's single flight, claims and publishing
 * (cache.c), with threads.
 *
 * - one fill for many concurrent callers of one key, also when one of them
 *   missed the body just before the fill ended;
 * - a claimed key: waiters get the published body, or fill it themselves
 *   when the claim is given up;
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
		int fd = cache_get(cache, key, true, BODY_LEN, fill_body, g->fill);
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
	for (int round = 0; round < 2000; round++) {
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

static void *get_once(void *ud)
{
	struct getter *g = ud;
	g->rounds = 1;
	return get_loop(g);
}

/* Waits until a getter blocks on the claim (it has nothing else to do). */
static void settle(void) { usleep(100000); }

static void test_claims(void)
{
	setup("claims");
	struct fill_ud fill = {0};
	CHECK(cache_claim(cache, key, true, BODY_LEN));
	CHECK(!cache_claim(cache, key, true, BODY_LEN)); /* already in flight */
	struct getter g = {.fill = &fill};
	pthread_t th;
	pthread_create(&th, NULL, get_once, &g);
	settle();
	cache_publish(cache, key, true, BODY, BODY_LEN);
	pthread_join(th, NULL);
	CHECK_INT(g.bad, 0);
	CHECK_INT(fill.calls, 0);			 /* the waiter took the published body */
	CHECK(!cache_claim(cache, key, true, BODY_LEN)); /* published */

	/* a claim given up: the waiter fills it itself */
	CHECK_INT(unlink(path), 0);
	CHECK(cache_claim(cache, key, true, BODY_LEN));
	g = (struct getter){.fill = &fill};
	pthread_create(&th, NULL, get_once, &g);
	settle();
	cache_publish(cache, key, true, NULL, 0);
	pthread_join(th, NULL);
	CHECK_INT(g.bad, 0);
	CHECK_INT(fill.calls, 1);
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
	test_vanishing_body();
	test_torn_copies();
	return check_done("cache");
}
