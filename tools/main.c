/* main: subcommand dispatch. */
#include <curl/curl.h>
#include <errno.h>
#include <locale.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "tools/tools.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{"mount", cmd_mount, "mount a pylock.toml as a venv (bodies fetched on first open)"},
	{"umount", cmd_umount, "unmount a sitefs venv (also a stale one)"},
	{"materialize", cmd_materialize, "write a lock's (or a mount's) venv as an ordinary directory"},
	{"prefetch", cmd_prefetch, "fetch every body of a mount into the cache (works offline)"},
	{"lock", cmd_lock, "resolve requirements into a pylock.toml"},
	{"run", cmd_run, "resolve, mount in a temporary place, run a command, clean up"},
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: sitefs [--version] [--help] COMMAND [ARGS...]\n\n"
		   "Python environments that appear instantly: a pylock.toml becomes a\n"
		   "FUSE-mounted venv whose files are fetched when first opened.\n\n"
		   "Commands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nRun 'sitefs COMMAND --help' for a command's options.\n"
		   "Environment: SITEFS_CACHE_DIR (cache), SITEFS_DEBUG=fetch,cache,fuse,sql,tree\n");
}

char *tools_default_cache_dir(void)
{
	const char *s = getenv("SITEFS_CACHE_DIR");
	if (s && *s)
		return xstrdup(s);
	s = getenv("XDG_CACHE_HOME");
	if (s && *s == '/')
		return xasprintf("%s/sitefs", s);
	s = getenv("HOME");
	if (!s || !*s) {
		struct passwd *pw = getpwuid(getuid());
		s = pw ? pw->pw_dir : "/tmp";
	}
	return xasprintf("%s/.cache/sitefs", s);
}

int main(int argc, char **argv)
{
	setlocale(LC_ALL, "");
	log_init_from_env();
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("sitefs %s\n", SITEFS_VERSION);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(argv[1], commands[i].name))
			continue;
		/* before any thread starts (curl docs) */
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			fprintf(stderr, "sitefs: cannot initialize libcurl\n");
			return 1;
		}
		int r = commands[i].run(argc - 1, argv + 1);
		curl_global_cleanup();
		return r;
	}
	fprintf(stderr, "sitefs: unknown command \"%s\"\n\n", argv[1]);
	usage(stderr);
	return 2;
}
