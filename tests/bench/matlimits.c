/* matlimits: the limits a cold `sitefs materialize` runs against, measured
 * with sitefs's own code (benchmark helper, not a test).
 *
 *   matlimits [-j N] inflate WHEEL...
 *       Every entry of every wheel inflated into memory with fetch/inflate.c
 *       (size, CRC-32 and SHA-256 checked, as a fill does), N threads (default:
 *       the CPUs), one wheel at a time each, biggest first; the wheel is read
 *       with pread as materialize reads its download.  Nothing is written.
 *
 *   matlimits [-j N] extract DIR WHEEL...
 *       Both at once, as a cold hardlink materialize does from downloaded
 *       wheels: each entry inflated (checked) straight into a new file below
 *       DIR/extract/venv, then linked into DIR/extract/store.  The ceiling for
 *       materialize on this machine, network aside.
 *
 *   matlimits [-j N] [--how HOW] write DIR WHEEL...
 *       The same entries, inflated beforehand (not timed), written from memory
 *       as files below DIR/HOW/ (which must not exist), N threads:
 *         dest     create + write in the venv tree: one inode per file, the floor
 *         link     dest, then link() into a content-addressed store (what a cold
 *                  hardlink materialize does since it inflates into the venv)
 *         tmpfile  O_TMPFILE in the store, write, linkat into the store, link
 *                  into the venv
 *         old      the cold hardlink path before: a temp file renamed into the
 *                  body store, a second temp file (the per-mode copy) linked
 *                  into the store and unlinked, then a link into the venv
 *
 * Each run prints one line, "what key=value ...", with mbps = wheel bytes per
 * second (the unit of materialize's bulk throughput). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/inflate.h"
#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "fetch/zipcd.h"

struct file {
	char *name;
	mode_t mode;
	uint8_t *data; /* write mode: the inflated bytes */
	size_t len;
	uint8_t sha[32];
};

struct whl {
	const char *path;
	uint64_t size;
	struct file *files;
	size_t nfiles;
};

struct run {
	struct whl *w;
	size_t nw;
	size_t next; /* atomic */
	bool keep;   /* keep the inflated bytes (write mode's preparation) */
	bool extract; /* write each entry into a file as it is inflated */
	const char *dir, *how;
	uint64_t out_bytes; /* atomic */
	uint64_t files;	    /* atomic */
	int err;	    /* atomic: first error */
};

static void fail(struct run *ru, int r, const char *what, const char *name)
{
	int zero = 0;
	if (__atomic_compare_exchange_n(&ru->err, &zero, r ? r : -EIO, false, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		fprintf(stderr, "matlimits: %s: %s: %s\n", name, what, strerror(-r));
}

struct sinkbuf {
	struct buf *b; /* NULL: discard */
	int fd;	       /* extract: the file, else -1 */
};

static int out_cb(void *ud, const uint8_t *p, size_t n)
{
	struct sinkbuf *s = ud;
	if (s->b)
		buf_append(s->b, p, n);
	return s->fd >= 0 ? write_full(s->fd, p, n) : 0;
}

static int parent_dirs(const char *root, const char *name, char *last, size_t lastlen);
static char *store_path(const char *root, const uint8_t sha[32], mode_t mode);

/* Inflates every file entry of one wheel, reading it with pread. */
static int inflate_wheel(struct run *ru, struct whl *w)
{
	int fd = open(w->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint64_t tail_off = w->size > ZIPCD_TAIL_SIZE ? w->size - ZIPCD_TAIL_SIZE : 0;
	uint8_t *tail = xmalloc(w->size - tail_off + 1);
	struct zip_cd *cd = NULL;
	char err[256] = "";
	uint64_t need = 0;
	int r = pread_full(fd, tail, w->size - tail_off, (off_t)tail_off);
	if (r == 0)
		r = zipcd_parse(tail, w->size - tail_off, tail_off, w->size, &cd, &need, err,
				sizeof(err));
	if (r == -EAGAIN) {
		free(tail);
		tail = xmalloc(w->size - need + 1);
		r = pread_full(fd, tail, w->size - need, (off_t)need);
		if (r == 0)
			r = zipcd_parse(tail, w->size - need, need, w->size, &cd, &need, err,
					sizeof(err));
	}
	free(tail);
	if (r < 0) {
		close(fd);
		fprintf(stderr, "matlimits: %s: %s\n", w->path, err);
		return r;
	}
	if (ru->keep)
		w->files = xcalloc(cd->n + 1, sizeof(*w->files));
	uint8_t *in = NULL;
	size_t incap = 0;
	char *root = ru->extract ? xasprintf("%s/extract", ru->dir) : NULL;
	char *venv = ru->extract ? xasprintf("%s/venv", root) : NULL;
	char last[PATH_MAX] = "\1";
	for (size_t k = 0; k < cd->n && r == 0; k++) {
		const struct zip_entry *e = &cd->entries[k];
		if (str_endswith(e->name, "/"))
			continue;
		/* header + compressed bytes in one pread, as a local fill reads */
		uint64_t span = zipcd_span_guess(e);
		uint64_t want = MIN(e->lho + span, w->size) - e->lho;
		if (want > incap) {
			incap = want;
			in = xrealloc(in, incap);
		}
		uint64_t doff;
		r = pread_full(fd, in, want, (off_t)e->lho);
		if (r == 0)
			r = zipcd_local_header(in, want, e, &doff);
		if (r == 0 && doff - e->lho + e->csize > want) {
			want = doff - e->lho + e->csize;
			if (want > incap) {
				incap = want;
				in = xrealloc(in, incap);
			}
			r = pread_full(fd, in, want, (off_t)e->lho);
		}
		if (r < 0) {
			fail(ru, r, "local header", e->name);
			break;
		}
		struct buf b;
		buf_init(&b);
		struct sinkbuf sb = {ru->keep ? &b : NULL, -1};
		mode_t mode = (e->mode & 0111) ? 0755 : 0644;
		char *dst = NULL;
		if (ru->extract) {
			r = parent_dirs(venv, e->name, last, sizeof(last));
			dst = xasprintf("%s/%s", venv, e->name);
			sb.fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
			if (r == 0 && sb.fd < 0 && errno != EEXIST)
				r = -errno;
			if (sb.fd < 0) { /* two wheels shipping one path */
				free(dst);
				dst = NULL;
			}
		}
		struct inflater *inf = inflater_new(e->method, e->usize, e->crc32, out_cb, &sb);
		uint8_t sha[32];
		if (r == 0)
			r = inf ? inflater_feed(inf, in + (doff - e->lho), e->csize) : -EBADMSG;
		if (r == 0)
			r = inflater_finish(inf, sha, err, sizeof(err));
		inflater_free(inf);
		if (sb.fd >= 0)
			close(sb.fd);
		if (r == 0 && dst) {
			char *sp = store_path(root, sha, mode);
			if (link(dst, sp) < 0 && errno == ENOENT) {
				char *d = xstrndup(sp, (size_t)(strrchr(sp, '/') - sp));
				mkdir_p(d, 0755);
				free(d);
				link(dst, sp);
			}
			free(sp);
		}
		free(dst);
		if (r < 0) {
			fail(ru, r, err, e->name);
			buf_free(&b);
			break;
		}
		__atomic_add_fetch(&ru->out_bytes, e->usize, __ATOMIC_RELAXED);
		__atomic_add_fetch(&ru->files, 1, __ATOMIC_RELAXED);
		if (ru->keep) {
			struct file *f = &w->files[w->nfiles++];
			f->name = xstrdup(e->name);
			f->mode = (e->mode & 0111) ? 0755 : 0644;
			f->data = buf_steal(&b, &f->len);
			memcpy(f->sha, sha, 32);
		}
		buf_free(&b);
	}
	free(in);
	free(venv);
	free(root);
	zipcd_free(cd);
	close(fd);
	return r;
}

/* mkdir -p of name's parent below root (a per-thread memo of the last one). */
static int parent_dirs(const char *root, const char *name, char *last, size_t lastlen)
{
	const char *sl = strrchr(name, '/');
	if (!sl)
		return 0;
	size_t n = (size_t)(sl - name);
	if (strlen(last) == n && !memcmp(last, name, n))
		return 0;
	char *p = xasprintf("%s/%.*s", root, (int)n, name);
	int r = mkdir_p(p, 0755);
	free(p);
	snprintf(last, lastlen, "%.*s", (int)n, name);
	return r;
}

static char *store_path(const char *root, const uint8_t sha[32], mode_t mode)
{
	char hex[65];
	hex_encode(sha, 32, hex);
	return xasprintf("%s/store/%04o/%.2s/%s", root, (unsigned)mode, hex, hex + 2);
}

/* One file, the HOW way.  root: DIR/HOW; the venv tree is root/venv. */
static int write_one(const char *root, const char *how, const struct file *f, const char *dst)
{
	int r = 0;
	if (!strcmp(how, "dest") || !strcmp(how, "link")) {
		int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, f->mode);
		if (fd < 0)
			return -errno;
		r = write_full(fd, f->data, f->len);
		close(fd);
		if (r == 0 && !strcmp(how, "link")) {
			char *sp = store_path(root, f->sha, f->mode);
			if (link(dst, sp) < 0 && errno == ENOENT) {
				char *d = xstrndup(sp, (size_t)(strrchr(sp, '/') - sp));
				mkdir_p(d, 0755);
				free(d);
				r = link(dst, sp) < 0 ? -errno : 0;
			}
			if (r == -EEXIST)
				r = 0;
			free(sp);
		}
		return r;
	}
	char *sp = store_path(root, f->sha, f->mode);
	char *d = xstrndup(sp, (size_t)(strrchr(sp, '/') - sp));
	r = mkdir_p(d, 0755);
	if (r == 0 && !strcmp(how, "tmpfile")) {
		int fd = open(d, O_TMPFILE | O_WRONLY | O_CLOEXEC, f->mode);
		r = fd < 0 ? -errno : write_full(fd, f->data, f->len);
		if (r == 0) {
			char proc[64];
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
			if (linkat(AT_FDCWD, proc, AT_FDCWD, sp, AT_SYMLINK_FOLLOW) < 0 &&
			    errno != EEXIST)
				r = -errno;
		}
		if (fd >= 0)
			close(fd);
	} else if (r == 0) { /* old */
		char hex[65];
		hex_encode(f->sha, 32, hex);
		char *body = xasprintf("%s/bodies/%.2s/%s", root, hex, hex + 2);
		char *bd = xstrndup(body, (size_t)(strrchr(body, '/') - body));
		char *tmp = xasprintf("%s/tmp/fill.XXXXXX", root);
		r = mkdir_p(bd, 0755);
		for (int copy = 0; copy < 2 && r == 0; copy++) {
			strcpy(tmp + strlen(tmp) - 6, "XXXXXX");
			int fd = mkostemp(tmp, O_CLOEXEC);
			r = fd < 0 ? -errno : write_full(fd, f->data, f->len);
			if (r == 0 && fchmod(fd, copy ? f->mode : 0444) < 0)
				r = -errno;
			if (fd >= 0)
				close(fd);
			if (r == 0 && !copy && rename(tmp, body) < 0)
				r = -errno;
			if (r == 0 && copy) {
				if (link(tmp, sp) < 0 && errno != EEXIST)
					r = -errno;
				unlink(tmp);
			}
		}
		free(tmp);
		free(bd);
		free(body);
	}
	free(d);
	if (r == 0 && link(sp, dst) < 0)
		r = -errno;
	free(sp);
	return r;
}

static int write_wheel(struct run *ru, struct whl *w)
{
	char *root = xasprintf("%s/%s", ru->dir, ru->how);
	char *venv = xasprintf("%s/venv", root);
	char last[PATH_MAX] = "\1";
	int r = 0;
	for (size_t k = 0; k < w->nfiles && r == 0; k++) {
		const struct file *f = &w->files[k];
		r = parent_dirs(venv, f->name, last, sizeof(last));
		char *dst = xasprintf("%s/%s", venv, f->name);
		if (r == 0)
			r = write_one(root, ru->how, f, dst);
		if (r == -EEXIST)
			r = 0; /* two wheels shipping one path (namespace __init__) */
		if (r < 0)
			fail(ru, r, "write", dst);
		free(dst);
		__atomic_add_fetch(&ru->out_bytes, f->len, __ATOMIC_RELAXED);
		__atomic_add_fetch(&ru->files, 1, __ATOMIC_RELAXED);
	}
	free(venv);
	free(root);
	return r;
}

static bool writing;

static void *worker(void *ud)
{
	struct run *ru = ud;
	for (;;) {
		size_t k = __atomic_fetch_add(&ru->next, 1, __ATOMIC_RELAXED);
		if (k >= ru->nw || __atomic_load_n(&ru->err, __ATOMIC_RELAXED))
			break;
		int r = writing ? write_wheel(ru, &ru->w[k]) : inflate_wheel(ru, &ru->w[k]);
		if (r < 0)
			fail(ru, r, "wheel", ru->w[k].path);
	}
	return NULL;
}

static double run_all(struct run *ru, unsigned nt)
{
	ru->next = 0;
	ru->out_bytes = ru->files = 0;
	uint64_t t0 = now_ns();
	pthread_t th[256];
	for (unsigned i = 0; i < nt; i++)
		pthread_create(&th[i], NULL, worker, ru);
	for (unsigned i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	return (now_ns() - t0) / 1e9;
}

static int cmp_size(const void *a, const void *b)
{
	const struct whl *x = a, *y = b;
	return x->size < y->size ? 1 : x->size > y->size ? -1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"how", required_argument, NULL, 'H'}, {"jobs", required_argument, NULL, 'j'}, {}};
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned nt = ncpu > 0 ? (unsigned)ncpu : 1;
	const char *how = "link";
	int c;
	while ((c = getopt_long(argc, argv, "+j:", opts, NULL)) >= 0) {
		if (c == 'j')
			nt = (unsigned)atoi(optarg);
		else if (c == 'H')
			how = optarg;
		else
			return 2;
	}
	if (nt < 1 || nt > 256 || argc - optind < 2)
		goto usage;
	const char *mode = argv[optind++];
	struct run ru = {.how = how};
	if (!strcmp(mode, "write")) {
		if (strcmp(how, "dest") && strcmp(how, "link") && strcmp(how, "tmpfile") &&
		    strcmp(how, "old"))
			goto usage;
		writing = true;
		ru.dir = argv[optind++];
	} else if (!strcmp(mode, "extract")) {
		ru.extract = true;
		ru.dir = argv[optind++];
		char *venv = xasprintf("%s/extract/venv", ru.dir);
		char *root = xasprintf("%s/extract", ru.dir);
		if (mkdir_p(ru.dir, 0755) < 0 || mkdir(root, 0755) < 0 || mkdir(venv, 0755) < 0) {
			fprintf(stderr, "matlimits: \"%s\": %s (must be new)\n", root,
				strerror(errno));
			return 1;
		}
		free(root);
		free(venv);
	} else if (strcmp(mode, "inflate")) {
		goto usage;
	}
	ru.nw = (size_t)(argc - optind);
	ru.w = xcalloc(ru.nw + 1, sizeof(*ru.w));
	uint64_t total = 0;
	for (size_t i = 0; i < ru.nw; i++) {
		struct stat st;
		if (stat(argv[optind + i], &st) < 0) {
			fprintf(stderr, "matlimits: \"%s\": %s\n", argv[optind + i], strerror(errno));
			return 1;
		}
		ru.w[i] = (struct whl){.path = argv[optind + i], .size = (uint64_t)st.st_size};
		total += ru.w[i].size;
	}
	qsort(ru.w, ru.nw, sizeof(*ru.w), cmp_size);
	if (writing) {
		char *root = xasprintf("%s/%s", ru.dir, how);
		if (mkdir_p(ru.dir, 0755) < 0 || mkdir(root, 0755) < 0) {
			fprintf(stderr, "matlimits: \"%s\": %s (must be new)\n", root,
				strerror(errno));
			return 1;
		}
		char *sub[] = {xasprintf("%s/venv", root), xasprintf("%s/tmp", root)};
		for (size_t i = 0; i < 2; i++) {
			mkdir(sub[i], 0755);
			free(sub[i]);
		}
		free(root);
		writing = false;
		ru.keep = true;
		run_all(&ru, nt); /* not timed: the bytes to write */
		writing = true;
		ru.keep = false;
	}
	double s = run_all(&ru, nt);
	if (ru.err)
		return 1;
	printf("%s%s%s wheels=%zu wheel_bytes=%llu out_bytes=%llu files=%llu threads=%u "
	       "seconds=%.3f mbps=%.1f\n",
	       mode, writing ? " how=" : "", writing ? how : "", ru.nw, (unsigned long long)total,
	       (unsigned long long)ru.out_bytes, (unsigned long long)ru.files, nt, s,
	       total / s / 1e6);
	return 0;
usage:
	fprintf(stderr, "usage: matlimits [-j N] inflate WHEEL...\n"
			"       matlimits [-j N] extract DIR WHEEL...\n"
			"       matlimits [-j N] [--how dest|link|tmpfile|old] write DIR WHEEL...\n");
	return 2;
}
