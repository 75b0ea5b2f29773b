"""Fixtures for the sitefs integration tests.

Session: wheelhouse (generated + Debian wheels), nginx and faultserver serving it,
locks pointing at each, pip_venv (the reference `pip install` of the same wheels).
Per test: `mount` factory (daemon in the foreground, always unmounted, output checked).

Environment: SITEFS_BIN (binary; meson sets it), SITEFS_WRAPPER (command prefix for
the daemon, e.g. "valgrind --error-exitcode=99"), SITEFS_TEST_TIMEOUT (watchdog, s),
SITEFS_DEBUG (passed through to the daemon).
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import namedtuple
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import wheelgen  # noqa: E402

SITEFS_BIN = Path(os.environ.get("SITEFS_BIN") or HERE.parents[1] / "build/tools/sitefs")
PY = "/usr/bin/python3"
TIMEOUT = float(os.environ.get("SITEFS_TEST_TIMEOUT", "180"))
BAD_OUTPUT = re.compile(r"ERROR|error:|AddressSanitizer|LeakSanitizer|ThreadSanitizer|"
                        r"runtime error")
PIP_WHL = sorted(wheelgen.SYSTEM_WHEELS.glob("pip-*.whl"))


PYVER = subprocess.run([PY, "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True, check=True).stdout.strip()
SITE = f"lib/{PYVER}/site-packages"


# --------------------------------------------------------------------------- collection

def fuse_unavailable():
    if not os.path.exists("/dev/fuse"):
        return "FUSE unavailable: /dev/fuse does not exist"
    if not shutil.which("fusermount3"):
        return "FUSE unavailable: fusermount3 not found (apt-get install fuse3)"
    return None


MODULE_ORDER = ["test_fixtures", "test_cli", "test_mount", "test_fetch", "test_faults"]


def pytest_collection_modifyitems(config, items):
    # Cheap fixture self-checks first, so `-x` stops on the most basic problem.
    def key(item):
        mod = item.module.__name__.rpartition(".")[2]
        return MODULE_ORDER.index(mod) if mod in MODULE_ORDER else len(MODULE_ORDER)
    items.sort(key=key)
    reason = fuse_unavailable()
    if reason:
        for item in items:
            if item.get_closest_marker("fuse"):
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_sessionfinish(session, exitstatus):
    # meson reports SKIP for exit code 77
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr and exitstatus == 0 and tr.stats.get("skipped") and not tr.stats.get("passed"):
        session.exitstatus = 77


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# --------------------------------------------------------------------------- helpers

def short_dir(prefix="sfs"):
    """Short paths keep mountpoints readable and shebangs well under 127 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def is_mounted(path):
    """True also for a stale mount (where os.path.ismount says False)."""
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if mp == path:
                return True
    return False


def lazy_umount(path):
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)


# A failed fill makes reads of that file fail at once for half a second
# (nodefd.c: the kernel retries a failed page read immediately); a test that
# fixes the fault and reads again waits that long first.
FAILED_FILL_HOLD = 0.6


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_INDEX="1")
    env.update(extra)
    return env


def py_env():
    """clean_env() where Python may write bytecode (the bytecode store's tests)."""
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def verbose_import(m, modules):
    """`python -v -c "import MODULES"` in mount m; its stderr (where pycs come from)."""
    r = subprocess.run([str(m.path / "bin/python"), "-v", "-c", f"import {modules}"],
                       capture_output=True, text=True, env=py_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, logfile=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = Path(logfile).read_text(errors="replace") if logfile else ""
            pytest.fail(f"{what} exited with {proc.returncode} before listening:\n{log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def stop(proc, grace=5):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spans_overlap(spans, span):
    return any(a < span[1] and span[0] < b for a, b in spans)


def bytes_outside(spans, allowed):
    """How many bytes of `spans` fall outside every span in `allowed`."""
    total = 0
    for a, b in spans:
        cuts = sorted((max(a, x), min(b, y)) for x, y in allowed if x < b and a < y)
        covered, pos = 0, a
        for x, y in cuts:
            x = max(x, pos)
            if y > x:
                covered += y - x
                pos = y
        total += (b - a) - covered
    return total


def daemon_pids(mnt):
    """Pids of processes whose command line holds mnt (a background daemon)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(mnt) in (d / "cmdline").read_bytes().decode().split("\0"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


# --------------------------------------------------------------------------- wheels

class Wheelhouse:
    """dir: the served directory.  wheels: {short name: Path}.  lock_names: what the
    main lock holds.  extra: wheels kept out of the main lock (bad RECORD, decoys)."""

    LOCK_NAMES = ["purepkg", "clipkg", "cext", "datapkg", "bigpkg", "pip", "setuptools", "wheel"]

    def __init__(self, directory):
        self.dir = Path(directory)
        self.wheels = build_wheels(self.dir)

    def __getitem__(self, name):
        return self.wheels[name]

    @property
    def lock_wheels(self):
        return [self.wheels[n] for n in self.LOCK_NAMES]

    def lock_packages(self):
        """{(normalized name, version)} of the main lock."""
        return {wheelgen.parse_wheel_name(w.name)[:2] for w in self.lock_wheels}

    def content(self, name, entry):
        import zipfile
        with zipfile.ZipFile(self.wheels[name]) as zf:
            return zf.read(entry)


def big_text(size, seed=1234):
    """Deterministic text that deflates to roughly a third (not trivially)."""
    import random
    rnd = random.Random(seed)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(4000)]
    out, n = [], 0
    while n < size:
        line = " ".join(rnd.choices(words, k=12)) + f" {n}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def build_wheels(d):
    import random
    w = {}
    blob = random.Random(7).randbytes(256 * 1024)
    w["purepkg"] = wheelgen.make_wheel(d, "purepkg", "1.0", {
        "purepkg/__init__.py": b"from .core import answer\n__version__ = '1.0'\n",
        "purepkg/core.py": b"def answer():\n    return 42\n",
        "purepkg/util.py": "GREETING = 'gr\u00fc\u00df dich'\n".encode(),
        "purepkg/sub/__init__.py": b"",
        "purepkg/sub/deep/__init__.py": b"",
        "purepkg/sub/deep/mod.py": b"VALUE = 'deep'\n",
        "purepkg/data/config.json": b'{"key": "value", "n": 3}\n',
        "purepkg/py.typed": b"",
        "purepkg/tool.sh": (b"#!/bin/sh\necho tool\n", 0o755),
        "purepkg_top.py": b"TOP = True\n",
        # large and incompressible, stored, last before dist-info: keeps the small
        # files above outside the 64 KiB tail that the mount reads
        "purepkg/data/blob.bin": (blob, 0o644, "stored"),
    })
    w["clipkg"] = wheelgen.make_wheel(d, "clipkg", "2.0", {
        "clipkg/__init__.py": b"",
        "clipkg/cli.py": (b"import sys\n\ndef main():\n    print('hello from clipkg', *sys.argv[1:])\n"
                          b"    return 0\n\ndef gui():\n    print('gui from clipkg')\n"),
    }, entry_points={"console_scripts": {"clipkg-hello": "clipkg.cli:main"},
                     "gui_scripts": {"clipkg-gui": "clipkg.cli:gui"}},
        requires=["purepkg>=1.0"])
    w["cext"] = wheelgen.make_cext_wheel(d, "cext", "1.0", python=PY)
    w["datapkg"] = wheelgen.make_wheel(d, "datapkg", "0.3", {
        "datapkg/__init__.py": b"NAME = 'datapkg'\n",
    }, data={
        # (pip 23.0.1 keeps the zip mode of .data/scripts: 0644 would stay 0644)
        "scripts": {"datapkg-run": (b"#!python\nimport datapkg\nprint('datapkg-run', datapkg.NAME)\n",
                                    0o755),
                    "datapkg-sh": (b"#!/bin/sh\necho plain shell\n", 0o755)},
        "data": {"share/datapkg/readme.txt": b"data file\n"},
        "purelib": {"datapkg_extra.py": b"EXTRA = 1\n"},
        "headers": {"datapkg.h": b"#define DATAPKG 1\n"},
    })
    w["bigpkg"] = wheelgen.make_wheel(d, "bigpkg", "1.0", {
        "bigpkg/__init__.py": b"SIZE = 4 * 1024 * 1024\n",
        "bigpkg/big.bin": big_text(4 * 1024 * 1024),
    })
    for p in wheelgen.system_wheels(d):
        w[wheelgen.parse_wheel_name(p.name)[0]] = p
    # Not in the main lock:
    w["badpkg"] = wheelgen.make_wheel(d, "badpkg", "1.0", {
        "badpkg/__init__.py": b"",
        "badpkg/bad.py": b"print('this body does not match RECORD')\n" + b"#" * 5000 + b"\n",
    }, record_override={"badpkg/bad.py": wheelgen.record_hash(b"something else")})
    w["cext-decoy"] = wheelgen.make_wheel(d, "cext", "1.0",
                                          {"cext.py": b"raise ImportError('decoy wheel')\n"},
                                          tag="cp27-cp27mu-manylinux1_i686")
    return w


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    try:
        return Wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    except (RuntimeError, subprocess.CalledProcessError) as e:
        pytest.fail(f"cannot build the test wheelhouse: {e}", pytrace=False)


# --------------------------------------------------------------------------- nginx

Req = namedtuple("Req", "method path name range status sent body")


class Nginx:
    LOG_FORMAT = '$request_method "$uri" "$http_range" $status $bytes_sent $body_bytes_sent'

    def __init__(self, root, prefix):
        self.root, self.prefix = Path(root), Path(prefix)
        self.log = self.prefix / "access.log"
        self.port = None
        self.proc = None

    def config(self):
        p = self.prefix
        v = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
        temps = "".join(f"    {k}_temp_path {p}/tmp/{k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                        if k == "client_body" or f"--http-{k}-temp-path" in v)
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""{user}worker_processes 2;
error_log {p}/error.log info;
pid {p}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    log_format sitefs '{self.LOG_FORMAT}';
    access_log {p}/access.log sitefs;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 60;
    keepalive_requests 100000;
{temps}    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ }}
    }}
}}
"""

    def start(self):
        if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
            pytest.fail("nginx not found: run the project's dependency installer "
                        "(apt-get install nginx-light)", pytrace=False)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(self.config())
            self.proc = subprocess.Popen(
                [nginx, "-e", str(self.prefix / "error.log"), "-c", str(conf),
                 "-p", str(self.prefix), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                wait_port(self.port, self.proc, "nginx", self.prefix / "error.log")
                break
            except pytest.fail.Exception:
                if "Address already in use" not in (self.prefix / "error.log").read_text() \
                        or attempt == 4:
                    raise
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self):
        if self.proc:
            stop(self.proc)

    def mark(self):
        """Position in the access log; pass to requests() to see what came after."""
        return self.log.stat().st_size if self.log.exists() else 0

    def requests(self, since=0, settle=0.3):
        """Requests logged after `since` (nginx logs each as it completes, so wait
        until the log stops growing)."""
        prev = -1
        while True:
            size = self.mark()
            if size == prev:
                break
            prev = size
            time.sleep(settle)
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode()
        out = []
        for line in text.splitlines():
            m = re.match(r'(\S+) "([^"]*)" "([^"]*)" (\d+) (\d+) (\d+)$', line)
            assert m, f"unparsable nginx log line: {line!r}"
            method, path, rng, status, sent, body = m.groups()
            out.append(Req(method, path, path.rsplit("/", 1)[-1], None if rng == "-" else rng,
                           int(status), int(sent), int(body)))
        return out


def range_spans(rng, size):
    """'bytes=a-b,c-' -> [(a, b+1), (c, size)]; suffix ranges '-n' -> [(size-n, size)]."""
    if rng is None:
        return [(0, size)]
    spans = []
    for part in rng.split("=", 1)[1].split(","):
        a, _, b = part.strip().partition("-")
        if a == "":
            spans.append((max(0, size - int(b)), size))
        else:
            spans.append((int(a), min(size, int(b) + 1) if b else size))
    return spans


@pytest.fixture(scope="session")
def nginx(wheelhouse, tmp_path_factory):
    server = Nginx(wheelhouse.dir, tmp_path_factory.mktemp("nginx")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nginx_lock(wheelhouse, nginx, tmp_path_factory):
    return wheelgen.write_pylock(tmp_path_factory.mktemp("lock") / "pylock.toml",
                                 wheelhouse.lock_wheels, nginx.url)


# --------------------------------------------------------------------------- faultserver

class FaultServer:
    def __init__(self, root, logfile):
        script = HERE / "faultserver.py"
        if not script.exists():
            pytest.fail(f"{script} does not exist yet (the fault server is written "
                        f"separately)", pytrace=False)
        self.logfile = logfile
        self.proc = subprocess.Popen([PY, str(script), "--root", str(root), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=open(logfile, "wb"),
                                     text=True, env=clean_env())
        line = self.proc.stdout.readline()
        m = re.search(r"(\d+)", line or "")
        if not m:
            stop(self.proc)
            pytest.fail(f"faultserver printed no port ({line!r}):\n"
                        f"{Path(logfile).read_text(errors='replace')}", pytrace=False)
        self.port = int(m.group(1))
        wait_port(self.port, self.proc, "faultserver", logfile)
        self.url = f"http://127.0.0.1:{self.port}"

    def _get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read()

    def fault(self, mode):
        self._get("/__fault?mode=" + urllib.request.quote(mode, safe=":"))

    def reset(self):
        self._get("/__reset")
        self.fault("none")

    def stats(self):
        """{path: {"requests": n, "bytes": n, ...}} since the last reset."""
        return json.loads(self._get("/__stats"))

    def stop(self):
        self.proc.stdout.close()
        stop(self.proc)


@pytest.fixture(scope="session")
def _faultserver(wheelhouse, tmp_path_factory):
    server = FaultServer(wheelhouse.dir, tmp_path_factory.mktemp("faultserver") / "log")
    yield server
    server.stop()


@pytest.fixture
def faultserver(_faultserver):
    """The session fault server, reset (no fault, zero counters) for this test."""
    _faultserver.reset()
    yield _faultserver
    _faultserver.reset()


@pytest.fixture(scope="session")
def fault_lock(wheelhouse, _faultserver, tmp_path_factory):
    return wheelgen.write_pylock(tmp_path_factory.mktemp("flock") / "pylock.toml",
                                 wheelhouse.lock_wheels, _faultserver.url)


# --------------------------------------------------------------------------- reference venv

@pytest.fixture(scope="session")
def pip_venv(wheelhouse):
    """What `python -m venv --without-pip` + `pip install --no-deps` makes of the lock's
    wheels.  Installed by name from --find-links (a path install would add
    direct_url.json, which a lock-based venv does not have)."""
    if not PIP_WHL:
        pytest.fail("no pip wheel in /usr/share/python-wheels: apt-get install python3-pip-whl",
                    pytrace=False)
    root = short_dir("sfsref")
    venv = root / "venv"
    try:
        subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True)
        reqs = ["%s==%s" % p for p in sorted(wheelhouse.lock_packages())]
        r = subprocess.run([str(venv / "bin/python"), str(PIP_WHL[-1] / "pip"), "install",
                            "--no-deps", "--no-index", "--no-compile", "--no-cache-dir",
                            "--find-links", str(wheelhouse.dir), *reqs],
                           capture_output=True, text=True, env=clean_env())
        if r.returncode:
            pytest.fail(f"reference pip install failed:\n{r.stdout}\n{r.stderr}", pytrace=False)
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- mounts

@pytest.fixture(scope="session")
def sitefs_bin():
    if not os.access(SITEFS_BIN, os.X_OK):
        pytest.fail(f"sitefs binary not found at {SITEFS_BIN}: build it with meson "
                    f"(or set SITEFS_BIN)", pytrace=False)
    return str(SITEFS_BIN)


def run_sitefs(*args, timeout=60):
    """Run the CLI (not the daemon); returns CompletedProcess with text output.
    Output goes through files: a daemon that kept our pipes open would hang us."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        r = subprocess.run([str(SITEFS_BIN), *map(str, args)], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, timeout=timeout, env=clean_env())
        out.seek(0)
        err.seek(0)
        r.stdout, r.stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return r


class Mount:
    def __init__(self, path, cache, proc, logpath):
        self.path, self.cache, self.proc, self.logpath = path, cache, proc, logpath
        self.site = path / SITE
        self.allowed = []
        self.killed = False   # set by tests that SIGKILL the daemon on purpose

    def log(self):
        return self.logpath.read_text(errors="replace")

    def sigterm(self):
        """Sends the daemon SIGTERM; returns the seconds it took to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return time.monotonic() - t0

    def allow(self, *patterns):
        """Daemon output lines matching any of these regexes are not failures."""
        self.allowed += [re.compile(p) for p in patterns]

    def bad_lines(self):
        return [line for line in self.log().splitlines()
                if BAD_OUTPUT.search(line) and not any(p.search(line) for p in self.allowed)]

    def run(self, *cmd, check=True, timeout=60, **kw):
        """Run a command (a path inside bin/ or anything else) with a clean env."""
        cmd = [str(self.path / "bin" / cmd[0]) if "/" not in str(cmd[0]) else str(cmd[0]),
               *map(str, cmd[1:])]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=clean_env(), **kw)
        if check and r.returncode:
            pytest.fail(f"{cmd} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
                        f"\ndaemon log (tail):\n{self.log()[-3000:]}")
        return r

    def python(self, *args, **kw):
        return self.run("python", *args, **kw)

    def teardown(self):
        lazy_umount(self.path)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            stop(self.proc)
        lazy_umount(self.path)
        if not is_mounted(self.path):
            shutil.rmtree(self.path.parent, ignore_errors=True)


@pytest.fixture
def mount(sitefs_bin, tmp_path, request):
    """Factory: mount(lock, cache=None, opts=(), env=None, args=()) -> Mount.

    Runs `sitefs mount -f` with output to a file, waits for the tree, and on teardown
    always unmounts (fusermount3 -u -z), terminates, kills; then fails the test if the
    daemon crashed or logged errors the test did not allow (Mount.allow)."""
    mounts = []
    fired = []

    def watchdog():
        # kill daemons so reads blocked in FUSE return instead of hanging the suite
        fired.append(True)
        for m in mounts:
            if m.proc.poll() is None:
                m.proc.kill()
            lazy_umount(m.path)

    timer = threading.Timer(TIMEOUT, watchdog)
    timer.daemon = True
    timer.start()

    def start(lock, cache=None, opts=(), env=None, args=()):
        n = len(mounts)
        mnt = short_dir() / "venv"
        mnt.mkdir()
        cache = Path(cache or tmp_path / f"cache{n}")
        logpath = tmp_path / f"daemon{n}.log"
        cmd = shlex.split(os.environ.get("SITEFS_WRAPPER", "")) + [
            sitefs_bin, "mount", "-f", "--python", PY, "--cache-dir", str(cache)]
        if opts:
            cmd += ["-o", ",".join(opts)]
        cmd += [*map(str, args), str(lock), str(mnt)]
        with open(logpath, "wb") as logf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=clean_env(**(env or {})))
        m = Mount(mnt, cache, proc, logpath)
        mounts.append(m)
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                pytest.fail(f"sitefs exited with {proc.returncode} before {mnt} was mounted:\n"
                            f"$ {shlex.join(cmd)}\n{m.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{mnt} not mounted after 60s:\n$ {shlex.join(cmd)}\n{m.log()}")
            time.sleep(0.02)
        return m

    yield start

    timer.cancel()
    problems = []
    for i, m in enumerate(reversed(mounts)):
        m.teardown()
        rc = m.proc.returncode
        if not m.killed and rc is not None and rc < 0 and -rc not in (signal.SIGTERM,
                                                                       signal.SIGKILL):
            problems.append(f"daemon for {m.path} died from signal {-rc}")
        elif not m.killed and rc not in (0, -signal.SIGTERM, None) and not fired:
            problems.append(f"daemon for {m.path} exited with {rc} after unmount")
        problems += [f"daemon output: {line}" for line in m.bad_lines()]
        request.node.add_report_section("teardown", f"daemon log {m.path}", m.log()[-20000:])
    if fired:
        pytest.fail(f"watchdog: test ran over {TIMEOUT:.0f}s; daemons killed")
    rep = getattr(request.node, "rep_call", None)
    if problems and rep is not None and rep.passed:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------- tree compare

def snapshot(root):
    """{relpath: ("dir",) | ("link", realpath) | ("file", bytes, executable)}, skipping
    __pycache__ and *.pyc.  Reads every file (in a mount: fetches every body)."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = Path(dirpath).relative_to(root)
        for d in list(dirnames):
            p = Path(dirpath) / d
            if p.is_symlink():
                out[str(rel / d)] = ("link", os.path.realpath(p))
                dirnames.remove(d)
            else:
                out[str(rel / d)] = ("dir",)
        for f in filenames:
            p = Path(dirpath) / f
            if f.endswith(".pyc"):
                continue
            if p.is_symlink():
                out[str(rel / f)] = ("link", os.path.realpath(p))
                continue
            st = p.stat()
            data = p.read_bytes()
            assert st.st_size == len(data), f"{p}: stat says {st.st_size} bytes, read gave {len(data)}"
            out[str(rel / f)] = ("file", data, bool(st.st_mode & 0o111))
    return out
