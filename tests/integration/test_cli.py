"""Command line: help, version, and lock files that must be refused with a clear message."""

import re
import shutil

import pytest

from conftest import PY, is_mounted, lazy_umount, run_sitefs, short_dir


def test_help_and_version(sitefs_bin):
    r = run_sitefs("--help")
    assert r.returncode == 0 and "mount" in r.stdout and "umount" in r.stdout, r
    r = run_sitefs("mount", "--help")
    assert r.returncode == 0, r
    for opt in ("--python", "--cache-dir", "-f", "-o"):
        assert opt in r.stdout, f"`sitefs mount --help` does not mention {opt}"
    r = run_sitefs("--version")
    assert r.returncode == 0 and re.search(r"\d+\.\d+\.\d+", r.stdout), r
    r = run_sitefs("no-such-command")
    assert r.returncode != 0 and r.stderr


SDIST_ONLY = """
[[packages]]
name = "onlysdist"
version = "1.0"
sdist = {name = "onlysdist-1.0.tar.gz", url = "http://127.0.0.1:9/onlysdist-1.0.tar.gz", size = 100, hashes = {sha256 = "%s"}}
""" % ("0" * 64)

NO_WHEEL = """
[[packages]]
name = "alienpkg"
version = "1.0"
wheels = [
  {name = "alienpkg-1.0-cp27-cp27mu-manylinux1_i686.whl", url = "http://127.0.0.1:9/alienpkg-1.0-cp27-cp27mu-manylinux1_i686.whl", size = 100, hashes = {sha256 = "%s"}},
]
""" % ("0" * 64)

BAD_TOML = 'lock-version = "1.0"\ncreated-by = "x"\n\n[[packages]\nname = "x"\n'


@pytest.mark.parametrize("case", ["sdist-only", "no-compatible-wheel", "missing-file",
                                  "bad-toml"])
def test_lock_errors(sitefs_bin, nginx_lock, tmp_path, case):
    lock = tmp_path / "pylock.toml"
    good = nginx_lock.read_text()
    if case == "sdist-only":
        lock.write_text(good + SDIST_ONLY)
        want = [r"onlysdist"]
    elif case == "no-compatible-wheel":
        lock.write_text(good + NO_WHEEL)
        want = [r"alienpkg"]
    elif case == "missing-file":
        lock = tmp_path / "nonexistent.toml"
        want = [r"nonexistent\.toml"]
    else:
        lock.write_text(BAD_TOML)
        want = [r"pylock\.toml", r"\b4\b"]  # the file and the line of the broken header
    mnt = short_dir() / "venv"
    mnt.mkdir()
    try:
        r = run_sitefs("mount", "--python", PY, "--cache-dir", tmp_path / "cache", lock, mnt)
        assert r.returncode != 0, f"{case}: mount succeeded"
        assert not is_mounted(mnt)
        for pat in want:
            assert re.search(pat, r.stderr), f"{case}: stderr does not match {pat!r}:\n{r.stderr}"
    finally:
        lazy_umount(mnt)
        shutil.rmtree(mnt.parent, ignore_errors=True)


def test_interpreter_error_reaches_the_terminal(sitefs_bin, nginx_lock, tmp_path):
    """The daemon forks before the interpreter is asked (its query overlaps the first
    requests): a bad --python still fails `sitefs mount` with the reason on stderr."""
    mnt = short_dir() / "venv"
    mnt.mkdir()
    try:
        r = run_sitefs("mount", "--python", tmp_path / "no-such-python", "--cache-dir",
                       tmp_path / "cache", nginx_lock, mnt)
        assert r.returncode != 0, "mount succeeded"
        assert not is_mounted(mnt)
        assert "no-such-python" in r.stderr and "interpreter" in r.stderr, r.stderr
    finally:
        lazy_umount(mnt)
        shutil.rmtree(mnt.parent, ignore_errors=True)
