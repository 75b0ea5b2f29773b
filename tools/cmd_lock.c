/* cmd_lock: sitefs lock [-r FILE]... [REQ]... [-c FILE]... [index options]
 *                       [--python PY] [--pre] [-o pylock.toml]
 *
 * Reads the requirements, asks the interpreter once, resolves against the
 * indexes and writes a PEP 751 lock naming one wheel per package.  The
 * same steps serve `sitefs run` (lock_resolve below). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/http.h"
#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "resolver/index.h"
#include "resolver/lockwrite.h"
#include "resolver/reqfile.h"
#include "resolver/resolve.h"
#include "resolver/source.h"
#include "tools/tools.h"

#define DEFAULT_INDEX "https://pypi.org/simple"

static void strv_add(const char ***v, size_t *n, const char *s)
{
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = s;
}

void lock_args_free(struct lock_args *a)
{
	free(a->reqfiles);
	free(a->reqs);
	free(a->constraints);
	free(a->extra_index_urls);
	free(a->find_links);
	memset(a, 0, sizeof(*a));
}

int lock_args_option(struct lock_args *a, int c, const char *arg)
{
	switch (c) {
	case 'r':
		strv_add(&a->reqfiles, &a->nreqfiles, arg);
		return 1;
	case 'c':
		strv_add(&a->constraints, &a->nconstraints, arg);
		return 1;
	case 'i':
		a->index_url = arg;
		return 1;
	case 'E':
		strv_add(&a->extra_index_urls, &a->nextra_index_urls, arg);
		return 1;
	case 'f':
		strv_add(&a->find_links, &a->nfind_links, arg);
		return 1;
	case 'N':
		a->no_index = true;
		return 1;
	case 'R':
		a->pre = true;
		return 1;
	case 'P':
		a->python = arg;
		return 1;
	case 'C':
		a->cache_dir = arg;
		return 1;
	case 'W':
		strv_add(&a->reqs, &a->nreqs, arg);
		return 1;
	case 'v':
		a->verbose = true;
		return 1;
	default:
		return 0;
	}
}

const char lock_args_help[] =
    "  -r, --requirement FILE  requirements file (repeatable)\n"
    "  -c, --constraint FILE   constraints file (repeatable)\n"
    "  -i, --index-url URL     main index (default: " DEFAULT_INDEX ")\n"
    "  --extra-index-url URL   more indexes; the first one that has a project wins\n"
    "  -f, --find-links DIR|URL  directory of wheels or an HTML page of links\n"
    "  --no-index              ignore every index (only --find-links)\n"
    "  --pre                   allow pre-releases\n"
    "  --python PY             target interpreter (default: python3 on PATH)\n"
    "  --cache-dir DIR         cache (default: $SITEFS_CACHE_DIR, ~/.cache/sitefs)\n";

static const char *env_fn(void *ud, const char *key) { return interp_marker(ud, key); }

/* Every input that decides the result, in one string (for run's lock cache). */
static char *inputs_text(const struct reqfile *rf, const struct interp *ip, char **idx, size_t nidx,
			 char **fl, size_t nfl, bool pre)
{
	struct buf b;

	buf_init(&b);
	buf_printf(&b, "sitefs %s\n%s %s\npre=%d\n", SITEFS_VERSION, ip->executable, ip->version,
		   pre);
	for (size_t i = 0; i < ip->ntags && i < 8; i++)
		buf_printf(&b, "tag %s\n", ip->tags[i]);
	for (size_t i = 0; i < nidx; i++)
		buf_printf(&b, "index %s\n", idx[i]);
	for (size_t i = 0; i < nfl; i++)
		buf_printf(&b, "find-links %s\n", fl[i]);
	for (size_t i = 0; i < rf->nreqs; i++) {
		buf_printf(&b, "%s %s", rf->reqs[i].constraint ? "c" : "r", rf->reqs[i].text);
		for (size_t k = 0; k < rf->reqs[i].nsha256; k++)
			buf_printf(&b, " %s", rf->reqs[i].sha256[k]);
		buf_puts(&b, "\n");
	}
	return (char *)buf_steal(&b, NULL);
}

static char *env_marker(const struct interp *ip)
{
	static const char *const keys[] = {"sys_platform", "platform_machine",
					   "implementation_name", "python_full_version"};
	struct buf b;

	buf_init(&b);
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const char *v = interp_marker(ip, keys[i]);

		if (v)
			buf_printf(&b, "%s%s == '%s'", b.len ? " and " : "", keys[i], v);
	}
	return (char *)buf_steal(&b, NULL);
}

int lock_resolve(const struct lock_args *a, const struct interp *ip, const char *cache_dir,
		 char **ret_toml, char **ret_key, char *err, size_t errlen)
{
	struct reqfile rf = {0};
	struct http_engine *e = NULL;
	struct index_client *ic = NULL;
	struct source *src = NULL;
	struct resolve_result res = {0};
	struct resolve_input *in = NULL;
	size_t nin = 0;
	char **idx = NULL, **fl = NULL;
	size_t nidx = 0, nfl = 0;
	char *explain = NULL;
	struct lockwrite_pkg *lp = NULL;
	struct index_file **files = NULL;
	uint64_t t0 = now_ns();
	_cleanup_free_ char *envm = NULL;
	int r = 0;

	for (size_t i = 0; i < a->nreqfiles && r == 0; i++)
		r = reqfile_load(&rf, a->reqfiles[i], false, err, errlen);
	for (size_t i = 0; i < a->nconstraints && r == 0; i++)
		r = reqfile_load(&rf, a->constraints[i], true, err, errlen);
	for (size_t i = 0; i < a->nreqs && r == 0; i++)
		r = reqfile_add(&rf, a->reqs[i], false, err, errlen);
	if (r < 0)
		goto out;
	if (!a->no_index && !rf.no_index) {
		/* the command line wins over a file's --index-url */
		const char *main_idx = a->index_url   ? a->index_url
				       : rf.index_url ? rf.index_url
						      : DEFAULT_INDEX;

		idx = xcalloc(a->nextra_index_urls + rf.nextra_index_urls + 2, sizeof(char *));
		idx[nidx++] = xstrdup(main_idx);
		for (size_t i = 0; i < a->nextra_index_urls; i++)
			idx[nidx++] = xstrdup(a->extra_index_urls[i]);
		for (size_t i = 0; i < rf.nextra_index_urls; i++)
			idx[nidx++] = xstrdup(rf.extra_index_urls[i]);
	}
	fl = xcalloc(a->nfind_links + rf.nfind_links + 1, sizeof(char *));
	for (size_t i = 0; i < a->nfind_links; i++) {
		char *abs =
		    http_is_remote(a->find_links[i]) ? NULL : realpath(a->find_links[i], NULL);

		fl[nfl++] = abs ? abs : xstrdup(a->find_links[i]);
	}
	for (size_t i = 0; i < rf.nfind_links; i++)
		fl[nfl++] = xstrdup(rf.find_links[i]);

	if (ret_key) {
		_cleanup_free_ char *t = inputs_text(&rf, ip, idx, nidx, fl, nfl, a->pre || rf.pre);
		uint8_t sha[32];
		char hex[65];

		sha256_buf(t, strlen(t), sha);
		hex_encode(sha, 32, hex);
		*ret_key = xstrdup(hex);
		if (!ret_toml)
			goto out;
	}

	/* Top-level requirements whose markers apply here. */
	in = xcalloc(rf.nreqs + 1, sizeof(*in));
	for (size_t i = 0; i < rf.nreqs; i++) {
		struct reqfile_req *q = &rf.reqs[i];

		if (q->req.marker && pep508_marker_eval(q->req.marker, env_fn, (void *)ip) <= 0)
			continue;
		in[nin++] = (struct resolve_input){.text = q->text,
						   .where = xasprintf("%s:%d", q->file, q->line),
						   .req = &q->req,
						   .constraint = q->constraint};
	}
	/* A resolve has a few dozen small requests in flight at most: fewer
	 * connections than a mount's metadata wave (measured: 54 vs 61 ms
	 * median cold with 48). */
	struct http_opts ho = {.max_host_connections = 16};

	e = http_engine_new(&ho);
	if (!e) {
		snprintf(err, errlen, "cannot start the fetch engine");
		r = -EIO;
		goto out;
	}
	src = source_new(ip, &rf, a->pre || rf.pre);
	struct index_config cfg = {.index_urls = (const char *const *)idx,
				   .nindex = nidx,
				   .find_links = (const char *const *)fl,
				   .nfind_links = nfl,
				   .cache_dir = cache_dir,
				   .hooks = source_hooks(src)};

	ic = index_client_new(&cfg, e, err, errlen);
	if (!ic) {
		r = -EINVAL;
		goto out;
	}
	source_set_client(src, ic);
	struct resolve_opts ro = {.pre = a->pre || rf.pre, .env = env_fn, .env_ud = (void *)ip};

	r = resolve_run(source_provider(src), in, nin, &ro, &res, &explain);
	if (r < 0) {
		snprintf(err, errlen, "%s", explain ? explain : strerror(-r));
		size_t n = strlen(err);
		while (n && err[n - 1] == '\n')
			err[--n] = '\0';
		goto out;
	}
	files = xcalloc(res.npicks + 1, sizeof(*files));
	lp = xcalloc(res.npicks + 1, sizeof(*lp));
	for (size_t i = 0; i < res.npicks; i++) {
		const char *index = NULL;

		if (source_file(src, res.picks[i].name, res.picks[i].idx, &files[i], &index) < 0) {
			snprintf(err, errlen, "internal error: no file for %s", res.picks[i].name);
			r = -EIO;
			goto out;
		}
		lp[i].index = index;
	}
	r = index_complete_files(ic, files, res.npicks, err, errlen);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < res.npicks; i++) {
		const struct index_file *f = files[i];
		bool remote = http_is_remote(f->url);

		lp[i].name = res.picks[i].name;
		lp[i].version = res.picks[i].version;
		lp[i].index = lp[i].index ? index_redact(lp[i].index) : NULL;
		lp[i].filename = f->filename;
		lp[i].url = remote ? index_redact(f->url) : NULL;
		lp[i].path = remote ? NULL : xstrdup(f->url);
		lp[i].size = f->size;
		memcpy(lp[i].sha256, f->sha256, 32);
	}
	envm = env_marker(ip);
	struct lockwrite_meta meta = {.environment = envm};

	*ret_toml = lockwrite_toml(lp, res.npicks, &meta);
	if (a->verbose) {
		struct http_stats hs;
		struct index_stats is;

		http_get_stats(e, &hs);
		index_get_stats(ic, &is);
		fprintf(
		    stderr,
		    "sitefs lock: %zu packages, %zu steps, %zu backjumps; %u pages, %u metadata "
		    "files, %u from the cache, %u wheel range reads, %llu HTTP requests; "
		    "%.1f ms\n",
		    res.npicks, res.steps, res.backjumps, is.pages, is.metadata_files,
		    is.metadata_cached, is.metadata_ranges, (unsigned long long)hs.requests,
		    (now_ns() - t0) / 1e6);
	}
out:
	if (lp)
		for (size_t i = 0; i < res.npicks; i++) {
			free((char *)lp[i].index);
			free((char *)lp[i].url);
			free((char *)lp[i].path);
		}
	free(lp);
	free(files);
	resolve_result_free(&res);
	free(explain);
	index_client_free(ic);
	source_free(src);
	http_engine_free(e);
	for (size_t i = 0; i < nin; i++)
		free((char *)in[i].where);
	free(in);
	for (size_t i = 0; i < nidx; i++)
		free(idx[i]);
	free(idx);
	for (size_t i = 0; i < nfl; i++)
		free(fl[i]);
	free(fl);
	reqfile_free(&rf);
	return r;
}

static void help(FILE *f)
{
	fprintf(f,
		"Usage: sitefs lock [OPTIONS] [REQUIREMENT]...\n\n"
		"Resolve requirements against the indexes for one interpreter and write a\n"
		"PEP 751 pylock.toml naming one wheel per package (url, size, sha256).\n"
		"Same inputs and index give the same bytes.\n\n"
		"Options:\n%s"
		"  -o, --output FILE       write the lock here (default: stdout)\n"
		"  -v, --verbose           print what it took\n"
		"  -h, --help              this text\n",
		lock_args_help);
}

const struct option lock_long_options[] = {
    {"requirement", required_argument, NULL, 'r'},
    {"constraint", required_argument, NULL, 'c'},
    {"index-url", required_argument, NULL, 'i'},
    {"extra-index-url", required_argument, NULL, 'E'},
    {"find-links", required_argument, NULL, 'f'},
    {"no-index", no_argument, NULL, 'N'},
    {"pre", no_argument, NULL, 'R'},
    {"python", required_argument, NULL, 'P'},
    {"cache-dir", required_argument, NULL, 'C'},
    {"output", required_argument, NULL, 'o'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {},
};

int cmd_lock(int argc, char **argv)
{
	struct lock_args a = {.python = "python3"};
	const char *out = NULL;
	char err[8192] = "";
	int c, ret = 1;
	struct interp *ip = NULL;
	char *toml = NULL, *cache_dir = NULL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "r:c:i:f:o:vh", lock_long_options, NULL)) >= 0) {
		if (lock_args_option(&a, c, optarg))
			continue;
		switch (c) {
		case 'o':
			out = optarg;
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
	for (int i = optind; i < argc; i++)
		strv_add(&a.reqs, &a.nreqs, argv[i]);
	if (!a.nreqs && !a.nreqfiles) {
		fprintf(stderr, "sitefs lock: no requirements (give -r FILE or REQUIREMENT)\n\n");
		help(stderr);
		lock_args_free(&a);
		return 2;
	}
	cache_dir = a.cache_dir ? xstrdup(a.cache_dir) : tools_default_cache_dir();
	mkdir_p(cache_dir, 0755);
	int r = interp_query(a.python, cache_dir, &ip, err, sizeof(err));

	if (r < 0) {
		fprintf(stderr, "sitefs lock: interpreter \"%s\": %s\n", a.python,
			err[0] ? err : strerror(-r));
		goto done;
	}
	r = lock_resolve(&a, ip, cache_dir, &toml, NULL, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sitefs lock: %s\n", err[0] ? err : strerror(-r));
		goto done;
	}
	if (out) {
		r = file_write_atomic(out, toml, strlen(toml), 0644);
		if (r < 0) {
			fprintf(stderr, "sitefs lock: cannot write \"%s\": %s\n", out,
				strerror(-r));
			goto done;
		}
	} else if (write_full(STDOUT_FILENO, toml, strlen(toml)) < 0) {
		goto done;
	}
	ret = 0;
done:
	free(toml);
	free(cache_dir);
	interp_free(ip);
	lock_args_free(&a);
	return ret;
}
