"""A fleet behind one bastion authenticates to the bastion once (issue 19), on every backend.

Counted in the sshd logs: one bastion authentication for the whole fleet and one per target,
for logins (a device-code and a loopback provider) and for ``status``; a failing host does not
close the shared hop for the others; the one-time-code bastion asks one code for the fleet at
a terminal. ``fleet_fresh`` checks that nothing is left (no master socket, no ssh process).
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.bed import wait_for
from tests.bed.fleet import Fleet
from tests.bed.netbed import Bed
from tests.e2e.helpers import Result, tunnelauth
from tunnelauth.status import ExitStatus

pytestmark = pytest.mark.bed

BACKENDS = ["openssh", "asyncssh", "paramiko"]


def counts(fleet: Fleet, bed: Bed) -> dict[str, int]:
    """Authentications accepted so far: the bastion's and each target's."""
    return {"bastion": bed.auth_count("bastion"), **fleet.auth_counts()}


def assert_authenticated(
    fleet: Fleet, bed: Bed, before: dict[str, int], expected: dict[str, int]
) -> None:
    """Each sshd's count moved by exactly ``expected`` (0 for a host not named)."""

    def moved() -> dict[str, int]:
        now = counts(fleet, bed)
        return {name: now[name] - before[name] for name in now}

    want = {name: expected.get(name, 0) for name in before}
    # sshd writes its line at authentication time: the wait is only for the log to be flushed.
    try:
        wait_for(lambda: moved() == want, timeout=5, what="authentication counts")
    except Exception:
        assert moved() == want
        raise


def fleet_run(fleet: Fleet, bed: Bed, tmp: Path, *args: str, backend: str) -> Result:
    return tunnelauth(bed, *args, tmp=tmp, backend=backend, ssh_config=fleet.ssh_config)


def rows(result: Result) -> dict[str, dict[str, object]]:
    found = [json.loads(line) for line in result.stdout.splitlines()]
    (done,) = [e for e in found if e["event"] == "fleet_done"]
    return {str(h["host"]): h for h in done["hosts"]}


def failures(result: Result) -> str:
    """The failed hosts' rows and what was printed about them (pytest cuts long messages)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("tunnelauth: ")]
    found = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    last = {e.get("target"): (e["event"], e.get("message", "")) for e in found}
    return f"exit {result.code}: last events {last}\n" + "\n".join(lines[-40:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("login", ["nous", "mcp linear"])
def test_a_fleet_login_authenticates_to_the_bastion_once(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str, login: str
) -> None:
    # nous: device codes, all hosts at once; mcp: a loopback callback on a port the remote
    # picks (not a fixed port other runs on this machine may hold), one host after another.
    before = counts(fleet_fresh, bed)
    names = fleet_fresh.names
    command = login.split()
    result = fleet_run(fleet_fresh, bed, tmp_path, *command, *names, "--json", backend=backend)
    assert result.code == ExitStatus.OK, failures(result)
    flow = "device" if login == "nous" else "callback"
    assert [r["login"] for r in rows(result).values()] == [flow] * len(names), result
    assert_authenticated(fleet_fresh, bed, before, {"bastion": 1} | dict.fromkeys(names, 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_across_the_fleet_authenticates_to_the_bastion_once(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    before = counts(fleet_fresh, bed)
    names = fleet_fresh.names
    result = tunnelauth(
        bed,
        *("status", *names, "--json"),
        tmp=tmp_path,
        backend=backend,
        ssh_config=fleet_fresh.ssh_config,
        browser=False,
    )
    assert result.code == ExitStatus.OK, result
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["host"] for d in docs] == names and all("providers" in d for d in docs), docs
    assert_authenticated(fleet_fresh, bed, before, {"bastion": 1} | dict.fromkeys(names, 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dead_host_and_a_failed_login_leave_the_shared_hop_to_the_others(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    fleet_fresh.set_fake("fleet3", mode="deny")
    before = counts(fleet_fresh, bed)
    order = ("fleet2", "fleet3", "fleet1", "fleet4")  # the failures first, one after another
    with fleet_fresh.stopped("fleet2"):
        result = fleet_run(
            fleet_fresh, bed, tmp_path, "xai", *order, "--jobs", "1", "--json", backend=backend
        )
    found = rows(result)
    assert found["fleet2"]["exit_status"] == ExitStatus.SSH_FAILED, result
    # The target is blamed, not the shared jump host (which stays open for the others).
    message = str(found["fleet2"]["message"])
    blamed = "cannot connect to fleet2: jump host bastion could not reach it (connect failed: "
    assert message.startswith(blamed), message
    assert found["fleet3"]["exit_status"] == ExitStatus.LOGIN_FAILED, result
    assert found["fleet1"]["exit_status"] == found["fleet4"]["exit_status"] == 0, result
    expected = {"bastion": 1, "fleet3": 1, "fleet1": 1, "fleet4": 1}
    assert_authenticated(fleet_fresh, bed, before, expected)


def at_terminal(fleet: Fleet, bed: Bed, tmp: Path, *args: str) -> pexpect.spawn:
    """tunnelauth in a pseudo-terminal (CI unset: ssh's questions are asked there)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    words = ["tunnelauth", "-F", str(fleet.ssh_config)]
    words += ["--browser-cmd", bed.browser_cmd(tmp / "dom.html"), *args]
    shell = pexpect.spawn(
        "bash",
        ["-c", f"{shlex.join(words)}; echo EXIT=$?"],
        env=env,
        encoding="utf-8",
        timeout=90,
        dimensions=(50, 200),
    )
    shell.logfile_read = (tmp / "transcript").open("w")
    return shell


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_one_time_code_bastion_asks_once_for_the_fleet(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    prompts, accepted = fleet_fresh.otp_prompts(), fleet_fresh.otp_accepted()
    before = fleet_fresh.auth_counts()
    hosts = fleet_fresh.otp_names
    shell = at_terminal(fleet_fresh, bed, tmp_path, "--backend", backend, "xai", *hosts)
    shell.expect("asks: .*[Cc]ode")
    shell.sendline(fleet_fresh.otp_code)
    shell.expect(r"EXIT=(\d+)")
    code = int(shell.match.group(1))
    shell.expect(pexpect.EOF)
    transcript = (tmp_path / "transcript").read_text(errors="replace")
    assert code == ExitStatus.OK, transcript
    assert fleet_fresh.otp_code not in transcript, "the one-time code was shown"
    assert f"{len(hosts)} of {len(hosts)} hosts logged in" in transcript, transcript
    assert (fleet_fresh.otp_prompts() - prompts, fleet_fresh.otp_accepted() - accepted) == (1, 1)
    wait_for(
        lambda: (
            {n: c - before[n] for n, c in fleet_fresh.auth_counts().items()}
            == dict.fromkeys(fleet_fresh.names, 1)
        ),
        timeout=5,
        what="one authentication per target",
    )


def test_a_live_master_of_the_users_to_the_bastion_is_used_and_kept(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path
) -> None:
    sock = tmp_path / "bastion.sock"
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bastion\n  ControlPath {sock}\n" + fleet_fresh.ssh_config.read_text())
    ssh: Callable[..., subprocess.CompletedProcess[bytes]] = lambda *a: subprocess.run(  # noqa: E731
        ["ssh", "-F", str(config), *a, "bastion"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a pipe would stay open in the backgrounded master
        timeout=20,
        check=False,
    )
    assert ssh("-M", "-f", "-N", "-o", "ControlPersist=no").returncode == 0
    try:
        before = counts(fleet_fresh, bed)
        names = fleet_fresh.names[:3]
        result = tunnelauth(
            bed, "xai", *names, "--json", tmp=tmp_path, backend="openssh", ssh_config=config
        )
        assert result.code == ExitStatus.OK, result
        assert_authenticated(fleet_fresh, bed, before, dict.fromkeys(names, 1))
        assert ssh("-O", "check").returncode == 0, "the user's master was left running"
    finally:
        ssh("-O", "exit")


def derived(fleet: Fleet, tmp: Path, first_lines: str) -> Path:
    """The fleet's ssh config with ``first_lines`` in front (ssh takes the first value)."""
    path = tmp / "ssh_config"
    path.write_text(first_lines + fleet.ssh_config.read_text())
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_host_keys_are_checked_behind_the_shared_hop_as_before(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    # fleet3's key is looked up under a name known_hosts does not list: refused (StrictHostKey
    # Checking yes), while the others go through the same bastion connection.
    config = derived(fleet_fresh, tmp_path, "Host fleet3\n  HostKeyAlias fleet3-unlisted\n")
    before = counts(fleet_fresh, bed)
    names = ("fleet1", "fleet3", "fleet4")
    result = tunnelauth(
        bed, "xai", *names, "--json", tmp=tmp_path, backend=backend, ssh_config=config
    )
    found = rows(result)
    assert found["fleet3"]["exit_status"] == ExitStatus.HOST_KEY, result
    assert found["fleet1"]["exit_status"] == found["fleet4"]["exit_status"] == 0, result
    assert_authenticated(fleet_fresh, bed, before, {"bastion": 1, "fleet1": 1, "fleet4": 1})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bastion_whose_key_is_not_known_fails_every_host_behind_it(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    config = derived(fleet_fresh, tmp_path, "Host bastion\n  HostKeyAlias bastion-unlisted\n")
    before = counts(fleet_fresh, bed)
    names = fleet_fresh.names[:3]
    result = tunnelauth(
        bed, "xai", *names, "--json", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    for name, row in rows(result).items():
        assert row["exit_status"] == ExitStatus.HOST_KEY, row
        assert f"jump host bastion (for {name})" in str(row["message"]), row
    assert_authenticated(fleet_fresh, bed, before, {})


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_closes_every_login_and_the_shared_hop(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    names = fleet_fresh.names
    argv = [
        *("tunnelauth", "-F", str(fleet_fresh.ssh_config), "--backend", backend),
        *("--no-browser", "xai", *names),
    ]
    env = {**os.environ, "TUNNELAUTH_CONFIG": os.devnull, "CI": "1"}
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        assert proc.stderr is not None
        # Every host waits for its device code to be entered: the shared hop is open.
        seen = read_until(
            proc.stderr.fileno(), lambda text: text.count("enter the code") == len(names)
        )
        proc.send_signal(signal.SIGINT)
        _out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitStatus.INTERRUPTED, seen + rest.decode()


def read_until(fd: int, done: Callable[[str], bool], timeout: float = 60) -> str:
    """Read ``fd`` until ``done(text so far)`` (or fail at the deadline)."""
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
            if done(seen.decode(errors="replace")):
                return seen.decode(errors="replace")
    raise AssertionError(f"not seen within {timeout}s: {seen.decode(errors='replace')}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_at_the_one_time_code_question_closes_everything(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    accepted = fleet_fresh.otp_accepted()
    before = fleet_fresh.auth_counts()
    shell = at_terminal(
        fleet_fresh, bed, tmp_path, "--backend", backend, "xai", *fleet_fresh.otp_names
    )
    shell.expect("asks: .*[Cc]ode")
    shell.sendintr()
    shell.expect(r"EXIT=(\d+)")
    code = int(shell.match.group(1))
    shell.expect(pexpect.EOF)
    transcript = (tmp_path / "transcript").read_text(errors="replace")
    assert code == ExitStatus.INTERRUPTED, transcript
    assert fleet_fresh.otp_accepted() == accepted
    assert fleet_fresh.auth_counts() == before, "no target was logged in to"


@pytest.mark.parametrize("backend", BACKENDS)
def test_hosts_behind_two_bastions_get_one_connection_to_each(
    fleet_fresh: Fleet, bed: Bed, tmp_path: Path, backend: str
) -> None:
    prompts = fleet_fresh.otp_prompts()
    before = counts(fleet_fresh, bed)
    hosts = ("fleet1", "otp-fleet2", "fleet3", "otp-fleet4")
    shell = at_terminal(fleet_fresh, bed, tmp_path, "--backend", backend, "xai", *hosts)
    shell.expect("asks: .*[Cc]ode")
    shell.sendline(fleet_fresh.otp_code)
    shell.expect(r"EXIT=(\d+)")
    code = int(shell.match.group(1))
    shell.expect(pexpect.EOF)
    transcript = (tmp_path / "transcript").read_text(errors="replace")
    assert code == ExitStatus.OK, transcript
    assert fleet_fresh.otp_prompts() - prompts == 1
    expected = {"bastion": 1, "fleet1": 1, "fleet2": 1, "fleet3": 1, "fleet4": 1}
    assert_authenticated(fleet_fresh, bed, before, expected)
