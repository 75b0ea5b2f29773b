/* source: turns an index client's files into the resolver's candidates for
 * one interpreter — versions grouped from wheel filenames, the most specific
 * compatible wheel per version (PEP 425 priority), data-requires-python,
 * yanked files, --hash filters and direct references — and prefetches:
 * when a project page arrives, the metadata of the version most likely to
 * be chosen is requested; when metadata arrives, the pages of its
 * dependencies are.  So a cold resolve costs about one round trip per level
 * of the dependency graph, not one per package.
 *
 * Single-threaded: lives on the thread that runs the index client. */
#ifndef SITEFS_SOURCE_H
#define SITEFS_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

#include "resolver/index.h"
#include "resolver/interp.h"
#include "resolver/reqfile.h"
#include "resolver/resolve.h"

struct source;

/* ip, rf: borrowed, must outlive the source.  rf gives --hash values,
 * direct references and specifier hints (for prefetching). */
struct source *source_new(const struct interp *ip, const struct reqfile *rf, bool pre);
struct source *source_free(struct source *s);
/* Hooks to put in index_config before creating the client. */
struct index_hooks source_hooks(struct source *s);
/* The client to use (borrowed). */
void source_set_client(struct source *s, struct index_client *ic);
/* The provider for resolve_run (borrowed from s). */
const struct resolve_provider *source_provider(struct source *s);

/* The chosen wheel of candidate idx of project name, and the index it came
 * from (NULL for find-links and direct references).  Borrowed from the
 * client.  Returns 0 or -ENOENT. */
int source_file(struct source *s, const char *name, size_t idx, struct index_file **ret_f,
		const char **ret_index);

#endif
