"""What a person types at a terminal: ssh's password and one-time code, sudo, remote prompts.

tunnelauth runs in a pseudo-terminal under bash (``CI`` unset, so the interactive path runs),
and bash records ``stty -g`` before and after. The test reads what is shown and types the
answers; whatever it typed for a secret must never appear in what was printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import psutil
import pytest

from tests.bed import interactive, leftovers
from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus


@pytest.fixture(scope="module")
def extra(bed: Bed) -> Iterator[interactive.Interactive]:
    """The password sshd, the one-time-code server and the sudo users (removed afterwards)."""
    made = interactive.build(bed)
    yield made
    made.close()


@pytest.fixture
def fresh(
    extra: interactive.Interactive, no_leftovers: leftovers.Snapshot
) -> Iterator[interactive.Interactive]:
    """Clean fake hermes state for every user, and nothing left behind (also on the remote)."""
    bed = extra.bed
    shutil.rmtree(bed.home / ".hermes" / "fake-record", ignore_errors=True)
    (bed.home / ".hermes" / "auth.json").unlink(missing_ok=True)
    bed.reset_fake()
    for user in (extra.sudo_nopasswd, extra.sudo_passwd):
        extra.reset_other(user)
    yield extra
    assert bed.remote_login_processes() == [], "a remote login process survived the run"
    for user in (extra.sudo_nopasswd, extra.sudo_passwd):
        uid = extra.home_of(user).stat().st_uid
        left = [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"].real == uid]
        assert left == [], f"{user} still runs {left}"


@dataclass
class Run:
    """One tunnelauth at a terminal."""

    shell: pexpect.spawn
    tmp: Path

    def finish(self) -> tuple[int, str]:
        """Wait for the exit status; returns it with everything shown since the last expect."""
        self.shell.expect(r"EXIT=(\d+)")
        shown, code = self.shell.before or "", int(self.shell.match.group(1))
        self.shell.expect(pexpect.EOF)
        return code, shown

    def terminal_unchanged(self) -> bool:
        """``stty -g`` after the run equals ``stty -g`` before it."""
        return (self.tmp / "before").read_text() == (self.tmp / "after").read_text()

    @property
    def transcript(self) -> str:
        """Everything the terminal showed."""
        return (self.tmp / "transcript").read_text(errors="replace")


def _at_terminal(
    extra: interactive.Interactive, tmp: Path, *args: str, cwd: Path | None = None
) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    # Options before the subcommand: `run`'s command after `--` stays untouched.
    words = ["tunnelauth", "-F", str(extra.ssh_config)]
    words += ["--browser-cmd", extra.bed.browser_cmd(tmp / "dom.html"), *args]
    script = (
        f"trap 'true' INT; stty -g > {tmp}/before; {shlex.join(words)}; "
        f"echo EXIT=$?; stty -g > {tmp}/after"
    )
    log = (tmp / "transcript").open("w")
    shell = pexpect.spawn(
        "bash",
        ["-c", script],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
        cwd=str(cwd) if cwd else None,
    )
    shell.logfile_read = log
    return Run(shell, tmp)


def _pid_of_tunnelauth(shell: pexpect.spawn) -> int:
    for child in psutil.Process(shell.pid).children(recursive=True):
        if "tunnelauth" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError("tunnelauth is not running")


def test_ssh_password_typed_at_the_terminal(
    fresh: interactive.Interactive, tmp_path: Path, backend: str
) -> None:
    run = _at_terminal(fresh, tmp_path, "--backend", backend, "xai", "remote-pw")
    run.shell.expect("ssh asks: .*password")
    run.shell.sendline(fresh.password)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert fresh.password not in run.transcript, "the password was shown"
    assert "logged in" in run.transcript
    assert run.terminal_unchanged()
    record = fresh.bed.fake_record("xai-oauth")
    assert record is not None and record["outcome"] == "ok"


def test_ssh_password_from_a_directory_with_a_planted_tunnelauth_package(
    fresh: interactive.Interactive, tmp_path: Path
) -> None:
    # ssh runs askpass in the user's current directory: a tunnelauth/ folder there (a cloned
    # repository, a download) must not be the code that receives the password.
    marker = tmp_path / "marker"
    planted = tmp_path / "checkout" / "tunnelauth"
    planted.mkdir(parents=True)
    steal = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("__init__.py", "askpass.py", "__main__.py"):
        (planted / name).write_text(steal)
    run = _at_terminal(
        fresh, tmp_path, "--backend", "openssh", "xai", "remote-pw", cwd=planted.parent
    )
    run.shell.expect("ssh asks: .*password")
    run.shell.sendline(fresh.password)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert not marker.exists(), f"the planted package ran: {marker.read_text()!r}"
    assert fresh.password not in run.transcript


def test_password_and_one_time_code(
    fresh: interactive.Interactive, tmp_path: Path, backend: str
) -> None:
    run = _at_terminal(fresh, tmp_path, "--backend", backend, "xai", "remote-otp")
    run.shell.expect("ssh asks: .*Password:")
    run.shell.sendline(fresh.otp_password)
    run.shell.expect("ssh asks: .*One-time code:")
    run.shell.sendline(fresh.otp_code)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    for secret in (fresh.otp_password, fresh.otp_code):
        assert secret not in run.transcript
    assert run.terminal_unchanged()
    record = fresh.bed.fake_record("xai-oauth")
    assert record is not None and record["outcome"] == "ok" and record["env_ssh_client"]


def test_vv_never_shows_the_password_or_the_code(
    fresh: interactive.Interactive, tmp_path: Path, backend: str
) -> None:
    run = _at_terminal(fresh, tmp_path, "-vv", "--backend", backend, "xai", "remote-otp")
    run.shell.expect("ssh asks: .*Password:")
    run.shell.sendline(fresh.otp_password)
    run.shell.expect("ssh asks: .*One-time code:")
    run.shell.sendline(fresh.otp_code)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    shown = {
        "openssh": "debug1: ",
        "asyncssh": "asyncssh: [conn=0]",
        "paramiko": "paramiko.transport: ",
    }
    assert shown[backend] in run.transcript, "-vv shows the SSH client's own debug output"
    for secret in (fresh.otp_password, fresh.otp_code):
        assert secret not in run.transcript
    assert run.terminal_unchanged()


def test_wrong_password_fails_with_the_terminal_intact(
    fresh: interactive.Interactive, tmp_path: Path, backend: str
) -> None:
    run = _at_terminal(fresh, tmp_path, "--backend", backend, "xai", "remote-pw")
    run.shell.expect("ssh asks: .*password")
    run.shell.sendline("not-" + fresh.password)
    code, _ = run.finish()
    assert code == ExitStatus.SSH_FAILED, run.transcript
    assert "authentication" in run.transcript
    assert run.terminal_unchanged(), "echo stayed off after the failed password"
    assert fresh.bed.fake_record("xai-oauth") is None


@pytest.mark.parametrize("how", ["ctrl-c", "SIGHUP", "SIGTERM"])
def test_interrupt_at_the_password_prompt(
    fresh: interactive.Interactive, tmp_path: Path, how: str, backend: str
) -> None:
    run = _at_terminal(fresh, tmp_path, "--backend", backend, "xai", "remote-pw")
    run.shell.expect("ssh asks: .*password")
    if how == "ctrl-c":
        run.shell.sendintr()
    else:
        os.kill(_pid_of_tunnelauth(run.shell), getattr(signal, how))
    code, shown = run.finish()
    assert code == ExitStatus.INTERRUPTED, run.transcript
    assert "interrupted by" in shown
    assert run.terminal_unchanged(), "echo stayed off after the interrupted password prompt"
    assert fresh.bed.fake_record("xai-oauth") is None


def test_batch_run_against_the_password_host_fails_fast(
    fresh: interactive.Interactive, tmp_path: Path, backend: str
) -> None:
    result = tunnelauth(
        fresh.bed,
        "xai",
        "remote-pw",
        tmp=tmp_path,
        ssh_config=fresh.ssh_config,
        deadline=30,
        backend=backend,
    )
    assert result.code == ExitStatus.SSH_FAILED, result
    assert "password prompt" in result.stderr and "batch" in result.stderr, result
    assert fresh.bed.fake_record("xai-oauth") is None


def test_key_passphrase_typed_at_the_terminal(
    fresh: interactive.Interactive, tmp_path: Path, backend: str
) -> None:
    run = _at_terminal(fresh, tmp_path, "--backend", backend, "xai", "remote-key")
    run.shell.expect("ssh asks: .*passphrase for key .*id_ed25519")
    run.shell.sendline(fresh.passphrase)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert fresh.passphrase not in run.transcript, "the passphrase was shown"
    assert run.terminal_unchanged()
    record = fresh.bed.fake_record("xai-oauth")
    assert record is not None and record["outcome"] == "ok"


def test_as_another_user_without_a_password(fresh: interactive.Interactive, tmp_path: Path) -> None:
    other = fresh.sudo_nopasswd
    run = _at_terminal(fresh, tmp_path, "xai", "remote", "--as", other)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert run.terminal_unchanged()
    store = fresh.auth_json(other)
    assert store is not None and "xai-oauth" in str(store), "the tokens are not in its home"
    assert not (fresh.bed.home / ".hermes" / "auth.json").exists()
    record = _record_of(fresh, other, "xai-oauth")
    assert record["env_ssh_client"], "hermes did not know the session is remote"


def test_as_another_user_with_the_sudo_password(
    fresh: interactive.Interactive, tmp_path: Path
) -> None:
    other = fresh.sudo_passwd
    run = _at_terminal(fresh, tmp_path, "xai", "remote", "--as", other)
    run.shell.expect(r"remote asks: .*\[sudo\] password for")
    run.shell.sendline(fresh.password)
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert fresh.password not in run.transcript
    assert run.terminal_unchanged()
    assert "xai-oauth" in str(fresh.auth_json(other))
    assert _record_of(fresh, other, "xai-oauth")["env_ssh_client"]


def test_as_in_a_batch_run_fails_fast_naming_sudo(
    fresh: interactive.Interactive, tmp_path: Path
) -> None:
    result = tunnelauth(
        fresh.bed, "xai", "remote", "--as", fresh.sudo_passwd, tmp=tmp_path, deadline=30
    )
    assert result.code == ExitStatus.LOGIN_FAILED, result
    assert "sudo" in result.stderr and "password" in result.stderr, result
    assert fresh.auth_json(fresh.sudo_passwd) is None


def test_as_on_a_remote_without_base64_says_so_and_runs_nothing(
    fresh: interactive.Interactive, tmp_path: Path
) -> None:
    # The other user's login PATH (sudo -i reads ~/.bash_profile) holds env and sh, no base64:
    # the --as wrapper could not decode the login. Before, `eval ""` ran nothing and the run
    # was misjudged (a "not found" for hermes, or "logged in").
    other = fresh.sudo_nopasswd
    home = fresh.home_of(other)
    bindir = home / "no-base64-bin"
    profile = home / ".bash_profile"
    bindir.mkdir()
    for tool in ("env", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (bindir / tool).symlink_to(found)
    profile.write_text(f"PATH={bindir}\nexport PATH\n")
    try:
        result = tunnelauth(fresh.bed, "xai", "remote", "--as", other, tmp=tmp_path, deadline=60)
    finally:
        profile.unlink()
        shutil.rmtree(bindir)
    assert result.code == ExitStatus.COMMAND_NOT_FOUND, result
    assert f"the remote tool base64 was not found on remote for {other}" in result.stderr
    assert "logged in" not in result.stderr and "'hermes' was not found" not in result.stderr
    assert not (home / ".hermes" / "fake-record").exists(), "the login ran"


def test_hermes_home_for_another_user(fresh: interactive.Interactive, tmp_path: Path) -> None:
    other = fresh.sudo_nopasswd
    home = "~/service-home"
    target = fresh.home_of(other) / "service-home"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(fresh.home_of(other) / ".hermes", target)
    shutil.chown(target, other, other)
    for entry in target.iterdir():
        shutil.chown(entry, other, other)
    try:
        run = _at_terminal(fresh, tmp_path, "xai", "remote", "--as", other, "--hermes-home", home)
        code, _ = run.finish()
        assert code == ExitStatus.OK, run.transcript
        assert "xai-oauth" in (target / "auth.json").read_text()
        assert fresh.auth_json(other) is None
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_remote_yes_no_prompt_answered(fresh: interactive.Interactive, tmp_path: Path) -> None:
    script = 'printf "Import these credentials? [Y/n]: "; read a; echo "answer=[$a]"'
    run = _at_terminal(fresh, tmp_path, "run", "remote", "--", "sh", "-c", script)
    run.shell.expect(r"remote asks: .*Import these credentials\? \[Y/n\]")
    run.shell.sendline("y")
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert "answer=[y]" in run.transcript
    assert run.terminal_unchanged()


def test_a_line_too_long_for_the_remote_is_refused(
    fresh: interactive.Interactive, tmp_path: Path
) -> None:
    script = 'printf "Spotify Client ID: "; read a; echo "length=${#a}"'
    run = _at_terminal(fresh, tmp_path, "run", "remote", "--", "sh", "-c", script)
    run.shell.expect("remote asks: .*Spotify Client ID")
    # Canonical mode holds 4095 bytes a line: 4050 fit here and are refused by tunnelauth.
    run.shell.sendline("x" * 4050)
    run.shell.expect("not sent: the line is 4050 bytes")
    run.shell.sendline("short")
    code, _ = run.finish()
    assert code == ExitStatus.OK, run.transcript
    assert "length=5" in run.transcript


def _record_of(extra: interactive.Interactive, user: str, flow: str) -> dict[str, object]:
    import json

    path = extra.home_of(user) / ".hermes" / "fake-record" / f"{flow}.json"
    data: dict[str, object] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("provider", ["xai", "spotify"])
def test_a_server_that_refuses_a_terminal_gets_a_clear_error_and_no_login(
    fresh: interactive.Interactive, tmp_path: Path, backend: str, provider: str
) -> None:
    # remote-nopty's key is marked no-pty: without a PTY the login would not end with the
    # connection, so it must not start at all (the fixture checks nothing runs there after).
    fresh.bed.set_fake(spotify_client_id="tunnelauth-test-client")
    result = tunnelauth(
        fresh.bed,
        provider,
        "remote-nopty",
        tmp=tmp_path,
        ssh_config=fresh.ssh_config,
        deadline=30,
        backend=backend,
    )
    assert result.code == ExitStatus.SSH_FAILED, result
    assert "refused the login a terminal (PTY)" in result.stderr, result
    assert "no-pty" in result.stderr, result  # the hint names the likely cause
    assert fresh.bed.fake_record("xai-oauth") is None
    assert fresh.bed.fake_record("spotify") is None
    assert result.dom == "", "a browser was opened for a login that never started"
