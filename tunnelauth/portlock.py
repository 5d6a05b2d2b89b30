"""One run per laptop callback port: a per-user lock file per port, and ending a stale run.

The lock is taken right before the listener binds and released at teardown. Lock files live in
a directory only the user can write (``lock_dir``); each one holds the owner's pid, start time,
host and command line, so a waiting or refused run can name it and ``--reap`` can be sure the
process it ends is that run. A released lock file is removed (and the directory once empty), so
nothing stays on disk after a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunnelauth.errors import PortUnavailableError, TunnelauthError

if TYPE_CHECKING:
    import psutil

POLL = 0.2  # seconds between attempts while another run holds the port
REAP_DEADLINE = 20.0  # how long a reaped run may take to tear down in order
_OPEN_RETRIES = 20  # a concurrent release may remove the directory under us: try again


@dataclass(frozen=True)
class Owner:
    """The run that holds a port's lock, as it described itself."""

    pid: int
    host: str
    command: str
    started: float | None = None  # the process's start time (psutil), pinning it against pid reuse

    def describe(self) -> str:
        """``pid N (host H): command``, shortened and free of control characters."""
        text = f"pid {self.pid} (host {self.host}): {self.command}"
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
        return text if len(text) <= 160 else text[:159] + "…"


def lock_dir(variables: Mapping[str, str]) -> Path:
    """The user's directory of port lock files; every run of the user picks the same one.

    ``$XDG_RUNTIME_DIR/tunnelauth-locks`` when that runtime dir is the user's own (0700), else
    ``<tmp>/tunnelauth-locks-<uid>`` unless someone else made that path first (any local user
    can create it in a shared /tmp, and would block every run), else a directory in the user's
    cache dir (``~/.cache/tunnelauth/locks``), which no other user can create. The variables
    are the environment's (``XDG_RUNTIME_DIR``, ``XDG_CACHE_HOME``, ``HOME``).
    """
    runtime = variables.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and _private(Path(runtime)):
        return Path(runtime) / "tunnelauth-locks"
    shared = Path(tempfile.gettempdir()) / f"tunnelauth-locks-{os.getuid()}"
    if not os.path.lexists(shared) or _private(shared, mode_too=False):
        return shared
    cache = variables.get("XDG_CACHE_HOME", "")
    if os.path.isabs(cache):
        return Path(cache) / "tunnelauth" / "locks"
    home = variables.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "tunnelauth" / "locks"


def _private(path: Path, *, mode_too: bool = True) -> bool:
    """Whether ``path`` is a real directory of this user (and, with ``mode_too``, 0700)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    mode_ok = not mode_too or not stat.S_IMODE(info.st_mode) & 0o077
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and mode_ok


def _ensure_dir(path: Path) -> None:
    """Create the lock dir 0700; refuse one that is a symlink or not ours (another local user)."""
    try:
        # The cache fallback's parents may not exist yet (a new account's ~/.cache).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    except OSError as exc:
        raise TunnelauthError(
            f"cannot create the port-lock directory {path}: {exc.strerror}",
            hint="set XDG_RUNTIME_DIR or XDG_CACHE_HOME to a directory of yours",
        ) from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TunnelauthError(
            f"{path} is not a directory owned by this user; refusing to use it for port locks",
            hint="remove it (another local user may have planted it) and run again",
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


class PortLock:
    """An exclusive lock on one laptop port, held from before the bind until teardown."""

    def __init__(self, port: int, *, host: str, directory: Path) -> None:
        self.port = port
        self.host = host
        self.directory = directory  # lock_dir(), or a test's own
        self.path = self.directory / f"{port}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if free (never blocks); True on success."""
        if self._fd is not None:
            return True
        for _ in range(_OPEN_RETRIES):
            _ensure_dir(self.directory)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:
                continue  # the directory was removed by a run that just released: recreate it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            # The holder before us may have unlinked the file after we opened it: a lock on a
            # removed inode excludes nobody, so only a lock on the file still at the path counts.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            self._write_owner(fd)
            return True
        raise TunnelauthError(f"could not create the lock file {self.path}")

    def _write_owner(self, fd: int) -> None:
        record = {
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "host": self.host,
            "command": " ".join(sys.argv),
        }
        data = json.dumps(record).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def owner(self) -> Owner | None:
        """Who holds the lock now, as written in the lock file (None if unknown)."""
        try:
            raw = self.path.read_bytes()[:4096]
            record = json.loads(raw)
            started = record.get("started")
            return Owner(
                int(record["pid"]),
                str(record["host"]),
                str(record["command"]),
                float(started) if isinstance(started, (int, float)) else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def release(self) -> None:
        """Remove the lock file, then drop the lock; remove the directory once it is empty."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Unlink while still holding: a waiter that opened this inode re-checks the path.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    async def acquire(
        self,
        *,
        wait: bool,
        deadline: float,
        on_wait: Callable[[Owner | None], None],
        reap: bool = False,
    ) -> None:
        """Take the lock; another run holding it is waited for, refused (exit 5) or reaped."""
        if self.try_acquire():
            return
        owner = self.owner()
        # Only the very process that wrote the lock (same pid AND start time) may be reaped.
        if (
            reap
            and owner is not None
            and owner.started is not None
            and stale_run(owner.pid, self.host, owner.started) is not None
        ):
            await end_stale_run(owner.pid, host=self.host, started=owner.started)
        elif not wait:
            who = owner.describe() if owner else "another run (it could not be identified)"
            raise PortUnavailableError(
                f"port {self.port} is in use by another tunnelauth run on this machine: {who}",
                port=self.port,
                holder=who,
                hint="wait for it to finish (run without --no-wait to wait), or end it; "
                "--reap ends a stale tunnelauth run for the same host",
            )
        else:
            on_wait(owner)
        end = time.monotonic() + deadline
        while not self.try_acquire():
            if time.monotonic() >= end:
                raise PortUnavailableError(
                    f"port {self.port} stayed locked by another tunnelauth run",
                    port=self.port,
                    hint="end the other run, or use --reap if it is a stale one for this host",
                )
            await asyncio.sleep(POLL)  # a lock has no wake-up to wait on: poll its file


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (psutil's create_time), or None if that cannot be read."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def stale_run(pid: int, host: str, started: float | None = None) -> psutil.Process | None:
    """``pid`` as a process, if it is another tunnelauth run of this user for ``host``.

    With ``started``, it must also be the process that started then: a pid reused by another
    process (even another tunnelauth run) is not the run that wrote a lock.
    """
    import psutil

    if pid == os.getpid():
        return None
    try:
        process = psutil.Process(pid)
        argv = process.cmdline()
        uids = process.uids()
        when = process.create_time()
    except psutil.Error:
        return None
    if uids.real != os.getuid() or uids.effective != os.geteuid():
        return None  # another user's process is never ours to end, even as root
    if started is not None and abs(when - started) > 0.01:
        return None
    if not argv:
        return None
    words = [os.path.basename(a) for a in argv[:3]]
    is_ours = "tunnelauth" in words or any(
        argv[i] == "-m" and argv[i + 1] == "tunnelauth" for i in range(len(argv) - 1)
    )
    return process if is_ours and host in argv[1:] else None


def is_tunnelauth_for(pid: int, host: str) -> bool:
    """Whether ``pid`` is a tunnelauth run of this user (by its command line) for ``host``."""
    return stale_run(pid, host) is not None


async def end_stale_run(
    pid: int, deadline: float = REAP_DEADLINE, *, host: str, started: float | None = None
) -> None:
    """SIGTERM a stale tunnelauth run for ``host`` (it tears down in order); wait until it is gone.

    Anything else (another program, another user's process, a pid now used by a process that
    started at another time than ``started``) is refused, never signalled.
    """
    import psutil

    process = stale_run(pid, host, started)
    if process is None:
        raise PortUnavailableError(
            f"pid {pid} is not a stale tunnelauth run of this user for {host}; not ending it",
            port=0,
        )
    try:
        # psutil checks the pid still names the process looked at (its start time) first.
        process.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    except psutil.AccessDenied as exc:
        raise PortUnavailableError(f"not allowed to end pid {pid}", port=0) from exc
    end = time.monotonic() + deadline
    while _running(process):
        if time.monotonic() >= end:
            raise PortUnavailableError(
                f"the stale tunnelauth run (pid {pid}) did not exit within {deadline:g} s",
                port=0,
                hint=f"end it yourself: kill {pid}",
            )
        # Not our child: no wake-up exists for its exit, so its state is polled.
        await asyncio.sleep(POLL)


def _running(process: object) -> bool:
    """Whether the process still runs (a zombie has finished: its parent just has not reaped it)."""
    import psutil

    assert isinstance(process, psutil.Process)
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
