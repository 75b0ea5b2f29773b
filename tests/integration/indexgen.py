"""Local simple-repository indexes for the resolver tests and the benchmark.

    build_index(root, releases) writes, under root:
      files/<wheel>, files/<wheel>.metadata      wheels and their PEP 658 metadata
      html/<project>/index.html                  PEP 503 with data-core-metadata (PEP 714)
      nometa/<project>/index.html                PEP 503 without metadata files
      json/<project>/index.json + index.html     PEP 691 (nginx picks by Accept)
      flat/index.html                            a --find-links page of every wheel

A release is Rel(name, version, requires=[...], yanked=False, requires_python=None,
extras_files=None, sdist_only=False, tag="py3-none-any").
"""

import hashlib
import html
import json
import re
import sys
from collections import namedtuple
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import wheelgen  # noqa: E402

Rel = namedtuple("Rel", "name version requires yanked requires_python sdist_only tag",
                 defaults=((), False, None, False, "py3-none-any"))


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def build_index(root, releases):
    root = Path(root)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    by_project = {}
    for r in releases:
        norm = wheelgen.normalize(r.name)
        if r.sdist_only:
            p = files / f"{wheelgen.escape(r.name)}-{r.version}.tar.gz"
            p.write_bytes(b"not really an sdist\n")
        else:
            mod = wheelgen.escape(r.name).lower()
            extras = sorted(set(re.findall(r"extra == '([^']+)'", " ".join(r.requires))))
            provides = "".join(f"Provides-Extra: {e}\n" for e in extras)
            p = wheelgen.make_wheel(files, r.name, r.version, {
                f"{mod}/__init__.py": f"__version__ = {r.version!r}\n".encode(),
            }, requires=list(r.requires), tag=r.tag,
                metadata_extra=provides + (f"Requires-Python: {r.requires_python}\n"
                                           if r.requires_python else ""))
            import zipfile
            with zipfile.ZipFile(p) as zf:
                meta = zf.read(f"{wheelgen.escape(r.name)}-{r.version}.dist-info/METADATA")
            (files / (p.name + ".metadata")).write_bytes(meta)
        by_project.setdefault(norm, []).append((r, p))

    for kind in ("html", "nometa", "json"):
        (root / kind).mkdir(exist_ok=True)
    for norm, items in sorted(by_project.items()):
        anchors_meta, anchors_plain, jfiles = [], [], []
        for r, p in items:
            sha = _sha(p)
            href = f"../../files/{p.name}#sha256={sha}"
            attrs = ""
            if r.requires_python:
                attrs += f' data-requires-python="{html.escape(r.requires_python)}"'
            if r.yanked:
                attrs += ' data-yanked=""'
            meta_attr = ""
            jmeta = False
            if p.suffix == ".whl":
                msha = _sha(str(p) + ".metadata")
                meta_attr = f' data-core-metadata="sha256={msha}" data-dist-info-metadata="sha256={msha}"'
                jmeta = {"sha256": msha}
            anchors_meta.append(f'<a href="{href}"{attrs}{meta_attr}>{p.name}</a><br/>')
            anchors_plain.append(f'<a href="{href}"{attrs}>{p.name}</a><br/>')
            jf = {"filename": p.name, "url": f"../../files/{p.name}", "hashes": {"sha256": sha},
                  "core-metadata": jmeta, "dist-info-metadata": jmeta, "size": p.stat().st_size}
            if r.requires_python:
                jf["requires-python"] = r.requires_python
            if r.yanked:
                jf["yanked"] = "broken"
            jfiles.append(jf)
        page = ("<!DOCTYPE html><html><head><meta name=\"pypi:repository-version\" "
                "content=\"1.0\"><title>Links for {n}</title></head><body><h1>Links for {n}</h1>\n"
                "{a}\n</body></html>\n")
        for kind, anchors in (("html", anchors_meta), ("nometa", anchors_plain),
                              ("json", anchors_meta)):
            d = root / kind / norm
            d.mkdir(exist_ok=True)
            (d / "index.html").write_text(page.format(n=norm, a="\n".join(anchors)))
        (root / "json" / norm / "index.json").write_text(json.dumps(
            {"meta": {"api-version": "1.1"}, "name": norm, "files": jfiles}, indent=1))
    flat = root / "flat"
    flat.mkdir(exist_ok=True)
    links = "\n".join(f'<a href="../files/{p.name}">{p.name}</a>'
                      for items in by_project.values() for _, p in items if p.suffix == ".whl")
    (flat / "index.html").write_text(f"<html><body>\n{links}\n</body></html>\n")
    return root


NGINX_EXTRA = r"""
    map $http_accept $simple_index {
        "~application/vnd\.pypi\.simple\.v1\+json" index.json;
        default index.html;
    }
    types {
        text/html html;
        application/vnd.pypi.simple.v1+json json;
    }
"""
