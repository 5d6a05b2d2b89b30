"""Before/after snapshots of what a bed test could leave behind, and the check that it did not.

Only things that can be ours are looked at: processes descended from this test process
or naming the bed's temp dir (the bed's own daemons excepted), listeners owned by those,
files under the bed's temp dir or with tunnelauth's prefix in the system temp dir, and the
test user's processes in every bed namespace (a fleet's targets included). Unrelated
processes on the machine are never matched.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.bed import PREFIX
from tests.bed.netbed import Bed
from tests.bed.reaper import netns_inode

WATCHED_NAMES = {"ssh", "sshd", "tunnelauth"}
WATCHED_PREFIXES = ("chrom",)  # chromium, chrome_crashpad_handler, ...
TEMP_PREFIXES = ("tunnelauth-", "chromium-profile-")


@dataclass(frozen=True, order=True)
class Item:
    """One thing that exists: identity (for comparison) and a description (for the report)."""

    key: tuple[object, ...]
    desc: str = field(compare=False)


@dataclass(frozen=True)
class Snapshot:
    """What existed at one moment, plus the bed it was taken for."""

    bed: Bed | None
    processes: frozenset[Item]
    listeners: frozenset[Item]
    paths: frozenset[Item]
    bed_user: frozenset[Item]

    def minus(self, before: Snapshot) -> dict[str, list[Item]]:
        """What exists now but did not in ``before``, per category (empty ones dropped)."""
        diff = {
            "processes": sorted(self.processes - before.processes),
            "listeners": sorted(self.listeners - before.listeners),
            "paths": sorted(self.paths - before.paths),
            "bed user processes": sorted(self.bed_user - before.bed_user),
        }
        return {k: v for k, v in diff.items() if v}


def _is_watched(name: str, cmdline: list[str]) -> bool:
    """ssh, sshd, Chromium (and its wrapper) or tunnelauth, judged by name and argv."""
    if name in WATCHED_NAMES or name.startswith(WATCHED_PREFIXES):
        return True
    base = [os.path.basename(arg) for arg in cmdline[:3]]
    if "tunnelauth" in base or "chromium-browser" in base:
        return True
    return any(
        a == "-m" and b.split(".")[0] == "tunnelauth" for a, b in itertools.pairwise(cmdline)
    )


def _ours(bed: Bed | None) -> dict[int, psutil.Process]:
    """Live processes that may be ours: descendants, or argv naming the bed's temp dir."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    if bed is not None:
        marker = str(bed.tmp)
        for proc in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                found.setdefault(proc.pid, proc)
    excluded = {me.pid, *(p.pid for p in me.parents())}
    if bed is not None:
        # The bed's own servers (a fleet target's sshd restarted by a test is not left behind).
        excluded |= {daemon.pid for daemon in bed.daemons}
    alive = {}
    for pid, proc in found.items():
        with contextlib.suppress(psutil.Error):
            if pid not in excluded and proc.status() != psutil.STATUS_ZOMBIE:
                alive[pid] = proc
    return alive


def _describe(proc: psutil.Process) -> str:
    """pid and argv of a process, for a failure message."""
    with contextlib.suppress(psutil.Error):
        return f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    return f"pid {proc.pid}: (gone)"


def _processes(ours: dict[int, psutil.Process]) -> frozenset[Item]:
    """The watched kinds among our processes."""
    items = set()
    for pid, proc in ours.items():
        with contextlib.suppress(psutil.Error):
            if _is_watched(proc.name(), proc.cmdline()):
                items.add(Item(("proc", pid, proc.create_time()), _describe(proc)))
    return frozenset(items)


def _listeners(ours: dict[int, psutil.Process]) -> frozenset[Item]:
    """TCP LISTEN sockets in the default namespace held by this process or ours."""
    owners = {os.getpid(), *ours}
    items = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in owners and conn.laddr:
            addr = f"{conn.laddr.ip}:{conn.laddr.port}"
            owner = "this test process" if conn.pid == os.getpid() else _describe(ours[conn.pid])
            items.add(Item(("listen", addr, conn.pid), f"{addr} held by {owner}"))
    return frozenset(items)


def stale_locks(directory: Path, ours: dict[int, psutil.Process]) -> set[Item]:
    """Port lock files whose owner (the pid written in them) is gone, or is one of ours."""
    items = set()
    with contextlib.suppress(OSError):
        for lock in directory.glob("*.lock"):
            try:
                pid = int(json.loads(lock.read_text())["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                pid = 0
            if pid in ours or not psutil.pid_exists(pid):
                items.add(Item(("path", str(lock)), f"{lock} (port lock of pid {pid})"))
    return items


def _used_by_others(ours: dict[int, psutil.Process]) -> str:
    """The argv of every live process that is not ours, joined (to spot others' temp dirs)."""
    skip = {os.getpid(), *ours}
    words: list[str] = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid not in skip:
            words += proc.info["cmdline"] or ()
    return "\0".join(words)


def _other_beds_user(entry: Path, bed: Bed | None) -> bool:
    """Whether a temp entry belongs to the test user of another bed (not this bed's users)."""
    try:
        owner = pwd.getpwuid(entry.lstat().st_uid).pw_name
    except (OSError, KeyError):
        return False
    mine = bed is not None and owner.startswith(bed.user)  # the bed's user and its extras
    return owner.startswith(PREFIX) and not mine


def _paths(bed: Bed | None, ours: dict[int, psutil.Process]) -> frozenset[Item]:
    """Sockets and tunnelauth/Chromium temp entries under the bed's temp and the system temp."""
    items = set()
    system_tmp = Path(tempfile.gettempdir())
    others: str | None = None
    with contextlib.suppress(OSError):
        for entry in system_tmp.iterdir():
            if entry.name.startswith("tunnelauth-locks-"):
                # Shared by every run of this user: only a lock file of a run that is gone
                # (or of one of ours) is left behind; the directory itself is not.
                items |= stale_locks(entry, ours)
                continue
            if entry.name.startswith("tunnelauth-"):
                if _other_beds_user(entry, bed):
                    continue  # made on another session's remote (/tmp is shared by all)
                # Another run on this machine may be using one right now: not ours.
                others = _used_by_others(ours) if others is None else others
                if str(entry) not in others:
                    items.add(Item(("path", str(entry)), str(entry)))
    if bed is not None:
        for dirpath, dirnames, filenames in os.walk(bed.tmp):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    is_sock = not os.path.isdir(path) and Path(path).is_socket()
                    if is_sock or name.startswith(TEMP_PREFIXES):
                        items.add(Item(("path", path), path + (" (socket)" if is_sock else "")))
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIXES)]
    return frozenset(items)


def _bed_user(bed: Bed | None) -> frozenset[Item]:
    """The test user's processes in the bed namespaces, its sshd sessions excluded."""
    if bed is None:
        return frozenset()
    # One pass over the user's processes (a fleet adds up to ten namespaces per snapshot).
    by_inode = {}
    for ns in bed.netns.values():
        inode = netns_inode(ns)
        if inode is not None:
            by_inode[f"net:[{inode}]"] = ns
    items = set()
    for proc in psutil.process_iter(["uids", "name", "status"]):
        info = proc.info
        if info["uids"] is None or info["uids"].real != bed.uid:
            continue
        if info["name"] == "sshd" or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(OSError, psutil.Error):
            where = by_inode.get(os.readlink(f"/proc/{proc.pid}/ns/net"))
            if where is not None:
                key = ("remote", proc.pid, proc.create_time())
                items.add(Item(key, f"{_describe(proc)} (in {where})"))
    return frozenset(items)


def snapshot(bed: Bed | None = None) -> Snapshot:
    """Record what exists now (call before the code under test runs)."""
    ours = _ours(bed)
    return Snapshot(bed, _processes(ours), _listeners(ours), _paths(bed, ours), _bed_user(bed))


def new_since(before: Snapshot) -> dict[str, list[Item]]:
    """What exists now that did not exist at ``before``."""
    return snapshot(before.bed).minus(before)


def assert_nothing_left(before: Snapshot, timeout: float = 5.0) -> None:
    """Wait up to ``timeout`` s for new things to go; fail listing whatever remains."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        left = new_since(before)
        if not left:
            return
        if time.monotonic() >= deadline:
            lines = [
                f"  {kind}:" + "".join(f"\n    {item.desc}" for item in items)
                for kind, items in left.items()
            ]
            raise AssertionError(f"left behind after {timeout}s:\n" + "\n".join(lines))
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
