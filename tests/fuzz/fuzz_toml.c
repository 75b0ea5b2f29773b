/* fuzz_toml: libFuzzer target for the TOML parser (and, on documents that
 * parse, the pylock.toml reader on top of it).
 *
 * toml.c is #included so that the parser is compiled in this translation
 * unit with the fuzzer's coverage instrumentation (the static library is
 * built without it); its symbols then satisfy the library's lockfile.o.
 * Do not also list ../../resolver/toml.c in the fuzz executable's sources.
 *
 * Checks beyond "no crash": a failed parse leaves *ret alone and reports
 * "LINE:COL: message"; in a parsed tree every key is found again by
 * toml_get (no duplicates, hash index consistent), depth stays bounded,
 * strings are valid UTF-8 of their reported length, and positions are
 * sane. */
#include "resolver/toml.c"

#include <stdlib.h>

#include "resolver/lockfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t n = 1;
	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

static void walk(const struct toml_value *v, int depth, size_t nlines)
{
	if (depth > TOML_MAX_DEPTH + 1 || v->line < 1 || (size_t)v->line > nlines || v->col < 1)
		abort();
	switch (v->type) {
	case TOML_STRING:
	case TOML_DATETIME:
		if (!v->s || utf8_check(v->s, strlen(v->s)))
			abort();
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->arr.n; i++)
			walk(v->arr.items[i], depth + 1, nlines);
		break;
	case TOML_TABLE:
		for (size_t i = 0; i < v->tab.n; i++) {
			if (toml_get(v, v->tab.keys[i]) != v->tab.vals[i])
				abort();
			walk(v->tab.vals[i], depth + 1, nlines);
		}
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_value *v = NULL;
	char err[256];
	int r = toml_parse((const char *)data, size, &v, err, sizeof(err));
	if (r < 0) {
		unsigned long line, col;
		if (v != NULL || sscanf(err, "%lu:%lu: ", &line, &col) != 2 || line < 1 ||
		    line > count_lines(data, size) || col < 1)
			abort();
		return 0;
	}
	if (r != 0 || !v || v->type != TOML_TABLE)
		abort();
	walk(v, 0, count_lines(data, size));
	toml_free(v);

	struct lock_file *lf = NULL;
	if (lockfile_parse("/fuzz/pylock.toml", (const char *)data, size, &lf, err, sizeof(err)) ==
	    0)
		lockfile_free(lf);
	return 0;
}
