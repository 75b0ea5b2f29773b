/* oracle.h: runs unit/oracle_pep.py (the `packaging` library's answers) and
 * feeds each of its lines to a test's checker.  Include after check.h.
 * Lines are tab-separated fields escaped by the script's esc(); the last
 * line is "END <n>" so a truncated run is noticed. */
#ifndef SITEFS_ORACLE_H
#define SITEFS_ORACLE_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/util.h"

static unsigned oracle_cases, oracle_shown;

static void oracle_fail(const char *line, const char *what, const char *got)
{
	check_fail++;
	if (oracle_shown++ < 40)
		fprintf(stderr, "oracle: %s: %s (got %s)\n", line, what, got);
}

/* Undoes oracle_pep.py's esc() in place. */
static void oracle_unescape(char *s)
{
	char *o = s;

	while (*s) {
		if (*s != '\\' || !s[1]) {
			*o++ = *s++;
			continue;
		}
		s++;
		switch (*s) {
		case 't':
			*o++ = '\t';
			s++;
			break;
		case 'n':
			*o++ = '\n';
			s++;
			break;
		case 'r':
			*o++ = '\r';
			s++;
			break;
		case 'x': {
			char hex[3] = {s[1], s[1] ? s[2] : 0, 0};

			*o++ = (char)strtol(hex, NULL, 16);
			s += 3;
			break;
		}
		default:
			*o++ = *s++;
		}
	}
	*o = 0;
}

/* Splits line at tabs into at most max unescaped fields; returns how many. */
static size_t oracle_split(char *line, char **f, size_t max)
{
	size_t n = 0;

	while (n < max) {
		char *t = strchr(line, '\t');

		f[n++] = line;
		if (!t)
			break;
		*t = 0;
		line = t + 1;
	}
	for (size_t i = 0; i < n; i++)
		oracle_unescape(f[i]);
	return n;
}

/* Runs the oracle in mode (pep440, pep508) and calls on_line for each line
 * but the END one.  $SITEFS_ORACLE_PYTHON picks the interpreter,
 * $SITEFS_ORACLE_SEED explores beyond the fixed seed.  Returns 0 when the
 * oracle ran to its end, 77 when it is unavailable, 1 on error. */
static int oracle_run(const char *mode, void (*on_line)(char *line))
{
	const char *py = getenv("SITEFS_ORACLE_PYTHON");
	const char *seed = getenv("SITEFS_ORACLE_SEED");
	char *cmd, *line = NULL;
	size_t cap = 0;
	unsigned long lines = 0;
	ssize_t len;
	FILE *f;
	int st;
	bool ended = false;

	if (!py)
		py = "/usr/bin/python3";
	if (access("unit/oracle_pep.py", R_OK) < 0) {
		fprintf(stderr, "oracle: unit/oracle_pep.py not found (run from tests/)\n");
		return 77;
	}
	if (seed && strspn(seed, "0123456789") != strlen(seed))
		seed = NULL;
	cmd = xasprintf("'%s' unit/oracle_pep.py %s %s", py, mode, seed ? seed : "");
	f = popen(cmd, "r");
	free(cmd);
	if (!f)
		return 77;
	while ((len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = 0;
		if (!strncmp(line, "END\t", 4)) {
			ended = strtoul(line + 4, NULL, 10) == lines;
			continue;
		}
		lines++;
		on_line(line);
	}
	free(line);
	st = pclose(f);
	if (WIFEXITED(st) && (WEXITSTATUS(st) == 77 || WEXITSTATUS(st) == 127) && !lines)
		return 77;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !ended) {
		fprintf(stderr, "oracle: did not finish cleanly (status %d)\n", st);
		return 1;
	}
	return 0;
}

#endif
