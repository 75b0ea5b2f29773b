/* test_toml: table-driven valid/invalid documents, positions, limits, a
 * realistic pylock.toml, and a differential test against Python's tomllib
 * on random (and randomly mutated) documents. */
#include "resolver/toml.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/util/util.h"
#include "tests/unit/check.h"

/* ---- dumping a tree ---- */

enum { DUMP_READABLE, DUMP_ORACLE };

static void dump_float(struct buf *b, double f, int mode)
{
	if (mode == DUMP_ORACLE) {
		if (isnan(f)) {
			buf_puts(b, "fnan");
			return;
		}
		unsigned char by[sizeof(double)];
		memcpy(by, &f, sizeof(by));
		buf_puts(b, "f");
		for (size_t i = 0; i < sizeof(by); i++)
			buf_printf(b, "%02x", by[i]);
		return;
	}
	if (isnan(f)) {
		buf_puts(b, "nan");
		return;
	}
	if (isinf(f)) {
		buf_puts(b, f < 0 ? "-inf" : "inf");
		return;
	}
	char tmp[64];
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	buf_puts(b, tmp);
}

static void dump_str(struct buf *b, const char *s, int mode)
{
	if (mode == DUMP_ORACLE) {
		for (; *s; s++)
			buf_printf(b, "%02x", (unsigned char)*s);
		return;
	}
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else if (c == '\n')
			buf_puts(b, "\\n");
		else if (c == '\t')
			buf_puts(b, "\\t");
		else if (c == '\r')
			buf_puts(b, "\\r");
		else if (c < 0x20 || c == 0x7f)
			buf_printf(b, "\\x%02x", c);
		else
			buf_append(b, s, 1);
	}
}

static void dump(struct buf *b, const struct toml_value *v, int mode)
{
	switch (v->type) {
	case TOML_STRING:
		buf_puts(b, mode == DUMP_ORACLE ? "s" : "\"");
		dump_str(b, v->s, mode);
		if (mode != DUMP_ORACLE)
			buf_puts(b, "\"");
		break;
	case TOML_INTEGER:
		buf_printf(b, mode == DUMP_ORACLE ? "i%lld" : "%lld", (long long)v->i);
		break;
	case TOML_FLOAT:
		dump_float(b, v->f, mode);
		break;
	case TOML_BOOL:
		if (mode == DUMP_ORACLE)
			buf_puts(b, v->b ? "t" : "f");
		else
			buf_puts(b, v->b ? "true" : "false");
		break;
	case TOML_DATETIME:
		if (mode == DUMP_ORACLE)
			buf_puts(b, "D");
		else
			buf_printf(b, "D(%s)", v->s);
		break;
	case TOML_ARRAY:
		buf_puts(b, "[");
		for (size_t i = 0; i < v->arr.n; i++) {
			if (i)
				buf_puts(b, ",");
			dump(b, v->arr.items[i], mode);
		}
		buf_puts(b, "]");
		break;
	case TOML_TABLE:
		buf_puts(b, "{");
		for (size_t i = 0; i < v->tab.n; i++) {
			if (i)
				buf_puts(b, ",");
			if (mode == DUMP_ORACLE) {
				dump_str(b, v->tab.keys[i], mode);
				buf_puts(b, ":");
			} else {
				buf_printf(b, "%s=", v->tab.keys[i]);
			}
			dump(b, v->tab.vals[i], mode);
		}
		buf_puts(b, "}");
		break;
	}
}

/* Parses and dumps; returns a malloc'd dump or "ERR:<message>". */
static char *parse_dump(const char *doc, size_t len, int mode)
{
	struct toml_value *v = NULL;
	char err[256];
	struct buf b;
	buf_init(&b);
	if (toml_parse(doc, len, &v, err, sizeof(err)) < 0) {
		buf_printf(&b, "ERR:%s", err);
	} else {
		dump(&b, v, mode);
		toml_free(v);
	}
	return (char *)buf_steal(&b, NULL);
}

/* ---- valid documents ---- */

struct valid_case {
	const char *doc;
	const char *want;
};

/* clang-format off */
static const struct valid_case valid_cases[] = {
	{ "", "{}" },
	{ "\n\n  \t\n", "{}" },
	{ "# only a comment", "{}" },
	{ "# comment \xc3\xa9 \t with tab\n", "{}" },
	{ "a = 1", "{a=1}" },
	{ "a=1#c", "{a=1}" },
	{ " \t a \t = \t 1 \t # c\n", "{a=1}" },
	{ "a = 1\r\nb = 2\r\n", "{a=1,b=2}" },
	{ "\"quoted key\" = 1", "{quoted key=1}" },
	{ "'lit \"key\"' = 1", "{lit \"key\"=1}" },
	{ "\"\" = 1", "{=1}" },
	{ "a.b.c = 1", "{a={b={c=1}}}" },
	{ "a . b = 1\na.\tc = 2", "{a={b=1,c=2}}" },
	{ "site.\"google.com\" = true", "{site={google.com=true}}" },
	{ "3.14159 = \"pi\"", "{3={14159=\"pi\"}}" },
	{ "1234 = 1\n-_- = 2\ntrue = 3\ninf = 4", "{1234=1,-_-=2,true=3,inf=4}" },
	{ "\"\xca\x8e\xc7\x9d\xca\x9e\" = 1", "{\xca\x8e\xc7\x9d\xca\x9e=1}" },
	{ "\"a\\u0041\" = 1", "{aA=1}" },
	/* strings */
	{ "s = \"a\\tb\\n\\\"\\\\\\u00e9\\U0001F600\\b\\f\\r\"",
	  "{s=\"a\\tb\\n\\\"\\\\\xc3\xa9\xf0\x9f\x98\x80\\x08\\x0c\\r\"}" },
	{ "s = \"tab\there\"", "{s=\"tab\\there\"}" },
	{ "s = \"\xe6\x97\xa5\xe6\x9c\xac\" # \xe3\x82\xb3", "{s=\"\xe6\x97\xa5\xe6\x9c\xac\"}" },
	{ "s = \"\"", "{s=\"\"}" },
	{ "s = ''", "{s=\"\"}" },
	{ "s = 'C:\\Users\\x'", "{s=\"C:\\\\Users\\\\x\"}" },
	{ "s = '<\\i\\c*\\s*>'", "{s=\"<\\\\i\\\\c*\\\\s*>\"}" },
	{ "s = \"\"\"\nline1\nline2\"\"\"", "{s=\"line1\\nline2\"}" },
	{ "s = \"\"\"\r\nline1\r\nline2\"\"\"", "{s=\"line1\\nline2\"}" },
	{ "s = \"\"\"a \\\n   \n  b\"\"\"", "{s=\"a b\"}" },
	{ "s = \"\"\"a \\  \t\r\n  b\\\n\"\"\"", "{s=\"a b\"}" },
	{ "s = \"\"\"a\"\"\"\"", "{s=\"a\\\"\"}" },
	{ "s = \"\"\"a\"\"\"\"\"", "{s=\"a\\\"\\\"\"}" },
	{ "s = \"\"\"\"\"a\"\"\"\"\"", "{s=\"\\\"\\\"a\\\"\\\"\"}" },
	{ "s = \"\"\"\"\"\"\"", "{s=\"\\\"\"}" },
	{ "s = \"\"\"a\"b\"\"c\"\"\"", "{s=\"a\\\"b\\\"\\\"c\"}" },
	{ "s = \"\"\"\\\"\"\"\"\"\"", "{s=\"\\\"\\\"\\\"\"}" },
	{ "s = '''\nfoo\n'''", "{s=\"foo\\n\"}" },
	{ "s = '''a''''", "{s=\"a'\"}" },
	{ "s = '''a'''''", "{s=\"a''\"}" },
	{ "s = '''a\\nb \"\"\" '' c'''", "{s=\"a\\\\nb \\\"\\\"\\\" '' c\"}" },
	{ "s = '''a\r\nb'''", "{s=\"a\\nb\"}" },
	/* integers */
	{ "i = +99\nj = -17\nk = 0\nl = -0\nm = +0", "{i=99,j=-17,k=0,l=0,m=0}" },
	{ "i = 1_000\nj = 5_349_221\nk = 1_2_3_4_5", "{i=1000,j=5349221,k=12345}" },
	{ "h = 0xDEADBEEF\ni = 0xdead_beef\nj = 0x00ff", "{h=3735928559,i=3735928559,j=255}" },
	{ "o = 0o755\np = 0o0_1\nb = 0b11010110\nc = 0b0", "{o=493,p=1,b=214,c=0}" },
	{ "max = 9223372036854775807\nmin = -9223372036854775808\nh = 0x7FFFFFFFFFFFFFFF",
	  "{max=9223372036854775807,min=-9223372036854775808,h=9223372036854775807}" },
	/* floats */
	{ "a = 1.0\nb = 3.1415\nc = -0.01\nd = 5e+22\ne = 1e06\nf = -2E-2",
	  "{a=1,b=3.1415,c=-0.01,d=5e+22,e=1000000,f=-0.02}" },
	{ "a = 6.626e-34\nb = 224_617.445_991_228\nc = 0e0\nd = -0.0\ne = 1e1_0",
	  "{a=6.626e-34,b=224617.445991228,c=0,d=-0,e=10000000000}" },
	{ "a = inf\nb = +inf\nc = -inf\nd = nan\ne = +nan\nf = -nan",
	  "{a=inf,b=inf,c=-inf,d=nan,e=nan,f=nan}" },
	{ "a = 1e400\nb = 0.1", "{a=inf,b=0.1}" },
	/* booleans and datetimes */
	{ "t = true\nf = false", "{t=true,f=false}" },
	{ "a = 1979-05-27T07:32:00Z\nb = 1979-05-27T00:32:00-07:00\n"
	  "c = 1979-05-27T00:32:00.999999+07:30",
	  "{a=D(1979-05-27T07:32:00Z),b=D(1979-05-27T00:32:00-07:00),"
	  "c=D(1979-05-27T00:32:00.999999+07:30)}" },
	{ "a = 1979-05-27 07:32:00Z\nb = 1979-05-27T07:32:00\nc = 1979-05-27\nd = 07:32:00\n"
	  "e = 00:32:00.999999\nf = 1979-05-27t07:32:00z\ng = 2000-02-29",
	  "{a=D(1979-05-27 07:32:00Z),b=D(1979-05-27T07:32:00),c=D(1979-05-27),d=D(07:32:00),"
	  "e=D(00:32:00.999999),f=D(1979-05-27t07:32:00z),g=D(2000-02-29)}" },
	{ "a = 1979-05-27 # date then comment\nb = [1979-05-27, 07:32:00]",
	  "{a=D(1979-05-27),b=[D(1979-05-27),D(07:32:00)]}" },
	{ "a = 2023-12-31T16:37:36.123456789Z", "{a=D(2023-12-31T16:37:36.123456789Z)}" },
	/* arrays */
	{ "a = [ 1, 2, 3 ]\nb = []\nc = [1,]\nd = [ ]", "{a=[1,2,3],b=[],c=[1],d=[]}" },
	{ "a = [\n  1, # one\n  2 # two\n  ,\n  # nothing\n]\n", "{a=[1,2]}" },
	{ "a = [ [ 1, 2 ], [\"a\", 'b'], [[]] ]", "{a=[[1,2],[\"a\",\"b\"],[[]]]}" },
	{ "a = [1, 'x', 1.5, {a=1}, true, 1979-05-27]",
	  "{a=[1,\"x\",1.5,{a=1},true,D(1979-05-27)]}" },
	{ "a = [ { x = 1, y = 2 }, {} ]", "{a=[{x=1,y=2},{}]}" },
	{ "a = [\r\n1,\r\n2\r\n]", "{a=[1,2]}" },
	/* inline tables */
	{ "t = { x = 1, y.z = 2, y.w = 3 }", "{t={x=1,y={z=2,w=3}}}" },
	{ "t = {}\nu = {a = {b = {c = 1}}}", "{t={},u={a={b={c=1}}}}" },
	{ "t = {a = [\n1,\n2]}", "{t={a=[1,2]}}" },
	{ "t = {s = \"\"\"x\ny\"\"\"}", "{t={s=\"x\\ny\"}}" },
	{ "t.u = {x = 1}\nt.v = 2", "{t={u={x=1},v=2}}" },
	/* tables */
	{ "[a]\nx = 1\n[b]\ny = 2", "{a={x=1},b={y=2}}" },
	{ "[ a . \"b\" . 'c' ]\n", "{a={b={c={}}}}" },
	{ "[a.b.c]\n[a]\nx=1", "{a={b={c={}},x=1}}" },
	{ "[x.y.z.w]\n[x]\n[x.y]\n[x.y.z]", "{x={y={z={w={}}}}}" },
	{ "[a]\n[b]\n[a.c]", "{a={c={}},b={}}" },
	{ "[fruit]\napple.color = \"red\"\napple.taste.sweet = true\n[fruit.apple.texture]\n"
	  "smooth = true",
	  "{fruit={apple={color=\"red\",taste={sweet=true},texture={smooth=true}}}}" },
	{ "a.b = 1\n[a.c]\nx = 2", "{a={b=1,c={x=2}}}" },
	{ "[a.b.c]\nz=9\n[a]\nb.x = 1", "{a={b={c={z=9},x=1}}}" },
	{ "[a] # comment\n[b]#c", "{a={},b={}}" },
	{ "[\"a.b\".'c d']\nx=1", "{a.b={c d={x=1}}}" },
	/* arrays of tables */
	{ "[[p]]\nn=1\n[[p]]\nn=2\n[[p]]", "{p=[{n=1},{n=2},{}]}" },
	{ "[[fruits]]\nname = \"apple\"\n[fruits.physical]\ncolor = \"red\"\n"
	  "[[fruits.varieties]]\nname = \"red delicious\"\n[[fruits.varieties]]\n"
	  "name = \"granny smith\"\n[[fruits]]\nname = \"banana\"\n[[fruits.varieties]]\n"
	  "name = \"plantain\"",
	  "{fruits=[{name=\"apple\",physical={color=\"red\"},varieties=[{name=\"red delicious\"},"
	  "{name=\"granny smith\"}]},{name=\"banana\",varieties=[{name=\"plantain\"}]}]}" },
	{ "[[a.b]]\n[a]\nx=1\n[[a.b]]", "{a={b=[{},{}],x=1}}" },
	{ "[[a]]\n[a.b]\nx=1\n[[a]]\n[a.b]\nx=2", "{a=[{b={x=1}},{b={x=2}}]}" },
	{ "[[a]]\nb.c = 1\n[[a]]\nb.c = 2", "{a=[{b={c=1}},{b={c=2}}]}" },
	{ "[[ a ]]\n[[ 'a' ]]", "{a=[{},{}]}" },
};
/* clang-format on */

static void test_valid(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(valid_cases); i++) {
		const struct valid_case *c = &valid_cases[i];
		char *got = parse_dump(c->doc, strlen(c->doc), DUMP_READABLE);
		if (strcmp(got, c->want) != 0)
			fprintf(stderr, "valid case %zu: %s\n", i, c->doc);
		CHECK_STR(got, c->want);
		free(got);
	}
}

/* ---- invalid documents ---- */

struct invalid_case {
	const char *doc;
	const char *pos;  /* "L:C:" prefix of the message */
	const char *what; /* substring of the message */
};

/* clang-format off */
static const struct invalid_case invalid_cases[] = {
	{ "a = 1\na = 2", "2:1:", "duplicate key 'a'" },
	{ "a.b = 1\na.b = 2", "2:3:", "duplicate key 'a.b'" },
	{ "a = ", "1:5:", "expected a value" },
	{ "a =\nb = 1", "1:4:", "expected a value" },
	{ "a", "1:2:", "expected '='" },
	{ "a b = 1", "1:3:", "expected '='" },
	{ "= 1", "1:1:", "key" },
	{ "a = 1 b = 2", "1:7:", "newline" },
	{ "a = 1 2", "1:7:", "newline" },
	{ "\xc3\xa9 = 1", "1:1:", "invalid character in key" },
	{ "a = \"x", "1:5:", "unterminated string" },
	{ "a = \"x\ny\"", "1:5:", "unterminated string" },
	{ "a = 'x\ny'", "1:5:", "unterminated string" },
	{ "a = \"\"\"x", "1:5:", "unterminated string" },
	{ "a = '''x''", "1:5:", "unterminated string" },
	{ "a = \"\\q\"", "1:6:", "escape" },
	{ "a = \"\\x41\"", "1:6:", "escape" },
	{ "a = \"\\e\"", "1:6:", "escape" },
	{ "a = \"\\ \"", "1:6:", "escape" },
	{ "a = \"\\u00\"", "1:6:", "hex digits" },
	{ "a = \"\\u00G0\"", "1:6:", "hex digits" },
	{ "a = \"\\uD800\"", "1:6:", "scalar" },
	{ "a = \"\\U00110000\"", "1:6:", "scalar" },
	{ "a = \"\\u0000\"", "1:6:", "NUL" },
	{ "a = \"\x01\"", "1:6:", "control character U+0001" },
	{ "a = \"\x7f\"", "1:6:", "control character U+007F" },
	{ "a = 'x\x1f'", "1:7:", "control character" },
	{ "a = \"\"\"x\x02\"\"\"", "1:9:", "control character U+0002" },
	{ "a = 1 # \x7f", "1:9:", "control character" },
	{ "a = 1 # \x1b", "1:9:", "control character U+001B" },
	{ "# \x0b\n", "1:3:", "control character" },
	{ "a = \"\"\"x\\ y\"\"\"", "1:9:", "escape" },
	{ "a = \"\"\"a\"\"\"\"\"\"", "1:14:", "" },
	{ "a = '''a''''''", "1:14:", "" },
	{ "a = \"x\"y", "1:8:", "" },
	{ "a = \"x\"\"y\"", "1:8:", "" },
	{ "a = \"\"\"x\ry\"\"\"", "1:9:", "carriage return" },
	/* numbers */
	{ "a = 01", "1:5:", "leading zero" },
	{ "a = -01", "1:5:", "leading zero" },
	{ "a = 0_1", "1:5:", "leading zero" },
	{ "a = 00.5", "1:5:", "leading zero" },
	{ "a = 1__0", "1:5:", "invalid number" },
	{ "a = _1", "1:5:", "expected a value" },
	{ "a = 1_", "1:5:", "invalid number" },
	{ "a = 0x", "1:5:", "" },
	{ "a = 0x_1", "1:5:", "hexadecimal" },
	{ "a = +0x1", "1:5:", "" },
	{ "a = -0x1", "1:5:", "" },
	{ "a = 0xG", "1:5:", "" },
	{ "a = 0X1", "1:5:", "" },
	{ "a = 0b2", "1:5:", "binary" },
	{ "a = 0o8", "1:5:", "octal" },
	{ "a = 9223372036854775808", "1:5:", "out of range" },
	{ "a = -9223372036854775809", "1:5:", "out of range" },
	{ "a = 0x8000000000000000", "1:5:", "out of range" },
	{ "a = 0b1111111111111111111111111111111111111111111111111111111111111111", "1:5:",
	  "out of range" },
	{ "a = 1.", "1:5:", "after '.'" },
	{ "a = .1", "1:5:", "expected a value" },
	{ "a = 1e", "1:5:", "exponent" },
	{ "a = 1.e5", "1:5:", "" },
	{ "a = 1e_5", "1:5:", "exponent" },
	{ "a = 1.5_", "1:5:", "" },
	{ "a = 1._5", "1:5:", "" },
	{ "a = 1.2.3", "1:5:", "" },
	{ "a = +-1", "1:5:", "" },
	{ "a = infinity", "1:5:", "" },
	{ "a = NaN", "1:5:", "" },
	{ "a = Inf", "1:5:", "" },
	{ "a = truee", "1:5:", "" },
	{ "a = True", "1:5:", "" },
	{ "a = tru", "1:5:", "" },
	{ "a = bare", "1:5:", "expected a value" },
	/* datetimes */
	{ "a = 1979-13-01", "1:5:", "date" },
	{ "a = 1979-00-01", "1:5:", "date" },
	{ "a = 1979-02-30", "1:5:", "date" },
	{ "a = 2001-02-29", "1:5:", "date" },
	{ "a = 1900-02-29", "1:5:", "date" },
	{ "a = 1979-05-27T24:00:00", "1:5:", "date" },
	{ "a = 1979-05-27T07:60:00", "1:5:", "date" },
	{ "a = 1979-05-27T07:32:60", "1:5:", "date" },
	{ "a = 1979-05-27T07:32", "1:5:", "date" },
	{ "a = 1979-05-27 07:32", "1:5:", "date" },
	{ "a = 1979-05-27T07:32:00+24:00", "1:5:", "date" },
	{ "a = 1979-05-27T07:32:00+07", "1:5:", "date" },
	{ "a = 1979-05-27T07:32:00.Z", "1:5:", "date" },
	{ "a = 1979-05-27T07:32:00Zx", "1:5:", "date" },
	{ "a = 1979-05-27X07:32:00", "1:5:", "date" },
	{ "a = 07:32", "1:5:", "date" },
	{ "a = 07:32:00Z", "1:5:", "date" },
	{ "a = 1979-5-27", "1:5:", "" },
	{ "a = 1979-05-27 x", "1:16:", "newline" },
	/* arrays */
	{ "a = [1 2]", "1:8:", "expected ',' or ']'" },
	{ "a = [,]", "1:6:", "expected a value" },
	{ "a = [1,,2]", "1:8:", "expected a value" },
	{ "a = [1", "1:7:", "unterminated array" },
	{ "a = [1,\n", "2:1:", "unterminated array" },
	/* inline tables */
	{ "a = {x=1,}", "1:10:", "trailing comma" },
	{ "a = {x=1\n}", "1:9:", "newline in inline table" },
	{ "a = {\nx=1}", "1:6:", "key" },
	{ "a = {x=1 y=2}", "1:10:", "expected ',' or '}'" },
	{ "a = {x=1", "1:9:", "unterminated inline table" },
	{ "a = {x=1, x=2}", "1:11:", "duplicate key 'x'" },
	{ "a = {x.y=1, x={}}", "1:13:", "duplicate key 'x'" },
	{ "a = {x={y=1}, x.z=2}", "1:15:", "inline table 'x'" },
	{ "a = {x=1}\na.y = 2", "2:1:", "inline table 'a'" },
	{ "a = {}\n[a]", "2:1:", "already defined as an inline table" },
	{ "a = {}\n[a.b]", "2:1:", "inline table" },
	{ "a = {b = {}}\n[a.b]", "2:1:", "inline table" },
	{ "a = {}\n[[a]]", "2:1:", "a table" },
	/* tables */
	{ "[a]\n[a]", "2:1:", "table 'a' is already defined" },
	{ "[a.b]\n[a]\n[a]", "3:1:", "already defined" },
	{ "[a]\nb=1\n[a.b]", "3:1:", "already holds an integer" },
	{ "[a]\nb=\"x\"\n[a.b.c]", "3:1:", "not a table" },
	{ "a.b=1\n[a]", "2:1:", "dotted keys" },
	{ "[fruit]\napple.color = 1\n[fruit.apple]", "3:1:", "dotted keys" },
	{ "[fruit]\napple.taste.sweet = 1\n[fruit.apple.taste]", "3:1:", "dotted keys" },
	{ "[a.b]\n[a]\nb.c=1", "3:1:", "defined by a [header]" },
	{ "[a.b.c]\nz=9\n[a]\nb.c.t=1", "4:3:", "defined by a [header]" },
	{ "a = 1\na.b = 2", "2:1:", "already a integer" },
	{ "[[a]]\n[a]", "2:1:", "array of tables" },
	{ "[a]\n[[a]]", "2:1:", "a table" },
	{ "a = [1]\n[[a]]", "2:1:", "static array" },
	{ "a = []\n[[a]]", "2:1:", "static array" },
	{ "a = [{}]\n[a.b]", "2:1:", "static array" },
	{ "a = 1\n[a.b]", "2:1:", "not a table" },
	{ "[[a]]\nb.c=1\n[a.b]", "3:1:", "dotted keys" },
	{ "[a", "1:3:", "expected ']'" },
	{ "[a]]", "1:4:", "newline" },
	{ "[[a]", "1:4:", "']]'" },
	{ "[[a] ]", "1:4:", "']]'" },
	{ "[ [a]]", "1:3:", "key" },
	{ "[]", "1:2:", "key" },
	{ "[a.]", "1:4:", "key" },
	{ "[.a]", "1:2:", "key" },
	{ "[a..b]", "1:4:", "key" },
	{ "[a] b = 1", "1:5:", "newline" },
	{ "a..b = 1", "1:3:", "key" },
	{ "a. = 1", "1:4:", "key" },
	{ ".a = 1", "1:1:", "key" },
	{ "\"\"\"a\"\"\" = 1", "1:3:", "" },
	/* encoding and line ends */
	{ "a = 1\rb = 2", "1:6:", "carriage return" },
	{ "a = 1\r", "1:6:", "carriage return" },
	{ "\xff = 1", "1:1:", "invalid UTF-8" },
	{ "a = \"\xc3\"", "1:6:", "invalid UTF-8" },
	{ "a = '\xed\xa0\x80'", "1:6:", "invalid UTF-8" },
	{ "a = '\xc0\x80'", "1:6:", "invalid UTF-8" },
	{ "a = '\xf4\x90\x80\x80'", "1:6:", "invalid UTF-8" },
	{ "a = 1\n# \xe9", "2:3:", "invalid UTF-8" },
	{ "\xef\xbb\xbf" "a = 1", "1:1:", "" },
	/* columns count characters, lines count LF */
	{ "a = 1\nb = 2\n  c = \"\\x\"", "3:8:", "escape" },
	{ "\"\xc3\xa9\" = \"\\x\"", "1:8:", "escape" },
	{ "a = [\n1,\n\"\"\"\nx\ny\"\"\" 2]", "5:6:", "expected ',' or ']'" },
	{ "a = 1\r\nb = 2\r\nc", "3:2:", "'='" },
};
/* clang-format on */

static void test_invalid(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(invalid_cases); i++) {
		const struct invalid_case *c = &invalid_cases[i];
		struct toml_value *v = (struct toml_value *)0x1;
		char err[256];
		int r = toml_parse(c->doc, strlen(c->doc), &v, err, sizeof(err));
		bool ok = r == -EINVAL && v == (struct toml_value *)0x1 &&
			  str_startswith(err, c->pos) && strstr(err, c->what);
		if (!ok)
			fprintf(stderr,
				"invalid case %zu: %s\n  got r=%d err=\"%s\", want \"%s ...%s\"\n",
				i, c->doc, r, r < 0 ? err : "", c->pos, c->what);
		CHECK(ok);
		if (r == 0)
			toml_free(v);
	}
	/* embedded NUL bytes in the input */
	static const char nul_doc[] = "a = 1\nb = \"x\0y\"";
	char err[128];
	struct toml_value *v = NULL;
	CHECK_INT(toml_parse(nul_doc, sizeof(nul_doc) - 1, &v, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "2:7: control character U+0000") != NULL);
	/* a document that is not NUL-terminated */
	char nt[5] = {'a', '=', '1', '2', '3'};
	CHECK_INT(toml_parse(nt, 4, &v, err, sizeof(err)), 0);
	CHECK_INT(toml_get(v, "a")->i, 12);
	toml_free(v);
	/* tiny and absent error buffers */
	CHECK_INT(toml_parse("a=", 2, &v, err, 3), -EINVAL);
	CHECK_STR(err, "1:");
	CHECK_INT(toml_parse("a=", 2, &v, NULL, 0), -EINVAL);
}

/* ---- limits, positions, lookups ---- */

static char *repeat(const char *pre, const char *s, int n, const char *mid, const char *t,
		    const char *post)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, pre);
	for (int i = 0; i < n; i++)
		buf_puts(&b, s);
	buf_puts(&b, mid);
	for (int i = 0; i < n; i++)
		buf_puts(&b, t);
	buf_puts(&b, post);
	return (char *)buf_steal(&b, NULL);
}

static int parse_str(const char *doc, struct toml_value **v, char *err, size_t errlen)
{
	return toml_parse(doc, strlen(doc), v, err, errlen);
}

static void test_limits(void)
{
	struct toml_value *v;
	char err[256];
	char *doc;

	doc = repeat("a = ", "[", 100, "1", "]", "\n");
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), 0);
	toml_free(v);
	free(doc);
	doc = repeat("a = ", "[", 200, "", "]", "\n");
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "nesting deeper than 128") != NULL);
	free(doc);
	doc = repeat("a = ", "[", 1000000, "", "", "");
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), -EINVAL);
	free(doc);
	doc = repeat("a = ", "{b=", 100000, "1", "}", "");
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "nesting") != NULL);
	free(doc);
	doc = repeat("", "a.", 200, "b = 1", "", "");
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), -EINVAL);
	free(doc);
	doc = repeat("[", "a.", 100, "b]\n", "", "");
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), 0);
	toml_free(v);
	free(doc);

	/* a deep header plus dotted keys below it */
	doc = repeat("[", "x.", 100, "x]\n", "", "");
	char *d = repeat(doc, "y.", 20, "z = 1\n", "", "");
	CHECK_INT(parse_str(d, &v, err, sizeof(err)), 0);
	toml_free(v);
	free(d);
	d = repeat(doc, "y.", 40, "z = 1\n", "", "");
	CHECK_INT(parse_str(d, &v, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "2:1: nesting deeper than 128") != NULL);
	free(d);
	d = repeat(doc, "", 0, "y = ", "", "");
	char *d2 = repeat(d, "{a=", 40, "1", "}", "\n");
	CHECK_INT(parse_str(d2, &v, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "nesting") != NULL);
	free(d2);
	free(d);
	free(doc);

	struct buf b;
	/* a big table uses the hash index; duplicates are still found */
	buf_init(&b);
	for (int i = 0; i < 5000; i++)
		buf_printf(&b, "k%d = %d\n", i, i);
	CHECK_INT(parse_str((char *)b.data, &v, err, sizeof(err)), 0);
	CHECK_INT(v->tab.n, 5000);
	CHECK_STR(v->tab.keys[4321], "k4321");
	CHECK_INT(toml_get(v, "k4321")->i, 4321);
	CHECK_INT(toml_get(v, "k0")->i, 0);
	CHECK(toml_get(v, "k5000") == NULL);
	toml_free(v);
	buf_puts(&b, "k2500 = 1\n");
	CHECK_INT(parse_str((char *)b.data, &v, err, sizeof(err)), -EINVAL);
	CHECK_STR(err, "5001:1: duplicate key 'k2500'");
	buf_free(&b);

	/* positions are computed going forward: 20000 headers (1.6 MB) parse in
	 * well under a second; a quadratic position lookup took ~5 s here */
	buf_init(&b);
	for (int i = 0; i < 20000; i++)
		buf_printf(&b, "[[packages]]\nname = 'p%d'\n[[packages.wheels]]\nurl = '%040d'\n",
			   i, i);
	uint64_t t0 = now_ns();
	CHECK_INT(parse_str((char *)b.data, &v, err, sizeof(err)), 0);
	uint64_t ms = (now_ns() - t0) / 1000000;
	if (ms >= 3000)
		fprintf(stderr, "20000 headers took %llu ms\n", (unsigned long long)ms);
	CHECK(ms < 3000);
	toml_free(v);
	buf_free(&b);

	/* many sibling tables via headers and a long array of tables */
	buf_init(&b);
	for (int i = 0; i < 3000; i++)
		buf_printf(&b, "[[p]]\nname = \"n%d\"\n[p.sub]\nx = %d\n", i, i);
	CHECK_INT(parse_str((char *)b.data, &v, err, sizeof(err)), 0);
	const struct toml_value *p = toml_get(v, "p");
	CHECK_INT(p->arr.n, 3000);
	CHECK_STR(toml_get_string(p->arr.items[2999], "name"), "n2999");
	CHECK_INT(toml_get(toml_get(p->arr.items[1234], "sub"), "x")->i, 1234);
	toml_free(v);
	buf_free(&b);
}

static void test_positions_and_lookups(void)
{
	const char *doc = "a = 1\n"
			  "[t]\n"
			  "b = [1,\n"
			  "  2]\n"
			  "  c.d = \"x\"\n"
			  "[[p]]\n"
			  "\xc3\xa9\xc3\xa9 = 0 # no: keys must be ASCII or quoted\n";
	struct toml_value *v;
	char err[256];
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), -EINVAL);
	CHECK_STR(err, "7:1: invalid character in key");
	doc = "a = 1\n"
	      "[t]\n"
	      "b = [1,\n"
	      "  2]\n"
	      "  c.d = \"x\"\n"
	      "[[p]]\n"
	      "\"\xc3\xa9\xc3\xa9\" = { x = 3 }\n"
	      "[t.e]\n"
	      "[t.c.f]\n";
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), 0);
	CHECK_INT(v->type, TOML_TABLE);
	CHECK_INT(v->line, 1);
	CHECK_INT(v->col, 1);
	const struct toml_value *t = toml_get(v, "t");
	CHECK_INT(t->line, 2);
	CHECK_INT(t->col, 1);
	const struct toml_value *b = toml_get(t, "b");
	CHECK_INT(b->type, TOML_ARRAY);
	CHECK_INT(b->line, 3);
	CHECK_INT(b->col, 5);
	CHECK_INT(b->arr.items[1]->line, 4);
	CHECK_INT(b->arr.items[1]->col, 3);
	const struct toml_value *c = toml_get(t, "c");
	CHECK_INT(c->line, 5);
	CHECK_INT(c->col, 3);
	CHECK_INT(toml_get(c, "d")->col, 9);
	CHECK_STR(toml_get_string(c, "d"), "x");
	const struct toml_value *p = toml_get(v, "p");
	CHECK_INT(p->arr.n, 1);
	CHECK_INT(p->arr.items[0]->line, 6);
	const struct toml_value *e = toml_get(p->arr.items[0], "\xc3\xa9\xc3\xa9");
	CHECK_INT(e->line, 7);
	CHECK_INT(e->col, 8);
	CHECK_INT(toml_get(e, "x")->col, 14);
	CHECK_INT(toml_get(t, "e")->line, 8);
	CHECK_INT(toml_get(c, "f")->line, 9);
	/* typed lookups */
	CHECK(toml_get_string(v, "a") == NULL);
	CHECK(toml_get_string(v, "missing") == NULL);
	CHECK(toml_get(b, "x") == NULL);
	CHECK(toml_get(NULL, "x") == NULL);
	CHECK(toml_get_string(NULL, "x") == NULL);
	CHECK_STR(toml_type_name(TOML_DATETIME), "datetime");
	CHECK_STR(toml_type_name(TOML_TABLE), "table");
	toml_free(v);
	CHECK(toml_free(NULL) == NULL);
}

/* ---- a realistic pylock.toml ---- */

static void test_pylock(void)
{
	const char *doc =
	    "lock-version = '1.0'\n"
	    "environments = [\"sys_platform == 'win32'\", \"sys_platform == 'linux'\"]\n"
	    "requires-python = '== 3.12.*'\n"
	    "created-by = 'mousebender'\n"
	    "\n"
	    "[[packages]]\n"
	    "name = 'attrs'\n"
	    "version = '25.1.0'\n"
	    "requires-python = '>= 3.8'\n"
	    "\n"
	    "    [[packages.wheels]]\n"
	    "    name = 'attrs-25.1.0-py3-none-any.whl'\n"
	    "    upload-time = 2025-01-25T11:30:10.164985+00:00\n"
	    "    url = 'https://files.pythonhosted.org/packages/fc/30/"
	    "d4986a882011f9df997a55e6becd864812ccfcd821d64aac8570ee39f719/"
	    "attrs-25.1.0-py3-none-any.whl'\n"
	    "    size = 63152\n"
	    "    hashes = {sha256 = "
	    "'c75a69e28a550a7e93789579c22aa26b0f5b83b75dc4e08fe092980051e1090a'}\n"
	    "\n"
	    "[[packages]]\n"
	    "name = 'numpy'\n"
	    "version = '2.2.3'\n"
	    "requires-python = '>= 3.10'\n"
	    "wheels = [\n"
	    "  {name = 'numpy-2.2.3-cp312-cp312-win_amd64.whl', upload-time = "
	    "2025-02-13T16:51:21.821880+00:00, url = 'https://example.invalid/numpy.whl', "
	    "size = 12626357, hashes = {sha256 = "
	    "'83807d445817326b4bcdaaaf8e8e9f1753da04341eceec705c001ff342002e5d'}},\n"
	    "  {name = 'numpy-2.2.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl',"
	    " path = 'wheels/numpy.whl', hashes = {sha256 = "
	    "'7dfaf1e5d0ce6d2e75e9c3f4c1b2a8b5c9e5e0c2b1d3e4f5a6b7c8d9e0f1a2b3'}},\n"
	    "]\n"
	    "\n"
	    "[[packages]]\n"
	    "name = 'spam'\n"
	    "marker = \"sys_platform == 'linux'\"\n"
	    "dependencies = [{name = 'attrs'}]\n"
	    "[packages.vcs]\n"
	    "type = 'git'\n"
	    "url = 'https://github.com/example/spam.git'\n"
	    "commit-id = '3b79e8a1e7d3c4a0b0e2d2a1a3c4b5d6e7f8a9b0'\n"
	    "[packages.tool.mytool]\n"
	    "x = 1\n"
	    "\n"
	    "[tool.mousebender]\n"
	    "command = ['.', 'lock', '--platform', 'cpython3.12-windows-x64']\n";
	struct toml_value *v;
	char err[256];
	CHECK_INT(parse_str(doc, &v, err, sizeof(err)), 0);
	CHECK_STR(toml_get_string(v, "lock-version"), "1.0");
	CHECK_STR(toml_get_string(v, "created-by"), "mousebender");
	CHECK_INT(toml_get(v, "environments")->arr.n, 2);
	const struct toml_value *pk = toml_get(v, "packages");
	CHECK_INT(pk->type, TOML_ARRAY);
	CHECK_INT(pk->arr.n, 3);
	const struct toml_value *attrs = pk->arr.items[0];
	CHECK_STR(toml_get_string(attrs, "name"), "attrs");
	const struct toml_value *w = toml_get(attrs, "wheels");
	CHECK_INT(w->arr.n, 1);
	CHECK_INT(w->arr.items[0]->line, 11);
	CHECK_INT(w->arr.items[0]->col, 5);
	CHECK_INT(toml_get(w->arr.items[0], "size")->i, 63152);
	CHECK_INT(toml_get(w->arr.items[0], "upload-time")->type, TOML_DATETIME);
	CHECK_STR(toml_get(w->arr.items[0], "upload-time")->s, "2025-01-25T11:30:10.164985+00:00");
	CHECK_STR(toml_get_string(toml_get(w->arr.items[0], "hashes"), "sha256"),
		  "c75a69e28a550a7e93789579c22aa26b0f5b83b75dc4e08fe092980051e1090a");
	w = toml_get(pk->arr.items[1], "wheels");
	CHECK_INT(w->arr.n, 2);
	CHECK_STR(toml_get_string(w->arr.items[1], "path"), "wheels/numpy.whl");
	CHECK_INT(w->arr.items[1]->line, 24);
	CHECK_INT(w->arr.items[1]->col, 3);
	const struct toml_value *spam = pk->arr.items[2];
	CHECK_STR(toml_get_string(toml_get(spam, "vcs"), "type"), "git");
	CHECK_INT(toml_get(toml_get(toml_get(spam, "tool"), "mytool"), "x")->i, 1);
	CHECK_INT(toml_get(toml_get(toml_get(v, "tool"), "mousebender"), "command")->arr.n, 4);
	toml_free(v);
}

/* ---- differential test against tomllib ---- */

/* clang-format off */
static const char oracle_py[] =
	"import sys, random, struct, math, datetime\n"
	"import tomllib\n"
	"rnd = random.Random(int(sys.argv[1]))\n"
	"N = int(sys.argv[2])\n"
	"BARECH = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-')\n"
	"KEYS = ['a', 'b', 'c', 'key', 'x-y', '_z', '1', 'A9', 'ab_cd', 'true', 'inf', '-',\n"
	"        '', 'q k', '\\u00e9', 'a.b', '\"', \"'\", '\\\\', '\\t', 'z\\u20ac', '\\U0001F600']\n"
	"CH = ['a', 'b', ' ', '\\t', '\\n', '\"', \"'\", '\\\\', '\\u00e9', '\\u20ac', '\\U0001F600',\n"
	"      '\\x01', '\\x7f', '\\r', '#', '=', '[', '{', '\\x08', '\\x0c', '\\u2028']\n"
	"DATES = ['1979-05-27T07:32:00Z', '1979-05-27 07:32:00.999999-07:00', '1979-05-27',\n"
	"         '07:32:00', '00:32:00.5', '2000-02-29', '2001-02-29', '1979-05-27t07:32:00z',\n"
	"         '1979-05-27T24:00:00', '1979-13-01', '1979-05-27T07:32', '2024-01-31T23:59:59+23:59',\n"
	"         '1979-05-27T07:32:00+24:00', '1979-05-27T07:32:00.1234567Z', '1999-12-31T23:59:59']\n"
	"MUT = ['[', ']', '[[', ']]', '{', '}', '=', ',', '.', '\"', \"'\", '\"\"\"', \"'''\", '\\n',\n"
	"       '\\r\\n', '\\r', '#', '\\\\', ' ', '\\t', '_', '-', '+', ':', '0', '1', 'e', 'x', 'a',\n"
	"       'Z', 'T', 'inf', 'nan', 'true', '\\\\u', '\\xff', '\\xc3', '\\x00', '\\x7f', 'a = 1\\n']\n"
	"def skey(k):\n"
	"    if k and set(k) <= BARECH and rnd.random() < 0.9: return k\n"
	"    if \"'\" not in k and not any(ord(c) < 32 and c != '\\t' or c == '\\x7f' for c in k) and rnd.random() < 0.4:\n"
	"        return \"'\" + k + \"'\"\n"
	"    return '\"' + esc(k, False) + '\"'\n"
	"def esc(s, ml):\n"
	"    o = []\n"
	"    for c in s:\n"
	"        n = ord(c)\n"
	"        if c == '\"': o.append('\\\\\"')\n"
	"        elif c == '\\\\': o.append('\\\\\\\\')\n"
	"        elif c == '\\n' and ml and rnd.random() < 0.5: o.append('\\n')\n"
	"        elif n < 32 or n == 127 or (n > 127 and rnd.random() < 0.3):\n"
	"            r = rnd.random()\n"
	"            if c in '\\b\\t\\n\\f\\r' and r < 0.5:\n"
	"                o.append({'\\b': '\\\\b', '\\t': '\\\\t', '\\n': '\\\\n', '\\f': '\\\\f', '\\r': '\\\\r'}[c])\n"
	"            elif n < 0x10000 and r < 0.8: o.append(('\\\\u%04X' if r < 0.65 else '\\\\u%04x') % n)\n"
	"            else: o.append('\\\\U%08x' % n)\n"
	"        else: o.append(c)\n"
	"    return ''.join(o)\n"
	"def sstr(s):\n"
	"    r = rnd.random()\n"
	"    bad = any((ord(c) < 32 and c not in '\\t\\n') or c == '\\x7f' for c in s)\n"
	"    if r < 0.2 and not bad and \"'\" not in s and '\\n' not in s: return \"'\" + s + \"'\"\n"
	"    if r < 0.35 and not bad and \"'''\" not in s and not s.endswith(\"'\"): return \"'''\" + s + \"'''\"\n"
	"    if r < 0.55:\n"
	"        e = esc(s, True)\n"
	"        if rnd.random() < 0.3: e = e.replace(' ', ' \\\\\\n  ', 1)\n"
	"        return '\"\"\"' + ('\\n' if rnd.random() < 0.3 else '') + e + '\"\"\"'\n"
	"    return '\"' + esc(s, False) + '\"'\n"
	"def gstr(): return ''.join(rnd.choice(CH) for _ in range(rnd.randrange(8)))\n"
	"def sint(i):\n"
	"    r = rnd.random()\n"
	"    if i >= 0 and r < 0.1: return hex(i)\n"
	"    if i >= 0 and r < 0.15: return '0o%o' % i\n"
	"    if i >= 0 and r < 0.2: return bin(i)\n"
	"    s = str(i)\n"
	"    if r < 0.3 and len(s) > 2: s = s[:2] + '_' + s[2:]\n"
	"    if r > 0.9 and i >= 0: s = '+' + s\n"
	"    return s\n"
	"def scalar():\n"
	"    r = rnd.random()\n"
	"    if r < 0.25: return sint(rnd.choice([0, 1, -1, 7, 2**63 - 1, -2**63, 2**63, 10**6, rnd.randrange(-10**9, 10**9)]))\n"
	"    if r < 0.4:\n"
	"        f = rnd.choice([0.0, -0.0, 1.5, -2.25e-3, 1e300, 5e-324, 3.14159, 1e16, rnd.uniform(-1e6, 1e6)])\n"
	"        s = repr(f)\n"
	"        return rnd.choice(['inf', '-inf', '+inf', 'nan', '-nan']) if rnd.random() < 0.1 else s\n"
	"    if r < 0.5: return rnd.choice(['true', 'false'])\n"
	"    if r < 0.6: return rnd.choice(DATES)\n"
	"    return sstr(gstr())\n"
	"def value(d):\n"
	"    r = rnd.random()\n"
	"    if d > 3 or r < 0.7: return scalar()\n"
	"    if r < 0.85:\n"
	"        items = [value(d + 1) for _ in range(rnd.randrange(4))]\n"
	"        sep = rnd.choice([', ', ',', ',\\n  ', ' , # c\\n'])\n"
	"        return '[' + sep.join(items) + (',' if items and rnd.random() < 0.3 else '') + ']'\n"
	"    items = [skey(rnd.choice(KEYS)) + ' = ' + value(d + 1) for _ in range(rnd.randrange(4))]\n"
	"    return '{' + ', '.join(items) + '}'\n"
	"def table(path, depth, lines):\n"
	"    for _ in range(rnd.randrange(5)):\n"
	"        k = [skey(rnd.choice(KEYS)) for _ in range(1 if rnd.random() < 0.7 else rnd.randrange(1, 4))]\n"
	"        lines.append(rnd.choice(['', ' ', '\\t']) + rnd.choice(['.', ' . ', '.']).join(k) + rnd.choice([' = ', '=', ' =\\t']) + value(0) + rnd.choice(['', ' # comment', '#']))\n"
	"    if depth < 3:\n"
	"        for _ in range(rnd.randrange(3)):\n"
	"            p = path + [skey(rnd.choice(KEYS)) for _ in range(rnd.randrange(1, 3))]\n"
	"            aot = rnd.random() < 0.3\n"
	"            lines.append(('[[' if aot else '[') + '.'.join(p) + (']]' if aot else ']'))\n"
	"            table(p, depth + 1, lines)\n"
	"class Skip(Exception): pass\n"
	"def canon(v):\n"
	"    if isinstance(v, bool): return 't' if v else 'f'\n"
	"    if isinstance(v, int):\n"
	"        if not -2**63 <= v < 2**63: raise Skip()\n"
	"        return 'i%d' % v\n"
	"    if isinstance(v, float): return 'fnan' if math.isnan(v) else 'f' + struct.pack('=d', v).hex()\n"
	"    if isinstance(v, str):\n"
	"        if '\\0' in v: raise Skip()\n"
	"        return 's' + v.encode().hex()\n"
	"    if isinstance(v, (datetime.date, datetime.time)): return 'D'\n"
	"    if isinstance(v, list): return '[' + ','.join(canon(x) for x in v) + ']'\n"
	"    if '\\0' in ''.join(v): raise Skip()\n"
	"    return '{' + ','.join(k.encode().hex() + ':' + canon(x) for k, x in v.items()) + '}'\n"
	"out = sys.stdout.buffer\n"
	"for i in range(N):\n"
	"    lines = []\n"
	"    table([], 0, lines)\n"
	"    doc = rnd.choice(['\\n', '\\r\\n']).join(lines)\n"
	"    if rnd.random() < 0.5: doc += '\\n'\n"
	"    doc = doc.encode()\n"
	"    for _ in range(rnd.choice([0, 0, 1, 1, 2, 3])):\n"
	"        pos = rnd.randrange(len(doc) + 1)\n"
	"        r = rnd.random()\n"
	"        if r < 0.4: doc = doc[:pos] + doc[pos + 1:]\n"
	"        elif r < 0.9: doc = doc[:pos] + rnd.choice(MUT).encode('latin-1') + doc[pos:]\n"
	"        else:\n"
	"            ls = doc.split(b'\\n')\n"
	"            j = rnd.randrange(len(ls))\n"
	"            ls.insert(j, ls[j])\n"
	"            doc = b'\\n'.join(ls)\n"
	"    try:\n"
	"        exp = canon(tomllib.loads(doc.decode('utf-8')))\n"
	"        if b'0000-' in doc: exp = 'SKIP'\n"
	"    except Skip:\n"
	"        exp = 'SKIP'\n"
	"    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:\n"
	"        exp = 'ERROR ' + str(e)\n"
	"    except RecursionError:\n"
	"        exp = 'SKIP'\n"
	"    e = exp.encode()\n"
	"    out.write(b'CASE %d\\n' % len(doc) + doc + b'\\nEXPECT %d\\n' % len(e) + e + b'\\n')\n";
/* clang-format on */

static const char *oracle_python(void)
{
	static const char *const cands[] = {"/usr/bin/python3.11", "/usr/bin/python3"};
	for (size_t i = 0; i < ARRAY_SIZE(cands); i++) {
		if (access(cands[i], X_OK) == 0) {
			char *cmd = xasprintf("%s -c 'import tomllib' 2>/dev/null", cands[i]);
			int r = system(cmd);
			free(cmd);
			if (r == 0)
				return cands[i];
		}
	}
	return NULL;
}

static bool read_block(FILE *f, const char *tag, char **ret, size_t *ret_len)
{
	char line[64];
	size_t n;
	if (!fgets(line, sizeof(line), f) || !str_startswith(line, tag))
		return false;
	n = strtoul(line + strlen(tag), NULL, 10);
	char *d = xmalloc(n + 1);
	if (fread(d, 1, n, f) != n || fgetc(f) != '\n') {
		free(d);
		return false;
	}
	d[n] = 0;
	*ret = d;
	*ret_len = n;
	return true;
}

static void test_oracle(void)
{
	const char *py = oracle_python();
	if (!py) {
		printf("tomllib oracle: no python with tomllib, skipped\n");
		return;
	}
	const char *seed = getenv("SITEFS_TOML_ORACLE_SEED");
	const char *count = getenv("SITEFS_TOML_ORACLE_N");
	char path[] = "/tmp/sitefs-toml-oracle-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_INT(write_full(fd, oracle_py, sizeof(oracle_py) - 1), 0);
	close(fd);
	char *cmd =
	    xasprintf("%s -I %s %s %s", py, path, seed ? seed : "1751", count ? count : "4000");
	FILE *f = popen(cmd, "r");
	free(cmd);
	CHECK(f != NULL);
	if (!f) {
		unlink(path);
		return;
	}
	unsigned ncase = 0, nvalid = 0, ninvalid = 0, nskip = 0, nbad = 0;
	for (;;) {
		char *doc, *exp;
		size_t doclen, explen;
		if (!read_block(f, "CASE ", &doc, &doclen))
			break;
		if (!read_block(f, "EXPECT ", &exp, &explen)) {
			free(doc);
			break;
		}
		ncase++;
		if (strcmp(exp, "SKIP") == 0) {
			nskip++;
		} else {
			char *got = parse_dump(doc, doclen, DUMP_ORACLE);
			bool exp_err = str_startswith(exp, "ERROR ");
			bool got_err = str_startswith(got, "ERR:");
			bool same = exp_err ? got_err : strcmp(got, exp) == 0;
			if (exp_err)
				ninvalid++;
			else
				nvalid++;
			if (!same && nbad++ < 10) {
				fprintf(stderr, "oracle mismatch (case %u):\n---\n", ncase);
				fwrite(doc, 1, doclen, stderr);
				fprintf(stderr, "\n---\ntomllib: %s\nsitefs:  %s\n", exp, got);
			}
			CHECK(same);
			free(got);
		}
		free(doc);
		free(exp);
	}
	CHECK_INT(pclose(f), 0);
	unlink(path);
	printf("tomllib oracle: %u cases (%u valid, %u invalid, %u skipped), %u mismatches\n",
	       ncase, nvalid, ninvalid, nskip, nbad);
	CHECK(ncase > 100);
	CHECK(nvalid > 10 && ninvalid > 10);
}

int main(void)
{
	test_valid();
	test_invalid();
	test_limits();
	test_positions_and_lookups();
	test_pylock();
	test_oracle();
	return check_done("toml");
}
