/* http: the fetch engine (see the DESIGN note in http.h).
 *
 * Request life: http_submit() appends the request's private part to
 * engine->queue under engine->lock and wakes the owner thread.  The owner
 * moves it to its inflight list and runs one attempt at a time on a pooled
 * easy handle.  A request waiting for a retry stays on the inflight list
 * with no easy handle and a due time; the nearest due time bounds the
 * curl_multi_poll() timeout, so a backoff never stalls other transfers.
 * When a request ends, the owner writes its outputs, then signals the
 * request's own condvar; from that moment it never touches it again and
 * http_wait() frees the private part.
 *
 * Threads: only the owner thread touches easy handles, the inflight list
 * and the per-attempt state; other threads touch the multi handle only
 * through curl_multi_wakeup(), always under engine->lock so that it cannot
 * race with the teardown in http_engine_free().
 *
 * Lock order: engine->lock, then nothing; priv->lock, then nothing. */
#include "fetch/http.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define HTTP_BUFSIZE (256 * 1024)
#define POOL_MAX 32
#define BACKOFF_MAX_MS 10000
#define RETRY_AFTER_MAX_MS 10000
#define ERROR_BODY_MAX (64 * 1024) /* error pages are read (keep-alive) up to this */
#define POLL_MAX_MS 1000

struct http_req_priv {
	struct http_req *req;
	struct http_engine *e;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;  /* protected by lock */
	int result; /* protected by lock */
	_Atomic bool cancel; /* http_cancel() asked for this request */

	/* Owner thread only from here on (set up by http_submit() before the
	 * request is queued). */
	struct http_req_priv *next, *prev; /* engine queue (under engine->lock), then inflight */
	CURL *easy;			   /* NULL while waiting for a retry */
	uint64_t due_ns;		   /* when the next attempt may start */
	uint64_t delivered;		   /* bytes of [off, off+len) given to the sink */
	bool whole;			   /* next attempt asks for the whole body */
	int fail;			   /* decided in a callback: final, no retry */

	/* Per attempt. */
	uint64_t req_start; /* first byte asked for (0 without a Range header) */
	bool sent_range;
	bool checked;	    /* final response headers validated */
	bool ok2xx;	    /* the body is payload, not an error page */
	bool full_active;   /* the body also goes to req->full_fd */
	bool done_early;    /* aborted on purpose once the range was delivered */
	uint64_t body_off;  /* resource offset of the next body byte */
	uint64_t body_end;  /* resource offset where the body ends (UINT64_MAX: unknown) */
	uint64_t discarded; /* error page bytes thrown away */
	long retry_after_s; /* -1: none */
	char content_range[96];
	char content_encoding[32];
	struct curl_slist *hdrs; /* engine headers + Accept, when req->accept is set */
	char errbuf[CURL_ERROR_SIZE];
};

struct http_engine {
	struct http_opts opts;
	CURLM *multi;
	struct curl_slist *headers; /* immutable after http_engine_new() */
	char *ca_file, *ca_dir;	    /* from the environment, like the curl tool; may be NULL */
	pthread_t thread;

	pthread_mutex_t lock;
	struct http_req_priv *queue_head, *queue_tail; /* protected by lock */
	bool stopping;				       /* protected by lock */
	bool cancel_all;			       /* protected by lock */
	_Atomic bool cancel_pending; /* some request was cancelled: scan inflight */

	/* Owner thread only. */
	struct http_req_priv *inflight;
	CURL *pool[POOL_MAX];
	unsigned npool;

	_Atomic uint64_t n_requests, n_wire_bytes, n_local_reads;
};

static void set_err(struct http_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct http_req *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

bool http_is_remote(const char *url)
{
	return url && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
}

void http_redact_url(const char *url, char *out, size_t outlen)
{
	const char *s, *host, *end, *at = NULL;

	if (!out || !outlen)
		return;
	if (!url) {
		snprintf(out, outlen, "(null)");
		return;
	}
	/* Only a real "scheme://" counts; "://" later in a path or query is data. */
	for (s = url; *s && (isalnum((unsigned char)*s) || strchr("+-.", *s)); s++)
		;
	if (s == url || strncmp(s, "://", 3) != 0) {
		snprintf(out, outlen, "%s", url);
		return;
	}
	host = s + 3;
	end = host + strcspn(host, "/?#");
	for (s = host; s < end; s++)
		if (*s == '@')
			at = s; /* the last '@' ends userinfo; a password may hold '@' */
	if (!at)
		snprintf(out, outlen, "%s", url);
	else
		snprintf(out, outlen, "%.*s***%s", (int)(host - url), url, at);
}

/* --- local files ---------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* file:///p, file://localhost/p and file:/p become /p, percent-decoded;
 * anything else is taken as a plain path.  Caller frees *ret. */
static int local_path(const char *url, char **ret)
{
	const char *s = url, *end;
	char *out, *o;

	if (strncasecmp(url, "file:", 5) != 0) {
		*ret = xstrdup(url);
		return 0;
	}
	s = url + 5;
	if (strncmp(s, "//", 2) == 0) {
		const char *host = s + 2, *slash = strchr(host, '/');

		if (!slash)
			return -EINVAL;
		if (slash != host && !(slash - host == 9 && strncasecmp(host, "localhost", 9) == 0))
			return -EINVAL; /* a remote file host: not ours to reach */
		s = slash;
	}
	if (*s != '/')
		return -EINVAL;
	end = s + strcspn(s, "?#");
	o = out = xmalloc(end - s + 1);
	for (; s < end; s++) {
		if (*s == '%') {
			int hi = -1, lo = -1;

			if (end - s < 3 || (hi = hexval(s[1])) < 0 || (lo = hexval(s[2])) < 0 ||
			    (hi == 0 && lo == 0)) {
				free(out);
				return -EINVAL;
			}
			*o++ = (char)(hi << 4 | lo);
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	*ret = out;
	return 0;
}

int http_local_path(const char *url, char **ret)
{
	return local_path(url, ret);
}

/* Runs in the caller's thread: local files never need the engine. */
static int local_read(struct http_req *r)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	struct stat st;
	uint64_t pos, end, size;
	int fd, rc;

	rc = local_path(r->url, &path);
	if (rc < 0) {
		set_err(r, "unsupported file URL");
		return rc;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		set_err(r, "open: %s", strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		set_err(r, "fstat: %s", strerror(-rc));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		set_err(r, "is a directory");
		goto out;
	}
	size = (uint64_t)st.st_size;
	r->resource_size = size;
	if (r->off > size || (r->len && r->len > size - r->off)) {
		rc = -ERANGE;
		set_err(r, "file has %" PRIu64 " bytes, range ends at %" PRIu64, size,
			r->off + (r->len ? r->len : 0));
		goto out;
	}
	end = r->len ? r->off + r->len : size;
	buf = xmalloc(HTTP_BUFSIZE);
	for (pos = r->off; pos < end;) {
		size_t n = (size_t)MIN((uint64_t)HTTP_BUFSIZE, end - pos);

		rc = pread_full(fd, buf, n, (off_t)pos);
		if (rc < 0) {
			set_err(r, "pread: %s", strerror(-rc));
			goto out;
		}
		if (r->sink && (rc = r->sink(r->ud, buf, n)) < 0) {
			set_err(r, "aborted by the sink: %s", strerror(-rc));
			goto out;
		}
		pos += n;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

/* --- owner thread: completion and bookkeeping ----------------------------- */

static void inflight_add(struct http_engine *e, struct http_req_priv *p)
{
	p->prev = NULL;
	p->next = e->inflight;
	if (e->inflight)
		e->inflight->prev = p;
	e->inflight = p;
}

static void inflight_del(struct http_engine *e, struct http_req_priv *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		e->inflight = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->next = p->prev = NULL;
}

static CURL *pool_get(struct http_engine *e)
{
	if (e->npool)
		return e->pool[--e->npool];
	return curl_easy_init();
}

/* The connection stays in the multi handle's cache whatever happens to the
 * easy handle; the pool only saves re-allocating handle state. */
static void pool_put(struct http_engine *e, CURL *c)
{
	curl_easy_reset(c); /* drops pointers into the finished request */
	if (e->npool < POOL_MAX)
		e->pool[e->npool++] = c;
	else
		curl_easy_cleanup(c);
}

static void release_easy(struct http_engine *e, struct http_req_priv *p)
{
	if (!p->easy)
		return;
	curl_multi_remove_handle(e->multi, p->easy);
	pool_put(e, p->easy);
	p->easy = NULL;
}

/* Hands the request back to its waiter.  p must be off the inflight list
 * and without an easy handle; neither may be touched afterwards. */
static void complete(struct http_req_priv *p, int result)
{
	struct http_req *r = p->req;
	char u[256];

	if (result < 0 && log_debug_enabled(LOG_CAT_FETCH)) {
		http_redact_url(r->url, u, sizeof(u));
		log_debug_cat(LOG_CAT_FETCH, "GET \"%s\" [%" PRIu64 "+%" PRIu64 "] failed: %s (%s)",
			      u, r->off, r->len, strerror(-result), r->err);
	}
	if (result == 0)
		r->err[0] = '\0';
	curl_slist_free_all(p->hdrs);
	p->hdrs = NULL;
	/* Before done is set: once it is, the waiter may free req. */
	if (r->on_done)
		r->on_done(r, result);
	pthread_mutex_lock(&p->lock);
	p->result = result;
	p->done = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static void finish(struct http_engine *e, struct http_req_priv *p, int result)
{
	release_easy(e, p);
	inflight_del(e, p);
	complete(p, result);
}

static int fail(struct http_req_priv *p, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct http_req_priv *p, int err, const char *fmt, ...)
{
	va_list ap;

	if (p->fail)
		return p->fail; /* keep the first reason */
	va_start(ap, fmt);
	vsnprintf(p->req->err, sizeof(p->req->err), fmt, ap);
	va_end(ap);
	p->fail = err;
	return err;
}

/* --- owner thread: callbacks ---------------------------------------------- */

static bool is_range_request(const struct http_req *r) { return r->off > 0 || r->len > 0; }

/* Copies the value of header "name" from one header line into out. */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name), vl;

	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return false;
	line += nl + 1;
	len -= nl + 1;
	while (len && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	vl = len;
	while (vl && strchr(" \t\r\n", line[vl - 1]))
		vl--;
	if (vl >= outlen)
		vl = outlen - 1; /* truncated values then fail to parse: fine */
	memcpy(out, line, vl);
	out[vl] = '\0';
	return true;
}

static size_t header_cb(char *buf, size_t size, size_t n, void *ud)
{
	struct http_req_priv *p = ud;
	size_t len = size * n;
	char v[32];

	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* A new response (after a redirect or a 1xx): forget the old one. */
		p->content_range[0] = '\0';
		p->content_encoding[0] = '\0';
		p->req->content_type[0] = '\0';
		p->retry_after_s = -1;
		return len;
	}
	if (header_value(buf, len, "Content-Range", p->content_range, sizeof(p->content_range)) ||
	    header_value(buf, len, "Content-Type", p->req->content_type,
			 sizeof(p->req->content_type)) ||
	    header_value(buf, len, "Content-Encoding", p->content_encoding,
			 sizeof(p->content_encoding)))
		return len;
	if (header_value(buf, len, "Retry-After", v, sizeof(v))) {
		/* Seconds only; an HTTP-date falls back to our own backoff. */
		char *end;
		long s = strtol(v, &end, 10);

		if (end != v && !*end && s >= 0)
			p->retry_after_s = s;
	}
	return len;
}

static int parse_u64(const char **s, uint64_t *ret)
{
	uint64_t v = 0;
	const char *p = *s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*s = p;
	*ret = v;
	return 0;
}

/* "bytes A-B/TOTAL" or "bytes A-B/ *"; *ret_total is UINT64_MAX when unknown. */
static int parse_content_range(const char *s, uint64_t *ret_a, uint64_t *ret_b, uint64_t *ret_total)
{
	uint64_t a, b, total = UINT64_MAX;

	if (strncasecmp(s, "bytes ", 6) != 0)
		return -EINVAL;
	s += 6;
	while (*s == ' ')
		s++;
	if (parse_u64(&s, &a) < 0 || *s++ != '-' || parse_u64(&s, &b) < 0 || *s++ != '/')
		return -EINVAL;
	if (*s == '*')
		s++;
	else if (parse_u64(&s, &total) < 0 || b >= total)
		return -EINVAL;
	if (*s || a > b)
		return -EINVAL;
	*ret_a = a;
	*ret_b = b;
	*ret_total = total;
	return 0;
}

static int check_206(struct http_req_priv *p, curl_off_t cl)
{
	struct http_req *r = p->req;
	uint64_t a, b, total;

	if (!p->sent_range || parse_content_range(p->content_range, &a, &b, &total) < 0)
		return fail(p, -EBADMSG, "206 with bad Content-Range \"%s\"", p->content_range);
	if (a != p->req_start)
		return fail(p, -EBADMSG, "Content-Range \"%s\" does not start at %" PRIu64,
			    p->content_range, p->req_start);
	if (r->len) {
		uint64_t want_end = r->off + r->len - 1;

		if (b < want_end && total == b + 1)
			return fail(p, -ERANGE,
				    "resource has %" PRIu64 " bytes, range ends at %" PRIu64, total,
				    want_end + 1);
		if (b != want_end)
			return fail(p, -EBADMSG, "Content-Range \"%s\" does not end at %" PRIu64,
				    p->content_range, want_end);
	} else if (total != UINT64_MAX && b + 1 != total) {
		return fail(p, -EBADMSG, "Content-Range \"%s\" stops short of the end",
			    p->content_range);
	}
	if (cl >= 0 && (uint64_t)cl != b - a + 1)
		return fail(p, -EBADMSG,
			    "Content-Length %" CURL_FORMAT_CURL_OFF_T
			    " disagrees with Content-Range \"%s\"",
			    cl, p->content_range);
	p->body_off = a;
	p->body_end = b + 1;
	r->resource_size = total != UINT64_MAX ? total : 0;
	p->req->range_ignored = false;
	return 0;
}

/* Validates the final response once per attempt: at its first body byte, or
 * at its end when the body is empty. */
static int check_response(struct http_req_priv *p)
{
	struct http_req *r = p->req;
	curl_off_t cl = -1;
	long code = 0;

	p->checked = true;
	curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_getinfo(p->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	r->status = (int)code;
	p->ok2xx = code >= 200 && code < 300;
	if (!p->ok2xx)
		return 0; /* judged by status when the transfer ends */
	/* We asked for identity; anything else would shift every offset. */
	if (p->content_encoding[0] && strcasecmp(p->content_encoding, "identity") != 0)
		return fail(p, -EBADMSG, "server sent Content-Encoding \"%s\"",
			    p->content_encoding);
	if (code == 206)
		return check_206(p, cl);
	if (code != 200)
		return fail(p, -EBADMSG, "unexpected HTTP %ld", code);

	/* A 200 body is the whole resource from byte 0, whatever we asked. */
	p->body_off = 0;
	p->body_end = cl >= 0 ? (uint64_t)cl : UINT64_MAX;
	r->resource_size = cl >= 0 ? (uint64_t)cl : 0;
	r->range_ignored = is_range_request(r);
	if (r->len && cl >= 0 && (uint64_t)cl < r->off + r->len)
		return fail(p, -ERANGE,
			    "resource has %" CURL_FORMAT_CURL_OFF_T
			    " bytes, range ends at %" PRIu64,
			    cl, r->off + r->len);
	if (r->range_ignored && r->full_fd < 0 && r->full_open)
		r->full_fd = r->full_open(r);
	if (r->range_ignored && r->full_fd >= 0) {
		/* Each 200 rewrites the file from scratch: an earlier attempt may
		 * have left a prefix. */
		if (ftruncate(r->full_fd, 0) < 0)
			return fail(p, -errno, "ftruncate(full_fd): %s", strerror(errno));
		p->full_active = true;
	}
	return 0;
}

static int pwrite_all(int fd, const uint8_t *data, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, data, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static size_t write_cb(char *data, size_t size, size_t n, void *ud)
{
	struct http_req_priv *p = ud;
	struct http_req *r = p->req;
	size_t len = size * n;
	uint64_t want, end, chunk_end;
	int rc;

	if (!p->checked && check_response(p) < 0)
		return CURL_WRITEFUNC_ERROR;
	r->wire_bytes += len;
	atomic_fetch_add_explicit(&p->e->n_wire_bytes, len, memory_order_relaxed);
	if (!p->ok2xx) {
		/* Read small error pages to keep the connection; not big ones. */
		p->discarded += len;
		return p->discarded > ERROR_BODY_MAX ? CURL_WRITEFUNC_ERROR : len;
	}
	if (p->full_active &&
	    (rc = pwrite_all(r->full_fd, (const uint8_t *)data, len, p->body_off)) < 0) {
		fail(p, rc, "write to full_fd: %s", strerror(-rc));
		return CURL_WRITEFUNC_ERROR;
	}

	/* Hand over the part of [body_off, chunk_end) the sink has not seen. */
	want = r->off + p->delivered;
	end = r->len ? r->off + r->len : UINT64_MAX;
	chunk_end = p->body_off + len;
	if (want < end && chunk_end > want) {
		uint64_t from, to;

		if (p->body_off > want) {
			fail(p, -EBADMSG, "body skipped from %" PRIu64 " to %" PRIu64, want,
			     p->body_off);
			return CURL_WRITEFUNC_ERROR;
		}
		from = want - p->body_off;
		to = MIN(chunk_end, end) - p->body_off;
		if (r->sink && (rc = r->sink(r->ud, (const uint8_t *)data + from, to - from)) < 0) {
			fail(p, rc, "aborted by the sink: %s", strerror(-rc));
			return CURL_WRITEFUNC_ERROR;
		}
		p->delivered += to - from;
	}
	p->body_off = chunk_end;

	/* A 200 to a range request: once the range is out, stop reading the
	 * rest of a possibly huge body unless full_fd wants all of it. */
	if (r->len && p->delivered == r->len && !p->full_active && chunk_end < p->body_end) {
		p->done_early = true;
		return CURL_WRITEFUNC_ERROR;
	}
	return len;
}

/* --- owner thread: attempts ----------------------------------------------- */

static void start_attempt(struct http_engine *e, struct http_req_priv *p)
{
	struct http_req *r = p->req;
	uint64_t start = r->off + p->delivered;
	char range[64];
	CURL *c;

	p->checked = p->ok2xx = p->full_active = p->done_early = false;
	p->sent_range = false;
	p->req_start = 0;
	p->body_off = 0;
	p->body_end = UINT64_MAX;
	p->discarded = 0;
	p->retry_after_s = -1;
	p->content_range[0] = p->content_encoding[0] = p->errbuf[0] = '\0';
	r->attempts++;

	c = pool_get(e);
	if (!c) {
		inflight_del(e, p);
		set_err(r, "curl_easy_init failed");
		complete(p, -ENOMEM);
		return;
	}
	p->easy = c;
	curl_easy_setopt(c, CURLOPT_URL, r->url);
	curl_easy_setopt(c, CURLOPT_PRIVATE, p);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
	/* CURLOPT_UNRESTRICTED_AUTH stays off: no credentials to other hosts. */
	curl_easy_setopt(c, CURLOPT_NETRC, (long)CURL_NETRC_OPTIONAL);
	/* Not CURLOPT_ACCEPT_ENCODING: decoded bytes would not match offsets. */
	if (r->accept && !p->hdrs) {
		char h[256];

		/* The engine list is immutable: copy it, then add Accept. */
		for (struct curl_slist *l = e->headers; l; l = l->next)
			p->hdrs = curl_slist_append(p->hdrs, l->data);
		snprintf(h, sizeof(h), "Accept: %s", r->accept);
		p->hdrs = curl_slist_append(p->hdrs, h);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, p->hdrs ? p->hdrs : e->headers);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "sitefs/" SITEFS_VERSION);
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)HTTP_BUFSIZE);
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	/* Waiting for a connection that might multiplex only makes sense where
	 * HTTP/2 can be negotiated (TLS).  Over plain HTTP, libcurl 7.88 would
	 * park a burst behind the first connection's first response, and then
	 * release the parked transfers one at a time. */
	curl_easy_setopt(c, CURLOPT_PIPEWAIT, strncasecmp(r->url, "https://", 8) == 0 ? 1L : 0L);
	if (e->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
	if (e->ca_dir)
		curl_easy_setopt(c, CURLOPT_CAPATH, e->ca_dir);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->opts.connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, e->opts.low_speed_time_s);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, p->errbuf);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, p);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, p);

	/* Explicit "A-B" ranges only: suffix ranges and HEAD are broken on
	 * some CDNs.  "A-" is left for resuming a to-the-end request. */
	if (!p->whole && (start > 0 || r->len)) {
		if (r->len)
			snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, start,
				 r->off + r->len - 1);
		else
			snprintf(range, sizeof(range), "%" PRIu64 "-", start);
		curl_easy_setopt(c, CURLOPT_RANGE, range);
		p->sent_range = true;
		p->req_start = start;
	}

	if (curl_multi_add_handle(e->multi, c) != CURLM_OK) {
		pool_put(e, c);
		p->easy = NULL;
		inflight_del(e, p);
		set_err(r, "curl_multi_add_handle failed");
		complete(p, -EIO);
		return;
	}
	atomic_fetch_add_explicit(&e->n_requests, 1, memory_order_relaxed);
	if (log_debug_enabled(LOG_CAT_FETCH)) {
		char u[256];

		http_redact_url(r->url, u, sizeof(u));
		log_debug_cat(LOG_CAT_FETCH, "GET \"%s\" Range: %s (attempt %d)", u,
			      p->sent_range ? range : "none", r->attempts);
	}
}

static bool curl_retryable(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_PARTIAL_FILE:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_HTTP3:
	case CURLE_QUIC_CONNECT_ERROR:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

static void finish_attempt(struct http_engine *e, struct http_req_priv *p, CURLcode rc)
{
	struct http_req *r = p->req;
	uint64_t delay_ms;
	long code = 0;
	int err;

	curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code)
		r->status = (int)code;
	if (!p->checked && rc == CURLE_OK && code >= 200 && code < 300)
		check_response(p); /* an empty body never reached write_cb */

	if (p->fail) {
		finish(e, p, p->fail);
		return;
	}
	/* Everything was delivered: a later hiccup on the wire is no failure. */
	if (p->done_early || (r->len && p->delivered == r->len && !p->full_active)) {
		finish(e, p, 0);
		return;
	}
	if (rc == CURLE_OK && code >= 200 && code < 300) {
		if (r->len && p->delivered < r->len) {
			set_err(r, "resource ends %" PRIu64 " bytes into the range", p->delivered);
			finish(e, p, -ERANGE);
		} else {
			finish(e, p, 0);
		}
		return;
	}

	if (code == 416) {
		set_err(r, "HTTP 416 (range not satisfiable)");
		finish(e, p, -ERANGE);
		return;
	}
	if (code == 404 || code == 410 || code == 401 || code == 403) {
		set_err(r, "HTTP %ld", code);
		finish(e, p, code == 404 || code == 410 ? -ENOENT : -EACCES);
		return;
	}
	if (code == 429 || code == 408 || code >= 500) {
		set_err(r, "HTTP %ld", code);
	} else if (code >= 300) {
		set_err(r, "HTTP %ld", code);
		finish(e, p, -EIO);
		return;
	} else {
		set_err(r, "%s", p->errbuf[0] ? p->errbuf : curl_easy_strerror(rc));
		if (!curl_retryable(rc)) {
			finish(e, p, -EIO);
			return;
		}
	}

	if (r->attempts > e->opts.max_retries) {
		size_t l = strlen(r->err);

		snprintf(r->err + l, sizeof(r->err) - l, " (after %d attempts)", r->attempts);
		finish(e, p, -EIO);
		return;
	}
	delay_ms = (uint64_t)e->opts.backoff_ms << MIN(r->attempts - 1, 20);
	if (code == 429 || code == 503) {
		if (p->retry_after_s >= 0)
			delay_ms =
			    MAX(delay_ms,
				(uint64_t)MIN(p->retry_after_s, RETRY_AFTER_MAX_MS / 1000) * 1000);
	}
	delay_ms = MIN(delay_ms, (uint64_t)MAX(BACKOFF_MAX_MS, e->opts.backoff_ms));
	if (p->full_active) {
		/* The server ignores Range: the next 200 rewrites full_fd from byte 0
		 * and we skip what the sink already has. */
		p->whole = true;
		if (ftruncate(r->full_fd, 0) < 0) {
			err = -errno;
			set_err(r, "ftruncate(full_fd): %s", strerror(-err));
			finish(e, p, err);
			return;
		}
	}
	if (log_debug_enabled(LOG_CAT_FETCH)) {
		char u[256];

		http_redact_url(r->url, u, sizeof(u));
		log_debug_cat(LOG_CAT_FETCH, "GET \"%s\": %s, retrying in %" PRIu64 " ms", u,
			      r->err, delay_ms);
	}
	release_easy(e, p);
	p->due_ns = now_ns() + delay_ms * 1000000;
}

/* --- owner thread: main loop ---------------------------------------------- */

/* Completes every request http_cancel() named (or all after a cancel-all). */
static void cancel_marked(struct http_engine *e)
{
	struct http_req_priv *p, *next;
	bool all;

	pthread_mutex_lock(&e->lock);
	all = e->cancel_all;
	pthread_mutex_unlock(&e->lock);
	for (p = e->inflight; p; p = next) {
		next = p->next;
		if (all || atomic_load(&p->cancel)) {
			set_err(p->req, "cancelled");
			finish(e, p, -ECANCELED);
		}
	}
}

static int poll_timeout(struct http_engine *e)
{
	uint64_t now = now_ns(), best = POLL_MAX_MS;
	struct http_req_priv *p;

	for (p = e->inflight; p; p = p->next) {
		if (p->easy)
			continue;
		if (p->due_ns <= now)
			return 0;
		best = MIN(best, (p->due_ns - now + 999999) / 1000000);
	}
	return (int)best;
}

static void start_due(struct http_engine *e)
{
	struct http_req_priv *p, *next;
	uint64_t now = now_ns();

	for (p = e->inflight; p; p = next) {
		next = p->next; /* start_attempt() may complete and unlink p */
		if (!p->easy && p->due_ns <= now)
			start_attempt(e, p);
	}
}

static void *engine_main(void *arg)
{
	struct http_engine *e = arg;
	struct http_req_priv *p, *next;
	bool stop, ended;

	for (;;) {
		CURLMsg *msg;
		int running, left;

		pthread_mutex_lock(&e->lock);
		p = e->queue_head;
		e->queue_head = e->queue_tail = NULL;
		stop = e->stopping;
		pthread_mutex_unlock(&e->lock);

		/* New requests join inflight with a due time of 0: started below. */
		for (; p; p = next) {
			next = p->next;
			p->due_ns = 0;
			inflight_add(e, p);
		}
		if (stop)
			break;
		if (atomic_exchange(&e->cancel_pending, false))
			cancel_marked(e);
		start_due(e);

		curl_multi_perform(e->multi, &running);
		ended = false;
		while ((msg = curl_multi_info_read(e->multi, &left))) {
			struct http_req_priv *done = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			ended = true;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&done);
			if (done)
				finish_attempt(e, done, msg->data.result);
		}
		/* A transfer that ended (in curl_multi_perform, or removed just
		 * now) hands its connection to one parked transfer by giving it a
		 * "run now" timer.  libcurl 7.88 can drop that timer: the end of
		 * curl_multi_perform discards timers less than 1 ms in the future
		 * (millisecond-truncated comparison in add_next_timeout), and the
		 * parked transfer, owning no socket yet, then waits for an
		 * unrelated event -- with nothing else in flight, the 1 s poll
		 * timeout.  curl_multi_perform runs every transfer whatever its
		 * timers say, so run it once more at once. */
		curl_multi_poll(e->multi, NULL, 0, ended ? 0 : poll_timeout(e), NULL);
	}

	for (p = e->inflight; p; p = next) {
		next = p->next;
		set_err(p->req, "engine stopped");
		finish(e, p, -ECANCELED);
	}
	while (e->npool)
		curl_easy_cleanup(e->pool[--e->npool]);
	return NULL;
}

/* --- public API ----------------------------------------------------------- */

struct http_engine *http_engine_new(const struct http_opts *opts)
{
	struct http_engine *e = xcalloc(1, sizeof(*e));
	const char *env;
	int rc;

	if (opts)
		e->opts = *opts;
	if (e->opts.max_host_connections <= 0)
		e->opts.max_host_connections = 64;
	if (e->opts.max_retries == 0)
		e->opts.max_retries = 4;
	else if (e->opts.max_retries < 0)
		e->opts.max_retries = 0; /* negative: never retry */
	if (e->opts.connect_timeout_ms <= 0)
		e->opts.connect_timeout_ms = 10000;
	if (e->opts.low_speed_time_s <= 0)
		e->opts.low_speed_time_s = 30;
	if (e->opts.backoff_ms <= 0)
		e->opts.backoff_ms = 100;

	/* Private indexes often sit behind a private CA; honour the variables
	 * the curl tool and OpenSSL users already set.  Read once, here. */
	env = getenv("CURL_CA_BUNDLE");
	if (!env || !*env)
		env = getenv("SSL_CERT_FILE");
	if (env && *env)
		e->ca_file = xstrdup(env);
	env = getenv("SSL_CERT_DIR");
	if (env && *env)
		e->ca_dir = xstrdup(env);

	pthread_mutex_init(&e->lock, NULL);
	e->headers = curl_slist_append(NULL, "Accept-Encoding: identity");
	e->multi = curl_multi_init();
	if (!e->headers || !e->multi) {
		log_err("http: cannot initialise libcurl");
		goto fail;
	}
	curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
			  (long)e->opts.max_host_connections);
	/* Keep idle connections of a burst around for the next one. */
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS,
			  (long)MAX(32, 4 * e->opts.max_host_connections));

	rc = pthread_create(&e->thread, NULL, engine_main, e);
	if (rc) {
		log_err("http: cannot start the fetch thread: %s", strerror(rc));
		goto fail;
	}
	return e;
fail:
	curl_multi_cleanup(e->multi);
	curl_slist_free_all(e->headers);
	pthread_mutex_destroy(&e->lock);
	free(e->ca_file);
	free(e->ca_dir);
	free(e);
	return NULL;
}

struct http_engine *http_engine_free(struct http_engine *e)
{
	if (!e)
		return NULL;
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	curl_multi_wakeup(e->multi);
	pthread_mutex_unlock(&e->lock);
	pthread_join(e->thread, NULL);
	curl_multi_cleanup(e->multi);
	curl_slist_free_all(e->headers);
	pthread_mutex_destroy(&e->lock);
	free(e->ca_file);
	free(e->ca_dir);
	free(e);
	return NULL;
}

int http_submit(struct http_engine *e, struct http_req *req)
{
	struct http_req_priv *p;

	if (!req || !req->url)
		return -EINVAL;
	if (req->len && req->off > UINT64_MAX - req->len)
		return -EINVAL;
	req->status = 0;
	req->range_ignored = false;
	req->wire_bytes = 0;
	req->attempts = 0;
	req->err[0] = '\0';
	req->resource_size = 0;
	req->content_type[0] = '\0';

	p = xcalloc(1, sizeof(*p));
	p->req = req;
	p->e = e;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);

	if (!http_is_remote(req->url)) {
		req->attempts = 1;
		p->result = local_read(req);
		if (e)
			atomic_fetch_add_explicit(&e->n_local_reads, 1, memory_order_relaxed);
		req->priv = p;
		if (req->on_done)
			req->on_done(req, p->result);
		p->done = true;
		return 0;
	}
	if (!e) {
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -EINVAL;
	}

	req->priv = p;
	pthread_mutex_lock(&e->lock);
	if (e->stopping || e->cancel_all) {
		pthread_mutex_unlock(&e->lock);
		req->priv = NULL;
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -ECANCELED;
	}
	if (e->queue_tail)
		e->queue_tail->next = p;
	else
		e->queue_head = p;
	e->queue_tail = p;
	curl_multi_wakeup(e->multi);
	pthread_mutex_unlock(&e->lock);
	return 0;
}

void http_cancel(struct http_engine *e, struct http_req *req)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	if (req) {
		/* priv lives until http_wait(), which the caller has not called */
		if (req->priv)
			atomic_store(&req->priv->cancel, true);
	} else {
		e->cancel_all = true;
	}
	atomic_store(&e->cancel_pending, true);
	if (!e->stopping)
		curl_multi_wakeup(e->multi);
	pthread_mutex_unlock(&e->lock);
}

int http_wait(struct http_req *req)
{
	struct http_req_priv *p;
	int rc;

	if (!req || !(p = req->priv))
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	while (!p->done)
		pthread_cond_wait(&p->cond, &p->lock);
	rc = p->result;
	pthread_mutex_unlock(&p->lock);

	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	req->priv = NULL;
	return rc;
}

int http_fetch(struct http_engine *e, struct http_req *req)
{
	int rc = http_submit(e, req);

	return rc < 0 ? rc : http_wait(req);
}

void http_get_stats(struct http_engine *e, struct http_stats *ret)
{
	ret->requests = atomic_load(&e->n_requests);
	ret->wire_bytes = atomic_load(&e->n_wire_bytes);
	ret->local_reads = atomic_load(&e->n_local_reads);
}
