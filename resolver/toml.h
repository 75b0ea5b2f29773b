/* toml: a TOML 1.0 parser into a tree of values, good for pylock.toml.
 *
 * Supports tables, arrays of tables, dotted keys, inline tables, basic and
 * literal strings (single- and multi-line, all escapes), integers (dec/hex/
 * oct/bin, underscores), floats, booleans, arrays, offset/local date-times
 * (kept as their text).  Rejects duplicate keys and redefined tables.
 * Errors are "LINE:COL: what is wrong". */
#ifndef SITEFS_TOML_H
#define SITEFS_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type {
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME, /* s holds the literal text */
	TOML_ARRAY,
	TOML_TABLE,
};

struct toml_value {
	enum toml_type type;
	int line, col; /* where the value (or table header) starts, 1-based */
	union {
		char *s; /* STRING, DATETIME: NUL-terminated (may contain no NUL) */
		int64_t i;
		double f;
		bool b;
		struct {
			struct toml_value **items;
			size_t n;
		} arr;
		struct {
			char **keys; /* in document order */
			struct toml_value **vals;
			size_t n;
		} tab;
	};
};

/* Parses text (len bytes, need not be NUL-terminated; must be UTF-8).
 * Returns 0 and *ret (free with toml_free), or -EINVAL with "L:C: message"
 * in err. */
int toml_parse(const char *text, size_t len, struct toml_value **ret, char *err, size_t errlen);
struct toml_value *toml_free(struct toml_value *v);

/* Lookups on a table; NULL if absent, not a table, or of another type. */
const struct toml_value *toml_get(const struct toml_value *table, const char *key);
const char *toml_get_string(const struct toml_value *table, const char *key);
const char *toml_type_name(enum toml_type t);

#endif
