/* lockplan: from a parsed lock file and an interpreter to the list of
 * wheels to mount — marker evaluation and wheel selection by PEP 425 tags. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fetch/util/util.h"
#include "resolver/pep508.h"
#include "resolver/tags.h"
#include "tools/tools.h"

static const char *marker_env(void *ud, const char *key)
{
	const struct interp *ip = ud;
	if (!strcmp(key, "extra"))
		return ""; /* lock-level markers do not name extras of a requirement */
	return interp_marker(ip, key);
}

/* 1 if the package applies to this interpreter, 0 if not, -EINVAL. */
static int package_applies(const struct lock_file *lf, const struct lock_package *p,
			   const struct interp *ip, char *err, size_t errlen)
{
	if (!p->marker)
		return 1;
	char why[256];
	struct pep508_marker *m = pep508_marker_parse(p->marker, why, sizeof(why));
	if (!m) {
		snprintf(err, errlen, "%s:%d: package '%s': bad marker \"%s\": %s", lf->path,
			 p->line, p->name, p->marker, why);
		return -EINVAL;
	}
	int r = pep508_marker_eval(m, marker_env, (void *)ip);
	pep508_marker_free(m);
	if (r < 0)
		snprintf(err, errlen, "%s:%d: package '%s': cannot evaluate marker \"%s\"",
			 lf->path, p->line, p->name, p->marker);
	return r;
}

static void list_wheels(const struct lock_package *p, char *out, size_t outlen)
{
	size_t used = 0;
	out[0] = 0;
	for (size_t i = 0; i < p->nwheels && used < outlen; i++) {
		int n = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "",
				 p->wheels[i].filename);
		if (n < 0)
			break;
		used += (size_t)n;
	}
}

int lockplan_build(const struct lock_file *lf, const struct interp *ip, struct fs_wheel **ret,
		   size_t *ret_n, char *err, size_t errlen)
{
	struct fs_wheel *out = xcalloc(lf->npkgs ? lf->npkgs : 1, sizeof(*out));
	char **names = xcalloc(lf->npkgs ? lf->npkgs : 1, sizeof(*names));
	size_t n = 0;
	int r = 0;

	for (size_t i = 0; i < lf->npkgs && r == 0; i++) {
		const struct lock_package *p = &lf->pkgs[i];
		const char *ver = p->version ? p->version : "(no version)";
		r = package_applies(lf, p, ip, err, errlen);
		if (r <= 0)
			continue; /* r == 0: not for this environment */
		r = 0;
		if (p->nwheels == 0) {
			snprintf(err, errlen,
				 "%s:%d: package '%s' %s has %s: sitefs installs wheels only",
				 lf->path, p->line, p->name, ver,
				 p->has_sdist ? "only a source distribution" : "no wheels");
			r = -EINVAL;
			break;
		}
		const struct lock_wheel *best = NULL;
		int best_prio = -1;
		for (size_t k = 0; k < p->nwheels; k++) {
			struct wheel_name wn;
			if (wheelname_parse(p->wheels[k].filename, &wn) < 0) {
				snprintf(err, errlen, "%s:%d: package '%s': \"%s\" is not a wheel filename",
					 lf->path, p->wheels[k].line, p->name, p->wheels[k].filename);
				r = -EINVAL;
				break;
			}
			int prio = tags_wheel_priority(ip, &wn);
			wheelname_free(&wn);
			if (prio >= 0 && (best_prio < 0 || prio < best_prio)) {
				best = &p->wheels[k];
				best_prio = prio;
			}
		}
		if (r < 0)
			break;
		if (!best) {
			char list[512];
			list_wheels(p, list, sizeof(list));
			snprintf(err, errlen,
				 "%s:%d: package '%s' %s has no wheel for this interpreter (%s, "
				 "best tag %s); wheels in the lock: %s",
				 lf->path, p->line, p->name, ver, ip->executable,
				 ip->ntags ? ip->tags[0] : "?", list);
			r = -EINVAL;
			break;
		}
		struct fs_wheel *w = &out[n];
		w->filename = best->filename;
		w->url = best->url ? best->url : best->path;
		w->size = best->size;
		if (!best->has_size && best->path) {
			struct stat st;
			if (stat(best->path, &st) < 0) {
				snprintf(err, errlen, "%s:%d: package '%s': wheel \"%s\": %s",
					 lf->path, best->line, p->name, best->path, strerror(errno));
				r = -EINVAL;
				break;
			}
			w->size = (uint64_t)st.st_size;
		} else if (!best->has_size) {
			snprintf(err, errlen, "%s:%d: package '%s': wheel \"%s\" has no size",
				 lf->path, best->line, p->name, best->filename);
			r = -EINVAL;
			break;
		}
		memcpy(w->sha256, best->sha256, 32);
		w->requested = p->requested;
		names[n] = tags_normalize_name(p->name);
		for (size_t k = 0; k < n; k++)
			if (!strcmp(names[k], names[n])) {
				snprintf(err, errlen,
					 "%s:%d: package '%s' appears twice for this environment",
					 lf->path, p->line, p->name);
				r = -EINVAL;
			}
		n++;
	}
	for (size_t k = 0; k < n; k++)
		free(names[k]);
	free(names);
	if (r < 0) {
		free(out);
		return r;
	}
	*ret = out;
	*ret_n = n;
	return 0;
}

void lockplan_guess(const struct lock_file *lf, struct fs_wheel **ret, size_t *ret_n)
{
	struct fs_wheel *out = xcalloc(lf->npkgs ? lf->npkgs : 1, sizeof(*out));
	size_t n = 0;
	for (size_t i = 0; i < lf->npkgs; i++) {
		const struct lock_package *p = &lf->pkgs[i];
		if (p->marker || p->nwheels != 1 || !p->wheels[0].url || !p->wheels[0].has_size ||
		    !p->wheels[0].has_sha256)
			continue;
		const struct lock_wheel *w = &p->wheels[0];
		out[n++] = (struct fs_wheel){.filename = w->filename, .url = w->url,
					     .size = w->size};
		memcpy(out[n - 1].sha256, w->sha256, 32);
	}
	*ret = out;
	*ret_n = n;
}
