"""Fleet rows of the benchmark: device-code logins of 10 hosts behind one bastion, vs one host.

The bench's bed gets a fleet (``tests/bed/fleet.py``) of ten targets behind its bastion, every
hop delayed by a relay. Each measurement is one ``tunnelauth nous HOST…`` (a device code on
every host, all at once; the stand-in browser approves each code), timed from process start to
exit, with the tunnelauth process's peak RSS and the SSH authentications each sshd accepted.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.bed import fleet as fleet_bed
from tests.bed.fleet import DelayedPath, Fleet
from tests.bench.measure import RSS_POLL, Bench, ExitClock, MemoryWatch, _last_line, stop_process

FLEET_SIZE = 10
FLEET_RTT_MS = 50
PROVIDER = "nous"  # a device code on the fake hermes 0.19
FLOW = "nous"  # the fake's record name for it


@dataclass
class FleetLogin:
    """One ``tunnelauth nous HOST…`` run."""

    hosts: int
    ok: bool
    error: str = ""
    total: float | None = None  # process start → exit
    rss: int | None = None  # bytes: peak RSS of the tunnelauth process itself
    ssh_rss: int | None = None  # bytes: largest total RSS of its ssh processes at one time
    ssh_count: int = 0
    bastion_auths: int = 0  # publickey authentications the bastion's sshd accepted
    target_auths: dict[str, int] = field(default_factory=dict)


@dataclass
class FleetResults:
    """Every fleet run, by transport and host count."""

    size: int
    rtt_ms: int
    logins: dict[tuple[str, int], list[FleetLogin]] = field(default_factory=dict)
    broken: str = ""  # the fleet could not be set up


@contextlib.contextmanager
def delayed_fleet(bench: Bench, size: int, rtt_ms: int) -> Iterator[tuple[Fleet, DelayedPath]]:
    """A fleet of ``size`` targets on the bench's bed behind delay relays; removed after."""
    fleet = fleet_bed.build(bench.bed, count=size)
    try:
        with fleet.delayed(rtt_ms) as path:
            yield fleet, path
    finally:
        fleet.close()


def fleet_login(
    bench: Bench, fleet: Fleet, path: DelayedPath, backend: str, hosts: Sequence[str]
) -> FleetLogin:
    """``tunnelauth nous HOSTS`` with the stand-in browser approving every code."""
    fleet.reset()
    template = shlex.join(bench.browser_argv(Path(os.devnull))) + " {url}"
    argv = [*bench.tunnelauth, "-F", str(path.ssh_config), "--browser-cmd", template]
    argv += ["--backend", backend, "--batch", "--timeout", "60", PROVIDER, *hosts]
    before_targets, before_bastion = fleet.auth_counts(), bench.bed.auth_count("bastion")
    bench.counter += 1
    log = bench.workdir / f"fleet-{bench.counter}.log"
    with log.open("wb") as out:
        t0 = time.time()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=bench.env
        )
    clock = ExitClock(proc)
    watch = MemoryWatch(proc.pid, str(path.ssh_config))
    while not clock.done.wait(RSS_POLL):
        watch.poll()
    if proc.returncode is None:
        stop_process(proc)
    ok = proc.returncode == 0
    result = FleetLogin(len(hosts), ok, "" if ok else f"exit {proc.returncode}: {_last_line(log)}")
    if clock.at is not None:
        result.total = clock.at - t0
    result.rss = watch.peak or None
    result.ssh_count = len(watch.ssh_pids)
    result.ssh_rss = watch.ssh_peak if watch.ssh_pids else None
    after = fleet.auth_counts()
    result.target_auths = {h: after[h] - before_targets[h] for h in hosts}
    result.bastion_auths = bench.bed.auth_count("bastion") - before_bastion
    if result.ok:
        missing = [h for h in hosts if not (fleet.fake_record(h, FLOW) or {}).get("exchanged")]
        if missing:
            result.ok, result.error = False, f"no credential on {', '.join(missing)}"
    return result


def measure(
    bench: Bench,
    runs: int,
    transports: Sequence[str],
    say: Callable[[str], None] | None = None,
    size: int = FLEET_SIZE,
    rtt_ms: int = FLEET_RTT_MS,
) -> FleetResults:
    """One host and all ``size`` hosts per transport, round-robin, ``runs`` times each."""
    results = FleetResults(size, rtt_ms)
    try:
        with delayed_fleet(bench, size, rtt_ms) as (fleet, path):
            for run in range(runs):
                if say is not None:
                    say(f"fleet of {size}, +{rtt_ms} ms RTT per hop: run {run + 1}/{runs}")
                for transport in transports:
                    for hosts in (fleet.names[:1], fleet.names):
                        login = fleet_login(bench, fleet, path, transport, hosts)
                        results.logins.setdefault((transport, len(hosts)), []).append(login)
                        if not login.ok and say is not None:
                            say(f"fleet {transport} ×{len(hosts)}: FAILED: {login.error}")
    except Exception as exc:  # a bed problem is reported in the table, not raised
        results.broken = " ".join(str(exc).split())[:200]
    return results
