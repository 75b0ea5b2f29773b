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
        tail = f"bytes={max(0, size - 65536)}-{size - 1}"
        assert tail in [r.range for r in rs], f"{whl.name}: no '{tail}' request: {rs}"
        assert len(rs) <= (1 if short in GENERATED else 4), f"{whl.name}: {len(rs)} requests: {rs}"
        fetched = [s for r in rs for s in range_spans(r.range, size)]
        extra = bytes_outside(fetched, wheelgen.metadata_spans(whl))
        assert extra <= 16384, f"{whl.name}: {extra} bytes of file bodies fetched at mount"


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
