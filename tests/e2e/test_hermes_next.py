"""The coming hermes (upstream 0.20-0.21) through the bed: the fake plays ``version: 0.21``.

Codex's browser sign-in on the fixed port 1455 and its fallback to the device code when that
port is busy on the remote, OpenRouter's headless paste, Spotify's manual callback paste racing
its listener, and Nous' device-code timeout. 1455 and 43827 are fixed laptop ports: tunnelauth's
per-port lock makes a run wait while another run on this machine holds them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pexpect
import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import code_received, remote_port_held, tunnelauth
from tests.e2e.test_noforward import ListenSampler, _act_as_user, _env, _stop
from tunnelauth.status import ExitStatus


@pytest.fixture
def next_hermes(fresh: Bed) -> Iterator[Bed]:
    """The fake hermes as upstream 0.21; its config.yaml is removed afterwards."""
    fresh.set_fake(version="0.21")
    yield fresh
    (fresh.home / ".hermes" / "config.yaml").unlink(missing_ok=True)


def _codex_browser_flow(bed: Bed) -> None:
    """``auth.codex_login_flow: browser`` in hermes' config, as a user opts in."""
    config = bed.home / ".hermes" / "config.yaml"
    bed.write_user_file(config, "auth:\n  codex_login_flow: browser\n")


def _last_issued_code(bed: Bed) -> str:
    issued = bed.provider_issued()
    assert issued, "the provider issued no code: the browser never reached the authorize page"
    return str(issued[-1]["code"])


def test_codex_browser_sign_in_on_1455(next_hermes: Bed, tmp_path: Path, backend: str) -> None:
    _codex_browser_flow(next_hermes)
    result = tunnelauth(next_hermes, "codex", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, f"{result}\n{next_hermes.fake_record('openai-codex')}"
    assert code_received(next_hermes, "openai-codex") == _last_issued_code(next_hermes)
    record = next_hermes.fake_record("openai-codex")
    assert record is not None and record["port"] == 1455
    assert record["state_ok"] and record["exchanged"] and record["outcome"] == "ok"
    assert record["requests"] == ["/auth/callback"], "only the callback may reach the remote"
    assert "OpenAI authorization received" in result.dom
    assert "Exchanging the authorization code for Codex tokens..." in result.stderr
    assert "Added openai-codex OAuth credential #" in result.stderr


def test_codex_falls_back_to_the_device_code_when_1455_is_busy_on_the_remote(
    next_hermes: Bed, tmp_path: Path
) -> None:
    _codex_browser_flow(next_hermes)
    dom = tmp_path / "dom.html"
    argv = [sys.executable, "-m", "tunnelauth", "codex", "remote"]
    argv += ["-F", str(next_hermes.ssh_config), "--browser-cmd", next_hermes.browser_cmd(dom)]
    with remote_port_held(next_hermes, 1455), ListenSampler() as sampler:
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
            err = _act_as_user(next_hermes, proc, tmp_path)
            proc.wait(60)
        finally:
            _stop(proc)
    assert proc.returncode == ExitStatus.OK, err
    assert (
        "Port 1455 is already in use (a Codex CLI sign-in may be running). OpenAI only "
        "redirects to that port, so falling back to the device-code login."
    ) in err
    assert "Added openai-codex OAuth credential #" in err
    record = next_hermes.fake_record("openai-codex")
    assert record is not None and record["outcome"] == "ok" and record["port"] is None
    assert sampler.seen == set(), f"no loopback was announced, yet it listened: {sampler.seen}"


def test_openrouter_batch_stops_at_the_code_prompt(
    next_hermes: Bed, tmp_path: Path, backend: str
) -> None:
    # As for anthropic: a batch run cannot type the code, so it fails at once, naming the prompt.
    args = ["openrouter", "remote", "--json"]
    result = tunnelauth(next_hermes, *args, tmp=tmp_path, backend=backend, browser=False)
    assert result.code == ExitStatus.LOGIN_FAILED, result
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "failed" and last["exit_status"] == ExitStatus.LOGIN_FAILED
    assert "cannot answer" in last["reason"] and "Authorization code" in last["reason"]
    assert "using OpenRouter's headless flow" in result.stderr
    record = next_hermes.fake_record("openrouter")
    assert record is not None and record["outcome"] != "running" and record["code"] is None


def test_openrouter_code_typed_by_the_user(next_hermes: Bed, tmp_path: Path, backend: str) -> None:
    # The user gets the code from the provider's page (the bed's Chromium shows it) and types it.
    idp = next_hermes.idp_url
    query = {"client_id": "hermes-openrouter", "state": "s", "response_type": "code"}
    page = f"{idp}/authorize?" + urlencode({**query, "redirect_uri": f"{idp}/oauth/code/callback"})
    shown = tmp_path / "code.html"
    browser = next_hermes.browser_cmd(shown).replace("{url}", page)
    subprocess.run(browser.split(), timeout=60, check=True)
    found = re.search(r"<code id=['\"]code['\"]>([^<#]+)#", shown.read_text())
    assert found is not None, "the provider's page showed no code"
    typed = found.group(1)

    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    args = ["-m", "tunnelauth", "-F", str(next_hermes.ssh_config), "--backend", backend]
    args += ["--browser-cmd", next_hermes.browser_cmd(tmp_path / "dom.html")]
    with ListenSampler() as sampler:
        run = pexpect.spawn(
            sys.executable,
            [*args, "openrouter", "remote"],
            env=env,
            encoding="utf-8",
            timeout=60,
            dimensions=(50, 200),
        )
        sampler.pid = run.pid
        run.expect("Authorization code")
        run.sendline(typed)
        run.expect(pexpect.EOF)
        run.close()
    out = run.before or ""
    assert run.exitstatus == ExitStatus.OK, out
    assert "Added openrouter OAuth credential #" in out
    assert typed not in out, "the code was echoed"
    assert sampler.seen == set(), f"a paste flow needs no listener: {sampler.seen}"
    record = next_hermes.fake_record("openrouter")
    assert record is not None and record["code"] == typed and record["exchanged"]


def test_spotify_manual_paste_prompt_does_not_block_the_callback(
    next_hermes: Bed, tmp_path: Path, backend: str
) -> None:
    result = tunnelauth(next_hermes, "spotify", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, f"{result}\n{next_hermes.fake_record('spotify')}"
    record = next_hermes.fake_record("spotify")
    assert record is not None and record["tty"], "without a TTY hermes shows no paste prompt"
    assert record["code"] == _last_issued_code(next_hermes)
    assert record["requests"] == ["/spotify/callback"], "the callback came through the tunnel"
    assert record["state_ok"] and record["exchanged"]
    assert record["paste_prompt"], "hermes showed no paste prompt: nothing raced the callback"
    assert "─── Manual callback paste ───" in result.stderr
    assert "Spotify login successful!" in result.stderr
    assert "cannot answer" not in result.stderr


def test_nous_device_timeout_exits_7_with_its_line(next_hermes: Bed, tmp_path: Path) -> None:
    next_hermes.set_fake(mode="timeout")  # the device is never approved within 3 s
    result = tunnelauth(next_hermes, "nous", "remote", tmp=tmp_path)
    assert result.code == ExitStatus.TIMED_OUT, result
    assert "Timed out waiting for device authorization." in result.stderr
    assert "Portal sign-in is required…" in result.stderr
    record = next_hermes.fake_record("nous")
    assert record is not None and record["outcome"] == "failed" and not record["exchanged"]
