/* zipcd: end records, zip64 records and central directory of untrusted zips.
 *
 * DESIGN: the input is a wheel from an arbitrary index, so every field is
 * bounded against the buffer before it is read, and every derived offset is
 * checked against the file with overflow-safe arithmetic.  We are stricter
 * than most readers: the central directory must end exactly where the end
 * records begin and hold exactly the entries announced, and local data
 * ranges may not overlap.  A zip that two readers could read differently
 * must not become a venv.  We stay lenient where strictness would only
 * reject sloppy writers that are still unambiguous, such as a literal 0xFFFF
 * entry count without zip64 records, or slack after the zip64 end record.
 *
 * Allocation is bounded by the input: the entry count is checked against
 * the central directory size (each entry takes at least 46 bytes), and all
 * names live in one block no larger than the central directory. */
#include "fetch/zipcd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/util/util.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_LOCATOR 0x07064b50u
#define SIG_Z64_EOCD 0x06064b50u

#define EOCD_LEN 22
#define EOCD_SEARCH (EOCD_LEN + 0xffff) /* the record plus the longest comment */
#define Z64_LOCATOR_LEN 20
#define Z64_EOCD_LEN 56
#define CDH_LEN 46

#define EXTRA_ZIP64 0x0001
#define EXTRA_XTIME 0x5455

/* Flag bits we cannot honour: encryption (0), strong encryption (6),
 * masked local headers (13). */
#define FLAGS_ENCRYPTED ((1u << 0) | (1u << 6) | (1u << 13))

#define HOST_UNIX 3

#define MAX_ENTRIES 1000000
#define MAX_NAME 4096 /* PATH_MAX: longer names cannot be opened anyway */

/* What zipcd_parse allocates; callers only see the leading struct zip_cd. */
struct zipcd_priv {
	struct zip_cd cd;
	const struct zip_entry **sorted; /* by name, for zipcd_find */
	char *names;			 /* every entry's name, one block */
};

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int __attribute__((format(printf, 3, 4)))
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* Names come from the attacker: quote them printable and bounded. */
static const char *quote(const uint8_t *s, size_t n, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	for (i = 0; i < n && o + 8 < outlen; i++) { /* room for \xNN, "..." and NUL */
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\') {
			out[o++] = (char)s[i];
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[s[i] >> 4];
			out[o++] = hex[s[i] & 15];
		}
	}
	if (i < n) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static const char *name_problem(const char *name, size_t len)
{
	size_t seg = 0; /* start of the current segment */

	if (len == 0)
		return "empty name";
	if (name[0] == '/')
		return "absolute path";
	if (len >= 2 && name[1] == ':' &&
	    ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z')))
		return "drive letter";
	for (size_t i = 0; i <= len; i++) {
		if (i < len && name[i] == '\0')
			return "NUL in name";
		if (i < len && name[i] == '\\')
			return "backslash in name";
		if (i < len && name[i] != '/')
			continue;
		/* A segment [seg, i) ends here. */
		if (i == seg) {
			if (i != len) /* only "dir/" may end in an empty segment */
				return "empty path segment";
		} else if (i - seg == 1 && name[seg] == '.') {
			return "'.' segment";
		} else if (i - seg == 2 && name[seg] == '.' && name[seg + 1] == '.') {
			return "name escapes the tree";
		}
		seg = i + 1;
	}
	return NULL;
}

bool zipcd_name_ok(const char *name, size_t len) { return name && !name_problem(name, len); }

/* DOS date and time, read as UTC (wheels carry no zone, and UTC keeps the
 * catalog independent of the machine's).  Out-of-range fields (month 0,
 * day 0, second 62) are normalized as timegm(3) would, which is also what
 * libzip and Python report; a bad timestamp is no reason to refuse a wheel. */
static int64_t dos_time(uint16_t date, uint16_t time)
{
	int64_t mon = (int64_t)((date >> 5) & 15) - 1; /* -1..14, normalized below */
	int64_t y = 1980 + (date >> 9) + (mon < 0 ? -1 : mon / 12);
	int64_t m = (mon % 12 + 12) % 12 + 1;

	/* days_from_civil (H. Hinnant), years starting in March */
	y -= m <= 2;
	int64_t era = y / 400; /* y >= 1978: no negative division */
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + (date & 31) - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	int64_t days = era * 146097 + doe - 719468;

	return days * 86400 + (time >> 11) * 3600 + ((time >> 5) & 63) * 60 + (time & 31) * 2;
}

static int cmp_name(const void *a, const void *b)
{
	const struct zip_entry *x = *(const struct zip_entry *const *)a;
	const struct zip_entry *y = *(const struct zip_entry *const *)b;

	return strcmp(x->name, y->name);
}

static int cmp_lho(const void *a, const void *b)
{
	const struct zip_entry *x = *(const struct zip_entry *const *)a;
	const struct zip_entry *y = *(const struct zip_entry *const *)b;

	if (x->lho != y->lho)
		return x->lho < y->lho ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Compares s with the string "<dir>/" where dir is dlen bytes. */
static int cmp_dir(const char *s, const char *dir, size_t dlen)
{
	int r = strncmp(s, dir, dlen);

	if (r)
		return r;
	return (unsigned char)s[dlen] - '/';
}

/* true if some entry lies under "<dir>/" (the sorted index is searched). */
static bool has_children(const struct zipcd_priv *p, const char *dir, size_t dlen)
{
	size_t lo = 0, hi = p->cd.n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cmp_dir(p->sorted[mid]->name, dir, dlen) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p->cd.n && cmp_dir(p->sorted[lo]->name, dir, dlen) == 0;
}

struct zipcd_parse_ctx {
	char *err;
	size_t errlen;
	char q[160], q2[160]; /* quoted names for messages */
};

/* Parses one central directory header at p (remain bytes left in the
 * directory) into e, copying the name to *names.  Returns the header's length
 * or -EBADMSG. */
static int64_t parse_entry(struct zipcd_parse_ctx *c, size_t i, const uint8_t *p, uint64_t remain,
			   struct zip_entry *e, char **names)
{
	uint16_t made_by, flags, method, nl, xl, cl, disk;
	uint32_t csize, usize, lho, ext;
	const uint8_t *name, *x;
	const char *why;
	bool z64_seen = false, xt_seen = false;

	if (remain < CDH_LEN || le32(p) != SIG_CENTRAL)
		return fail(c->err, c->errlen, "entry %zu: bad central directory header", i);
	made_by = le16(p + 4);
	flags = le16(p + 8);
	method = le16(p + 10);
	csize = le32(p + 20);
	usize = le32(p + 24);
	nl = le16(p + 28);
	xl = le16(p + 30);
	cl = le16(p + 32);
	disk = le16(p + 34);
	ext = le32(p + 38);
	lho = le32(p + 42);
	if ((uint64_t)CDH_LEN + nl + xl + cl > remain)
		return fail(c->err, c->errlen, "entry %zu: header runs past the central directory",
			    i);
	name = p + CDH_LEN;
	x = name + nl;
	quote(name, nl, c->q, sizeof(c->q));
	if (nl > MAX_NAME)
		return fail(c->err, c->errlen, "entry %zu: name of %u bytes is too long", i, nl);
	why = name_problem((const char *)name, nl);
	if (why)
		return fail(c->err, c->errlen, "entry '%s': %s", c->q, why);
	if (flags & FLAGS_ENCRYPTED)
		return fail(c->err, c->errlen, "entry '%s': encrypted entries are not supported",
			    c->q);
	if (method != ZIP_METHOD_STORED && method != ZIP_METHOD_DEFLATED)
		return fail(c->err, c->errlen, "entry '%s': compression method %u is not supported",
			    c->q, method);

	e->usize = usize;
	e->csize = csize;
	e->lho = lho;
	e->mtime = dos_time(le16(p + 14), le16(p + 12));
	/* Extra fields: a truncated trailing field is ignored (as other readers
	 * do); the first zip64 and timestamp fields win. */
	for (size_t off = 0; off + 4 <= xl;) {
		uint16_t id = le16(x + off), sz = le16(x + off + 2);
		const uint8_t *d = x + off + 4;

		if (off + 4 + sz > xl)
			break;
		if (id == EXTRA_ZIP64 && !z64_seen) {
			/* Only the saturated fields are present, in this order. */
			size_t need = 8 * ((usize == 0xffffffff) + (csize == 0xffffffff) +
					   (lho == 0xffffffff)) +
				      4 * (disk == 0xffff);
			if (sz < need)
				return fail(c->err, c->errlen,
					    "entry '%s': zip64 extra field too short (%u < %zu)",
					    c->q, sz, need);
			if (usize == 0xffffffff) {
				e->usize = le64(d);
				d += 8;
			}
			if (csize == 0xffffffff) {
				e->csize = le64(d);
				d += 8;
			}
			if (lho == 0xffffffff) {
				e->lho = le64(d);
				d += 8;
			}
			if (disk == 0xffff)
				disk = le32(d) ? 1 : 0;
			z64_seen = true;
		} else if (id == EXTRA_XTIME && !xt_seen && sz >= 5 && (d[0] & 1)) {
			/* Read as unsigned, as Go and Info-ZIP's newer code
			 * do: post-2038 times are likelier than pre-1970. */
			e->mtime = le32(d + 1);
			xt_seen = true;
		}
		off += 4 + (size_t)sz;
	}
	if (disk != 0)
		return fail(c->err, c->errlen, "entry '%s': multi-disk archives are not supported",
			    c->q);
	if (method == ZIP_METHOD_STORED && e->csize != e->usize)
		return fail(c->err, c->errlen,
			    "entry '%s': stored entry with compressed size %llu != size %llu", c->q,
			    (unsigned long long)e->csize, (unsigned long long)e->usize);

	e->method = method;
	e->flags = flags;
	e->crc32 = le32(p + 16);
	e->mode = (made_by >> 8) == HOST_UNIX ? ext >> 16 : 0;
	memcpy(*names, name, nl);
	(*names)[nl] = '\0';
	e->name = *names;
	*names += (size_t)nl + 1;
	return (int64_t)CDH_LEN + nl + xl + cl;
}

/* Every entry's local header, name and data must fit, in order, between
 * the start of the file and the central directory. */
static int check_layout(struct zipcd_parse_ctx *c, struct zipcd_priv *p)
{
	const struct zip_entry **by_lho;
	const struct zip_entry *prev = NULL;
	uint64_t prev_end = 0;
	int r = 0;

	if (!p->cd.n)
		return 0;
	by_lho = xmalloc(p->cd.n * sizeof(*by_lho));
	for (size_t i = 0; i < p->cd.n; i++)
		by_lho[i] = &p->cd.entries[i];
	qsort(by_lho, p->cd.n, sizeof(*by_lho), cmp_lho);
	for (size_t i = 0; i < p->cd.n; i++) {
		const struct zip_entry *e = by_lho[i];
		uint64_t hdr = ZIPCD_LOCAL_HEADER_MIN + strlen(e->name);
		uint64_t end;

		quote((const uint8_t *)e->name, strlen(e->name), c->q, sizeof(c->q));
		if (prev && e->lho < prev_end) {
			quote((const uint8_t *)prev->name, strlen(prev->name), c->q2,
			      sizeof(c->q2));
			r = fail(c->err, c->errlen, "entry '%s': local data overlaps entry '%s'",
				 c->q, c->q2);
			break;
		}
		/* Ordered so nothing can overflow: lho, hdr and csize are each
		 * checked against cd_off before they are added. */
		if (e->lho > p->cd.cd_off || hdr > p->cd.cd_off - e->lho ||
		    e->csize > p->cd.cd_off - e->lho - hdr) {
			r = fail(c->err, c->errlen,
				 "entry '%s': local data at %llu (+%llu) runs into the central "
				 "directory at %llu",
				 c->q, (unsigned long long)e->lho, (unsigned long long)e->csize,
				 (unsigned long long)p->cd.cd_off);
			break;
		}
		end = e->lho + hdr + e->csize;
		prev = e;
		prev_end = end;
	}
	free(by_lho);
	return r;
}

static int check_names(struct zipcd_parse_ctx *c, struct zipcd_priv *p)
{
	for (size_t i = 0; i < p->cd.n; i++)
		p->sorted[i] = &p->cd.entries[i];
	qsort(p->sorted, p->cd.n, sizeof(*p->sorted), cmp_name);
	for (size_t i = 0; i < p->cd.n; i++) {
		const char *s = p->sorted[i]->name;
		size_t l = strlen(s);

		if (i > 0 && strcmp(p->sorted[i - 1]->name, s) == 0)
			return fail(c->err, c->errlen, "entry '%s': duplicate name",
				    quote((const uint8_t *)s, l, c->q, sizeof(c->q)));
		/* "a" as a file and "a/" or "a/b": no tree can hold both. */
		if (s[l - 1] != '/' && has_children(p, s, l))
			return fail(c->err, c->errlen, "entry '%s': both a file and a directory",
				    quote((const uint8_t *)s, l, c->q, sizeof(c->q)));
	}
	return 0;
}

int zipcd_parse(const uint8_t *buf, size_t len, uint64_t buf_off, uint64_t file_size,
		struct zip_cd **ret, uint64_t *ret_need_off, char *err, size_t errlen)
{
	struct zipcd_parse_ctx c = {.err = err, .errlen = errlen};
	uint64_t lo, start, pos, cd_end, cd_off, cd_size, n;
	uint32_t disk, cd_disk;
	uint64_t n_disk;
	const uint8_t *p;
	bool found = false, plain;
	struct zipcd_priv *priv;
	char *names;
	uint64_t consumed = 0;
	int r;

	if (err && errlen)
		err[0] = '\0';
	if ((!buf && len) || buf_off > file_size || file_size - buf_off != len) {
		fail(err, errlen, "buffer [%llu, +%zu) does not end the file of %llu bytes",
		     (unsigned long long)buf_off, len, (unsigned long long)file_size);
		return -EINVAL;
	}
	if (file_size < EOCD_LEN)
		return fail(err, errlen, "%llu bytes is too short for a zip",
			    (unsigned long long)file_size);

	/* The end record is followed by its comment and nothing else: search
	 * backwards for a signature whose comment length lands on the end. */
	lo = file_size > EOCD_SEARCH ? file_size - EOCD_SEARCH : 0;
	start = MAX(lo, buf_off);
	for (pos = file_size - EOCD_LEN + 1; pos-- > start;) {
		p = buf + (pos - buf_off);
		if (p[0] == 'P' && le32(p) == SIG_EOCD &&
		    pos + EOCD_LEN + le16(p + 20) == file_size) {
			found = true;
			break;
		}
	}
	if (!found) {
		if (start > lo) {
			*ret_need_off = lo;
			return -EAGAIN;
		}
		return fail(err, errlen, "no end of central directory record");
	}
	disk = le16(p + 4);
	cd_disk = le16(p + 6);
	n_disk = le16(p + 8);
	n = le16(p + 10);
	cd_size = le32(p + 12);
	cd_off = le32(p + 16);
	cd_end = pos;

	/* Zip64 records sit between the central directory and the end record,
	 * their locator right before the latter.  With no field saturated and
	 * the central directory ending at the end record, there is no room for
	 * them: the 20 bytes there belong to the central directory and are not
	 * read as a locator (which also saves a round trip). */
	plain = disk != 0xffff && cd_disk != 0xffff && n_disk != 0xffff && n != 0xffff &&
		cd_size != 0xffffffff && cd_off != 0xffffffff && cd_off + cd_size == pos;
	if (!plain && pos >= Z64_LOCATOR_LEN) {
		const uint8_t *l, *z;
		uint64_t loc = pos - Z64_LOCATOR_LEN, zoff, zlen;

		if (loc < buf_off) {
			*ret_need_off = loc;
			return -EAGAIN;
		}
		l = buf + (loc - buf_off);
		if (le32(l) == SIG_Z64_LOCATOR) {
			if (le32(l + 4) != 0 || le32(l + 16) > 1)
				return fail(err, errlen, "multi-disk archives are not supported");
			zoff = le64(l + 8);
			if (loc < Z64_EOCD_LEN || zoff > loc - Z64_EOCD_LEN)
				return fail(err, errlen,
					    "zip64 end record offset %llu out of bounds",
					    (unsigned long long)zoff);
			if (zoff < buf_off) {
				*ret_need_off = zoff;
				return -EAGAIN;
			}
			z = buf + (zoff - buf_off);
			zlen = le64(z + 4);
			if (le32(z) != SIG_Z64_EOCD || zlen < Z64_EOCD_LEN - 12 ||
			    zlen > loc - zoff - 12)
				return fail(err, errlen, "bad zip64 end record");
			/* Saturated fields defer to zip64; others must agree,
			 * or two readers would see two different zips. */
			if ((disk != 0xffff && disk != le32(z + 16)) ||
			    (cd_disk != 0xffff && cd_disk != le32(z + 20)) ||
			    (n_disk != 0xffff && n_disk != le64(z + 24)) ||
			    (n != 0xffff && n != le64(z + 32)) ||
			    (cd_size != 0xffffffff && cd_size != le64(z + 40)) ||
			    (cd_off != 0xffffffff && cd_off != le64(z + 48)))
				return fail(err, errlen,
					    "zip64 end record disagrees with the end "
					    "of central directory record");
			disk = le32(z + 16);
			cd_disk = le32(z + 20);
			n_disk = le64(z + 24);
			n = le64(z + 32);
			cd_size = le64(z + 40);
			cd_off = le64(z + 48);
			cd_end = zoff;
		}
	}
	if (disk != 0 || cd_disk != 0 || n_disk != n)
		return fail(err, errlen, "multi-disk archives are not supported");
	if (n > MAX_ENTRIES)
		return fail(err, errlen, "%llu entries is too many", (unsigned long long)n);
	if (cd_off > cd_end || cd_size != cd_end - cd_off)
		return fail(err, errlen,
			    "central directory at %llu (+%llu) does not end at the end records at "
			    "%llu",
			    (unsigned long long)cd_off, (unsigned long long)cd_size,
			    (unsigned long long)cd_end);
	if (n > cd_size / CDH_LEN)
		return fail(err, errlen,
			    "%llu entries cannot fit in a central directory of %llu bytes",
			    (unsigned long long)n, (unsigned long long)cd_size);
	if (cd_off < buf_off) {
		*ret_need_off = cd_off;
		return -EAGAIN;
	}

	priv = xcalloc(1, sizeof(*priv));
	priv->cd.n = n;
	priv->cd.cd_off = cd_off;
	priv->cd.cd_size = cd_size;
	priv->cd.entries = xcalloc(n, sizeof(*priv->cd.entries));
	priv->sorted = xcalloc(n, sizeof(*priv->sorted));
	/* Each header is 46 bytes plus its name: names and NULs fit in cd_size. */
	priv->names = names = xmalloc(cd_size + 1);

	p = buf + (cd_off - buf_off);
	for (size_t i = 0; i < n; i++) {
		int64_t used = parse_entry(&c, i, p + consumed, cd_size - consumed,
					   &priv->cd.entries[i], &names);

		if (used < 0) {
			r = (int)used;
			goto fail;
		}
		consumed += (uint64_t)used;
	}
	if (consumed != cd_size) {
		r = fail(err, errlen, "central directory has %llu bytes after its %llu entries",
			 (unsigned long long)(cd_size - consumed), (unsigned long long)n);
		goto fail;
	}
	r = check_layout(&c, priv);
	if (r < 0)
		goto fail;
	r = check_names(&c, priv);
	if (r < 0)
		goto fail;
	*ret = &priv->cd;
	return 0;

fail:
	zipcd_free(&priv->cd);
	return r;
}

struct zip_cd *zipcd_free(struct zip_cd *cd)
{
	struct zipcd_priv *p = (struct zipcd_priv *)cd;

	if (!p)
		return NULL;
	free(p->cd.entries);
	free(p->sorted);
	free(p->names);
	free(p);
	return NULL;
}

uint64_t zipcd_span_guess(const struct zip_entry *e)
{
	uint64_t fixed = ZIPCD_LOCAL_HEADER_MIN + strlen(e->name) + ZIPCD_LOCAL_SLACK;

	return e->csize > UINT64_MAX - fixed ? UINT64_MAX : e->csize + fixed;
}

int zipcd_local_header(const uint8_t *buf, size_t len, const struct zip_entry *e,
		       uint64_t *ret_data_off)
{
	size_t nl = strlen(e->name);
	uint64_t hdr;

	if (len < ZIPCD_LOCAL_HEADER_MIN) {
		/* A lower bound: the extra field's length is still unknown. */
		*ret_data_off = e->lho + ZIPCD_LOCAL_HEADER_MIN + nl;
		return -EAGAIN;
	}
	if (le32(buf) != SIG_LOCAL)
		return -EBADMSG;
	hdr = (uint64_t)ZIPCD_LOCAL_HEADER_MIN + le16(buf + 26) + le16(buf + 28);
	/* The data must lie where the central directory's sizes say; a local
	 * header disagreeing on method or name is another zip's. */
	if (le16(buf + 26) != nl || le16(buf + 8) != e->method)
		return -EBADMSG;
	if (e->lho > UINT64_MAX - hdr || e->lho + hdr > UINT64_MAX - e->csize)
		return -EBADMSG;
	if (len < hdr) {
		*ret_data_off = e->lho + hdr;
		return -EAGAIN;
	}
	if (memcmp(buf + ZIPCD_LOCAL_HEADER_MIN, e->name, nl) != 0)
		return -EBADMSG;
	*ret_data_off = e->lho + hdr;
	return 0;
}

const struct zip_entry *zipcd_find(const struct zip_cd *cd, const char *name)
{
	const struct zipcd_priv *p = (const struct zipcd_priv *)cd;
	size_t lo = 0, hi;

	if (!p || !name)
		return NULL;
	hi = p->cd.n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = strcmp(p->sorted[mid]->name, name);

		if (r == 0)
			return p->sorted[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}
