"""The fleet extra is honest: every target is its own host behind the bastion, with its own log
and hermes state; the OTP bastion asks once per connection; down hosts fail; nothing stays."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.bed import ETC_NETNS, BedError, background_job, leftovers, netbed, reaper, run, wait_for
from tests.bed import fleet as fleet_bed
from tests.bed.fleet import Fleet
from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus

pytestmark = [pytest.mark.bed, pytest.mark.usefixtures("no_leftovers")]


def start_ssh(
    f: Fleet,
    host: str,
    *command: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """``ssh -F <config> host command`` started in the background."""
    return subprocess.Popen(
        ["ssh", "-F", str(config or f.ssh_config), host, *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env} if env else None,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    """Wait for a started ssh: (exit code, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def counted(f: Fleet, before: dict[str, int], expected: dict[str, int]) -> None:
    """Wait until every target's auth count moved by exactly ``expected`` (0 if unnamed)."""

    def moved() -> dict[str, int]:
        now = f.auth_counts()
        return {name: now[name] - before[name] for name in now}

    want = {name: expected.get(name, 0) for name in f.names}
    wait_for(lambda: moved() == want, timeout=5, what=f"auth counts {want}")


def test_every_target_is_its_own_host_behind_the_bastion(fleet: Fleet, bed: Bed) -> None:
    before, bastion = fleet.auth_counts(), bed.auth_count("bastion")
    # SSH_CONNECTION's third field is the address the session landed on.
    probe = 'echo "$HERMES_HOME $SSH_CONNECTION" && getent hosts idp.test'
    procs = {name: start_ssh(fleet, name, probe) for name in fleet.names}
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, err
        home, _client, _port, server, _ = out.splitlines()[0].split()
        assert (home, server) == (str(fleet.hermes_home(name)), fleet.ip(name)), out
        assert out.splitlines()[1].split() == [fleet.targets[name].gateway_ip, "idp.test"]
    counted(fleet, before, {name: 1 for name in fleet.names})
    wait_for(
        lambda: bed.auth_count("bastion") - bastion == len(fleet.names),
        timeout=5,
        what="one bastion login per jump",
    )


def test_auth_counts_move_by_one_per_connection(fleet: Fleet) -> None:
    before = fleet.auth_counts()
    for host in ("fleet2", "fleet4", "fleet2"):
        assert fleet.ssh(host, "true").returncode == 0
    counted(fleet, before, {"fleet2": 2, "fleet4": 1})


def test_targets_are_reachable_only_through_the_bastion(fleet: Fleet) -> None:
    with pytest.raises(OSError), socket.create_connection((fleet.ip("fleet1"), 22), timeout=3):
        pass
    direct = fleet.ssh("fleet1", "true", options=["-o", "ProxyJump=none"])
    assert direct.returncode == 255


def test_ten_concurrent_jumps_through_each_bastion(fleet10: Fleet, bed: Bed) -> None:
    before, prompts = fleet10.auth_counts(), fleet10.otp_prompts()
    procs = [start_ssh(fleet10, name, "true") for name in fleet10.names]
    procs += [start_ssh(fleet10, name, "true", env=fleet10.otp_env()) for name in fleet10.otp_names]
    results = [finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0] * 20, results
    counted(fleet10, before, {name: 2 for name in fleet10.names})
    assert fleet10.otp_prompts() - prompts == 10
    sshd_config = (bed.tmp / "bastion" / "sshd_config").read_text()
    assert "MaxStartups 200:30:400" in sshd_config and "MaxSessions 100" in sshd_config


def test_fake_hermes_settings_are_per_target(fleet_fresh: Fleet, bed: Bed) -> None:
    remote_before = bed.fake_json.read_text()
    fleet_fresh.set_fake("fleet1", version="legacy")
    fleet_fresh.set_fake("fleet2", version="0.21")
    expected = {"fleet1": "v0.17.2", "fleet2": "v0.21.0"}
    procs = {
        name: start_ssh(fleet_fresh, name, bed.hermes_path, "--version")
        for name in fleet_fresh.names
    }
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, err
        assert out.strip() == f"Hermes Agent {expected.get(name, 'v0.19.0')}", name
    assert bed.fake_json.read_text() == remote_before, "the remote's fake.json is not the fleet's"


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 20) -> re.Match[str]:
    """Read a child's stdout until ``pattern`` matches (or fail at the deadline)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()  # raw reads: a text wrapper's buffer hides lines from select
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            if found := re.search(pattern, seen.decode(errors="replace")):
                return found
    raise AssertionError(f"{pattern!r} not seen within {timeout}s: {seen!r}")


def test_device_logins_reach_the_provider_and_record_per_target(
    fleet_fresh: Fleet, bed: Bed
) -> None:
    remote_record = bed.fake_record("xai-oauth")
    approve = ssl.create_default_context(cafile=str(bed.ca_file))
    logins = {}
    for name in ("fleet2", "fleet4"):
        logins[name] = start_ssh(fleet_fresh, name, bed.hermes_path, "auth", "add", "xai-oauth")
    for proc in logins.values():
        user_code = read_until(proc, r"enter code: (\S+)").group(1)
        url = f"https://{bed.bastion_ip}:{bed.idp_port}/device?user_code={user_code}"
        with urllib.request.urlopen(url, context=approve, timeout=10) as page:
            assert "Device approved" in page.read().decode()
    for name, proc in logins.items():
        code, _out, err = finish(proc)
        assert code == 0, err
        record = fleet_fresh.fake_record(name, "xai-oauth")
        assert record is not None and record["exchanged"] is True, record
        assert (fleet_fresh.hermes_home(name) / "auth.json").exists()
    for name in ("fleet1", "fleet3", "fleet5"):
        assert fleet_fresh.fake_record(name, "xai-oauth") is None
    assert bed.fake_record("xai-oauth") == remote_record, "the remote's home is untouched"


def test_otp_bastion_asks_once_per_connection_and_checks_the_code(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path
) -> None:
    f = fleet_fresh
    prompts, accepted = f.otp_prompts(), f.otp_accepted()
    before, bastion = f.auth_counts(), bed.auth_count("bastion")
    for host in ("otp-fleet1", "otp-fleet3"):
        result = f.ssh(host, "true", env=f.otp_env())
        assert result.returncode == 0, result.stderr
    assert (f.otp_prompts() - prompts, f.otp_accepted() - accepted) == (2, 2)
    counted(f, before, {"fleet1": 1, "fleet3": 1})
    assert bed.auth_count("bastion") == bastion, "the OTP bastion is a server of its own"

    wrong = tmp_path / "askpass-wrong"
    wrong.write_text("#!/bin/sh\necho 000000x\n")
    wrong.chmod(0o700)
    refused = f.ssh("otp-fleet2", "true", env={**f.otp_env(), "SSH_ASKPASS": str(wrong)})
    assert refused.returncode == 255
    assert (f.otp_prompts() - prompts, f.otp_accepted() - accepted) == (3, 2)
    assert f.ssh("otp-fleet2", "true").returncode == 255, "no askpass, no terminal: no code"


def test_one_otp_prompt_for_the_whole_fleet_through_a_master(fleet_fresh: Fleet) -> None:
    f = fleet_fresh
    prompts = f.otp_prompts()
    sock = f.tmp / "otp-master.sock"
    master = ["-M", "-S", str(sock), "-f", "-N"]
    opened = subprocess.run(
        f.ssh_argv("bastion-otp", options=master),
        env={**os.environ, **f.otp_env()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a pipe would stay open in the backgrounded master
        timeout=20,
        check=False,
    )
    assert opened.returncode == 0
    try:
        config = f.tmp / "ssh_config-otp-master"
        config.write_text(f"Host bastion-otp\n  ControlPath {sock}\n" + f.ssh_config.read_text())
        before = f.auth_counts()
        procs = [start_ssh(f, host, "true", config=config) for host in f.otp_names]
        assert [finish(proc)[0] for proc in procs] == [0] * len(procs)
        counted(f, before, {name: 1 for name in f.names})
        assert f.otp_prompts() - prompts == 1
    finally:
        f.ssh("bastion-otp", options=["-S", str(sock), "-O", "exit"])
        config.unlink(missing_ok=True)


def test_a_stopped_target_is_refused_and_comes_back(fleet_fresh: Fleet) -> None:
    with fleet_fresh.stopped("fleet2"):
        assert not fleet_fresh.running("fleet2")
        down = fleet_fresh.ssh("fleet2", "true")
        assert down.returncode == 255
        assert "Connection refused" in down.stderr, down.stderr
        assert fleet_fresh.ssh("fleet3", "true").returncode == 0, "the others stay up"
    assert fleet_fresh.running("fleet2")
    assert fleet_fresh.ssh("fleet2", "true").returncode == 0


def test_the_dark_address_answers_nothing(fleet: Fleet) -> None:
    result = fleet.ssh(fleet_bed.DARK, "true")
    assert result.returncode == 255
    assert "No route to host" in result.stderr, result.stderr


def test_delay_relays_sit_on_every_hop(fleet: Fleet) -> None:
    before = fleet.auth_counts()
    with fleet.delayed(50) as path:
        start = time.monotonic()
        result = subprocess.run(
            ["ssh", "-F", str(path.ssh_config), "fleet3", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        elapsed = time.monotonic() - start
        assert result.returncode == 0, result.stderr
        counts = path.relay_counts()
    assert counts["bastion"] == 1 and counts["fleet3"] == 1, counts
    assert sum(counts.values()) == 2, counts
    counted(fleet, before, {"fleet3": 1})
    # A lower bound only: the inner login alone crosses both delayed hops several times.
    assert elapsed >= 0.5, elapsed


def test_leftovers_see_a_process_left_on_a_target_not_a_restarted_sshd(
    fleet_fresh: Fleet, bed: Bed
) -> None:
    before = leftovers.snapshot(bed)
    fleet_fresh.stop("fleet3")
    fleet_fresh.start("fleet3")
    with background_job(
        lambda command: fleet_fresh.ssh("fleet4", command),
        lambda: fleet_fresh.login_processes("fleet4"),
    ) as pids:

        def settled() -> dict[str, list[leftovers.Item]] | None:
            # The sshd session that started the job ends a moment after ssh returns; the
            # restarted sshd of fleet3 would stay.
            left = leftovers.new_since(before)
            return None if "processes" in left else left

        with contextlib.suppress(BedError):
            wait_for(settled, timeout=5, what="the job's sshd session to end")
        left = leftovers.new_since(before)
        assert [item.key[1] for item in left.get("bed user processes", [])] == pids, left
        assert fleet_fresh.targets["fleet4"].netns in left["bed user processes"][0].desc
        assert "processes" not in left, "the restarted sshd of fleet3 is the bed's, not a leftover"
    leftovers.assert_nothing_left(before)


def test_close_removes_the_fleet_and_keeps_the_bed(bed: Bed) -> None:
    known_before = bed.known_hosts.read_text()
    small = fleet_bed.build(bed, count=2)
    roles = [t.role for t in small.targets.values()]
    namespaces = [t.netns for t in small.targets.values()]
    assert all(reaper.netns_inode(ns) is not None for ns in namespaces)
    saved = json.loads(bed.record.path.read_text())["netns"]
    assert all(saved[role] == ns for role, ns in zip(roles, namespaces, strict=True))
    assert small.ssh("fleet2", "true").returncode == 0
    otp_pid = small.otp_daemon.pid if small.otp_daemon else 0
    small.close()
    assert all(reaper.netns_inode(ns) is None for ns in namespaces)
    assert not any((ETC_NETNS / ns).exists() for ns in namespaces)
    assert not set(roles) & set(json.loads(bed.record.path.read_text())["netns"])
    assert not set(roles) & set(bed.netns)
    assert bed.known_hosts.read_text() == known_before
    assert not small.tmp.exists() and not (bed.home / f".hermes-fleet{small.slot}").exists()
    assert not Path(f"/proc/{otp_pid}").exists() or otp_pid == 0
    assert bed.ssh("remote", "true").returncode == 0


CHILD = """
import json, sys
from tests.bed import fleet, netbed
bed = netbed.build()
built = fleet.build(bed, count=2)
told = {"record": bed.record.__dict__, "netns": [t.netns for t in built.targets.values()]}
print(json.dumps(told), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("found_by", ["record", "name"])
def test_reaper_removes_a_killed_runs_fleet(bed: Bed, found_by: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=netbed.REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(child.stdout, selectors.EVENT_READ)
            assert sel.select(30), "the child built no bed"
        told = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait(5)
        assert child.stdout is not None and child.stdin is not None
        child.stdout.close()
        child.stdin.close()
    record = reaper.BedRecord(**told["record"])
    if found_by == "name":
        record.path.unlink()
    assert all(reaper.netns_inode(ns) is not None for ns in told["netns"])
    removed = reaper.reap()
    for ns in told["netns"]:
        assert any(f"deleted netns {ns}" in line for line in removed), removed
        assert reaper.netns_inode(ns) is None
        assert not (ETC_NETNS / ns).exists()
    assert not Path(record.tmp).exists()
    assert not Path(f"/home/{record.user}").exists()
    assert bed.ssh("remote", "true").returncode == 0


def test_leftovers_ignore_temp_entries_of_another_beds_user(bed: Bed) -> None:
    """/tmp is shared by every bed on the machine: another session's remote files are not ours."""
    other = f"tabed{os.urandom(3).hex()}"
    run(["useradd", "--no-create-home", "--comment", "tunnelauth-bed leftovers test", other])
    ours = theirs = None
    try:
        before = leftovers.snapshot(bed)
        theirs = Path(f"/tmp/tunnelauth-browser.{other}")
        ours = Path(f"/tmp/tunnelauth-browser.{bed.user}")
        for path, owner in ((theirs, other), (ours, bed.user)):
            path.mkdir()
            shutil.chown(path, owner)
        paths = [item.key[1] for item in leftovers.new_since(before).get("paths", [])]
        assert paths == [str(ours)], paths
    finally:
        for made in (ours, theirs):
            if made is not None and made.exists():
                made.rmdir()
        run(["userdel", other], check=False)


@pytest.mark.parametrize("host", ["fleet3", "otp-fleet4"])
def test_tunnelauth_logs_one_target_in_through_its_bastion(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, host: str
) -> None:
    """Today's single-host tunnelauth against a fleet target: the login lands on that target."""
    name = host.removeprefix("otp-")
    prompts = fleet_fresh.otp_prompts()
    env = fleet_fresh.otp_env() if host.startswith("otp-") else {}
    result = tunnelauth(bed, "xai", host, tmp=tmp_path, ssh_config=fleet_fresh.ssh_config, env=env)
    assert result.code == ExitStatus.OK, result
    assert "Device approved" in result.dom
    record = fleet_fresh.fake_record(name, "xai-oauth")
    assert record is not None and record["exchanged"] is True, record
    others = [n for n in fleet_fresh.names if n != name]
    assert all(fleet_fresh.fake_record(n, "xai-oauth") is None for n in others)
    assert fleet_fresh.otp_prompts() - prompts == (1 if host.startswith("otp-") else 0)
