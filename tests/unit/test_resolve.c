/* test_resolve: the resolver on synthetic graphs (no index): newest-first
 * choices, extras, markers, pre-releases, yanked versions, backtracking that
 * needs learning, and the explanation of unsatisfiable sets. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/util/util.h"
#include "resolver/resolve.h"
#include "check.h"

/* One line per release: "name version [flags] | dep | dep ...", newest
 * first within a project.  Flags: "yanked", "nowheel". */
struct rel {
	char *name, *version;
	struct resolve_candidate cand;
	char **deps;
	size_t ndeps;
};

struct graph {
	struct rel *r;
	size_t n;
	struct resolve_candidate *cands[64];
	size_t ncands[64];
	char *names[64];
	size_t nnames;
	unsigned dep_calls;
};

static void graph_load(struct graph *g, const char *const *lines)
{
	memset(g, 0, sizeof(*g));
	for (size_t i = 0; lines[i]; i++) {
		char *s = xstrdup(lines[i]), *save = NULL;
		char *head = strtok_r(s, "|", &save);
		struct rel r = {0};
		char name[64], ver[64], flag[64] = "";

		if (sscanf(head, "%63s %63s %63s", name, ver, flag) < 2)
			abort();
		r.name = xstrdup(name);
		r.version = xstrdup(ver);
		r.cand.version = r.version;
		r.cand.v = pep440_parse(ver);
		r.cand.yanked = !strcmp(flag, "yanked");
		r.cand.unusable =
		    !strcmp(flag, "nowheel") ? "has no wheel for this interpreter" : NULL;
		for (char *d; (d = strtok_r(NULL, "|", &save));) {
			while (*d == ' ')
				d++;
			r.deps = xrealloc(r.deps, (r.ndeps + 1) * sizeof(char *));
			r.deps[r.ndeps++] = xstrdup(d);
		}
		free(s);
		g->r = xrealloc(g->r, (g->n + 1) * sizeof(*g->r));
		g->r[g->n++] = r;
	}
	/* candidates grouped per project, in line order */
	for (size_t i = 0; i < g->n; i++) {
		size_t k;

		for (k = 0; k < g->nnames; k++)
			if (!strcmp(g->names[k], g->r[i].name))
				break;
		if (k == g->nnames)
			g->names[g->nnames++] = g->r[i].name;
		g->cands[k] =
		    xrealloc(g->cands[k], (g->ncands[k] + 1) * sizeof(struct resolve_candidate));
		g->cands[k][g->ncands[k]++] = g->r[i].cand;
	}
}

static void graph_free(struct graph *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->r[i].name);
		free(g->r[i].version);
		pep440_free((struct pep440_version *)g->r[i].cand.v);
		for (size_t k = 0; k < g->r[i].ndeps; k++)
			free(g->r[i].deps[k]);
		free(g->r[i].deps);
	}
	for (size_t k = 0; k < g->nnames; k++)
		free(g->cands[k]);
	free(g->r);
}

static int g_candidates(void *ud, const char *name, const struct resolve_candidate **ret,
			size_t *ret_n, char *err, size_t errlen)
{
	struct graph *g = ud;

	for (size_t k = 0; k < g->nnames; k++)
		if (!strcmp(g->names[k], name)) {
			*ret = g->cands[k];
			*ret_n = g->ncands[k];
			return 0;
		}
	*ret = NULL;
	*ret_n = 0;
	return 0;
}

static int g_deps(void *ud, const char *name, size_t idx, const char *const **ret, size_t *ret_n,
		  char *err, size_t errlen)
{
	struct graph *g = ud;
	size_t seen = 0;

	g->dep_calls++;
	for (size_t i = 0; i < g->n; i++)
		if (!strcmp(g->r[i].name, name) && seen++ == idx) {
			*ret = (const char *const *)g->r[i].deps;
			*ret_n = g->r[i].ndeps;
			return 0;
		}
	snprintf(err, errlen, "no such candidate");
	return -ENOENT;
}

static const char *env(void *ud, const char *key)
{
	if (!strcmp(key, "python_version"))
		return "3.11";
	if (!strcmp(key, "sys_platform"))
		return "linux";
	return "";
}

/* Resolves reqs ("a>=1", "c:b<2" for a constraint) and returns
 * "a==1 b==2" or "UNSAT: <explanation>". */
static char *solve(const char *const *lines, const char *const *reqs, bool pre)
{
	struct graph g;
	struct resolve_input in[16];
	struct pep508_req rq[16];
	size_t n = 0;
	char err[256];
	struct resolve_provider pv = {.candidates = g_candidates, .dependencies = g_deps};
	struct resolve_opts opts = {.pre = pre, .env = env};
	struct resolve_result res = {0};
	char *explain = NULL;
	struct buf b;

	graph_load(&g, lines);
	pv.ud = &g;
	for (; reqs[n]; n++) {
		bool c = !strncmp(reqs[n], "c:", 2);

		if (pep508_req_parse(reqs[n] + (c ? 2 : 0), &rq[n], err, sizeof(err)) < 0)
			abort();
		in[n] = (struct resolve_input){
		    .text = reqs[n], .where = "reqs.txt:1", .req = &rq[n], .constraint = c};
	}
	buf_init(&b);
	int r = resolve_run(&pv, in, n, &opts, &res, &explain);

	if (r == 0) {
		for (size_t i = 0; i < res.npicks; i++)
			buf_printf(&b, "%s%s==%s", i ? " " : "", res.picks[i].name,
				   res.picks[i].version);
	} else {
		buf_printf(&b, "UNSAT(%d): %s", r, explain);
	}
	free(explain);
	resolve_result_free(&res);
	for (size_t i = 0; i < n; i++)
		pep508_req_free(&rq[i]);
	graph_free(&g);
	return (char *)buf_steal(&b, NULL);
}

#define SOLVE(expect, pre, ...)                                                                    \
	do {                                                                                       \
		static const char *const lines_[] = {__VA_ARGS__, NULL};                           \
		char *got_ = solve(lines_, reqs_, pre);                                            \
		CHECK_STR(got_, expect);                                                           \
		free(got_);                                                                        \
	} while (0)

static void test_basic(void)
{
	{
		static const char *const reqs_[] = {"a", NULL};
		SOLVE("a==2.0 b==1.5", false, "a 2.0 | b>=1", "a 1.0", "b 1.5", "b 1.0");
	}
	{ /* newest that fits */
		static const char *const reqs_[] = {"a<2", NULL};
		SOLVE("a==1.0", false, "a 2.0", "a 1.0", "a 0.5");
	}
	{ /* markers, and the extra marker only through the extra */
		static const char *const reqs_[] = {"a[fast]", NULL};
		SOLVE("a==1.0 c==1.0 d==1.0", false,
		      "a 1.0 | b; sys_platform == 'win32' | c | d; extra == 'fast' | e; extra == "
		      "'slow'",
		      "b 1.0", "c 1.0", "d 1.0", "e 1.0");
	}
	{ /* an extra requested deep in the graph pins the same version */
		static const char *const reqs_[] = {"a", "x", NULL};
		SOLVE("a==1.0 x==1.0 y==1.0", false, "a 2.0 | y; extra == 'z'",
		      "a 1.0 | y; extra == 'z'", "x 1.0 | a[z]<2", "y 1.0");
	}
	{ /* pre-releases: not by default; yes when nothing else fits */
		static const char *const reqs_[] = {"a", "b", NULL};
		SOLVE("a==1.0 b==2.0b1", false, "a 2.0rc1", "a 1.0", "b 2.0b1");
	}
	{ /* ... or with --pre, or when a specifier names one */
		static const char *const reqs_[] = {"a", "b>=2.0b1", NULL};
		SOLVE("a==1.0 b==2.0b2", false, "a 2.0rc1", "a 1.0", "b 2.0b2", "b 1.0");
	}
	{
		static const char *const reqs_[] = {"a", NULL};
		SOLVE("a==2.0rc1", true, "a 2.0rc1", "a 1.0");
	}
	{ /* yanked: skipped unless pinned */
		static const char *const reqs_[] = {"a", "b==2.0", NULL};
		SOLVE("a==1.0 b==2.0", false, "a 2.0 yanked", "a 1.0", "b 2.0 yanked", "b 1.0");
	}
	{ /* versions without a usable wheel are passed over */
		static const char *const reqs_[] = {"a", NULL};
		SOLVE("a==1.0", false, "a 2.0 nowheel", "a 1.0");
	}
	{ /* constraints restrict but do not add */
		static const char *const reqs_[] = {"a", "c:b<1.5", "c:z==1", NULL};
		SOLVE("a==1.0 b==1.0", false, "a 1.0 | b", "b 2.0", "b 1.0", "z 1");
	}
}

static void test_backtracking(void)
{
	{ /* the newest a needs a b that c forbids: back to a 1.0 */
		static const char *const reqs_[] = {"a", "c", NULL};
		SOLVE("a==1.0 b==1.0 c==1.0", false, "a 2.0 | b>=2", "a 1.0 | b<2", "b 2.0",
		      "b 1.0", "c 1.0 | b<2");
	}
	{ /* deep: the conflict shows up two levels below the culprit */
		static const char *const reqs_[] = {"top", NULL};
		SOLVE("left==1.0 right==1.0 shared==1.0 top==1.0 util==1.0", false,
		      "top 1.0 | left | right", "left 2.0 | util>=2", "left 1.0 | util<2",
		      "util 2.0 | shared>=2", "util 1.0 | shared<2", "right 1.0 | shared<2",
		      "shared 2.0", "shared 1.0");
	}
	{ /* many versions of a bystander must not be enumerated one by one:
	     learning rules out the culprit at once */
		static const char *const reqs_[] = {"a", "z", NULL};
		SOLVE("a==1.0 b==1.0 z==9.0", false, "a 2.0 | b>=2", "a 1.0 | b<2", "b 2.0 | c==1",
		      "b 1.0", "c 2.0", "z 9.0", "z 8.0", "z 7.0", "z 6.0", "z 5.0");
	}
}

static void test_unsat(void)
{
	{
		static const char *const reqs_[] = {"a", "c", NULL};
		char *got;
		static const char *const lines[] = {"a 1.0 | b<2", "c 1.0 | b>=2", "b 2.0", "b 1.0",
						    NULL};

		got = solve(lines, reqs_, false);
		if (getenv("SHOW"))
			fprintf(stderr, "%s\n", got);
		CHECK(strstr(got, "UNSAT(-2)") == got);
		CHECK(strstr(got, "a 1.0 requires b<2") != NULL);
		CHECK(strstr(got, "c 1.0 requires b>=2") != NULL);
		CHECK(strstr(got, "a 1.0 and c 1.0 cannot both be installed") != NULL);
		CHECK(strstr(got, "the requirements cannot be satisfied") != NULL);
		if (check_fail)
			fprintf(stderr, "%s\n", got);
		free(got);
	}
	{
		static const char *const reqs_[] = {"nosuch", NULL};
		char *got;
		static const char *const lines[] = {"a 1.0", NULL};

		got = solve(lines, reqs_, false);
		if (getenv("SHOW"))
			fprintf(stderr, "%s\n", got);
		CHECK(strstr(got, "has any version of nosuch") != NULL);
		free(got);
	}
	{
		static const char *const reqs_[] = {"a>=3", NULL};
		char *got;
		static const char *const lines[] = {"a 3.0 nowheel", "a 2.0", NULL};

		got = solve(lines, reqs_, false);
		if (getenv("SHOW"))
			fprintf(stderr, "%s\n", got);
		CHECK(strstr(got, "a 3.0 has no wheel for this interpreter") != NULL);
		CHECK(strstr(got, "the requirements ask for a>=3 (reqs.txt:1)") != NULL);
		free(got);
	}
	{ /* every version of x conflicts with every version of y */
		static const char *const reqs_[] = {"x", "y", NULL};
		char *got;
		static const char *const lines[] = {"x 3 | s==1", "x 2 | s==1", "x 1 | s==1",
						    "y 3 | s==2", "y 2 | s==2", "y 1 | s==2",
						    "s 2",	  "s 1",	NULL};

		got = solve(lines, reqs_, false);
		if (getenv("SHOW"))
			fprintf(stderr, "%s\n", got);
		CHECK(strstr(got, "UNSAT(-2)") == got);
		CHECK(strstr(got, "x 1 requires s==1") != NULL);
		free(got);
	}
}

int main(void)
{
	test_basic();
	test_backtracking();
	test_unsat();
	return check_done("resolve");
}
