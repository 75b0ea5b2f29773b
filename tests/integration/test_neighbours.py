"""Neighbouring small files of one package directory ride one request: the first
open fetches them along, later opens of them cost no request, and concurrent
openers never fetch a byte twice."""

from concurrent.futures import ThreadPoolExecutor

import pytest

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
