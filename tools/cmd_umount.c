/* cmd_umount: sitefs umount MOUNTPOINT — also when the daemon died and left
 * a mount whose every access fails with ENOTCONN. */
#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "tools/tools.h"

extern char **environ;

/* Absolute path without resolving the last component (which may be a dead mount). */
static char *abs_path(const char *p)
{
	if (p[0] == '/')
		return xstrdup(p);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return xstrdup(p);
	return xasprintf("%s/%s", cwd, p);
}

/* Is the topmost mount at path a sitefs one? */
static bool is_sitefs_mount(const char *path)
{
	char *fstype = NULL;
	bool ours = mountinfo_find(path, &fstype, NULL) == 0 && !strcmp(fstype, "fuse.sitefs");
	free(fstype);
	return ours;
}

static int run_fusermount(const char *flags, const char *path)
{
	char *argv[] = {(char *)"fusermount3", (char *)flags, (char *)"--", (char *)path, NULL};
	pid_t pid;
	if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0)
		return -1;
	int st;
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int cmd_umount(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("Usage: sitefs umount MOUNTPOINT\n\n"
		       "Unmount a sitefs venv.  A mount whose daemon died is detached too.\n");
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "Usage: sitefs umount MOUNTPOINT\n");
		return 2;
	}
	char *path = abs_path(argv[1]);
	char real[PATH_MAX];
	/* realpath fails with ENOTCONN on the dead mount itself: keep ours then */
	if (realpath(path, real)) {
		free(path);
		path = xstrdup(real);
	}
	int ret = 0;
	if (!is_sitefs_mount(path)) {
		fprintf(stderr, "sitefs umount: \"%s\" is not a sitefs mount\n", path);
		ret = 1;
	}
	/* several may be stacked (mounted over a dead one by an older sitefs) */
	for (int i = 0; ret == 0 && i < 16 && is_sitefs_mount(path); i++) {
		if (getuid() == 0) {
			if (umount2(path, 0) < 0 && umount2(path, MNT_DETACH) < 0) {
				fprintf(stderr, "sitefs umount: \"%s\": %s\n", path, strerror(errno));
				ret = 1;
			}
		} else if (run_fusermount("-u", path) < 0 && run_fusermount("-uz", path) < 0) {
			fprintf(stderr, "sitefs umount: could not unmount \"%s\"\n", path);
			ret = 1;
		}
	}
	free(path);
	return ret;
}
