/* cmd_mount: sitefs mount [--python PY] [--cache-dir DIR] [--profile FILE] [-f] [-o OPT,...]
 *                         LOCK MOUNTPOINT
 *
 * Everything that can fail for a reason the user can fix (lock file,
 * interpreter, index, zip directories) happens before the mount, with the
 * terminal still attached.  Without -f everything after reading the lock
 * runs in a child (its errors still go to the terminal) that tells the
 * parent through a pipe once the tree is mounted; the parent exits 0 only
 * then, or with the child's status, so a script can use the venv right
 * after `sitefs mount`.  The interpreter query runs on a thread while the
 * metadata requests of the wheels the lock alone determines are in flight
 * (fs_early_start). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "tools/tools.h"

static const char *arg_python = "python3";
static const char *arg_cache_dir;
static const char *arg_fuse_opts;
static const char *arg_log_file;
static const char *arg_profile;
static bool arg_foreground, arg_debug, arg_verbose;

static void help(FILE *f)
{
	fprintf(f,
		"Usage: sitefs mount [OPTIONS] LOCK MOUNTPOINT\n\n"
		"Mount the PEP 751 lock file LOCK as a complete venv at MOUNTPOINT.  Returns\n"
		"once the tree is visible; file bodies are fetched, verified and cached when\n"
		"first opened.  Unmount with 'sitefs umount MOUNTPOINT'.\n\n"
		"Options:\n"
		"  --python PY      interpreter of the venv (default: python3 on PATH)\n"
		"  --cache-dir DIR  cache (default: $SITEFS_CACHE_DIR, $XDG_CACHE_HOME/sitefs\n"
		"                   or ~/.cache/sitefs)\n"
		"  --profile FILE   record which files were opened, and their compiled\n"
		"                   bytecode, in FILE (at unmount and every 30 s; it only\n"
		"                   grows) and, when FILE exists, fetch them all at once in\n"
		"                   the background right after mounting and seed the\n"
		"                   bytecode (only from a FILE no other user can write)\n"
		"  -f, --foreground stay in the foreground and log to stderr\n"
		"  -o OPT[,OPT...]  extra FUSE mount options\n"
		"  --log-file FILE  also append the daemon's log lines to FILE (it logs to\n"
		"                   syslog once in the background)\n"
		"  -d, --debug      FUSE debug output (implies -f)\n"
		"  -v, --verbose    print what was done and how long it took\n"
		"  -h, --help       this text\n");
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{"python", required_argument, NULL, 'P'},
		{"cache-dir", required_argument, NULL, 'C'},
		{"log-file", required_argument, NULL, 'L'},
		{"profile", required_argument, NULL, 'p'},
		{"foreground", no_argument, NULL, 'f'},
		{"debug", no_argument, NULL, 'd'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+fdvho:", opts, NULL)) >= 0) {
		switch (c) {
		case 'P':
			arg_python = optarg;
			break;
		case 'C':
			arg_cache_dir = optarg;
			break;
		case 'L':
			arg_log_file = optarg;
			break;
		case 'p':
			arg_profile = optarg;
			break;
		case 'f':
			arg_foreground = true;
			break;
		case 'd':
			arg_debug = arg_foreground = true;
			break;
		case 'v':
			arg_verbose = true;
			break;
		case 'o':
			arg_fuse_opts = optarg;
			break;
		case 'h':
			help(stdout);
			return 0;
		default:
			help(stderr);
			return -EINVAL;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "sitefs mount: expected LOCK and MOUNTPOINT\n\n");
		help(stderr);
		return -EINVAL;
	}
	return 1;
}

struct interp_job {
	const char *python, *cache_dir;
	struct interp *ip;
	int r;
	char err[1024];
};

static void *interp_main(void *arg)
{
	struct interp_job *j = arg;
	j->r = interp_query(j->python, j->cache_dir, &j->ip, j->err, sizeof(j->err));
	return NULL;
}

/* Parent side of the daemon handshake: exit 0 once the child says mounted. */
static int wait_for_child(pid_t pid, int rfd)
{
	char c;
	ssize_t n;
	do
		n = read(rfd, &c, 1);
	while (n < 0 && errno == EINTR);
	close(rfd);
	if (n == 1 && c == '0')
		return 0;
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return 1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
	fprintf(stderr, "sitefs mount: the daemon died (signal %d)\n",
		WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return 1;
}

int cmd_mount(int argc, char **argv)
{
	int r = parse_args(argc, argv);
	if (r <= 0)
		return r == 0 ? 0 : 2;
	const char *lock_path = argv[optind], *mnt_arg = argv[optind + 1];
	char err[1024] = "";
	int ret = 1;
	char *cache_dir = arg_cache_dir ? xstrdup(arg_cache_dir) : tools_default_cache_dir();
	struct interp *ip = NULL;
	struct lock_file *lf = NULL;
	struct fs_wheel *wheels = NULL;
	size_t nwheels = 0;
	struct fs_ctx *ctx = NULL;
	struct fs_early *early = NULL;
	char mnt[PATH_MAX];
	char *state_path = NULL, *fuse_opts = NULL, *profile = NULL;
	uint64_t t0 = now_ns();
	log_trace("mount: start");

	struct stat st;
	if (!realpath(mnt_arg, mnt) || stat(mnt, &st) < 0) {
		fprintf(stderr, "sitefs mount: mount point \"%s\": %s\n", mnt_arg,
			errno == ENOTCONN ? "a dead sitefs mount is there; run 'sitefs umount' first"
					  : strerror(errno));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "sitefs mount: mount point \"%s\" is not a directory\n", mnt_arg);
		goto out;
	}
	char *fstype = NULL;
	if (mountinfo_find(mnt, &fstype, NULL) == 0) {
		/* a dead daemon's mount still answers stat from the kernel's cache */
		fprintf(stderr, "sitefs mount: \"%s\" is already a mount point (%s)%s\n", mnt, fstype,
			strcmp(fstype, "fuse.sitefs") ? "" : ": run 'sitefs umount' first");
		free(fstype);
		goto out;
	}
	if (arg_log_file) {
		int lfd = open(arg_log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (lfd < 0) {
			fprintf(stderr, "sitefs mount: log file \"%s\": %s\n", arg_log_file,
				strerror(errno));
			goto out;
		}
		log_set_fd(lfd); /* kept open for the life of the process */
	}
	r = mkdir_p(cache_dir, 0755);
	if (r < 0) {
		fprintf(stderr, "sitefs mount: cache directory \"%s\": %s\n", cache_dir,
			strerror(-r));
		goto out;
	}
	char *abs_cache = realpath(cache_dir, NULL);
	if (abs_cache) {
		free(cache_dir);
		cache_dir = abs_cache;
	}
	if (arg_profile) {
		/* absolute: the daemon changes to / */
		char cwd[PATH_MAX];
		if (arg_profile[0] == '/')
			profile = xstrdup(arg_profile);
		else if (getcwd(cwd, sizeof(cwd)))
			profile = xasprintf("%s/%s", cwd, arg_profile);
		else {
			perror("sitefs mount: getcwd");
			goto out;
		}
	}
	r = lockfile_load(lock_path, &lf, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs mount: %s\n", err[0] ? err : strerror(-r));
		goto out;
	}
	log_trace("mount: lock parsed");

	/* From here on, errors still reach the terminal (the child's stderr)
	 * and the parent exits with the child's status. */
	int pfd[2] = {-1, -1};
	if (!arg_foreground) {
		if (pipe2(pfd, O_CLOEXEC) < 0) {
			perror("sitefs mount: pipe");
			goto out;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("sitefs mount: fork");
			goto out;
		}
		if (pid > 0) {
			close(pfd[1]);
			ret = wait_for_child(pid, pfd[0]);
			goto out;
		}
		close(pfd[0]);
		setsid();
	}

	/* The interpreter is asked on a thread (a Python process, ~25 ms when
	 * not cached) while the metadata of the wheels the lock names whatever
	 * the interpreter is already on its way. */
	struct interp_job job = {.python = arg_python, .cache_dir = cache_dir};
	pthread_t ith;
	bool threaded = pthread_create(&ith, NULL, interp_main, &job) == 0;
	if (!threaded)
		interp_main(&job);
	struct fs_wheel *guess;
	size_t nguess;
	lockplan_guess(lf, &guess, &nguess);
	char eerr[1024];
	if (fs_early_start(cache_dir, guess, nguess, &early, eerr, sizeof(eerr)) < 0)
		early = NULL; /* fs_prepare meets the same error and reports it */
	free(guess);
	if (threaded)
		pthread_join(ith, NULL);
	ip = job.ip;
	if (job.r < 0) {
		fprintf(stderr, "sitefs mount: interpreter \"%s\": %s\n", arg_python,
			job.err[0] ? job.err : strerror(-job.r));
		goto out;
	}
	log_trace("mount: interpreter known");
	r = lockplan_build(lf, ip, &wheels, &nwheels, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs mount: %s\n", err);
		goto out;
	}

	/* Record what this mount is made of, for materialize/prefetch MOUNTPOINT. */
	char *abs_lock = realpath(lock_path, NULL);
	struct mountstate ms = {.mountpoint = mnt, .lock = abs_lock, .cache = cache_dir,
				.python = ip->executable};
	if (abs_lock && mountstate_write(&ms, &state_path) == 0)
		fuse_opts = arg_fuse_opts ? xasprintf("fsname=%s,%s", state_path, arg_fuse_opts)
					  : xasprintf("fsname=%s", state_path);
	free(abs_lock);

	struct fs_config cfg = {
		.cache_dir = cache_dir,
		.venv_root = mnt,
		.installer = "sitefs",
		.py = {.executable = ip->executable, .version = ip->version, .major = ip->major,
		       .minor = ip->minor, .stdlib = ip->stdlib},
		.wheels = wheels,
		.nwheels = nwheels,
		.profile = profile,
		.early = early,
		.pyc_magic = ip->magic,
	};
	early = NULL; /* fs_prepare takes it */
	r = fs_prepare(&cfg, &ctx, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs mount: %s\n", err);
		goto out;
	}
	if (arg_verbose) {
		struct fs_prepare_stats ps;
		fs_get_prepare_stats(ctx, &ps);
		const struct tree *t = fs_tree(ctx);
		fprintf(stderr,
			"sitefs: %zu wheels (%zu from the catalog, %llu requests, %llu bytes), "
			"%zu files, %.1f MB of bodies, tree ready in %.1f ms\n",
			ps.wheels, ps.wheels_from_catalog, (unsigned long long)ps.requests,
			(unsigned long long)ps.wire_bytes, t->nfiles, t->body_bytes / 1e6,
			(now_ns() - t0) / 1e6);
	}
	log_trace("mount: prepared, mounting");
	r = fs_serve(ctx, mnt, fuse_opts ? fuse_opts : arg_fuse_opts, arg_debug,
		     arg_foreground ? -1 : pfd[1]);
	ret = r < 0 ? 1 : 0;
	if (state_path)
		unlink(state_path);
out:
	fs_early_free(early);
	free(state_path);
	free(fuse_opts);
	free(profile);
	fs_free(ctx);
	free(wheels);
	lockfile_free(lf);
	interp_free(ip);
	free(cache_dir);
	return ret;
}
