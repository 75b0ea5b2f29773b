/* fuzz_zipcd: libFuzzer target for the central-directory parser.
 *
 * The input is a whole zip file: parsed from offset 0, and on success every
 * entry's local header is parsed from the same bytes and looked up by name.
 * A parse from a later offset must either succeed too or ask for earlier
 * bytes, never disagree. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/zipcd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zip_cd *cd = NULL, *cd2 = NULL;
	uint64_t need = 0, off;
	char err[256];
	int r;

	r = zipcd_parse(data, size, 0, size, &cd, &need, err, sizeof(err));
	if (r == -EAGAIN)
		abort(); /* the whole file was given */
	if (r < 0)
		return 0;
	for (size_t i = 0; i < cd->n; i++) {
		const struct zip_entry *e = &cd->entries[i];
		uint64_t data_off;

		if (zipcd_find(cd, e->name) != e)
			abort();
		if (e->lho >= size)
			abort(); /* the layout check bounds it by cd_off */
		r = zipcd_local_header(data + e->lho, size - e->lho, e, &data_off);
		if (r == 0 && (data_off < e->lho + ZIPCD_LOCAL_HEADER_MIN || data_off > size))
			abort();
		(void)zipcd_span_guess(e);
	}

	/* The tail the daemon would fetch first must lead to the same result. */
	off = size > ZIPCD_TAIL_SIZE ? size - ZIPCD_TAIL_SIZE : size / 2;
	for (int round = 0; round < 6; round++) {
		r = zipcd_parse(data + off, size - off, off, size, &cd2, &need, err, sizeof(err));
		if (r != -EAGAIN)
			break;
		if (need >= off)
			abort();
		off = need;
	}
	if (r != 0 || cd2->n != cd->n || cd2->cd_off != cd->cd_off)
		abort();
	zipcd_free(cd2);
	zipcd_free(cd);
	return 0;
}
