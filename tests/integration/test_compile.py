"""Compile ahead: sources a fill brought along with the file Python opened are compiled
into the bytecode store by the daemon, so the next import of them loads a pyc that no
Python process wrote."""

import hashlib
import subprocess
import time

import pytest

from conftest import py_env, verbose_import

pytestmark = pytest.mark.fuse

TAG = "cpython-311"
UTIL = "GREETING = 'gr\u00fc\u00df dich'\n".encode()  # purepkg/util.py (conftest)


def store_pyc(cache, source):
    h = hashlib.sha256(source).hexdigest()
    return cache / "pyc" / h[:2] / f"{h[2:]}.{TAG}.pyc"


def import_purepkg(m):
    """`import purepkg`: opens __init__.py (its fill brings core.py and util.py) and
    imports core; util.py is never imported."""
    r = subprocess.run([str(m.path / "bin/python"), "-c", "import purepkg"],
                       capture_output=True, text=True, env=py_env(), timeout=60)
    assert r.returncode == 0, r.stderr


def wait_for(path, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def test_neighbours_are_compiled_ahead(mount, nginx_lock, tmp_path):
    cache = tmp_path / "c"
    m = mount(nginx_lock, cache=cache)
    import_purepkg(m)
    stored = store_pyc(cache, UTIL)
    assert wait_for(stored, 30), f"no pyc of util.py in the store\n{m.log()}"
    data = stored.read_bytes()
    assert data[4:12] == bytes(8), "not in the stored form (flags 0, mtime 0)"
    assert int.from_bytes(data[12:16], "little") == len(UTIL)

    # the next process loads it: nothing compiled, nothing written
    pyc = m.site / "purepkg/__pycache__" / f"util.{TAG}.pyc"
    out = verbose_import(m, "purepkg.util")
    assert f"code object from '{pyc}'" in out, out
    assert f"created '{pyc}'" not in out, out
    r = m.python("-c", "import purepkg.util as u; print(u.GREETING)")
    assert r.stdout == "gr\u00fc\u00df dich\n"

    # at unmount the daemon says what it did
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    m.proc.wait(30)
    log = m.log()
    assert "compile ahead: " in log, log
    line = next(x for x in log.splitlines() if "compile ahead: " in x)
    assert " 0 compiled" not in line, line


def test_a_later_mount_finds_what_was_compiled(mount, nginx_lock, tmp_path):
    """A lookup miss is not cached: a pyc stored after it is found by the next one."""
    cache = tmp_path / "shared"
    m2 = mount(nginx_lock, cache=cache)
    pyc2 = m2.site / "purepkg/__pycache__" / f"util.{TAG}.pyc"
    assert not pyc2.exists()  # a negative lookup on this mount
    m = mount(nginx_lock, cache=cache)
    import_purepkg(m)
    assert wait_for(store_pyc(cache, UTIL), 30), m.log()
    assert pyc2.exists()
    out = verbose_import(m2, "purepkg.util")
    assert f"code object from '{pyc2}'" in out, out


def test_off_switch(mount, nginx_lock, tmp_path):
    cache = tmp_path / "c"
    m = mount(nginx_lock, cache=cache, env={"SITEFS_COMPILE_AHEAD": "0"})
    import_purepkg(m)
    time.sleep(1)
    assert not store_pyc(cache, UTIL).exists()
    pyc = m.site / "purepkg/__pycache__" / f"util.{TAG}.pyc"
    out = verbose_import(m, "purepkg.util")
    assert f"created '{pyc}'" in out, out
    assert "compile ahead" not in m.log()


def test_concurrent_importers_all_get_their_modules(mount, nginx_lock, tmp_path):
    """Lookups of a module being compiled ahead are held until it is stored, and
    answered with what is there then: every process imports, whoever compiled."""
    m = mount(nginx_lock, cache=tmp_path / "c")
    procs = [subprocess.Popen([str(m.path / "bin/python"), "-c",
                               "import purepkg, purepkg.util as u; assert u.GREETING"],
                              env=py_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(8)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


def test_profile_names_sources_loaded_from_compiled_pycs(mount, nginx_lock, wheelhouse,
                                                         tmp_path):
    """A source Python uses through a pyc compiled ahead is never opened; the profile
    still names it and carries that pyc."""
    from test_profile import read_profile, unmount
    prof, cache = tmp_path / "p.profile", tmp_path / "c"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    import_purepkg(m)
    assert wait_for(store_pyc(cache, UTIL), 30), m.log()
    out = verbose_import(m, "purepkg.util")
    assert "created '" not in out.split("import 'purepkg'", 1)[1], out
    unmount(m)
    lines, pycs = read_profile(prof)
    assert f"{wheelhouse['purepkg'].name}\tpurepkg/util.py" in lines
    assert hashlib.sha256(UTIL).digest() in {p.sha for p in pycs}
