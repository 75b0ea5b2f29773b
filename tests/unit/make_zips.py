#!/usr/bin/python3
"""Writes zips made by Python's zipfile (the writer of most wheels) into the
directory given as argv[1], for test_zipcd to cross-check against libzip.
Deterministic: fixed timestamps and seeded data."""
import io
import os
import random
import sys
import zipfile

DT = (2021, 3, 4, 5, 6, 8)


def info(name, mode=0o100644, method=zipfile.ZIP_DEFLATED, dt=DT):
    zi = zipfile.ZipInfo(name, dt)
    zi.compress_type = method
    zi.external_attr = mode << 16
    return zi


def basic(path):
    rnd = random.Random(1)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info("pkg/", 0o40755, zipfile.ZIP_STORED), b"")
        zf.writestr(info("pkg/__init__.py"), b"# empty\n" * 100)
        zf.writestr(info("pkg/data.bin", method=zipfile.ZIP_STORED),
                    bytes(rnd.getrandbits(8) for _ in range(5000)))
        zf.writestr(info("pkg/tool", 0o100755), b"#!/bin/sh\necho hi\n")
        zf.writestr(info("pkg/empty.txt"), b"")
        zf.writestr(info("pkg/caf\u00e9.txt", dt=(1999, 12, 31, 23, 59, 58)), b"utf-8 name")
        zf.writestr(info("pkg-1.0.dist-info/RECORD"), b"pkg/__init__.py,,\n")
        zi = zipfile.ZipInfo("dosfile.txt", DT)
        zi.create_system = 0  # made on MS-DOS: no Unix mode
        zf.writestr(zi, b"dos")
        zf.comment = b"a zip comment"


def big(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(info("big.txt"), b"".join(b"line %d\n" % i for i in range(600000)))
        zf.writestr(info("small.txt"), b"small")


def many(path):
    # More than 0xFFFF entries: zipfile writes zip64 end records.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(66000):
            zf.writestr(info("m/%05d" % i, method=zipfile.ZIP_STORED), b"%d" % i)


def forced64(path):
    # Zip64 extra fields in the local headers (the central directory has none).
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("a.txt", "b/c.txt"):
            with zf.open(info(name), "w", force_zip64=True) as f:
                f.write(name.encode() * 1000)


class Unseekable(io.RawIOBase):
    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


def descriptor(path):
    # An unseekable output makes zipfile use data descriptors (flag bit 3).
    with open(path, "wb") as raw, zipfile.ZipFile(Unseekable(raw), "w") as zf:
        zf.writestr(info("d/one.txt"), b"one " * 500)
        zf.writestr(info("d/two.bin", method=zipfile.ZIP_STORED), b"two")


def main():
    out = sys.argv[1]
    for name, fn in (("basic", basic), ("big", big), ("many", many),
                     ("forced64", forced64), ("descriptor", descriptor)):
        fn(os.path.join(out, name + ".zip"))


if __name__ == "__main__":
    main()
