/* compile: compile ahead — the sources a fill brought along are compiled
 * into the bytecode store on the second core, before Python asks for them.
 *
 * DESIGN
 * - A cold import compiles every module on the interpreter's critical path
 *   (5.3 s of S0's 8.7 s).  A fill brings the run of small files of the
 *   opened file's directory (body.c): the package's other modules, most of
 *   which the import opens next.  Compiling those while Python compiles
 *   the one it opened moves that work off its path.  Only neighbours are
 *   taken: the file a fill was asked for is being compiled by its opener,
 *   and only directories the import touched get fills.
 * - The compiler is the mount's interpreter (cfg.py.executable, -I -S -B),
 *   one long-lived child started on the first job, fed over a socketpair:
 *   "<u32 path len><u32 source len><path><source>" in, "<u32 len><marshal
 *   of the code>" out (len 0: it does not compile).  compile() parses and
 *   generates code, it never runs the source; the child reads nothing but
 *   its socket, so a daemon running as root runs it as nobody.  It runs at
 *   nice COMPILE_NICE: the importing interpreter and the daemon's replies
 *   come first.
 * - What it returns becomes a stored-form pyc (this interpreter's magic,
 *   flags 0, mtime 0, the source's size) published by pyc_seed, the checks
 *   and first-writer-wins publish the profile's pycs go through.  A source
 *   whose pyc is stored already is skipped.
 * - Python's lookup of a missing pyc reaches compile_lookup_miss (pyc.c; a
 *   miss is answered ENOENT with no timeout, so a pyc published later is
 *   found by the next lookup).  A source still queued is then left to
 *   Python (compiling it twice buys nothing); one being compiled holds the
 *   lookup until it is stored (the FUSE worker returns: the compile thread
 *   answers it), since the child is ahead of where Python would be.
 * - Queue: a ring of QUEUE_MAX node numbers in fill order; when it is full
 *   new sources are dropped (Python compiles them as without this).
 *   Engaged by the first pyc lookup miss (an interpreter importing from
 *   the mount), so materialize and prefetch, which fill without importing,
 *   compile nothing.
 * - SITEFS_COMPILE_AHEAD=0 turns it off.
 * - Shutdown: compile_stop (after the session loop) answers the held
 *   lookups, kills the child and joins the thread; compile_free frees.
 * - Locking: c->lock (queue, node states, held lookups, counters) is a
 *   leaf, never held across I/O, a reply, or a call into pyc.c or cache.c. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

#define QUEUE_MAX 8192
#define SOURCE_MAX (1u << 20) /* larger sources are left to Python */
#define CODE_MAX (64u << 20)  /* pyc.c's bound on a pyc */
#define COMPILE_NICE 10

static const char script[] =
	"import sys, marshal\n"
	"i, o = sys.stdin.buffer, sys.stdout.buffer\n"
	"while True:\n"
	"    h = i.read(8)\n"
	"    if len(h) < 8: break\n"
	"    n, m = int.from_bytes(h[:4], 'little'), int.from_bytes(h[4:], 'little')\n"
	"    p, s = i.read(n), i.read(m)\n"
	"    if len(p) < n or len(s) < m: break\n"
	"    try: d = marshal.dumps(compile(s, p, 'exec', dont_inherit=True, optimize=0))\n"
	"    except Exception: d = b''\n"
	"    o.write(len(d).to_bytes(4, 'little') + d)\n"
	"    o.flush()\n";

enum { ST_NONE, ST_QUEUED, ST_BUSY, ST_PYTHON, ST_DONE };

struct held { /* a lookup waiting for the compile of src */
	fuse_req_t req;
	uint64_t d;
	char *name;
	uint32_t src;
	struct held *next;
};

struct compile {
	struct fs_ctx *ctx;
	uint8_t magic[4]; /* cfg.pyc_magic */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint8_t *state; /* per tree node; protected by lock, as is all below */
	uint32_t *ring;
	size_t head, len;
	struct held *held;
	bool active, started, stopping;
	pthread_t thread;
	/* counters, for the summary */
	size_t noted, dropped, stored, present, failed, python, waited;

	pid_t pid; /* the child (-1: none); set by the compile thread */
	/* the compile thread's own */
	int sock;
	bool broken; /* the child failed: no more jobs */
	long cpu_ms; /* of the children reaped */
};

struct compile *compile_new(struct fs_ctx *ctx)
{
	const char *ev = getenv("SITEFS_COMPILE_AHEAD");
	if ((ev && strcmp(ev, "0") == 0) || !ctx->pyc || !ctx->cfg.pyc_magic ||
	    !ctx->cfg.py.executable)
		return NULL;
	uint8_t magic[4];
	if (strlen(ctx->cfg.pyc_magic) != 8 || hex_decode(ctx->cfg.pyc_magic, magic, 4) != 0)
		return NULL;
	struct compile *c = xcalloc(1, sizeof(*c));
	c->ctx = ctx;
	memcpy(c->magic, magic, 4);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->state = xcalloc(ctx->tree->n ? ctx->tree->n : 1, 1);
	c->ring = xmalloc(QUEUE_MAX * sizeof(*c->ring));
	c->pid = -1;
	c->sock = -1;
	return c;
}

/* --- the child ------------------------------------------------------------ */

static int spawn(struct compile *c)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	/* everything the child needs is made before the fork: after it, only
	 * system calls (the daemon has threads) */
	const char *exe = c->ctx->cfg.py.executable;
	static char a1[] = "-I", a2[] = "-S", a3[] = "-B", a4[] = "-c";
	static char e0[] = "PATH=/usr/bin:/bin", e1[] = "LC_ALL=C.UTF-8";
	char *argv[] = {(char *)exe, a1, a2, a3, a4, (char *)script, NULL};
	char *envp[] = {e0, e1, NULL};
	bool root = geteuid() == 0;
	uid_t uid = 65534;
	gid_t gid = 65534;
	if (root) {
		struct passwd pw, *pr = NULL;
		char pbuf[1024];
		if (getpwnam_r("nobody", &pw, pbuf, sizeof(pbuf), &pr) == 0 && pr) {
			uid = pr->pw_uid;
			gid = pr->pw_gid;
		}
	}
	sigset_t all;
	sigemptyset(&all);
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		sigprocmask(SIG_SETMASK, &all, NULL);
		setpriority(PRIO_PROCESS, 0, COMPILE_NICE);
		if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0)
			_exit(127);
		if (root && (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0))
			_exit(127);
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		execve(exe, argv, envp);
		_exit(127);
	}
	close(sv[1]);
	pthread_mutex_lock(&c->lock);
	c->pid = pid;
	pthread_mutex_unlock(&c->lock);
	c->sock = sv[0];
	return 0;
}

/* Ends the child; adds the CPU time it used to c->cpu_ms. */
static void reap(struct compile *c)
{
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
	pthread_mutex_lock(&c->lock);
	pid_t pid = c->pid;
	c->pid = -1;
	pthread_mutex_unlock(&c->lock);
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	struct rusage ru;
	while (wait4(pid, NULL, 0, &ru) < 0)
		if (errno != EINTR)
			return;
	c->cpu_ms += (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L +
		     (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, (uint8_t *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		got += (size_t)n;
	}
	return 0;
}

static int send_full(int fd, const void *buf, size_t len)
{
	size_t sent = 0;
	while (sent < len) {
		ssize_t n = send(fd, (const uint8_t *)buf + sent, len - sent, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		sent += (size_t)n;
	}
	return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int k = 0; k < 4; k++)
		p[k] = (uint8_t)(v >> (8 * k));
}

/* The stored-form pyc of source node src compiled by the child: 0 and *ret
 * (caller frees), -EBADMSG when it does not compile, -errno. */
static int compile_one(struct compile *c, uint32_t src, uint8_t **ret, size_t *ret_len)
{
	struct fs_ctx *ctx = c->ctx;
	const struct tree_node *sn = &ctx->tree->nodes[src];
	if (sn->size > SOURCE_MAX)
		return -EFBIG;
	uint8_t key[32];
	bool verified;
	body_key(ctx, src, key, &verified);
	int fd = cache_peek(ctx->cache, key, verified, sn->size);
	if (fd < 0)
		return fd;
	char path[4096];
	size_t vl = strlen(ctx->cfg.venv_root);
	int pl = tree_path(ctx->tree, src, path, sizeof(path));
	uint8_t *msg = NULL;
	int r = pl < 0 || vl + 1 + (size_t)pl >= sizeof(path) ? -ENAMETOOLONG : 0;
	size_t plen = vl + 1 + (size_t)pl;
	if (r == 0) {
		/* co_filename: where the mount serves it (Python fixes it up on
		 * load anyway: the store is shared by every mount) */
		memmove(path + vl + 1, path, (size_t)pl + 1);
		memcpy(path, ctx->cfg.venv_root, vl);
		path[vl] = '/';
		msg = xmalloc(8 + plen + sn->size);
		put32(msg, (uint32_t)plen);
		put32(msg + 4, (uint32_t)sn->size);
		memcpy(msg + 8, path, plen);
		r = pread_full(fd, msg + 8 + plen, sn->size, 0);
	}
	close(fd);
	if (r == 0 && c->sock < 0 && !c->broken) {
		r = spawn(c);
		if (r < 0) {
			log_warn("compile ahead: cannot start \"%s\": %s; off",
				 ctx->cfg.py.executable, strerror(-r));
			c->broken = true;
		}
	}
	if (r == 0 && c->broken)
		r = -EPIPE;
	uint8_t h[4];
	if (r == 0)
		r = send_full(c->sock, msg, 8 + plen + sn->size);
	free(msg);
	if (r == 0)
		r = read_full(c->sock, h, 4);
	uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
		     (uint32_t)h[3] << 24;
	if (r == 0 && n > CODE_MAX - 16)
		r = -EPROTO;
	uint8_t *pyc = NULL;
	if (r == 0) {
		pyc = xmalloc(16 + n);
		r = read_full(c->sock, pyc + 16, n);
	}
	if (r < 0) {
		free(pyc);
		if (r != -EFBIG && r != -ENAMETOOLONG && !c->broken) {
			/* the child died or lied: Python compiles from here on */
			pthread_mutex_lock(&c->lock);
			bool stopping = c->stopping;
			pthread_mutex_unlock(&c->lock);
			if (!stopping)
				log_warn("compile ahead: the compiler process failed (%s); off",
					 strerror(-r));
			c->broken = true;
			reap(c);
		}
		return r;
	}
	if (n == 0) {
		free(pyc);
		return -EBADMSG;
	}
	memcpy(pyc, c->magic, 4);
	memset(pyc + 4, 0, 8); /* flags 0 (timestamp pyc), mtime 0 (stored form) */
	put32(pyc + 12, (uint32_t)sn->size);
	*ret = pyc;
	*ret_len = 16 + n;
	return 0;
}

/* --- the thread ----------------------------------------------------------- */

static void *compile_main(void *arg)
{
	struct compile *c = arg;
	struct fs_ctx *ctx = c->ctx;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->stopping && !c->len)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->stopping)
			break;
		uint32_t src = c->ring[c->head];
		c->head = (c->head + 1) % QUEUE_MAX;
		c->len--;
		if (c->state[src] != ST_QUEUED)
			continue; /* Python looked for it first */
		c->state[src] = ST_BUSY;
		pthread_mutex_unlock(&c->lock);

		int r = -EEXIST;
		if (!pyc_stored(ctx->pyc, src, 0)) {
			uint8_t *pyc = NULL;
			size_t len = 0;
			r = c->broken ? -EPIPE : compile_one(c, src, &pyc, &len);
			if (r == 0)
				r = pyc_seed(ctx->pyc, src, 0, pyc, len);
			free(pyc);
			if (r == 0)
				profile_note_pyc(ctx->profile);
		}

		pthread_mutex_lock(&c->lock);
		c->state[src] = ST_DONE;
		if (r == 0)
			c->stored++;
		else if (r == -EEXIST)
			c->present++;
		else
			c->failed++;
		struct held *mine = NULL;
		for (struct held **p = &c->held; *p;) {
			struct held *h = *p;
			if (h->src == src) {
				*p = h->next;
				h->next = mine;
				mine = h;
			} else {
				p = &h->next;
			}
		}
		if (mine) {
			pthread_mutex_unlock(&c->lock);
			for (struct held *h = mine, *next; h; h = next) {
				next = h->next;
				pyc_lookup(ctx->pyc, h->req, h->d, h->name); /* finds it, or ENOENT */
				free(h->name);
				free(h);
			}
			pthread_mutex_lock(&c->lock);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* --- the hooks ------------------------------------------------------------ */

void compile_note(struct compile *c, uint32_t src)
{
	if (!c)
		return;
	const struct tree *t = c->ctx->tree;
	const struct tree_node *sn = &t->nodes[src];
	if (sn->kind != TREE_BODY || !sn->has_sha || !str_endswith(tree_name(t, sn), ".py"))
		return;
	pthread_mutex_lock(&c->lock);
	if (c->active && !c->stopping && c->state[src] == ST_NONE) {
		if (c->len < QUEUE_MAX) {
			c->ring[(c->head + c->len) % QUEUE_MAX] = src;
			c->len++;
			c->state[src] = ST_QUEUED;
			c->noted++;
			pthread_cond_signal(&c->cond);
		} else {
			c->dropped++;
		}
	}
	pthread_mutex_unlock(&c->lock);
}

bool compile_done(struct compile *c, uint32_t src)
{
	if (!c)
		return false;
	pthread_mutex_lock(&c->lock);
	bool done = c->state[src] == ST_DONE;
	pthread_mutex_unlock(&c->lock);
	return done;
}

enum compile_miss compile_lookup_miss(struct compile *c, uint32_t src, uint8_t opt,
				      fuse_req_t req, uint64_t d, const char *name)
{
	if (!c || opt != 0)
		return COMPILE_MISS;
	enum compile_miss r = COMPILE_MISS;
	pthread_mutex_lock(&c->lock);
	if (!c->active && !c->stopping) {
		/* an interpreter imports from the mount: engage */
		c->active = true;
		c->started = pthread_create(&c->thread, NULL, compile_main, c) == 0;
		if (!c->started)
			c->stopping = true;
	}
	switch (c->state[src]) {
	case ST_NONE:
	case ST_QUEUED:
		if (c->state[src] == ST_QUEUED)
			c->python++;
		c->state[src] = ST_PYTHON; /* Python compiles it now */
		break;
	case ST_BUSY:
		if (!c->stopping) {
			struct held *h = xcalloc(1, sizeof(*h));
			*h = (struct held){.req = req, .d = d, .name = xstrdup(name), .src = src,
					   .next = c->held};
			c->held = h;
			c->waited++;
			r = COMPILE_HELD;
		}
		break;
	case ST_DONE:
		r = COMPILE_AGAIN; /* stored since the caller looked, perhaps */
		c->state[src] = ST_PYTHON;
		break;
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

void compile_stop(struct compile *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	bool again = c->stopping && !c->active;
	c->stopping = true;
	c->active = false; /* stopped: the summary is logged once */
	struct held *held = c->held;
	c->held = NULL;
	/* a compile in progress ends with the child (not reaped yet: under
	 * the lock its pid is still its own) */
	if (c->pid > 0)
		kill(c->pid, SIGKILL);
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	for (struct held *h = held, *next; h; h = next) {
		next = h->next;
		fuse_reply_err(h->req, ENOENT);
		free(h->name);
		free(h);
	}
	if (c->started) {
		pthread_join(c->thread, NULL);
		c->started = false;
	}
	reap(c);
	if (c->noted && !again)
		log_notice("compile ahead: %zu sources queued, %zu compiled and stored (%zu were "
			   "there, %zu failed), %zu left to Python, %zu dropped, %zu lookups "
			   "waited for a compile; compiler CPU %ld ms",
			   c->noted, c->stored, c->present, c->failed, c->python, c->dropped,
			   c->waited, c->cpu_ms);
}

struct compile *compile_free(struct compile *c)
{
	if (!c)
		return NULL;
	compile_stop(c);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->state);
	free(c->ring);
	free(c);
	return NULL;
}
