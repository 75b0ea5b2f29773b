"""The bytecode store: Python's __pycache__ writes land in the cache, keyed by the
source's sha256; a second process (or mount) loads them instead of compiling, and
nothing written can poison another source's entry or change the tree."""

import errno
import json
import os
import shutil
import subprocess

import pytest

from conftest import py_env, verbose_import

pytestmark = pytest.mark.fuse

TAG = "cpython-311"
# these tests are about what Python itself writes: the daemon compiles nothing ahead
# (test_compile.py)
OFF = {"SITEFS_COMPILE_AHEAD": "0"}


def store_files(cache):
    root = cache / "pyc"
    return sorted(p.relative_to(root) for p in root.rglob("*.pyc")) if root.exists() else []


def test_second_process_and_mount_load_pycs(mount, nginx_lock, tmp_path):
    cache = tmp_path / "shared"
    m = mount(nginx_lock, cache=cache, env=OFF)
    pyc = m.site / "purepkg/__pycache__" / f"core.{TAG}.pyc"
    out = verbose_import(m, "purepkg.core")
    assert f"created '{pyc}'" in out, out
    assert pyc.exists() and pyc.stat().st_size > 16
    assert store_files(cache), "nothing landed in the store"

    # a second process: loads the pyc, compiles nothing
    out = verbose_import(m, "purepkg.core")
    assert f"code object from '{pyc}'" in out, out
    assert "created '" not in out.split("purepkg", 1)[1], out

    # a second mount on the same cache (a new worker): same
    m2 = mount(nginx_lock, cache=cache, env=OFF)
    pyc2 = m2.site / "purepkg/__pycache__" / f"core.{TAG}.pyc"
    out = verbose_import(m2, "purepkg.core")
    assert f"code object from '{pyc2}'" in out, out
    r = m2.python("-c", "import purepkg; print(purepkg.answer())")
    assert r.stdout == "42\n"


def write_then_rename(d, tmpname, final, data):
    fd = os.open(d / tmpname, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(d / tmpname, d / final)


def test_bogus_pyc_writes_are_refused(mount, nginx_lock, tmp_path):
    cache = tmp_path / "c"
    m = mount(nginx_lock, cache=cache, env=OFF)
    d = m.site / "purepkg/__pycache__"
    assert d.is_dir()
    core, util = m.site / "purepkg/core.py", m.site / "purepkg/util.py"

    # garbage under a valid name
    with pytest.raises(PermissionError):
        write_then_rename(d, f"core.{TAG}.pyc.1", f"core.{TAG}.pyc", b"x" * 64)
    # a header made for core.py, renamed over util's name
    st = core.stat()
    hdr = (b"\xa7\x0d\x0d\x0a" + (0).to_bytes(4, "little")
           + int(st.st_mtime).to_bytes(4, "little") + st.st_size.to_bytes(4, "little"))
    with pytest.raises(PermissionError):
        write_then_rename(d, f"core.{TAG}.pyc.2", f"util.{TAG}.pyc", hdr + b"evil")
    # a temp for util.py carrying core.py's header
    with pytest.raises(PermissionError):
        write_then_rename(d, f"util.{TAG}.pyc.3", f"util.{TAG}.pyc", hdr + b"evil")
    # names that are no pyc of a source here
    for name in ("evil.py", f"nosuch.{TAG}.pyc.4", "core.cpython-27.pyc.5"):
        with pytest.raises(OSError):
            os.close(os.open(d / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    assert store_files(cache) == []
    assert not (d / f"util.{TAG}.pyc").exists()

    # the tree itself stays read-only
    with pytest.raises(OSError) as e:
        open(m.site / "purepkg/new.py", "w")
    assert e.value.errno == errno.EROFS

    # Python still compiles and caches correctly afterwards
    out = verbose_import(m, "purepkg.util")
    assert f"created '{d / ('util.' + TAG + '.pyc')}'" in out, out
    r = subprocess.run([str(m.path / "bin/python"), "-c",
                        "import purepkg.util as u; print(u.GREETING)"],
                       capture_output=True, text=True, env=py_env())
    assert r.stdout == "gr\u00fc\u00df dich\n", r.stderr
    import hashlib
    h = hashlib.sha256(util.read_bytes()).hexdigest()
    assert f"{h[:2]}/{h[2:]}.{TAG}.pyc" in map(str, store_files(cache))


def test_store_serves_every_wheel_with_the_same_source(mount, nginx_lock, tmp_path):
    """The stored header has no mtime: reads patch in the node's, so Python accepts it."""
    cache = tmp_path / "c"
    m = mount(nginx_lock, cache=cache)
    verbose_import(m, "purepkg.core")
    stored = [cache / "pyc" / p for p in store_files(cache)]
    assert stored and all(p.read_bytes()[8:12] == b"\0\0\0\0" for p in stored)
    served = (m.site / "purepkg/__pycache__" / f"core.{TAG}.pyc").read_bytes()
    mtime = int((m.site / "purepkg/core.py").stat().st_mtime) & 0xFFFFFFFF
    assert served[8:12] == mtime.to_bytes(4, "little")


def test_many_processes_compiling_at_once(mount, nginx_lock, tmp_path):
    """All of them import fine, and the daemon keeps no fd
    per lost race (32 processes x 2k pycs once ran it out of descriptors)."""
    m = mount(nginx_lock, cache=tmp_path / "c")
    procs = [subprocess.Popen([str(m.path / "bin/python"), "-c",
                               "import purepkg.core, purepkg.util, purepkg.sub.deep.mod"],
                              env=py_env()) for _ in range(16)]
    assert [p.wait(60) for p in procs] == [0] * 16
    fds = len(os.listdir(f"/proc/{m.proc.pid}/fd"))
    assert fds < 32, f"daemon holds {fds} fds after the processes ended"
    out = verbose_import(m, "purepkg.core")
    assert "code object from '" in out and "created '" not in out.split("purepkg", 1)[1]


def test_pycs_are_read_without_requests(mount, nginx_lock, tmp_path):
    """A pyc's bytes are put into the kernel's page cache when it is renamed into
    place and at its first open, so loading it reads nothing through the daemon
    (SITEFS_PYC_PUSH=0 turns that off: one read per pyc, the comparison)."""
    cache = tmp_path / "shared"
    mods = ["purepkg.core", "purepkg.util"]  # and the package's __init__

    def reads(push, second_process):
        stats = tmp_path / f"stats-{push}-{second_process}.json"
        m = mount(nginx_lock, cache=cache, env={"SITEFS_PYC_PUSH": push,
                                                 "SITEFS_COMPILE_AHEAD": "0",
                                                 "SITEFS_STATS_FILE": str(stats)})
        if second_process:  # this mount's first process compiles them
            shutil.rmtree(cache / "pyc", ignore_errors=True)
            for mod in mods:
                assert "created '" in verbose_import(m, mod)
        for mod in mods:
            out = verbose_import(m, mod)
            assert "code object from '" in out and "created '" not in out, out
        m.teardown()
        return json.loads(stats.read_text())["ops"]["read"]

    for second_process in (True, False):  # (False: a new mount on the store's pycs)
        pushed, read = reads("1", second_process), reads("0", second_process)
        assert read - pushed >= len(mods) + 1, (second_process, pushed, read)
