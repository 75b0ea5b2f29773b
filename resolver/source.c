/* source: index files -> resolver candidates, plus prefetching (source.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "resolver/pep440.h"
#include "resolver/pep508.h"
#include "resolver/source.h"
#include "resolver/tags.h"

struct scand {
	struct resolve_candidate c;
	struct pep440_version *v;
	char *version;
	char *why; /* unusable reason (owned) */
	struct index_file *f;
};

struct sproj {
	char *name;
	struct index_project *p;
	struct scand *cands;
	size_t ncands;
	struct resolve_candidate *rc; /* the view handed to the resolver */
	bool built;
	struct index_file *direct; /* a direct reference (owned), or NULL */
	struct pep440_spec *hint;  /* top-level specifier, for prefetching */
	char **hashes;		   /* --hash values (hex), borrowed from rf */
	size_t nhashes;
	bool has_hashes;
};

struct source {
	const struct interp *ip;
	const struct reqfile *rf;
	bool pre;
	struct index_client *ic;
	struct resolve_provider pv;
	struct sproj **projs;
	size_t nprojs;
	struct pep440_version *pyver;
};

static struct sproj *sproj_get(struct source *s, const char *name)
{
	_cleanup_free_ char *n = tags_normalize_name(name);

	for (size_t i = 0; i < s->nprojs; i++)
		if (!strcmp(s->projs[i]->name, n))
			return s->projs[i];
	struct sproj *sp = xcalloc(1, sizeof(*sp));

	sp->name = xstrdup(n);
	s->projs = xrealloc(s->projs, (s->nprojs + 1) * sizeof(*s->projs));
	s->projs[s->nprojs++] = sp;
	return sp;
}

static int cmp_cand(const void *a, const void *b)
{
	const struct scand *x = a, *y = b;

	return -pep440_cmp(x->v, y->v);
}

static bool python_ok(const struct source *s, const char *spec_text)
{
	char err[128];

	if (!spec_text || !*spec_text || !s->pyver)
		return true;
	struct pep440_spec *sp = pep440_spec_parse(spec_text, err, sizeof(err));

	if (!sp)
		return true; /* pip ignores a requires-python it cannot parse */
	bool ok = pep440_spec_contains(sp, s->pyver, true);

	pep440_spec_free(sp);
	return ok;
}

static bool hash_ok(const struct sproj *sp, const struct index_file *f)
{
	char hex[65];

	if (!sp->has_hashes)
		return true;
	if (!f->has_sha256)
		return false;
	hex_encode(f->sha256, 32, hex);
	for (size_t i = 0; i < sp->nhashes; i++)
		if (!strcmp(sp->hashes[i], hex))
			return true;
	return false;
}

/* Best file per version; every version gets a candidate, usable or not, so
 * the resolver can say why a version was passed over. */
static void build(struct source *s, struct sproj *sp)
{
	struct index_file *files = sp->direct ? sp->direct : sp->p->files;
	size_t nfiles = sp->direct ? 1 : sp->p->nfiles;
	struct {
		int prio; /* lower is better; yanked files rank after the rest */
		bool sdist_only, wrong_python, wrong_hash, wheels;
	} *best = xcalloc(nfiles + 1, sizeof(*best));

	sp->cands = xcalloc(nfiles + 1, sizeof(*sp->cands));
	for (size_t i = 0; i < nfiles; i++) {
		struct index_file *f = &files[i];
		struct wheel_name wn;
		struct pep440_version *v;
		const char *ver = NULL;
		bool is_wheel = wheelname_parse(f->filename, &wn) == 0;
		_cleanup_free_ char *sver = NULL;

		if (is_wheel) {
			ver = wn.version;
		} else {
			/* sdists: "name-1.0.tar.gz" / ".zip"; only to say why not */
			const char *ext = str_endswith(f->filename, ".tar.gz") ? ".tar.gz"
					  : str_endswith(f->filename, ".zip")  ? ".zip"
									       : NULL;
			const char *dash = strrchr(f->filename, '-');

			if (!ext || !dash)
				continue;
			sver = xstrndup(dash + 1, strlen(dash + 1) - strlen(ext));
			ver = sver;
		}
		v = pep440_parse(ver);
		if (!v) {
			if (is_wheel)
				wheelname_free(&wn);
			continue;
		}
		size_t k;

		for (k = 0; k < sp->ncands; k++)
			if (pep440_cmp(sp->cands[k].v, v) == 0)
				break;
		if (k == sp->ncands) {
			sp->cands[k].v = v;
			sp->cands[k].version = pep440_str(v);
			best[k].prio = -1;
			best[k].sdist_only = true;
			sp->ncands++;
		} else {
			pep440_free(v);
		}
		if (!is_wheel)
			continue;
		best[k].sdist_only = false;
		best[k].wheels = true;
		int prio = tags_wheel_priority(s->ip, &wn);

		wheelname_free(&wn);
		if (prio < 0)
			continue;
		if (!python_ok(s, f->requires_python)) {
			best[k].wrong_python = true;
			continue;
		}
		if (!hash_ok(sp, f)) {
			best[k].wrong_hash = true;
			continue;
		}
		if (f->yanked)
			prio += 1 << 20;
		if (best[k].prio < 0 || prio < best[k].prio) {
			best[k].prio = prio;
			sp->cands[k].f = f;
		}
	}
	for (size_t k = 0; k < sp->ncands; k++) {
		struct scand *c = &sp->cands[k];

		if (!c->f) {
			if (best[k].sdist_only)
				c->why = xstrdup(
				    "has only a source distribution (sitefs installs wheels "
				    "only)");
			else if (best[k].wrong_hash)
				c->why = xstrdup("has no wheel matching the --hash values");
			else if (best[k].wrong_python)
				c->why = xasprintf("requires a Python other than %s",
						   interp_marker(s->ip, "python_full_version"));
			else
				c->why = xasprintf("has no wheel for this interpreter (%s; sitefs "
						   "installs wheels only)",
						   s->ip->ntags ? s->ip->tags[0] : "?");
		}
	}
	qsort(sp->cands, sp->ncands, sizeof(*sp->cands), cmp_cand);
	sp->rc = xcalloc(sp->ncands + 1, sizeof(*sp->rc));
	for (size_t k = 0; k < sp->ncands; k++) {
		struct scand *c = &sp->cands[k];

		sp->rc[k] = (struct resolve_candidate){.version = c->version,
						       .v = c->v,
						       .yanked = c->f && c->f->yanked,
						       .unusable = c->why};
	}
	sp->built = true;
	free(best);
}

/* The candidate we would pick now given only the top-level specifier. */
static struct scand *likely(struct source *s, struct sproj *sp)
{
	for (int pass = s->pre ? 1 : 0; pass < 2; pass++)
		for (size_t k = 0; k < sp->ncands; k++) {
			struct scand *c = &sp->cands[k];

			if (c->why || !c->f || c->f->yanked)
				continue;
			if (sp->hint && !pep440_spec_contains(sp->hint, c->v, pass == 1))
				continue;
			if (!sp->hint && pass == 0 && pep440_is_prerelease(c->v))
				continue;
			return c;
		}
	return NULL;
}

static void on_project(void *ud, struct index_project *p)
{
	struct source *s = ud;
	struct sproj *sp = sproj_get(s, p->name);

	if (sp->direct)
		return;
	sp->p = p;
	if (!sp->built && !p->err)
		build(s, sp);
	struct scand *c = likely(s, sp);

	if (c)
		index_metadata_start(s->ic, p, c->f);
}

static const char *env_noextra(void *ud, const char *key)
{
	const struct source *s = ud;

	return strcmp(key, "extra") ? interp_marker(s->ip, key) : "";
}

static void on_metadata(void *ud, struct index_project *p, struct index_file *f)
{
	struct source *s = ud;
	char why[128];

	for (size_t i = 0; i < f->nrequires_dist; i++) {
		struct pep508_req rq;

		if (pep508_req_parse(f->requires_dist[i], &rq, why, sizeof(why)) < 0)
			continue;
		if (!rq.marker || pep508_marker_eval(rq.marker, env_noextra, s) > 0)
			index_project_start(s->ic, rq.name);
		pep508_req_free(&rq);
	}
}

static int project_of(struct source *s, const char *name, struct sproj **ret, char *err,
		      size_t errlen)
{
	struct sproj *sp = sproj_get(s, name);

	if (!sp->built && sp->direct) {
		build(s, sp);
	} else if (!sp->built) {
		if (!sp->p)
			sp->p = index_project_start(s->ic, name);
		int r = index_project_wait(s->ic, sp->p);

		if (r < 0) {
			snprintf(err, errlen, "%s",
				 sp->p->errmsg[0] ? sp->p->errmsg : strerror(-r));
			return r;
		}
		if (!sp->built)
			build(s, sp);
	}
	*ret = sp;
	return 0;
}

static int pv_candidates(void *ud, const char *name, const struct resolve_candidate **ret,
			 size_t *ret_n, char *err, size_t errlen)
{
	struct sproj *sp;
	int r = project_of(ud, name, &sp, err, errlen);

	if (r < 0)
		return r;
	*ret = sp->rc;
	*ret_n = sp->ncands;
	return 0;
}

static int pv_deps(void *ud, const char *name, size_t idx, const char *const **ret, size_t *ret_n,
		   char *err, size_t errlen)
{
	struct source *s = ud;
	struct sproj *sp;
	int r = project_of(s, name, &sp, err, errlen);

	if (r < 0)
		return r;
	if (idx >= sp->ncands || !sp->cands[idx].f)
		return -EINVAL;
	struct index_file *f = sp->cands[idx].f;

	r = index_metadata_wait(s->ic, sp->p, f);
	if (r < 0) {
		snprintf(err, errlen, "%s %s: cannot read its metadata: %s", name,
			 sp->cands[idx].version, f->meta_errmsg ? f->meta_errmsg : strerror(-r));
		return r;
	}
	*ret = (const char *const *)f->requires_dist;
	*ret_n = f->nrequires_dist;
	return 0;
}

static void pv_hint(void *ud, const char *name)
{
	struct source *s = ud;
	struct sproj *sp = sproj_get(s, name);

	if (!sp->direct && !sp->p)
		sp->p = index_project_start(s->ic, name);
}

static void pv_hint_candidate(void *ud, const char *name, size_t idx)
{
	struct source *s = ud;
	struct sproj *sp = sproj_get(s, name);

	if (sp->built && idx < sp->ncands && sp->cands[idx].f)
		index_metadata_start(s->ic, sp->p, sp->cands[idx].f);
}

/* A "name @ url" requirement: the only candidate of its project. */
static void add_direct(struct sproj *sp, const char *url)
{
	struct index_file *f = xcalloc(1, sizeof(*f));
	const char *u = !strncmp(url, "file://", 7) ? url + 7 : url;
	const char *base = strrchr(u, '/');
	size_t n;

	base = base ? base + 1 : u;
	n = strcspn(base, "#?");
	f->filename = xstrndup(base, n);
	f->url = xstrndup(u, strcspn(u, "#"));
	const char *frag = strstr(u, "#sha256=");

	if (frag && strlen(frag + 8) >= 64 && hex_decode(frag + 8, f->sha256, 32) == 0)
		f->has_sha256 = true;
	struct stat st;

	if (u[0] == '/' && stat(u, &st) == 0)
		f->size = (uint64_t)st.st_size;
	sp->direct = f;
}

struct source *source_new(const struct interp *ip, const struct reqfile *rf, bool pre)
{
	struct source *s = xcalloc(1, sizeof(*s));
	char err[128];

	s->ip = ip;
	s->rf = rf;
	s->pre = pre;
	const char *pv = interp_marker(ip, "python_full_version");

	s->pyver = pv ? pep440_parse(pv) : NULL;
	s->pv = (struct resolve_provider){.ud = s,
					  .candidates = pv_candidates,
					  .dependencies = pv_deps,
					  .hint = pv_hint,
					  .hint_candidate = pv_hint_candidate};
	for (size_t i = 0; rf && i < rf->nreqs; i++) {
		const struct reqfile_req *r = &rf->reqs[i];
		struct sproj *sp = sproj_get(s, r->req.name);

		if (r->req.url && !sp->direct)
			add_direct(sp, r->req.url);
		if (r->nsha256) {
			sp->has_hashes = true;
			sp->hashes =
			    xrealloc(sp->hashes, (sp->nhashes + r->nsha256) * sizeof(char *));
			for (size_t k = 0; k < r->nsha256; k++)
				sp->hashes[sp->nhashes++] = r->sha256[k];
		}
		if (!r->constraint && r->req.specifier[0] && !sp->hint)
			sp->hint = pep440_spec_parse(r->req.specifier, err, sizeof(err));
	}
	return s;
}

struct index_hooks source_hooks(struct source *s)
{
	return (struct index_hooks){
	    .ud = s, .project_ready = on_project, .metadata_ready = on_metadata};
}

void source_set_client(struct source *s, struct index_client *ic) { s->ic = ic; }

const struct resolve_provider *source_provider(struct source *s) { return &s->pv; }

int source_file(struct source *s, const char *name, size_t idx, struct index_file **ret_f,
		const char **ret_index)
{
	_cleanup_free_ char *n = tags_normalize_name(name);

	for (size_t i = 0; i < s->nprojs; i++) {
		struct sproj *sp = s->projs[i];

		if (strcmp(sp->name, n) || idx >= sp->ncands || !sp->cands[idx].f)
			continue;
		*ret_f = sp->cands[idx].f;
		*ret_index =
		    sp->direct || !sp->p || sp->cands[idx].f->find_links ? NULL : sp->p->index_url;
		return 0;
	}
	return -ENOENT;
}

struct source *source_free(struct source *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < s->nprojs; i++) {
		struct sproj *sp = s->projs[i];

		for (size_t k = 0; k < sp->ncands; k++) {
			pep440_free(sp->cands[k].v);
			free(sp->cands[k].version);
			free(sp->cands[k].why);
		}
		free(sp->cands);
		free(sp->rc);
		if (sp->direct) {
			index_file_clear(sp->direct);
			free(sp->direct);
		}
		pep440_spec_free(sp->hint);
		free(sp->hashes);
		free(sp->name);
		free(sp);
	}
	free(s->projs);
	pep440_free(s->pyver);
	free(s);
	return NULL;
}
