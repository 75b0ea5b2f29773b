"""Deterministic wheel builder for sitefs tests, demos and benchmarks.

Stdlib only.  Wheels are built with zipfile and a fixed timestamp, so the same
input always gives the same bytes (and the same sha256).

    make_wheel(dir, name, version, files, ...)   -> Path of a .whl
    make_cext_wheel(dir, ...)                    -> a cp311 C extension wheel
    system_wheels(dir)                           -> pip/setuptools/wheel from Debian
    write_pylock(path, wheels, base_url)         -> a PEP 751 pylock.toml
    entry_span(wheel, entry), cd_range(wheel)    -> byte ranges inside a wheel
"""

import base64
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path

DATE = (2020, 2, 2, 12, 0, 0)
SYSTEM_WHEELS = Path("/usr/share/python-wheels")
DEPS_HINT = "run the project's dependency installer (it installs python3-dev)"


def escape(name):
    """Distribution name as it appears in wheel filenames (PEP 427)."""
    return re.sub(r"[^\w\d.]+", "_", name, flags=re.UNICODE)


def normalize(name):
    """PEP 503 normalized project name (what pylock.toml and pip list use)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split(value):
    """files values: bytes | (bytes, mode) | (bytes, mode, 'stored'|'deflated')."""
    if isinstance(value, (bytes, str)):
        value = (value,)
    data = value[0].encode() if isinstance(value[0], str) else value[0]
    mode = value[1] if len(value) > 1 and value[1] is not None else 0o644
    comp = value[2] if len(value) > 2 else None
    return data, mode, comp


def make_wheel(directory, name, version, files, entry_points=None, data=None,
               root_is_purelib=True, tag="py3-none-any", record_hashes=True,
               compression="deflated", requires=(), metadata_extra="",
               record_override=None, dirs=()):
    """Build <escaped name>-<version>-<tag>.whl in directory and return its Path.

    files: {archive path: bytes | (bytes, mode) | (bytes, mode, compression)}
    entry_points: {group: {name: "module:func"}} -> entry_points.txt
    data: {scheme key ("scripts", "data", "purelib", "headers", ...): files}
          -> <name>-<version>.data/<key>/...
    compression: default per-file compression, "deflated" or "stored".
    record_hashes: False writes RECORD rows without hash and size.
    record_override: {archive path: "sha256=..."} to write a wrong hash on purpose.
    dirs: directory entries ("pkg/empty/") to add to the zip (installers skip them).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = f"{escape(name)}-{version}"
    distinfo = f"{base}.dist-info"
    entries = []  # (path, data, mode, compression)
    for path, value in files.items():
        entries.append((path, *_split(value)))
    for key, kfiles in (data or {}).items():
        for path, value in kfiles.items():
            entries.append((f"{base}.data/{key}/{path}", *_split(value)))

    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
            f"Summary: {name} test package"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    meta_text = "\n".join(meta) + "\n" + metadata_extra + "\n"
    wheel_text = (f"Wheel-Version: 1.0\nGenerator: sitefs-wheelgen\n"
                  f"Root-Is-Purelib: {'true' if root_is_purelib else 'false'}\n")
    wheel_text += "".join(f"Tag: {t}\n" for t in _expand_tag(tag))
    entries.append((f"{distinfo}/METADATA", meta_text.encode(), 0o644, None))
    entries.append((f"{distinfo}/WHEEL", wheel_text.encode(), 0o644, None))
    if entry_points:
        ep = ""
        for group, items in entry_points.items():
            ep += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) + "\n"
        entries.append((f"{distinfo}/entry_points.txt", ep.encode(), 0o644, None))
    top = sorted({p.split("/")[0] if "/" in p else p.split(".")[0] for p in files})
    entries.append((f"{distinfo}/top_level.txt", "".join(t + "\n" for t in top).encode(),
                    0o644, None))

    rows = []
    for path, body, _, _ in entries:
        if record_override and path in record_override:
            rows.append(f"{path},{record_override[path]},{len(body)}")
        elif record_hashes:
            rows.append(f"{path},{record_hash(body)},{len(body)}")
        else:
            rows.append(f"{path},,")
    rows.append(f"{distinfo}/RECORD,,")
    entries.append((f"{distinfo}/RECORD", ("\n".join(rows) + "\n").encode(), 0o644, None))

    out = directory / f"{base}-{tag}.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path in dirs:
            info = zipfile.ZipInfo(path.rstrip("/") + "/", DATE)
            info.create_system = 3
            info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
            zf.writestr(info, b"")
        for path, body, mode, comp in entries:
            info = zipfile.ZipInfo(path, DATE)
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | mode) << 16
            comp = comp or compression
            info.compress_type = zipfile.ZIP_STORED if comp == "stored" else zipfile.ZIP_DEFLATED
            zf.writestr(info, body)
    return out


def _expand_tag(tag):
    py, abi, plat = tag.split("-")
    return [f"{a}-{b}-{c}" for a in py.split(".") for b in abi.split(".") for c in plat.split(".")]


CEXT_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *add(PyObject *self, PyObject *args)
{
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b))
        return NULL;
    return PyLong_FromLong(a + b);
}

static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, "Add two integers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "@NAME@", NULL, -1, methods};

PyMODINIT_FUNC PyInit_@NAME@(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m)
        PyModule_AddStringConstant(m, "GREETING", "hello from C");
    return m;
}
"""


def python_facts(python="/usr/bin/python3"):
    """include dir, EXT_SUFFIX and the cpXY tag of an interpreter."""
    code = ("import sysconfig, sys; print(sysconfig.get_paths()['include']); "
            "print(sysconfig.get_config_var('EXT_SUFFIX')); "
            "print('cp%d%d' % sys.version_info[:2])")
    inc, suffix, cp = subprocess.run([python, "-c", code], check=True, text=True,
                                     capture_output=True).stdout.split()
    return inc, suffix, cp


def make_cext_wheel(directory, name="cext", version="1.0", python="/usr/bin/python3"):
    """Compile a tiny extension module with gcc and wrap it in a platlib wheel
    tagged for that interpreter (cp311-cp311-linux_x86_64 here)."""
    inc, suffix, cp = python_facts(python)
    if not (Path(inc) / "Python.h").exists():
        raise RuntimeError(f"{inc}/Python.h not found: C extension wheels need the Python "
                           f"headers; {DEPS_HINT}")
    if not shutil.which("gcc"):
        raise RuntimeError(f"gcc not found; {DEPS_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.c"
        so = Path(tmp) / f"{name}{suffix}"
        src.write_text(CEXT_SOURCE.replace("@NAME@", name))
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-g0", "-Wl,--build-id=none",
                        f"-I{inc}", "-o", str(so), str(src)], check=True)
        body = so.read_bytes()
    plat = "linux_" + os.uname().machine
    return make_wheel(directory, name, version,
                      {f"{name}{suffix}": (body, 0o755),
                       f"{name}_helpers.py": b"def twice(x):\n    return 2 * x\n"},
                      root_is_purelib=False, tag=f"{cp}-{cp}-{plat}")


def system_wheels(directory, names=("pip", "setuptools", "wheel")):
    """Copy Debian's pip/setuptools/wheel wheels (python3-*-whl) into directory."""
    out = []
    for n in names:
        found = sorted(SYSTEM_WHEELS.glob(f"{n}-*.whl"))
        if not found:
            raise RuntimeError(f"no {n} wheel in {SYSTEM_WHEELS}: apt-get install "
                               f"python3-pip-whl python3-setuptools-whl python3-wheel-whl")
        dst = Path(directory) / found[-1].name
        shutil.copyfile(found[-1], dst)
        out.append(dst)
    return out


def parse_wheel_name(filename):
    """-> (normalized name, version, tag) from a wheel filename."""
    parts = Path(filename).name[:-len(".whl")].split("-")
    return normalize(parts[0]), parts[1], "-".join(parts[-3:])


def _toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pylock_text(wheels, base_url, extra="", created_by="sitefs-tests", requested=()):
    """PEP 751 text for wheels (paths; several wheels of one package are grouped).
    requested: normalized names marked top-level ([packages.tool.sitefs] requested)."""
    base_url = base_url.rstrip("/")
    packages = {}
    for w in wheels:
        w = Path(w)
        name, version, _ = parse_wheel_name(w.name)
        packages.setdefault((name, version), []).append(w)
    out = ['lock-version = "1.0"', f"created-by = {_toml_str(created_by)}",
           'requires-python = ">=3.8"', ""]
    for (name, version), ws in packages.items():
        out += ["[[packages]]", f"name = {_toml_str(name)}", f"version = {_toml_str(version)}",
                "wheels = ["]
        for w in ws:
            out.append(f"  {{name = {_toml_str(w.name)}, url = {_toml_str(base_url + '/' + w.name)}, "
                       f"size = {w.stat().st_size}, hashes = {{sha256 = {_toml_str(sha256_file(w))}}}}},")
        out += ["]", ""]
        if name in requested:
            out += ["[packages.tool.sitefs]", "requested = true", ""]
    return "\n".join(out) + extra


def write_pylock(path, wheels, base_url, extra="", created_by="sitefs-tests", requested=()):
    """Write a pylock.toml for wheels served at base_url/<filename>; returns path.
    extra: raw TOML appended verbatim (for hand-written edge-case packages)."""
    path = Path(path)
    path.write_text(pylock_text(wheels, base_url, extra, created_by, requested))
    return path


def entry_span(wheel, entry):
    """(start, end) byte range of entry's local header + compressed data."""
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(entry)
    with open(wheel, "rb") as f:
        f.seek(info.header_offset)
        hdr = f.read(30)
    name_len = int.from_bytes(hdr[26:28], "little")
    extra_len = int.from_bytes(hdr[28:30], "little")
    return info.header_offset, info.header_offset + 30 + name_len + extra_len + info.compress_size


def data_span(wheel, entry):
    """(start, end) of entry's compressed data alone."""
    with zipfile.ZipFile(wheel) as zf:
        csize = zf.getinfo(entry).compress_size
    end = entry_span(wheel, entry)[1]
    return end - csize, end


def metadata_spans(wheel, tail=65536):
    """What a mount may read: the last `tail` bytes (or the whole central directory
    if it starts earlier) and the dist-info entries."""
    start, size = cd_range(wheel)
    return [(max(0, min(size - tail, start)), size)] + [entry_span(wheel, n)
                                                       for n in distinfo_names(wheel)]


def distinfo_names(wheel):
    with zipfile.ZipFile(wheel) as zf:
        return [i.filename for i in zf.infolist()
                if i.filename.split("/")[0].endswith(".dist-info")]


def cd_range(wheel):
    """(start, end) of the central directory + end records (end = file size)."""
    with zipfile.ZipFile(wheel) as zf:
        start = zf.start_dir
    return start, Path(wheel).stat().st_size
