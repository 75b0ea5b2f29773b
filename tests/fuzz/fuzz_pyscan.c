/* fuzz_pyscan: libFuzzer target for the import scanner (fs/pyscan.c).
 *
 * The input is a Python source as a wheel could ship it: any bytes.  Every
 * mode is run; every reported name must be a bounded, non-empty string
 * (the module may be empty only in a relative import), and the count
 * returned must match the callbacks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/pyscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(void *ud, unsigned level, const char *module, const char *name)
{
	size_t *calls = ud;
	(*calls)++;
	if (!module || strlen(module) > 255 || (!level && !module[0]))
		abort();
	if (name && (!name[0] || strlen(name) > 255))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a copy of exactly size bytes: a read past the end is caught */
	char *src = malloc(size ? size : 1);
	memcpy(src, data, size);
	for (int mode = PYSCAN_TOP; mode <= PYSCAN_ALL; mode++) {
		size_t calls = 0;
		if (pyscan_imports(src, size, (enum pyscan_mode)mode, check, &calls) != calls)
			abort();
	}
	free(src);
	return 0;
}
