"""Hostile local programs at the laptop's callback port while a real login runs on the bed.

A DNS-rebinding page, a browser carrying other local apps' cookies and credentials, floods of
idle connections and of requests, and callbacks a paste prompt must never see: the
``local_client.py`` browser command does each to the port, then the bed's Chromium logs in.
What reached the remote comes from the fake hermes' record.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

from tests.bed.netbed import Bed
from tests.e2e.helpers import Result, tunnelauth
from tests.e2e.local_client import FLOOD, LAPTOP_SECRET
from tunnelauth.listener import MAX_CHANNELS
from tunnelauth.status import ExitStatus

CLIENT = Path(__file__).with_name("local_client.py")


def login_beside(
    bed: Bed, mode: str, *args: str, tmp: Path, backend: str
) -> tuple[Result, dict[str, Any]]:
    """Run tunnelauth ARGS with ``local_client.py MODE`` as the browser; its report too."""
    report = tmp / "client.json"
    env = " ".join(f"{k}={v}" for k, v in bed.browser_env(tmp / "dom.html").items())
    command = f"env {env} {sys.executable} {CLIENT} {mode} {report} {{url}}"
    result = tunnelauth(
        bed, "--browser-cmd", command, *args, tmp=tmp, backend=backend, browser=False
    )
    seen = json.loads(report.read_text()) if report.exists() else {}
    return result, seen


def private_spotify_port(bed: Bed) -> None:
    """Move the fake Spotify login off 43827, which other test runs on this laptop may use."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    bed.set_fake(spotify_port=port)


def last_issued_code(bed: Bed) -> str:
    issued = bed.provider_issued()
    assert issued, "the browser never reached the provider"
    return str(issued[-1]["code"])


def test_a_request_for_another_host_is_refused_and_the_login_succeeds(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result, seen = login_beside(
        fresh, "evil-host", "mcp", "linear", "remote", tmp=tmp_path, backend=backend
    )
    assert seen["evil"].startswith("HTTP/1.1 421 "), seen
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["code"] == last_issued_code(fresh)
    assert record["connections"] == 1, "the single-request listener served the browser only"
    assert "Authorization Successful" in result.dom
    assert "named another host" in result.stderr and "evil.example" not in result.stderr


def test_laptop_cookies_and_authorization_never_reach_the_remote(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    private_spotify_port(fresh)
    result, seen = login_beside(
        fresh, "credentials", "spotify", "remote", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.OK, result
    assert seen["raw"].startswith("HTTP/1.1 200 "), seen
    # Chromium really carries another local app's cookie for 127.0.0.1 (any port).
    assert seen["seed_cookie_seen"] == [f"laptop_app={LAPTOP_SECRET}"], seen
    record = fresh.fake_record("spotify")
    assert record is not None and record["code"] == last_issued_code(fresh)
    assert len(record["headers"]) >= 2, "both the raw request and Chromium's reached it"
    for names in record["headers"]:
        assert "host" in names
        assert "cookie" not in names and "authorization" not in names, record["headers"]


def test_a_flood_of_idle_connections_does_not_stop_the_login(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result, _ = login_beside(
        fresh, "idle-flood", "mcp", "linear", "remote", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["code"] == last_issued_code(fresh)
    assert record["connections"] == 1
    assert "Authorization Successful" in result.dom


def test_a_flood_of_requests_gets_a_bounded_number_of_channels(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    private_spotify_port(fresh)
    result, seen = login_beside(
        fresh, "request-flood", "spotify", "remote", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.OK, result
    answers = seen["flood_answers"]
    assert sum(answers.values()) == FLOOD and answers.get("200"), answers
    record = fresh.fake_record("spotify")
    assert record is not None and record["code"] == last_issued_code(fresh)
    # Every carried request is one channel to the remote listener: never more than the limit.
    assert 1 <= record["most_concurrent"] <= MAX_CHANNELS, record["most_concurrent"]
    if backend == "openssh":
        assert 1 <= seen["most_ssh_w"] <= MAX_CHANNELS, seen


def test_a_callback_with_control_bytes_is_never_typed_into_the_paste_prompt(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result, seen = login_beside(
        fresh,
        "paste-control",
        "mcp",
        "linear",
        "remote-nofwd",
        "--via",
        "paste",
        tmp=tmp_path,
        backend=backend,
    )
    assert seen["control"].startswith("HTTP/1.1 400 "), seen
    assert seen["brace"].startswith("HTTP/1.1 400 "), seen
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["code"] == last_issued_code(fresh)
    shown = result.stdout + result.stderr
    assert "did not contain" not in shown and "cancelled" not in shown.lower()
    assert "nothing was pasted" in result.stderr
