"""Neighbouring small files of one package directory ride one request: the first
open fetches them along, later opens of them cost no request, and concurrent
openers never fetch a byte twice."""

import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

import wheelgen
from conftest import range_spans

pytestmark = pytest.mark.fuse

SIBLINGS = ["purepkg/__init__.py", "purepkg/core.py", "purepkg/util.py"]


def test_first_open_brings_its_neighbours(mount, nginx, nginx_lock, wheelhouse):
    m = mount(nginx_lock)
    mark = nginx.mark()
    assert (m.site / "purepkg/core.py").read_bytes() == wheelhouse.content("purepkg",
                                                                          "purepkg/core.py")
    assert len(nginx.requests(mark)) == 1
    mark = nginx.mark()
    for entry in SIBLINGS:
        assert (m.site / entry).read_bytes() == wheelhouse.content("purepkg", entry), entry
    assert nginx.requests(mark) == [], "neighbours were fetched again"
    # another directory is not part of the run
    mark = nginx.mark()
    assert (m.site / "purepkg/sub/deep/mod.py").read_bytes() == b"VALUE = 'deep'\n"
    assert len(nginx.requests(mark)) == 1


def test_concurrent_openers_fetch_each_byte_once(mount, nginx, nginx_lock, wheelhouse):
    m = mount(nginx_lock)
    whl = wheelhouse["purepkg"]
    size = whl.stat().st_size
    mark = nginx.mark()
    names = SIBLINGS * 8
    with ThreadPoolExecutor(len(names)) as ex:
        got = list(ex.map(lambda e: (m.site / e).read_bytes(), names))
    assert got == [wheelhouse.content("purepkg", e) for e in names]
    spans = sorted(s for r in nginx.requests(mark) if r.name == whl.name
                   for s in range_spans(r.range, size))
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert b <= c, f"bytes fetched twice: {spans}"


# A directory larger than one run (1 MiB): runs planned around different files overlap,
# and concurrent fills must leave out what another fill has in flight.
NRUN = 16
RUN_FILE = 150 * 1024  # compressed size: small enough to ride along (<= 256 KiB)


def run_entry(i):
    return f"runpkg/m{i:02d}.bin"


@pytest.fixture(scope="module")
def runpkg(wheelhouse):
    import random
    rnd = random.Random(11)
    files = {run_entry(i): (rnd.randbytes(RUN_FILE), 0o644, "stored") for i in range(NRUN)}
    # incompressible, stored, last: keeps the files out of the 64 KiB tail
    files["runpkg/zz/blob.bin"] = (rnd.randbytes(128 * 1024), 0o644, "stored")
    return wheelgen.make_wheel(wheelhouse.dir, "runpkg", "1.0", files)


def test_overlapping_runs_fetch_each_byte_once(mount, nginx, runpkg, tmp_path):
    m = mount(wheelgen.write_pylock(tmp_path / "pylock.toml", [runpkg], nginx.url))
    size = runpkg.stat().st_size
    mark = nginx.mark()
    names = [run_entry(i) for i in range(NRUN)] * 2
    with ThreadPoolExecutor(len(names)) as ex:
        got = list(ex.map(lambda e: (m.site / e).read_bytes(), names))
    with zipfile.ZipFile(runpkg) as zf:
        assert got == [zf.read(e) for e in names]
    reqs = [r for r in nginx.requests(mark) if r.name == runpkg.name]
    assert 1 < len(reqs) < NRUN, "expected a few runs, each bringing neighbours"
    spans = sorted(s for r in reqs for s in range_spans(r.range, size))
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert b <= c, f"bytes fetched twice: {spans}"
