/* cmd_run: sitefs run [--lock FILE | -r FILE | --with REQ ...] [index options]
 *                     [--python PY] [--cache-dir DIR] -- COMMAND [ARGS...]
 *
 * Resolve (or reuse the lock cached for identical inputs), mount in a
 * private temporary directory, run COMMAND in the venv, pass its exit
 * status through, unmount and clean up.
 *
 * The mount runs as a child process (`/proc/self/exe mount -f`), not in
 * this process: FUSE's session loop, its threads and its signal handling
 * stay out of the supervisor, and whatever happens to the daemon, the
 * supervisor can still unmount (lazily if need be) and remove the
 * directory.  The daemon is in its own process group, so a terminal's ^C
 * reaches the command but not the daemon, and it gets SIGTERM through
 * PR_SET_PDEATHSIG if the supervisor dies without cleaning up.
 *
 * Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked and read from a
 * signalfd.  One sent with kill() is forwarded to the command; one from the
 * terminal already reached the command (same process group).  Either way
 * the supervisor waits for the command, then cleans up. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "tools/tools.h"

#define MOUNT_TIMEOUT_MS 120000
#define UMOUNT_GRACE_MS 5000

static const int sup_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD};

static void help(FILE *f)
{
	fprintf(f,
		"Usage: sitefs run [OPTIONS] -- COMMAND [ARGS...]\n\n"
		"Resolve the requirements (reusing a cached lock for identical inputs), mount\n"
		"the environment in a private temporary directory, run COMMAND with\n"
		"VIRTUAL_ENV set and the venv's bin/ first on PATH, then unmount and clean up.\n"
		"The exit status is COMMAND's (128+N if a signal N ended it).\n\n"
		"Options:\n"
		"  --lock FILE             use this pylock.toml (no resolution)\n"
		"  --profile FILE          record the files COMMAND opens in FILE and fetch\n"
		"                          them all at once next time (see sitefs mount)\n"
		"  -w, --with REQ          a requirement (repeatable)\n%s"
		"  -v, --verbose           say what happens\n"
		"  -h, --help              this text\n",
		lock_args_help);
}

static bool is_mounted(const char *mnt, const char *parent)
{
	struct stat a, b;

	if (stat(parent, &b) < 0)
		return false;
	if (stat(mnt, &a) < 0)
		return errno == ENOTCONN; /* a dead FUSE mount is still a mount */
	return a.st_dev != b.st_dev;
}

static void sleep_ms(int ms) { poll(NULL, 0, ms); }

/* Reaps pid if it has exited; returns true then (status in *ret_status). */
static bool reaped(pid_t pid, int *ret_status)
{
	int st;
	pid_t r = waitpid(pid, &st, WNOHANG);

	if (r == pid) {
		if (ret_status)
			*ret_status = st;
		return true;
	}
	return r < 0 && errno == ECHILD;
}

static void lazy_umount(const char *mnt)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execlp("fusermount3", "fusermount3", "-u", "-z", mnt, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/* The daemon unmounts on SIGTERM; if it cannot (a busy mount, or it is
 * gone), a lazy unmount detaches what is left. */
static void stop_mount(pid_t mpid, bool mpid_alive, const char *mnt, const char *dir)
{
	if (mpid_alive) {
		kill(mpid, SIGTERM);
		for (int t = 0; t < UMOUNT_GRACE_MS / 10 && !reaped(mpid, NULL); t++)
			sleep_ms(10);
		if (!reaped(mpid, NULL)) {
			lazy_umount(mnt);
			kill(mpid, SIGKILL);
			waitpid(mpid, NULL, 0);
		}
	}
	if (is_mounted(mnt, dir))
		lazy_umount(mnt);
	rmdir(mnt);
	rmdir(dir);
}

static void child_signals_default(const sigset_t *mask)
{
	for (size_t i = 0; i < ARRAY_SIZE(sup_signals); i++)
		signal(sup_signals[i], SIG_DFL);
	sigprocmask(SIG_UNBLOCK, mask, NULL);
}

static int lock_for_run(struct lock_args *a, const struct interp *ip, const char *cache_dir,
			char **ret_path)
{
	char err[8192] = "";
	_cleanup_free_ char *key = NULL, *toml = NULL;
	int r = lock_resolve(a, ip, cache_dir, NULL, &key, err, sizeof(err));

	if (r < 0) {
		fprintf(stderr, "sitefs run: %s\n", err);
		return r;
	}
	_cleanup_free_ char *dir = xasprintf("%s/locks", cache_dir);
	char *path = xasprintf("%s/%s.toml", dir, key);

	if (access(path, R_OK) == 0) {
		if (a->verbose)
			fprintf(stderr, "sitefs run: using the cached lock %s\n", path);
		*ret_path = path;
		return 0;
	}
	r = lock_resolve(a, ip, cache_dir, &toml, NULL, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs run: %s\n", err);
		free(path);
		return r;
	}
	mkdir_p(dir, 0755);
	r = file_write_atomic(path, toml, strlen(toml), 0644);
	if (r < 0) {
		fprintf(stderr, "sitefs run: cannot write \"%s\": %s\n", path, strerror(-r));
		free(path);
		return r;
	}
	*ret_path = path;
	return 0;
}

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"lock", required_argument, NULL, 'L'},
	    {"profile", required_argument, NULL, 'p'},
	    {"with", required_argument, NULL, 'W'},
	    {"requirement", required_argument, NULL, 'r'},
	    {"constraint", required_argument, NULL, 'c'},
	    {"index-url", required_argument, NULL, 'i'},
	    {"extra-index-url", required_argument, NULL, 'E'},
	    {"find-links", required_argument, NULL, 'f'},
	    {"no-index", no_argument, NULL, 'N'},
	    {"pre", no_argument, NULL, 'R'},
	    {"python", required_argument, NULL, 'P'},
	    {"cache-dir", required_argument, NULL, 'C'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	struct lock_args a = {.python = "python3"};
	const char *lock_arg = NULL, *profile_arg = NULL;
	char err[4096] = "";
	int c, ret = 1;
	struct interp *ip = NULL;
	char *cache_dir = NULL, *lock_path = NULL;
	char dir[] = "/tmp/sitefs-run-XXXXXX";
	_cleanup_free_ char *mnt = NULL;
	bool have_dir = false;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+w:r:c:i:f:vh", opts, NULL)) >= 0) {
		if (c == 'w')
			c = 'W';
		if (lock_args_option(&a, c, optarg))
			continue;
		switch (c) {
		case 'L':
			lock_arg = optarg;
			break;
		case 'p':
			profile_arg = optarg;
			break;
		case 'h':
			help(stdout);
			lock_args_free(&a);
			return 0;
		default:
			help(stderr);
			lock_args_free(&a);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "sitefs run: no command (put it after --)\n\n");
		help(stderr);
		lock_args_free(&a);
		return 2;
	}
	if (!lock_arg && !a.nreqfiles && !a.nreqs) {
		fprintf(stderr, "sitefs run: give --lock FILE, -r FILE or --with REQ\n");
		lock_args_free(&a);
		return 2;
	}
	char **cmd = argv + optind;

	cache_dir = a.cache_dir ? xstrdup(a.cache_dir) : tools_default_cache_dir();
	mkdir_p(cache_dir, 0755);
	char *abs_cache = realpath(cache_dir, NULL);

	if (abs_cache) {
		free(cache_dir);
		cache_dir = abs_cache;
	}
	int r = interp_query(a.python, cache_dir, &ip, err, sizeof(err));

	if (r < 0) {
		fprintf(stderr, "sitefs run: interpreter \"%s\": %s\n", a.python,
			err[0] ? err : strerror(-r));
		goto out;
	}
	if (lock_arg)
		lock_path = realpath(lock_arg, NULL);
	else if (lock_for_run(&a, ip, cache_dir, &lock_path) < 0)
		goto out;
	if (!lock_path) {
		fprintf(stderr, "sitefs run: lock \"%s\": %s\n", lock_arg, strerror(errno));
		goto out;
	}

	/* From here on, signals are events, not deaths: cleanup must run. */
	sigset_t mask;

	sigemptyset(&mask);
	for (size_t i = 0; i < ARRAY_SIZE(sup_signals); i++)
		sigaddset(&mask, sup_signals[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

	if (sfd < 0) {
		perror("sitefs run: signalfd");
		goto out_unblock;
	}
	if (!mkdtemp(dir)) {
		perror("sitefs run: mkdtemp");
		goto out_sfd;
	}
	have_dir = true;
	mnt = xasprintf("%s/venv", dir);
	if (mkdir(mnt, 0755) < 0) {
		perror("sitefs run: mkdir");
		goto out_sfd;
	}

	pid_t parent = getpid();
	pid_t mpid = fork();

	if (mpid < 0) {
		perror("sitefs run: fork");
		goto out_sfd;
	}
	if (mpid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		child_signals_default(&mask);
		int fd = open("/dev/null", O_RDONLY);

		if (fd >= 0)
			dup2(fd, STDIN_FILENO);
		const char *margv[] = {"sitefs",      "mount",	 "-f",	    "--python", ip->python,
				       "--cache-dir", cache_dir, lock_path, mnt,	NULL, NULL, NULL};
		if (profile_arg) { /* relative to our directory: the mount keeps it */
			memmove(margv + 9, margv + 7, 3 * sizeof(*margv));
			margv[7] = "--profile";
			margv[8] = profile_arg;
		}

		execv("/proc/self/exe", (char **)margv);
		perror("sitefs run: exec /proc/self/exe");
		_exit(127);
	}
	bool mount_alive = true;
	int mstatus = 0;
	uint64_t t0 = now_ns();
	int pending_sig = 0;

	while (!is_mounted(mnt, dir)) {
		struct signalfd_siginfo si;

		while (read(sfd, &si, sizeof(si)) == sizeof(si))
			if (si.ssi_signo != SIGCHLD)
				pending_sig = (int)si.ssi_signo;
		if (reaped(mpid, &mstatus)) {
			mount_alive = false;
			fprintf(stderr, "sitefs run: the mount failed (%s %d)\n",
				WIFEXITED(mstatus) ? "exit status" : "signal",
				WIFEXITED(mstatus) ? WEXITSTATUS(mstatus) : WTERMSIG(mstatus));
			goto out_mount;
		}
		if (pending_sig) {
			ret = 128 + pending_sig;
			goto out_mount;
		}
		if ((now_ns() - t0) / 1000000 > MOUNT_TIMEOUT_MS) {
			fprintf(stderr, "sitefs run: \"%s\" not mounted after %d s\n", mnt,
				MOUNT_TIMEOUT_MS / 1000);
			goto out_mount;
		}
		sleep_ms(2);
	}
	if (a.verbose)
		fprintf(stderr, "sitefs run: mounted at %s in %.1f ms\n", mnt,
			(now_ns() - t0) / 1e6);

	pid_t cpid = fork();

	if (cpid < 0) {
		perror("sitefs run: fork");
		goto out_mount;
	}
	if (cpid == 0) {
		child_signals_default(&mask);
		const char *path = getenv("PATH");
		_cleanup_free_ char *np =
		    xasprintf("%s/bin%s%s", mnt, path ? ":" : "", path ? path : "");

		setenv("VIRTUAL_ENV", mnt, 1);
		setenv("PATH", np, 1);
		unsetenv("PYTHONHOME");
		execvp(cmd[0], cmd);
		fprintf(stderr, "sitefs run: %s: %s\n", cmd[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	int cstatus = 0;

	for (;;) {
		struct pollfd pfd = {.fd = sfd, .events = POLLIN};
		struct signalfd_siginfo si;

		if (reaped(cpid, &cstatus))
			break;
		if (mount_alive && reaped(mpid, &mstatus)) {
			mount_alive = false;
			fprintf(stderr, "sitefs run: the mount daemon exited while the command "
					"ran\n");
		}
		poll(&pfd, 1, 1000);
		while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGCHLD)
				continue;
			/* A terminal's signal reached the command already. */
			if (si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE)
				kill(cpid, (int)si.ssi_signo);
		}
	}
	ret = WIFEXITED(cstatus) ? WEXITSTATUS(cstatus) : 128 + WTERMSIG(cstatus);
out_mount:
	stop_mount(mpid, mount_alive, mnt, dir);
	have_dir = false;
out_sfd:
	if (have_dir) {
		rmdir(mnt);
		rmdir(dir);
	}
	close(sfd);
out_unblock:
	sigprocmask(SIG_UNBLOCK, &mask, NULL);
out:
	free(lock_path);
	free(cache_dir);
	interp_free(ip);
	lock_args_free(&a);
	return ret;
}
