"""The mounted tree is a working venv, identical to a pip install of the same wheels."""

import csv
import errno
import io
import json
import mmap
import os
import shutil
import signal
import subprocess
import time

import pytest

import wheelgen
from conftest import (PY, PYVER, clean_env, daemon_pids, is_mounted, lazy_umount, run_sitefs,
                      short_dir, snapshot)

pytestmark = pytest.mark.fuse


def test_imports_scripts_and_pip(mount, nginx_lock, wheelhouse):
    m = mount(nginx_lock)
    r = m.python("-c", "import sys, purepkg, purepkg.sub.deep.mod as d, purepkg.util, cext, "
                 "cext_helpers, clipkg.cli, datapkg, datapkg_extra, purepkg_top, bigpkg\n"
                 "print(sys.prefix, purepkg.__file__, cext.__file__, sep='\\n')\n"
                 "print(cext.add(40, 2), purepkg.answer(), d.VALUE, cext.GREETING, "
                 "purepkg.util.GREETING)")
    assert r.stdout.splitlines() == [
        str(m.path), f"{m.site}/purepkg/__init__.py",
        f"{m.site}/cext.cpython-311-x86_64-linux-gnu.so",
        "42 42 deep hello from C gr\u00fc\u00df dich"]

    assert m.run("clipkg-hello", "a", "b").stdout == "hello from clipkg a b\n"
    assert m.run("clipkg-gui").stdout == "gui from clipkg\n"
    assert m.run("datapkg-run").stdout == "datapkg-run datapkg\n"
    pipver = wheelgen.parse_wheel_name(wheelhouse["pip"].name)[1]
    assert m.run("pip", "--version").stdout.startswith(f"pip {pipver} from {m.site}/pip ")

    r = m.python("-m", "pip", "list", "--format=json")
    listed = {(wheelgen.normalize(p["name"]), p["version"]) for p in json.loads(r.stdout)}
    assert listed == wheelhouse.lock_packages()
    r = m.python("-m", "pip", "check")
    assert r.stdout.strip() == "No broken requirements found."


def test_venv_skeleton(mount, nginx_lock):
    m = mount(nginx_lock)
    cfg = dict(l.split(" = ", 1) for l in (m.path / "pyvenv.cfg").read_text().splitlines()
               if " = " in l)
    version = subprocess.run([PY, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    assert cfg["home"] == os.path.dirname(PY)
    assert cfg["include-system-site-packages"] == "false"
    assert cfg["version"] == version
    for name in ("python", "python3", PYVER):
        link = m.path / "bin" / name
        assert link.is_symlink(), link
        assert os.path.realpath(link) == os.path.realpath(PY), link
    assert (m.path / "lib64").is_symlink() and os.readlink(m.path / "lib64") == "lib"
    assert m.site.is_dir()
    r = subprocess.run(["bash", "-c", f'. "{m.path}/bin/activate" && echo "$VIRTUAL_ENV" && '
                        "command -v python"], capture_output=True, text=True, env=clean_env())
    assert r.stdout.splitlines() == [str(m.path), f"{m.path}/bin/python"], r.stderr


def record_rows(data):
    """RECORD -> {path: (hash, size)}, minus what installers are free to differ on."""
    rows = {}
    for row in csv.reader(io.StringIO(data.decode())):
        if row and not row[0].endswith((".pyc", "/INSTALLER", "/REQUESTED")):
            rows[row[0]] = (row[1], row[2])
    return rows


def test_tree_matches_pip_install(mount, nginx_lock, pip_venv):
    """Every path, byte and exec bit equals the reference venv (reads every body)."""
    m = mount(nginx_lock)
    problems = compare_trees(pip_venv, m.path)
    assert not problems, "\n".join(problems)


def compare_trees(ref, mnt):
    """Differences between a reference venv and one at another path (ignoring pyc,
    INSTALLER/REQUESTED, pyvenv.cfg's command line; scripts compared after the shebang)."""
    want, got = snapshot(ref), snapshot(mnt)
    ref, mnt = str(ref), str(mnt)
    skip = lambda p: p.endswith(("/INSTALLER", "/REQUESTED"))  # noqa: E731
    missing = sorted(p for p in set(want) - set(got) if not skip(p))
    extra = sorted(p for p in set(got) - set(want) if not skip(p))
    problems = [f"missing in mount: {p}" for p in missing] + [f"extra in mount: {p}" for p in extra]
    for rel in sorted(set(want) & set(got)):
        w, g = want[rel], got[rel]
        if skip(rel):
            continue
        if w[0] != g[0]:
            problems.append(f"{rel}: {w[0]} in the reference, {g[0]} in the mount")
        elif w[0] == "link":
            if w[1].replace(ref, mnt) != g[1]:
                problems.append(f"{rel}: resolves to {g[1]}, want {w[1].replace(ref, mnt)}")
        elif w[0] == "file":
            wdata, gdata = w[1].replace(ref.encode(), mnt.encode()), g[1]
            if w[2] != g[2]:
                problems.append(f"{rel}: executable {g[2]}, want {w[2]}")
            if rel == "pyvenv.cfg":
                strip = lambda d: [l for l in d.splitlines() if not l.startswith(b"command")]  # noqa
                wdata, gdata = strip(wdata), strip(gdata)
            elif rel.endswith(".dist-info/RECORD"):
                problems += check_record(rel, w[1], g[1], got)
                continue
            elif rel.startswith("bin/") and wdata.startswith(f"#!{mnt}/bin/python".encode()):
                if not gdata.startswith(f"#!{mnt}/bin/python".encode()):
                    problems.append(f"{rel}: shebang {gdata.splitlines()[0]!r}")
                wdata, gdata = wdata.split(b"\n", 1)[1:], gdata.split(b"\n", 1)[1:]
            if wdata != gdata:
                problems.append(f"{rel}: content differs ({len(g[1])} bytes, want {len(w[1])})")
    return problems


def check_record(rel, want, got, tree):
    """Same rows as pip's RECORD, and each hash/size true of the file in the mount."""
    w, g = record_rows(want), record_rows(got)
    out = []
    if set(w) != set(g):
        out.append(f"{rel}: rows only in the reference: {sorted(set(w) - set(g))}; "
                   f"only in the mount: {sorted(set(g) - set(w))}")
    sitedir = os.path.dirname(os.path.dirname(rel))
    for path, (h, size) in g.items():
        f = tree.get(os.path.normpath(os.path.join(sitedir, path)))
        if not h:
            if w.get(path, ("",))[0]:
                out.append(f"{rel}: {path} has no hash")
        elif f is None or f[0] != "file":
            out.append(f"{rel}: {path} is listed but not a file in the mount")
        elif (wheelgen.record_hash(f[1]), len(f[1])) != (h, int(size or -1)):
            out.append(f"{rel}: {path} hash/size do not match the file in the mount")
    return out


def write_through(path):
    with open(path, "r+b", buffering=0) as f:
        f.write(b"x")


def test_read_only(mount, nginx_lock):
    m = mount(nginx_lock)
    core = m.site / "purepkg/core.py"
    attempts = {
        "create": lambda: open(m.path / "new.txt", "w"),
        # the open itself succeeds when the kernel opens files without
        # asking (FUSE_NO_OPEN_SUPPORT): the write is what fails
        "write": lambda: write_through(core),
        "truncate": lambda: os.truncate(core, 0),
        "mkdir": lambda: os.mkdir(m.site / "newdir"),
        "unlink": lambda: os.unlink(core),
        "rmdir": lambda: os.rmdir(m.site / "purepkg/sub/deep"),
        "rename": lambda: os.rename(core, m.site / "purepkg/core2.py"),
        "symlink": lambda: os.symlink("x", m.path / "link"),
        "chmod": lambda: os.chmod(core, 0o777),
    }
    wrong = {}
    for what, op in attempts.items():
        try:
            op()
            wrong[what] = "succeeded"
        except OSError as e:
            if e.errno != errno.EROFS:
                wrong[what] = errno.errorcode.get(e.errno, e.errno)
    assert not wrong, f"expected EROFS, got {wrong}"
    assert core.read_bytes() == b"def answer():\n    return 42\n"


def test_a_shared_writable_mapping_changes_nothing(mount, nginx_lock):
    """Its owner may open a file for writing (the kernel does not ask when
    opens are not sent); a change made through a shared mapping is refused
    at writeback, and no process sees it afterwards."""
    m = mount(nginx_lock)
    core = m.site / "purepkg/core.py"
    want = b"def answer():\n    return 42\n"
    try:
        fd = os.open(core, os.O_RDWR)
    except OSError as e:
        assert e.errno == errno.EROFS  # a kernel that sends opens
        return
    try:
        mm = mmap.mmap(fd, len(want), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        mm[0:3] = b"XYZ"
        try:
            mm.flush()
        except OSError:
            pass  # the writeback's EROFS, if reported here
        mm.close()
    finally:
        os.close(fd)
    deadline = time.monotonic() + 10
    while core.read_bytes() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert core.read_bytes() == want
    r = subprocess.run(["cat", str(core)], capture_output=True, check=True)
    assert r.stdout == want


def test_several_wheels_per_package_picks_compatible(mount, wheelhouse, nginx, tmp_path):
    """The lock lists a cp27/i686 wheel first; the cp311 one must be chosen."""
    decoy = wheelhouse["cext-decoy"]
    lock = wheelgen.write_pylock(tmp_path / "pylock.toml", [decoy, wheelhouse["cext"]], nginx.url)
    mark = nginx.mark()
    m = mount(lock)
    assert m.python("-c", "import cext; print(cext.add(1, 2))").stdout == "3\n"
    assert decoy.name not in {r.name for r in nginx.requests(mark)}


def test_umount_and_sigterm(mount, nginx_lock):
    m = mount(nginx_lock)
    r = run_sitefs("umount", m.path)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(m.path)
    assert m.proc.wait(10) == 0, "daemon did not exit 0 after `sitefs umount`"
    m = mount(nginx_lock)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(10) == 0, "daemon did not exit 0 on SIGTERM"
    assert not is_mounted(m.path), "SIGTERM left the mount behind"


def test_umount_clears_stale_mount(mount, nginx_lock):
    m = mount(nginx_lock)
    m.killed = True
    m.proc.kill()
    m.proc.wait()
    assert is_mounted(m.path)
    with pytest.raises(OSError) as e:
        os.stat(m.path / "pyvenv.cfg")
    assert e.value.errno == errno.ENOTCONN
    # the kernel still answers stat of the root from its cache: mounting over
    # the dead mount must be refused, not stacked
    r = run_sitefs("mount", "--python", PY, "--cache-dir", str(m.cache), str(nginx_lock),
                   str(m.path))
    assert r.returncode != 0 and "sitefs umount" in r.stderr, r.stderr
    r = run_sitefs("umount", m.path)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(m.path)


def test_background_mount(sitefs_bin, nginx_lock, tmp_path):
    """Without -f: exit 0 only once the tree is visible; the daemon lives on."""
    mnt = short_dir() / "venv"
    mnt.mkdir()
    try:
        with open(tmp_path / "out", "wb") as out:  # a file: a daemon holding a pipe would hang us
            r = subprocess.run([sitefs_bin, "mount", "--python", PY, "--cache-dir",
                                str(tmp_path / "cache"), str(nginx_lock), str(mnt)],
                               stdout=out, stderr=subprocess.STDOUT, timeout=60, env=clean_env())
        log = (tmp_path / "out").read_text(errors="replace")
        assert r.returncode == 0, log
        assert os.path.ismount(mnt) and (mnt / "pyvenv.cfg").is_file(), log
        pids = daemon_pids(mnt)
        assert pids, "no daemon process left running"
        r = run_sitefs("umount", mnt)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
        deadline = time.monotonic() + 10
        while daemon_pids(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not daemon_pids(mnt), "daemon still running after umount"
    finally:
        lazy_umount(mnt)
        for pid in daemon_pids(mnt):
            os.kill(pid, signal.SIGKILL)
        if not is_mounted(mnt):
            shutil.rmtree(mnt.parent, ignore_errors=True)


def test_stale_fill_files_are_swept(mount, nginx_lock, tmp_path):
    """Temp files of a killed fill do not pile up: untouched for an hour, they go."""
    cache = tmp_path / "cache-sweep"
    (cache / "tmp").mkdir(parents=True)
    stale, fresh = cache / "tmp" / "fill.stale1", cache / "tmp" / "fill.fresh1"
    stale.write_bytes(b"x" * 4096)
    fresh.write_bytes(b"y")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    mount(nginx_lock, cache=cache)
    assert not stale.exists() and fresh.exists()


def test_directory_listings_are_cached_by_the_kernel(mount, nginx_lock, tmp_path):
    # opendir is answered ENOSYS once: the kernel then sends neither opendir nor
    # releasedir and keeps listings, so a second walk reaches the daemon not at all.
    stats = tmp_path / "stats.json"
    m = mount(nginx_lock, env={"SITEFS_STATS_FILE": str(stats)})
    walk = [(d, sorted(ds), sorted(fs)) for d, ds, fs in os.walk(m.path)]
    ndirs = len(walk)
    assert ndirs > 20
    assert [(d, sorted(ds), sorted(fs)) for d, ds, fs in os.walk(m.path)] == walk
    assert sorted(os.listdir(m.site / "purepkg")) == sorted(
        walk[[w[0] for w in walk].index(str(m.site / "purepkg"))][1]
        + walk[[w[0] for w in walk].index(str(m.site / "purepkg"))][2])
    m.teardown()
    ops = json.loads(stats.read_text())["ops"]
    assert ops["opendir"] <= 1, ops
    # one listing per directory (a call that returns entries, one that ends it)
    assert ops["readdirplus"] + ops["readdir"] <= 2 * ndirs, (ops, ndirs)


def test_files_are_opened_without_requests(mount, nginx_lock, tmp_path):
    # open is answered ENOSYS once (FUSE_NO_OPEN_SUPPORT): the kernel then opens
    # files itself, sends no release, and keeps their pages across opens; a
    # body is fetched by its first read, and an open that reads nothing
    # fetches nothing.
    if os.environ.get("SITEFS_OPEN_REQUESTS") == "1":
        pytest.skip("open requests asked for")
    stats = tmp_path / "stats.json"
    m = mount(nginx_lock, env={"SITEFS_STATS_FILE": str(stats)})
    util = m.site / "purepkg/util.py"
    def bodies():
        return [p for p in (m.cache / "bodies").rglob("*") if p.is_file()]
    os.close(os.open(util, os.O_RDONLY))
    assert bodies() == [], "an open fetched a body"
    files = sorted(p for p in (m.site / "purepkg").rglob("*") if p.is_file())
    assert len(files) >= 4
    first = {p: p.read_bytes() for p in files}
    assert bodies(), "reads fetched no body"
    for _ in range(3):
        assert {p: p.read_bytes() for p in files} == first
    m.teardown()
    ops = json.loads(stats.read_text())["ops"]
    assert ops["open"] <= 1 and ops["release"] == 0, ops
    # each file read once by the kernel (its pages are kept), not per open
    assert ops["read"] <= len(files), (ops, len(files))
