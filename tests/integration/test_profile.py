"""--profile FILE: a mount records which bodies were opened; a later mount with the same
file fetches them all in one parallel wave right after mounting (one request per wheel
when they are dense), so that opening them later costs no request.  A profile that names
files the mount does not have, or that is not a profile at all, is a warning."""

import re
import shutil
import time

import pytest

from conftest import range_spans

pytestmark = pytest.mark.fuse

FILES = [("purepkg", "purepkg/core.py"), ("purepkg", "purepkg/sub/deep/mod.py"),
         ("clipkg", "clipkg/cli.py"), ("datapkg", "datapkg/__init__.py"),
         ("bigpkg", "bigpkg/__init__.py")]
BIG = ("bigpkg", "bigpkg/big.bin")  # > 1 MiB compressed: streamed alone, not buffered
HEADER = "# sitefs profile 1\n"
DONE = re.compile(r'profile "[^"]*": (\d+) bodies .* in (\d+) ranges, (\d+) requests|'
                  r'profile "[^"]*": nothing to fetch')


def wait_replay(m, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = DONE.search(m.log())
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"no replay summary in the daemon log:\n{m.log()}")


def unmount(m):
    m.teardown()
    assert m.proc.returncode is not None, "daemon still running after unmount"


def profile_lines(path):
    text = path.read_text()
    assert text.startswith(HEADER)
    return set(text[len(HEADER):].splitlines())


def test_record_then_replay(mount, nginx, nginx_lock, wheelhouse, tmp_path):
    prof = tmp_path / "app.profile"
    cache = tmp_path / "cache"
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    for name, entry in FILES:
        assert (m.site / entry).read_bytes() == wheelhouse.content(name, entry)
    wait_replay(m)  # "nothing to fetch": the file did not exist
    unmount(m)
    want = {f"{wheelhouse[name].name}\t{entry}" for name, entry in FILES}
    assert profile_lines(prof) == want

    # Same catalog, no bodies: every request of the next mount is the replay's.
    shutil.rmtree(cache / "bodies")
    mark = nginx.mark()
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    found = wait_replay(m)
    reqs = nginx.requests(mark)
    wheels = {wheelhouse[name].name for name, _ in FILES}
    assert int(found.group(1)) == len(FILES)
    assert len(reqs) <= len(wheels), reqs
    assert {r.name for r in reqs} == wheels
    assert all(r.status == 206 for r in reqs)
    assert m.proc.poll() is None

    mark = nginx.mark()
    for name, entry in FILES:
        assert (m.site / entry).read_bytes() == wheelhouse.content(name, entry)
    assert nginx.requests(mark) == [], "a replayed body was fetched again"
    # Python imports what was replayed without a request either
    m.python("-c", "import purepkg.core, clipkg.cli")
    unmount(m)
    assert want <= profile_lines(prof)


def test_big_entry_is_streamed(mount, nginx, nginx_lock, wheelhouse, tmp_path):
    cache = tmp_path / "cache"
    unmount(mount(nginx_lock, cache=cache))  # the catalog only
    prof = tmp_path / "big.profile"
    prof.write_text(HEADER + f"{wheelhouse[BIG[0]].name}\t{BIG[1]}\n")
    mark = nginx.mark()
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    assert wait_replay(m).group(1) == "1"
    reqs = nginx.requests(mark)
    assert [r.name for r in reqs] == [wheelhouse[BIG[0]].name]
    mark = nginx.mark()
    assert (m.site / BIG[1]).read_bytes() == wheelhouse.content(*BIG)
    assert nginx.requests(mark) == []


def test_early_opens_wait_for_the_replay(mount, nginx, nginx_lock, wheelhouse, tmp_path):
    """Opens racing the replay wait for it (or fill first, and the replay skips what
    they claimed): no byte is fetched twice."""
    cache = tmp_path / "cache"
    unmount(mount(nginx_lock, cache=cache))  # the catalog only
    prof = tmp_path / "p.profile"
    files = FILES + [BIG]
    prof.write_text(HEADER + "".join(f"{wheelhouse[n].name}\t{e}\n" for n, e in files))
    mark = nginx.mark()
    m = mount(nginx_lock, cache=cache, args=["--profile", prof])
    got = [(m.site / e).read_bytes() for _, e in files]
    assert got == [wheelhouse.content(n, e) for n, e in files]
    wait_replay(m)
    per = {}
    for r in nginx.requests(mark):
        per.setdefault(r.name, []).append(r.range)
    for name, ranges in per.items():
        size = (wheelhouse.dir / name).stat().st_size
        spans = sorted(s for rg in ranges for s in range_spans(rg, size))
        for (a, b), (c, d) in zip(spans, spans[1:]):
            # a range ends with up to 256 bytes of slack for an unknown local extra
            # field, which may be the next entry's header: never a body twice
            assert b - c < 512, f"{name}: bytes fetched twice: {spans}"


def test_stale_entries_are_ignored(mount, nginx_lock, wheelhouse, tmp_path):
    prof = tmp_path / "stale.profile"
    pure = wheelhouse["purepkg"].name
    old = [f"{pure}\tpurepkg/gone.py", "nosuch-1.0-py3-none-any.whl\tnosuch/__init__.py",
           f"{pure}\tpurepkg/core.py"]
    prof.write_text(HEADER + "\n".join(old) + "\nno tab here\n")
    m = mount(nginx_lock, args=["--profile", prof])
    found = wait_replay(m)
    assert found.group(1) == "1"
    assert re.search(r"warning.*2 of 3 entries name files this mount does not have", m.log(),
                     re.I), m.log()
    assert re.search(r"1 malformed lines ignored", m.log()), m.log()
    entry = "clipkg/cli.py"
    assert (m.site / entry).read_bytes() == wheelhouse.content("clipkg", entry)
    unmount(m)
    lines = profile_lines(prof)
    assert set(old) <= lines  # append-only: what it held stays
    assert f"{wheelhouse['clipkg'].name}\t{entry}" in lines


@pytest.mark.parametrize("content", [b"\x00\xff garbage \x01" * 100, b"", b"# sitefs profile 9\n"])
def test_corrupt_profile_is_ignored(mount, nginx_lock, wheelhouse, tmp_path, content):
    prof = tmp_path / "bad.profile"
    prof.write_bytes(content)
    m = mount(nginx_lock, args=["--profile", prof])
    assert re.search(r"is not a sitefs profile: ignoring it", m.log()), m.log()
    entry = "purepkg/core.py"
    assert (m.site / entry).read_bytes() == wheelhouse.content("purepkg", entry)
    unmount(m)
    assert profile_lines(prof) == {f"{wheelhouse['purepkg'].name}\t{entry}"}


def test_missing_directory_is_a_warning(mount, nginx_lock, wheelhouse, tmp_path):
    prof = tmp_path / "no/such/dir/p.profile"
    m = mount(nginx_lock, args=["--profile", prof])
    entry = "purepkg/core.py"
    assert (m.site / entry).read_bytes() == wheelhouse.content("purepkg", entry)
    unmount(m)
    assert re.search(r"cannot write it", m.log()), m.log()
