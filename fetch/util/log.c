#include "fetch/util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIN_LEN(a, b) ((a) < (b) ? (a) : (b))

/* Plain ints read racily by design: they are set once at startup. */
static int log_level = LOG_NOTICE;
static unsigned log_cats;
static int log_syslog;
static int log_extra_fd = -1;
static int log_tracing;
static struct timespec log_t0;

static const struct {
	const char *name;
	unsigned bit;
} cat_names[] = {
	{"fetch", LOG_CAT_FETCH}, {"cache", LOG_CAT_CACHE}, {"fuse", LOG_CAT_FUSE},
	{"sql", LOG_CAT_SQL},     {"resolver", LOG_CAT_RESOLVER}, {"tree", LOG_CAT_TREE},
	{"all", LOG_CAT_ALL},
};

void log_set_level(int level)
{
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

void log_set_categories(unsigned mask)
{
	log_cats = mask;
}

int log_parse_categories(const char *spec)
{
	unsigned mask = 0;
	const char *p = spec;
	while (*p) {
		size_t n = strcspn(p, ",");
		size_t i;
		for (i = 0; i < sizeof(cat_names) / sizeof(cat_names[0]); i++)
			if (strlen(cat_names[i].name) == n && !strncmp(cat_names[i].name, p, n))
				break;
		if (i == sizeof(cat_names) / sizeof(cat_names[0]))
			return -EINVAL;
		mask |= cat_names[i].bit;
		p += n;
		if (*p == ',')
			p++;
	}
	log_cats = mask;
	if (mask)
		log_level = LOG_DEBUG;
	return 0;
}

void log_init_from_env(void)
{
	const char *s = getenv("SITEFS_DEBUG");
	if (s && *s && log_parse_categories(s) < 0)
		fprintf(stderr, "sitefs: SITEFS_DEBUG=\"%s\": unknown category, ignoring\n", s);
	s = getenv("SITEFS_LOG_LEVEL");
	if (s && *s)
		log_level = atoi(s);
	s = getenv("SITEFS_TRACE");
	log_tracing = s && *s && strcmp(s, "0") != 0;
	clock_gettime(CLOCK_MONOTONIC, &log_t0);
}

int log_trace_enabled(void)
{
	return log_tracing;
}

void log_trace(const char *fmt, ...)
{
	if (!log_tracing)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double ms = (double)(ts.tv_sec - log_t0.tv_sec) * 1e3 +
		    (double)(ts.tv_nsec - log_t0.tv_nsec) / 1e6;
	/* and the calling thread's CPU time: local work measured apart from
	 * what other processes take from it */
	struct timespec cpu;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
	char line[512];
	int n = snprintf(line, sizeof(line), "sitefs: trace: %+9.3f (cpu %7.3f) ", ms,
			 (double)cpu.tv_sec * 1e3 + (double)cpu.tv_nsec / 1e6);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : MIN_LEN((size_t)m, sizeof(line) - (size_t)n - 2));
	line[len++] = '\n';
	if (write(2, line, len) < 0) {
		/* nothing sensible to do */
	}
}

void log_use_syslog(const char *ident)
{
	openlog(ident, LOG_PID, LOG_DAEMON);
	log_syslog = 1;
}

void log_set_fd(int fd)
{
	log_extra_fd = fd;
}

int log_debug_enabled(unsigned cat)
{
	return log_level >= LOG_DEBUG && (log_cats & cat);
}

static void emit(int level, const char *fmt, va_list ap)
{
	static const char *names[] = {"emerg", "alert", "crit", "error",
				      "warning", "notice", "info", "debug"};
	char line[4096];
	int saved = errno;
	int n = snprintf(line, sizeof(line), "sitefs: %s: ", names[level & 7]);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : MIN_LEN((size_t)m, sizeof(line) - (size_t)n - 2));
	line[len++] = '\n';
	if (log_syslog)
		syslog(level, "%.*s", (int)(len - 1 - 8), line + 8);
	else if (write(2, line, len) < 0) {
		/* nothing sensible to do */
	}
	if (log_extra_fd >= 0 && write(log_extra_fd, line, len) < 0) {
	}
	errno = saved;
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
	if (level > log_level)
		return;
	emit(level, fmt, ap);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	if (level > log_level)
		return;
	va_start(ap, fmt);
	emit(level, fmt, ap);
	va_end(ap);
}

void log_debug_cat(unsigned cat, const char *fmt, ...)
{
	va_list ap;
	if (!log_debug_enabled(cat))
		return;
	va_start(ap, fmt);
	emit(LOG_DEBUG, fmt, ap);
	va_end(ap);
}
