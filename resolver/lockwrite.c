/* lockwrite: deterministic pylock.toml (see lockwrite.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "resolver/lockwrite.h"

/* TOML basic string: quotes, backslashes and control characters escaped. */
static void toml_str(struct buf *b, const char *s)
{
	buf_puts(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			buf_printf(b, "\\u%04x", c);
		else
			buf_append(b, s, 1);
	}
	buf_puts(b, "\"");
}

static int cmp_pkg(const void *a, const void *b)
{
	const struct lockwrite_pkg *x = *(const struct lockwrite_pkg *const *)a;
	const struct lockwrite_pkg *y = *(const struct lockwrite_pkg *const *)b;
	int r = strcmp(x->name, y->name);

	return r ? r : strcmp(x->version, y->version);
}

char *lockwrite_toml(const struct lockwrite_pkg *pkgs, size_t n, const struct lockwrite_meta *m)
{
	const struct lockwrite_pkg **v = xcalloc(n + 1, sizeof(*v));
	struct buf b;
	char hex[SHA256_HEX_LEN + 1];

	for (size_t i = 0; i < n; i++)
		v[i] = &pkgs[i];
	qsort(v, n, sizeof(*v), cmp_pkg);
	buf_init(&b);
	buf_puts(&b, "lock-version = \"1.0\"\n");
	if (m && m->environment) {
		buf_puts(&b, "environments = [");
		toml_str(&b, m->environment);
		buf_puts(&b, "]\n");
	}
	if (m && m->requires_python) {
		buf_puts(&b, "requires-python = ");
		toml_str(&b, m->requires_python);
		buf_puts(&b, "\n");
	}
	buf_puts(&b, "created-by = ");
	toml_str(&b, m && m->created_by ? m->created_by : "sitefs");
	buf_puts(&b, "\n");
	for (size_t i = 0; i < n; i++) {
		const struct lockwrite_pkg *p = v[i];

		buf_puts(&b, "\n[[packages]]\nname = ");
		toml_str(&b, p->name);
		buf_puts(&b, "\nversion = ");
		toml_str(&b, p->version);
		if (p->index) {
			buf_puts(&b, "\nindex = ");
			toml_str(&b, p->index);
		}
		buf_puts(&b, "\nwheels = [\n  {name = ");
		toml_str(&b, p->filename);
		if (p->url) {
			buf_puts(&b, ", url = ");
			toml_str(&b, p->url);
		}
		if (p->path) {
			buf_puts(&b, ", path = ");
			toml_str(&b, p->path);
		}
		hex_encode(p->sha256, 32, hex);
		buf_printf(&b, ", size = %llu, hashes = {sha256 = \"%s\"}},\n]\n",
			   (unsigned long long)p->size, hex);
	}
	free(v);
	return (char *)buf_steal(&b, NULL);
}
