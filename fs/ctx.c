/* ctx: preparing a mount — cache, fetch engine, metadata, tree. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetch/util/log.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

struct fs_early {
	struct cache *cache;
	struct http_engine *http;
	struct catalog *cat;
	struct wheel_prefetch *pf;
};

static int open_cache(const char *dir, struct cache **ret, char *err, size_t errlen)
{
	int r = mkdir_p(dir, 0755);
	if (r == 0)
		r = cache_open(dir, ret);
	if (r < 0)
		snprintf(err, errlen, "cache directory \"%s\": %s", dir, strerror(-r));
	return r;
}

static struct http_engine *start_engine(char *err, size_t errlen)
{
	struct http_engine *e = http_engine_new(NULL);
	if (!e)
		snprintf(err, errlen, "cannot start the fetch engine");
	return e;
}

int fs_early_start(const char *cache_dir, const struct fs_wheel *guess, size_t n,
		   struct fs_early **ret, char *err, size_t errlen)
{
	struct fs_early *e = xcalloc(1, sizeof(*e));
	int r = open_cache(cache_dir, &e->cache, err, errlen);
	if (r == 0 && !(e->http = start_engine(err, errlen)))
		r = -EIO;
	char *dbpath = xasprintf("%s/catalog.db", cache_dir);
	/* a new cache has nothing to look up: the tails go out before the
	 * catalog is created (a few ms of SQLite) */
	if (r == 0 && access(dbpath, F_OK) < 0 && errno == ENOENT)
		e->pf = wheel_prefetch_start(e->http, e->cache, NULL, guess, n);
	if (r == 0)
		r = catalog_open(dbpath, &e->cat, err, errlen);
	free(dbpath);
	if (r < 0) {
		fs_early_free(e);
		return r;
	}
	if (!e->pf)
		e->pf = wheel_prefetch_start(e->http, e->cache, e->cat, guess, n);
	*ret = e;
	return 0;
}

struct fs_early *fs_early_free(struct fs_early *e)
{
	if (!e)
		return NULL;
	e->pf = wheel_prefetch_free(e->pf); /* before the engine stops */
	e->http = http_engine_free(e->http);
	e->cat = catalog_close(e->cat);
	cache_close(e->cache);
	free(e);
	return NULL;
}

int fs_prepare(const struct fs_config *cfg, struct fs_ctx **ret, char *err, size_t errlen)
{
	uint64_t t0 = now_ns();
	struct fs_ctx *ctx = xcalloc(1, sizeof(*ctx));
	struct fs_early *early = cfg->early;
	int r;

	ctx->cfg = *cfg;
	ctx->cfg.early = NULL;
	ctx->cache_dir = xstrdup(cfg->cache_dir);
	if (early) {
		/* the cache, engine and catalog are ready, some tails in flight */
		ctx->cache = early->cache;
		ctx->http = early->http;
		early->cache = NULL;
		early->http = NULL;
	} else {
		r = open_cache(ctx->cache_dir, &ctx->cache, err, errlen);
		if (r < 0)
			goto fail;
		ctx->http = start_engine(err, errlen);
		if (!ctx->http) {
			r = -EIO;
			goto fail;
		}
	}

	ctx->wheels = xcalloc(cfg->nwheels ? cfg->nwheels : 1, sizeof(*ctx->wheels));
	ctx->twheels = xcalloc(cfg->nwheels ? cfg->nwheels : 1, sizeof(*ctx->twheels));
	for (size_t i = 0; i < cfg->nwheels; i++) {
		ctx->wheels[i].spec = &cfg->wheels[i];
		wheel_catalog_key(cfg->wheels[i].sha256, cfg->wheels[i].url, ctx->wheels[i].key);
		pthread_mutex_init(&ctx->wheels[i].lock, NULL);
		/* A whole copy left by an earlier mount (server without Range). */
		char *p = cache_wheel_path(ctx->cache, cfg->wheels[i].sha256);
		if (http_is_remote(cfg->wheels[i].url) && access(p, R_OK) == 0)
			ctx->wheels[i].local_path = p;
		else
			free(p);
	}
	log_trace("prepare: cache and engine ready");
	r = wheel_load_all(ctx, early ? early->cat : NULL, early ? early->pf : NULL, err, errlen);
	if (early) {
		early->cat = NULL; /* taken */
		early->pf = wheel_prefetch_free(early->pf); /* cancels the tails not used */
	}
	if (r < 0)
		goto fail;
	log_trace("prepare: metadata loaded");

	for (size_t i = 0; i < cfg->nwheels; i++)
		ctx->twheels[i] = (struct tree_wheel){cfg->wheels[i].filename,
						      &ctx->wheels[i].meta,
						      cfg->wheels[i].requested};
	struct tree_opts topts = {
		.venv_root = cfg->venv_root,
		.installer = cfg->installer ? cfg->installer : "sitefs",
		.py = cfg->py,
		.mtime = (int64_t)time(NULL),
	};
	r = tree_build(&topts, ctx->twheels, cfg->nwheels, &ctx->tree, err, errlen);
	if (r < 0)
		goto fail;
	log_trace("prepare: tree built (%zu nodes)", ctx->tree->n);
	/* the catalog rows were written meanwhile: a mount that is visible has
	 * stored what it fetched, for the next one (fs_free joins the writer) */
	catalog_writer_wait(ctx->catalog_writer);
	log_trace("prepare: catalog written");
	for (size_t w = 0; w < cfg->nwheels; w++) {
		size_t ne = ctx->wheels[w].meta.cd ? ctx->wheels[w].meta.cd->n : 0;
		ctx->wheels[w].entry_node = xmalloc((ne ? ne : 1) * sizeof(uint32_t));
		memset(ctx->wheels[w].entry_node, 0xff, (ne ? ne : 1) * sizeof(uint32_t));
	}
	for (size_t i = 0; i < ctx->tree->n; i++) {
		const struct tree_node *nd = &ctx->tree->nodes[i];
		if (nd->kind == TREE_BODY)
			ctx->wheels[nd->body.wheel].entry_node[nd->body.entry] = (uint32_t)i;
	}
	/* Fills: SITEFS_FILL_TIMEOUT seconds (+1 s per MiB compressed) before a
	 * stalled fill is given up (0: never); SITEFS_STREAM_MIN bytes from
	 * which bodies are served as they arrive (0: never). */
	ctx->fill_timeout_s = 120;
	ctx->stream_min = 16u << 20;
	const char *ev = getenv("SITEFS_FILL_TIMEOUT");
	if (ev && *ev)
		ctx->fill_timeout_s = (unsigned)strtoul(ev, NULL, 10);
	ev = getenv("SITEFS_STREAM_MIN");
	if (ev && *ev)
		ctx->stream_min = strtoull(ev, NULL, 10);
	/* SITEFS_OPEN_REQUESTS=1: answer open/release as kernels without
	 * FUSE_NO_OPEN_SUPPORT need (ops.c); tests cover both paths */
	ev = getenv("SITEFS_OPEN_REQUESTS");
	ctx->open_requests = ev && strcmp(ev, "1") == 0;
	const char *np = getenv("SITEFS_PYC");
	if (!np || strcmp(np, "0") != 0)
		ctx->pyc = pyc_new(ctx);
	ctx->compile = compile_new(ctx); /* before any fill thread may look */
	for (size_t i = 0; i < ctx->tree->nwarnings; i++)
		log_warn("%s", ctx->tree->warnings[i]);

	struct http_stats hs;
	http_get_stats(ctx->http, &hs);
	ctx->stats.wheels = cfg->nwheels;
	ctx->stats.requests = hs.requests;
	ctx->stats.wire_bytes = hs.wire_bytes;
	ctx->stats.elapsed_ns = now_ns() - t0;
	if (cfg->profile) /* after the stats: its requests are not the preparation's */
		ctx->profile = profile_open(ctx, cfg->profile);
	ctx->ahead = ahead_new(ctx);
	fs_early_free(early);
	*ret = ctx;
	return 0;
fail:
	fs_early_free(early); /* before fs_free: its tails use the engine */
	fs_free(ctx);
	return r;
}

struct fs_ctx *fs_free(struct fs_ctx *ctx)
{
	if (!ctx)
		return NULL;
	ctx->profile = profile_close(ctx->profile); /* uses the engine and the cache */
	ctx->ahead = ahead_free(ctx->ahead); /* its waiters: every fill has ended */
	ctx->catalog_writer = catalog_writer_join(ctx->catalog_writer); /* reads the metas */
	ctx->http = http_engine_free(ctx->http);
	ctx->compile = compile_free(ctx->compile); /* seeds into the store */
	ctx->pyc = pyc_free(ctx->pyc);
	for (size_t i = 0; ctx->wheels && i < ctx->cfg.nwheels; i++) {
		wheel_meta_clear(&ctx->wheels[i].meta);
		free(ctx->wheels[i].local_path);
		free(ctx->wheels[i].entry_node);
		pthread_mutex_destroy(&ctx->wheels[i].lock);
	}
	free(ctx->wheels);
	free(ctx->twheels);
	tree_free(ctx->tree);
	cache_close(ctx->cache);
	free(ctx->cache_dir);
	free(ctx);
	return NULL;
}

const struct tree *fs_tree(const struct fs_ctx *ctx)
{
	return ctx->tree;
}

void fs_get_prepare_stats(const struct fs_ctx *ctx, struct fs_prepare_stats *ret)
{
	*ret = ctx->stats;
}
