"""sitefs lock and sitefs run against local indexes (nginx: HTML with PEP 658 files,
HTML without them, PEP 691 JSON by content negotiation, a find-links page), compared
with pip's choice on the same index."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (PIP_WHL, PY, Nginx, clean_env, run_sitefs, short_dir,
                      stop)
import indexgen
from indexgen import Rel

GRAPH = [
    Rel("alpha", "1.0", ["beta>=1.0"]),
    Rel("alpha", "2.0", ["beta>=2.0", "gamma[extra1]>=1.0"]),
    Rel("beta", "1.0"),
    Rel("beta", "2.0", ["delta<2; python_version >= '3'", "epsilon; python_version < '3'"]),
    # newest beta needs a delta that zeta forbids: backtrack to beta 2.0
    Rel("beta", "2.1", ["delta>=2"]),
    Rel("gamma", "1.0", ["eta; extra == 'extra1'", "theta; extra == 'other'"]),
    Rel("gamma", "1.1b1"),  # pre-release: not without --pre
    Rel("delta", "1.0"), Rel("delta", "1.5"), Rel("delta", "2.0"),
    Rel("epsilon", "1.0"),
    Rel("eta", "1.0"), Rel("eta", "1.1", yanked=True),
    Rel("theta", "1.0"),
    Rel("zeta", "1.0", ["delta<2"]),
    Rel("onlypre", "1.0a1"), Rel("onlypre", "0.9b2"),
    Rel("newpy", "1.0"), Rel("newpy", "2.0", requires_python=">=4"),
    Rel("Mixed_Case-Name", "1.0", ["delta==1.0"]),
    Rel("cx", "1.0", ["cy<2"]), Rel("cz", "1.0", ["cy>=2"]), Rel("cy", "1.0"), Rel("cy", "2.0"),
    Rel("sdonly", "1.0", sdist_only=True),
    Rel("local", "1.0+cpu"), Rel("local", "0.9"),
    Rel("post", "1.0"), Rel("post", "1.0.post1"), Rel("post", "1.0.dev3"),
    Rel("tilde", "1.4.2"), Rel("tilde", "1.5.0"), Rel("tilde", "2.0"),
]


class IndexNginx(Nginx):
    def config(self):
        conf = super().config()
        conf = conf.replace("    server {", indexgen.NGINX_EXTRA + "    server {", 1)
        return conf.replace("location / { }",
                            "location / { }\n        location /json/ { index $simple_index; }")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = indexgen.build_index(tmp_path_factory.mktemp("index"), GRAPH)
    server = IndexNginx(root, tmp_path_factory.mktemp("idxnginx")).start()
    server.root_dir = root
    yield server
    server.stop()


def lock(index, *args, kind="html", cache=None, check=True, extra=()):
    args = [str(a) for a in args]
    cmd = ["lock", "--python", PY, "--cache-dir", str(cache or short_dir("sfscache"))]
    if kind:
        cmd += ["--index-url", f"{index.url}/{kind}"]
    r = run_sitefs(*cmd, *extra, *args)
    if check and r.returncode:
        pytest.fail(f"sitefs lock {args} exited {r.returncode}:\n{r.stderr}")
    return r


def picked(toml_text):
    """{name: version} from a lock."""
    out = {}
    for m in re.finditer(r'^name = "([^"]+)"\nversion = "([^"]+)"', toml_text, re.M):
        out[m.group(1)] = m.group(2)
    return out


def pip_picks(index, reqs, tmp_path, kind="nometa", extra=()):
    """pip's choice.  Without PEP 658 files: pip 23.0.1 rejects a wheel whose
    .metadata spells the project name unnormalized (\"Mixed_Case-Name\")."""
    if not PIP_WHL:
        pytest.skip("no pip wheel in /usr/share/python-wheels")
    report = tmp_path / "report.json"
    env = clean_env()
    env.pop("PIP_NO_INDEX", None)
    r = subprocess.run([PY, str(PIP_WHL[-1] / "pip"), "install", "--dry-run", "--ignore-installed",
                        "--no-cache-dir", "--quiet", "--report", str(report),
                        "--index-url", f"{index.url}/{kind}", *extra, *reqs],
                       capture_output=True, text=True, env=env, timeout=300)
    if r.returncode:
        return None, r.stderr
    data = json.loads(report.read_text())
    return {i["metadata"]["name"].lower().replace("_", "-").replace(".", "-"):
            i["metadata"]["version"] for i in data["install"]}, r.stderr


SCENARIOS = [
    ["alpha", "zeta"],           # extras, markers, yanked, pre-release, backtracking
    ["alpha<2"],
    ["onlypre"],                 # only pre-releases: taken
    ["newpy"],                   # data-requires-python
    ["eta==1.1"],                # pinned yanked
    ["MIXED.case_name"],
    ["local", "post"],
    ["tilde~=1.4"],
    ["gamma[extra1,other]"],
]


@pytest.mark.parametrize("reqs", SCENARIOS, ids=lambda r: "+".join(r))
def test_lock_agrees_with_pip(index, reqs, tmp_path):
    ours = picked(lock(index, *reqs).stdout)
    theirs, err = pip_picks(index, reqs, tmp_path)
    assert theirs is not None, f"pip failed: {err}"
    assert ours == theirs


@pytest.mark.parametrize("kind", ["nometa", "json"])
def test_index_variants_agree(index, kind):
    base = picked(lock(index, "alpha", "zeta").stdout)
    assert picked(lock(index, "alpha", "zeta", kind=kind).stdout) == base


def test_find_links(index, tmp_path):
    # a directory and a page; no index at all
    r = lock(index, "alpha", "zeta", kind=None,
             extra=["--no-index", "--find-links", str(index.root_dir / "files")])
    assert picked(r.stdout)["alpha"] == "2.0"
    assert 'path = "' in r.stdout
    r = lock(index, "alpha", "zeta", kind=None,
             extra=["--no-index", "--find-links", f"{index.url}/flat/"])
    assert picked(r.stdout)["beta"] == "2.0"
    assert f'url = "{index.url}/files/' in r.stdout


def test_lock_deterministic_and_mountable(index, tmp_path, mount):
    cache = tmp_path / "cache"
    a = lock(index, "alpha", "zeta", cache=cache).stdout
    b = lock(index, "alpha", "zeta", cache=cache).stdout   # warm metadata cache
    c = lock(index, "alpha", "zeta").stdout                # cold
    assert a == b == c
    assert f'index = "{index.url}/html"' in a
    assert re.search(r'size = \d+, hashes = \{sha256 = "[0-9a-f]{64}"\}', a)
    p = tmp_path / "pylock.toml"
    p.write_text(a)
    m = mount(p)
    r = m.python("-c", "import alpha, beta, delta; print(alpha.__version__, beta.__version__,"
                 " delta.__version__)")
    assert r.stdout.split() == ["2.0", "2.0", "1.5"]


def test_requirements_file(index, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.txt").write_text("zeta  # the one that forces backtracking\n")
    (tmp_path / "cons.txt").write_text("delta<1.5\n")
    (tmp_path / "reqs.txt").write_text(
        f"--index-url {index.url}/json\n"
        "-r sub/more.txt\n"
        "-c cons.txt\n"
        "alpha \\\n  >=1.0 ; python_version >= '3'\n"
        "${SITEFS_TEST_PKG}\n")
    r = run_sitefs("lock", "--python", PY, "--cache-dir", str(short_dir("sfscache")),
                   "-r", str(tmp_path / "reqs.txt"))
    assert r.returncode == 1  # SITEFS_TEST_PKG unset: "${SITEFS_TEST_PKG}" stays
    assert "reqs.txt:6" in r.stderr, r.stderr
    (tmp_path / "reqs.txt").write_text((tmp_path / "reqs.txt").read_text()
                                       .replace("${SITEFS_TEST_PKG}", "eta"))
    r = run_sitefs("lock", "--python", PY, "--cache-dir", str(short_dir("sfscache")),
                   "-r", str(tmp_path / "reqs.txt"))
    assert r.returncode == 0, r.stderr
    got = picked(r.stdout)
    assert got["delta"] == "1.0" and got["alpha"] == "2.0" and got["eta"] == "1.0"
    assert f'index = "{index.url}/json"' in r.stdout


def test_hash_checked(index, tmp_path):
    good = indexgen._sha(next((index.root_dir / "files").glob("delta-1.0-*.whl")))
    (tmp_path / "r.txt").write_text(f"delta --hash=sha256:{good}\n")
    r = lock(index, "-r", tmp_path / "r.txt")
    assert picked(r.stdout) == {"delta": "1.0"}
    (tmp_path / "r.txt").write_text("delta==2.0 --hash=sha256:" + "0" * 64 + "\n")
    r = lock(index, "-r", tmp_path / "r.txt", check=False)
    assert r.returncode == 1 and "--hash" in r.stderr


def test_unsatisfiable_explained(index):
    r = lock(index, "cx", "cz", check=False)
    assert r.returncode == 1
    assert "cx 1.0 requires cy<2" in r.stderr and "cz 1.0 requires cy>=2" in r.stderr, r.stderr
    assert "cannot both be installed" in r.stderr


def test_sdist_only_and_unknown(index):
    r = lock(index, "sdonly", check=False)
    assert r.returncode == 1 and "sdonly 1.0 has only a source distribution" in r.stderr
    assert "wheels only" in r.stderr
    r = lock(index, "no-such-project", check=False)
    assert r.returncode == 1 and "no-such-project" in r.stderr


def test_first_index_wins(index, tmp_path):
    # a second index with a newer "delta": ignored, the first index has the project
    evil = indexgen.build_index(tmp_path / "evil", [Rel("delta", "99.0"), Rel("extra-only", "1.0")])
    server = IndexNginx(evil, tmp_path / "evilnginx").start()
    try:
        r = lock(index, "delta", "extra-only", extra=["--extra-index-url", f"{server.url}/html"])
        got = picked(r.stdout)
        assert got == {"delta": "2.0", "extra-only": "1.0"}
        assert f'index = "{server.url}/html"' in r.stdout
    finally:
        server.stop()


# ------------------------------------------------------------------ sitefs run

def run_cmd(index, *args, cache, timeout=120):
    return run_sitefs("run", "--python", PY, "--cache-dir", str(cache),
                      "--index-url", f"{index.url}/html", *args, timeout=timeout)


def no_run_mounts():
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if "/sitefs-run-" in l]


@pytest.mark.fuse
def test_run_end_to_end(index, tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "reqs.txt").write_text("alpha\nzeta\n")
    code = ("import os, sys, alpha, delta; print(alpha.__version__, delta.__version__, "
            "os.environ['VIRTUAL_ENV'] == sys.prefix); sys.exit(7)")
    r = run_cmd(index, "-r", tmp_path / "reqs.txt", "--", "python", "-c", code, cache=cache)
    assert r.returncode == 7, r.stderr
    assert r.stdout.split() == ["2.0", "1.5", "True"]
    assert not no_run_mounts()
    assert not list(Path("/tmp").glob("sitefs-run-*/venv"))
    # the lock is cached: a second run does not resolve again
    locks = list((cache / "locks").glob("*.toml"))
    assert len(locks) == 1
    r = run_cmd(index, "--with", "alpha", "--with", "zeta", "--", "true", cache=cache)
    assert r.returncode == 0
    r = run_cmd(index, "-r", tmp_path / "reqs.txt", "--", "false", cache=cache)
    assert r.returncode == 1
    r = run_cmd(index, "-r", tmp_path / "reqs.txt", "--", "no-such-command-xyz", cache=cache)
    assert r.returncode == 127
    assert not no_run_mounts()


@pytest.mark.fuse
def test_run_sigterm_cleans_up(index, tmp_path):
    cache = tmp_path / "cache"
    marker = tmp_path / "started"
    code = f"import time, pathlib; pathlib.Path({str(marker)!r}).write_text('x'); time.sleep(60)"
    p = subprocess.Popen([os.environ.get("SITEFS_BIN", "build/tools/sitefs"), "run", "--python", PY,
                          "--cache-dir", str(cache), "--index-url", f"{index.url}/html",
                          "--with", "delta", "--", "python", "-c", code],
                         env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert no_run_mounts()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
        assert rc == 128 + signal.SIGTERM
        assert not no_run_mounts()
        assert not list(Path("/tmp").glob("sitefs-run-*/venv"))
    finally:
        stop(p)


# ------------------------------------------------------------------ credentials

class PrivateNginx(IndexNginx):
    """The same index under /private/, behind HTTP basic auth (user "alice", "s3cret")."""

    def config(self):
        htpasswd = self.prefix / "htpasswd"
        pw = subprocess.run(["openssl", "passwd", "-apr1", "s3cret"], capture_output=True,
                            text=True, check=True).stdout.strip()
        htpasswd.write_text(f"alice:{pw}\n")
        return super().config().replace(
            "location / { }",
            f'location / {{ }}\n        location /private/ {{ alias {self.root}/; '
            f'auth_basic "sitefs"; auth_basic_user_file {htpasswd}; }}')


@pytest.fixture(scope="module")
def private_index(index, tmp_path_factory):
    server = PrivateNginx(index.root_dir, tmp_path_factory.mktemp("privnginx")).start()
    yield server
    server.stop()


def test_private_index_credentials(private_index, tmp_path):
    host = private_index.url.split("//", 1)[1]
    base = ["lock", "--python", PY, "--cache-dir", str(short_dir("sfscache")), "alpha", "zeta"]
    r = run_sitefs(*base, "--index-url", f"{private_index.url}/private/html")
    assert r.returncode == 1 and "401" in r.stderr, r.stderr
    # credentials in the URL: used for pages, metadata and probes; never written
    r = run_sitefs(*base, "--index-url", f"http://alice:s3cret@{host}/private/html")
    assert r.returncode == 0, r.stderr
    assert picked(r.stdout)["beta"] == "2.0"
    assert "s3cret" not in r.stdout and "alice" not in r.stdout
    assert f'index = "{private_index.url}/private/html"' in r.stdout
    # ~/.netrc
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login alice password s3cret\n")
    (home / ".netrc").chmod(0o600)
    env = clean_env(HOME=str(home))
    p = subprocess.run([os.environ.get("SITEFS_BIN", "build/tools/sitefs"), *base, "--index-url",
                        f"{private_index.url}/private/html"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert picked(p.stdout)["beta"] == "2.0"
