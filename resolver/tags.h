/* tags: wheel filenames (PEP 427/491) and PEP 425 compatibility. */
#ifndef SITEFS_TAGS_H
#define SITEFS_TAGS_H

#include <stddef.h>

struct interp;

struct wheel_name {
	char *dist;    /* as in the filename (escaped form, e.g. "foo_bar") */
	char *version;
	char *build;   /* or NULL */
	char **py, **abi, **plat; /* expanded compressed tag sets ("py2.py3") */
	size_t npy, nabi, nplat;
};

/* Parses "dist-ver(-build)?-py-abi-plat.whl".  Returns 0 or -EINVAL. */
int wheelname_parse(const char *filename, struct wheel_name *ret);
void wheelname_free(struct wheel_name *wn);

/* Best (lowest) priority of any tag the wheel carries for this interpreter,
 * or -1 if the wheel is not installable on it. */
int tags_wheel_priority(const struct interp *ip, const struct wheel_name *wn);

/* PEP 503 normalization ("Foo.Bar_baz" -> "foo-bar-baz"); caller frees. */
char *tags_normalize_name(const char *name);

#endif
