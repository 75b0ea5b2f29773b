"""--profile FILE: a mount records which bodies were opened; a later mount with the same
file fetches them all in one parallel wave right after mounting (one request per wheel
when they are dense), so that opening them later costs no request.  A profile that names
files the mount does not have, or that is not a profile at all, is a warning."""

import hashlib
import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from conftest import py_env, range_spans, verbose_import

pytestmark = pytest.mark.fuse

FILES = [("purepkg", "purepkg/core.py"), ("purepkg", "purepkg/sub/deep/mod.py"),
         ("clipkg", "clipkg/cli.py"), ("datapkg", "datapkg/__init__.py"),
         ("bigpkg", "bigpkg/__init__.py")]
BIG = ("bigpkg", "bigpkg/big.bin")  # > 1 MiB compressed: streamed alone, not buffered
HEADER = "# sitefs profile 1\n"
DONE = re.compile(r'profile "[^"]*": (\d+) bodies .* in (\d+) ranges, (\d+) requests|'
                  r'profile "[^"]*": nothing to fetch')


def wait_replay(m, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = DONE.search(m.log())
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"no replay summary in the daemon log:\n{m.log()}")


def unmount(m):
    m.teardown()
    assert m.proc.returncode is not None, "daemon still running after unmount"


V2 = re.compile(rb"# sitefs profile 2 (\d{20}) (\d{20})\n")


class Pyc:
    """One record of a profile's pyc section (layout: fs/profile_fmt.h)."""

    def __init__(self, sha, opt, tag, hdr, body_len, frame):
        self.sha, self.opt, self.tag, self.hdr, self.body_len, self.frame = \
            sha, opt, tag, hdr, body_len, frame

    def encode(self):
        t = self.tag.encode()
        return (self.sha + bytes([self.opt, len(t)]) + t + self.hdr
                + struct.pack("<II", self.body_len, len(self.frame)) + self.frame)


def read_profile(path):
    """(set of "<wheel>\t<entry>" lines, [Pyc]) of a version-2 file."""
    data = path.read_bytes()
    m = V2.match(data)
    assert m, data[:80]
    tlen, n = int(m.group(1)), int(m.group(2))
    off = m.end()
    text = data[off:off + tlen].decode()
    off += tlen
    pycs = []
    for _ in range(n):
        sha, opt, tl = data[off:off + 32], data[off + 32], data[off + 33]
        tag = data[off + 34:off + 34 + tl].decode()
        o = off + 34 + tl
        hdr = data[o:o + 16]
        blen, flen = struct.unpack("<II", data[o + 16:o + 24])
        frame = data[o + 24:o + 24 + flen]
        assert len(frame) == flen
        pycs.append(Pyc(sha, opt, tag, hdr, blen, frame))
        off = o + 24 + flen
    assert off == len(data), "bytes after the last pyc"
    return set(text.splitlines()), pycs


def write_profile(path, lines, pycs=(), cut=None):
    text = "".join(f"{line}\n" for line in lines).encode()
    data = (f"# sitefs profile 2 {len(text):020d} {len(pycs):020d}\n".encode() + text
            + b"".join(p.encode() for p in pycs))
    path.write_bytes(data[:cut])


def profile_lines(path):
    return read_profile(path)[0]


def test_record_then_replay(mount, nginx, nginx_lock, wheelhouse, tmp_path):
    prof = tmp_path / "app.profile"
    cache = tmp_path / "cache"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    for name, entry in FILES:
        assert (m.site / entry).read_bytes() == wheelhouse.content(name, entry)
    wait_replay(m)  # "nothing to fetch": the file did not exist
    unmount(m)
    want = {f"{wheelhouse[name].name}\t{entry}" for name, entry in FILES}
    assert profile_lines(prof) == want

    # Same catalog, no bodies: every request of the next mount is the replay's.
    shutil.rmtree(cache / "bodies")
    mark = nginx.mark()
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    found = wait_replay(m)
    reqs = nginx.requests(mark)
    wheels = {wheelhouse[name].name for name, _ in FILES}
    assert int(found.group(1)) == len(FILES)
    assert len(reqs) <= len(wheels), reqs
    assert {r.name for r in reqs} == wheels
    assert all(r.status == 206 for r in reqs)
    assert m.proc.poll() is None

    mark = nginx.mark()
    for name, entry in FILES:
        assert (m.site / entry).read_bytes() == wheelhouse.content(name, entry)
    assert nginx.requests(mark) == [], "a replayed body was fetched again"
    # Python imports what was replayed without a request either
    m.python("-c", "import purepkg.core, clipkg.cli")
    unmount(m)
    assert want <= profile_lines(prof)


def test_big_entry_is_streamed(mount, nginx, nginx_lock, wheelhouse, tmp_path):
    cache = tmp_path / "cache"
    unmount(mount(nginx_lock, cache=cache))  # the catalog only
    prof = tmp_path / "big.profile"
    prof.write_text(HEADER + f"{wheelhouse[BIG[0]].name}\t{BIG[1]}\n")
    mark = nginx.mark()
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    assert wait_replay(m).group(1) == "1"
    reqs = nginx.requests(mark)
    assert [r.name for r in reqs] == [wheelhouse[BIG[0]].name]
    mark = nginx.mark()
    assert (m.site / BIG[1]).read_bytes() == wheelhouse.content(*BIG)
    assert nginx.requests(mark) == []


def test_early_opens_wait_for_the_replay(mount, nginx, nginx_lock, wheelhouse, tmp_path):
    """Opens racing the replay wait for it (or fill first, and the replay skips what
    they claimed): no byte is fetched twice."""
    cache = tmp_path / "cache"
    unmount(mount(nginx_lock, cache=cache))  # the catalog only
    prof = tmp_path / "p.profile"
    files = FILES + [BIG]
    prof.write_text(HEADER + "".join(f"{wheelhouse[n].name}\t{e}\n" for n, e in files))
    mark = nginx.mark()
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    got = [(m.site / e).read_bytes() for _, e in files]
    assert got == [wheelhouse.content(n, e) for n, e in files]
    wait_replay(m)
    per = {}
    for r in nginx.requests(mark):
        per.setdefault(r.name, []).append(r.range)
    for name, ranges in per.items():
        size = (wheelhouse.dir / name).stat().st_size
        spans = sorted(s for rg in ranges for s in range_spans(rg, size))
        for (a, b), (c, d) in zip(spans, spans[1:]):
            # a range ends with up to 256 bytes of slack for an unknown local extra
            # field, which may be the next entry's header: never a body twice
            assert b - c < 512, f"{name}: bytes fetched twice: {spans}"


def test_stale_entries_are_ignored(mount, nginx_lock, wheelhouse, tmp_path):
    prof = tmp_path / "stale.profile"
    pure = wheelhouse["purepkg"].name
    old = [f"{pure}\tpurepkg/gone.py", "nosuch-1.0-py3-none-any.whl\tnosuch/__init__.py",
           f"{pure}\tpurepkg/core.py"]
    prof.write_text(HEADER + "\n".join(old) + "\nno tab here\n")
    m = mount(nginx_lock, args=["--profile", prof])
    found = wait_replay(m)
    assert found.group(1) == "1"
    assert re.search(r"warning.*2 of 3 entries name files this mount does not have", m.log(),
                     re.I), m.log()
    assert re.search(r"1 malformed lines ignored", m.log()), m.log()
    entry = "clipkg/cli.py"
    assert (m.site / entry).read_bytes() == wheelhouse.content("clipkg", entry)
    unmount(m)
    lines = profile_lines(prof)
    assert set(old) <= lines  # append-only: what it held stays
    assert f"{wheelhouse['clipkg'].name}\t{entry}" in lines


@pytest.mark.parametrize("content", [b"\x00\xff garbage \x01" * 100, b"", b"# sitefs profile 9\n"])
def test_corrupt_profile_is_ignored(mount, nginx_lock, wheelhouse, tmp_path, content):
    prof = tmp_path / "bad.profile"
    prof.write_bytes(content)
    m = mount(nginx_lock, args=["--profile", prof])
    assert re.search(r"is not a sitefs profile: ignoring it", m.log()), m.log()
    entry = "purepkg/core.py"
    assert (m.site / entry).read_bytes() == wheelhouse.content("purepkg", entry)
    unmount(m)
    assert profile_lines(prof) == {f"{wheelhouse['purepkg'].name}\t{entry}"}


def test_missing_directory_is_a_warning(mount, nginx_lock, wheelhouse, tmp_path):
    prof = tmp_path / "no/such/dir/p.profile"
    m = mount(nginx_lock, args=["--profile", prof])
    entry = "purepkg/core.py"
    assert (m.site / entry).read_bytes() == wheelhouse.content("purepkg", entry)
    unmount(m)
    assert re.search(r"cannot write it", m.log()), m.log()


# --- pycs carried by the profile ------------------------------------------------------

TAG = "cpython-311"
MODS = "purepkg.core, purepkg.util, purepkg.sub.deep.mod"
SOURCES = ["purepkg/__init__.py", "purepkg/core.py", "purepkg/util.py",
           "purepkg/sub/deep/mod.py"]
SEEDED = re.compile(r"; (\d+) pycs seeded in \d+ ms \((\d+) were there, (\d+) refused\), "
                    r"(\d+) sources left")


def store(cache):
    root = cache / "pyc"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.pyc")}


def sha_of(wheelhouse, entry):
    return hashlib.sha256(wheelhouse.content("purepkg", entry)).digest()


@pytest.fixture
def recorded(mount, nginx_lock, wheelhouse, tmp_path):
    """A profile recorded by a run that imported MODS (and compiled them: no compile
    ahead, so that the store holds exactly what Python wrote)."""
    prof = tmp_path / "rec.profile"
    cache = tmp_path / "rec-cache"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof],
              env={"SITEFS_COMPILE_AHEAD": "0"})
    wait_replay(m)
    out = verbose_import(m, MODS)
    assert "created '" in out, out  # compiled here, into the store
    unmount(m)
    return prof, store(cache)


def test_profile_carries_pycs(recorded, wheelhouse):
    prof, compiled = recorded
    lines, pycs = read_profile(prof)
    assert {f"{wheelhouse['purepkg'].name}\t{s}" for s in SOURCES} <= lines
    by_sha = {p.sha: p for p in pycs if p.opt == 0}
    for s in SOURCES:
        p = by_sha[sha_of(wheelhouse, s)]
        assert p.tag == TAG
        # exactly the bytes Python wrote into the store, header included
        h = p.sha.hex()
        assert compiled[f"{h[:2]}/{h[2:]}.{TAG}.pyc"] == p.hdr + zstd_decompress(p.frame)
    assert len(pycs) == len(compiled)


def zstd_decompress(frame):
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=frame, capture_output=True,
                          check=True).stdout


def test_cold_mount_loads_pycs_without_compiling(recorded, mount, nginx, nginx_lock,
                                                 wheelhouse, tmp_path):
    prof, compiled = recorded
    before = prof.read_bytes()
    cache = tmp_path / "cold"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    found = SEEDED.search(wait_replay(m).string)
    assert found, m.log()
    assert int(found.group(1)) == len(compiled) and found.group(3) == "0", found.group(0)
    assert int(found.group(4)) >= len(SOURCES), "sources with a pyc were fetched"
    assert store(cache) == compiled

    mark = nginx.mark()
    out = verbose_import(m, MODS)
    for s in SOURCES:
        pyc = m.site / s.replace(".py", "").rsplit("/", 1)[0] / "__pycache__" / \
            (s.rsplit("/", 1)[-1][:-3] + f".{TAG}.pyc")
        assert f"code object from '{pyc}'" in out, out
    assert "created '" not in out, "a module was compiled"
    assert nginx.requests(mark) == [], "importing from pycs fetched sources"
    assert store(cache) == compiled
    # the sources are still there, fetched on first open
    for s in SOURCES:
        assert (m.site / s).read_bytes() == wheelhouse.content("purepkg", s)
    unmount(m)
    assert prof.read_bytes() == before, "nothing new: the file is not rewritten"


def corrupt(prof, wheelhouse, how, entry="purepkg/core.py"):
    lines, pycs = read_profile(prof)
    sha = sha_of(wheelhouse, entry)
    for p in pycs:
        if p.sha == sha:
            if how == "frame":
                f = bytearray(p.frame)
                f[len(f) // 2] ^= 0x55
                p.frame = bytes(f)
            elif how == "magic":
                p.hdr = b"\x00\x01" + p.hdr[2:]
            elif how == "size":
                p.hdr = p.hdr[:12] + (int.from_bytes(p.hdr[12:], "little") + 1).to_bytes(4, "little")
    write_profile(prof, sorted(lines), pycs)
    return len(pycs)


@pytest.mark.parametrize("how,log", [
    ("frame", r'pyc of "purepkg/core.py" ignored: pyc frame at \d+'),
    ("magic", r"1 pycs for another interpreter \(not cpython-311 with this magic number\) "
              r"not used"),
    ("size", r"1 pycs whose header does not match their source ignored"),
])
def test_bad_pyc_is_never_served(recorded, mount, nginx_lock, wheelhouse, tmp_path, how, log):
    prof, compiled = recorded
    n = corrupt(prof, wheelhouse, how)
    cache = tmp_path / "cold"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    m.allow(r"pyc of .* ignored", r"pycs whose header")
    found = SEEDED.search(wait_replay(m).string)
    assert re.search(log, m.log()), m.log()
    assert int(found.group(1)) == n - 1
    h = sha_of(wheelhouse, "purepkg/core.py").hex()
    name = f"{h[:2]}/{h[2:]}.{TAG}.pyc"
    assert name not in store(cache)
    out = verbose_import(m, MODS)
    # Python compiles that one module (and only it), and the store gets its own bytes
    assert re.findall(r"created '([^']+)'", out) == [
        str(m.site / f"purepkg/__pycache__/core.{TAG}.pyc")], out
    assert store(cache)[name][:16] == compiled[name][:16]  # co_filename differs
    r = subprocess.run([str(m.path / "bin/python"), "-c", "import purepkg; print(purepkg.answer())"],
                       capture_output=True, text=True, env=py_env())
    assert r.stdout == "42\n", r.stderr


def test_truncated_profile(recorded, mount, nginx_lock, wheelhouse, tmp_path):
    prof, compiled = recorded
    data = prof.read_bytes()
    lines, pycs = read_profile(prof)
    # cut inside the last pyc: the text and the pycs before it are used
    prof.write_bytes(data[:-10])
    m = mount(nginx_lock, cache=tmp_path / "c1", args=["--profile", prof])
    m.allow(r"pycs from there on are ignored")
    found = SEEDED.search(wait_replay(m).string)
    assert re.search(r"pyc record at \d+: its \d+ bytes run past the end \(\d+\); its 1 pycs "
                     r"from there on are ignored", m.log()), m.log()
    assert int(found.group(1)) == len(pycs) - 1
    verbose_import(m, MODS)
    unmount(m)
    # the next write drops the torn record and adds the store's pyc again
    assert len(read_profile(prof)[1]) == len(pycs)

    # cut inside the text: not a profile any more, ignored and replaced
    prof.write_bytes(data[:80])
    m = mount(nginx_lock, cache=tmp_path / "c2", args=["--profile", prof])
    assert re.search(r"is not a sitefs profile: ignoring it \(text of \d+ bytes in a file of "
                     r"80 \(truncated\?\)", m.log()), m.log()
    verbose_import(m, MODS)
    unmount(m)
    assert read_profile(prof)[1], "replaced by a valid profile with this run's pycs"


def test_pycs_need_a_private_file(recorded, mount, nginx_lock, tmp_path):
    prof, compiled = recorded
    os.chmod(prof, 0o666)
    cache = tmp_path / "cold"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    found = SEEDED.search(wait_replay(m).string)
    assert found.group(1) == "0"
    assert re.search(r"not using its \d+ pycs: the file must belong to this user", m.log())
    assert store(cache) == {}
