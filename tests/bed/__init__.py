"""The bed's shared helpers: commands with deadlines, polling, namespaces, killing by PID.

The bed itself is in ``netbed.py``; its registry, teardown and reaper in ``reaper.py``;
the headless browser in ``chromium.py``; the leftovers check in ``leftovers.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

PREFIX = "tabed"
SAFETY_NET = ipaddress.ip_network("10.231.0.0/16")
SSHD = "/usr/sbin/sshd"
ETC_NETNS = Path("/etc/netns")

T = TypeVar("T")


class BedError(RuntimeError):
    """The bed could not be built or torn down."""


# -- small helpers --------------------------------------------------------------------------


def run(
    argv: Sequence[str], *, timeout: float = 10.0, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; raise BedError with its stderr when it fails."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BedError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise BedError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BedError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (from /proc)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def netns_pids(ns: str) -> list[int]:
    """Pids of the processes inside network namespace ``ns`` (empty if it is gone)."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _running(proc: psutil.Process) -> bool:
    """Whether a process still runs (a zombie has finished; init reaps it later)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_pids(pids: Sequence[int], *, timeout: float = 3.0) -> None:
    """SIGTERM the given pids, SIGKILL what is left at the deadline, wait until they end."""
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
    for sig in (signal.SIGKILL, None):
        with contextlib.suppress(BedError):
            wait_for(
                lambda: not any(_running(p) for p in procs),
                timeout=timeout,
                what="processes to end",
            )
            return
        if sig is None:
            raise BedError(f"processes survived SIGKILL: {[p.pid for p in procs]}")
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)


# A process the test user leaves running on a host, detached from the ssh session that began it.
BACKGROUND_JOB = "setsid python3 -c 'import signal; signal.pause()' </dev/null >/dev/null 2>&1 &"


@contextlib.contextmanager
def background_job(
    ssh: Callable[[str], subprocess.CompletedProcess[str]], pids: Callable[[], list[int]]
) -> Iterator[list[int]]:
    """Start :data:`BACKGROUND_JOB` with ``ssh`` and yield its pids (as ``pids`` finds them).

    The job is ended however the block ends, so a failed check in it does not leave the job to
    the next tests' own leftover checks.
    """
    try:
        assert ssh(BACKGROUND_JOB).returncode == 0
        yield wait_for(pids, timeout=5, what="the background job")
    finally:
        kill_pids(pids())


def argv(template: str, **values: object) -> list[str]:
    """Split a command template first, then fill each word: ``argv("ip -n {ns} link", ns=x)``."""
    return [word.format(**values) for word in template.split()]
