"""Remove beds left behind by killed test runs (owner pid dead), never live ones."""

from __future__ import annotations

import os
import pwd
import re
import sys
from pathlib import Path

from tests.bed import netbed
from tests.bed.netbed import PREFIX, BedRecord

# A bed id is "tabed-<owner pid>-<6 hex>"; every name a bed creates embeds it.
NETNS_RE = re.compile(rf"^({PREFIX}-(\d+)-([0-9a-f]{{6}}))-[br]$")
TMP_RE = re.compile(rf"^({PREFIX}-(\d+)-([0-9a-f]{{6}}))-")


def _netns_names() -> list[str]:
    """Names of the named network namespaces."""
    out = netbed.run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _orphan_records() -> dict[str, BedRecord]:
    """Beds found by name (namespaces, users, dirs) whose owner pid is dead."""
    found: dict[str, tuple[int, str]] = {}
    for name in _netns_names():
        if m := NETNS_RE.match(name):
            found[m.group(1)] = (int(m.group(2)), m.group(3))
    for root in (Path("/tmp"), netbed.ETC_NETNS):
        if root.is_dir():
            for entry in root.iterdir():
                if m := TMP_RE.match(entry.name):
                    found[m.group(1)] = (int(m.group(2)), m.group(3))
    for pw in pwd.getpwall():
        if pw.pw_name.startswith(PREFIX) and (m := netbed.GECOS_RE.search(pw.pw_gecos)):
            found[m.group(2)] = (int(m.group(1)), pw.pw_name[len(PREFIX):])
    orphans = {}
    for bed_id, (pid, hexid) in found.items():
        if netbed.owner_alive(pid):
            continue
        tmps = sorted(Path("/tmp").glob(f"{bed_id}-*"))
        for extra in tmps[1:]:
            netbed.shutil.rmtree(extra, ignore_errors=True)
        orphans[bed_id] = BedRecord(
            id=bed_id, owner_pid=pid, owner_ctime=None, subnet=0,
            tmp=str(tmps[0]) if tmps else f"/tmp/{bed_id}-gone",
            user=f"{PREFIX}{hexid}",
            netns={"bastion": f"{bed_id}-b", "remote": f"{bed_id}-r"}, veth=f"tb{hexid}l",
        )
    return orphans


def reap() -> list[str]:
    """Tear down every bed whose owner is dead; returns a line per thing removed."""
    if os.geteuid() != 0:
        return []
    done: list[str] = []
    stale = {r.id: r for r in netbed.records() if not r.alive()}
    stale.update({k: v for k, v in _orphan_records().items() if k not in stale})
    for record in stale.values():
        done += [f"{record.id}: {line}" for line in netbed.destroy(record)]
    with netbed.registry_lock():
        if netbed.ROUTE_MARKER.exists() and not any(r.alive() for r in netbed.records()):
            netbed.run(["ip", "route", "del", "unreachable", str(netbed.SAFETY_NET)],
                       check=False)
            netbed.ROUTE_MARKER.unlink(missing_ok=True)
            done.append(f"removed safety route {netbed.SAFETY_NET}")
    return done


if __name__ == "__main__":
    for line in reap():
        print(line)
    sys.exit(0)
