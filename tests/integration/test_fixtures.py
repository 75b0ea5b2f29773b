"""Self-checks of the fixtures (no sitefs needed): if these fail, nothing else means much."""

import base64
import hashlib
import subprocess
import tomllib
import urllib.request
import zipfile

import wheelgen
from conftest import clean_env, range_spans


def test_wheels_are_valid_and_deterministic(wheelhouse, tmp_path):
    for name, whl in wheelhouse.wheels.items():
        with zipfile.ZipFile(whl) as zf:
            assert zf.testzip() is None, whl
            names = zf.namelist()
            record = next(n for n in names if n.endswith(".dist-info/RECORD"))
            rows = [r.rsplit(",", 2) for r in zf.read(record).decode().splitlines()]
            assert {r[0] for r in rows} == set(names), f"{whl.name}: RECORD != zip listing"
            for path, h, size in rows:
                if not h or name == "badpkg":
                    continue
                data = zf.read(path)
                algo, _, want = h.partition("=")
                got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=")
                assert (got.decode(), len(data)) == (want, int(size)), f"{whl.name}:{path}"
            # ours put dist-info last (Debian's pip wheel has it first: also a case)
            di = [n.split("/")[0].endswith(".dist-info") for n in names]
            if name not in ("pip", "setuptools", "wheel"):
                assert di == sorted(di), f"{whl.name}: dist-info entries are not at the end"
    again = wheelgen.make_wheel(tmp_path, "purepkg", "1.0", {"a.py": b"x"})
    assert again.read_bytes() == wheelgen.make_wheel(tmp_path / "2", "purepkg", "1.0",
                                                     {"a.py": b"x"}).read_bytes()
    assert wheelhouse["cext"].name == "cext-1.0-cp311-cp311-linux_x86_64.whl"
    big = zipfile.ZipFile(wheelhouse["bigpkg"]).getinfo("bigpkg/big.bin")
    assert big.compress_size > 512 * 1024, "big.bin should deflate to well over the 64 KiB tail"
    start, end = wheelgen.entry_span(wheelhouse["purepkg"], "purepkg/core.py")
    assert wheelhouse["purepkg"].stat().st_size - end > 65536, "core.py must lie outside the tail"


def test_lock_matches_wheels(wheelhouse, nginx_lock, nginx):
    lock = tomllib.loads(nginx_lock.read_text())
    assert lock["lock-version"] == "1.0"
    assert {(p["name"], p["version"]) for p in lock["packages"]} == wheelhouse.lock_packages()
    for pkg in lock["packages"]:
        (w,) = pkg["wheels"]
        path = wheelhouse.dir / w["name"]
        assert w["url"] == f"{nginx.url}/{w['name']}"
        assert w["size"] == path.stat().st_size
        assert w["hashes"]["sha256"] == wheelgen.sha256_file(path)


def test_nginx_serves_ranges_and_logs_them(wheelhouse, nginx):
    whl = wheelhouse["bigpkg"]
    size = whl.stat().st_size
    mark = nginx.mark()
    req = urllib.request.Request(f"{nginx.url}/{whl.name}",
                                 headers={"Range": f"bytes={size - 65536}-{size - 1}"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206
        assert r.read() == whl.read_bytes()[-65536:]
    (log,) = nginx.requests(mark)
    assert (log.method, log.name, log.status, log.body) == ("GET", whl.name, 206, 65536)
    assert range_spans(log.range, size) == [(size - 65536, size)]


def test_reference_venv_works(pip_venv, wheelhouse):
    py = str(pip_venv / "bin/python")
    code = ("import purepkg, purepkg.sub.deep.mod as m, cext, datapkg_extra, bigpkg; "
            "assert cext.add(2, 3) == 5 and purepkg.answer() == 42; print(cext.GREETING)")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0 and r.stdout == "hello from C\n", r.stderr
    r = subprocess.run([str(pip_venv / "bin/clipkg-hello"), "x"], capture_output=True,
                       text=True, env=clean_env())
    assert r.stdout == "hello from clipkg x\n", r.stderr
    r = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True,
                       text=True, env=clean_env())
    got = {tuple(wheelgen.normalize(x) if i == 0 else x for i, x in enumerate(l.split("==")))
           for l in r.stdout.split()}
    assert got == wheelhouse.lock_packages()
    assert not list(pip_venv.glob("lib/*/site-packages/*.dist-info/direct_url.json"))


def test_faultserver_basics(faultserver, wheelhouse):
    whl = wheelhouse["purepkg"]
    url = f"{faultserver.url}/{whl.name}"
    req = urllib.request.Request(url, headers={"Range": "bytes=10-109"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == whl.read_bytes()[10:110]
    faultserver.fault("ignore_range")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and r.read() == whl.read_bytes()
    assert faultserver.stats()
