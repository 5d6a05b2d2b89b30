"""The per-port lock: one holder per port, named for the others, nothing left on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tunnelauth.errors import PortUnavailableError, TunnelauthError
from tunnelauth.portlock import Owner, PortLock, end_stale_run, is_tunnelauth_for

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
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "x", "tunnelauth", "box"],
        stdin=subprocess.PIPE,
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
    script.write_text("import sys\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, str(script), "spotify", "box"], stdin=subprocess.PIPE)
    try:
        assert is_tunnelauth_for(proc.pid, "box")
        assert not is_tunnelauth_for(proc.pid, "other-box")
        asyncio.run(end_stale_run(proc.pid, deadline=10))  # returns once it has exited
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
