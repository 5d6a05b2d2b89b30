"""Scripting and CI on the bed: --json events, batch failures, doctor, --verify, --replace,
scripts/ci-reauth. Each runs the real CLI against real sshd and the fake hermes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bed import leftovers
from tests.bed.netbed import Bed
from tests.e2e.helpers import Result, tunnelauth
from tests.e2e.test_local_clients import private_spotify_port
from tunnelauth.jsonout import validate
from tunnelauth.status import ExitStatus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh(bed: Bed, no_leftovers: leftovers.Snapshot) -> Iterator[Bed]:
    """A clean fake hermes (normal mode, empty store) and the nothing-left-behind check."""
    hermes_home = bed.home / ".hermes"
    shutil.rmtree(hermes_home / "fake-record", ignore_errors=True)
    shutil.rmtree(hermes_home / "mcp-tokens", ignore_errors=True)
    (hermes_home / "auth.json").unlink(missing_ok=True)
    bed.reset_fake()
    bed.set_fake(spotify_client_id="tunnelauth-test-client")
    yield bed
    assert bed.remote_login_processes() == [], "a remote login process survived the run"


def events(result: Result) -> list[dict[str, Any]]:
    """stdout parsed line by line; every line must be a schema-valid event."""
    parsed = []
    for line in result.stdout.splitlines():
        event = json.loads(line)
        assert validate(event) == [], (event, result)
        parsed.append(event)
    return parsed


def names(parsed: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in parsed]


def pool(bed: Bed, provider: str) -> list[dict[str, Any]]:
    """The fake hermes store's credential pool for ``provider``."""
    path = bed.home / ".hermes" / "auth.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("credential_pool", {}).get(provider, []))


def test_json_stream_for_a_loopback_login_is_valid_and_holds_no_code(
    fresh: Bed, tmp_path: Path
) -> None:
    result = tunnelauth(fresh, "spotify", "remote", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    parsed = events(result)
    seen = names(parsed)
    for name in ("connecting", "connected", "remote_started", "listening", "authorize_url"):
        assert name in seen, seen
    assert "browser_opened" in seen and "remote_line" in seen
    assert seen[0] == "connecting" and seen[-1] == "succeeded"
    assert seen.index("connected") < seen.index("remote_started") < seen.index("listening")
    assert parsed[-1]["exit_status"] == 0
    listening = next(e for e in parsed if e["event"] == "listening")
    assert listening["port"] == 43827
    issued = fresh.provider_issued()
    assert issued, "the browser never reached the authorize page"
    code = str(issued[-1]["code"])
    assert code not in result.stdout and code not in result.stderr
    assert "logged in" in result.stderr, "human output stays on stderr"


def test_json_stream_for_a_device_login_carries_the_user_code(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "xai", "remote", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    parsed = events(result)
    device = [e for e in parsed if e["event"] == "device_code"]
    assert device and device[0]["code"], parsed
    assert names(parsed)[-1] == "succeeded"


def test_run_without_a_login_flow_only_says_the_command_succeeded(
    fresh: Bed, tmp_path: Path
) -> None:
    result = tunnelauth(fresh, "run", "remote", "--json", "--", "echo", "hello", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    assert "✓ the command succeeded (no login flow seen)" in result.stderr, result
    assert "logged in" not in result.stderr
    parsed = events(result)
    assert parsed[-1]["event"] == "succeeded" and parsed[-1]["login"] == "none"
    assert parsed[-1]["message"] == "the command succeeded (no login flow seen)"
    assert any(e["event"] == "remote_line" and e["text"] == "hello" for e in parsed)


def test_json_names_the_device_flow_it_saw(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "xai", "remote", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    final = events(result)[-1]
    assert final["event"] == "succeeded" and final["login"] == "device", final
    assert final["message"] == "logged in"


def test_the_anthropic_authorize_url_event_is_the_url_to_open(fresh: Bed, tmp_path: Path) -> None:
    # Its code=true is a flag, not a code: redacting it made the event unusable. (A batch run
    # then stops at the code prompt; the URL event comes before it.)
    result = tunnelauth(fresh, "anthropic", "remote", "--json", tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.LOGIN_FAILED, result
    parsed = events(result)
    (url,) = [e["url"] for e in parsed if e["event"] == "authorize_url"]
    assert url.startswith(f"{fresh.idp_url}/oauth/authorize?code=true&client_id="), url
    assert "…" not in url and "code_challenge=" in url
    assert "code=…" not in result.stderr


def test_batch_run_needing_a_prompt_fails_fast_with_exit_6(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(spotify_client_id=None)  # hermes then asks "Spotify Client ID: " first
    result = tunnelauth(
        fresh, "spotify", "remote", "--batch", "--json", tmp=tmp_path, env={"CI": ""}
    )
    assert result.code == ExitStatus.LOGIN_FAILED, result
    last = events(result)[-1]
    assert last["event"] == "failed" and last["exit_status"] == ExitStatus.LOGIN_FAILED
    assert "cannot answer" in last["reason"] and "Spotify Client ID" in last["reason"]
    record = fresh.fake_record("spotify")
    assert record is None or record["outcome"] != "running"


def test_usage_error_still_ends_the_json_stream(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "spotify", "remote", "--json", "--profile", "../x", tmp=tmp_path)
    assert result.code == ExitStatus.USAGE, result
    last = events(result)[-1]
    assert last["event"] == "failed" and last["exit_status"] == ExitStatus.USAGE


def doctor(bed: Bed, tmp: Path, host: str, *extra: str) -> tuple[Result, dict[str, Any]]:
    result = tunnelauth(bed, "doctor", host, "--json", *extra, tmp=tmp)
    report = json.loads(result.stdout)
    assert report["v"] == 1 and report["kind"] == "doctor"
    return result, {c["name"]: c for c in report["checks"]}


def test_doctor_on_a_good_host(fresh: Bed, tmp_path: Path) -> None:
    result, checks = doctor(fresh, tmp_path, "remote")
    assert result.code == ExitStatus.OK, result
    assert checks["ssh"]["status"] == "ok" and "via bastion" in checks["ssh"]["detail"]
    assert checks["host key"]["status"] == "ok"
    assert checks["forwarding"]["status"] == "ok", checks["forwarding"]
    assert checks["hermes"]["status"] == "ok"
    assert str(fresh.hermes_path) in checks["hermes"]["detail"]
    assert "0.19.0" in checks["hermes"]["detail"]
    assert checks["hermes home"]["status"] == "ok"
    assert checks["browser"]["status"] == "ok"


def test_doctor_reports_refused_forwarding(fresh: Bed, tmp_path: Path) -> None:
    result, checks = doctor(fresh, tmp_path, "remote-nofwd")
    forwarding = checks["forwarding"]
    assert forwarding["status"] == "warn", forwarding
    assert "administratively prohibited" in forwarding["detail"]
    assert "AllowTcpForwarding" in forwarding["fix"]
    assert checks["ssh"]["status"] == "ok" and checks["hermes"]["status"] == "ok"
    assert result.code == ExitStatus.OK, "the callback is relayed: a login can still work"


def test_doctor_reports_a_missing_hermes(fresh: Bed, tmp_path: Path) -> None:
    result, checks = doctor(fresh, tmp_path, "remote", "--hermes", "/nonexistent/hermes")
    assert result.code == ExitStatus.COMMAND_NOT_FOUND, result
    assert checks["hermes"]["status"] == "fail"
    assert "--hermes" in checks["hermes"]["fix"]
    assert checks["ssh"]["status"] == "ok"


def test_doctor_on_an_unreachable_host_fails_with_exit_3(fresh: Bed, tmp_path: Path) -> None:
    result, checks = doctor(fresh, tmp_path, "remote-direct", "--connect-timeout", "10")
    assert result.code == ExitStatus.SSH_FAILED, result
    assert checks["ssh"]["status"] == "fail" and checks["ssh"]["fix"]


def test_doctor_table_goes_to_stdout(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "doctor", "remote", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    for name in ("ssh", "host key", "forwarding", "hermes", "laptop ports", "browser"):
        assert name in result.stdout


def test_verify_confirms_the_credential_in_the_store(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "spotify", "remote", "--verify", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    verified = [e for e in events(result) if e["event"] == "verified"]
    assert verified and verified[0]["ok"] and "logged in" in verified[0]["detail"]
    status = fresh.ssh("remote", str(fresh.hermes_path), "auth", "status", "spotify")
    assert "spotify: logged in" in status.stdout


def test_verify_finds_the_mcp_token_file(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "mcp", "linear", "remote", "--verify", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    verified = [e for e in events(result) if e["event"] == "verified"]
    assert verified and verified[0]["ok"], verified
    assert (fresh.home / ".hermes" / "mcp-tokens" / "linear.json").exists()


def test_replace_keeps_only_the_newest_credential(fresh: Bed, tmp_path: Path) -> None:
    for _ in range(2):
        assert tunnelauth(fresh, "xai", "remote", tmp=tmp_path).code == ExitStatus.OK
    assert len(pool(fresh, "xai-oauth")) == 2, "hermes auth add piles credentials up"
    result = tunnelauth(fresh, "xai", "remote", "--replace", "--verify", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    entries = pool(fresh, "xai-oauth")
    assert len(entries) == 1
    assert entries[0]["label"] == "xai-oauth-oauth-3", "the one kept is the one just added"
    parsed = events(result)
    replaced = [e for e in parsed if e["event"] == "replaced"]
    assert replaced and replaced[0]["ok"] and replaced[0]["removed"] == 2
    assert names(parsed).index("replaced") < names(parsed).index("verified")


def test_ci_reauth_runs_one_fleet_command_per_provider_and_fails_if_one_line_fails(
    fresh: Bed, tmp_path: Path
) -> None:
    private_spotify_port(fresh)
    lines = tmp_path / "logins.txt"
    lines.write_text(
        "# host provider [name]\nremote spotify\nremote-direct xai\nremote mcp linear\n"
        "bastion xai\n"
    )
    # The tunnelauth it runs notes each command line, then is the real one.
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "tunnelauth-logged"
    wrapper.write_text(
        f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> {calls}\nexec {sys.executable} -m tunnelauth "$@"\n'
    )
    wrapper.chmod(0o700)
    extra = ["-F", str(fresh.ssh_config), "--browser-cmd", fresh.browser_cmd(tmp_path / "d.html")]
    env = {**os.environ, "TUNNELAUTH": str(wrapper), "TUNNELAUTH_CONFIG": os.devnull}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ci-reauth"), str(lines), "--", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    shown = f"{proc.stdout}\n--- stderr\n{proc.stderr[-3000:]}"
    assert proc.returncode == 1, shown
    rows = [line.split() for line in proc.stdout.splitlines()[1:5]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("remote", "spotify", "ok"),
        ("remote-direct", "xai", "FAILED"),
        ("remote", "mcp", "linear"),
        ("bastion", "xai", "ok"),
    ], shown
    assert rows[1][3] == str(ExitStatus.SSH_FAILED.value), shown
    assert rows[2][3] == "ok", shown
    assert "3 ok, 1 failed" in proc.stdout
    # One command per provider: both xai hosts in one fleet command, in the order listed.
    logins = [c.split(" -F ")[0].split() for c in calls.read_text().splitlines()]
    assert logins == [
        ["spotify", "remote", "--json", "--batch"],
        ["xai", "remote-direct", "bastion", "--json", "--batch"],
        ["mcp", "linear", "remote", "--json", "--batch"],
    ], calls.read_text()
