/* log: leveled, categorized logging shared by every layer.
 *
 * Lower layers log only at LOG_DEBUG and return -errno; the edges (FUSE
 * handlers, CLI commands) log once at a higher level.  Thread-safe: each
 * call writes one line with a single write(2).  Daemonized processes route
 * to syslog (log_use_syslog). */
#ifndef SITEFS_LOG_H
#define SITEFS_LOG_H

#include <stdarg.h>
#include <syslog.h>

enum log_cat {
	LOG_CAT_FETCH = 1 << 0,
	LOG_CAT_CACHE = 1 << 1,
	LOG_CAT_FUSE = 1 << 2,
	LOG_CAT_SQL = 1 << 3,
	LOG_CAT_RESOLVER = 1 << 4,
	LOG_CAT_TREE = 1 << 5,
	LOG_CAT_ALL = 0xff,
};

/* Highest level printed (default LOG_NOTICE; LOG_DEBUG enables debug lines
 * of the categories enabled by log_set_categories). */
void log_set_level(int level);
int log_get_level(void);
/* Parse "fetch,cache" or "all"; returns 0 or -EINVAL. */
int log_parse_categories(const char *spec);
void log_set_categories(unsigned mask);
/* Reads SITEFS_DEBUG (category list) and SITEFS_LOG_LEVEL from the environment. */
void log_init_from_env(void);
/* After daemonizing: send lines to syslog instead of stderr. */
void log_use_syslog(const char *ident);
/* Optionally also append every line to this fd (e.g. -o log=FILE); -1 disables. */
void log_set_fd(int fd);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap);
/* Debug line in category cat; cheap when disabled. */
void log_debug_cat(unsigned cat, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_debug_enabled(unsigned cat);
/* SITEFS_TRACE=1: one stderr line per phase, "sitefs: trace: +MS (cpu MS)
 * what": milliseconds since log_init_from_env() (process start, near
 * enough) and CPU milliseconds of the calling thread, so the steps of a
 * mount can be timed without a profiler.  Cheap when off. */
void log_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int log_trace_enabled(void);

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(cat, ...)                                                                        \
	do {                                                                                       \
		if (log_debug_enabled(cat))                                                        \
			log_debug_cat(cat, __VA_ARGS__);                                           \
	} while (0)

#endif
