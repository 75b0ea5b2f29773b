/* fuzz_pep: libFuzzer target for pep440_parse, pep440_spec_parse,
 * pep508_marker_parse and pep508_req_parse.
 *
 * The input (up to its first NUL) is fed to every parser.  Input with a
 * '\x01' is also split there into a specifier set and a version, to reach
 * pep440_spec_contains with arbitrary pairs.
 *
 * Checks beyond "no crash": normalization is idempotent (str() of a version
 * parses to an equal version with the same str(), likewise for specifier
 * sets, which must then contain the same versions); comparison is
 * antisymmetric; failed parses say why; a parsed requirement has a name,
 * a specifier that parses, and a marker that evaluates to 0, 1 or
 * -EINVAL. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver/pep440.h"
#include "resolver/pep508.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const probes[] = {
	"0", "1.0", "1.0a1", "1.0.post1", "1.0.dev0", "1.0+local.7", "1!2.0", "2.0rc1.post2.dev3",
};

static const char *env_linux(void *ud, const char *key)
{
	static const char *const kv[][2] = {
		{"python_version", "3.11"},	      {"python_full_version", "3.11.2"},
		{"os_name", "posix"},		      {"sys_platform", "linux"},
		{"platform_release", "6.1.0-18-amd64"}, {"platform_system", "Linux"},
		{"platform_version", "#1 SMP"},	      {"platform_machine", "x86_64"},
		{"platform_python_implementation", "CPython"},
		{"implementation_name", "cpython"},    {"implementation_version", "3.11.2"},
	};

	(void)ud;
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		if (!strcmp(kv[i][0], key))
			return kv[i][1];
	return NULL;
}

static const char *env_odd(void *ud, const char *key)
{
	(void)ud;
	if (!strcmp(key, "extra"))
		return "Foo_Bar";
	if (!strcmp(key, "python_version"))
		return "banana";
	return env_linux(ud, key);
}

static int sign(int x)
{
	return (x > 0) - (x < 0);
}

static void check_version(const char *s)
{
	struct pep440_version *v = pep440_parse(s), *v2;
	char *str, *str2;

	if (!v)
		return;
	str = pep440_str(v);
	v2 = pep440_parse(str);
	if (!v2 || pep440_cmp(v, v2) != 0 || pep440_cmp(v2, v) != 0)
		abort();
	str2 = pep440_str(v2);
	if (strcmp(str, str2) || pep440_is_prerelease(v) != pep440_is_prerelease(v2))
		abort();
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		struct pep440_version *p = pep440_parse(probes[i]);

		if (!p || sign(pep440_cmp(v, p)) != -sign(pep440_cmp(p, v)))
			abort();
		pep440_free(p);
	}
	free(str);
	free(str2);
	pep440_free(v);
	pep440_free(v2);
}

static void check_spec(const char *s)
{
	char err[256] = "";
	struct pep440_spec *sp = pep440_spec_parse(s, err, sizeof(err)), *sp2;
	char *str, *str2;

	if (!sp) {
		if (!err[0])
			abort();
		return;
	}
	str = pep440_spec_str(sp);
	sp2 = pep440_spec_parse(str, err, sizeof(err));
	if (!sp2)
		abort();
	str2 = pep440_spec_str(sp2);
	if (strcmp(str, str2))
		abort();
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		struct pep440_version *p = pep440_parse(probes[i]);

		if (!p)
			abort();
		for (int pre = 0; pre < 2; pre++)
			if (pep440_spec_contains(sp, p, pre) != pep440_spec_contains(sp2, p, pre))
				abort();
		pep440_free(p);
	}
	free(str);
	free(str2);
	pep440_spec_free(sp);
	pep440_spec_free(sp2);
}

static void check_eval(const struct pep508_marker *m)
{
	int r1 = pep508_marker_eval(m, env_linux, NULL);
	int r2 = pep508_marker_eval(m, env_odd, NULL);

	if ((r1 != 0 && r1 != 1 && r1 != -EINVAL) || (r2 != 0 && r2 != 1 && r2 != -EINVAL))
		abort();
}

static void check_marker(const char *s)
{
	char err[256] = "";
	struct pep508_marker *m = pep508_marker_parse(s, err, sizeof(err));

	if (!m) {
		if (!err[0])
			abort();
		return;
	}
	check_eval(m);
	pep508_marker_free(m);
}

static void check_req(const char *s)
{
	char err[256] = "";
	struct pep508_req r = {0};
	struct pep440_spec *sp;

	if (pep508_req_parse(s, &r, err, sizeof(err)) < 0) {
		if (!err[0] || r.name)
			abort();
		return;
	}
	if (!r.name || !r.name[0] || !r.specifier || (r.nextras && !r.extras))
		abort();
	for (size_t i = 0; i < r.nextras; i++)
		if (!r.extras[i][0])
			abort();
	if (r.url && r.specifier[0])
		abort();
	sp = pep440_spec_parse(r.specifier, NULL, 0);
	if (!sp)
		abort();
	pep440_spec_free(sp);
	if (r.marker)
		check_eval(r.marker);
	pep508_req_free(&r);
}

static void check_contains(const char *s)
{
	const char *sep = strchr(s, '\x01');
	char *spec_s;
	struct pep440_spec *sp;
	struct pep440_version *v;

	if (!sep)
		return;
	spec_s = strndup(s, (size_t)(sep - s));
	if (!spec_s)
		abort();
	sp = pep440_spec_parse(spec_s, NULL, 0);
	v = pep440_parse(sep + 1);
	if (sp && v) {
		/* allowing pre-releases can only add matches */
		if (pep440_spec_contains(sp, v, false) && !pep440_spec_contains(sp, v, true))
			abort();
	}
	pep440_spec_free(sp);
	pep440_free(v);
	free(spec_s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size > 4096) /* nothing interesting is longer; keeps runs fast */
		return 0;
	s = strndup((const char *)data, size);
	if (!s)
		abort();
	check_version(s);
	check_spec(s);
	check_marker(s);
	check_req(s);
	check_contains(s);
	free(s);
	return 0;
}
