"""A misbehaving server (faultserver.py): right bytes or EIO, never wrong bytes."""

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest

import wheelgen
from conftest import FAILED_FILL_HOLD, clean_env, daemon_pids, lazy_umount, run_sitefs, short_dir

pytestmark = pytest.mark.fuse

RETRY_LOG = r"(?i)retr(y|ies|ying)"  # retries may be logged; they are not failures


def requests_for(server, whl):
    return server.stats().get("/" + whl.name, {}).get("requests", 0)


@pytest.mark.parametrize("short,entry", [("purepkg", "purepkg/data/blob.bin"),   # stored
                                         ("bigpkg", "bigpkg/big.bin")])          # deflated
def test_corrupted_body_gives_eio(mount, faultserver, fault_lock, wheelhouse, short, entry):
    whl = wheelhouse[short]
    start, end = wheelgen.data_span(whl, entry)
    mid = (start + end) // 2
    m = mount(fault_lock)
    m.allow(r"\b" + short + r"\b", RETRY_LOG)
    faultserver.fault(f"corrupt:{whl.name}:{mid}:16")
    before = requests_for(faultserver, whl)
    with pytest.raises(OSError) as e:
        (m.site / entry).read_bytes()
    assert e.value.errno == errno.EIO
    # one fill, not two: the kernel's retry of the failed page read is
    # answered from the failure
    assert requests_for(faultserver, whl) - before == 1, "one request for the corrupted range"
    log = m.log()
    assert whl.name in log and entry in log, f"the log does not name wheel and entry:\n{log}"
    faultserver.fault("none")  # a clean server afterwards: the next read succeeds
    time.sleep(FAILED_FILL_HOLD)
    assert (m.site / entry).read_bytes() == wheelhouse.content(short, entry)


@pytest.mark.parametrize("fault", ["status:503:2", "status:429:1", "status:500:1",
                                   "drop_after:200:2", "delay:300"])
@pytest.mark.parametrize("short,entry", [("purepkg", "purepkg/core.py"),
                                         ("bigpkg", "bigpkg/big.bin")])
def test_transient_faults_still_give_right_bytes(mount, faultserver, fault_lock, wheelhouse,
                                                 fault, short, entry):
    m = mount(fault_lock)
    m.allow(RETRY_LOG)
    faultserver.reset()
    faultserver.fault(fault)
    assert (m.site / entry).read_bytes() == wheelhouse.content(short, entry)
    # each injected status costs a retry; a dropped transfer at least one (the
    # resumed request may be short enough to finish before the next drop)
    n = int(fault.rsplit(":", 1)[1]) if fault.startswith("status") else 0
    n = 1 if fault.startswith("drop") else n
    seen = requests_for(faultserver, wheelhouse[short])
    assert seen >= n + 1, f"{seen} requests: the fault was not exercised"


def test_server_ignoring_range(mount, faultserver, fault_lock, wheelhouse):
    """200 to a Range request: stream the whole wheel once, then serve from the cache."""
    faultserver.fault("ignore_range")
    m = mount(fault_lock)
    r = m.python("-c", "import purepkg, cext, bigpkg, clipkg; print(cext.add(1, 1))")
    assert r.stdout == "2\n"
    for short, entry in [("bigpkg", "bigpkg/big.bin"), ("purepkg", "purepkg/data/blob.bin")]:
        assert (m.site / entry).read_bytes() == wheelhouse.content(short, entry)
    stats = faultserver.stats()
    for short in ("bigpkg", "purepkg"):
        whl = wheelhouse[short]
        sent = stats.get("/" + whl.name, {}).get("bytes", 0)
        assert sent <= 1.5 * whl.stat().st_size, \
            f"{whl.name} ({whl.stat().st_size} bytes) was sent {sent} bytes: more than once"


def test_wrong_content_range_is_not_served(mount, faultserver, fault_lock, wheelhouse):
    m = mount(fault_lock)
    m.allow(r"(?i)content-range", RETRY_LOG)
    faultserver.fault("wrong_content_range")
    entry = "purepkg/core.py"
    try:
        data = (m.site / entry).read_bytes()
    except OSError as e:
        assert e.errno == errno.EIO
    else:
        assert data == wheelhouse.content("purepkg", entry)


def test_background_daemon_logs_to_log_file(sitefs_bin, faultserver, fault_lock, wheelhouse,
                                             tmp_path):
    """A daemonized mount still reports a bad body: EIO, and a line in --log-file."""
    whl = wheelhouse["bigpkg"]
    start, end = wheelgen.data_span(whl, "bigpkg/big.bin")
    mnt = short_dir() / "venv"
    mnt.mkdir()
    logfile = tmp_path / "daemon.log"
    try:
        r = subprocess.run([sitefs_bin, "mount", "--python", "/usr/bin/python3", "--cache-dir",
                            str(tmp_path / "cache"), "--log-file", str(logfile),
                            str(fault_lock), str(mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                           env=clean_env())
        assert r.returncode == 0, r.stderr
        faultserver.fault(f"corrupt:{whl.name}:{(start + end) // 2}:16")
        site = next(mnt.glob("lib/python3*/site-packages"))
        with pytest.raises(OSError) as e:
            (site / "bigpkg/big.bin").read_bytes()
        assert e.value.errno == errno.EIO
        log = logfile.read_text()
        assert whl.name in log and "bigpkg/big.bin" in log, log
        assert "not served" in log, log
    finally:
        faultserver.fault("none")
        run_sitefs("umount", mnt)
        lazy_umount(mnt)
        for pid in daemon_pids(mnt):
            os.kill(pid, signal.SIGKILL)


def test_server_ignoring_range_with_a_warm_catalog(mount, faultserver, fault_lock, wheelhouse,
                                                  tmp_path):
    """Metadata from the catalog, then a server that ignores Range: the first body read
    finds out, later reads download the wheel once (streamed) and serve from it."""
    cache = tmp_path / "shared-cache"
    first = mount(fault_lock, cache=cache)
    first.teardown()
    faultserver.fault("ignore_range")
    m = mount(fault_lock, cache=cache)
    m.allow(r"(?i)range")
    for short, entry in [("bigpkg", "bigpkg/big.bin"), ("bigpkg", "bigpkg/__init__.py"),
                         ("purepkg", "purepkg/core.py"), ("purepkg", "purepkg/data/blob.bin")]:
        assert (m.site / entry).read_bytes() == wheelhouse.content(short, entry)


def test_lock_with_a_known_sha256_at_another_url_gets_its_own_catalog_rows(
        mount, nginx, nginx_lock, wheelhouse, tmp_path):
    """The catalog cannot check range-read metadata against the lock's sha256, so rows
    are keyed by sha256 and URL: a lock pairing a wheel's sha256 with another URL must
    not make a later mount of the real lock skip its own metadata requests."""
    whl = wheelhouse["purepkg"]
    alias = whl.parent / ("alias-" + whl.name)
    shutil.copyfile(whl, alias)
    try:
        text = nginx_lock.read_text().replace(f"/{whl.name}\"", f"/{alias.name}\"")
        assert alias.name in text
        other = tmp_path / "other.toml"
        other.write_text(text)
        cache = tmp_path / "shared-cache"
        mount(other, cache=cache)
        mark = nginx.mark()
        mount(nginx_lock, cache=cache)
        names = [r.name for r in nginx.requests(mark)]
        assert names == [whl.name], f"only the real URL's metadata is fetched again: {names}"
    finally:
        alias.unlink()


def test_small_wheel_not_matching_the_lock_is_refused(sitefs_bin, nginx_lock, wheelhouse,
                                                     tmp_path):
    """A wheel under 64 KiB arrives whole with the tail request: it is checked."""
    whl = wheelhouse["clipkg"]
    assert whl.stat().st_size < 65536
    good = hashlib.sha256(whl.read_bytes()).hexdigest()
    bad = tmp_path / "bad.toml"
    bad.write_text(nginx_lock.read_text().replace(good, "0" * 64))
    mnt = short_dir() / "venv"
    mnt.mkdir()
    r = subprocess.run([sitefs_bin, "mount", "-f", "--python", "/usr/bin/python3",
                        "--cache-dir", str(tmp_path / "cache"), str(bad), str(mnt)],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode != 0 and not os.path.ismount(mnt)
    assert whl.name in r.stderr and "sha256" in r.stderr, r.stderr


def test_lock_size_not_matching_the_server_is_refused(sitefs_bin, nginx_lock, wheelhouse,
                                                      tmp_path):
    whl = wheelhouse["bigpkg"]
    size = whl.stat().st_size
    bad = tmp_path / "bad-size.toml"
    text = nginx_lock.read_text()
    assert f"size = {size}" in text
    bad.write_text(text.replace(f"size = {size}", f"size = {size - 1000}"))
    mnt = short_dir() / "venv"
    mnt.mkdir()
    r = subprocess.run([sitefs_bin, "mount", "-f", "--python", "/usr/bin/python3",
                        "--cache-dir", str(tmp_path / "cache"), str(bad), str(mnt)],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode != 0 and not os.path.ismount(mnt)
    assert whl.name in r.stderr and "the lock says" in r.stderr, r.stderr
