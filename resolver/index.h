/* index: a client for the simple repository API and --find-links.
 *
 * DESIGN
 * - Pages: PEP 503 HTML and PEP 691 JSON.  Every project page is asked for
 *   with an Accept header preferring JSON; the answer is parsed by its
 *   Content-Type (sniffed when absent).  Both parsers are pure functions
 *   (index_parse_html, index_parse_json) so the fuzzer and unit tests reach
 *   them without a network.
 * - Several indexes: each project is requested from all of them at once,
 *   and the first index (in the order given) that knows the project wins;
 *   the others' files are ignored (no mixing: the dependency-confusion-safe
 *   rule).  --find-links files (directories or HTML pages) are added to
 *   every project, as pip does.
 * - Core metadata of a wheel: the PEP 658/714 `.metadata` file when the
 *   page announces one (checked against its sha256), else METADATA read out
 *   of the wheel with range requests (size probe if unknown, the 64 KiB
 *   tail, the entry if it lies before the tail).  Results keyed by the
 *   wheel's sha256 are cached on disk under CACHE/metadata/.
 * - Concurrency: everything is asynchronous over the fetch engine.  The
 *   engine thread only appends bytes to a job's buffer and puts finished
 *   jobs on the done list (under client->lock); all parsing and follow-up
 *   submissions happen on the thread that calls into the client (one
 *   thread: the client is not thread-safe otherwise).  Waiting for one
 *   project or file processes whatever else finished meanwhile, so
 *   speculative work started by the hooks keeps the pipe full.
 * - Credentials: URL userinfo of an index is added to file URLs on the same
 *   host; netrc is libcurl's.  index_redact() strips them for lock files. */
#ifndef SITEFS_INDEX_H
#define SITEFS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_engine;

struct index_file {
	char *filename; /* last URL path segment, percent-decoded */
	char *url;	/* absolute, without fragment */
	uint8_t sha256[32];
	bool has_sha256;
	char *requires_python; /* data-requires-python / "requires-python", or NULL */
	bool yanked;	       /* PEP 592 */
	bool has_metadata;     /* PEP 658/714: url + ".metadata" exists */
	uint8_t metadata_sha256[32];
	bool has_metadata_sha256;
	uint64_t size;	 /* PEP 700 "size", or learned while reading; 0 = unknown */
	bool find_links; /* from --find-links, not from an index */

	/* Filled by the client once the metadata has been read. */
	int meta_state; /* private */
	int meta_err;	/* 0, or -errno (meta_errmsg says why) */
	char *meta_errmsg;
	char *metadata;	      /* the METADATA text */
	char **requires_dist; /* Requires-Dist values */
	size_t nrequires_dist;
	char *meta_requires_python; /* Requires-Python of the metadata, or NULL */
	char *meta_version;	    /* Version of the metadata */
};

struct index_page {
	struct index_file *files;
	size_t nfiles;
};

/* Parse a project page (or a find-links page) fetched from base_url.
 * Returns 0 and fills *ret (free with index_page_free; zero it first),
 * -EBADMSG with a message for input that is not a page at all.  Entries
 * that make no sense (no href, bad hash) are skipped. */
int index_parse_html(const char *base_url, const char *text, size_t len, struct index_page *ret,
		     char *err, size_t errlen);
int index_parse_json(const char *base_url, const char *text, size_t len, struct index_page *ret,
		     char *err, size_t errlen);
void index_page_free(struct index_page *p);
void index_file_clear(struct index_file *f);

/* RFC 3986 reference resolution; caller frees. */
char *index_url_join(const char *base, const char *ref);
/* url without userinfo (for lock files and messages); caller frees. */
char *index_redact(const char *url);

/* Core-metadata fields of a METADATA text (Requires-Dist, Requires-Python,
 * Version) into f.  Returns 0 or -EBADMSG. */
int index_parse_metadata(struct index_file *f, const char *text, size_t len);

struct index_project {
	char *name;		  /* PEP 503 normalized */
	const char *index_url;	  /* the index that served it (borrowed from the config), or NULL */
	struct index_file *files; /* stable once ready: the client never moves them */
	size_t nfiles;
	int err; /* 0, or -errno when no index could be asked (message in errmsg) */
	char errmsg[256];
	void *priv;
};

struct index_hooks {
	void *ud;
	/* A project's files are known (called on the client's thread). */
	void (*project_ready)(void *ud, struct index_project *p);
	/* A file's metadata arrived (or failed: f->meta_err). */
	void (*metadata_ready)(void *ud, struct index_project *p, struct index_file *f);
};

struct index_config {
	const char *const *index_urls; /* the first is the main index; may be empty (--no-index) */
	size_t nindex;
	const char *const *find_links; /* directories or URLs of HTML pages */
	size_t nfind_links;
	const char *cache_dir; /* metadata cache; NULL = none */
	struct index_hooks hooks;
};

struct index_client;

/* e: a running fetch engine (borrowed; outlives the client).  Reads the
 * find-links directories at once; find-links pages are fetched lazily.
 * Returns NULL with a message in err. */
struct index_client *index_client_new(const struct index_config *cfg, struct http_engine *e,
				      char *err, size_t errlen);
/* Waits for outstanding requests, frees every project and file.  Accepts NULL. */
struct index_client *index_client_free(struct index_client *c);

/* Starts fetching a project's pages unless already started; never waits.
 * Returns the project record (owned by the client). */
struct index_project *index_project_start(struct index_client *c, const char *name);
/* Waits until the project is known.  Returns 0 (p->nfiles may be 0: unknown
 * everywhere) or p->err. */
int index_project_wait(struct index_client *c, struct index_project *p);
/* Starts reading a file's metadata unless already started; never waits. */
void index_metadata_start(struct index_client *c, struct index_project *p, struct index_file *f);
/* Waits for it.  Returns 0 or f->meta_err. */
int index_metadata_wait(struct index_client *c, struct index_project *p, struct index_file *f);
/* Makes sure f->size and f->sha256 are known (the lock needs both): a one
 * byte probe for the size, a whole download for a missing hash; all files
 * in parallel.  Returns 0 or -errno with a message naming the file. */
int index_complete_files(struct index_client *c, struct index_file **files, size_t n, char *err,
			 size_t errlen);

struct index_stats {
	unsigned pages, metadata_files, metadata_ranges, metadata_cached, probes;
};
void index_get_stats(const struct index_client *c, struct index_stats *ret);

#endif
