"""Fidelity over a corpus of edge-case wheels: pip's venv, the mount and the materialized
venv agree file for file (paths, bytes, exec bits, RECORD), and answer the same to imports,
scripts, pip and importlib.metadata."""

import json
import os
import shutil
import subprocess

import pytest

import wheelgen
from conftest import PIP_WHL, PY, PYVER, SITE, Nginx, clean_env, run_sitefs, short_dir
from test_mount import compare_trees

pytestmark = pytest.mark.fuse

LONG = "m" + "x" * 200
DEEP = "/".join(["d" * 50] * 10)
NOT_REQUESTED = {"nsb"}


def build_corpus(d):
    mk = wheelgen.make_wheel
    ws = [
        # .data with all five keys; #!python and #!pythonw scripts; executable data
        mk(d, "alldata", "1.0", {"alldata/__init__.py": b"X = 1\n"}, data={
            "purelib": {"alldata_pure.py": b"P = 1\n"},
            "platlib": {"alldata_plat.py": b"Q = 2\n"},
            "headers": {"alldata.h": b"#define ALLDATA 1\n"},
            "scripts": {"ad-py": (b"#!python\nprint('ad-py')\n", 0o755),
                        "ad-pyw": (b"#!pythonw -u\nprint('ad-pyw')\n", 0o755),
                        "ad-sh": (b"#!/bin/sh\necho ad-sh\n", 0o755)},
            "data": {"share/alldata/run.sh": (b"#!/bin/sh\necho run\n", 0o755),
                     "share/alldata/notes.txt": b"notes\n",
                     "etc/alldata.conf": b"k = v\n"},
        }),
        # console and GUI entry points with extras
        mk(d, "eppkg", "1.0", {"eppkg/__init__.py": b"def main():\n    print('ep main')\n"
                                                     b"    return 3\n\n"
                                                     b"def gui():\n    print('ep gui')\n"},
           entry_points={"console_scripts": {"ep-main": "eppkg:main [fancy]",
                                             "ep-plain": "eppkg:main"},
                         "gui_scripts": {"ep-gui": "eppkg:gui [x, y]"}},
           metadata_extra="Provides-Extra: fancy\n"),
        # one namespace package over two wheels
        mk(d, "nsa", "1.0", {"nsp/a/__init__.py": b"A = 'a'\n"}),
        mk(d, "nsb", "2.0", {"nsp/b/__init__.py": b"B = 'b'\n"}, requires=["nsa"]),
        wheelgen.make_cext_wheel(d, "cextfid", "1.0", python=PY),
        # non-ASCII, very long, deep and spaced names
        mk(d, "oddnames", "1.0", {
            "oddnames/__init__.py": b"",
            "oddnames/donn\u00e9es_\u00fc.py": "V = '\u00e9t\u00e9'\n".encode(),
            f"oddnames/{LONG}.py": b"L = 1\n",
            f"oddnames/{DEEP}/deep.txt": b"deep\n",
            "oddnames/with space.txt": b"space\n",
        }),
        mk(d, "platonly", "1.0", {"platonly/__init__.py": b"PLAT = True\n"},
           root_is_purelib=False),
        mk(d, "emptydirs", "1.0", {"emptydirs/__init__.py": b""},
           dirs=["emptydirs/empty/", "emptydirs/sub/deeper/"]),
        # RECORD without hashes: some rows, and a whole wheel
        mk(d, "somehash", "1.0", {"somehash/__init__.py": b"S = 1\n",
                                  "somehash/data.txt": b"no hash here\n"},
           record_override={"somehash/data.txt": ""}),
        mk(d, "nohash", "1.0", {"nohash/__init__.py": b"N = 1\n"}, record_hashes=False),
        # two wheels writing one path: the later wins, with a warning
        mk(d, "clasha", "1.0", {"clash/__init__.py": b"", "clash/shared.py": b"WHO = 'a'\n"}),
        mk(d, "clashb", "1.0", {"clash/shared.py": b"WHO = 'b'\n"}),
    ]
    ws += wheelgen.system_wheels(d, ("pip",))
    extra = mk(d / "extra", "newpkg", "1.0", {"newpkg/__init__.py": b""})
    return ws, extra


class Corpus:
    def __init__(self, base):
        self.dir = base / "wheels"
        self.wheels, self.newpkg = build_corpus(self.dir)
        self.names = [wheelgen.parse_wheel_name(w.name)[:2] for w in self.wheels]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def corpus_lock(corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus-nginx")
    server = Nginx(corpus.dir, base / "nginx").start()
    requested = {n for n, _ in corpus.names} - NOT_REQUESTED
    yield wheelgen.write_pylock(base / "pylock.toml", corpus.wheels, server.url,
                                requested=requested)
    server.stop()


@pytest.fixture(scope="module")
def corpus_pip(corpus):
    """pip install --no-deps of the corpus; clashb in a second run so it is installed last,
    as in the lock."""
    root = short_dir("sfsref")
    venv = root / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True)
    reqs = ["%s==%s" % p for p in corpus.names]
    for batch in ([r for r in reqs if not r.startswith("clashb")], ["clashb==1.0"]):
        r = subprocess.run([str(venv / "bin/python"), str(PIP_WHL[-1] / "pip"), "install",
                            "--no-deps", "--no-index", "--no-compile", "--no-cache-dir",
                            "--find-links", str(corpus.dir), *batch],
                           capture_output=True, text=True, env=clean_env())
        assert r.returncode == 0, f"reference pip install failed:\n{r.stdout}\n{r.stderr}"
    yield venv
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus_materialized(corpus_lock, tmp_path_factory):
    dest = short_dir("sfsmat") / "venv"
    cache = tmp_path_factory.mktemp("corpus-cache")
    r = run_sitefs("materialize", "--python", PY, "--cache-dir", cache, corpus_lock, dest,
                   timeout=120)
    assert r.returncode == 0, r.stderr
    yield dest, r.stderr
    shutil.rmtree(dest.parent, ignore_errors=True)


def known_pip_quirk(problem):
    # pip keeps clasha's RECORD row for clash/shared.py although clashb overwrote the file
    return "clash/shared.py hash/size do not match" in problem


def test_tree_equal_to_pip(mount, corpus_lock, corpus_pip, corpus_materialized):
    dest, out = corpus_materialized
    m = mount(corpus_lock)
    m.allow(r"overwritten")
    for venv in (m.path, dest):
        problems = [p for p in compare_trees(corpus_pip, venv) if not known_pip_quirk(p)]
        assert not problems, f"{venv}:\n" + "\n".join(problems)
    # the clash: last wins, with a warning naming the path and both wheels
    for text in (out, m.log()):
        assert "clash/shared.py" in text and "clasha" in text and "clashb" in text, text
    for venv in (corpus_pip, m.path, dest):
        assert (venv / SITE / "clash/shared.py").read_text() == "WHO = 'b'\n"
    # where .data goes
    for rel in (f"{SITE}/alldata_pure.py", f"{SITE}/alldata_plat.py",
                f"include/site/{PYVER}/alldata/alldata.h", "share/alldata/run.sh",
                "etc/alldata.conf", "bin/ad-py", "bin/ad-pyw"):
        assert (dest / rel).is_file() and (m.path / rel).is_file(), rel
    assert (dest / "bin/ad-pyw").read_bytes().startswith(f"#!{dest}/bin/python\n".encode())
    assert os.access(dest / "share/alldata/run.sh", os.X_OK)
    assert not (dest / SITE / "emptydirs/empty").exists()  # pip skips directory entries
    # REQUESTED exactly where the lock says
    for venv in (m.path, dest):
        got = {p.parent.name.split("-")[0] for p in (venv / SITE).glob("*.dist-info/REQUESTED")}
        want = {p.name.split("-")[0] for p in (corpus_pip / SITE).glob("*.dist-info")}
        want -= NOT_REQUESTED
        assert got == want, venv


PROBE = r"""
import importlib, importlib.metadata as md, json, sys
out = {}
for d in md.distributions():
    name = d.metadata["Name"]
    out[name] = {
        "version": md.version(name),
        "files": sorted(str(f) for f in d.files or ()
                        if not str(f).endswith(("INSTALLER", "REQUESTED"))),
        "hashes": sorted((str(f), f.hash.value if f.hash else None, f.size) for f in d.files or ()
                         if not str(f).endswith(("INSTALLER", "REQUESTED"))
                         and not str(f).startswith("../../../bin/")),
        "entry_points": sorted((e.group, e.name, e.value) for e in d.entry_points),
        "requires": d.requires,
    }
import alldata, alldata_pure, alldata_plat, eppkg, nsp.a, nsp.b, cextfid, cextfid_helpers
import platonly, emptydirs, somehash, nohash, clash.shared
odd = importlib.import_module("oddnames.donn\u00e9es_\u00fc")
long_ = importlib.import_module("oddnames.%s")
out["imports"] = [cextfid.add(2, 3), cextfid.GREETING, nsp.a.A, nsp.b.B, clash.shared.WHO,
                  odd.V, long_.L, platonly.PLAT, alldata_pure.P, alldata_plat.Q,
                  list(nsp.__path__) == [sys.prefix + "/lib/python%%d.%%d/site-packages/nsp"
                                         %% sys.version_info[:2]]]
print(json.dumps(out, sort_keys=True))
""" % LONG

SCRIPTS = [("bin/ad-py",), ("bin/ad-pyw",), ("bin/ad-sh",), ("bin/ep-main", "a"),
           ("bin/ep-plain",), ("bin/ep-gui",), ("share/alldata/run.sh",)]
PIP_CMDS = [("list", "--format=freeze"), ("freeze", "--all"), ("check",),
            ("show", "-f", "alldata", "eppkg", "nsa", "nsb", "oddnames", "somehash", "nohash",
             "clasha", "clashb", "cextfid", "platonly", "emptydirs")]


def behaviour(venv):
    env = clean_env()
    out = {}

    def run(*cmd):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60,
                           env=env)
        return (r.returncode, r.stdout.replace(str(venv), "<VENV>"),
                r.stderr.replace(str(venv), "<VENV>"))
    rc, probe, err = run(venv / "bin/python", "-c", PROBE)
    assert rc == 0, err
    out["probe"] = json.loads(probe)
    for s in SCRIPTS:
        out[s[0]] = run(venv / s[0], *s[1:])
    for c in PIP_CMDS:
        rc, o, e = run(venv / "bin/python", "-m", "pip", *c)
        # the lock marks nsb as not requested; pip marked everything it was given
        o = "".join(l for l in o.splitlines(True) if not l.endswith("/REQUESTED\n"))
        out["pip " + " ".join(c)] = (rc, o, e)
    return out


def test_same_behaviour(mount, corpus_lock, corpus_pip, corpus_materialized):
    dest, _ = corpus_materialized
    m = mount(corpus_lock)
    m.allow(r"overwritten")
    want = behaviour(corpus_pip)
    assert want["bin/ep-main"][:2] == (3, "ep main\n")
    assert want["pip check"][1].strip() == "No broken requirements found."
    for venv in (m.path, dest):
        got = behaviour(venv)
        for k in want:
            assert got[k] == want[k], f"{venv}: {k}"


def test_pip_install_into_mount_fails_cleanly(mount, corpus_lock, corpus):
    m = mount(corpus_lock)
    m.allow(r"overwritten")
    for args in ([str(corpus.newpkg)], ["--force-reinstall", "--no-deps",
                                        str(corpus.dir / corpus.wheels[0].name)]):
        r = m.python("-m", "pip", "install", "--no-index", *args, check=False)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert "Read-only file system" in out, out
        assert "Traceback" not in out, out
    assert not (m.site / "newpkg").exists()


def test_materialized_is_an_ordinary_venv(corpus, corpus_lock, tmp_path):
    """pip can install into and uninstall from it: RECORD names every installed file."""
    dest = short_dir("sfsmat") / "venv"
    try:
        r = run_sitefs("materialize", "--python", PY, "--cache-dir", tmp_path / "cache",
                       corpus_lock, dest, timeout=120)
        assert r.returncode == 0, r.stderr
        py = str(dest / "bin/python")
        r = subprocess.run([py, "-m", "pip", "install", "--no-index", str(corpus.newpkg)],
                           capture_output=True, text=True, env=clean_env())
        assert r.returncode == 0, r.stderr
        r = subprocess.run([py, "-m", "pip", "uninstall", "-y", "alldata", "eppkg"],
                           capture_output=True, text=True, env=clean_env())
        assert r.returncode == 0, r.stderr
        for rel in (f"{SITE}/alldata", f"{SITE}/alldata_pure.py", "bin/ad-py", "bin/ep-main",
                    "bin/ep-gui", "share/alldata/run.sh", "etc/alldata.conf",
                    f"include/site/{PYVER}/alldata/alldata.h"):
            assert not (dest / rel).exists(), rel
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)
