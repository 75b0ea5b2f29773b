/* test_http: the fetch engine against tests/integration/faultserver.py
 * (started as a subprocess on port 0) and against local files. */
#include "fetch/http.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"
#define DATA_SIZE (3 * 1024 * 1024 + 12345) /* not a multiple of any buffer size */
#define NCONC 64

static char tmpdir[] = "/tmp/sitefs-test-http-XXXXXX";
static uint8_t *data;
static pid_t server_pid = -1;
static int port;
static struct http_engine *eng;

/* --- fixtures --------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void write_file(const char *name, const void *p, size_t n)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", tmpdir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || write_full(fd, p, n) < 0) {
		perror(path);
		exit(1);
	}
	close(fd);
}

static const char *server_script(void)
{
	static const char *const cands[] = {"integration/faultserver.py",
					    "tests/integration/faultserver.py"};

	for (size_t i = 0; i < ARRAY_SIZE(cands); i++)
		if (access(cands[i], R_OK) == 0)
			return cands[i];
	return NULL;
}

static int start_server(const char *script)
{
	int pfd[2];
	char line[32];
	ssize_t n;
	size_t got = 0;

	if (pipe(pfd) < 0)
		return -errno;
	server_pid = fork();
	if (server_pid < 0)
		return -errno;
	if (server_pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execl(PYTHON, PYTHON, script, "--root", tmpdir, "--port", "0", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while (got < sizeof(line) - 1 &&
	       (n = read(pfd[0], line + got, sizeof(line) - 1 - got)) > 0) {
		got += (size_t)n;
		if (memchr(line, '\n', got))
			break;
	}
	close(pfd[0]);
	line[got] = '\0';
	port = atoi(line);
	return port > 0 ? 0 : -EIO;
}

static void stop_server(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = -1;
	}
}

static char *url_of(const char *path) { return xasprintf("http://127.0.0.1:%d/%s", port, path); }

/* --- sinks ------------------------------------------------------------- */

/* Compares what arrives with data[base + got...]: catches wrong bytes,
 * duplicates (a resume that repeats) and gaps at once. */
struct verify {
	uint64_t base, got;
	bool bad;
	int fail_after; /* > 0: return -ENOSPC at this call */
	int calls;
};

static int verify_sink(void *ud, const uint8_t *p, size_t n)
{
	struct verify *v = ud;

	if (v->fail_after && ++v->calls >= v->fail_after)
		return -ENOSPC;
	if (v->base + v->got + n > DATA_SIZE || memcmp(p, data + v->base + v->got, n) != 0)
		v->bad = true;
	v->got += n;
	return 0;
}

static int buf_sink(void *ud, const uint8_t *p, size_t n)
{
	if (ud)
		buf_append(ud, p, n);
	return 0;
}

static void req_init(struct http_req *r, const char *url, uint64_t off, uint64_t len,
		     struct verify *v)
{
	memset(r, 0, sizeof(*r));
	r->url = url;
	r->off = off;
	r->len = len;
	r->sink = verify_sink;
	r->ud = v;
	r->full_fd = -1;
	memset(v, 0, sizeof(*v));
	v->base = off;
}

/* GETs a control URL of the server through the engine itself. */
static int control(const char *what, struct buf *out)
{
	_cleanup_free_ char *u = url_of(what);
	struct http_req r = {.url = u, .sink = buf_sink, .ud = out, .full_fd = -1};
	int rc = http_fetch(eng, &r);

	if (rc < 0)
		fprintf(stderr, "control %s: %s\n", what, r.err);
	return rc;
}

static void set_fault(const char *spec)
{
	_cleanup_free_ char *q = xasprintf("__fault?mode=%s", spec);
	struct buf b;

	buf_init(&b);
	CHECK_INT(control(q, &b), 0);
	buf_free(&b);
}

/* Requests the server has seen for /name (from its JSON stats). */
static long server_requests(const char *name)
{
	_cleanup_free_ char *key = xasprintf("\"/%s\": {\"requests\": ", name);
	struct buf b;
	const char *s;
	long n = -1;

	buf_init(&b);
	if (control("__stats", &b) == 0) {
		s = strstr((const char *)b.data, key);
		n = s ? atol(s + strlen(key)) : 0;
	}
	buf_free(&b);
	return n;
}

static double elapsed_ms(uint64_t t0) { return (double)(now_ns() - t0) / 1e6; }

/* --- tests ------------------------------------------------------------- */

static void test_helpers(void)
{
	static const struct {
		const char *in, *out;
	} redact[] = {
	    {"https://user:pw@host/a/b", "https://***@host/a/b"},
	    {"https://tok@en:x@host:8080/p?q=a@b", "https://***@host:8080/p?q=a@b"},
	    {"http://host/p@q", "http://host/p@q"},
	    {"https://host", "https://host"},
	    {"/local/path@x", "/local/path@x"},
	    {"file:///a/b", "file:///a/b"},
	};
	char out[128];

	for (size_t i = 0; i < ARRAY_SIZE(redact); i++) {
		http_redact_url(redact[i].in, out, sizeof(out));
		CHECK_STR(out, redact[i].out);
	}
	http_redact_url("https://user:secret@h/x", out, 12);
	CHECK(strstr(out, "secret") == NULL);
	CHECK(http_is_remote("http://x/"));
	CHECK(http_is_remote("HTTPS://x/"));
	CHECK(!http_is_remote("file:///x"));
	CHECK(!http_is_remote("/x"));
	CHECK(!http_is_remote("httpx://x"));
}

static void test_range_and_whole(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	struct http_req r;
	struct verify v;

	req_init(&r, u, 12345, 100000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 100000);
	CHECK(!v.bad);
	CHECK_INT(r.status, 206);
	CHECK_INT(r.attempts, 1);
	CHECK(!r.range_ignored);
	CHECK_INT(r.wire_bytes, 100000);

	/* The last byte alone, and a range running exactly to the end. */
	req_init(&r, u, DATA_SIZE - 1, 1, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 1);
	CHECK(!v.bad);
	req_init(&r, u, 1000, DATA_SIZE - 1000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, DATA_SIZE - 1000);
	CHECK(!v.bad);

	req_init(&r, u, 0, 0, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, DATA_SIZE);
	CHECK(!v.bad);
	CHECK_INT(r.status, 200);
	CHECK(!r.range_ignored);

	/* From an offset to the end ("A-"). */
	req_init(&r, u, 777777, 0, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, DATA_SIZE - 777777);
	CHECK(!v.bad);
	CHECK_INT(r.status, 206);

	/* An empty resource. */
	_cleanup_free_ char *ue = url_of("empty.bin");
	req_init(&r, ue, 0, 0, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 0);
}

static void test_concurrent(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	struct http_req *r = xcalloc(NCONC, sizeof(*r));
	struct verify *v = xcalloc(NCONC, sizeof(*v));
	struct http_stats s0, s1;
	uint64_t want = 0;
	int ok = 0;

	http_get_stats(eng, &s0);
	for (int i = 0; i < NCONC; i++) {
		uint64_t off = rnd() % (DATA_SIZE - 1);
		uint64_t len = 1 + rnd() % MIN((uint64_t)300000, DATA_SIZE - off);

		req_init(&r[i], u, off, len, &v[i]);
		want += len;
		CHECK_INT(http_submit(eng, &r[i]), 0);
	}
	for (int i = 0; i < NCONC; i++) {
		int rc = http_wait(&r[i]);

		if (rc == 0 && v[i].got == r[i].len && !v[i].bad && r[i].status == 206)
			ok++;
		else
			fprintf(stderr, "concurrent #%d: rc %d got %" PRIu64 "/%" PRIu64 " %s\n", i,
				rc, v[i].got, r[i].len, r[i].err);
	}
	CHECK_INT(ok, NCONC);
	http_get_stats(eng, &s1);
	CHECK_INT(s1.requests - s0.requests, NCONC);
	CHECK_INT(s1.wire_bytes - s0.wire_bytes, want);
	free(r);
	free(v);
}

/* Far more requests than connections: libcurl 7.88 parks the extra
 * transfers until a connection frees up, and could lose the timer that
 * should restart a parked one, leaving it idle until the engine's next poll
 * timeout (1 s).  Many waves of a few requests each (the shape of a lock's
 * resolution rounds), then one big burst: no wave may take ~1 s. */
#define NBURST 400
#define NWAVES 150
#define WAVE 12
#define BURST_CONNS 4

static void burst_done(struct http_req *r, int result) {}

static uint64_t run_wave(struct http_engine *e2, const char *u, struct http_req *r,
			 struct verify *v, int n, int *ok)
{
	uint64_t t0 = now_ns();

	for (int i = 0; i < n; i++) {
		req_init(&r[i], u, (uint64_t)(i % 1000) * 1000, 1000, &v[i]);
		r[i].on_done = burst_done;
		CHECK_INT(http_submit(e2, &r[i]), 0);
	}
	for (int i = 0; i < n; i++) {
		int rc = http_wait(&r[i]);

		if (rc == 0 && v[i].got == 1000 && !v[i].bad)
			(*ok)++;
	}
	return now_ns() - t0;
}

static void test_burst(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	struct http_opts o = {.max_host_connections = BURST_CONNS};
	struct http_engine *e2 = http_engine_new(&o);
	struct http_req *r = xcalloc(NBURST, sizeof(*r));
	struct verify *v = xcalloc(NBURST, sizeof(*v));
	uint64_t worst = 0, big, t0 = now_ns();
	int ok = 0;

	CHECK(e2 != NULL);
	if (!e2)
		return;
	for (int w = 0; w < NWAVES; w++) {
		uint64_t t = run_wave(e2, u, r, v, WAVE, &ok);

		worst = MAX(worst, t);
	}
	big = run_wave(e2, u, r, v, NBURST, &ok);
	fprintf(stderr, "burst: %d waves of %d requests over %d connections: slowest %.0f ms; "
		"%d at once: %.0f ms; all: %.0f ms\n", NWAVES, WAVE, BURST_CONNS, worst / 1e6,
		NBURST, big / 1e6, (now_ns() - t0) / 1e6);
	CHECK_INT(ok, NWAVES * WAVE + NBURST);
	CHECK(worst < 500 * 1000000ULL);
	CHECK(big < 5000 * 1000000ULL);
	http_engine_free(e2);
	free(r);
	free(v);
}

static void test_retries(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	struct http_req r;
	struct verify v;
	uint64_t t0;

	set_fault("status:503:2");
	req_init(&r, u, 5000, 70000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 70000);
	CHECK(!v.bad);
	CHECK_INT(r.attempts, 3);
	CHECK_INT(r.status, 206);

	/* More failures than retries: -EIO, and the reason says why. */
	set_fault("status:500:10");
	req_init(&r, u, 0, 10, &v);
	CHECK_INT(http_fetch(eng, &r), -EIO);
	CHECK_INT(r.attempts, 5);
	CHECK_INT(r.status, 500);
	CHECK(strstr(r.err, "500") != NULL);

	set_fault("status:429:1");
	req_init(&r, u, 100, 1000, &v);
	t0 = now_ns();
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK(elapsed_ms(t0) >= 900); /* Retry-After: 1 beats the 100 ms backoff */
	CHECK_INT(r.attempts, 2);
	CHECK_INT(v.got, 1000);
	CHECK(!v.bad);

	/* A request in backoff must not hold up the others.  The server takes
	 * the injected 429 before counting, so once it counts one request for
	 * data.bin, the 429 is spent on "slow". */
	CHECK_INT(control("__reset", NULL), 0);
	set_fault("status:429:1");
	struct http_req slow;
	struct verify vs;
	req_init(&slow, u, 0, 4096, &vs);
	t0 = now_ns();
	CHECK_INT(http_submit(eng, &slow), 0);
	for (int i = 0; i < 200 && server_requests("data.bin") < 1; i++)
		usleep(5000);
	uint64_t t1 = now_ns();
	req_init(&r, u, 4096, 4096, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK(elapsed_ms(t1) < 500);
	CHECK_INT(r.attempts, 1);
	CHECK_INT(http_wait(&slow), 0);
	CHECK(elapsed_ms(t0) >= 900);
	CHECK_INT(slow.attempts, 2);
	CHECK_INT(vs.got, 4096);
	CHECK(!vs.bad);

	/* Cut twice mid-body: resumed from the first missing byte. */
	set_fault("drop_after:300000:2");
	req_init(&r, u, 54321, 1000000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 1000000);
	CHECK(!v.bad);
	CHECK_INT(r.attempts, 3);
	CHECK_INT(r.wire_bytes, 1000000); /* nothing fetched twice */

	/* Same with a whole-resource request (the resume sends "A-"). */
	set_fault("drop_after:1000000:1");
	req_init(&r, u, 0, 0, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, DATA_SIZE);
	CHECK(!v.bad);
	CHECK_INT(r.attempts, 2);
	set_fault("none");
}

static void check_full_file(int fd)
{
	uint8_t *b = xmalloc(DATA_SIZE);
	struct stat st;

	CHECK(fstat(fd, &st) == 0);
	CHECK_INT(st.st_size, DATA_SIZE);
	CHECK(pread_full(fd, b, DATA_SIZE, 0) == 0 && memcmp(b, data, DATA_SIZE) == 0);
	free(b);
}

static void test_ignore_range(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	_cleanup_free_ char *fpath = xasprintf("%s/full.out", tmpdir);
	struct http_req r;
	struct verify v;
	int fd;

	set_fault("ignore_range");
	req_init(&r, u, 1000, 5000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 5000);
	CHECK(!v.bad);
	CHECK(r.range_ignored);
	CHECK_INT(r.status, 200);

	fd = open(fpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	req_init(&r, u, 2000000, 7000, &v);
	r.full_fd = fd;
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 7000);
	CHECK(!v.bad);
	CHECK(r.range_ignored);
	CHECK_INT(r.wire_bytes, DATA_SIZE);
	check_full_file(fd);

	/* Cut after the range was delivered: full_fd restarts from scratch and
	 * the sink sees no byte twice. */
	set_fault("ignore_range,drop_after:2500000:1");
	CHECK(pwrite(fd, "junk", 4, DATA_SIZE + 100) == 4); /* stale tail must go */
	req_init(&r, u, 10, 20, &v);
	r.full_fd = fd;
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 20);
	CHECK(!v.bad);
	CHECK_INT(r.attempts, 2);
	check_full_file(fd);

	/* Cut before the range was delivered. */
	set_fault("ignore_range,drop_after:100000:1");
	req_init(&r, u, 3000000, 100000, &v);
	r.full_fd = fd;
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 100000);
	CHECK(!v.bad);
	CHECK_INT(r.attempts, 2);
	check_full_file(fd);
	close(fd);

	/* 200 for a range beyond the end. */
	set_fault("ignore_range");
	req_init(&r, u, DATA_SIZE - 10, 100, &v);
	CHECK_INT(http_fetch(eng, &r), -ERANGE);
	set_fault("none");
}

static void test_errors(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	_cleanup_free_ char *missing = url_of("nope.bin");
	struct http_req r;
	struct verify v;

	set_fault("wrong_content_range");
	req_init(&r, u, 100, 100, &v);
	CHECK_INT(http_fetch(eng, &r), -EBADMSG);
	CHECK_INT(r.attempts, 1);
	CHECK(strstr(r.err, "Content-Range") != NULL);

	set_fault("gzip");
	req_init(&r, u, 100, 100, &v);
	CHECK_INT(http_fetch(eng, &r), -EBADMSG);
	set_fault("none");

	req_init(&r, missing, 0, 10, &v);
	CHECK_INT(http_fetch(eng, &r), -ENOENT);
	CHECK_INT(r.status, 404);
	CHECK_INT(r.attempts, 1);

	/* Range running past the end: a short 206, then a 416. */
	req_init(&r, u, DATA_SIZE - 10, 100, &v);
	CHECK_INT(http_fetch(eng, &r), -ERANGE);
	req_init(&r, u, DATA_SIZE + 10, 100, &v);
	CHECK_INT(http_fetch(eng, &r), -ERANGE);
	CHECK_INT(r.status, 416);

	/* The sink's error aborts the request, without retries. */
	req_init(&r, u, 0, 2000000, &v);
	v.fail_after = 2;
	CHECK_INT(http_fetch(eng, &r), -ENOSPC);
	CHECK_INT(r.attempts, 1);

	/* Nobody listening: connection errors are retried, then -EIO. */
	struct http_opts o = {.max_retries = 2, .backoff_ms = 10};
	struct http_engine *e2 = http_engine_new(&o);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);

	/* A port that was just free: bound but never listened on. */
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	_cleanup_free_ char *dead = xasprintf("http://127.0.0.1:%d/x", ntohs(sa.sin_port));
	req_init(&r, dead, 0, 10, &v);
	CHECK_INT(http_fetch(e2, &r), -EIO);
	CHECK_INT(r.attempts, 3);
	close(fd);
	http_engine_free(e2);
}

static void test_local(void)
{
	_cleanup_free_ char *path = xasprintf("%s/data.bin", tmpdir);
	_cleanup_free_ char *furl = xasprintf("file://%s/sp%%20ace.bin", tmpdir);
	_cleanup_free_ char *furl2 = xasprintf("file://localhost%s/data.bin", tmpdir);
	_cleanup_free_ char *missing = xasprintf("%s/nope.bin", tmpdir);
	struct http_stats s0, s1;
	struct http_req r;
	struct verify v;

	http_get_stats(eng, &s0);
	req_init(&r, path, 300000, 600000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 600000);
	CHECK(!v.bad);
	CHECK_INT(r.status, 0);

	req_init(&r, path, 0, 0, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, DATA_SIZE);
	CHECK(!v.bad);

	req_init(&r, furl, 10, 1000, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 1000);
	CHECK(!v.bad);

	req_init(&r, furl2, DATA_SIZE - 5, 5, &v);
	CHECK_INT(http_fetch(eng, &r), 0);
	CHECK_INT(v.got, 5);
	CHECK(!v.bad);

	req_init(&r, path, DATA_SIZE - 5, 6, &v);
	CHECK_INT(http_fetch(eng, &r), -ERANGE);
	req_init(&r, path, DATA_SIZE + 1, 0, &v);
	CHECK_INT(http_fetch(eng, &r), -ERANGE);
	req_init(&r, missing, 0, 1, &v);
	CHECK_INT(http_fetch(eng, &r), -ENOENT);
	req_init(&r, "file://otherhost/etc/passwd", 0, 1, &v);
	CHECK_INT(http_fetch(eng, &r), -EINVAL);
	req_init(&r, "file:///tmp/%zz", 0, 1, &v);
	CHECK_INT(http_fetch(eng, &r), -EINVAL);

	req_init(&r, path, 0, DATA_SIZE, &v);
	v.fail_after = 3;
	CHECK_INT(http_fetch(eng, &r), -ENOSPC);

	/* Local reads need no engine. */
	req_init(&r, path, 1, 2, &v);
	CHECK_INT(http_fetch(NULL, &r), 0);
	CHECK_INT(v.got, 2);

	http_get_stats(eng, &s1);
	CHECK_INT(s1.local_reads - s0.local_reads, 10);
	CHECK_INT(s1.requests, s0.requests);
}

static void test_cancel(void)
{
	_cleanup_free_ char *u = url_of("data.bin");
	struct http_engine *e2 = http_engine_new(NULL);
	struct http_req r;
	struct verify v;

	set_fault("delay:3000");
	req_init(&r, u, 0, 10, &v);
	CHECK_INT(http_submit(e2, &r), 0);
	usleep(100000);
	uint64_t t0 = now_ns();
	http_engine_free(e2);
	CHECK(elapsed_ms(t0) < 1000);
	CHECK_INT(http_wait(&r), -ECANCELED);

	/* One request of several: only that one ends, at once. */
	struct http_req r2;
	struct verify v2;
	e2 = http_engine_new(NULL);
	req_init(&r, u, 0, 10, &v);
	req_init(&r2, u, 10, 10, &v2);
	CHECK_INT(http_submit(e2, &r), 0);
	CHECK_INT(http_submit(e2, &r2), 0);
	usleep(100000);
	t0 = now_ns();
	http_cancel(e2, &r);
	CHECK_INT(http_wait(&r), -ECANCELED);
	CHECK(elapsed_ms(t0) < 1000);
	CHECK(strstr(r.err, "cancelled") != NULL);
	set_fault("none");
	CHECK_INT(http_wait(&r2), 0);
	CHECK_INT(v2.got, 10);
	CHECK(!v2.bad);
	/* Cancelling a completed request changes nothing; the engine goes on. */
	req_init(&r, u, 0, 10, &v);
	CHECK_INT(http_submit(e2, &r), 0);
	usleep(300000);
	http_cancel(e2, &r);
	CHECK_INT(http_wait(&r), 0);

	/* All: in-flight requests end, later submits are refused; local reads work. */
	set_fault("delay:3000");
	req_init(&r, u, 0, 10, &v);
	req_init(&r2, u, 10, 10, &v2);
	CHECK_INT(http_submit(e2, &r), 0);
	CHECK_INT(http_submit(e2, &r2), 0);
	usleep(100000);
	t0 = now_ns();
	http_cancel(e2, NULL);
	CHECK_INT(http_wait(&r), -ECANCELED);
	CHECK_INT(http_wait(&r2), -ECANCELED);
	CHECK(elapsed_ms(t0) < 1000);
	req_init(&r, u, 0, 10, &v);
	CHECK_INT(http_submit(e2, &r), -ECANCELED);
	_cleanup_free_ char *path = xasprintf("%s/data.bin", tmpdir);
	req_init(&r, path, 0, 10, &v);
	CHECK_INT(http_fetch(e2, &r), 0);
	http_engine_free(e2);
	set_fault("none");
}

int main(void)
{
	const char *script;
	struct http_stats st;

	if (access(PYTHON, X_OK) != 0) {
		printf("SKIP: %s not found\n", PYTHON);
		return 77;
	}
	script = server_script();
	if (!script) {
		fprintf(stderr, "faultserver.py not found (run from the tests/ directory)\n");
		return 1;
	}
	log_init_from_env(); /* SITEFS_DEBUG=fetch SITEFS_LOG_LEVEL=7 traces every attempt */
	curl_global_init(CURL_GLOBAL_ALL);
	signal(SIGPIPE, SIG_IGN);

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	data = xmalloc(DATA_SIZE);
	for (size_t i = 0; i < DATA_SIZE; i += 8) {
		uint64_t x = rnd();

		memcpy(data + i, &x, MIN((size_t)8, DATA_SIZE - i));
	}
	write_file("data.bin", data, DATA_SIZE);
	write_file("sp ace.bin", data, 4096);
	write_file("empty.bin", "", 0);

	if (start_server(script) < 0) {
		fprintf(stderr, "cannot start %s\n", script);
		stop_server();
		rm_rf(tmpdir);
		return 1;
	}
	eng = http_engine_new(NULL);
	CHECK(eng != NULL);
	if (eng) {
		test_helpers();
		test_range_and_whole();
		test_concurrent();
		test_burst();
		test_retries();
		test_ignore_range();
		test_errors();
		test_local();
		test_cancel();
		http_get_stats(eng, &st);
		CHECK(st.requests > 0 && st.wire_bytes > DATA_SIZE);
		CHECK_INT(server_requests("nope.bin"), 1);
		eng = http_engine_free(eng);
	}
	CHECK(http_engine_free(NULL) == NULL);

	stop_server();
	rm_rf(tmpdir);
	free(data);
	curl_global_cleanup();
	return check_done("http");
}
