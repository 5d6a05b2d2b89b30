"""The per-port lock: one holder per port, named for the others, nothing left on disk."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tunnelauth.errors import PortUnavailableError, TunnelauthError
from tunnelauth.portlock import Owner, PortLock, end_stale_run, is_tunnelauth_for, lock_dir

HOLD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tunnelauth.portlock import PortLock\n"
    "lock = PortLock(int(sys.argv[1]), host='h', directory=Path(sys.argv[2]))\n"
    "assert lock.try_acquire(); print('HELD', flush=True); sys.stdin.read(); lock.release()\n"
)


def _holder(directory: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(port), str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
    return proc


WAIT = "import sys\nprint('UP', flush=True)\nsys.stdin.read()\n"  # says when it runs


def _up(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """Wait until ``proc`` runs its own code: right after exec its command line reads empty."""
    assert proc.stdout is not None and proc.stdout.readline().strip() == "UP"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_lock_names_its_owner_and_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    lock = PortLock(43827, host="box", directory=directory)
    assert lock.try_acquire() and lock.held
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    owner = lock.owner()
    assert owner is not None and owner.pid == os.getpid() and owner.host == "box"
    lock.release()
    assert not directory.exists(), "the lock file and its empty directory are removed"
    lock.release()  # twice is harmless


def test_second_holder_is_refused_and_then_succeeds(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    other = _holder(directory, 5000)
    try:
        mine = PortLock(5000, host="h", directory=directory)
        assert not mine.try_acquire()
        owner = mine.owner()
        assert owner is not None and owner.pid == other.pid
        assert PortLock(5001, host="h", directory=directory).try_acquire(), "other ports are free"
    finally:
        _end(other)
    assert mine.try_acquire()
    mine.release()


def test_no_wait_fails_with_exit_5_naming_the_holder(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    other = _holder(directory, 5002)
    try:
        lock = PortLock(5002, host="h", directory=directory)
        with pytest.raises(PortUnavailableError) as info:
            asyncio.run(lock.acquire(wait=False, deadline=5, on_wait=lambda _o: None))
        assert f"pid {other.pid}" in info.value.message
        assert info.value.status == 5
    finally:
        _end(other)


def test_wait_says_so_and_takes_the_lock_once_free(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    other = _holder(directory, 5003)
    told: list[Owner | None] = []

    async def main() -> None:
        lock = PortLock(5003, host="h", directory=directory)

        def waiting(owner: Owner | None) -> None:
            told.append(owner)
            _end(other)  # the other run finishes while we wait

        await lock.acquire(wait=True, deadline=30, on_wait=waiting)
        assert lock.held
        lock.release()

    asyncio.run(main())
    assert told and told[0] is not None and told[0].pid == other.pid


def test_a_lock_on_a_removed_file_does_not_count(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    first = PortLock(5004, host="h", directory=directory)
    assert first.try_acquire()
    stale_fd = os.open(first.path, os.O_RDWR)  # a waiter that opened the file before release
    first.release()
    second = PortLock(5004, host="h", directory=directory)
    assert second.try_acquire()
    third = PortLock(5004, host="h", directory=directory)
    assert not third.try_acquire(), "the new file is locked: only one holder"
    os.close(stale_fd)
    second.release()


def test_a_planted_directory_of_another_kind_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "locks"
    link.symlink_to(target)
    with pytest.raises(TunnelauthError):
        PortLock(5005, host="h", directory=link).try_acquire()


def test_only_a_tunnelauth_run_for_the_same_host_may_be_reaped() -> None:
    # "tunnelauth" as a later argument of another program is not a tunnelauth run.
    other = _up(
        subprocess.Popen(
            [sys.executable, "-c", WAIT, "x", "tunnelauth", "box"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    try:
        assert not is_tunnelauth_for(other.pid, "box")
        assert not is_tunnelauth_for(os.getpid(), "box"), "never itself"
        assert not is_tunnelauth_for(2**22 + 1, "box"), "a pid that does not exist"
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(10)


def test_is_tunnelauth_for_a_module_run(tmp_path: Path) -> None:
    script = tmp_path / "tunnelauth"
    script.write_text(WAIT)
    proc = _up(
        subprocess.Popen(
            [sys.executable, str(script), "spotify", "box"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    try:
        assert is_tunnelauth_for(proc.pid, "box")
        assert not is_tunnelauth_for(proc.pid, "other-box")
        asyncio.run(end_stale_run(proc.pid, deadline=10, host="box"))  # returns once it exited
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


# -- where the locks live ----------------------------------------------------------------------

NOBODY = 65534


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A private temp dir and home for lock_dir(), no runtime dir; returns (tmp, home)."""
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp, home


def _lock(port: int, home: Path, **variables: str) -> PortLock:
    """A lock where a run with HOME=``home`` and ``variables`` keeps its locks."""
    return PortLock(port, host="h", directory=lock_dir({"HOME": str(home), **variables}))


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's directory needs root")
def test_a_lock_dir_planted_by_another_user_does_not_block_a_run(homes: tuple[Path, Path]) -> None:
    tmp, home = homes
    planted = tmp / f"tunnelauth-locks-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chown(planted, NOBODY, NOBODY)
    lock = _lock(5010, home)
    assert lock.try_acquire(), "another user's directory blocked the lock"
    assert lock.path.parent == home / ".cache" / "tunnelauth" / "locks"
    assert oct(lock.path.parent.stat().st_mode & 0o777) == "0o700"
    assert not _lock(5010, home).try_acquire(), "the next run finds the same lock"
    lock.release()
    assert list(planted.iterdir()) == [] and planted.stat().st_uid == NOBODY, "left untouched"


def test_a_symlink_planted_as_the_lock_dir_does_not_block_a_run(homes: tuple[Path, Path]) -> None:
    tmp, home = homes
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (tmp / f"tunnelauth-locks-{os.getuid()}").symlink_to(elsewhere)
    lock = _lock(5011, home)
    assert lock.try_acquire()
    assert lock.path.parent == home / ".cache" / "tunnelauth" / "locks"
    assert list(elsewhere.iterdir()) == []
    lock.release()


def test_the_users_private_runtime_dir_holds_the_locks(homes: tuple[Path, Path]) -> None:
    tmp, home = homes
    runtime = tmp / "run-user"
    runtime.mkdir(mode=0o700)
    variables = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    assert lock_dir(variables) == runtime / "tunnelauth-locks"
    lock = _lock(5012, home, XDG_RUNTIME_DIR=str(runtime))
    assert lock.try_acquire() and lock.path.parent == runtime / "tunnelauth-locks"
    lock.release()
    runtime.chmod(0o755)  # not private: another user could plant the lock dir in it
    assert lock_dir(variables) == tmp / f"tunnelauth-locks-{os.getuid()}"
    if os.geteuid() == 0:
        runtime.chmod(0o700)
        os.chown(runtime, NOBODY, NOBODY)  # someone else's runtime dir (sudo keeps the variable)
        assert lock_dir(variables) == tmp / f"tunnelauth-locks-{os.getuid()}"


# -- --reap ends only the run that holds the lock ---------------------------------------------

HOLD_AS_TUNNELAUTH = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tunnelauth.portlock import PortLock\n"
    "lock = PortLock(int(sys.argv[3]), host=sys.argv[2], directory=Path(sys.argv[4]))\n"
    "assert lock.try_acquire(); print('HELD', flush=True); sys.stdin.read(); lock.release()\n"
)


def _tunnelauth_holder(tmp_path: Path, directory: Path, port: int) -> subprocess.Popen[str]:
    """A process that looks like `tunnelauth spotify box` and holds the port's lock."""
    script = tmp_path / "bin" / "tunnelauth"
    script.parent.mkdir(exist_ok=True)
    script.write_text(HOLD_AS_TUNNELAUTH)
    proc = subprocess.Popen(
        [sys.executable, str(script), "spotify", "box", str(port), str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
    return proc


def _rewrite_owner(lock: PortLock, **changes: object) -> None:
    """Change the holder's record in the lock file (what a stale or reused record says)."""
    record = json.loads(lock.path.read_text())
    record.update(changes)
    lock.path.write_text(json.dumps(record))


def _reap(lock: PortLock) -> None:
    asyncio.run(lock.acquire(wait=False, deadline=10, on_wait=lambda owner: None, reap=True))


def test_reap_ends_the_run_named_in_the_lock(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    holder = _tunnelauth_holder(tmp_path, directory, 5020)
    try:
        lock = PortLock(5020, host="box", directory=directory)
        owner = lock.owner()
        assert owner is not None and owner.pid == holder.pid and owner.started is not None
        _reap(lock)
        assert lock.held
        assert holder.wait(10) == -signal.SIGTERM
        lock.release()
    finally:
        holder.kill()
        holder.wait(10)


def test_reap_never_ends_a_process_that_started_at_another_time(tmp_path: Path) -> None:
    # The pid in the lock now names a process that is not the one that wrote it (pid reuse):
    # even a tunnelauth run for the same host is left alone.
    directory = tmp_path / "locks"
    holder = _tunnelauth_holder(tmp_path, directory, 5021)
    try:
        lock = PortLock(5021, host="box", directory=directory)
        _rewrite_owner(lock, started=psutil.Process(holder.pid).create_time() - 3600)
        with pytest.raises(PortUnavailableError):
            _reap(lock)
        assert holder.poll() is None, "a process other than the lock's writer was signalled"
        _rewrite_owner(lock, started=None)  # a record without a start time: not reaped either
        with pytest.raises(PortUnavailableError):
            _reap(lock)
        assert holder.poll() is None
    finally:
        _end(holder)


def _as_nobody(bindir: Path) -> subprocess.Popen[str]:
    """A `tunnelauth spotify box` look-alike run by another user (nobody)."""
    bindir.chmod(0o755)
    script = bindir / "tunnelauth"
    script.write_text(WAIT)
    script.chmod(0o755)
    proc = subprocess.Popen(
        ["/usr/bin/python3", str(script), "spotify", "box"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        user=NOBODY,
        group=NOBODY,
    )
    return _up(proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="a process of another user needs root")
def test_reap_never_ends_another_users_process(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    bindir = Path(tempfile.mkdtemp())  # outside tmp_path: nobody can reach it
    other = _as_nobody(bindir)
    holder = _holder(directory, 5022)
    try:
        assert not is_tunnelauth_for(other.pid, "box"), "another user's process is not ours"
        lock = PortLock(5022, host="box", directory=directory)
        started = psutil.Process(other.pid).create_time()
        _rewrite_owner(lock, pid=other.pid, started=started)
        with pytest.raises(PortUnavailableError):
            _reap(lock)
        with pytest.raises(PortUnavailableError):
            asyncio.run(end_stale_run(other.pid, deadline=10, host="box", started=started))
        assert other.poll() is None, "another user's process was signalled"
    finally:
        _end(holder)
        other.kill()
        other.wait(10)
        shutil.rmtree(bindir)


def test_reap_never_ends_a_program_that_is_not_tunnelauth(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    other = _up(
        subprocess.Popen(
            [sys.executable, "-c", WAIT, "spotify", "box"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    holder = _holder(directory, 5023)
    try:
        lock = PortLock(5023, host="box", directory=directory)
        _rewrite_owner(lock, pid=other.pid, started=psutil.Process(other.pid).create_time())
        with pytest.raises(PortUnavailableError):
            _reap(lock)
        assert other.poll() is None, "a program that is not tunnelauth was signalled"
    finally:
        _end(holder)
        assert other.stdin is not None
        other.stdin.close()
        other.wait(10)


def test_an_unusable_fallback_is_a_clear_error(homes: tuple[Path, Path]) -> None:
    tmp, home = homes
    (tmp / f"tunnelauth-locks-{os.getuid()}").symlink_to(tmp)
    not_a_dir = home / "file"
    not_a_dir.write_text("x")
    with pytest.raises(TunnelauthError, match="cannot create the port-lock directory"):
        _lock(5013, home, XDG_CACHE_HOME=str(not_a_dir)).try_acquire()
