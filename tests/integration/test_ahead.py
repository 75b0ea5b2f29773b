"""The import-graph prefetch (fs/ahead.c): once a module's source is filled, what it
imports at module level is fetched in the background — across wheels and package
directories, wave after wave — before Python asks for it; what runs only in a function,
an `except` clause or an `if TYPE_CHECKING:` block is not fetched.
SITEFS_IMPORT_AHEAD=0 turns it off."""

import random
import threading
import time

import pytest

import wheelgen
from conftest import is_mounted

pytestmark = pytest.mark.fuse

ROOT = b"""\"\"\"The root.

import aheadnever   (a docstring: not an import)
\"\"\"
from typing import TYPE_CHECKING
import os, sys
import aheadroot.sub
from . import rel
import aheada, aheadb as b
from aheadc import thing
from aheadd.deep import mod
try:
    import aheade
except ImportError:
    import aheadnever
if TYPE_CHECKING:
    import aheadtyping


def later():
    import aheadlazy


VALUE = (aheada.VALUE, b.VALUE, thing, mod.VALUE, aheade.VALUE, sub.VALUE)
"""

# name -> {entry: source}
PACKAGES = {
    "aheadroot": {"aheadroot/__init__.py": ROOT.replace(b"(aheada", b"(rel.REL, aheada")
                  .replace(b"sub.VALUE", b"aheadroot.sub.VALUE"),
                  "aheadroot/rel.py": b"REL = 'rel'\n",
                  "aheadroot/sub/__init__.py": b"VALUE = 'sub'\n",
                  # a neighbour of __init__.py (one request brings both) that nothing
                  # imports: not scanned until it is opened
                  "aheadroot/other.py": b"import aheadf\n"},
    # a second wave: aheada's own import, in another directory
    "aheada": {"aheada/__init__.py": b"from .inner.leaf import VALUE\n",
               "aheada/inner/__init__.py": b"",
               "aheada/inner/leaf.py": b"VALUE = 'leaf'\n"},
    "aheadb": {"aheadb/__init__.py": b"VALUE = 'b'\n"},
    "aheadc": {"aheadc/__init__.py": b"thing = 'c'\n"},
    "aheadd": {"aheadd/__init__.py": b"", "aheadd/deep/__init__.py": b"",
               "aheadd/deep/mod.py": b"VALUE = 'd'\n"},
    "aheade": {"aheade/__init__.py": b"VALUE = 'e'\n"},
    "aheadf": {"aheadf/__init__.py": b"VALUE = 'f'\n"},
    "aheadnever": {"aheadnever/__init__.py": b"raise ImportError('not to be fetched')\n"},
    "aheadtyping": {"aheadtyping/__init__.py": b"raise ImportError('not to be fetched')\n"},
    "aheadlazy": {"aheadlazy/__init__.py": b"raise ImportError('not to be fetched')\n"},
}
EXPECTED = "('rel', 'leaf', 'b', 'c', 'd', 'e', 'sub')"
FETCHED = ["aheada", "aheadb", "aheadc", "aheadd", "aheade"]
NOT_FETCHED = ["aheadnever", "aheadtyping", "aheadlazy", "aheadf"]


@pytest.fixture(scope="module")
def ahead_wheels(wheelhouse):
    rnd = random.Random(5)
    out = {}
    for name, files in PACKAGES.items():
        files = dict(files)
        # incompressible, stored, last: keeps the modules out of the mount's tail request
        files[f"{name}/zz/blob.bin"] = (rnd.randbytes(128 * 1024), 0o644, "stored")
        out[name] = wheelgen.make_wheel(wheelhouse.dir / "ahead", name, "1.0", files)
    return out


def body_requests(reqs, wheels, name):
    return [r for r in reqs if r.name == wheels[name].name]


def wait_for(pred, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


@pytest.fixture
def ahead_lock(ahead_wheels, nginx, tmp_path):
    # nginx serves the wheelhouse root: the wheels are in its "ahead" directory
    return wheelgen.write_pylock(tmp_path / "pylock.toml", list(ahead_wheels.values()),
                                 nginx.url + "/ahead")


def test_reading_a_module_fetches_what_it_imports(mount, nginx, ahead_wheels, ahead_lock):
    m = mount(ahead_lock)
    mark = nginx.mark()
    # a plain read, no import: the daemon alone goes on from here
    assert b"import aheada" in (m.site / "aheadroot/__init__.py").read_bytes()
    # the first wave (other wheels) and the second (aheada's own import)
    leaf = wheelgen.entry_span(ahead_wheels["aheada"], "aheada/inner/leaf.py")

    def arrived():
        reqs = nginx.requests(mark, settle=0.1)
        return (all(body_requests(reqs, ahead_wheels, n) for n in FETCHED)
                and any(r.range and int(r.range.split("=")[1].split("-")[0]) <= leaf[0]
                        < int(r.range.split("-")[-1]) + 1
                        for r in body_requests(reqs, ahead_wheels, "aheada")))
    assert wait_for(arrived), f"not prefetched: {nginx.requests(mark)}"
    # then the import costs no request, and its result is right
    mark2 = nginx.mark()
    r = m.python("-c", "import aheadroot; print(aheadroot.VALUE)")
    assert r.stdout.strip() == EXPECTED
    assert nginx.requests(mark2) == []
    reqs = nginx.requests(mark)
    for n in NOT_FETCHED:
        assert body_requests(reqs, ahead_wheels, n) == [], f"{n} was fetched"
    # a source opened from the cache (it came along with __init__.py) is scanned then
    mark = nginx.mark()
    assert (m.site / "aheadroot/other.py").read_bytes() == b"import aheadf\n"
    assert wait_for(lambda: body_requests(nginx.requests(mark, settle=0.1), ahead_wheels,
                                          "aheadf"))


def test_switched_off(mount, nginx, ahead_wheels, ahead_lock):
    m = mount(ahead_lock, env={"SITEFS_IMPORT_AHEAD": "0"})
    mark = nginx.mark()
    (m.site / "aheadroot/__init__.py").read_bytes()
    time.sleep(1)
    reqs = nginx.requests(mark)
    assert [r for r in reqs if r.name != ahead_wheels["aheadroot"].name] == []
    r = m.python("-c", "import aheadroot; print(aheadroot.VALUE)")
    assert r.stdout.strip() == EXPECTED


def test_import_pays_round_trips_per_depth_not_per_module(mount, _faultserver, faultserver,
                                                            ahead_wheels, tmp_path):
    """Each request waits DELAY at the server: a serial import of the 8 bodies in
    separate requests costs >= 8 delays; with the prefetch they come in 3 waves
    (empty files need no request)."""
    DELAY = 0.3
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", list(ahead_wheels.values()),
                                 _faultserver.url + "/ahead")
    times = {}
    for mode in ("0", "2"):
        m = mount(lock, env={"SITEFS_IMPORT_AHEAD": mode})
        faultserver.fault(f"delay:{int(DELAY * 1000)}")
        t = time.monotonic()
        r = m.python("-c", "import aheadroot; print(aheadroot.VALUE)")
        times[mode] = time.monotonic() - t
        faultserver.fault("none")
        assert r.stdout.strip() == EXPECTED
    assert times["0"] >= 7 * DELAY, times  # 8 non-empty bodies in 8 requests
    assert times["2"] < 5 * DELAY, times


def test_sigterm_ends_a_stalled_prefetch_and_its_waiting_opener(mount, _faultserver, faultserver,
                                                                 ahead_wheels, tmp_path):
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", list(ahead_wheels.values()),
                                 _faultserver.url + "/ahead")
    m = mount(lock)
    faultserver.fault("hang:aheadb-")
    (m.site / "aheadroot/__init__.py").read_bytes()  # starts the prefetch of aheadb
    assert wait_for(lambda: any("aheadb-" in p for p in faultserver.stats()))
    result = []

    def read():  # joins the prefetch's fill, which hangs
        try:
            result.append((m.site / "aheadb/__init__.py").read_bytes())
        except OSError as e:
            result.append(e)
    th = threading.Thread(target=read, daemon=True)
    th.start()
    time.sleep(0.5)
    assert not result
    took = m.sigterm()
    faultserver.fault("none")
    assert took < 3, f"the daemon took {took:.1f}s to exit"
    assert not is_mounted(m.path)
    th.join(10)
    assert len(result) == 1 and isinstance(result[0], OSError), result
