"""A fleet re-auth as a user runs it, on the fleet bed (``tests/bed/fleet.py``), every backend.

Five targets behind the bastion whose hermes installs differ, so one command meets several
flows: ``tunnelauth xai`` is a device code on hermes 0.19 and a loopback callback on the fixed
port 56121 on an older (``legacy``) install; ``tunnelauth mcp NAME`` picks a callback port per
login. One target's sshd is down, ``fleet-dark`` has no route, one target's login is refused by
the provider. What is checked is what the user sees (the ``tunnelauth: HOST: …`` lines, the final
table, the summary, the exit status, ``--json`` events), one SSH authentication per reachable
target, each target's own hermes records, and that nothing stays on any host.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import psutil
import pytest

from tests.bed import wait_for
from tests.bed.fleet import DARK, Fleet
from tests.bed.netbed import Bed
from tests.e2e.conftest import BACKENDS
from tests.e2e.helpers import Result, tunnelauth
from tunnelauth.jsonout import validate
from tunnelauth.status import ExitStatus

MIXED_XAI = ["fleet1", "fleet2", "fleet3", "fleet4", DARK, "fleet5"]
XAI_LEGACY_PORT = 56121


@dataclass
class AuthCounts:
    """SSH authentications accepted by each target's sshd and by the bastion since a moment.

    Every target behind the bastion shares one connection to it: one bastion authentication
    per fleet run, whatever the number of hosts.
    """

    fleet: Fleet
    bed: Bed
    targets: dict[str, int] = field(default_factory=dict)
    bastion: int = 0

    @classmethod
    def start(cls, fleet: Fleet, bed: Bed) -> AuthCounts:
        """The counts now."""
        return cls(fleet, bed, fleet.auth_counts(), bed.auth_count("bastion"))

    def moved(self) -> dict[str, int]:
        """How many authentications each target (and ``bastion``) accepted since ``start``."""
        now = self.fleet.auth_counts()
        moved = {name: now[name] - self.targets[name] for name in now}
        moved["bastion"] = self.bed.auth_count("bastion") - self.bastion
        return moved

    def expect_targets(self, expected: dict[str, int]) -> dict[str, int]:
        """Wait until every target moved by exactly ``expected`` (0 if unnamed) and the bastion
        by one (the fleet's shared hop); all moves."""
        want = {name: expected.get(name, 0) for name in self.fleet.names} | {"bastion": 1}

        def all_moved() -> bool:
            return self.moved() == want

        try:
            wait_for(all_moved, timeout=5, what=f"authentications {want}")
        except Exception as exc:
            raise AssertionError(f"{exc}: saw {self.moved()}") from None
        return self.moved()


def events(stdout: str) -> list[dict[str, object]]:
    """The ``--json`` events, each checked against the schema."""
    found = [json.loads(line) for line in stdout.splitlines()]
    for event in found:
        assert validate(event) == [], event
    return found


def fleet_rows(found: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """``fleet_done``'s per-host entries by host, in the order given; it is the last event."""
    assert found and found[-1]["event"] == "fleet_done", found[-1:]
    assert [e["event"] for e in found].count("fleet_done") == 1
    hosts = found[-1]["hosts"]
    assert isinstance(hosts, list)
    return {str(h["host"]): h for h in hosts}


def of(found: list[dict[str, object]], target: str, name: str) -> list[dict[str, object]]:
    """One host's events of one kind."""
    return [e for e in found if e.get("target") == target and e["event"] == name]


def table_row(stderr: str, host: str) -> str:
    """The final table's row for ``host`` (the last one printed)."""
    rows = [
        ln for ln in stderr.splitlines() if re.match(rf"^[│|┃]\s*{re.escape(host)}\s*[│|┃]", ln)
    ]
    assert rows, f"no table row for {host}:\n{stderr}"
    return rows[-1]


def run_fleet(bed: Bed, fleet: Fleet, tmp: Path, backend: str, *args: str) -> Result:
    """``tunnelauth ARGS`` with the fleet's ssh config, the bed's Chromium, CI set."""
    return tunnelauth(bed, *args, tmp=tmp, backend=backend, ssh_config=fleet.ssh_config)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_provider_over_a_fleet_of_mixed_hermes_installs(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    f = fleet_fresh
    for name in ("fleet2", "fleet5"):
        f.set_fake(name, version="legacy")  # xai: loopback callback on 56121, not a device code
    f.set_fake("fleet3", mode="deny")  # the provider refuses this host's login
    remote_record = bed.fake_record("xai-oauth")
    counts = AuthCounts.start(f, bed)
    with f.stopped("fleet4"):
        result = run_fleet(bed, f, tmp_path, backend, "xai", *MIXED_XAI, "--json")
    moved = counts.expect_targets({"fleet1": 1, "fleet2": 1, "fleet3": 1, "fleet5": 1})

    # The first failed host in the order named decides the exit status: fleet3's refusal.
    assert result.code == ExitStatus.LOGIN_FAILED, result
    found = events(result.stdout)
    rows = fleet_rows(found)
    assert list(rows) == MIXED_XAI, rows
    assert found[-1]["exit_status"] == ExitStatus.LOGIN_FAILED
    logins = {host: (row["exit_status"], row["login"]) for host, row in rows.items()}
    assert logins == {
        "fleet1": (0, "device"),
        "fleet2": (0, "callback"),
        "fleet3": (ExitStatus.LOGIN_FAILED, None),
        "fleet4": (ExitStatus.SSH_FAILED, None),
        DARK: (ExitStatus.SSH_FAILED, None),
        "fleet5": (0, "callback"),
    }, (logins, moved)
    # Every event but the summary names its host; each host ended once, as its row says.
    for event in found[:-1]:
        assert event.get("target") in rows, event
    for host, row in rows.items():
        ends = of(found, host, "succeeded") + of(found, host, "failed")
        assert [e["exit_status"] for e in ends] == [row["exit_status"]], (host, ends)
    assert {e["target"] for e in found if e["event"] == "device_code"} == {"fleet1", "fleet3"}
    for host in ("fleet2", "fleet5"):
        assert [e["port"] for e in of(found, host, "listening")] == [XAI_LEGACY_PORT], host
    assert not any(of(found, host, "connected") for host in ("fleet4", DARK))

    # The human side (stderr): lines to act on, each failure's reason, the table, the summary.
    err = result.stderr
    assert re.search(r"tunnelauth: fleet1: enter the code [A-Z]{4}-[A-Z]{4} at https://", err)
    for host in ("fleet1", "fleet2", "fleet5"):
        assert f"tunnelauth: {host}: ✓ " in err, err
        assert "✓" in table_row(err, host)
    assert "tunnelauth: fleet3: ✗ " in err and "(exit 6)" in table_row(err, "fleet3"), err
    for host, reason in (("fleet4", "Connection refused"), (DARK, "No route to host")):
        assert f"tunnelauth: {host}: ✗ cannot connect to {host}" in err, err
        assert "(exit 3)" in table_row(err, host), err
        # paramiko drops the bastion's reason text (it keeps only the code: "Connect failed").
        if backend != "paramiko":
            assert reason in table_row(err, host), err
    assert "3 of 6 hosts logged in" in err, err

    # Each host's own hermes did its own flow; the down hosts and the bed's remote saw nothing.
    for host in ("fleet2", "fleet5"):
        record = f.fake_record(host, "xai-oauth")
        assert record is not None and record["exchanged"] is True, (host, record)
        assert (record["version"], record["port"]) == ("0.17.2", XAI_LEGACY_PORT), record
    fleet1 = f.fake_record("fleet1", "xai-oauth")
    assert fleet1 is not None and fleet1["exchanged"] is True, fleet1
    assert fleet1.get("port") is None, "hermes 0.19 logs xai in with a device code"
    refused = f.fake_record("fleet3", "xai-oauth")
    assert refused is not None and refused["exchanged"] is False, refused
    assert refused["outcome"] == "failed", refused
    assert f.fake_record("fleet4", "xai-oauth") is None
    assert bed.fake_record("xai-oauth") == remote_record


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_mcp_server_over_the_fleet_one_callback_port_per_login(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    f = fleet_fresh
    hosts = ["fleet1", "fleet3", "fleet5"]
    counts = AuthCounts.start(f, bed)
    result = run_fleet(bed, f, tmp_path, backend, "mcp", "linear", *hosts, "--json")
    counts.expect_targets({host: 1 for host in hosts})

    assert result.code == ExitStatus.OK, result
    found = events(result.stdout)
    rows = fleet_rows(found)
    assert [(h, r["exit_status"], r["login"]) for h, r in rows.items()] == [
        (host, 0, "callback") for host in hosts
    ], rows
    assert found[-1]["exit_status"] == ExitStatus.OK
    # One host after another (a browser login each), each on the port its own hermes picked.
    wanted = ("connecting", "succeeded")
    order = [(e["event"], e["target"]) for e in found if e["event"] in wanted]
    assert order == [(event, host) for host in hosts for event in wanted], order
    for host in hosts:
        record = f.fake_record(host, "mcp-linear")
        assert record is not None and record["exchanged"] is True, (host, record)
        assert [e["port"] for e in of(found, host, "listening")] == [record["port"]], host
        assert (f.hermes_home(host) / "mcp-tokens" / "linear.json").exists(), host
    for host in ("fleet2", "fleet4"):
        assert f.fake_record(host, "mcp-linear") is None, host
    err = result.stderr
    assert all("✓" in table_row(err, host) for host in hosts), err
    assert "3 of 3 hosts logged in" in err, err


# -- Ctrl-C ------------------------------------------------------------------------------------


def _terminal_fleet(
    bed: Bed, fleet: Fleet, tmp: Path, backend: str, hosts: list[str]
) -> pexpect.spawn:
    """``tunnelauth nous HOSTS`` at a terminal (CI unset), its JSON events into a file."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    command = ["tunnelauth", "-F", str(fleet.ssh_config), "--backend", backend, "--no-browser"]
    command += ["nous", *hosts, "--json"]
    script = f"trap 'true' INT; {' '.join(command)} > {tmp}/events.jsonl; echo EXIT=$?"
    return pexpect.spawn(
        "bash", ["-c", script], env=env, encoding="utf-8", timeout=60, dimensions=(50, 200)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_ends_every_hosts_login_and_leaves_nothing(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    f = fleet_fresh
    hosts = f.names
    shell = _terminal_fleet(bed, f, tmp_path, backend, hosts)
    # Every host shows its device code: all five logins wait for approval at once.
    pending = set(hosts)
    while pending:
        shell.expect(r"tunnelauth: (fleet\d+): enter the code")
        pending.discard(shell.match.group(1))
    wait_for(
        lambda: all((f.fake_record(h, "nous") or {}).get("outcome") == "running" for h in hosts),
        timeout=10,
        what="every host's hermes waiting",
    )
    shell.sendintr()  # the terminal sends SIGINT to the whole foreground process group
    shell.expect(r"EXIT=(\d+)")
    shown, code = shell.before or "", int(shell.match.group(1))
    shell.expect(pexpect.EOF)
    assert code == ExitStatus.INTERRUPTED, shown
    assert "interrupted by SIGINT; every host was closed" in shown, shown
    for host in hosts:
        assert f"tunnelauth: {host}: ✗ interrupted; everything was closed" in shown, shown

    found = events((tmp_path / "events.jsonl").read_text())
    for host in hosts:
        failed = of(found, host, "failed")
        assert [e["exit_status"] for e in failed] == [ExitStatus.INTERRUPTED], (host, found)
        assert not of(found, host, "succeeded"), host
        record = f.fake_record(host, "nous")
        assert record is not None, host
        # Each host's hermes got Ctrl-C through its PTY (not a dropped connection) and ended.
        assert record["outcome"] == "cancelled", (host, record)
        assert record["exchanged"] is False, record
    # fleet_fresh and no_leftovers: no ssh, listener, control socket or remote process stays.
    assert f.login_processes() == []


def test_sigterm_to_the_fleet_process_alone_tears_every_host_down(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path
) -> None:
    """A supervisor's SIGTERM reaches tunnelauth only (not its ssh children): still all closed."""
    f = fleet_fresh
    hosts = f.names[:3]
    shell = _terminal_fleet(bed, f, tmp_path, "openssh", hosts)
    pending = set(hosts)
    while pending:
        shell.expect(r"tunnelauth: (fleet\d+): enter the code")
        pending.discard(shell.match.group(1))
    (tunnelauth_process,) = psutil.Process(shell.pid).children()  # bash runs it in the foreground
    os.kill(tunnelauth_process.pid, signal.SIGTERM)
    shell.expect(r"EXIT=(\d+)")
    code = int(shell.match.group(1))
    shell.expect(pexpect.EOF)
    assert code == ExitStatus.INTERRUPTED
    for host in hosts:
        record = f.fake_record(host, "nous")
        assert record is not None and record["outcome"] == "cancelled", (host, record)
    assert f.login_processes() == []
