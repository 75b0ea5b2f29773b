"""sitefs materialize / prefetch: an ordinary venv equal to pip's, written safely, that
works with the index, the daemon and the cache gone."""

import marshal
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import wheelgen
from conftest import (PIP_WHL, PY, PYVER, SITEFS_BIN, Nginx, clean_env, run_sitefs,
                      short_dir, snapshot)
from test_mount import compare_trees

pytestmark = pytest.mark.fuse

SUMMARY = re.compile(r"link mode: (\w+) \((\d+) cloned, (\d+) hardlinked, (\d+) copied\); "
                     r"(\d+) wheels fetched")


def materialize(*args, cache, check=True, timeout=120, env=None):
    r = subprocess.run([str(SITEFS_BIN), "materialize", "--python", PY, "--cache-dir", str(cache),
                        *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       env=clean_env(**(env or {})), stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"materialize {args} failed:\n{r.stdout}\n{r.stderr}"
    return r


def summary(r):
    m = SUMMARY.search(r.stderr)
    assert m, f"no summary line in {r.stderr!r}"
    mode, c, h, k, fetched = m.groups()
    return mode, int(c), int(h), int(k), int(fetched)


def new_dest(prefix="sfs"):
    return short_dir(prefix) / "venv"


def run_in(venv, *cmd, check=True):
    exe = str(venv / "bin" / cmd[0]) if "/" not in str(cmd[0]) else str(cmd[0])
    r = subprocess.run([exe, *map(str, cmd[1:])], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    if check:
        assert r.returncode == 0, f"{cmd}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def check_works(venv):
    """Imports, C extension, console/gui/data scripts, pip itself."""
    r = run_in(venv, "python", "-c",
               "import sys, purepkg, cext, clipkg.cli, datapkg, datapkg_extra, bigpkg\n"
               "print(sys.prefix, cext.add(40, 2), purepkg.answer(), len(open(bigpkg.__file__"
               ".replace('__init__.py', 'big.bin'), 'rb').read()))")
    assert r.stdout == f"{venv} 42 42 {4 * 1024 * 1024}\n"
    assert run_in(venv, "clipkg-hello", "x").stdout == "hello from clipkg x\n"
    assert run_in(venv, "clipkg-gui").stdout == "gui from clipkg\n"
    assert run_in(venv, "datapkg-run").stdout == "datapkg-run datapkg\n"
    assert run_in(venv, "pip", "--version").stdout.startswith("pip ")
    assert run_in(venv, "python", "-m", "pip", "check").stdout.strip() == \
        "No broken requirements found."


def whole_gets(reqs):
    """{wheel name: number of GETs without Range} (whole-wheel downloads)."""
    out = {}
    for r in reqs:
        if r.name.endswith(".whl") and r.range is None:
            out[r.name] = out.get(r.name, 0) + 1
    return out


def modes(root):
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if not p.is_symlink() and not n.endswith(".pyc"):
                out[str(p.relative_to(root))] = p.stat().st_mode & 0o7777
    return out


def cache_files(d):
    return [p for p in Path(d).rglob("*") if p.is_file()] if Path(d).exists() else []


def kept_wheels(cache):
    """sha256 hex of the whole wheels kept in cache/wheels."""
    return {p.name[:-4] for p in (cache / "wheels").glob("*.whl")}


def inodes(paths):
    return {(p.stat().st_dev, p.stat().st_ino) for p in paths}


@pytest.fixture
def cleanup():
    dirs = []
    yield dirs.append
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def private_nginx(wheelhouse, tmp_path):
    """An nginx of our own, so the test may stop it."""
    server = Nginx(wheelhouse.dir, tmp_path / "nginx").start()
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", wheelhouse.lock_wheels, server.url)
    yield server, lock
    server.stop()


@pytest.mark.parametrize("link_mode", ["auto", "hardlink", "copy"])
def test_matches_pip_and_fetches_each_wheel_once(link_mode, nginx, nginx_lock, pip_venv, wheelhouse,
                                                 tmp_path, cleanup):
    dest = new_dest()
    cleanup(dest.parent)
    mark = nginx.mark()
    r = materialize("--link-mode", link_mode, nginx_lock, dest, cache=tmp_path / "cache")
    mode, cloned, hard, copied, fetched = summary(r)
    assert fetched == len(wheelhouse.lock_wheels)
    if link_mode != "auto":
        assert mode == link_mode and (hard if link_mode == "hardlink" else copied) > 0
    assert cloned + hard + copied > 0
    # one whole-wheel GET per wheel; everything else is the metadata's range requests
    gets = whole_gets(nginx.requests(mark))
    assert gets == {w.name: 1 for w in wheelhouse.lock_wheels}

    problems = compare_trees(pip_venv, dest)
    assert not problems, "\n".join(problems)
    want, got = modes(pip_venv), modes(dest)
    wrong = {p: (oct(got[p]), oct(m)) for p, m in want.items() if p in got and got[p] != m}
    assert not wrong, f"modes differ from pip's (got, want): {wrong}"
    check_works(dest)
    assert not list(dest.parent.glob(".venv.sitefs-*")), "temp directory left behind"
    # bodies were inflated straight into the venv: no body store file (a clone needs
    # one), no links/ copy in copy mode; the downloads are kept
    cache = tmp_path / "cache"
    if mode != "clone":
        assert not cache_files(cache / "bodies")
    if mode == "copy":
        assert not cache_files(cache / "links")
    assert kept_wheels(cache) == {wheelgen.sha256_file(w) for w in wheelhouse.lock_wheels}

    # warm: no request at all, nothing fetched
    dest2 = new_dest()
    cleanup(dest2.parent)
    mark = nginx.mark()
    r = materialize("--link-mode", link_mode, nginx_lock, dest2, cache=tmp_path / "cache")
    assert summary(r)[4] == 0
    assert nginx.requests(mark) == []
    check_works(dest2)


def test_hardlinks_never_expose_cache_bodies(nginx_lock, tmp_path, cleanup):
    """Hardlinked files share a per-mode copy, not the verified 0444 body a mount serves."""
    dest = new_dest()
    cleanup(dest.parent)
    cache = tmp_path / "cache"
    materialize("--link-mode", "hardlink", nginx_lock, dest, cache=cache)
    core = dest / f"lib/{PYVER}/site-packages/purepkg/core.py"
    st = core.stat()
    assert st.st_nlink >= 2 and st.st_mode & 0o777 == 0o644
    bodies = {(p.stat().st_dev, p.stat().st_ino) for p in (cache / "bodies").rglob("*")
              if p.is_file()}
    assert (st.st_dev, st.st_ino) not in bodies


def test_from_mount_then_offline(mount, private_nginx, pip_venv, tmp_path, cleanup):
    """SOURCE is a running mount: its lock, cache and interpreter are found from the
    mountpoint.  Then the mount goes, the server goes, the cache goes: still a venv."""
    server, lock = private_nginx
    m = mount(lock)
    assert m.python("-c", "import purepkg; print(purepkg.answer())").stdout == "42\n"
    dest = new_dest()
    cleanup(dest.parent)
    r = run_sitefs("materialize", m.path, dest, timeout=120)
    assert r.returncode == 0, r.stderr
    assert summary(r)[4] > 0
    assert (m.cache / "bodies").is_dir(), "materialize did not use the mount's cache"
    m.teardown()
    server.stop()
    shutil.rmtree(m.cache)
    problems = compare_trees(pip_venv, dest)
    assert not problems, "\n".join(problems)
    check_works(dest)


def test_offline_after_materialize(private_nginx, tmp_path, cleanup):
    server, lock = private_nginx
    dest = new_dest()
    cleanup(dest.parent)
    cache = tmp_path / "cache"
    materialize("--link-mode", "copy", lock, dest, cache=cache)
    server.stop()
    shutil.rmtree(cache)
    check_works(dest)


def test_prefetch_makes_the_mount_work_offline(mount, private_nginx, pip_venv, wheelhouse):
    server, lock = private_nginx
    m = mount(lock)
    mark = server.mark()
    r = run_sitefs("prefetch", m.path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "in the cache" in r.stderr
    assert whole_gets(server.requests(mark)) == {w.name: 1 for w in wheelhouse.lock_wheels}
    # a second run has nothing to do; --in-place is the same command
    mark = server.mark()
    r = run_sitefs("materialize", "--in-place", m.path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert server.requests(mark) == []
    server.stop()
    problems = compare_trees(pip_venv, m.path)  # reads every body through the mount
    assert not problems, "\n".join(problems)
    check_works(m.path)


def test_dest_rules(nginx_lock, tmp_path, cleanup):
    cache = tmp_path / "cache"
    base = short_dir()
    cleanup(base)
    # an empty directory is fine
    (base / "empty").mkdir()
    materialize(nginx_lock, base / "empty", cache=cache)
    assert (base / "empty/pyvenv.cfg").is_file()
    # a non-empty one is refused and left alone
    (base / "full").mkdir()
    (base / "full/keep.txt").write_text("mine")
    r = materialize(nginx_lock, base / "full", cache=cache, check=False)
    assert r.returncode != 0 and "not empty" in r.stderr and "--force" in r.stderr
    assert os.listdir(base / "full") == ["keep.txt"]
    # --force replaces it
    materialize("--force", nginx_lock, base / "full", cache=cache)
    assert not (base / "full/keep.txt").exists() and (base / "full/pyvenv.cfg").is_file()
    check_works(base / "full")
    # a file, a missing parent
    (base / "file").write_text("x")
    r = materialize(nginx_lock, base / "file", cache=cache, check=False)
    assert r.returncode != 0 and "not a directory" in r.stderr
    r = materialize(nginx_lock, base / "no/such/dir", cache=cache, check=False)
    assert r.returncode != 0 and "parent" in r.stderr
    assert sorted(p.name for p in base.iterdir()) == ["empty", "file", "full"]
    # a directory that is not a mount is no SOURCE
    r = materialize(base / "empty", base / "x", cache=cache, check=False)
    assert r.returncode != 0 and "not a sitefs mount" in r.stderr
    # relocated: scripts name DEST, not the temp directory they were written in
    assert (base / "full/bin/clipkg-hello").read_text().startswith(f"#!{base}/full/bin/python\n")


def test_sigkill_leaves_dest_absent_or_complete(fault_lock, faultserver, pip_venv, tmp_path,
                                                cleanup):
    """SIGKILL at many points of a slow materialize: DEST is absent or complete."""
    want = {p for p in snapshot(pip_venv)
            if not p.endswith(("/INSTALLER", "/REQUESTED"))}
    faultserver.fault("delay:150")
    base = short_dir()
    cleanup(base)
    seen_tmp = False
    outcomes = []
    for i, delay in enumerate([0.3, 0.6, 0.9, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0]):
        dest = base / f"v{i}"
        cache = tmp_path / f"cache{i % 3}"   # some runs find part of the work done
        p = subprocess.Popen([str(SITEFS_BIN), "materialize", "-j", "2", "--python", PY,
                              "--cache-dir", str(cache), str(fault_lock), str(dest)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=clean_env())
        time.sleep(delay)
        seen_tmp |= bool(list(base.glob(f".v{i}.sitefs-*")))
        p.send_signal(signal.SIGKILL)
        p.wait()
        if dest.exists():
            got = {p for p in snapshot(dest) if not p.endswith(("/INSTALLER", "/REQUESTED"))}
            assert got == want, f"{dest} is partial: missing {sorted(want - got)[:5]}"
            outcomes.append("complete")
        else:
            outcomes.append("absent")
    assert seen_tmp, "never killed while the temp directory existed (test too fast?)"
    assert "absent" in outcomes, outcomes


def test_compile_like_pip(nginx_lock, wheelhouse, tmp_path, cleanup):
    """--compile writes the pycs pip writes (same invalidation mode: checked-hash under
    SOURCE_DATE_EPOCH, byte-identical) and lists them in RECORD as pip does."""
    env = {"SOURCE_DATE_EPOCH": "1600000000"}
    ref = Path(tempfile.mkdtemp(prefix="sfsref", dir="/tmp")) / "venv"
    dest = Path(tempfile.mkdtemp(prefix="sfsmat", dir="/tmp")) / "venv"
    cleanup(ref.parent)
    cleanup(dest.parent)
    assert len(str(ref)) == len(str(dest))  # marshalled co_filename: same length, same bytes
    subprocess.run([PY, "-m", "venv", "--without-pip", str(ref)], check=True)
    reqs = ["%s==%s" % p for p in sorted(wheelhouse.lock_packages())]
    penv = clean_env(**env)
    penv.pop("PYTHONDONTWRITEBYTECODE", None)
    r = subprocess.run([str(ref / "bin/python"), str(PIP_WHL[-1] / "pip"), "install", "--no-deps",
                        "--no-index", "--no-cache-dir", "--find-links", str(wheelhouse.dir),
                        *reqs], capture_output=True, text=True, env=penv)
    assert r.returncode == 0, r.stderr
    materialize("--compile", nginx_lock, dest, cache=tmp_path / "cache", env=env)

    site = f"lib/{PYVER}/site-packages"

    def pycs(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.pyc")}
    want, got = pycs(ref), pycs(dest)
    assert want and set(got) == set(want), \
        f"only pip: {sorted(set(want) - set(got))[:5]}, only us: {sorted(set(got) - set(want))[:5]}"
    # same header (flags + source hash: the invalidation mode) and equal code objects
    # (marshal's reference flags depend on the compiling process, so not the raw bytes)
    differ = [p for p in want if want[p][:16] != got[p][:16]
              or marshal.loads(want[p][16:]) != marshal.loads(got[p][16:])]
    assert not differ, f"pycs differ: {differ[:5]}"
    assert int.from_bytes(got[next(iter(got))][4:8], "little") == 3  # checked hash
    fname = marshal.loads(got[f"{site}/purepkg/__pycache__/core.cpython-311.pyc"][16:]).co_filename
    assert fname == f"{dest}/{site}/purepkg/core.py"

    for rec in (ref / site).glob("*.dist-info/RECORD"):
        mine = dest / site / rec.parent.name / "RECORD"
        # launchers name their venv (same length here): compare their size, not hash
        strip = lambda t: [re.sub(r"^(\.\./\.\./\.\./bin/[^,]*),[^,]*,", r"\1,,", l)  # noqa
                           for l in t.splitlines() if "/INSTALLER," not in l
                           and "/REQUESTED," not in l]
        assert strip(mine.read_text()) == strip(rec.read_text()), rec.parent.name
    # the pycs are valid: importing writes nothing new
    before = set(pycs(dest))
    e = clean_env()
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([str(dest / "bin/python"), "-c", "import purepkg, clipkg.cli, pip._internal"],
                   check=True, env=e)
    assert set(pycs(dest)) == before


def test_hardlink_workers_sharing_bodies(tmp_path, cleanup):
    """Many wheels shipping the same files (empty __init__.py, vendored modules): the
    workers race to create each links/ copy while others already hardlink to it.  A copy
    renamed over another between linkat's lookup and its link made linkat fail with ENOENT
    (seen as "cannot hardlink from the cache" in the fidelity test).  Damaged copies (a
    chmod in a venv changes the shared inode) are replaced while other workers link."""
    wheels = [wheelgen.make_wheel(tmp_path / "wheels", f"same{k}", "1.0", {
        **{f"same{k}/m{j}.py": f"X = {j}\n".encode() for j in range(150)},
        **{f"same{k}/p{j}/__init__.py": b"" for j in range(10)},
    }) for k in range(8)]
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", wheels,
                                 "file://" + str(tmp_path / "wheels"))
    for run in range(6):
        dest = new_dest()
        cleanup(dest.parent)
        r = materialize("--link-mode", "hardlink", "-j", "8", lock, dest,
                        cache=tmp_path / f"cache{run}")
        mode, _, hard, copied, _ = summary(r)
        assert (mode, copied) == ("hardlink", 0) and hard > 8 * 160
        site = dest / f"lib/{PYVER}/site-packages"
        for k in range(8):
            assert (site / f"same{k}/m149.py").read_bytes() == b"X = 149\n"
            assert (site / f"same{k}/m149.py").stat().st_ino == \
                (site / "same0/m149.py").stat().st_ino
    # damaged copies, two processes repairing them at once
    links = [p for p in (tmp_path / "cache0/links").rglob("*") if p.is_file()]
    for run in range(4):
        for p in links:
            p.chmod(0o600)
        dests = [new_dest(), new_dest()]
        procs = []
        for dest in dests:
            cleanup(dest.parent)
            procs.append(subprocess.Popen(
                [str(SITEFS_BIN), "materialize", "--python", PY, "--cache-dir",
                 str(tmp_path / "cache0"), "--link-mode", "hardlink", "-j", "8", str(lock),
                 str(dest)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True, env=clean_env()))
        for proc in procs:
            err = proc.communicate(timeout=60)[1]
            assert proc.returncode == 0, err
        for dest in dests:
            m0 = dest / f"lib/{PYVER}/site-packages/same7/m0.py"
            assert m0.read_bytes() == b"X = 0\n" and m0.stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_cache_on_another_mount_of_the_same_filesystem(nginx_lock, pip_venv, tmp_path, cleanup):
    """The cache on a bind mount of DEST's filesystem: FICLONE and link() fail with EXDEV
    there but copy_file_range works, so auto goes clone -> hardlink (after making the
    links/ copy from the body's fd) -> copy from that same fd, which must not start where
    the links/ copy left the fd's offset (at the end: "copy: Input/output error")."""
    dest = new_dest()
    cleanup(dest.parent)
    src, mnt = tmp_path / "bindsrc", tmp_path / "bindmnt"
    src.mkdir()
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(mnt)], check=True)
    try:
        r = materialize(nginx_lock, dest, cache=mnt / "cache")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
    assert summary(r)[0] == "copy"
    problems = compare_trees(pip_venv, dest)
    assert not problems, "\n".join(problems)


def test_cold_hardlink_one_inode_per_file_then_mount_offline(mount, private_nginx, pip_venv,
                                                             wheelhouse, tmp_path, cleanup):
    """Cold, hardlink mode: each body is inflated into its venv file, which then becomes
    the links/ copy (one inode per file, no body store file).  The whole wheels stay in
    the cache: a later materialize and a later mount of the same lock make no request."""
    server, lock = private_nginx
    cache = tmp_path / "cache"
    dest = new_dest()
    cleanup(dest.parent)
    r = materialize("--link-mode", "hardlink", lock, dest, cache=cache)
    mode, _, hard, copied, fetched = summary(r)
    assert (mode, copied, fetched) == ("hardlink", 0, len(wheelhouse.lock_wheels))
    assert not cache_files(cache / "bodies")
    assert kept_wheels(cache) == {wheelgen.sha256_file(w) for w in wheelhouse.lock_wheels}
    links = inodes(cache_files(cache / "links"))
    venv_files = [p for p in dest.rglob("*") if p.is_file() and not p.is_symlink()]
    linked = [p for p in venv_files if inodes([p]) <= links]
    assert len(linked) == hard and hard > 0
    assert all(p.stat().st_nlink >= 2 for p in linked)
    # every other file is generated (launchers, RECORD, pyvenv.cfg...): one link
    assert all(p.stat().st_nlink == 1 for p in venv_files if p not in linked)

    # warm: the same links/ copies, no request
    dest2 = new_dest()
    cleanup(dest2.parent)
    mark = server.mark()
    r = materialize("--link-mode", "hardlink", lock, dest2, cache=cache)
    assert summary(r)[4] == 0 and server.requests(mark) == []
    core = f"lib/{PYVER}/site-packages/purepkg/core.py"
    assert inodes([dest / core]) == inodes([dest2 / core])

    # a mount of the same lock fills its bodies from the kept wheels: no request
    m = mount(lock, cache=cache)
    problems = compare_trees(pip_venv, m.path)  # reads every body
    assert not problems, "\n".join(problems)
    check_works(m.path)
    assert server.requests(mark) == []
    assert cache_files(cache / "bodies")


@pytest.mark.parametrize("link_mode", ["hardlink", "copy"])
def test_corrupt_wheel_fails_cleanly(link_mode, tmp_path, cleanup):
    """A body that does not match RECORD, or whose bytes fail the CRC, stops the run with
    the wheel and entry named; DEST never appears, nothing wrong reaches links/."""
    wdir = tmp_path / "wheels"
    good = wheelgen.make_wheel(wdir, "goodpkg", "1.0", {"goodpkg/__init__.py": b"X = 1\n"})
    lie = b"sha256=" + b"A" * 43
    badrec = wheelgen.make_wheel(wdir, "badrec", "1.0", {
        "badrec/__init__.py": b"",
        "badrec/data.py": b"DATA = 'the real bytes'\n" * 50},
        record_override={"badrec/data.py": lie.decode()})
    badcrc = wheelgen.make_wheel(wdir, "badcrc", "1.0", {
        "badcrc/__init__.py": b"",
        "badcrc/blob.bin": (bytes(range(256)) * 64, 0o644, "stored")})
    start, end = wheelgen.data_span(badcrc, "badcrc/blob.bin")
    raw = bytearray(badcrc.read_bytes())
    raw[(start + end) // 2] ^= 0xFF
    badcrc.write_bytes(bytes(raw))
    server = Nginx(wdir, tmp_path / "nginx").start()
    try:
        for bad, entry, why in [(badrec, "badrec/data.py", "sha256 mismatch"),
                                (badcrc, "badcrc/blob.bin", "CRC-32 mismatch")]:
            lock = wheelgen.write_pylock(tmp_path / f"{bad.stem}.toml", [good, bad], server.url)
            dest = new_dest()
            cleanup(dest.parent)
            cache = tmp_path / f"cache-{bad.stem}"
            r = materialize("--link-mode", link_mode, lock, dest, cache=cache, check=False)
            assert r.returncode != 0
            assert f'wheel "{bad.name}": entry "{entry}": {why}' in r.stderr, r.stderr
            assert not dest.exists()
            assert not list(dest.parent.glob(".venv.sitefs-*")), "temp directory left behind"
            assert not cache_files(cache / "bodies")
            assert not [p for p in cache_files(cache / "links") if p.stat().st_size > 1000]
    finally:
        server.stop()
