/* interp: facts about a Python interpreter, asked once and cached.
 *
 * DESIGN: the interpreter runs an embedded script with `-I -c SCRIPT`
 * (isolated mode: PYTHONPATH, PYTHONHOME, user site-packages and the current
 * directory are ignored) through posix_spawn -- no shell -- with stdin on
 * /dev/null, stdout and stderr captured, and a 30 s timeout after which it is
 * killed.  The script prints one "key=value" line per fact (backslash,
 * newline and CR escaped), "tag=..." lines in priority order and
 * "marker.NAME=value" lines, framed by a "sitefs-interp 1" header and an
 * "end" trailer so that truncated answers are rejected.
 *
 * The tag list mirrors packaging.tags.sys_tags() (packaging 24.x, which
 * equals 23.x on x86_64/aarch64 glibc): cpython_tags (the cpXY ABI, abi3,
 * none, then abi3 for older minors) or generic_tags, then compatible_tags
 * (pyXY..py30 for each platform, cpXY-none-any, pyXY..py30-none-any).  The
 * Linux platforms are manylinux_2_N from the running glibc down to 2_5
 * (x86) or 2_17 (others) with the legacy manylinux1/2010/2014 aliases and
 * the _manylinux module override, musllinux_1_N when the interpreter's ELF
 * loader is musl, then linux_<arch>.  macOS/iOS/Android platform lists are
 * deliberately missing (sitefs is a Linux FUSE filesystem): there the
 * script falls back to the single sysconfig platform.
 *
 * Cache: <cache_dir>/interp/<sha256 hex>.txt holds the script's output,
 * written with file_write_atomic and re-validated when read (the cache
 * directory is untrusted input).  The key hashes the interpreter's resolved
 * real path, its size and mtime, and the script itself (so editing the
 * script invalidates old answers).  Wrapper scripts are the catch: a pyenv
 * shim (~/.pyenv/shims/python3) is one bash script for every Python version,
 * and which interpreter it starts depends on PYENV_VERSION, .python-version
 * files and so on.  So when the resolved file starts with "#!" we do not key
 * on it; we run a cheap probe (`-I -c 'import sys; print(sys.executable)'`,
 * ~20 ms instead of ~70 ms for the full script) and key on the interpreter
 * binary it reports.  Real binaries and venv symlinks (resolved with
 * realpath) need no process at all on a cache hit. */
#include "resolver/interp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch/util/hash.h"
#include "fetch/util/log.h"
#include "fetch/util/util.h"

extern char **environ;

#define INTERP_TIMEOUT_MS 30000
#define INTERP_MAX_OUTPUT (4u << 20)
#define INTERP_MAX_STDERR 4096

/* The script's output format version is the first line. */
#define INTERP_HEADER "sitefs-interp 1"

/* clang-format off */
static const char interp_script[] =
	"import os, sys, sysconfig, platform, importlib.util\n"
	"out = [\"sitefs-interp 1\"]\n"
	"def emit(k, v):\n"
	"    v = \"\" if v is None else str(v)\n"
	"    v = v.replace(\"\\\\\", \"\\\\\\\\\").replace(\"\\n\", \"\\\\n\").replace(\"\\r\", \"\\\\r\")\n"
	"    out.append(k + \"=\" + v)\n"
	"def cvar(n):\n"
	"    return sysconfig.get_config_var(n)\n"
	"def nodot(v):\n"
	"    return \"\".join(map(str, v))\n"
	"def norm(s):\n"
	"    return s.replace(\".\", \"_\").replace(\"-\", \"_\")\n"
	"def elf(path):\n"
	"    import struct\n"
	"    fmts = {(1, 1): (\"<HHIIIIIHHH\", \"<IIIIIIII\", (0, 1, 4)),\n"
	"            (1, 2): (\">HHIIIIIHHH\", \">IIIIIIII\", (0, 1, 4)),\n"
	"            (2, 1): (\"<HHIQQQIHHH\", \"<IIQQQQQQ\", (0, 2, 5)),\n"
	"            (2, 2): (\">HHIQQQIHHH\", \">IIQQQQQQ\", (0, 2, 5))}\n"
	"    try:\n"
	"        with open(path, \"rb\") as f:\n"
	"            ident = f.read(16)\n"
	"            cd = (ident[4], ident[5]) if len(ident) == 16 else None\n"
	"            if ident[:4] != b\"\\x7fELF\" or cd not in fmts:\n"
	"                return None\n"
	"            ef, pf, pi = fmts[cd]\n"
	"            h = struct.unpack(ef, f.read(struct.calcsize(ef)))\n"
	"            interp = None\n"
	"            for i in range(h[9]):\n"
	"                f.seek(h[4] + h[8] * i)\n"
	"                try:\n"
	"                    d = struct.unpack(pf, f.read(struct.calcsize(pf)))\n"
	"                except struct.error:\n"
	"                    continue\n"
	"                if d[pi[0]] != 3:\n"
	"                    continue\n"
	"                f.seek(d[pi[1]])\n"
	"                interp = os.fsdecode(f.read(d[pi[2]])).strip(\"\\0\")\n"
	"                break\n"
	"            return {\"class\": cd[0], \"data\": cd[1], \"machine\": h[1], \"flags\": h[6],\n"
	"                    \"interp\": interp}\n"
	"    except (OSError, TypeError, ValueError, struct.error):\n"
	"        return None\n"
	"def glibc():\n"
	"    try:\n"
	"        v = os.confstr(\"CS_GNU_LIBC_VERSION\")\n"
	"        assert v is not None\n"
	"        v = v.rsplit()[1]\n"
	"    except (AssertionError, AttributeError, OSError, ValueError, IndexError):\n"
	"        v = None\n"
	"    if not v:\n"
	"        try:\n"
	"            import ctypes\n"
	"            g = ctypes.CDLL(None).gnu_get_libc_version\n"
	"            g.restype = ctypes.c_char_p\n"
	"            v = g()\n"
	"            if not isinstance(v, str):\n"
	"                v = v.decode(\"ascii\")\n"
	"        except (ImportError, OSError, AttributeError):\n"
	"            return (-1, -1)\n"
	"    import re\n"
	"    m = re.match(r\"([0-9]+)\\.([0-9]+)\", v)\n"
	"    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)\n"
	"def manylinux(archs):\n"
	"    e = elf(sys.executable)\n"
	"    if \"armv7l\" in archs:\n"
	"        ok = (e is not None and e[\"class\"] == 1 and e[\"data\"] == 1 and e[\"machine\"] == 40\n"
	"              and e[\"flags\"] & 0xFF000000 == 0x05000000 and e[\"flags\"] & 0x400 == 0x400)\n"
	"    elif \"i686\" in archs:\n"
	"        ok = e is not None and e[\"class\"] == 1 and e[\"data\"] == 1 and e[\"machine\"] == 3\n"
	"    else:\n"
	"        ok = any(a in (\"x86_64\", \"aarch64\", \"ppc64\", \"ppc64le\", \"s390x\", \"loongarch64\",\n"
	"                       \"riscv64\") for a in archs)\n"
	"    if not ok:\n"
	"        return []\n"
	"    try:\n"
	"        import _manylinux as ml\n"
	"    except ImportError:\n"
	"        ml = None\n"
	"    cur = glibc()\n"
	"    def compat(arch, ver):\n"
	"        if cur < ver:\n"
	"            return False\n"
	"        if ml is None:\n"
	"            return True\n"
	"        if hasattr(ml, \"manylinux_compatible\"):\n"
	"            r = ml.manylinux_compatible(ver[0], ver[1], arch)\n"
	"            return True if r is None else bool(r)\n"
	"        for old, attr in (((2, 5), \"manylinux1_compatible\"),\n"
	"                          ((2, 12), \"manylinux2010_compatible\"),\n"
	"                          ((2, 17), \"manylinux2014_compatible\")):\n"
	"            if ver == old and hasattr(ml, attr):\n"
	"                return bool(getattr(ml, attr))\n"
	"        return True\n"
	"    too_old = (2, 4) if set(archs) & {\"x86_64\", \"i686\"} else (2, 16)\n"
	"    maxes = [cur] + [(major, 50) for major in range(cur[0] - 1, 1, -1)]\n"
	"    legacy = {(2, 17): \"manylinux2014\", (2, 12): \"manylinux2010\", (2, 5): \"manylinux1\"}\n"
	"    res = []\n"
	"    for arch in archs:\n"
	"        for mx in maxes:\n"
	"            lo = too_old[1] if mx[0] == too_old[0] else -1\n"
	"            for minor in range(mx[1], lo, -1):\n"
	"                ver = (mx[0], minor)\n"
	"                if compat(arch, ver):\n"
	"                    res.append(\"manylinux_%d_%d_%s\" % (ver[0], ver[1], arch))\n"
	"                if ver in legacy and compat(arch, ver):\n"
	"                    res.append(\"%s_%s\" % (legacy[ver], arch))\n"
	"    return res\n"
	"def musllinux(archs):\n"
	"    e = elf(sys.executable)\n"
	"    ld = e and e[\"interp\"]\n"
	"    if not ld or \"musl\" not in ld:\n"
	"        return []\n"
	"    import re, subprocess\n"
	"    try:\n"
	"        p = subprocess.run([ld], stderr=subprocess.PIPE, universal_newlines=True)\n"
	"    except OSError:\n"
	"        return []\n"
	"    lines = [n for n in (n.strip() for n in p.stderr.splitlines()) if n]\n"
	"    if len(lines) < 2 or lines[0][:4] != \"musl\":\n"
	"        return []\n"
	"    m = re.match(r\"Version (\\d+)\\.(\\d+)\", lines[1])\n"
	"    if not m:\n"
	"        return []\n"
	"    major, minor = int(m.group(1)), int(m.group(2))\n"
	"    return [\"musllinux_%d_%d_%s\" % (major, mn, a)\n"
	"            for a in archs for mn in range(minor, -1, -1)]\n"
	"def platforms():\n"
	"    linux = norm(sysconfig.get_platform())\n"
	"    if platform.system() != \"Linux\" or not linux.startswith(\"linux_\"):\n"
	"        return [linux]\n"
	"    if sys.maxsize <= 2**32:\n"
	"        if linux == \"linux_x86_64\":\n"
	"            linux = \"linux_i686\"\n"
	"        elif linux == \"linux_aarch64\":\n"
	"            linux = \"linux_armv8l\"\n"
	"    arch = linux.split(\"_\", 1)[1]\n"
	"    archs = {\"armv8l\": [\"armv8l\", \"armv7l\"]}.get(arch, [arch])\n"
	"    return manylinux(archs) + musllinux(archs) + [\"linux_\" + a for a in archs]\n"
	"def cpython_abis(v):\n"
	"    from importlib.machinery import EXTENSION_SUFFIXES\n"
	"    abis = []\n"
	"    ver = nodot(v[:2])\n"
	"    threading = debug = pymalloc = ucs4 = \"\"\n"
	"    with_debug = cvar(\"Py_DEBUG\")\n"
	"    has_debug = hasattr(sys, \"gettotalrefcount\") or \"_d.pyd\" in EXTENSION_SUFFIXES\n"
	"    if with_debug or (with_debug is None and has_debug):\n"
	"        debug = \"d\"\n"
	"    if v >= (3, 13) and cvar(\"Py_GIL_DISABLED\"):\n"
	"        threading = \"t\"\n"
	"    if v < (3, 8):\n"
	"        wp = cvar(\"WITH_PYMALLOC\")\n"
	"        if wp or wp is None:\n"
	"            pymalloc = \"m\"\n"
	"        if v < (3, 3):\n"
	"            us = cvar(\"Py_UNICODE_SIZE\")\n"
	"            if us == 4 or (us is None and sys.maxunicode == 0x10FFFF):\n"
	"                ucs4 = \"u\"\n"
	"    elif debug:\n"
	"        abis.append(\"cp%s%s\" % (ver, threading))\n"
	"    abis.insert(0, \"cp%s%s%s%s%s\" % (ver, threading, debug, pymalloc, ucs4))\n"
	"    return abis\n"
	"def interp_version():\n"
	"    v = cvar(\"py_version_nodot\")\n"
	"    return str(v) if v else nodot(sys.version_info[:2])\n"
	"def generic_abi():\n"
	"    ext = cvar(\"EXT_SUFFIX\")\n"
	"    if not isinstance(ext, str) or ext[0] != \".\":\n"
	"        raise SystemError(\"invalid sysconfig.get_config_var('EXT_SUFFIX')\")\n"
	"    parts = ext.split(\".\")\n"
	"    if len(parts) < 3:\n"
	"        return cpython_abis(tuple(sys.version_info[:2]))\n"
	"    soabi = parts[1]\n"
	"    if soabi.startswith(\"cpython\"):\n"
	"        abi = \"cp\" + soabi.split(\"-\")[1]\n"
	"    elif soabi.startswith(\"cp\"):\n"
	"        abi = soabi.split(\"-\")[0]\n"
	"    elif soabi.startswith(\"pypy\"):\n"
	"        abi = \"-\".join(soabi.split(\"-\")[:2])\n"
	"    elif soabi.startswith(\"graalpy\"):\n"
	"        abi = \"-\".join(soabi.split(\"-\")[:3])\n"
	"    elif soabi:\n"
	"        abi = soabi\n"
	"    else:\n"
	"        return []\n"
	"    return [norm(abi)]\n"
	"def sys_tags():\n"
	"    tags = []\n"
	"    def add(i, a, p):\n"
	"        tags.append((\"%s-%s-%s\" % (i, a, p)).lower())\n"
	"    v = tuple(sys.version_info[:2])\n"
	"    name = sys.implementation.name\n"
	"    name = {\"python\": \"py\", \"cpython\": \"cp\", \"pypy\": \"pp\", \"ironpython\": \"ip\",\n"
	"            \"jython\": \"jy\"}.get(name) or name\n"
	"    plats = platforms()\n"
	"    if name == \"cp\":\n"
	"        interp = \"cp\" + nodot(v)\n"
	"        abis = [a for a in cpython_abis(v) if a not in (\"abi3\", \"none\")]\n"
	"        for a in abis:\n"
	"            for p in plats:\n"
	"                add(interp, a, p)\n"
	"        import re\n"
	"        m = re.match(r\"^cp\\d+(.*)$\", abis[0]) if abis else None\n"
	"        abi3 = v >= (3, 2) and not (m and \"t\" in m.group(1))\n"
	"        if abi3:\n"
	"            for p in plats:\n"
	"                add(interp, \"abi3\", p)\n"
	"        for p in plats:\n"
	"            add(interp, \"none\", p)\n"
	"        if abi3:\n"
	"            for minor in range(v[1] - 1, 1, -1):\n"
	"                for p in plats:\n"
	"                    add(\"cp\" + nodot((v[0], minor)), \"abi3\", p)\n"
	"    else:\n"
	"        interp = name + interp_version()\n"
	"        abis = generic_abi()\n"
	"        if \"none\" not in abis:\n"
	"            abis.append(\"none\")\n"
	"        for a in abis:\n"
	"            for p in plats:\n"
	"                add(interp, a, p)\n"
	"    compat = {\"pp\": \"pp3\", \"cp\": \"cp\" + interp_version()}.get(name)\n"
	"    pys = [\"py\" + nodot(v), \"py%d\" % v[0]]\n"
	"    pys += [\"py\" + nodot((v[0], mn)) for mn in range(v[1] - 1, -1, -1)]\n"
	"    for pv in pys:\n"
	"        for p in plats:\n"
	"            add(pv, \"none\", p)\n"
	"    if compat:\n"
	"        add(compat, \"none\", \"any\")\n"
	"    for pv in pys:\n"
	"        add(pv, \"none\", \"any\")\n"
	"    return tags\n"
	"def full_version(info):\n"
	"    s = \"%d.%d.%d\" % (info.major, info.minor, info.micro)\n"
	"    if info.releaselevel != \"final\":\n"
	"        s += info.releaselevel[0] + str(info.serial)\n"
	"    return s\n"
	"v = sys.version_info\n"
	"emit(\"executable\", getattr(sys, \"_base_executable\", None) or sys.executable)\n"
	"emit(\"version\", platform.python_version())\n"
	"emit(\"major\", v[0])\n"
	"emit(\"minor\", v[1])\n"
	"emit(\"implementation\", sys.implementation.name)\n"
	"emit(\"cache_tag\", sys.implementation.cache_tag)\n"
	"emit(\"magic\", importlib.util.MAGIC_NUMBER.hex())\n"
	"emit(\"stdlib\", sysconfig.get_path(\"stdlib\"))\n"
	"scheme = \"venv\" if \"venv\" in sysconfig.get_scheme_names() else \"posix_prefix\"\n"
	"empty = {\"base\": \"\", \"platbase\": \"\", \"installed_base\": \"\", \"installed_platbase\": \"\"}\n"
	"emit(\"platlib_rel\", sysconfig.get_path(\"platlib\", scheme, empty).lstrip(\"/\"))\n"
	"emit(\"include_rel\", \"include/site/python%d.%d\" % (v[0], v[1]))\n"
	"for t in sys_tags():\n"
	"    emit(\"tag\", t)\n"
	"env = {\n"
	"    \"implementation_name\": sys.implementation.name,\n"
	"    \"implementation_version\": full_version(sys.implementation.version),\n"
	"    \"os_name\": os.name,\n"
	"    \"platform_machine\": platform.machine(),\n"
	"    \"platform_release\": platform.release(),\n"
	"    \"platform_system\": platform.system(),\n"
	"    \"platform_version\": platform.version(),\n"
	"    \"python_full_version\": platform.python_version(),\n"
	"    \"platform_python_implementation\": platform.python_implementation(),\n"
	"    \"python_version\": \".\".join(platform.python_version_tuple()[:2]),\n"
	"    \"sys_platform\": sys.platform,\n"
	"}\n"
	"for k in sorted(env):\n"
	"    emit(\"marker.\" + k, env[k])\n"
	"out.append(\"end\")\n"
	"sys.stdout.write(\"\\n\".join(out) + \"\\n\")\n";
/* clang-format on */

static const char probe_script[] = "import sys; print(sys.executable)";

struct tag_index {
	size_t cap;	/* power of two */
	uint32_t *slot; /* index + 1 into ip->tags, 0 = empty */
};

static uint32_t tag_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void build_index(struct interp *ip)
{
	struct tag_index *ix = xcalloc(1, sizeof(*ix));
	ix->cap = 16;
	while (ix->cap < 2 * ip->ntags)
		ix->cap *= 2;
	ix->slot = xcalloc(ix->cap, sizeof(*ix->slot));
	for (size_t i = 0; i < ip->ntags; i++) {
		size_t h = tag_hash(ip->tags[i]) & (ix->cap - 1);
		bool dup = false;
		for (; ix->slot[h]; h = (h + 1) & (ix->cap - 1)) {
			if (strcmp(ip->tags[ix->slot[h] - 1], ip->tags[i]) == 0) {
				dup = true; /* keep the first (best) priority */
				break;
			}
		}
		if (!dup)
			ix->slot[h] = (uint32_t)(i + 1);
	}
	ip->tag_index = ix;
}

int interp_tag_priority(const struct interp *ip, const char *tag)
{
	const struct tag_index *ix = ip ? ip->tag_index : NULL;
	if (!ix || !tag)
		return -1;
	for (size_t h = tag_hash(tag) & (ix->cap - 1); ix->slot[h]; h = (h + 1) & (ix->cap - 1))
		if (strcmp(ip->tags[ix->slot[h] - 1], tag) == 0)
			return (int)(ix->slot[h] - 1);
	return -1;
}

const char *interp_marker(const struct interp *ip, const char *key)
{
	if (!ip || !key)
		return NULL;
	for (size_t i = 0; i < ip->nmarkers; i++)
		if (strcmp(ip->markers[i].key, key) == 0)
			return ip->markers[i].value;
	return NULL;
}

struct interp *interp_free(struct interp *ip)
{
	if (!ip)
		return NULL;
	free(ip->python);
	free(ip->executable);
	free(ip->version);
	free(ip->implementation);
	free(ip->cache_tag);
	free(ip->magic);
	free(ip->stdlib);
	free(ip->platlib_rel);
	free(ip->include_rel);
	for (size_t i = 0; i < ip->ntags; i++)
		free(ip->tags[i]);
	free(ip->tags);
	for (size_t i = 0; i < ip->nmarkers; i++) {
		free(ip->markers[i].key);
		free(ip->markers[i].value);
	}
	free(ip->markers);
	struct tag_index *ix = ip->tag_index;
	if (ix)
		free(ix->slot);
	free(ix);
	free(ip);
	return NULL;
}

/* ---- the answer ---- */

static char *unescape(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 1 < n) {
			char c = s[++i];
			out[o++] = c == 'n' ? '\n' : c == 'r' ? '\r' : c;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = 0;
	return out;
}

static int parse_int_field(const char *s, int *ret)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > 1000)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

/* Parses the script's output into *ret (caller frees with interp_free). */
static int parse_answer(const char *text, size_t len, struct interp **ret, char *err, size_t errlen)
{
	struct interp *ip = xcalloc(1, sizeof(*ip));
	size_t tagcap = 0, markcap = 0;
	bool header = false, end = false, have_major = false, have_minor = false;
	const char *p = text, *stop = text + len;
	const char *what = "";

	if (memchr(text, 0, len)) {
		what = "NUL byte in output";
		goto bad;
	}
	while (p < stop) {
		const char *nl = memchr(p, '\n', (size_t)(stop - p));
		if (!nl) {
			what = "output does not end with a newline";
			goto bad;
		}
		size_t n = (size_t)(nl - p);
		const char *line = p;
		p = nl + 1;
		if (!header) {
			if (n != strlen(INTERP_HEADER) || memcmp(line, INTERP_HEADER, n) != 0) {
				what = "unexpected first line";
				goto bad;
			}
			header = true;
			continue;
		}
		if (end) {
			what = "text after the end line";
			goto bad;
		}
		if (n == 3 && memcmp(line, "end", 3) == 0) {
			end = true;
			continue;
		}
		const char *eq = memchr(line, '=', n);
		if (!eq) {
			what = "line without '='";
			goto bad;
		}
		char *key = xstrndup(line, (size_t)(eq - line));
		char *val = unescape(eq + 1, n - (size_t)(eq + 1 - line));
		char **field = NULL;
		if (!strcmp(key, "executable"))
			field = &ip->executable;
		else if (!strcmp(key, "version"))
			field = &ip->version;
		else if (!strcmp(key, "implementation"))
			field = &ip->implementation;
		else if (!strcmp(key, "cache_tag"))
			field = &ip->cache_tag;
		else if (!strcmp(key, "magic"))
			field = &ip->magic;
		else if (!strcmp(key, "stdlib"))
			field = &ip->stdlib;
		else if (!strcmp(key, "platlib_rel"))
			field = &ip->platlib_rel;
		else if (!strcmp(key, "include_rel"))
			field = &ip->include_rel;
		if (field) {
			free(*field);
			*field = val;
		} else if (!strcmp(key, "major") || !strcmp(key, "minor")) {
			bool major = key[1] == 'a';
			int r = parse_int_field(val, major ? &ip->major : &ip->minor);
			free(val);
			if (r < 0) {
				free(key);
				what = "bad version number";
				goto bad;
			}
			*(major ? &have_major : &have_minor) = true;
		} else if (!strcmp(key, "tag")) {
			const char *d1 = strchr(val, '-'), *d2 = d1 ? strchr(d1 + 1, '-') : NULL;
			if (!d1 || !d2 || strchr(d2 + 1, '-') || d1 == val || d2 == d1 + 1 ||
			    !d2[1]) {
				free(val);
				free(key);
				what = "malformed tag";
				goto bad;
			}
			if (ip->ntags == tagcap) {
				tagcap = tagcap ? 2 * tagcap : 256;
				ip->tags = xrealloc(ip->tags, tagcap * sizeof(*ip->tags));
			}
			ip->tags[ip->ntags++] = val;
		} else if (str_startswith(key, "marker.") && key[7]) {
			if (ip->nmarkers == markcap) {
				markcap = markcap ? 2 * markcap : 16;
				ip->markers = xrealloc(ip->markers, markcap * sizeof(*ip->markers));
			}
			ip->markers[ip->nmarkers].key = xstrdup(key + 7);
			ip->markers[ip->nmarkers++].value = val;
		} else {
			free(val); /* unknown keys are ignored */
		}
		free(key);
	}
	if (!end)
		what = "output is truncated";
	else if (!ip->executable || !ip->executable[0] || !ip->version || !ip->implementation ||
		 !ip->magic || !ip->stdlib || !ip->platlib_rel || !ip->include_rel || !have_major ||
		 !have_minor)
		what = "a required field is missing";
	else if (!ip->ntags)
		what = "no supported tags";
	else if (!interp_marker(ip, "python_version") || !interp_marker(ip, "sys_platform"))
		what = "marker environment is incomplete";
	else
		what = NULL;
	if (what)
		goto bad;
	if (!ip->cache_tag)
		ip->cache_tag = xstrdup("");
	build_index(ip);
	*ret = ip;
	return 0;
bad:
	snprintf(err, errlen, "%s", what);
	interp_free(ip);
	return -EINVAL;
}

/* ---- running the interpreter ---- */

/* Finds python like execvp does.  Returns a malloc'd path or NULL. */
static char *find_program(const char *name)
{
	struct stat st;
	if (!*name)
		return NULL;
	if (strchr(name, '/'))
		return stat(name, &st) == 0 && S_ISREG(st.st_mode) && access(name, X_OK) == 0
			   ? xstrdup(name)
			   : NULL;
	const char *path = getenv("PATH");
	char defpath[256];
	if (!path) {
		size_t n = confstr(_CS_PATH, defpath, sizeof(defpath));
		path = n > 0 && n <= sizeof(defpath) ? defpath : "/bin:/usr/bin";
	}
	for (const char *p = path;;) {
		const char *colon = strchr(p, ':');
		size_t n = colon ? (size_t)(colon - p) : strlen(p);
		char *cand = n ? xasprintf("%.*s/%s", (int)n, p, name) : xasprintf("./%s", name);
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
			return cand;
		free(cand);
		if (!colon)
			return NULL;
		p = colon + 1;
	}
}

/* Last non-empty line of s (for error messages), at most 300 bytes. */
static void last_line(const char *s, size_t n, char *out, size_t outlen)
{
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		n--;
	size_t start = n;
	while (start && s[start - 1] != '\n')
		start--;
	size_t len = MIN(n - start, (size_t)300);
	snprintf(out, outlen, "%.*s", (int)len, s + start);
	for (char *c = out; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = ' ';
}

/* Runs path -I -c script; returns 0 with the whole stdout (caller frees). */
static int run_python(const char *path, const char *script, char **ret, size_t *ret_len, char *err,
		      size_t errlen)
{
	int outp[2] = {-1, -1}, errp[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	struct buf out, errb;
	pid_t pid;
	int r;

	buf_init(&out);
	buf_init(&errb);
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(-r));
		goto out_close;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
	posix_spawnattr_init(&attr);
	sigset_t none, dfl;
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	char *argv[] = {(char *)path, (char *)"-I", (char *)"-c", (char *)script, NULL};
	r = -posix_spawn(&pid, path, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r < 0) {
		snprintf(err, errlen, "cannot run '%s': %s", path, strerror(-r));
		goto out_close;
	}
	close(outp[1]);
	close(errp[1]);
	outp[1] = errp[1] = -1;

	uint64_t deadline = now_ns() + (uint64_t)INTERP_TIMEOUT_MS * 1000000u;
	bool timed_out = false, too_big = false;
	struct pollfd pfd[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		uint64_t now = now_ns();
		if (now >= deadline) {
			timed_out = true;
			break;
		}
		int n = poll(pfd, 2, (int)((deadline - now) / 1000000u) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			char tmp[16384];
			ssize_t got = read(pfd[i].fd, tmp, sizeof(tmp));
			if (got < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (got <= 0) {
				pfd[i].fd = -1;
				continue;
			}
			struct buf *b = i == 0 ? &out : &errb;
			size_t cap = i == 0 ? INTERP_MAX_OUTPUT : INTERP_MAX_STDERR;
			if (b->len + (size_t)got > cap) {
				if (i == 0) {
					too_big = true;
					pfd[0].fd = pfd[1].fd = -1;
					break;
				}
				got = (ssize_t)(cap - b->len);
			}
			buf_append(b, tmp, (size_t)got);
		}
	}
	/* the child may have closed its output and still be running */
	int status = -1;
	for (bool killed = false;;) {
		if ((timed_out || too_big || now_ns() >= deadline) && !killed) {
			timed_out = timed_out || !too_big;
			kill(pid, SIGKILL);
			killed = true;
		}
		pid_t w = waitpid(pid, &status, killed ? 0 : WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			status = -1;
			break;
		}
		if (w == 0)
			usleep(2000);
	}
	char last[320] = "";
	if (errb.len)
		last_line((char *)errb.data, errb.len, last, sizeof(last));
	if (timed_out) {
		snprintf(err, errlen, "'%s' did not answer within %d s", path,
			 INTERP_TIMEOUT_MS / 1000);
		r = -EINVAL;
	} else if (too_big) {
		snprintf(err, errlen, "'%s' printed more than %u bytes", path, INTERP_MAX_OUTPUT);
		r = -EINVAL;
	} else if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (status != -1 && WIFSIGNALED(status))
			snprintf(err, errlen, "'%s' was killed by signal %d%s%s", path,
				 WTERMSIG(status), last[0] ? ": " : "", last);
		else
			snprintf(err, errlen, "'%s' failed (exit status %d)%s%s", path,
				 status == -1 ? -1 : WEXITSTATUS(status), last[0] ? ": " : "",
				 last);
		r = -EINVAL;
	} else {
		buf_reserve(&out, 0);
		*ret = (char *)buf_steal(&out, ret_len);
		r = 0;
	}
out_close:
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	buf_free(&out);
	buf_free(&errb);
	return r;
}

/* ---- the cache ---- */

static bool is_script(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char hdr[2];
	bool r = read(fd, hdr, 2) == 2 && hdr[0] == '#' && hdr[1] == '!';
	close(fd);
	return r;
}

/* Cache file name for the interpreter binary at path; NULL if unusable. */
static char *cache_path(const char *cache_dir, const char *path)
{
	char real[PATH_MAX];
	struct stat st;
	if (!realpath(path, real) || stat(real, &st) < 0)
		return NULL;
	uint8_t script_hash[SHA256_LEN], key[SHA256_LEN];
	char hex[SHA256_HEX_LEN + 1];
	sha256_buf(interp_script, sizeof(interp_script) - 1, script_hash);
	hex_encode(script_hash, SHA256_LEN, hex);
	char *id = xasprintf("sitefs-interp\n%s\n%lld\n%lld.%09ld\n%s", real, (long long)st.st_size,
			     (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec, hex);
	sha256_buf(id, strlen(id), key);
	free(id);
	hex_encode(key, SHA256_LEN, hex);
	return xasprintf("%s/interp/%s.txt", cache_dir, hex);
}

/* The binary a wrapper script (pyenv shim) runs; NULL on failure. */
static char *probe_executable(const char *path, char *err, size_t errlen)
{
	char *out;
	size_t len;
	if (run_python(path, probe_script, &out, &len, err, errlen) < 0)
		return NULL;
	while (len && (out[len - 1] == '\n' || out[len - 1] == '\r'))
		out[--len] = 0;
	if (!len || out[0] != '/' || strchr(out, '\n')) {
		snprintf(err, errlen, "'%s' reported no sys.executable", path);
		free(out);
		return NULL;
	}
	return out;
}

static int read_cache(const char *file, struct interp **ret)
{
	struct stat st;
	if (stat(file, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)INTERP_MAX_OUTPUT)
		return -EINVAL;
	char *text;
	size_t len;
	int r = file_read_all(file, &text, &len);
	if (r < 0)
		return r;
	char why[128];
	r = parse_answer(text, len, ret, why, sizeof(why));
	if (r < 0)
		log_debug(LOG_CAT_RESOLVER, "interp cache \"%s\" is invalid (%s), ignoring", file,
			  why);
	free(text);
	return r;
}

int interp_query(const char *python, const char *cache_dir, struct interp **ret, char *err,
		 size_t errlen)
{
	char dummy[1];
	if (!err || !errlen)
		err = dummy, errlen = sizeof(dummy);
	err[0] = 0;
	char *path = find_program(python);
	if (!path) {
		snprintf(err, errlen, "'%s' not found%s", python,
			 strchr(python, '/') ? "" : " on PATH");
		return -ENOENT;
	}

	struct interp *ip = NULL;
	char *cfile = NULL, *text = NULL;
	size_t len;
	int r;
	if (cache_dir) {
		if (is_script(path)) {
			char *exe = probe_executable(path, err, errlen);
			if (!exe) {
				r = -EINVAL;
				goto out;
			}
			cfile = cache_path(cache_dir, exe);
			free(exe);
		} else {
			cfile = cache_path(cache_dir, path);
		}
		if (cfile && read_cache(cfile, &ip) == 0) {
			log_debug(LOG_CAT_RESOLVER, "interp: \"%s\" from cache \"%s\"", python,
				  cfile);
			goto done;
		}
	}

	r = run_python(path, interp_script, &text, &len, err, errlen);
	if (r < 0)
		goto out;
	char why[128];
	r = parse_answer(text, len, &ip, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "'%s' gave an unexpected answer (%s)", path, why);
		goto out;
	}
	if (cfile) {
		char *dir = xasprintf("%s/interp", cache_dir);
		int w = mkdir_p(dir, 0755);
		if (w == 0)
			w = file_write_atomic(cfile, text, len, 0644);
		if (w < 0)
			log_debug(LOG_CAT_RESOLVER, "interp: cannot write \"%s\": %s, ignoring",
				  cfile, strerror(-w));
		free(dir);
	}
done:
	free(ip->python);
	ip->python = xstrdup(python);
	*ret = ip;
	ip = NULL;
	r = 0;
out:
	interp_free(ip);
	free(text);
	free(cfile);
	free(path);
	return r;
}
