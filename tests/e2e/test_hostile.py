"""A hostile remote on the bed: escape sequences, bad URLs and ports, shell text, a huge line.

The fake hermes' adversarial modes print what a compromised host could print before an ordinary
Spotify login; tunnelauth must show none of it raw, open nothing unsafe, listen on nothing but
the real loopback port, pass URLs to --browser-cmd as one argument without a shell, and keep its
memory flat. Then a full login with ``-v`` is searched for the authorization code and the pasted
values: none may appear in anything tunnelauth printed.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus

RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
RECORDER = (
    "import json, sys\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(json.dumps(sys.argv[2:]) + '\\n')\n"
)


def _recorder(tmp: Path) -> tuple[str, Path]:
    """A --browser-cmd that only records the arguments it was given (no shell anywhere)."""
    script = tmp / "record.py"
    script.write_text(RECORDER)
    log = tmp / "opened.jsonl"
    return f"{sys.executable} {script} {log} {{url}}", log


def _opened(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_escape_sequences_never_reach_the_terminal(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(mode="evil_escapes")
    result = tunnelauth(fresh, "spotify", "remote", "-v", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    shown = result.stdout + result.stderr
    assert not RAW_CONTROL.search(shown.replace("\n", "")), "a raw control character got through"
    assert "cm0gLXJmIH4K" not in shown, "the OSC 52 clipboard payload was echoed"
    assert "pwned title" not in shown and "evil.test" not in shown
    assert "clipboard" in shown and "c1 raw" in shown, "the plain text around them stays"


def test_unsafe_authorize_urls_are_never_opened(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(mode="evil_urls", timeout=3)
    command, log = _recorder(tmp_path)
    result = tunnelauth(
        fresh, "spotify", "remote", "--browser-cmd", command, tmp=tmp_path, browser=False
    )
    assert result.code == ExitStatus.TIMED_OUT, result
    opened = [args[0] for args in _opened(log)]
    real = [u for u in opened if u.startswith(f"{fresh.idp_url}/authorize?client_id=tunnelauth")]
    # The concealed (ESC[8m) suffix is stripped, not hidden: what opens is what was shown, and
    # its real host is named and flagged as unusual.
    revealed = "https://idp.test.evil.test/authorize?client_id=evil&state=s"
    assert len(real) == 1 and sorted(opened) == sorted([*real, revealed]), opened
    assert "the login page is on idp.test.evil.test, not the provider's usual host" in (
        result.stderr
    )
    assert "opened the login page on idp.test.evil.test" in result.stderr
    # Each refused login URL is named at once with the rule it breaks.
    refused = "not opening a URL the remote printed"
    assert f"{refused} (it carries a user name (user@host))" in result.stderr
    assert f"{refused} (plain http is opened only to this machine's loopback" in result.stderr


def test_bad_callback_ports_and_hosts_are_ignored(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(mode="evil_ports")
    result = tunnelauth(fresh, "spotify", "remote", "-v", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    listening = re.findall(r"\[listening\] (\S+)", result.stderr)
    assert listening == ["127.0.0.1:43827"], result.stderr
    refused = re.findall(
        r"not opening a URL the remote printed \(.*\): http://(\S+)/callback", result.stderr
    )
    assert refused == [
        "127.0.0.1:22",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "10.0.0.1:8080",
        "evil.test:43827",
    ], result.stderr


def test_shell_text_in_a_url_reaches_the_browser_command_as_one_argument(
    fresh: Bed, tmp_path: Path
) -> None:
    for marker in ("/tmp/ta-pwned", "/tmp/ta-pwned2"):
        Path(marker).unlink(missing_ok=True)
    fresh.set_fake(mode="evil_shell_url", timeout=3)
    command, log = _recorder(tmp_path)
    result = tunnelauth(
        fresh, "spotify", "remote", "--browser-cmd", command, tmp=tmp_path, browser=False
    )
    assert result.code == ExitStatus.TIMED_OUT, result
    opened = _opened(log)
    assert len(opened) == 1 and len(opened[0]) == 1, opened
    url = opened[0][0]
    # The whole printed URL, quote and backticks included, percent-encoded as a browser would.
    assert url.endswith("&x=$(touch$IFS/tmp/ta-pwned);touch$IFS/tmp/ta-pwned2;%27%22'%60id%60"), url
    assert not Path("/tmp/ta-pwned").exists() and not Path("/tmp/ta-pwned2").exists()


def test_huge_line_and_flood_keep_memory_flat(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(mode="huge_line")
    peak: list[int] = [0]
    stop = threading.Event()

    def sample() -> None:
        # The tunnelauth child of this test process, sampled until the run ends.
        me = psutil.Process()
        while not stop.wait(0.05):
            for child in me.children():
                try:
                    if "tunnelauth" in " ".join(child.cmdline()):
                        peak[0] = max(peak[0], child.memory_info().rss)
                except psutil.Error:
                    continue

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path)
    finally:
        stop.set()
        sampler.join(10)
    assert result.code == ExitStatus.OK, result
    assert 0 < peak[0] < 200 * 1024 * 1024, f"peak RSS {peak[0] / 2**20:.0f} MiB"
    assert len(result.stderr) < 8 * 1024 * 1024, "the 50 MB line was echoed"
    assert "flood line 19999" in result.stderr


def _secrets_absent(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret and secret not in text, f"a secret ({secret[:4]}…) was shown"


@pytest.mark.parametrize("via", ["channel", "paste"])
def test_a_verbose_login_never_shows_the_code_or_the_pasted_redirect(
    fresh: Bed, tmp_path: Path, via: str
) -> None:
    host = "remote" if via == "channel" else "remote-nofwd"
    result = tunnelauth(
        fresh, "mcp", "linear", host, "--via", via, "-vv", tmp=tmp_path, env={"COLUMNS": "400"}
    )
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("mcp-linear")
    assert record is not None and record["code"]
    issued = fresh.provider_issued()[-1]
    secrets = [str(record["code"]), str(issued["code"])]
    _secrets_absent(result.stdout + result.stderr, secrets)
    jsonrun = tunnelauth(fresh, "mcp", "linear", host, "--via", via, "--json", tmp=tmp_path)
    assert jsonrun.code == ExitStatus.OK, jsonrun
    record = fresh.fake_record("mcp-linear")
    assert record is not None
    _secrets_absent(jsonrun.stdout + jsonrun.stderr, [str(record["code"])])


def test_a_login_url_that_cannot_be_opened_is_named_at_once(fresh: Bed, tmp_path: Path) -> None:
    # A CLI whose login URL breaks a safety rule (here a raw "é" in its query), then waits.
    # The reason must show while the run is still waiting, not only at the timeout.
    url = "https://idp.test/authorize?client_id=c&response_type=code&scope=café"
    script = f"echo 'Open this URL:'; echo '{url}'; exec sleep 300"
    env = {**os.environ, "TUNNELAUTH_CONFIG": os.devnull, "CI": "1"}
    argv = [sys.executable, "-m", "tunnelauth", "-F", str(fresh.ssh_config), "--timeout", "250"]
    proc = subprocess.Popen(
        [*argv, "run", "remote", "--", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")  # end of output

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not any("not opening a URL the remote printed" in line for line in seen):
            line = lines.get(timeout=60)  # only stops a hang; the line comes within seconds
            assert line, f"the run ended without naming the URL: {''.join(seen)}"
            seen.append(line)
        assert proc.poll() is None, "the message must come while the run still waits"
    finally:
        proc.terminate()  # as a user would: Ctrl-C / SIGTERM, the ordered teardown
        code = proc.wait(60)
        reader.join(30)
    assert code == ExitStatus.INTERRUPTED
    shown = "".join(seen)
    assert "(it holds characters a URL cannot carry): https://idp.test/authorize?" in shown
