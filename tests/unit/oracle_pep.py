#!/usr/bin/python3
"""oracle_pep: random PEP 440 / PEP 508 cases with the answers of `packaging`.

Usage: oracle_pep.py pep440|pep508 [seed]

The C unit tests (test_pep440, test_pep508) run this and compare every line
with what resolver/pep440.c and resolver/pep508.c compute.  The seed is
fixed so a failure reproduces; exit status 77 means "no oracle here"
(packaging missing), which the tests turn into a skip.

Output: one case per line, fields separated by TAB, each field escaped
(backslash, \\t, \\n, \\r, \\xHH for other control bytes).  The last line is
"END <n>" so a truncated run is noticed.

    V  <input>  <str(Version) | !>  <is_prerelease 0|1>
    C  <a>  <b>  <-1|0|1>                  (Version(a) vs Version(b))
    S  <specifiers>  <str(SpecifierSet) | !>
    M  <specifiers>  <version>  <contains(prereleases=True)>  <contains()>
                                           (0, 1, or x: packaging raised)
    ENV  <i>  <key>  <value>               (marker environments)
    K  <marker>  <one of 0/1/E per ENV | !>
    R  <requirement>  !
    R  <requirement>  ok  <name>  <extras sorted, ','>  <str(specifier)>
       <url | ->  <marker results as for K | ->

Two deliberate differences from packaging 23.0, matching later packaging
and PEP 508 (the C code does the same):
  - a marker is invalid if text follows it (23.0 ignores the rest);
  - when the right side makes a valid specifier but the left side is not a
    version, comparison falls back to Python's string operators (23.0
    raises InvalidVersion; "E" is kept for comparisons that have no string
    fallback, like ~=).
"""

import random
import sys

try:
    import packaging
    import packaging.markers as pm
    from packaging._parser import _parse_marker
    from packaging._tokenizer import DEFAULT_RULES, Tokenizer
    from packaging.requirements import Requirement
    from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
    from packaging.version import InvalidVersion, Version
except ImportError:
    print("oracle_pep: python packaging not available", file=sys.stderr)
    sys.exit(77)


def _eval_op(lhs, op, rhs):
    try:
        spec = Specifier("".join([op.serialize(), rhs]))
    except InvalidSpecifier:
        pass
    else:
        try:
            return spec.contains(lhs, prereleases=True)
        except InvalidVersion:
            pass
    oper = pm._operators.get(op.serialize())
    if oper is None:
        raise pm.UndefinedComparison(f"Undefined {op!r} on {lhs!r} and {rhs!r}.")
    return oper(lhs, rhs)


pm._eval_op = _eval_op


def parse_marker(s):
    t = Tokenizer(s, rules=DEFAULT_RULES)
    parsed = _parse_marker(t)
    t.expect("END", expected="end of marker expression")
    m = pm.Marker.__new__(pm.Marker)
    m._markers = pm._normalize_extra_values(parsed)
    return m


def esc(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif o > 0x7F:
            out.append("".join("\\x%02x" % b for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


NLINES = 0


def emit(*fields):
    global NLINES
    NLINES += 1
    print("\t".join(esc(str(f)) for f in fields))


# ---------------------------------------------------------------- versions

PRE_WORDS = ["a", "b", "c", "rc", "alpha", "beta", "pre", "preview"]
POST_WORDS = ["post", "rev", "r"]
WS = [" ", "  ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1f"]
MUT_ALPHABET = "0123456789.-_+!vVabcdeilnoprstwxyz*,; \t=<>~()[]@'\""


def rnum(r, small=False):
    x = r.random()
    if small or x < 0.55:
        n = r.randint(0, 3)
    elif x < 0.85:
        n = r.randint(0, 20)
    elif x < 0.97:
        n = r.randint(0, 100000)
    else:
        n = r.randint(0, 2**80)
    s = str(n)
    if r.random() < 0.08:
        s = "0" * r.randint(1, 2) + s
    return s


def rsep(r, p=0.4):
    return r.choice(".-_") if r.random() < p else ""


def rcase(r, w):
    if r.random() < 0.8:
        return w
    return "".join(c.upper() if r.random() < 0.5 else c for c in w)


def mutate(r, s):
    s = list(s)
    for _ in range(r.randint(1, 3)):
        k = r.random()
        pos = r.randint(0, len(s))
        if k < 0.4:
            s.insert(pos, r.choice(MUT_ALPHABET))
        elif k < 0.7 and s:
            del s[min(pos, len(s) - 1)]
        elif s:
            s[min(pos, len(s) - 1)] = r.choice(MUT_ALPHABET)
    return "".join(s)


def spell(r, epoch, rel, pre, post, dev, local, fancy=0.3):
    """A spelling of the given components; alternate forms with p=fancy."""
    f = r.random() < fancy
    out = []
    if f and r.random() < 0.15:
        out.append(r.choice(WS))
    if f and r.random() < 0.2:
        out.append(r.choice("vV"))
    if epoch is not None:
        out.append(f"{epoch}!")
    out.append(".".join(rel))
    if pre is not None:
        word, n = pre
        if f:
            word = {"a": r.choice(["a", "alpha"]), "b": r.choice(["b", "beta"]),
                    "rc": r.choice(["rc", "c", "pre", "preview"])}[word]
            out.append(rsep(r) + rcase(r, word) + rsep(r, 0.2) + ("" if n == "0" and r.random() < 0.3 else n))
        else:
            out.append(word + n)
    if post is not None:
        if f and r.random() < 0.3 and post != "":
            out.append("-" + post)
        elif f:
            out.append(rsep(r, 0.7) + rcase(r, r.choice(POST_WORDS)) + rsep(r, 0.2) +
                       ("" if post == "0" and r.random() < 0.3 else post))
        else:
            out.append(".post" + post)
    if dev is not None:
        if f:
            out.append(rsep(r, 0.7) + rcase(r, "dev") + rsep(r, 0.2) +
                       ("" if dev == "0" and r.random() < 0.3 else dev))
        else:
            out.append(".dev" + dev)
    if local is not None:
        if f:
            local = "".join(r.choice(".-_") if c == "." else c for c in local)
            local = rcase(r, local)
        out.append("+" + local)
    if f and r.random() < 0.15:
        out.append(r.choice(WS))
    return "".join(out)


def rlocal(r):
    segs = []
    for _ in range(r.randint(1, 3)):
        if r.random() < 0.5:
            segs.append(rnum(r, small=True))
        else:
            segs.append("".join(r.choice("abcxyz0123") for _ in range(r.randint(1, 4))))
    return ".".join(segs)


def random_components(r, base=None):
    if base is None:
        rel = [rnum(r) for _ in range(r.choice([1, 1, 2, 2, 2, 3, 3, 4, 5]))]
    else:
        rel = list(base)
        k = r.random()
        if k < 0.25:
            rel = rel + ["0"] * r.randint(1, 2)
        elif k < 0.45 and rel:
            i = r.randrange(len(rel))
            rel[i] = str(max(0, int(rel[i]) + r.choice([-1, 1])))
        elif k < 0.55 and len(rel) > 1:
            rel = rel[:-1]
        elif k < 0.65:
            rel = rel + [str(r.randint(0, 2))]
    epoch = None
    if r.random() < (0.12 if base is None else 0.05):
        epoch = r.choice(["0", "1", "2", "00"]) if base else rnum(r)
    pre = post = dev = local = None
    if r.random() < 0.3:
        pre = (r.choice(["a", "b", "rc"]), rnum(r, small=True))
    if r.random() < 0.25:
        post = rnum(r, small=True)
    if r.random() < 0.25:
        dev = rnum(r, small=True)
    if r.random() < 0.2:
        local = rlocal(r)
    return epoch, rel, pre, post, dev, local


def gen_version(r, base=None, fancy=0.3):
    s = spell(r, *random_components(r, base), fancy=fancy)
    if base is None and r.random() < 0.15:
        s = mutate(r, s)
    return s


def parse_version(s):
    try:
        return Version(s)
    except InvalidVersion:
        return None


def versions_section(r):
    pool = []
    for _ in range(6000):
        s = gen_version(r)
        v = parse_version(s)
        if v is None:
            emit("V", s, "!", 0)
        else:
            emit("V", s, str(v), int(v.is_prerelease))
            pool.append(s)
    # close versions compare in interesting ways
    for _ in range(120):
        base = [str(r.randint(0, 2)) for _ in range(r.randint(1, 3))]
        group = [gen_version(r, base) for _ in range(25)]
        group = [g for g in group if parse_version(g) is not None]
        for _ in range(60):
            a, b = r.choice(group), r.choice(group)
            va, vb = Version(a), Version(b)
            emit("C", a, b, (va > vb) - (va < vb))
    for _ in range(2000):
        a, b = r.choice(pool), r.choice(pool)
        va, vb = Version(a), Version(b)
        emit("C", a, b, (va > vb) - (va < vb))


# -------------------------------------------------------------- specifiers

OPS = ["==", "!=", "<=", ">=", "<", ">", "~=", "==="]
BAD_OPS = ["=", "<>", "=>", "~", "=~", "", "!", "==="]


def gen_clause(r, base):
    k = r.random()
    op = r.choice(OPS) if k < 0.95 else r.choice(BAD_OPS)
    ep, rel, pre, post, dev, local = random_components(r, base)
    if op == "~=" and len(rel) < 2 and r.random() < 0.8:
        rel = rel + ["0"]
    if op not in ("==", "!=", "===") and r.random() < 0.7:
        local = None
    if op in ("==", "!=") and r.random() < 0.3:
        ver = spell(r, ep, rel, None, None, None, None) + ".*"
        if r.random() < 0.1:
            ver = spell(r, ep, rel, pre, post, dev, local) + ".*"
    elif op == "===" and r.random() < 0.2:
        ver = r.choice(["foo", "1.0-junk", "", "1.0;", "1.0)", "1.0 x", "RC1", "1.0A1"])
    else:
        ver = spell(r, ep, rel, pre, post, dev, local, fancy=0.25)
        ver = ver.strip() if r.random() < 0.7 else ver
    ws1 = r.choice(["", "", "", " ", "  ", "\t"])
    ws2 = r.choice(["", "", "", " ", "\t"])
    s = ws1 + op + ws2 + ver + r.choice(["", "", " "])
    if r.random() < 0.05:
        s = mutate(r, s)
    return s


def spec_contains(spec, v, pre):
    try:
        return "1" if spec.contains(v, prereleases=pre) else "0"
    except Exception:
        return "x"


def specifiers_section(r):
    for _ in range(3000):
        base = [str(r.randint(0, 3)) for _ in range(r.randint(1, 3))]
        n = r.choice([0, 1, 1, 1, 2, 2, 3])
        clauses = [gen_clause(r, base) for _ in range(n)]
        s = ",".join(clauses)
        if r.random() < 0.05:
            s = r.choice([",", " , ", ",,"]) + s + r.choice(["", ","])
        try:
            spec = SpecifierSet(s)
        except InvalidSpecifier:
            emit("S", s, "!")
            continue
        emit("S", s, str(spec))
        for _ in range(10):
            vs = gen_version(r, base, fancy=0.1)
            v = parse_version(vs)
            if v is None:
                continue
            emit("M", s, vs, spec_contains(spec, v, True), spec_contains(spec, v, None))


# ----------------------------------------------------------------- markers

BASE_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "6.1.0-18-amd64",
    "platform_system": "Linux",
    "platform_version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
    "python_full_version": "3.11.2",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}

ENVS = [
    dict(BASE_ENV, extra=""),
    dict(BASE_ENV, python_version="3.8", python_full_version="3.8.10", os_name="nt",
         sys_platform="win32", platform_system="Windows", platform_machine="AMD64",
         platform_release="10", platform_version="10.0.19041", extra="test"),
    dict(BASE_ENV, implementation_name="pypy", implementation_version="7.3.11",
         platform_python_implementation="PyPy", python_version="3.10",
         python_full_version="3.10.12", sys_platform="darwin", platform_system="Darwin",
         platform_machine="arm64", platform_release="22.6.0", extra="Test_Extra"),
    dict(BASE_ENV, python_version="3.10", python_full_version="3.10.0rc1",
         platform_release="5.15.0-91-generic"),
    dict(BASE_ENV, python_version="banana", python_full_version="3.12.0+local",
         platform_release="6.1.0", implementation_version="3.12.0a7", extra="v8"),
    dict(BASE_ENV, python_version="3.12", python_full_version="3.12.0",
         implementation_version="3.12.0", platform_machine="aarch64", extra="doc.Extra"),
]

VARS = ["python_version", "python_full_version", "os_name", "os.name", "sys_platform",
        "sys.platform", "platform_release", "platform_system", "platform_version",
        "platform.version", "platform_machine", "platform.machine",
        "platform_python_implementation", "platform.python_implementation",
        "python_implementation", "implementation_name", "implementation_version", "extra"]

VALUES = {
    "python_version": ["2.7", "3", "3.6", "3.8", "3.10", "3.11", "3.12", "3.*", "3.1*",
                       "3.8.*", "3.10.0", "4", "banana", "3.11 ", " 3.11", "3.8,3.9", "3.8 3.9"],
    "python_full_version": ["3.8.10", "3.10.0rc1", "3.10.0", "3.11.2", "3.12.0+local",
                            "3.12.0", "3.1", "3.10.*", "3.12.0a7"],
    "os_name": ["posix", "nt", "java", "POSIX", "1.0"],
    "sys_platform": ["linux", "win32", "darwin", "linux2", "cygwin", "lin"],
    "platform_release": ["6.1.0-18-amd64", "5.15.0-91-generic", "10", "22.6.0", "6.1", "6.1.0"],
    "platform_system": ["Linux", "Windows", "Darwin", "Java"],
    "platform_version": ["10.0.19041", "#1 SMP", "1"],
    "platform_machine": ["x86_64", "AMD64", "arm64", "aarch64", "i686"],
    "platform_python_implementation": ["CPython", "PyPy", "Jython", "cpython"],
    "implementation_name": ["cpython", "pypy", "ironpython"],
    "implementation_version": ["3.11.2", "7.3.11", "3.12.0a7", "3.12", "7.*"],
    "extra": ["test", "Test_Extra", "test-extra", "doc", "doc.extra", "DOC", "v8", "1.0",
              "", "security", "tEsT"],
}
VALUE_OF = {"os.name": "os_name", "sys.platform": "sys_platform",
            "platform.version": "platform_version", "platform.machine": "platform_machine",
            "platform.python_implementation": "platform_python_implementation",
            "python_implementation": "platform_python_implementation"}

MOPS = ["==", "==", "==", "!=", "!=", "<", "<", "<=", ">", ">=", ">=", "in", "in", "not in",
        "~=", "==="]


def quote(r, v):
    if r.random() < 0.03:
        # Python escapes inside the literal: the parser runs literal_eval
        v = "".join(r.choice([c, "\\x%02x" % ord(c), "\\%o" % ord(c), "\\u%04x" % ord(c)])
                    for c in v)
        if r.random() < 0.3:
            v += r.choice(["\\n", "\\\\", "\\d", "\\t", "\\'"])
    q = r.choice(["'", '"']) if "'" not in v else '"'
    return q + v + q


def ws(r, need=False):
    if need:
        return r.choice([" ", " ", "  ", "\t"])
    return r.choice(["", " ", " ", " ", "  ", "\t"])


def gen_item(r):
    var = r.choice(VARS)
    vals = VALUES[VALUE_OF.get(var, var)]
    op = r.choice(MOPS)
    if op in ("~=", "===") and r.random() < 0.5:
        op = r.choice(MOPS)
    if op == "not in" and r.random() < 0.2:
        op = r.choice(["not  in", "not\tin"])
    val = r.choice(vals)
    if op in ("in", "not in") and r.random() < 0.5:
        val = " ".join(r.sample(vals, min(3, len(vals))))
    k = r.random()
    lhs, rhs = var, quote(r, val)
    if k < 0.15:
        lhs, rhs = rhs, lhs
    elif k < 0.17:
        rhs = r.choice(VARS)
    elif k < 0.19:
        lhs = quote(r, r.choice(["3.11", "posix", "a"]))
        rhs = quote(r, r.choice(["python_version", "extra", "os_name", "nope", "3.11"]))
    wordy = op[0].isalpha()
    return lhs + ws(r, wordy and lhs[-1].isalnum()) + op + ws(r, wordy and rhs[0].isalnum()) + rhs


def gen_marker(r, depth=0):
    n = 1 if depth > 2 else r.choice([1, 1, 1, 2, 2, 3])
    parts = []
    for i in range(n):
        if depth < 3 and r.random() < 0.2:
            atom = "(" + ws(r) + gen_marker(r, depth + 1) + ws(r) + ")"
        else:
            atom = gen_item(r)
        if i:
            parts.append(ws(r, True) + r.choice(["and", "or"]) + ws(r, True))
        parts.append(atom)
    return "".join(parts)


def eval_all(m):
    out = []
    for env in ENVS:
        try:
            out.append("1" if m.evaluate(env) else "0")
        except Exception:
            out.append("E")
    return "".join(out)


def markers_section(r):
    for i, env in enumerate(ENVS):
        for k, v in env.items():
            emit("ENV", i, k, v)
    for _ in range(5000):
        s = ws(r) + gen_marker(r) + ws(r)
        if r.random() < 0.1:
            s = mutate(r, s)
        try:
            m = parse_marker(s)
        except Exception:
            emit("K", s, "!")
            continue
        emit("K", s, eval_all(m))


# ------------------------------------------------------------ requirements

URLS = ["https://example.com/pkg-1.0-py3-none-any.whl", "file:///tmp/pkg.whl",
        "file://localhost/tmp/x", "file:/tmp/x", "file:tmp", "FILE:///x", "file:///x?",
        "file:///x#", "file:///x?q=1#frag", "file:////x", "file://", "file:///x;p",
        "git+https://github.com/a/b.git@v1.0#egg=b", "./relative/path", "http://",
        "http:///x", "http://[::1]/x", "http://[::1", "http://[1.2.3.4]/",
        "http://[v1.fe]/", "http://[vz.x]/", "https://user:pw@host:8080/p", "ftp://h/f",
        "x:y", "1http://x/y", "https://h/a;b", "http://a]b/", "http://u[x]@h/",
        "http://[fe80::1%25eth0]/", "http://[::ffff:1.2.3.4]/", "http://[1:2:3:4:5:6:7:8]/",
        "http://[1:2:3:4:5:6:7::]/", "http://[::1.2.3.04]/", "https://h/x?y=1;z=2"]


def gen_name(r):
    k = r.random()
    if k < 0.93:
        first = r.choice("abcxyzABC019")
        rest = "".join(r.choice("abcdxyzAB0129._-") for _ in range(r.randint(0, 8)))
        name = first + rest
        if name[-1] in ".-" and r.random() < 0.7:
            name += r.choice("ab1_")
        return name
    return r.choice(["-foo", "_foo", ".foo", "", "foo-", "foo.", "foo_", "f", "9", "a b"])


def gen_requirement(r):
    base = [str(r.randint(0, 3)) for _ in range(r.randint(1, 3))]
    out = [ws(r), gen_name(r)]
    if r.random() < 0.3:
        extras = [gen_name(r) for _ in range(r.choice([0, 1, 1, 2, 3]))]
        out.append(ws(r) + "[" + ws(r) + (ws(r) + "," + ws(r)).join(extras) + ws(r) + "]")
    if r.random() < 0.2:
        out.append(ws(r) + "@" + ws(r) + r.choice(URLS))
        if r.random() < 0.4:
            out.append(r.choice([" ", ";", " ;", "\t; "]) + ws(r) + gen_marker(r))
    else:
        if r.random() < 0.7:
            clauses = [gen_clause(r, base) for _ in range(r.choice([1, 1, 2, 3]))]
            spec = (ws(r) + "," + ws(r)).join(c.strip(" \t\n\r\x0b\x0c\x1c\x1f") for c in clauses)
            if r.random() < 0.3:
                spec = "(" + ws(r) + spec + ws(r) + ")"
            out.append(ws(r) + spec)
        if r.random() < 0.35:
            out.append(ws(r) + ";" + ws(r) + gen_marker(r))
    out.append(r.choice(["", "", "", " ", "\n"]))
    s = "".join(out)
    if r.random() < 0.1:
        s = mutate(r, s)
    return s


def requirements_section(r):
    for _ in range(5000):
        s = gen_requirement(r)
        try:
            req = Requirement(s)
        except Exception:
            emit("R", s, "!")
            continue
        emit("R", s, "ok", req.name, ",".join(sorted(req.extras)), str(req.specifier),
             req.url if req.url is not None else "-",
             eval_all(req.marker) if req.marker is not None else "-")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "pep440"
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 440508
    r = random.Random(seed)
    if mode == "pep440":
        versions_section(r)
        specifiers_section(r)
    elif mode == "pep508":
        markers_section(r)
        requirements_section(r)
    else:
        print(f"oracle_pep: unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(f"END\t{NLINES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
