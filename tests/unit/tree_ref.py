#!/usr/bin/python3
"""Reference venvs for test_tree: builds small wheels with zipfile, installs
them with `python -m venv --without-pip` + pip 23 (from Debian's wheel), and
prints, per scenario, what the C test needs to rebuild the same tree
(central directories, the kept small files) and what pip produced (every
path with type, mode, size and sha256 or link target).

usage: tree_ref.py WORKDIR        (exit 77 when pip's wheel is missing)

Output lines (fields separated by one space; names in hex):
  scenario <root-hex>
  python <executable> <version> <major> <minor> <stdlib>
  wheel <filename>
  e <name-hex> <mode-octal> <usize> <mtime>
  f <name-hex> <data-hex or ->
  n <path-hex> <d|f|l> <mode-octal> <size> <sha256-hex | target-hex | -> [<content-hex>]
    (content for pyvenv.cfg, RECORD files and bin/ files)
  end
"""
import base64
import calendar
import csv
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

PIP_WHL = "/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl"
REAL = "/usr/share/python-wheels"
DATE = (2021, 3, 4, 5, 6, 8)


def rec(data):
    d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
    return "sha256=" + d, str(len(data))


def make_wheel(path, files, info, record_crlf=False, unlisted=(), dirs=(), extra_rows=()):
    """files: [(name, bytes, mode)]; RECORD written with csv (quoting)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n" if record_crlf else "\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for d in dirs:
            zi = zipfile.ZipInfo(d, DATE)
            zi.external_attr = (0o40755 << 16) | 0x10
            z.writestr(zi, b"")
        for name, data, mode in files:
            zi = zipfile.ZipInfo(name, DATE)
            zi.external_attr = (0o100000 | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
            if name not in unlisted:
                w.writerow([name, *rec(data)])
        for extra in extra_rows:
            w.writerow(extra)
        w.writerow([info + "/RECORD", "", ""])
        zi = zipfile.ZipInfo(info + "/RECORD", DATE)
        zi.external_attr = 0o100644 << 16
        z.writestr(zi, out.getvalue().encode())


def wheel_meta(name, ver, purelib=True):
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n\n".encode(),
            ("Wheel-Version: 1.0\nGenerator: tree_ref\nRoot-Is-Purelib: %s\n"
             "Tag: py3-none-any\n" % ("true" if purelib else "false")).encode())


def build_wheels(d):
    os.makedirs(d, exist_ok=True)
    # demo: every .data key, #!python scripts, wrappers, entry points, extras
    meta, wheel = wheel_meta("demo", "1.0")
    di = "demo-1.0.dist-info"
    make_wheel(os.path.join(d, "demo-1.0-py3-none-any.whl"), [
        ("demo/__init__.py", b"X = 1\n", 0o644),
        ("demo/cli.py", b"def main():\n    return 0\n", 0o644),
        ("demo/tool.sh", b"#!/bin/sh\necho tool\n", 0o755),
        ("demo/unlisted.txt", b"not in RECORD\n", 0o644),
        ("demo-1.0.data/scripts/plain", b"#!python -u\nprint('plain')\n", 0o644),
        ("demo-1.0.data/scripts/execd", b"#!pythonw\nprint('execd')\n", 0o755),
        ("demo-1.0.data/scripts/shell", b"#!/bin/sh\necho hi\n", 0o755),
        ("demo-1.0.data/scripts/envpy", b"#!/usr/bin/env python\nprint(1)\n", 0o755),
        ("demo-1.0.data/scripts/nonl", b"#!python3", 0o644),
        ("demo-1.0.data/scripts/sub/deep", b"#!python\n", 0o755),
        ("demo-1.0.data/scripts/democli", b"#!python\nsetuptools wrapper\n", 0o755),
        ("demo-1.0.data/scripts/democli-script.py", b"#!python\nwrapper\n", 0o644),
        ("demo-1.0.data/purelib/demo/pure.py", b"P = 1\n", 0o644),
        ("demo-1.0.data/platlib/demo/plat.py", b"Q = 1\n", 0o755),
        ("demo-1.0.data/headers/demo.h", b"int demo;\n", 0o644),
        ("demo-1.0.data/data/share/demo/d.txt", b"data\n", 0o644),
        ("demo-1.0.data/data/etc/demo.conf", b"[demo]\n", 0o644),
        ("demo-1.0.data/data/lib64/vialink.txt", b"through lib64 -> lib\n", 0o644),
        ("demo-1.0.data/scripts/crlf", b"#!python\r\nprint('crlf')\r\n", 0o755),
        ("demo/twice.py", b"root version\n", 0o644),
        ("demo-1.0.data/purelib/demo/twice.py", b"purelib version wins\n", 0o644),
        (di + "/METADATA", meta, 0o644),
        (di + "/WHEEL", wheel, 0o644),
        (di + "/entry_points.txt",
         b"[console_scripts]\ndemocli = demo.cli:main\n"
         b"  other=demo.cli:main.sub [extra1, extra2]\n# comment\n\n"
         b"[gui_scripts]\ndemogui = demo.cli:main\n"
         b"[demo.plugins]\nx = demo.cli\n", 0o644),
    ], di, unlisted=("demo/unlisted.txt",), dirs=("demo/", "demo/emptydir/"),
       extra_rows=[("demo/not_in_zip.py", "sha256=AAAA", "7"), ("demo/short_row.py",)])

    # a namespace package split over two wheels, and a path both write
    for n in ("a", "b"):
        meta, wheel = wheel_meta("ns" + n, "2.0")
        di = f"ns{n}-2.0.dist-info"
        make_wheel(os.path.join(d, f"ns{n}-2.0-py3-none-any.whl"), [
            (f"nsp/{n}/__init__.py", f"NAME = '{n}'\n".encode(), 0o644),
            ("nsp/common.txt", f"written by {n}\n".encode(), 0o644),
            (di + "/METADATA", meta, 0o644),
            (di + "/WHEEL", wheel, 0o644),
        ], di)

    # underscores and case in the name (headers dir), platlib root, a CRLF
    # RECORD with quoted fields
    meta, wheel = wheel_meta("My_Pkg", "0.1", purelib=False)
    di = "My_Pkg-0.1.dist-info"
    make_wheel(os.path.join(d, "My_Pkg-0.1-cp311-cp311-linux_x86_64.whl"), [
        ("my_pkg/__init__.py", b"", 0o644),
        ("my_pkg/a,b \"q\".txt", b"odd name\n", 0o644),
        ("my_pkg/_native.so", b"\x7fELF fake", 0o755),
        ("My_Pkg-0.1.data/headers/sub/my.h", b"int my;\n", 0o644),
        ("My_Pkg-0.1.data/data/share/my pkg/x,y.txt", b"xy\n", 0o644),
        (di + "/METADATA", meta, 0o644),
        (di + "/WHEEL", wheel, 0o644),
        (di + "/entry_points.txt", b"[console_scripts]\nmy-tool = my_pkg:main\n", 0o644),
    ], di, record_crlf=True)

    # pip's versioned-launcher special cases; one name in both groups
    meta, wheel = wheel_meta("fakepip", "9.0")
    di = "fakepip-9.0.dist-info"
    make_wheel(os.path.join(d, "fakepip-9.0-py3-none-any.whl"), [
        ("fakepip/__init__.py", b"def main(): pass\n", 0o644),
        (di + "/METADATA", meta, 0o644),
        (di + "/WHEEL", wheel, 0o644),
        (di + "/entry_points.txt",
         b"[console_scripts]\npip3.9 = fakepip:old\npip = fakepip:main\n"
         b"easy_install-3.5 = fakepip:old\neasy_install = fakepip:ei\n"
         b"pipx = fakepip:x\nboth = fakepip:c\n"
         b"[gui_scripts]\nboth = fakepip:g\n", 0o644),
    ], di)


def want(name):
    """tree_wants_file, in Python."""
    top, _, rest = name.partition("/")
    if top.endswith(".dist-info") and rest in ("RECORD", "WHEEL", "entry_points.txt",
                                                 "METADATA"):
        return True
    parts = name.split("/", 2)
    return (len(parts) > 2 and parts[0].endswith(".data") and parts[1] == "scripts"
            and parts[2] != "")


def dump_wheel(path):
    print("wheel", os.path.basename(path))
    with zipfile.ZipFile(path) as z:
        for zi in z.infolist():
            mode = (zi.external_attr >> 16) if zi.create_system == 3 else 0
            mtime = calendar.timegm(zi.date_time + (0, 0, 0))
            print("e", zi.filename.encode().hex(), "%o" % mode, zi.file_size, mtime)
        for zi in z.infolist():
            if want(zi.filename) and not zi.filename.endswith("/"):
                print("f", zi.filename.encode().hex(), z.read(zi).hex() or "-")


def dump_tree(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                t = os.readlink(p)
                out.append((rel, "l", st.st_mode, len(t.encode()), t.encode().hex()))
            elif os.path.isdir(p):
                out.append((rel, "d", st.st_mode, 0, "-"))
            else:
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
                full = ""
                if (rel == "pyvenv.cfg" or rel.endswith(".dist-info/RECORD")
                        or rel.startswith("bin/")):
                    with open(p, "rb") as f:
                        full = f.read().hex() or "-"
                out.append((rel, "f", st.st_mode, st.st_size, h + (" " + full if full else "")))
        dirnames[:] = [x for x in dirnames if not os.path.islink(os.path.join(dirpath, x))]
    for rel, k, mode, size, x in sorted(out):
        print("n", rel.encode().hex(), k, "%o" % mode, size, x)


def install(root, wheels, finddirs):
    """Starts venv + one pip run installing wheels in order; returns the Popen."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PIP_CONFIG_FILE"] = os.devnull
    # by name, as the wheel file's name part: pip then knows the project by
    # the same name as for `pip install X.whl` (headers dir) but, unlike a
    # path install, writes no direct_url.json
    names = [os.path.basename(whl).split("-")[0].replace("_", "-") for whl in wheels]
    cmd = [os.path.join(root, "bin", "python"), PIP_WHL + "/pip", "install", "--no-deps",
           "--no-index", "--no-compile", "--no-warn-script-location",
           "--disable-pip-version-check"]
    for d in finddirs:
        cmd += ["--find-links", d]
    script = "/usr/bin/python3 -m venv --without-pip \"$0\" && exec \"$@\""
    return subprocess.Popen(["/bin/sh", "-c", script, root] + cmd + names, env=env,
                            stdout=subprocess.PIPE, text=True)


def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def scenario(root, wheels, proc):
    """Prints one scenario, its wheels in the order pip installed them."""
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise SystemExit("pip failed for " + root)
    prefix = "Installing collected packages: "
    order = [canon(x) for line in out.splitlines() if line.startswith(prefix)
             for x in line[len(prefix):].split(", ")]
    by_name = {canon(os.path.basename(w).split("-")[0]): w for w in wheels}
    assert sorted(order) == sorted(by_name), (order, by_name)
    wheels = [by_name[n] for n in order]
    py = subprocess.run(["/usr/bin/python3", "-c",
                         "import platform, sys, sysconfig; print(platform.python_version(), "
                         "sys.version_info[0], sys.version_info[1], "
                         "sysconfig.get_path('stdlib'))"],
                        check=True, capture_output=True, text=True).stdout.split()
    print("scenario", root.encode().hex())
    print("python", "/usr/bin/python3", *py)
    for whl in wheels:
        dump_wheel(whl)
    dump_tree(root)
    print("end")


def main():
    if not os.path.exists(PIP_WHL) or not os.path.exists("/usr/bin/python3"):
        print("pip wheel or /usr/bin/python3 missing", file=sys.stderr)
        return 77
    work = sys.argv[1]
    wd = os.path.join(work, "wheels")
    build_wheels(wd)
    w = lambda n: os.path.join(wd, n)
    mine = [w("demo-1.0-py3-none-any.whl"), w("nsa-2.0-py3-none-any.whl"),
            w("nsb-2.0-py3-none-any.whl"), w("My_Pkg-0.1-cp311-cp311-linux_x86_64.whl"),
            w("fakepip-9.0-py3-none-any.whl")]
    real = [os.path.join(REAL, f) for f in sorted(os.listdir(REAL)) if f.endswith(".whl")]
    runs = [(os.path.join(work, "v e n v"), mine, [wd]),
            (os.path.join(work, "plain"), [mine[0]] + real, [wd, REAL]),
            (os.path.join(work, "l" * 130), [mine[0]], [wd])]
    procs = [install(*r) for r in runs]
    for (root, wheels, _), proc in zip(runs, procs):
        scenario(root, wheels, proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
