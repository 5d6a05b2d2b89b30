"""The core path end to end: real sshd in namespaces, the real CLI, real headless Chromium.

Each test runs ``tunnelauth`` as a user would, then checks what the remote received, what the
user saw, the exit code, and that nothing (process, listener, socket, temp dir, remote login)
was left behind, on success and on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import code_received, derived_ssh_config, remote_port_held, tunnelauth
from tunnelauth.status import ExitStatus


def _last_issued_code(bed: Bed) -> str:
    issued = bed.provider_issued()
    assert issued, "the provider issued no code: the browser never reached the authorize page"
    return str(issued[-1]["code"])


def test_spotify_through_the_jump_host(fresh: Bed, tmp_path: Path, backend: str) -> None:
    before = fresh.auth_counts()
    result = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    assert code_received(fresh, "spotify") == _last_issued_code(fresh)
    record = fresh.fake_record("spotify")
    assert record is not None and record["state_ok"] and record["exchanged"]
    assert record["requests"] == ["/spotify/callback"], "only the callback may reach the remote"
    assert "Spotify authorization received" in result.dom
    assert "logged in" in result.stderr
    after = fresh.auth_counts()
    assert after["remote"] - before["remote"] == 1, "exactly one SSH authentication at the host"
    assert after["bastion"] - before["bastion"] == 1, "exactly one at the jump host"
    assert "code=…" in result.stderr or "code=" not in result.stderr


def test_user_at_host_names_the_ssh_user(fresh: Bed, tmp_path: Path, backend: str) -> None:
    # The config names another user for this host: only the destination's user can log in.
    config = derived_ssh_config(fresh, tmp_path / "cfg", ["Host remote", "  User nosuchuser"])
    destination = f"{fresh.user}@remote"
    result = tunnelauth(
        fresh, "spotify", destination, tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.OK, result
    assert code_received(fresh, "spotify") == _last_issued_code(fresh)
    assert "logged in" in result.stderr


def test_mcp_with_host_from_config_and_jump_flag(fresh: Bed, tmp_path: Path, backend: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text('default_host = "remote-direct"\n')
    result = tunnelauth(
        fresh,
        "--jump",
        "bastion",
        "mcp",
        "linear",
        tmp=tmp_path,
        backend=backend,
        env={"TUNNELAUTH_CONFIG": str(config)},
    )
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None
    assert record["code"] == _last_issued_code(fresh)
    assert record["connections"] == 1, "the single-request listener must see exactly one request"
    assert record["tty"], "hermes mcp login needs a TTY: the remote must run with a PTY"
    assert "Authenticated" in result.stderr


def test_legacy_xai_follows_the_port_bump(fresh: Bed, tmp_path: Path, backend: str) -> None:
    fresh.set_fake(version="legacy")
    with remote_port_held(fresh, 56121):
        result = tunnelauth(fresh, "xai", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("xai-oauth")
    assert record is not None and record["port"] != 56121
    assert record["code"] == _last_issued_code(fresh)
    assert "Login successful!" in result.stderr


def test_device_code_xai_opens_the_verification_page(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result = tunnelauth(fresh, "xai", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    assert "Device approved" in result.dom
    assert "enter this code" in result.stderr
    assert "Added xai-oauth OAuth credential" in result.stderr


def test_run_any_loopback_cli(fresh: Bed, tmp_path: Path, backend: str) -> None:
    result = tunnelauth(fresh, "run", "remote", "--", "loopback-cli", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    assert "Login successful!" in result.stderr
    assert "✓ logged in" in result.stderr  # the callback was carried to the remote


def test_run_with_braces_in_the_authorize_url_is_encoded_and_completes(
    fresh: Bed, tmp_path: Path
) -> None:
    # `{}` is not allowed by RFC 3986: the URL used to be ignored without a word, and the
    # run waited for the timeout. Now it is percent-encoded as a browser would.
    args = ["run", "remote", "--json", "--timeout", "60", "--"]
    result = tunnelauth(
        fresh, *args, "loopback-cli", "--extra-query", "claims={}", tmp=tmp_path, deadline=90
    )
    assert result.code == ExitStatus.OK, result
    events = [json.loads(line) for line in result.stdout.splitlines()]
    (opened,) = [e["url"] for e in events if e["event"] == "authorize_url"]
    assert opened.endswith("&claims=%7B%7D"), opened
    assert events[-1]["event"] == "succeeded" and events[-1]["login"] == "callback", events[-1]
    assert "Login successful!" in result.stderr
    assert fresh.provider_issued(), "the browser never reached the authorize page"


def test_rclone_style_own_loopback_start_page(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(
        fresh, "run", "remote", "--", "loopback-cli", "--rclone", "--port", "53682", tmp=tmp_path
    )
    assert result.code == ExitStatus.OK, result
    assert "Got code" in result.stderr


@pytest.mark.parametrize(
    ("mode", "expected", "shown"),
    [
        ("deny", ExitStatus.LOGIN_FAILED, "failed"),
        ("state_mismatch", ExitStatus.LOGIN_FAILED, "state mismatch"),
        ("crash", ExitStatus.LOGIN_FAILED, "ConnectionResetError"),
        ("success_exit1", ExitStatus.LOGIN_FAILED, "exited with status 1"),
    ],
)
def test_spotify_failures_exit_with_their_code(
    fresh: Bed, tmp_path: Path, backend: str, mode: str, expected: ExitStatus, shown: str
) -> None:
    fresh.set_fake(mode=mode)
    result = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path, backend=backend)
    assert result.code == expected, result
    assert shown in result.stderr


def test_remote_timeout_exits_7(fresh: Bed, tmp_path: Path, backend: str) -> None:
    fresh.set_fake(mode="timeout", timeout=2)
    result = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path, backend=backend, browser=False)
    assert result.code == ExitStatus.TIMED_OUT, result
    assert "timed out" in result.stderr


def test_overall_timeout_ends_the_remote_login(fresh: Bed, tmp_path: Path, backend: str) -> None:
    fresh.set_fake(mode="timeout", timeout=120)
    result = tunnelauth(
        fresh, "spotify", "remote", "--timeout", "4", tmp=tmp_path, backend=backend, browser=False
    )
    assert result.code == ExitStatus.TIMED_OUT, result
    record = fresh.fake_record("spotify")
    assert record is not None and record["outcome"] in ("cancelled", "hangup", "terminated")


def test_mcp_failure_with_exit_zero_is_a_failure(fresh: Bed, tmp_path: Path, backend: str) -> None:
    fresh.set_fake(mode="deny")
    result = tunnelauth(fresh, "mcp", "linear", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.LOGIN_FAILED, result
    assert "Authentication failed" in result.stderr


def test_missing_remote_command_exits_8(fresh: Bed, tmp_path: Path, backend: str) -> None:
    result = tunnelauth(
        fresh, "spotify", "remote", "--hermes", "/opt/none/hermes", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.COMMAND_NOT_FOUND, result
    assert "--hermes" in result.stderr


def test_unknown_host_key_exits_4_and_runs_nothing(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = derived_ssh_config(fresh, tmp_path / "cfg", [f"UserKnownHostsFile {empty}"])
    before = fresh.auth_counts()
    result = tunnelauth(
        fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    assert fresh.auth_counts() == before
    assert fresh.fake_record("spotify") is None


def test_refused_key_exits_3(fresh: Bed, tmp_path: Path, backend: str) -> None:
    key = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=20
    )
    config = tmp_path / "cfg"
    config.write_text(fresh.ssh_config.read_text().replace(str(fresh.identity), str(key)))
    result = tunnelauth(
        fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.SSH_FAILED, result
    assert fresh.fake_record("spotify") is None


def test_live_user_controlmaster_is_reused_and_left_alive(fresh: Bed, tmp_path: Path) -> None:
    socket = tmp_path / "cm"
    config = derived_ssh_config(fresh, tmp_path / "cfg", [f"ControlPath {socket}"])
    master = ["ssh", "-F", str(config), "-o", "ControlMaster=yes", "-o", "ControlPersist=60"]
    subprocess.run([*master, "-fN", "remote"], check=True, timeout=30)
    try:
        before = fresh.auth_counts()
        result = tunnelauth(fresh, "spotify", "remote", "-v", tmp=tmp_path, ssh_config=config)
        assert result.code == ExitStatus.OK, result
        assert fresh.auth_counts() == before, "a live ControlMaster means no new authentication"
        check = subprocess.run(
            ["ssh", "-F", str(config), "-O", "check", "remote"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        assert check.returncode == 0, "the user's master must still be alive"
        assert code_received(fresh, "spotify") == _last_issued_code(fresh)
    finally:
        subprocess.run(
            ["ssh", "-F", str(config), "-O", "exit", "remote"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def test_unanswerable_prompt_fails_fast_in_batch_runs(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(spotify_client_id=None)  # hermes then asks "Spotify Client ID: " first
    result = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.LOGIN_FAILED, result
    assert "Spotify Client ID" in result.stderr
    assert "cannot answer" in result.stderr


def test_laptop_port_taken_exits_5_naming_the_holder(fresh: Bed, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print('READY', s.getsockname()[1], flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready, port = holder.stdout.readline().split()
        assert ready == "READY"
        # Spotify's callback port (43827 in real hermes) moved to the one held here, so another
        # run on this machine using 43827 cannot make or break this test.
        fresh.set_fake(spotify_port=int(port))
        result = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert result.code == ExitStatus.PORT_UNAVAILABLE, result
    assert f"pid {holder.pid}" in result.stderr
    assert port in result.stderr


def test_no_browser_prints_the_url_for_the_user(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(mode="timeout", timeout=2)
    result = tunnelauth(fresh, "spotify", "remote", "--no-browser", tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.TIMED_OUT, result
    assert "open this page in a browser on this machine" in result.stderr
    assert f"{fresh.idp_url}/authorize?" in result.stderr


def test_changed_host_key_exits_4_with_the_fingerprint(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=20
    )
    fake_key = other.with_suffix(".pub").read_text().split()[:2]
    lines = []
    for line in fresh.known_hosts.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == fresh.remote_ip and fields[1] == "ssh-ed25519":
            line = " ".join([fields[0], *fake_key])
        lines.append(line)
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(lines) + "\n")
    config = derived_ssh_config(fresh, tmp_path / "cfg", [f"UserKnownHostsFile {known}"])
    result = tunnelauth(
        fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    assert "SHA256:" in result.stderr, "the offered key's fingerprint is shown"
    assert fresh.fake_record("spotify") is None, "nothing ran on the remote"
