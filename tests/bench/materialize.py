#!/usr/bin/python3
"""Benchmark (not a test): sitefs materialize vs pip install of the same ~60 wheels.

    tests/bench/materialize.py [--runs N] [--work DIR] [--cold-only]

Wheels: Debian's python3-* packages repacked (tools/repack.py; tools/install-deps.sh
--bench installs them), served by a local nginx.  Prints, side by side:
  - warm cache: materialize (each link mode that works here) vs `pip install --no-deps
    --no-index --find-links` into a fresh `python -m venv --without-pip`, with and
    without bytecode (pip compiles by default; materialize --compile);
  - cold cache: materialize's bulk throughput (wheel bytes / wall time) vs the two
    limits, measured in the same run: the index's bandwidth (curl, 8 parallel transfers,
    to /dev/null) and the inflate library (build/tests/matlimits: fetch/inflate.c on every
    entry with CRC-32 and SHA-256, one thread per CPU, nothing written); and, to say which
    limit binds, the filesystem's (matlimits write: the same files created from memory,
    one inode each plus a link into a store, as a cold hardlink materialize does) and both
    together (matlimits extract: inflate each entry straight into its new file).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "tests/integration"))
import wheelgen  # noqa: E402
from conftest import Nginx  # noqa: E402

PY = "/usr/bin/python3"
SITEFS = Path(os.environ.get("SITEFS_BIN") or TOP / "build/tools/sitefs")
MATLIMITS = Path(os.environ.get("SITEFS_MATLIMITS") or TOP / "build/tests/matlimits")
PKGS = ("appdirs argcomplete asttokens attr backcall beniget blinker bytecode contourpy "
        "coverage cycler dateutil decorator distro entrypoints executing fonttools gast "
        "httplib2 iniconfig ipython jedi joblib jwt kiwisolver lz4 matplotlib "
        "matplotlib-inline more-itertools mpmath nest-asyncio numpy oauthlib packaging parso "
        "pexpect pickleshare pil pluggy ply prompt-toolkit psutil ptyprocess pure-eval "
        "pyflakes pygments pyparsing pytest scipy six sympy threadpoolctl toml tornado "
        "traitlets tz wcwidth xmltodict yaml").split()
PIP_WHL = sorted(wheelgen.SYSTEM_WHEELS.glob("pip-*.whl"))[-1]


def env(**kw):
    e = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    e.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e.update(kw)
    return e


def timed(cmd, **kw):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(), **kw)
    dt = time.monotonic() - t
    if r.returncode:
        sys.exit(f"{cmd[:3]} failed:\n{r.stdout}\n{r.stderr}")
    return dt, r


# This ext4 has no journal: the inode allocator then skips, one by one, every inode freed
# in the last ~35 s (fs/ext4/ialloc.c recently_deleted(), dirty_expire + 5 s), so creating
# files right after deleting a venv costs several times more.  The cold runs and the
# filesystem limit therefore start >= 36 s after this script's last deletion and keep
# what they create until all of them are done.
SETTLE_S = 36


def delete(work, *paths):
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
    (work / ".deleted").touch()


def settle(work):
    stamp = work / ".deleted"
    if stamp.exists():
        time.sleep(max(0.0, stamp.stat().st_mtime + SETTLE_S - time.time()))


def fresh(work):
    return Path(tempfile.mkdtemp(prefix="b", dir=work)) / "venv"


def pip_install(work, names, wheels_dir, compile_):
    def run():
        v = fresh(work)
        t = time.monotonic()
        timed([PY, "-m", "venv", "--without-pip", str(v)])
        timed([str(v / "bin/python"), str(PIP_WHL / "pip"), "install", "-q", "--no-deps",
               "--no-index", "--no-cache-dir", "--find-links", str(wheels_dir),
               "--compile" if compile_ else "--no-compile", *names])
        dt = time.monotonic() - t
        shutil.rmtree(v.parent)
        return dt
    return run


def materialize(work, lock, cache, mode, compile_=False, keep=None):
    def run():
        v = fresh(work)
        args = [str(SITEFS), "materialize", "-v", "--python", PY, "--cache-dir", str(cache),
                "--link-mode", mode] + (["--compile"] if compile_ else []) + [str(lock), str(v)]
        dt, r = timed(args)
        if keep is None:
            shutil.rmtree(v.parent)
        else:
            keep.append(v.parent)
        return dt, r.stderr.strip()
    return run


def matlimits(*args):
    """One matlimits line as {key: value}."""
    r = subprocess.run([str(MATLIMITS), *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"matlimits {args[:2]} failed:\n{r.stderr}")
    return dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/sitefs-bench")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm and pip runs")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    wdir = work / "wheels"
    if not wdir.is_dir() or len(list(wdir.glob("*.whl"))) < len(PKGS):
        subprocess.run([str(TOP / "tools/install-deps.sh"), "--bench"], check=True)
        shutil.rmtree(wdir, ignore_errors=True)
        subprocess.run([PY, str(TOP / "tools/repack.py"), str(wdir)] +
                       ["python3-" + p for p in PKGS], check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(wdir.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    names = ["%s==%s" % wheelgen.parse_wheel_name(w.name)[:2] for w in wheels]
    nginx = Nginx(wdir, work / "nginx").start()
    try:
        lock = wheelgen.write_pylock(work / "pylock.toml", wheels, nginx.url)
        ncpu = os.cpu_count()
        print(f"{len(wheels)} wheels, {total / 1e6:.1f} MB, nginx on 127.0.0.1, {ncpu} CPUs, "
              f"filesystem {subprocess.run(['stat', '-f', '-c', '%T', str(work)], text=True, capture_output=True).stdout.strip()}")

        # cold: a new cache each run
        # interleaved with the ceiling (inflate + write, matlimits extract), since the
        # filesystem's speed drifts with what else runs on the machine
        colds, lines, made, exts = [], [], [], []
        delete(work, *work.glob("cold*"), *work.glob("lim*"))
        settle(work)
        for i in range(a.runs):
            cache = work / f"cold{i}"
            made.append(cache)
            dt, out = materialize(work, lock, cache, "auto", keep=made)()
            colds.append(dt)
            lines.append(out.splitlines()[-2:])
            lim_dir = Path(tempfile.mkdtemp(prefix="lim", dir=work))
            made.append(lim_dir)
            exts.append(matlimits("extract", lim_dir, *wheels))
        cold = statistics.median(colds)
        ex = sorted(exts, key=lambda e: float(e["seconds"]))[len(exts) // 2]

        # the limits: index bandwidth, inflate, filesystem
        t = time.monotonic()
        urls = [f"{nginx.url}/{w.name}" for w in wheels]
        subprocess.run(["curl", "-sf", "--parallel", "--parallel-max", "8"] +
                       sum((["-o", "/dev/null", u] for u in urls), []), check=True)
        net = total / (time.monotonic() - t)
        inf = matlimits("inflate", *wheels)
        infl, usize = float(inf["mbps"]) * 1e6, int(inf["out_bytes"])
        lim_dir = Path(tempfile.mkdtemp(prefix="lim", dir=work))
        fs = matlimits("write", lim_dir, *wheels)
        delete(work, lim_dir, *made)
        fsl = float(fs["mbps"]) * 1e6
        exl = float(ex["mbps"]) * 1e6

        lim = min(net, infl)
        print(f"\ncold cache (median of {a.runs}), link mode auto: {cold:.2f} s for "
              f"{total / 1e6:.1f} MB of wheels ({usize / 1e6:.0f} MB inflated, "
              f"{inf['files']} files) = {total / cold / 1e6:.0f} MB/s  "
              f"(runs: {', '.join(f'{t:.2f}' for t in colds)})")
        for ln in lines[colds.index(sorted(colds)[len(colds) // 2])]:  # a middle run's
            print(f"  {ln}")
        print(f"  index (curl, 8 parallel):        {net / 1e6:7.0f} MB/s")
        print(f"  inflate (matlimits, {inf['threads']} threads):  {infl / 1e6:7.0f} MB/s of wheel bytes")
        print(f"  filesystem (matlimits write):    {fsl / 1e6:7.0f} MB/s of wheel bytes "
              f"({fs['seconds']} s for {fs['files']} files)")
        print(f"  inflate + write (matlimits extract): {exl / 1e6:4.0f} MB/s of wheel bytes "
              f"(median {ex['seconds']} s; runs: {', '.join(e['seconds'] for e in exts)}): "
              f"the ceiling here, network aside")
        print(f"  bulk throughput / min(index, inflate) = {total / cold / lim:.2f}"
              f"   (/ inflate + write = {total / cold / exl:.2f})")
        if a.cold_only:
            return

        # warm
        cache = work / "warm"
        shutil.rmtree(cache, ignore_errors=True)
        materialize(work, lock, cache, "auto")()
        rows = []
        for mode in ("clone", "hardlink", "copy"):
            try:
                ts = [materialize(work, lock, cache, mode)()[0] for _ in range(a.runs)]
                rows.append((f"materialize --link-mode {mode}", statistics.median(ts)))
            except SystemExit as e:
                rows.append((f"materialize --link-mode {mode}", None))
                print(f"  ({mode}: {str(e).splitlines()[-1]})")
        mat_c = statistics.median(materialize(work, lock, cache, "hardlink", True)()[0]
                                  for _ in range(a.runs))
        pip_nc = statistics.median(pip_install(work, names, wdir, False)() for _ in range(a.runs))
        pip_c = statistics.median(pip_install(work, names, wdir, True)() for _ in range(a.runs))

        print(f"\nwarm cache (median of {a.runs}), vs pip install --no-compile = {pip_nc:.2f} s:")
        for what, t in rows:
            print(f"  {what:38s} " + (f"{t:6.2f} s   {t / pip_nc:5.3f}x pip" if t else "  n/a"))
        print(f"  {'pip install --no-compile':38s} {pip_nc:6.2f} s   1.000x")
        print(f"  {'materialize --compile (hardlink)':38s} {mat_c:6.2f} s   {mat_c / pip_c:5.3f}x "
              f"pip install (compiles) = {pip_c:.2f} s")
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
