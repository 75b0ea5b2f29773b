/* tags: wheel filenames (PEP 427/491) and PEP 425 tag matching.
 *
 * The interpreter's supported tags and their priorities come from
 * interp.c (which mirrors packaging.tags.sys_tags()); this file only splits
 * filenames and looks tags up. */
#include "resolver/tags.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fetch/util/util.h"
#include "resolver/interp.h"

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Splits a compressed tag set "py2.py3" into lower-case parts; NULL if a
 * part is empty or has characters other than [A-Za-z0-9_]. */
static char **split_tags(const char *s, size_t len, size_t *ret_n)
{
	size_t n = 1;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '.')
			n++;
	char **v = xcalloc(n, sizeof(*v));
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '.') {
			if (!is_alnum(s[i]) && s[i] != '_')
				goto bad;
			continue;
		}
		if (i == start)
			goto bad;
		v[k] = xstrndup(s + start, i - start);
		for (char *c = v[k]; *c; c++)
			*c = lower(*c);
		k++;
		start = i + 1;
	}
	*ret_n = n;
	return v;
bad:
	free_list(v, k);
	return NULL;
}

int wheelname_parse(const char *filename, struct wheel_name *ret)
{
	if (!filename || !str_endswith(filename, ".whl"))
		return -EINVAL;
	size_t len = strlen(filename) - 4;
	const char *part[6];
	size_t plen[6];
	size_t n = 0, start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && filename[i] != '-')
			continue;
		if (n == 6)
			return -EINVAL;
		part[n] = filename + start;
		plen[n] = i - start;
		if (plen[n] == 0)
			return -EINVAL;
		n++;
		start = i + 1;
	}
	if (n != 5 && n != 6)
		return -EINVAL;

	/* distribution: [A-Za-z0-9._]+ without "__" (as packaging checks) */
	for (size_t i = 0; i < plen[0]; i++) {
		char c = part[0][i];
		if (!is_alnum(c) && c != '_' && c != '.')
			return -EINVAL;
		if (c == '_' && i + 1 < plen[0] && part[0][i + 1] == '_')
			return -EINVAL;
	}
	/* version: the characters a PEP 440 version may contain after escaping */
	for (size_t i = 0; i < plen[1]; i++) {
		char c = part[1][i];
		if (!is_alnum(c) && c != '.' && c != '_' && c != '+' && c != '!')
			return -EINVAL;
	}
	/* build tag: starts with a digit */
	if (n == 6) {
		if (part[2][0] < '0' || part[2][0] > '9')
			return -EINVAL;
		for (size_t i = 0; i < plen[2]; i++)
			if (!is_alnum(part[2][i]) && part[2][i] != '_' && part[2][i] != '.')
				return -EINVAL;
	}

	struct wheel_name wn = {0};
	size_t t = n - 3;
	wn.py = split_tags(part[t], plen[t], &wn.npy);
	wn.abi = split_tags(part[t + 1], plen[t + 1], &wn.nabi);
	wn.plat = split_tags(part[t + 2], plen[t + 2], &wn.nplat);
	if (!wn.py || !wn.abi || !wn.plat) {
		wheelname_free(&wn);
		return -EINVAL;
	}
	wn.dist = xstrndup(part[0], plen[0]);
	wn.version = xstrndup(part[1], plen[1]);
	wn.build = n == 6 ? xstrndup(part[2], plen[2]) : NULL;
	*ret = wn;
	return 0;
}

void wheelname_free(struct wheel_name *wn)
{
	if (!wn)
		return;
	free(wn->dist);
	free(wn->version);
	free(wn->build);
	free_list(wn->py, wn->py ? wn->npy : 0);
	free_list(wn->abi, wn->abi ? wn->nabi : 0);
	free_list(wn->plat, wn->plat ? wn->nplat : 0);
	memset(wn, 0, sizeof(*wn));
}

int tags_wheel_priority(const struct interp *ip, const struct wheel_name *wn)
{
	int best = -1;
	char small[256];
	for (size_t i = 0; i < wn->npy; i++) {
		for (size_t j = 0; j < wn->nabi; j++) {
			for (size_t k = 0; k < wn->nplat; k++) {
				int n = snprintf(small, sizeof(small), "%s-%s-%s", wn->py[i],
						 wn->abi[j], wn->plat[k]);
				int prio;
				if (n >= 0 && (size_t)n < sizeof(small)) {
					prio = interp_tag_priority(ip, small);
				} else {
					char *big = xasprintf("%s-%s-%s", wn->py[i], wn->abi[j],
							      wn->plat[k]);
					prio = interp_tag_priority(ip, big);
					free(big);
				}
				if (prio >= 0 && (best < 0 || prio < best))
					best = prio;
			}
		}
	}
	return best;
}

char *tags_normalize_name(const char *name)
{
	size_t n = strlen(name);
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (c == '-' || c == '_' || c == '.') {
			out[o++] = '-';
			while (i + 1 < n &&
			       (name[i + 1] == '-' || name[i + 1] == '_' || name[i + 1] == '.'))
				i++;
			continue;
		}
		out[o++] = lower(c);
	}
	out[o] = 0;
	return out;
}
