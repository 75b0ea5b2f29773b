"""What goes over the wire (counted in nginx's access log): metadata only at mount,
one entry per open, nothing on a warm catalog, one fetch for many readers."""

import base64
import errno
import hashlib
import os
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import wheelgen
from conftest import bytes_outside, range_spans, spans_overlap

pytestmark = pytest.mark.fuse

GENERATED = ("purepkg", "clipkg", "cext", "datapkg", "bigpkg")  # dist-info inside the tail


def tail_len(size):
    """fs/wheel.c wheel_tail_len: the first request is 1/50 of the wheel, 64 KiB..1 MiB."""
    return min(size, max(65536, min(size // 50, 1 << 20)))


def planned_spans(whl):
    """What the mount may ask for: the tail and, when the central directory starts
    before it, the directory plus a guess of its own length + 64 KiB in front of it
    (the dist-info); dist-info members outside both come in one range, which may run
    256 bytes past the last (ZIPCD_LOCAL_SLACK: a local extra field is guessed)."""
    size = whl.stat().st_size
    start = size - tail_len(size)
    cd_off, _ = wheelgen.cd_range(whl)
    if cd_off < start:
        start = max(0, cd_off - (size - cd_off) - 65536)
    spans = [wheelgen.entry_span(whl, n) for n in wheelgen.distinfo_names(whl)]
    return [(start, size)] + [(a, min(size, b + 256)) for a, b in spans]


def test_mount_fetches_only_metadata(mount, nginx, nginx_lock, wheelhouse):
    mark = nginx.mark()
    mount(nginx_lock)
    reqs = nginx.requests(mark)
    assert {r.name for r in reqs} == {w.name for w in wheelhouse.lock_wheels}, reqs
    for short in wheelhouse.LOCK_NAMES:
        whl = wheelhouse[short]
        size = whl.stat().st_size
        rs = [r for r in reqs if r.name == whl.name]
        for r in rs:
            assert r.method == "GET" and r.status == 206, f"{whl.name}: {r}"
            assert re.fullmatch(r"bytes=\d+-\d+", r.range or ""), \
                f"{whl.name}: want explicit ranges (no suffix range, no whole file): {r}"
        tail = f"bytes={size - tail_len(size)}-{size - 1}"
        assert rs[0].range == tail, f"{whl.name}: first request is not '{tail}': {rs}"
        # the tail, then at most the directory with the dist-info in front of it
        assert len(rs) <= (1 if short in GENERATED else 2), f"{whl.name}: {len(rs)} requests: {rs}"
        fetched = [s for r in rs for s in range_spans(r.range, size)]
        assert bytes_outside(fetched, planned_spans(whl)) == 0, \
            f"{whl.name}: bytes outside the planned metadata ranges: {rs}"
        extra = bytes_outside(fetched, wheelgen.metadata_spans(whl, tail_len(size)))
        assert extra <= 65536 + 16384, f"{whl.name}: {extra} bytes of file bodies fetched at mount"


def many_files(prefix, n):
    return {f"{prefix}/m{i:05d}_{'x' * 24}.py": f"V = {i}\n".encode() for i in range(n)}


def test_big_wheel_metadata_in_one_request(mount, nginx, wheelhouse, tmp_path):
    """A wheel of 8 MB whose directory and dist-info (~130 KiB) exceed 64 KiB but not
    1/50 of it: one request, sized from the lock's size, gets everything."""
    import random
    files = {"tailpkg/blob.bin": (random.Random(3).randbytes(8 << 20), 0o644, "stored")}
    files.update(many_files("tailpkg", 1000))
    whl = wheelgen.make_wheel(wheelhouse.dir, "tailpkg", "1.0", files)
    size = whl.stat().st_size
    cd_off, _ = wheelgen.cd_range(whl)
    first_kept = min(wheelgen.entry_span(whl, n)[0] for n in wheelgen.distinfo_names(whl))
    assert 65536 < size - first_kept <= tail_len(size), "the wheel does not test the sizing"
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", [whl], nginx.url)
    mark = nginx.mark()
    m = mount(lock)
    reqs = nginx.requests(mark)
    assert [r.range for r in reqs] == [f"bytes={size - tail_len(size)}-{size - 1}"], reqs
    assert (m.site / "tailpkg/m00999_" f"{'x' * 24}.py").read_bytes() == b"V = 999\n"


def test_long_directory_and_dist_info_in_a_second_request(mount, nginx, wheelhouse, tmp_path):
    """A small wheel (64 KiB tail) with a ~200 KiB central directory: the second
    request covers the directory and the RECORD in front of it; no third."""
    whl = wheelgen.make_wheel(wheelhouse.dir, "longcd", "1.0", many_files("longcd", 2500))
    size = whl.stat().st_size
    cd_off, _ = wheelgen.cd_range(whl)
    assert size - cd_off > 65536 and tail_len(size) == 65536, "the wheel does not test it"
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", [whl], nginx.url)
    mark = nginx.mark()
    m = mount(lock)
    reqs = nginx.requests(mark)
    guess = max(0, cd_off - (size - cd_off) - 65536)
    assert [r.range for r in reqs] == [f"bytes={size - 65536}-{size - 1}",
                                       f"bytes={guess}-{size - 65536 - 1}"], reqs
    assert (m.site / "longcd/m02499_" f"{'x' * 24}.py").read_bytes() == b"V = 2499\n"


def test_wheels_of_packages_for_other_environments_are_not_fetched(mount, nginx, nginx_lock,
                                                                     wheelhouse, tmp_path):
    """Tails go out while the interpreter is still being asked, but only for wheels the
    lock alone decides: a package with a marker waits for the interpreter, and one whose
    marker excludes it is never asked for."""
    whl = wheelgen.make_wheel(wheelhouse.dir, "markedpkg", "1.0",
                              {"markedpkg/__init__.py": b"X = 1\n"})
    extra = wheelgen.pylock_text([whl], nginx.url).split("\n", 4)[4]
    extra = extra.replace('version = "1.0"\n', 'version = "1.0"\nmarker = "python_version < \'3\'"\n', 1)
    assert "marker" in extra
    lock = tmp_path / "pylock.toml"
    lock.write_text(nginx_lock.read_text() + "\n" + extra)
    mark = nginx.mark()
    m = mount(lock)
    reqs = nginx.requests(mark)
    assert whl.name not in {r.name for r in reqs}, reqs
    assert {r.name for r in reqs} == {w.name for w in wheelhouse.lock_wheels}, reqs
    assert not (m.site / "markedpkg").exists()


@pytest.mark.parametrize("short,entry", [("purepkg", "purepkg/core.py"),
                                         ("bigpkg", "bigpkg/big.bin")])
def test_open_fetches_only_that_entry(mount, nginx, nginx_lock, wheelhouse, short, entry):
    m = mount(nginx_lock)
    whl = wheelhouse[short]
    mark = nginx.mark()
    assert (m.site / entry).read_bytes() == wheelhouse.content(short, entry)
    reqs = nginx.requests(mark)
    assert {r.name for r in reqs} == {whl.name}, f"requests other than {whl.name}: {reqs}"
    start, end = wheelgen.entry_span(whl, entry)
    size = whl.stat().st_size
    fetched = [s for r in reqs for s in range_spans(r.range, size)]
    tail = (size - 65536, size)  # fetched at mount; may be reused
    assert bytes_outside([wheelgen.data_span(whl, entry)], fetched + [tail]) == 0, \
        f"{entry}'s compressed bytes were not fetched: {reqs}"
    total = sum(r.body for r in reqs)
    assert total <= (end - start) + 8192, \
        f"{total} bytes fetched for a {end - start}-byte entry: {reqs}"
    if short == "purepkg":
        blob = wheelgen.entry_span(whl, "purepkg/data/blob.bin")
        assert not spans_overlap(fetched, blob), "an unrelated 256 KiB entry rode along"
    mark = nginx.mark()
    assert (m.site / entry).read_bytes() == wheelhouse.content(short, entry)
    assert nginx.requests(mark) == [], "second read of a cached body went to the network"


def test_second_mount_on_same_cache_makes_no_requests(mount, nginx, nginx_lock):
    m1 = mount(nginx_lock)
    m1.python("-c", "import purepkg, cext")
    mark = nginx.mark()
    m2 = mount(nginx_lock, cache=m1.cache)
    assert nginx.requests(mark) == [], "mount on a warm catalog made requests"
    m2.python("-c", "import purepkg, cext")
    assert nginx.requests(mark) == [], "bodies cached by the first mount were fetched again"


def test_concurrent_readers_share_one_fetch(mount, nginx, nginx_lock, wheelhouse):
    m = mount(nginx_lock)
    whl, entry = wheelhouse["bigpkg"], "bigpkg/big.bin"
    want = wheelhouse.content("bigpkg", entry)
    chunk, nthreads = 128 * 1024, 16
    offsets = list(range(0, len(want), chunk))
    barrier = threading.Barrier(nthreads)

    def reader(i):
        # each thread opens the file itself and reads its chunks in a different order
        barrier.wait()
        fd = os.open(m.site / entry, os.O_RDONLY)
        try:
            order = offsets[i % len(offsets):] + offsets[:i % len(offsets)]
            parts = {off: os.pread(fd, chunk, off) for off in order}
        finally:
            os.close(fd)
        return b"".join(parts[off] for off in offsets)

    mark = nginx.mark()
    with ThreadPoolExecutor(nthreads) as ex:
        results = list(ex.map(reader, range(nthreads)))
    bad = [i for i, r in enumerate(results) if r != want]
    assert not bad, f"threads {bad} read wrong bytes"
    data = wheelgen.data_span(whl, entry)
    size = whl.stat().st_size
    body_reqs = [r for r in nginx.requests(mark)
                 if r.name == whl.name and spans_overlap(range_spans(r.range, size), data)]
    assert len(body_reqs) == 1, f"want one fetch of {entry}, got {body_reqs}"


def b64(digest):
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_body_not_matching_record_gives_eio(mount, nginx, wheelhouse, tmp_path):
    whl = wheelhouse["badpkg"]
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", [whl], nginx.url)
    m = mount(lock)
    m.allow(re.escape(whl.name), r"badpkg/bad\.py")
    assert (m.site / "badpkg/__init__.py").read_bytes() == b""
    for attempt in range(2):  # and never later either
        with pytest.raises(OSError) as e:
            (m.site / "badpkg/bad.py").read_bytes()
        assert e.value.errno == errno.EIO
    r = m.python("-c", "import badpkg.bad", check=False)
    assert r.returncode != 0 and "does not match" not in r.stdout
    expected = hashlib.sha256(b"something else").digest()
    actual = hashlib.sha256(wheelhouse.content("badpkg", "badpkg/bad.py")).digest()
    log = m.log()
    for what in (whl.name, "badpkg/bad.py"):
        assert what in log, f"the daemon log does not name {what!r}:\n{log}"
    for what, d in (("expected", expected), ("actual", actual)):
        assert d.hex() in log or b64(d) in log, f"the log lacks the {what} hash:\n{log}"


def test_catalog_agrees_with_libzip(mount, nginx, nginx_lock, wheelhouse):
    """The catalog built from range requests equals libzip's reading of each whole wheel."""
    zipcheck = os.environ.get("SITEFS_ZIPCHECK",
                              os.path.join(os.path.dirname(os.environ.get("SITEFS_BIN", "")),
                                           "..", "tests", "zipcheck"))
    if not os.path.exists(zipcheck):
        pytest.fail(f"zipcheck not built at {zipcheck}: build with meson")
    m = mount(nginx_lock)
    wheels = [str(w) for w in wheelhouse.lock_wheels]
    r = subprocess.run([zipcheck, str(m.cache), nginx.url.rstrip("/"), *wheels],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{len(wheels)} wheels, 0 differ" in r.stdout
