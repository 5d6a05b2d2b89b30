"""A run's private temp dirs (control sockets, askpass), and sweeping those a killed run left.

Each dir is ``<tmp>/tunnelauth-<pid>-<random>``, made by ``mkdtemp`` (mode 0700, owned by the
user). A run that is SIGKILLed cannot remove its own; the next run that makes one first removes
this user's dirs whose pid has ended, or now belongs to a process that started after the dir
was last changed (the pid was reused). Other users' entries and symlinks are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile

PREFIX = "tunnelauth-"
_NAME = re.compile(r"tunnelauth-(\d+)-[A-Za-z0-9_]+")
_CLOCK_SLACK = 2.0  # seconds: process start times are derived from a boot time in whole seconds


def make(directory: str | None = None) -> str:
    """A fresh 0700 dir for this run (its pid in the name), after sweeping stale ones."""
    sweep(directory)
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=directory)


def sweep(directory: str | None = None) -> list[str]:
    """Remove this user's run dirs whose run has ended; returns the paths removed."""
    base = directory or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if run_alive(int(match.group(1)), since=info.st_mtime):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def run_alive(pid: int, *, since: float) -> bool:
    """Whether ``pid`` may still be the run that used a dir last changed at ``since``."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process now: the run that made the dir has ended
    import psutil  # only when a candidate's pid runs: most starts never pay for the import

    try:
        process = psutil.Process(pid)
        started, uid = process.create_time(), process.uids().real
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: keep it
    return uid == os.getuid() and started <= since + _CLOCK_SLACK
