"""The bed registry, the teardown of one bed, and the reaper of beds left by killed runs.

Every bed writes a record (its names) to ``/run/tabed`` before creating anything, and
embeds its owner's pid in every name, so a bed whose owner died can always be found and
removed, by record or by name, without touching live beds.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import pwd
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from tests.bed import (
    ETC_NETNS,
    PREFIX,
    SAFETY_NET,
    BedError,
    kill_pids,
    netns_pids,
    run,
    wait_for,
)

REGISTRY = Path("/run/tabed")
ROUTE_MARKER = REGISTRY / "route-added"
GECOS_RE = re.compile(r"tunnelauth-bed(?:-extra)? owner=(\d+) id=(\S+)")


def owner_alive(pid: int, ctime: float | None = None) -> bool:
    """Whether the process that owns a bed is still running (pid reuse checked by ctime)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return ctime is None or abs(proc.create_time() - ctime) < 0.5
    except psutil.Error:
        return False


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialise bed creation/removal across processes (subnet choice, safety route)."""
    REGISTRY.mkdir(mode=0o700, exist_ok=True)
    with (REGISTRY / "lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def safety_route_present() -> bool:
    """Whether the ``unreachable 10.231.0.0/16`` route is in the default namespace."""
    out = run(["ip", "-4", "route", "show", "type", "unreachable", str(SAFETY_NET)]).stdout
    return bool(out.strip())


# -- the persistent description of one bed (what the reaper needs) ---------------------------


@dataclass
class BedRecord:
    """Names of everything one bed creates; written to the registry before creating it."""

    id: str
    owner_pid: int
    owner_ctime: float | None
    subnet: int
    tmp: str
    user: str
    netns: dict[str, str]
    veth: str

    @property
    def path(self) -> Path:
        """Where this record lives in the registry."""
        return REGISTRY / f"{self.id}.json"

    def save(self) -> None:
        """Write the record atomically."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> BedRecord | None:
        """Read a record, or None if it is unreadable."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def alive(self) -> bool:
        """Whether the owning process still runs."""
        return owner_alive(self.owner_pid, self.owner_ctime)


def records() -> list[BedRecord]:
    """Every bed record in the registry."""
    if not REGISTRY.is_dir():
        return []
    found = (BedRecord.load(p) for p in sorted(REGISTRY.glob(f"{PREFIX}-*.json")))
    return [r for r in found if r is not None]


def used_subnets() -> set[int]:
    """Third octets of 10.231.N.0/24 taken by live beds or by addresses on this host."""
    used = {r.subnet for r in records() if r.alive()}
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(addr.address)
                if ip in SAFETY_NET:
                    used.add(int(str(ip).split(".")[2]))
    return used


def netns_inode(ns: str) -> int | None:
    """Inode of a named network namespace, or None if the name is gone."""
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def namespace_held(inode: int) -> bool:
    """Whether any process still sits in the network namespace with this inode."""
    target = f"net:[{inode}]"
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/ns/net") == target:
                    return True
    return False


def _wait_released(ns: str, inode: int) -> None:
    """Namespace deletion is asynchronous: wait until the name is gone and nothing holds it."""
    wait_for(lambda: netns_inode(ns) is None, timeout=5, what=f"{ns} to unmount")
    wait_for(lambda: not namespace_held(inode), timeout=5, what=f"{ns} to be released")


def destroy(record: BedRecord) -> list[str]:
    """Remove everything a bed record names, in reverse order of creation; idempotent."""
    done: list[str] = []
    # Laptop-side processes naming the bed (e.g. a backgrounded ssh master a test left).
    users = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.pid != os.getpid() and any(record.tmp in a for a in p.info["cmdline"] or ())
    ]
    if users:
        kill_pids(users)
        done.append(f"killed {len(users)} process(es) using {record.tmp}")
    for ns in record.netns.values():
        pids = netns_pids(ns)
        if pids:
            kill_pids(pids)
            done.append(f"killed {len(pids)} process(es) in {ns}")
    try:
        pw = pwd.getpwnam(record.user)
        # Only a user this bed created (its GECOS names the bed) is ever removed.
        uid: int | None = pw.pw_uid if f"id={record.id}" in pw.pw_gecos else None
    except KeyError:
        uid = None
    if uid is not None:
        # Zombies are already dead (this machine's init reaps them about once a second).
        strays = [
            p.pid
            for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"] is not None
            and p.info["uids"].real == uid
            and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if strays:
            kill_pids(strays)
            done.append(f"killed {len(strays)} process(es) of {record.user}")
    if Path(f"/sys/class/net/{record.veth}").exists():
        run(["ip", "link", "del", record.veth], check=False)
        done.append(f"deleted veth {record.veth}")
    for ns in record.netns.values():
        inode = netns_inode(ns)
        if inode is None:
            continue
        run(["ip", "netns", "del", ns], check=False)
        _wait_released(ns, inode)
        done.append(f"deleted netns {ns}")
    wait_for(
        lambda: not Path(f"/sys/class/net/{record.veth}").exists(),
        timeout=5,
        what=f"veth {record.veth} to disappear",
    )
    if uid is not None:
        run(["userdel", "-r", record.user], check=False)
        if _user_exists(record.user):
            raise BedError(f"userdel {record.user} failed")
        done.append(f"deleted user {record.user}")
    done += remove_extras(record.id)
    for ns in record.netns.values():
        if (ETC_NETNS / ns).exists():
            shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
            done.append(f"removed {ETC_NETNS / ns}")
    if Path(record.tmp).name.startswith(f"{record.id}-") and Path(record.tmp).exists():
        shutil.rmtree(record.tmp, ignore_errors=True)
        done.append(f"removed {record.tmp}")
    with registry_lock():
        record.path.unlink(missing_ok=True)
        if ROUTE_MARKER.exists() and not any(r.alive() for r in records()):
            run(["ip", "route", "del", "unreachable", str(SAFETY_NET)], check=False)
            ROUTE_MARKER.unlink(missing_ok=True)
            done.append(f"removed safety route {SAFETY_NET}")
    return done


SUDOERS_D = Path("/etc/sudoers.d")


def remove_extras(bed_id: str) -> list[str]:
    """A bed's extras: its sudoers drop-ins and the users whose GECOS name it."""
    done: list[str] = []
    for dropin in (SUDOERS_D / bed_id, SUDOERS_D / f"{bed_id}-shells"):
        if dropin.exists():
            dropin.unlink()
            done.append(f"removed {dropin}")
    for pw in pwd.getpwall():
        extra = pw.pw_gecos.startswith("tunnelauth-bed-extra ")
        if extra and f"id={bed_id}" in pw.pw_gecos.split():
            strays = [
                p.pid
                for p in psutil.process_iter(["uids"])
                if p.info["uids"] and p.info["uids"].real == pw.pw_uid
            ]
            if strays:
                kill_pids(strays)
            run(["userdel", "-r", pw.pw_name], check=False)
            done.append(f"deleted user {pw.pw_name}")
    return done


def _user_exists(name: str) -> bool:
    """Whether a local user of that name exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# A bed id is "tabed-<owner pid>-<6 hex>"; every name a bed creates embeds it. Namespaces:
# `-b` bastion, `-r` remote, `-f<fleet>t<target>` a fleet target (tests/bed/fleet.py).
NETNS_RE = re.compile(rf"^({PREFIX}-(\d+)-([0-9a-f]{{6}}))-([br]|f\d+t\d+)$")
TMP_RE = re.compile(rf"^({PREFIX}-(\d+)-([0-9a-f]{{6}}))-")


def _netns_names() -> list[str]:
    """Names of the named network namespaces."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _orphan_records() -> dict[str, BedRecord]:
    """Beds found by name (namespaces, users, dirs) whose owner pid is dead."""
    found: dict[str, tuple[int, str]] = {}
    targets: dict[str, dict[str, str]] = {}  # bed id → fleet target role → namespace
    etc = [e.name for e in ETC_NETNS.iterdir()] if ETC_NETNS.is_dir() else []
    for name in [*_netns_names(), *etc]:  # /etc/netns/<ns> may outlive its namespace
        if m := NETNS_RE.match(name):
            found[m.group(1)] = (int(m.group(2)), m.group(3))
            if m.group(4) not in ("b", "r"):
                targets.setdefault(m.group(1), {})[m.group(4)] = name
    for root in (Path("/tmp"), ETC_NETNS):
        if root.is_dir():
            for entry in root.iterdir():
                if m := TMP_RE.match(entry.name):
                    found[m.group(1)] = (int(m.group(2)), m.group(3))
    for pw in pwd.getpwall():
        if pw.pw_name.startswith(PREFIX) and (m := GECOS_RE.search(pw.pw_gecos)):
            found[m.group(2)] = (int(m.group(1)), pw.pw_name[len(PREFIX) :])
    orphans = {}
    for bed_id, (pid, hexid) in found.items():
        if owner_alive(pid):
            continue
        tmps = sorted(Path("/tmp").glob(f"{bed_id}-*"))
        for extra in tmps[1:]:
            shutil.rmtree(extra, ignore_errors=True)
        orphans[bed_id] = BedRecord(
            id=bed_id,
            owner_pid=pid,
            owner_ctime=None,
            subnet=0,
            tmp=str(tmps[0]) if tmps else f"/tmp/{bed_id}-gone",
            user=f"{PREFIX}{hexid}",
            netns={
                **targets.get(bed_id, {}),
                "bastion": f"{bed_id}-b",
                "remote": f"{bed_id}-r",
            },
            veth=f"tb{hexid}l",
        )
    return orphans


def reap() -> list[str]:
    """Tear down every bed whose owner is dead; returns a line per thing removed."""
    if os.geteuid() != 0:
        return []
    done: list[str] = []
    stale = {r.id: r for r in records() if not r.alive()}
    stale.update({k: v for k, v in _orphan_records().items() if k not in stale})
    for record in stale.values():
        done += [f"{record.id}: {line}" for line in destroy(record)]
    with registry_lock():
        if ROUTE_MARKER.exists() and not any(r.alive() for r in records()):
            run(["ip", "route", "del", "unreachable", str(SAFETY_NET)], check=False)
            ROUTE_MARKER.unlink(missing_ok=True)
            done.append(f"removed safety route {SAFETY_NET}")
    return done


if __name__ == "__main__":
    for line in reap():
        print(line)
    sys.exit(0)
