/* cmd_materialize: sitefs materialize [OPTIONS] SOURCE DEST
 *                  sitefs materialize --in-place MOUNTPOINT  (= sitefs prefetch MOUNTPOINT)
 *
 * SOURCE is a pylock.toml or a running sitefs mount (its state file names
 * the lock, cache and interpreter: mountstate.c).  The venv is built by the
 * tree builder the mount uses, with DEST's final path baked in, written into
 * a temporary sibling of DEST (.DEST.sitefs-XXXXXX) and renamed into place
 * only when complete, bytecode included: an interrupted run leaves DEST as
 * it was (absent, empty, or the old venv with --force), never half made. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "tools/tools.h"

static const char *arg_python;
static const char *arg_cache_dir;
static enum fs_link_mode arg_link_mode = FS_LINK_AUTO;
static bool arg_compile, arg_force, arg_in_place, arg_quiet, arg_verbose;
static unsigned arg_threads;

static volatile int cancelled;

static void on_signal(int sig)
{
	(void)sig;
	cancelled = 1;
}

static void help(FILE *f, const char *cmd)
{
	if (!strcmp(cmd, "prefetch")) {
		fprintf(f,
			"Usage: sitefs prefetch [-j N] [-q] MOUNTPOINT\n\n"
			"Fetch every file body of the sitefs mount at MOUNTPOINT into its cache\n"
			"(one request per wheel), so the mount keeps working offline.\n"
			"Same as 'sitefs materialize --in-place MOUNTPOINT'.\n");
		return;
	}
	fprintf(
	    f, "Usage: sitefs materialize [OPTIONS] SOURCE DEST\n"
	       "       sitefs materialize --in-place MOUNTPOINT\n\n"
	       "Write the venv of SOURCE (a pylock.toml, or a running sitefs mount) as an\n"
	       "ordinary, relocated venv at DEST.  Missing bodies are fetched whole-wheel,\n"
	       "one request per wheel, in parallel; files come from the cache by reflink,\n"
	       "hardlink or copy.  DEST appears only when complete.\n\n"
	       "Options:\n"
	       "  --python PY        interpreter of the venv (default: the mount's, else python3)\n"
	       "  --cache-dir DIR    cache (default: the mount's, else $SITEFS_CACHE_DIR,\n"
	       "                     $XDG_CACHE_HOME/sitefs or ~/.cache/sitefs)\n"
	       "  --link-mode MODE   clone, hardlink or copy (default: the first that works,\n"
	       "                     in that order; hardlinks share a per-mode copy in the cache)\n"
	       "  --compile          write bytecode as pip does (compileall, RECORD rows)\n"
	       "  --force            replace a non-empty DEST\n"
	       "  --in-place         SOURCE is a mount: fill the cache only (see 'prefetch')\n"
	       "  -j, --jobs N       worker threads (default 8)\n"
	       "  -q, --quiet        no summary line\n"
	       "  -v, --verbose      timings\n"
	       "  -h, --help         this text\n");
}

static int parse_args(int argc, char **argv, bool prefetch)
{
	static const struct option opts[] = {
	    {"python", required_argument, NULL, 'P'},
	    {"cache-dir", required_argument, NULL, 'C'},
	    {"link-mode", required_argument, NULL, 'L'},
	    {"compile", no_argument, NULL, 'c'},
	    {"force", no_argument, NULL, 'F'},
	    {"in-place", no_argument, NULL, 'I'},
	    {"jobs", required_argument, NULL, 'j'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	const char *cmd = prefetch ? "prefetch" : "materialize";
	int c;
	optind = 1;
	arg_in_place = prefetch;
	while ((c = getopt_long(argc, argv, "+j:qvh", opts, NULL)) >= 0) {
		switch (c) {
		case 'P':
			arg_python = optarg;
			break;
		case 'C':
			arg_cache_dir = optarg;
			break;
		case 'L':
			if (!strcmp(optarg, "clone") || !strcmp(optarg, "reflink"))
				arg_link_mode = FS_LINK_CLONE;
			else if (!strcmp(optarg, "hardlink"))
				arg_link_mode = FS_LINK_HARDLINK;
			else if (!strcmp(optarg, "copy"))
				arg_link_mode = FS_LINK_COPY;
			else if (!strcmp(optarg, "auto"))
				arg_link_mode = FS_LINK_AUTO;
			else {
				fprintf(stderr,
					"sitefs %s: --link-mode: expected clone, hardlink "
					"or copy, not \"%s\"\n",
					cmd, optarg);
				return -EINVAL;
			}
			break;
		case 'c':
			arg_compile = true;
			break;
		case 'F':
			arg_force = true;
			break;
		case 'I':
			arg_in_place = true;
			break;
		case 'j':
			arg_threads = (unsigned)atoi(optarg);
			if (arg_threads < 1 || arg_threads > 256) {
				fprintf(stderr, "sitefs %s: -j: expected 1..256\n", cmd);
				return -EINVAL;
			}
			break;
		case 'q':
			arg_quiet = true;
			break;
		case 'v':
			arg_verbose = true;
			break;
		case 'h':
			help(stdout, cmd);
			return 0;
		default:
			help(stderr, cmd);
			return -EINVAL;
		}
	}
	int want = arg_in_place ? 1 : 2;
	if (argc - optind != want) {
		fprintf(stderr, "sitefs %s: expected %s\n\n", cmd,
			arg_in_place ? "MOUNTPOINT" : "SOURCE and DEST");
		help(stderr, cmd);
		return -EINVAL;
	}
	return 1;
}

/* ---- progress ---- */

static void progress(void *ud, uint64_t done, uint64_t total)
{
	(void)ud;
	int pct = total ? (int)(done * 100 / total) : 100;
	char bar[31];
	int fill = pct * 30 / 100;
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, ' ', (size_t)(30 - fill));
	bar[30] = 0;
	fprintf(stderr, "\r[%s] %3d%% %.1f/%.1f MB", bar, pct, done / 1e6, total / 1e6);
	fflush(stderr);
}

/* ---- DEST handling ---- */

/* 1 if dir is an empty directory, 0 if not empty, -errno. */
static int dir_empty(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	struct dirent *de;
	int r = 1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			r = 0;
			break;
		}
	closedir(d);
	return r;
}

/* The absolute final path of dest (its parent must exist). */
static char *final_path(const char *dest)
{
	char *a = xstrdup(dest), *b = xstrdup(dest);
	size_t l = strlen(b);
	while (l > 1 && b[l - 1] == '/')
		b[--l] = 0;
	char *base = basename(b), *parent = realpath(dirname(a), NULL), *out = NULL;
	if (parent && strcmp(base, ".") && strcmp(base, "..") && strcmp(base, "/"))
		out = xasprintf("%s/%s", strcmp(parent, "/") ? parent : "", base);
	free(parent);
	free(a);
	free(b);
	return out;
}

/* Moves the finished tmp to final; the old contents of a --force'd DEST
 * are swapped out atomically, then deleted. */
static int commit(const char *tmp, const char *final)
{
	if (rename(tmp, final) == 0)
		return 0;
	if ((errno != ENOTEMPTY && errno != EEXIST) || !arg_force)
		return -errno;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
		rm_rf(tmp);
		return 0;
	}
	/* no RENAME_EXCHANGE here: a short window where DEST is absent */
	char *old = xasprintf("%s.old", tmp);
	int r = rename(final, old) < 0 ? -errno : 0;
	if (r == 0 && rename(tmp, final) < 0) {
		r = -errno;
		if (rename(old, final) < 0) {
		}
	}
	if (r == 0)
		rm_rf(old);
	free(old);
	return r;
}

/* --compile: pip's compileall pass over each dist's RECORD'ed .py files,
 * with the final path as co_filename, and the pyc rows pip adds to RECORD
 * (no hash, sorted like pip's _normalized_outrows). */
static const char compile_script[] =
    "import compileall, csv, importlib.util, io, os, sys, warnings\n"
    "tmp, final, site = sys.argv[1:4]\n"
    "lib = os.path.join(tmp, site)\n"
    "for d in sorted(os.listdir(lib)):\n"
    "    rec = os.path.join(lib, d, 'RECORD')\n"
    "    if not d.endswith('.dist-info') or not os.path.isfile(rec):\n"
    "        continue\n"
    "    with open(rec, newline='', encoding='utf-8') as f:\n"
    "        rows = [tuple(r) + ('',) * (3 - len(r)) for r in csv.reader(f) if r]\n"
    "    known = {r[0] for r in rows}\n"
    "    added = []\n"
    "    with warnings.catch_warnings():\n"
    "        warnings.filterwarnings('ignore')\n"
    "        for p in sorted({r[0] for r in rows}):\n"
    "            full = os.path.normpath(os.path.join(lib, p))\n"
    "            if not full.endswith('.py') or not os.path.isfile(full):\n"
    "                continue\n"
    "            ddir = os.path.dirname(final + full[len(tmp):])\n"
    "            if compileall.compile_file(full, ddir=ddir, force=True, quiet=2):\n"
    "                rp = os.path.relpath(importlib.util.cache_from_source(full), lib)\n"
    "                rp = rp.replace(os.path.sep, '/')\n"
    "                if rp not in known:\n"
    "                    added.append((rp, '', ''))\n"
    "    if added:\n"
    "        rows = sorted((p, h, str(s)) for p, h, s in rows[:] + added)\n"
    "        with open(rec, 'w', newline='', encoding='utf-8') as f:\n"
    "            csv.writer(f).writerows(rows)\n";

static int compile_tree(const char *tmp, const char *final, const struct interp *ip)
{
	char *py = xasprintf("%s/bin/python", tmp);
	char *site = xasprintf("lib/python%d.%d/site-packages", ip->major, ip->minor);
	pid_t pid = fork();
	if (pid == 0) {
		execl(py, py, "-I", "-c", compile_script, tmp, final, site, (char *)NULL);
		_exit(127);
	}
	int status = 0;
	int r = pid < 0 ? -errno : 0;
	while (r == 0 && waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			r = -errno;
	if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		r = -ECHILD;
	free(py);
	free(site);
	return r;
}

/* ---- the command ---- */

static int run(int argc, char **argv, bool prefetch)
{
	const char *cmd = prefetch ? "prefetch" : "materialize";
	int r = parse_args(argc, argv, prefetch);
	if (r <= 0)
		return r == 0 ? 0 : 2;
	const char *source = argv[optind], *dest = arg_in_place ? NULL : argv[optind + 1];
	char err[1024] = "";
	int ret = 1;
	struct mountstate *ms = NULL;
	struct interp *ip = NULL;
	struct lock_file *lf = NULL;
	struct fs_wheel *wheels = NULL;
	size_t nwheels = 0;
	struct fs_ctx *ctx = NULL;
	char *cache_dir = NULL, *final = NULL, *tmp = NULL;
	const char *lock_path = source, *python = arg_python ? arg_python : "python3";
	uint64_t t0 = now_ns();

	/* SOURCE: a mount (its state names lock, cache, interpreter) or a lock. */
	struct stat st;
	if (stat(source, &st) == 0 && S_ISDIR(st.st_mode)) {
		r = mountstate_find(source, &ms);
		if (r < 0) {
			fprintf(stderr, "sitefs %s: \"%s\" is %s\n", cmd, source,
				r == -ENOENT ? "a directory, not a sitefs mount or a lock file"
				: r == -ENODATA
				    ? "a sitefs mount without state (mounted by an older "
				      "sitefs?)"
				    : strerror(-r));
			goto out;
		}
		lock_path = ms->lock;
		if (!arg_python)
			python = ms->python;
		if (!arg_cache_dir)
			cache_dir = xstrdup(ms->cache);
	} else if (arg_in_place) {
		fprintf(stderr, "sitefs %s: \"%s\" is not a sitefs mount\n", cmd, source);
		goto out;
	}
	if (!cache_dir)
		cache_dir = arg_cache_dir ? xstrdup(arg_cache_dir) : tools_default_cache_dir();
	r = mkdir_p(cache_dir, 0755);
	if (r < 0) {
		fprintf(stderr, "sitefs %s: cache directory \"%s\": %s\n", cmd, cache_dir,
			strerror(-r));
		goto out;
	}

	/* DEST: the final path is what the venv's scripts and pyvenv.cfg name. */
	if (dest) {
		final = final_path(dest);
		if (!final) {
			fprintf(stderr, "sitefs %s: \"%s\": the parent directory must exist\n", cmd,
				dest);
			goto out;
		}
		if (lstat(final, &st) == 0) {
			if (!S_ISDIR(st.st_mode)) {
				fprintf(stderr, "sitefs %s: \"%s\" exists and is not a directory\n",
					cmd, dest);
				goto out;
			}
			r = dir_empty(final);
			if (r == 0 && !arg_force) {
				fprintf(
				    stderr,
				    "sitefs %s: \"%s\" is not empty (use --force to replace it)\n",
				    cmd, dest);
				goto out;
			} else if (r < 0) {
				fprintf(stderr, "sitefs %s: \"%s\": %s\n", cmd, dest, strerror(-r));
				goto out;
			}
		}
	} else {
		final = realpath(ms->mountpoint, NULL);
	}

	r = lockfile_load(lock_path, &lf, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs %s: %s\n", cmd, err[0] ? err : strerror(-r));
		goto out;
	}
	r = interp_query(python, cache_dir, &ip, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs %s: interpreter \"%s\": %s\n", cmd, python,
			err[0] ? err : strerror(-r));
		goto out;
	}
	r = lockplan_build(lf, ip, &wheels, &nwheels, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs %s: %s\n", cmd, err);
		goto out;
	}

	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (dest) {
		char *fc = xstrdup(final);
		char *slash = strrchr(fc, '/');
		*slash = 0;
		tmp = xasprintf("%s/.%s.sitefs-XXXXXX", fc[0] ? fc : "", slash + 1);
		free(fc);
		if (!mkdtemp(tmp)) {
			fprintf(stderr, "sitefs %s: cannot create a directory next to \"%s\": %s\n",
				cmd, dest, strerror(errno));
			free(tmp);
			tmp = NULL;
			goto out;
		}
		mode_t um = umask(0);
		umask(um);
		chmod(tmp, 0777 & ~um); /* mkdtemp made it 0700; venv makes 0777 & ~umask */
	}

	struct fs_config cfg = {
	    .cache_dir = cache_dir,
	    .venv_root = final,
	    .installer = "sitefs",
	    .py = {.executable = ip->executable,
		   .version = ip->version,
		   .major = ip->major,
		   .minor = ip->minor,
		   .stdlib = ip->stdlib},
	    .wheels = wheels,
	    .nwheels = nwheels,
	};
	r = fs_prepare(&cfg, &ctx, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs %s: %s\n", cmd, err);
		goto out;
	}
	uint64_t t_prep = now_ns();
	bool tty = isatty(STDERR_FILENO) && !arg_quiet;
	struct fs_materialize_opts mo = {
	    .dest = tmp,
	    .link_mode = arg_link_mode,
	    .threads = arg_threads,
	    .progress = tty ? progress : NULL,
	    .cancel = &cancelled,
	};
	struct fs_materialize_stats ms_st;
	r = fs_materialize(ctx, &mo, &ms_st, err, sizeof(err));
	if (tty)
		fprintf(stderr, "\r\033[K");
	if (r < 0) {
		fprintf(stderr, "sitefs %s: %s\n", cmd, err);
		goto out;
	}
	uint64_t t_mat = now_ns();
	if (dest && arg_compile) {
		r = compile_tree(tmp, final, ip);
		if (r < 0) {
			fprintf(stderr, "sitefs %s: byte-compiling failed (%s)\n", cmd,
				r == -ECHILD ? "see the Python error above" : strerror(-r));
			goto out;
		}
	}
	if (cancelled) {
		fprintf(stderr, "sitefs %s: interrupted\n", cmd);
		goto out;
	}
	if (dest) {
		r = commit(tmp, final);
		if (r < 0) {
			fprintf(stderr, "sitefs %s: cannot move the venv to \"%s\": %s\n", cmd,
				dest, strerror(-r));
			goto out;
		}
		free(tmp);
		tmp = NULL;
	}
	ret = 0;
	if (arg_quiet)
		goto out;
	if (dest) {
		const char *used = ms_st.cloned ? "clone" : ms_st.hardlinked ? "hardlink" : "copy";
		if ((ms_st.cloned != 0) + (ms_st.hardlinked != 0) + (ms_st.copied != 0) > 1)
			used = "mixed";
		fprintf(stderr,
			"sitefs: materialized %zu packages, %zu files (%.1f MB) into \"%s\" in "
			"%.2f s; link mode: %s (%zu cloned, %zu hardlinked, %zu copied); "
			"%zu wheels fetched (%.1f MB)%s\n",
			nwheels, ms_st.files, ms_st.body_bytes / 1e6, final, (now_ns() - t0) / 1e9,
			used, ms_st.cloned, ms_st.hardlinked, ms_st.copied, ms_st.wheels_fetched,
			ms_st.fetched_bytes / 1e6, arg_compile ? "; byte-compiled" : "");
	} else {
		fprintf(stderr,
			"sitefs: %zu bodies (%.1f MB) of \"%s\" are in the cache; %zu fetched from "
			"%zu whole wheels (%.1f MB) in %.2f s\n",
			fs_tree(ctx)->nbodies, ms_st.body_bytes / 1e6, final, ms_st.bodies_filled,
			ms_st.wheels_fetched, ms_st.fetched_bytes / 1e6, (now_ns() - t0) / 1e9);
	}
	if (arg_verbose)
		fprintf(stderr, "sitefs: prepare %.1f ms, fetch+write %.1f ms, compile %.1f ms\n",
			(t_prep - t0) / 1e6, (t_mat - t_prep) / 1e6, (now_ns() - t_mat) / 1e6);
out:
	if (tmp) {
		rm_rf(tmp);
		free(tmp);
	}
	fs_free(ctx);
	free(wheels);
	lockfile_free(lf);
	interp_free(ip);
	mountstate_free(ms);
	free(cache_dir);
	free(final);
	return ret;
}

int cmd_materialize(int argc, char **argv) { return run(argc, argv, false); }

int cmd_prefetch(int argc, char **argv) { return run(argc, argv, true); }
