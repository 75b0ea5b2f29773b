#!/usr/bin/env python3
"""Write a PEP 751 pylock.toml for a directory of wheels served at a URL.

    mklock.py WHEELDIR BASE_URL [-o pylock.toml]

One [[packages]] per wheel (name and version from the filename), each with
the wheel's url, size and sha256.  Used by the demo and the benchmarks.
"""
import argparse
import hashlib
import os
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheeldir")
    ap.add_argument("base_url")
    ap.add_argument("-o", "--output")
    a = ap.parse_args()
    out = ['lock-version = "1.0"', 'created-by = "sitefs-mklock"', ""]
    for fn in sorted(os.listdir(a.wheeldir)):
        if not fn.endswith(".whl"):
            continue
        path = os.path.join(a.wheeldir, fn)
        data = open(path, "rb").read()
        name, version = fn.split("-")[:2]
        name = re.sub(r"[-_.]+", "-", name).lower()
        out += [
            "[[packages]]",
            f'name = "{name}"',
            f'version = "{version}"',
            "wheels = [",
            f'  {{ name = "{fn}", url = "{a.base_url.rstrip("/")}/{fn}", size = {len(data)}, '
            f'hashes = {{ sha256 = "{hashlib.sha256(data).hexdigest()}" }} }},',
            "]",
            "",
        ]
    text = "\n".join(out)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
