/* fuzz_index: the simple-API page parsers (PEP 503 HTML, PEP 691 JSON) and
 * the core-metadata reader, on hostile bytes.  The first byte picks the
 * parser, so one corpus covers all three. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "resolver/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct index_page pg = {0};
	struct index_file f = {0};
	char err[256];

	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;

	switch (data[0] % 3) {
	case 0:
		index_parse_html("https://idx.example/simple/p/", text, len, &pg, err, sizeof(err));
		break;
	case 1:
		index_parse_json("https://idx.example/simple/p/", text, len, &pg, err, sizeof(err));
		break;
	default:
		index_parse_metadata(&f, text, len);
		index_file_clear(&f);
		break;
	}
	for (size_t i = 0; i < pg.nfiles; i++)
		if (!pg.files[i].filename || !pg.files[i].url || strchr(pg.files[i].filename, '/'))
			__builtin_trap();
	index_page_free(&pg);
	return 0;
}
