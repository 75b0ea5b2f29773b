/* test_index: simple-API page parsing (PEP 503 HTML, PEP 691 JSON, PEP 592
 * yanked, PEP 658/714 metadata attributes), URL joining, credentials
 * redaction, core-metadata parsing.  Fixtures in tests/data/index/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/util/util.h"
#include "resolver/index.h"
#include "check.h"

static const char *BASE = "https://idx.example/simple/demo/";

static void test_join(void)
{
	static const char *const cases[][3] = {
	    {"https://h/simple/demo/", "../../p/x.whl", "https://h/p/x.whl"},
	    {"https://h/simple/demo/", "x.whl#sha256=ab", "https://h/simple/demo/x.whl#sha256=ab"},
	    {"https://h/simple/demo/", "/abs/x.whl", "https://h/abs/x.whl"},
	    {"https://h/simple/demo/", "//cdn/x.whl", "https://cdn/x.whl"},
	    {"https://h/simple/demo/", "http://o/x.whl", "http://o/x.whl"},
	    {"https://h:8080/a/b/c", "../d", "https://h:8080/a/d"},
	    {"https://u:p@h/simple/demo/", "../../f/x.whl", "https://u:p@h/f/x.whl"},
	    {"https://h/a/b/", "./c/./d/../e", "https://h/a/b/c/e"},
	    {"https://h/a/b/", "../../../x", "https://h/x"},
	    {"https://h", "x", "https://h/x"},
	    {"/srv/flat/index.html", "x.whl", "/srv/flat/x.whl"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *r = index_url_join(cases[i][0], cases[i][1]);

		CHECK_STR(r, cases[i][2]);
		free(r);
	}
	char *r = index_redact("https://user:secret@h.example:8443/simple/");

	CHECK_STR(r, "https://h.example:8443/simple/");
	free(r);
	r = index_redact("https://h.example/a@b/");
	CHECK_STR(r, "https://h.example/a@b/");
	free(r);
}

static char *fixture(const char *name, size_t *len)
{
	char *path = xasprintf("../tests/data/index/%s", name), *text = NULL;

	if (file_read_all(path, &text, len) < 0) {
		free(path);
		path = xasprintf("data/index/%s", name);
		if (file_read_all(path, &text, len) < 0) {
			fprintf(stderr, "cannot read fixture %s\n", name);
			exit(1);
		}
	}
	free(path);
	return text;
}

static void test_html(void)
{
	size_t len;
	char *text = fixture("page.html", &len), err[128];
	struct index_page pg = {0};

	CHECK_INT(index_parse_html(BASE, text, len, &pg, err, sizeof(err)), 0);
	CHECK_INT(pg.nfiles, 4);
	if (pg.nfiles == 4) {
		struct index_file *f = pg.files;

		CHECK_STR(f[0].filename, "demo-1.0-py3-none-any.whl");
		CHECK_STR(f[0].url, "https://idx.example/packages/demo-1.0-py3-none-any.whl");
		CHECK(f[0].has_sha256 && f[0].sha256[0] == 0xaa);
		CHECK_STR(f[0].requires_python, ">=3.8");
		CHECK(!f[0].yanked && !f[0].has_metadata);

		CHECK_STR(f[1].url, "https://idx.example/abs/demo-2.0-py3-none-any.whl");
		CHECK(f[1].yanked && f[1].has_metadata && !f[1].has_metadata_sha256);
		CHECK(!f[1].has_sha256);

		CHECK_STR(f[2].filename, "demo+x-3.0-py3-none-any.whl"); /* percent-decoded */
		CHECK(f[2].has_metadata && f[2].has_metadata_sha256 &&
		      f[2].metadata_sha256[31] == 0xbb);
		CHECK(!f[2].has_sha256); /* md5 fragments are not hashes we use */

		CHECK_STR(f[3].filename, "demo-4.0.tar.gz");
		CHECK_STR(f[3].requires_python, "<4,>=3.9");
		CHECK(f[3].yanked);
	}
	index_page_free(&pg);
	free(text);

	/* <base href> changes what links are relative to */
	const char *b = "<base href='https://other/x/'><a href='y.whl'>y</a>";

	CHECK_INT(index_parse_html(BASE, b, strlen(b), &pg, err, sizeof(err)), 0);
	CHECK_INT(pg.nfiles, 1);
	if (pg.nfiles)
		CHECK_STR(pg.files[0].url, "https://other/x/y.whl");
	index_page_free(&pg);

	/* garbage is not an error, just no links */
	const char *g = "<a <a href=\"\"><<<>>> &#xffffffff; <a href=\"x/\">dir</a> <a href";

	CHECK_INT(index_parse_html(BASE, g, strlen(g), &pg, err, sizeof(err)), 0);
	CHECK_INT(pg.nfiles, 0);
	index_page_free(&pg);
}

static void test_json(void)
{
	size_t len;
	char *text = fixture("page.json", &len), err[128];
	struct index_page pg = {0};

	CHECK_INT(index_parse_json(BASE, text, len, &pg, err, sizeof(err)), 0);
	CHECK_INT(pg.nfiles, 3);
	if (pg.nfiles == 3) {
		struct index_file *f = pg.files;

		CHECK_STR(f[0].url, "https://idx.example/packages/demo-1.0-py3-none-any.whl");
		CHECK(f[0].has_sha256 && f[0].size == 1234 && f[0].has_metadata_sha256);
		CHECK_STR(f[0].requires_python, ">=3.8");
		CHECK(f[1].yanked && f[1].has_metadata && !f[1].has_sha256);
		CHECK(!f[2].yanked && !f[2].has_metadata);
		CHECK_STR(f[2].url, "https://idx.example/x/demo-3.0-py3-none-any.whl");
	}
	index_page_free(&pg);
	free(text);

	static const char *const bad[] = {
	    "",
	    "[]",
	    "{\"files\": 3}",
	    "{\"meta\": {\"api-version\": \"2.0\"}, \"files\": []}",
	    "{\"files\": [",
	    "{\"files\": []} trailing",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int r = index_parse_json(BASE, bad[i], strlen(bad[i]), &pg, err, sizeof(err));

		if (r != -EBADMSG)
			fprintf(stderr, "bad JSON case %zu accepted\n", i);
		CHECK_INT(r, -EBADMSG);
		index_page_free(&pg);
	}
}

static void test_metadata(void)
{
	const char *m = "Metadata-Version: 2.1\r\nName: demo\nVersion: 1.0\n"
			"Requires-Dist: a>=1\nrequires-dist: b ; extra == 'x'\n"
			"Requires-Python: >=3.8,\n  <4\nDescription: multi\n  line\n\n"
			"Requires-Dist: not-in-the-body\n";
	struct index_file f = {0};

	CHECK_INT(index_parse_metadata(&f, m, strlen(m)), 0);
	CHECK_INT(f.nrequires_dist, 2);
	if (f.nrequires_dist == 2) {
		CHECK_STR(f.requires_dist[0], "a>=1");
		CHECK_STR(f.requires_dist[1], "b ; extra == 'x'");
	}
	CHECK_STR(f.meta_requires_python, ">=3.8, <4");
	CHECK_STR(f.meta_version, "1.0");
	index_file_clear(&f);
}

int main(void)
{
	test_join();
	test_html();
	test_json();
	test_metadata();
	return check_done("index");
}
