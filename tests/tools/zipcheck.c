/* zipcheck: compares what the catalog built from range requests says about
 * each wheel with libzip's reading of the whole file — the independent
 * reader.  Used by the integration tests after a mount.
 *
 *   zipcheck CACHE_DIR BASE_URL WHEEL...    exit 0 when every wheel agrees
 *
 * The lock served each WHEEL at BASE_URL/<its file name> (the URL is part of
 * the catalog key). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#include "fetch/util/hash.h"
#include "fetch/util/util.h"
#include "fs/fs_i.h"

static int check_wheel(struct catalog *cat, const char *base_url, const char *path)
{
	char *data;
	size_t len;
	int r = file_read_all(path, &data, &len);
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(-r));
		return 1;
	}
	uint8_t sha[32];
	sha256_buf(data, len, sha);
	free(data);

	const char *slash = strrchr(path, '/');
	char *url = xasprintf("%s/%s", base_url, slash ? slash + 1 : path);
	uint8_t key[32];
	wheel_catalog_key(sha, url, key);
	free(url);
	struct wheel_meta m = {0};
	r = catalog_get(cat, key, len, &m);
	if (r < 0) {
		fprintf(stderr, "%s: not in the catalog (%s)\n", path, strerror(-r));
		return 1;
	}
	int err = 0, bad = 0;
	zip_t *z = zip_open(path, ZIP_RDONLY, &err);
	if (!z) {
		fprintf(stderr, "%s: libzip cannot open it (%d)\n", path, err);
		wheel_meta_clear(&m);
		return 1;
	}
	zip_int64_t n = zip_get_num_entries(z, 0);
	if (n != (zip_int64_t)m.cd->n) {
		fprintf(stderr, "%s: libzip sees %lld entries, the catalog %zu\n", path,
			(long long)n, m.cd->n);
		bad++;
	}
	for (zip_int64_t i = 0; i < n && i < (zip_int64_t)m.cd->n; i++) {
		const struct zip_entry *e = &m.cd->entries[i];
		zip_stat_t st;
		zip_uint8_t os;
		zip_uint32_t attr;
		if (zip_stat_index(z, (zip_uint64_t)i, ZIP_FL_ENC_RAW, &st) < 0 ||
		    zip_file_get_external_attributes(z, (zip_uint64_t)i, 0, &os, &attr) < 0) {
			fprintf(stderr, "%s: libzip cannot stat entry %lld\n", path, (long long)i);
			bad++;
			continue;
		}
		uint32_t mode = os == ZIP_OPSYS_UNIX ? attr >> 16 : 0;
		if (strcmp(st.name, e->name) || st.size != e->usize || st.comp_size != e->csize ||
		    st.crc != e->crc32 || st.comp_method != e->method || mode != e->mode) {
			fprintf(stderr,
				"%s: entry %lld differs: libzip %s %llu/%llu crc %08x mode %o, "
				"catalog %s %llu/%llu crc %08x mode %o\n",
				path, (long long)i, st.name, (unsigned long long)st.size,
				(unsigned long long)st.comp_size, st.crc, mode, e->name,
				(unsigned long long)e->usize, (unsigned long long)e->csize,
				e->crc32, e->mode);
			bad++;
		}
	}
	zip_close(z);
	wheel_meta_clear(&m);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: zipcheck CACHE_DIR BASE_URL WHEEL...\n");
		return 2;
	}
	char *db = xasprintf("%s/catalog.db", argv[1]);
	struct catalog *cat;
	char err[512];
	if (catalog_open(db, &cat, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	free(db);
	int bad = 0;
	for (int i = 3; i < argc; i++)
		bad += check_wheel(cat, argv[2], argv[i]);
	catalog_close(cat);
	printf("zipcheck: %d wheels, %d differ\n", argc - 3, bad);
	return bad ? 1 : 0;
}
