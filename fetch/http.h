/* http: the fetch engine.  One thread owns the libcurl multi handle; other
 * threads submit requests and block on their own completion.
 *
 * DESIGN
 * - Requests are queued under engine->lock and the owner thread is woken
 *   with curl_multi_wakeup().  Easy handles never leave the owner thread.
 * - Every request is a byte range [off, off+len) of a URL (len 0: the whole
 *   resource).  Bytes reach req->sink exactly once and in order: a retry
 *   after a partial transfer resumes at the first byte not yet delivered.
 * - 206 answers must carry a Content-Range that starts at the requested
 *   offset; a 200 answer to a range request means the server ignores Range:
 *   the engine slices the wanted bytes out of the stream, writes the whole
 *   body to req->full_fd when the caller gave one, and sets range_ignored.
 * - Accept-Encoding: identity, 256 KiB receive buffers, keep-alive,
 *   HTTP/2 multiplexing over TLS where offered.
 * - Retries with exponential backoff on connection errors, 5xx and 429
 *   (Retry-After honoured, capped).  4xx other than 429 fail at once.
 * - file:// URLs and plain paths are served with pread() in the calling
 *   thread; they never touch curl.
 * - URL credentials / netrc are libcurl's; they are never logged (URLs are
 *   logged with userinfo stripped) and not forwarded on cross-host redirects.
 * Deliberately missing: a byte budget (callers bound their own requests). */
#ifndef SITEFS_HTTP_H
#define SITEFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

struct http_engine;

struct http_opts {
	int max_host_connections; /* HTTP/1.1 connections per host (default 64: the
				    * tails of a lock of up to 64 wheels in one round
				    * trip; at 48, a 49th tail waited for a free
				    * connection, one round trip more) */
	int max_retries;          /* default 4 */
	long connect_timeout_ms;  /* default 10000 */
	long low_speed_time_s;    /* abort a transfer slower than 1 B/s for this long (default 30) */
	long backoff_ms;          /* first retry delay (default 100), doubles each time */
};

/* Receives body bytes of the requested range, in order, on the engine
 * thread.  Return 0 to continue or -errno to abort the request with that
 * error. Must not block for long. */
typedef int (*http_sink_fn)(void *ud, const uint8_t *data, size_t len);

struct http_req {
	/* inputs, set by the caller before http_submit() */
	const char *url; /* http(s)://, file://, or a local path */
	uint64_t off;
	uint64_t len; /* 0 = to the end of the resource (no Range header if off == 0) */
	http_sink_fn sink;
	void *ud;
	int full_fd; /* -1, or an fd receiving the whole body when Range is ignored */
	/* NULL, or called on the engine thread when a 200 answers the range
	 * and full_fd is -1: returns the fd to use as full_fd (the caller
	 * closes req->full_fd afterwards), or -1 for none.  Saves creating a
	 * file per request for servers that almost always honour Range. */
	int (*full_open)(struct http_req *req);
	const char *accept; /* NULL, or the value of an Accept header to send */
	/* NULL, or called once when the request completes, on the engine thread
	 * (in http_submit() for local files), before http_wait() can return.
	 * Must not block or call into the engine; req is still valid. */
	void (*on_done)(struct http_req *req, int result);

	/* outputs, valid after http_wait() */
	int status;            /* last HTTP status (0 for local files / no answer) */
	bool range_ignored;    /* the server answered 200 to a range request */
	uint64_t resource_size; /* whole resource size (Content-Range total, or the
				   Content-Length of a 200); 0 if unknown */
	char content_type[96]; /* Content-Type of the final response ("" if none) */
	uint64_t wire_bytes;   /* body bytes received over the wire, all attempts */
	int attempts;          /* 1 + retries */
	char err[256];         /* human-readable reason when http_wait() < 0 */

	/* private to http.c */
	struct http_req_priv *priv;
};

/* Starts the owner thread. opts may be NULL for defaults.  curl_global_init()
 * must have been called by main() before any thread starts.
 * Returns NULL on failure (logged). */
struct http_engine *http_engine_new(const struct http_opts *opts);
/* Stops the thread; outstanding requests complete with -ECANCELED.  Accepts NULL. */
struct http_engine *http_engine_free(struct http_engine *e);

/* Queue a request.  req must stay valid until http_wait() returns.  For
 * local files the work is done here, synchronously.  Returns 0 or -errno. */
int http_submit(struct http_engine *e, struct http_req *req);
/* Wait for a submitted request.  Returns 0 when exactly the requested bytes
 * were delivered; -ENOENT (404/410 or missing file), -EACCES (401/403),
 * -ERANGE (416, or the resource is shorter than the range), -EBADMSG (bad
 * Content-Range or a 2xx we cannot use), -EIO (network, 5xx after retries),
 * -ECANCELED, or the sink's error.  req->err says what happened. */
int http_wait(struct http_req *req);
/* submit + wait */
int http_fetch(struct http_engine *e, struct http_req *req);

/* Cancels requests: they complete with -ECANCELED ("cancelled" in err) as
 * soon as the engine thread sees it (an open transfer is dropped, a pending
 * retry forgotten).  req != NULL: that one request, which the caller has
 * submitted and not yet passed to http_wait() (its own deadline, say);
 * a request that already completed keeps its result.  req == NULL: every
 * queued and in-flight request, and every later http_submit() of a remote
 * URL fails with -ECANCELED (the process is shutting down).  Any thread. */
void http_cancel(struct http_engine *e, struct http_req *req);

/* Totals since the engine started (for stats and tests). */
struct http_stats {
	uint64_t requests;   /* HTTP requests sent, retries included */
	uint64_t wire_bytes; /* body bytes received */
	uint64_t local_reads;
};
void http_get_stats(struct http_engine *e, struct http_stats *ret);

/* Writes url with any userinfo replaced by "***" into out (for logs). */
void http_redact_url(const char *url, char *out, size_t outlen);
/* true for http:// and https:// URLs; false for file:// and paths. */
bool http_is_remote(const char *url);
/* The path a non-remote url names (file:///p, file://localhost/p, file:/p,
 * percent-decoded; anything else as it is).  Returns 0 and *ret (caller
 * frees), or -EINVAL for a file URL naming another host or malformed. */
int http_local_path(const char *url, char **ret);

#endif
