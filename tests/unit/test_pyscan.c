/* test_pyscan: the import scanner (fs/pyscan.c) — the import forms, what
 * runs at import and what does not (function and class bodies, except
 * clauses, TYPE_CHECKING blocks, strings, comments), both modes, and
 * hostile input (deep nesting, huge statements, unterminated strings,
 * random bytes: bounded, no fault). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fs/pyscan.h"

struct out {
	char s[4096];
	size_t n;
};

static void collect(void *ud, unsigned level, const char *module, const char *name)
{
	struct out *o = ud;
	int w = snprintf(o->s + o->n, sizeof(o->s) - o->n, "%s%u|%s|%s", o->n ? " " : "", level,
			 module, name ? name : "-");
	if (w > 0 && (size_t)w < sizeof(o->s) - o->n)
		o->n += (size_t)w;
}

static const char *scan(const char *src, enum pyscan_mode mode)
{
	static struct out o;
	o.n = 0;
	o.s[0] = '\0';
	pyscan_imports(src, strlen(src), mode, collect, &o);
	return o.s;
}

struct tcase {
	const char *src;
	const char *top;    /* PYSCAN_TOP */
	const char *blocks; /* PYSCAN_BLOCKS (NULL: as top) */
};

static const struct tcase cases[] = {
	{"import a.b, c as d\nfrom x.y import z, w as v\n", "0|a.b|- 0|c|- 0|x.y|z 0|x.y|w", NULL},
	{"from . import x\nfrom .m import y\nfrom ..p.q import (r,\n  s,  # why\n)\n",
	 "1||x 1|m|y 2|p.q|r 2|p.q|s", NULL},
	{"from ... import up\nfrom .... x import *\n", "3||up 4|x|*", NULL},
	{"def f():\n    import no\nclass C:\n    import no2\nimport yes\n", "0|yes|-", NULL},
	{"def f():\n# a comment at column 0\n    import no\n\n    import no2\nimport yes\n",
	 "0|yes|-", NULL},
	{"\"\"\"Doc.\nimport no\n\"\"\"\nimport yes\nx = 'import no'\n# import no\n"
	 "y = '''\nfrom no import x\n'''\n",
	 "0|yes|-", NULL},
	{"try:\n    import a\nexcept ImportError:\n    import b\nelse:\n    import c\n"
	 "finally:\n    import d\n",
	 "", "0|a|- 0|c|- 0|d|-"},
	{"if TYPE_CHECKING:\n    import c\nelse:\n    import d\n"
	 "if sys.version_info > (3,):\n    import e\nelif typing.TYPE_CHECKING:\n    import e2\n"
	 "if __name__ == '__main__':\n    import f\nif False:\n    import g\n",
	 "", "0|d|- 0|e|-"},
	{"try:\n    def f():\n        import no\n    import yes\n    with x:\n        import w\n"
	 "except:\n    pass\n",
	 "", "0|yes|- 0|w|-"},
	{"if x: import a; import a2\nif TYPE_CHECKING: import b; import b2\nimport c\n", "0|c|-",
	 "0|a|- 0|a2|- 0|c|-"},
	{"from a import \\\n  b\nimport c; import d\nx = 1; from e import *\n",
	 "0|a|b 0|c|- 0|d|- 0|e|*", NULL},
	{"import a\r\nif x:\r\n\timport b\r\n", "0|a|-", "0|a|- 0|b|-"},
	{"x = (\nimport_ = 3,\n)\nfoo(\n'''\nimport no\n''')\nimport yes\n", "0|yes|-", NULL},
	{"x = rb'\\'' ; import a\ns = f\"{x}\" ; import b\n", "0|a|- 0|b|-", NULL},
	{"async def f():\n    import no\nasync with x:\n    import y\n", "", "0|y|-"},
	{"\xef\xbb\xbfimport a\n", "0|a|-", NULL},
	{"from import x\nimport 3a\nfrom . import\nimport\nfrom .\nfrom x import 9\n", "", NULL},
	{"import a.b.c as d, e.f\nfrom a.b import (c as d, e)\n", "0|a.b.c|- 0|e.f|- 0|a.b|c 0|a.b|e",
	 NULL},
	/* a block closed by a dedent; the next header at column 0 */
	{"class A:\n    x = 1\nif y:\n    import z\nimport w\n", "0|w|-", "0|z|- 0|w|-"},
	/* an unterminated string ends at its line; an unterminated triple at the end */
	{"x = 'abc\nimport a\ny = \"\"\"\nimport no\n", "0|a|-", NULL},
	{"import a\\", "0|a|-", NULL},
	{"", "", NULL},
};

static void hostile(void)
{
	/* deep nesting: far more blocks than tracked */
	size_t cap = 1 << 20, n = 0;
	char *b = malloc(cap);
	for (int d = 0; d < 300; d++) {
		n += (size_t)snprintf(b + n, cap - n, "%*sif x:\n", d, "");
	}
	n += (size_t)snprintf(b + n, cap - n, "%*simport deep\nimport top\n", 300, "");
	struct out o = {.n = 0};
	CHECK(pyscan_imports(b, n, PYSCAN_BLOCKS, collect, &o) >= 1);
	CHECK(strstr(o.s, "0|top|-") != NULL);
	CHECK_INT(pyscan_imports(b, n, PYSCAN_TOP, NULL, NULL), 1);

	/* a from-import of 5000 names: the statement's tokens are bounded */
	n = (size_t)snprintf(b, cap, "from m import (");
	for (int i = 0; i < 5000; i++)
		n += (size_t)snprintf(b + n, cap - n, "n%d, ", i);
	n += (size_t)snprintf(b + n, cap - n, ")\nimport after\n");
	size_t got = pyscan_imports(b, n, PYSCAN_TOP, NULL, NULL);
	CHECK(got > 1000 && got < 5000);

	/* a dotted name longer than the limit is skipped, not cut */
	n = (size_t)snprintf(b, cap, "import ");
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(b + n, cap - n, "abcd.");
	n += (size_t)snprintf(b + n, cap - n, "e\nimport ok\n");
	CHECK_STR(scan(b, PYSCAN_TOP), "0|ok|-");

	/* random bytes, with and without a NUL: no fault, bounded time */
	srand(7);
	for (int r = 0; r < 200; r++) {
		size_t len = (size_t)(rand() % 4096);
		for (size_t i = 0; i < len; i++) {
			static const char alpha[] = "ifromport .,()[]{}:;*#'\"\\\n\r\t x_9";
			b[i] = r % 2 ? (char)(rand() & 0xff) : alpha[rand() % (sizeof(alpha) - 1)];
		}
		pyscan_imports(b, len, PYSCAN_BLOCKS, NULL, NULL);
		pyscan_imports(b, len, PYSCAN_TOP, NULL, NULL);
	}
	/* the scanner never reads past len: the input is not NUL-terminated */
	char *tight = malloc(8);
	memcpy(tight, "import a", 8);
	CHECK_INT(pyscan_imports(tight, 8, PYSCAN_TOP, NULL, NULL), 1);
	memcpy(tight, "'''\\", 4);
	CHECK_INT(pyscan_imports(tight, 4, PYSCAN_TOP, NULL, NULL), 0);
	free(tight);
	free(b);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		const struct tcase *c = &cases[i];
		const char *got = scan(c->src, PYSCAN_TOP);
		if (strcmp(got, c->top) != 0)
			fprintf(stderr, "case %zu (top): got \"%s\"\n", i, got);
		CHECK_STR(got, c->top);
		got = scan(c->src, PYSCAN_BLOCKS);
		if (strcmp(got, c->blocks ? c->blocks : c->top) != 0)
			fprintf(stderr, "case %zu (blocks): got \"%s\"\n", i, got);
		CHECK_STR(got, c->blocks ? c->blocks : c->top);
	}
	/* PYSCAN_ALL: function and class bodies too, still not TYPE_CHECKING nor except */
	CHECK_STR(scan("def f():\n    import a\nclass C:\n    import b\n    def g(self):\n"
		       "        from .c import d\nif TYPE_CHECKING:\n    import e\n"
		       "try:\n    pass\nexcept ImportError:\n    import f\n",
		       PYSCAN_ALL),
		  "0|a|- 0|b|- 1|c|d");
	hostile();
	return check_done("pyscan");
}
