"""Logins on a hardened host (``AllowTcpForwarding no``) and the flows that need no tunnel.

The bed's ``remote-nofwd`` sshd refuses direct-tcpip channels; session channels still work
there, which is what the relay and the paste-back ride on.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus


def _last_code(bed: Bed) -> str:
    issued = bed.provider_issued()
    assert issued, "the browser never reached the provider"
    return str(issued[-1]["code"])


def test_spotify_is_relayed_where_forwarding_is_refused(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result = tunnelauth(fresh, "spotify", "remote-nofwd", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("spotify")
    assert record is not None and record["code"] == _last_code(fresh) and record["state_ok"]
    assert record["requests"] == ["/spotify/callback"]
    assert "Spotify authorization received" in result.dom, "the remote's own page reached Chrome"
    assert "refuses forwarding" in result.stderr, "the probe's verdict is shown"
    assert "relaying the callback" in result.stderr


def test_mcp_relay_sends_exactly_one_request(fresh: Bed, tmp_path: Path, backend: str) -> None:
    result = tunnelauth(fresh, "mcp", "linear", "remote-nofwd", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["code"] == _last_code(fresh)
    assert record["connections"] == 1, "a single-request listener must see one request only"
    assert "Authorization Successful" in result.dom


def test_mcp_paste_back(fresh: Bed, tmp_path: Path, backend: str) -> None:
    result = tunnelauth(
        fresh, "mcp", "linear", "remote-nofwd", "--via", "paste", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["code"] == _last_code(fresh)
    assert record["connections"] == 0, "paste-back never touches the remote listener"
    assert "Got authorization code from paste" in result.stderr
    assert "Login complete" in result.dom, "the browser page shows the remote's result"
    assert record["code"] not in result.stderr, "the pasted code is never echoed"


def test_forced_relay_on_a_host_that_allows_forwarding(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "mcp", "linear", "remote", "--via", "relay", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["connections"] == 1


def test_forced_channel_on_a_refusing_host_fails_clearly(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(timeout=4)
    result = tunnelauth(fresh, "mcp", "linear", "remote-nofwd", "--via", "channel", tmp=tmp_path)
    assert result.code == ExitStatus.SSH_FAILED, result
    assert "refused the forwarding channel" in result.stderr
    assert "--via auto" in result.stderr
    assert "refused" in result.dom.lower(), "the browser page explains the refusal"


class ListenSampler:
    """Samples the listening TCP sockets of a process tree while a run goes on."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.pid: int | None = None

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            if self.pid is None:
                continue
            try:
                proc = psutil.Process(self.pid)
                tree = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
            pids = {p.pid for p in tree}
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
                    self.seen.add((conn.laddr.ip, conn.laddr.port))
            self.samples += 1

    def __enter__(self) -> ListenSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize(
    ("provider", "flow"),
    [
        ("xai", "xai-oauth"),
        ("codex", "openai-codex"),
        ("minimax", "minimax-oauth"),
        ("nous", "nous"),
    ],
)
def test_device_code_flows_open_no_listener(
    fresh: Bed, tmp_path: Path, provider: str, flow: str
) -> None:
    dom = tmp_path / "dom.html"
    argv = [sys.executable, "-m", "tunnelauth", provider, "remote-nofwd"]
    argv += ["-F", str(fresh.ssh_config), "--browser-cmd", fresh.browser_cmd(dom)]
    with ListenSampler() as sampler:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp_path),
        )
        sampler.pid = proc.pid
        try:
            err = _act_as_user(fresh, proc, tmp_path)
            out = proc.stdout.read() if proc.stdout else ""
            proc.wait(60)
        finally:
            _stop(proc)
    assert proc.returncode == ExitStatus.OK, err
    assert sampler.samples > 0
    assert sampler.seen == set(), f"tunnelauth listened on {sampler.seen} in a device-code flow"
    record = fresh.fake_record(flow)
    assert record is not None and record["outcome"] == "ok"
    assert out == ""


def _act_as_user(bed: Bed, proc: subprocess.Popen[str], tmp_path: Path) -> str:
    """Read tunnelauth's output; where the opened page does not carry the code, type it in.

    codex's verification page has no code in its URL: the user reads the code tunnelauth shows
    and enters it on the page, which the bed's Chromium does by opening the form's target.
    """
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        found = re.search(r"enter this code: ([A-Z0-9-]+)", line)
        if found:
            page = f"{bed.idp_url}/device?user_code={found.group(1)}"
            run = subprocess.run(
                [*shlex.split(bed.browser_cmd(tmp_path / "typed.html").replace("{url}", page))],
                timeout=60,
                check=False,
            )
            assert run.returncode == 0
            assert "Device approved" in (tmp_path / "typed.html").read_text()
    return "".join(seen)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a run that is still going the way a user would (SIGTERM: ordered teardown)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CI": "1", "TUNNELAUTH_CONFIG": os.devnull}
    env.pop("TUNNELAUTH_HOST", None)
    return env
