#!/usr/bin/env python3
"""Repack Debian python3-* packages into wheels (there is no PyPI here).

For each Debian package, the files it installs under dist-packages become a
wheel: its .dist-info or .egg-info supplies name, version and METADATA; a
compiled module makes it a cp3X-cp3X-linux_<arch> wheel, else py3-none-any.
Console scripts come from the egg-info's entry_points.txt when present.
Deterministic: sorted entries, fixed timestamps.

    repack.py OUTDIR PKG[+PKG...] [...]      prints one wheel path per line

Debian splits some projects across packages (python3-pandas holds the
egg-info and the Python files, python3-pandas-lib the extension modules):
"python3-pandas+python3-pandas-lib" merges their files into one wheel, with
the metadata of whichever part has a .dist-info/.egg-info.  Symlinks under
dist-packages (matplotlib's mpl-data -> /usr/share/...) are followed: the
wheel holds the files they point at, under the symlink's name.
"""
import base64
import hashlib
import os
import platform
import re
import subprocess
import sys
import sysconfig
import zipfile

SITE = "/usr/lib/python3/dist-packages"
EPOCH = (2024, 1, 1, 0, 0, 0)


def dpkg_files(pkgs):
    out = []
    for pkg in pkgs.split("+"):
        text = subprocess.run(["dpkg", "-L", pkg], check=True, capture_output=True,
                              text=True).stdout
        out += [p for p in text.splitlines() if p.startswith(SITE + "/")]
    return out


def expand_links(files):
    """Symlinked directories become the files below their targets (same rel name)."""
    out = []
    for p in files:
        if os.path.islink(p) and os.path.isdir(p):
            for dirpath, _, names in os.walk(p, followlinks=True):
                out += [os.path.join(dirpath, n) for n in names]
        else:
            out.append(p)
    return out


def norm(name):
    return re.sub(r"[-_.]+", "_", name)


def parse_meta(text):
    name = re.search(r"^Name: *(.+)$", text, re.M).group(1).strip()
    version = re.search(r"^Version: *(.+)$", text, re.M).group(1).strip()
    return name, version


def repack(pkg, outdir):
    files = expand_links(dpkg_files(pkg))
    infos = sorted({os.path.relpath(p, SITE).split("/")[0] for p in files
                    if re.search(r"\.(dist|egg)-info(/|$)", p)})
    if not infos:
        raise SystemExit(f"{pkg}: no .dist-info or .egg-info under {SITE}")
    info = infos[0]
    infodir = os.path.join(SITE, info)
    if info.endswith(".dist-info"):
        meta = open(os.path.join(infodir, "METADATA"), encoding="utf-8").read()
    else:
        meta_path = os.path.join(infodir, "PKG-INFO") if os.path.isdir(infodir) else infodir
        meta = open(meta_path, encoding="utf-8").read()
    name, version = parse_meta(meta)
    version = re.sub(r"[^A-Za-z0-9.+!]", ".", version)
    payload = []
    compiled = False
    for p in sorted(set(files)):
        rel = os.path.relpath(p, SITE)
        if (not os.path.isfile(p) or "__pycache__" in rel
                or rel.split("/")[0] in infos or rel.endswith(".pth")):
            continue
        compiled |= rel.endswith(".so")
        payload.append(rel)
    if compiled:
        impl = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        tag = f"{impl}-{impl}-{plat}"
    else:
        tag = "py3-none-any"
    di = f"{norm(name)}-{version}.dist-info"
    whl = os.path.join(outdir, f"{norm(name)}-{version}-{tag}.whl")
    record = []

    def add(zf, arc, data, mode=0o644):
        zi = zipfile.ZipInfo(arc, EPOCH)
        zi.external_attr = (0o100000 | mode) << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(zi, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")

    with zipfile.ZipFile(whl, "w") as zf:
        for rel in payload:
            p = os.path.join(SITE, rel)
            mode = 0o755 if os.stat(p).st_mode & 0o111 else 0o644
            add(zf, rel, open(p, "rb").read(), mode)
        add(zf, f"{di}/METADATA", meta.encode())
        root = "false" if compiled else "true"
        add(zf, f"{di}/WHEEL", f"Wheel-Version: 1.0\nGenerator: sitefs-repack\n"
            f"Root-Is-Purelib: {root}\nTag: {tag}\n".encode())
        ep = os.path.join(infodir, "entry_points.txt")
        if os.path.isfile(ep):
            add(zf, f"{di}/entry_points.txt", open(ep, "rb").read())
        record.append(f"{di}/RECORD,,")
        zi = zipfile.ZipInfo(f"{di}/RECORD", EPOCH)
        zi.external_attr = 0o100644 << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(zi, "\n".join(record) + "\n")
    return whl


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    for pkg in sys.argv[2:]:
        print(repack(pkg, sys.argv[1]))


if __name__ == "__main__":
    main()
