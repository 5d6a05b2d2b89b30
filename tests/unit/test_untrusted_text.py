"""Text tunnelauth did not write (remote, server, ssh) reaches the user only as plain text.

One gate, ``sanitize.untrusted``, where such text becomes a string; errors, doctor's rows and
the renderer pass it again. Here: the gate itself, a hostile server's channel-open refusal
through both library backends, errors, the doctor table and the live reporter on a real
terminal console (where rich would emit OSC 8 links for markup), exec output bounds, and
``scripts/ci-reauth`` re-printing a hostile reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from test_transport_asyncssh import (  # the shared in-process server
    DEADLINE,
    HOSTILE_PORT,
    HOSTILE_REASON,
    _no_agent,
    keys,
    run,
    ssh_server,
)

from tunnelauth.doctorreport import FAIL, WARN, Check, Report
from tunnelauth.environment import Environment
from tunnelauth.errors import LoginFailedError, SSHError
from tunnelauth.render import ConsoleReporter, print_doctor
from tunnelauth.settings import SSHTarget
from tunnelauth.status import ExitStatus
from tunnelauth.transports.asyncssh_transport import AsyncSSHTransport
from tunnelauth.transports.base import Transport
from tunnelauth.transports.openssh_sessions import run_ssh
from tunnelauth.transports.paramiko_transport import ParamikoTransport

__all__ = ["_no_agent", "keys"]

REPO = Path(__file__).resolve().parents[2]
MARKUP = "[link=https://evil.test]markup[/link]"
WORDS = ("evil-start", "osc52", "osc8", "csi", "c1", MARKUP, "bidi evil-end")
# ESC, C1 (8-bit CSI/OSC/ST among them), other C0 controls but the newline, bidi controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# What may never reach a terminal even where rich adds its own colours: an OSC (clipboard,
# title, hyperlink), an 8-bit C1 control, a screen clear, a bidi override.
NEVER = re.compile("\x1b\\]|[\x80-\x9f]|\x1b\\[2J|[\u202a-\u202e\u2066-\u2069]")


def assert_plain(text: str) -> None:
    """No control character at all, and every plain word still there."""
    assert not RAW.search(text), repr(text)
    assert "cm0gLXJmIH4K" not in text and "https://evil.test/" not in text, repr(text)
    for word in WORDS:
        assert word in text, f"{word!r} missing from {text!r}"


def terminal() -> tuple[Console, io.StringIO]:
    """A console that believes it drives a colour terminal (links, styles and all)."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=400)
    return console, out


def assert_terminal_safe(shown: str) -> None:
    """What a terminal received: rich's own colours only, every hostile word literal."""
    assert not NEVER.search(shown), repr(shown)
    plain_text = re.sub("\x1b\\[[0-9;?]*[A-Za-z]", "", shown)  # rich's own SGR/cursor codes
    for word in WORDS:
        assert word in plain_text, f"{word!r} missing from {shown!r}"


# -- the gate -----------------------------------------------------------------------------


def test_untrusted_text_keeps_the_words_and_drops_every_control() -> None:
    from tunnelauth.sanitize import untrusted

    assert_plain(untrusted(HOSTILE_REASON))
    assert_plain(untrusted(HOSTILE_REASON.encode()))
    assert untrusted("a\r\nb\rc\x1b[2Jd", multiline=True) == "a\nb\ncd"
    assert untrusted("one\ntwo") == "one two", "single-line text stays on one line"


def test_untrusted_text_is_cut_visibly() -> None:
    from tunnelauth.sanitize import untrusted

    assert untrusted("x" * 50, limit=10) == "x" * 10 + " … [cut after 10 characters]"
    shown = untrusted(b"y" * 10_000_000, limit=100)
    assert shown.startswith("y" * 100) and "cut" in shown and len(shown) < 200


# -- a hostile server's channel-open refusal, through both library backends ----------------


def _asyncssh(target: SSHTarget) -> Transport:
    return AsyncSSHTransport(target, connect_timeout=DEADLINE, batch=True)


def _paramiko(target: SSHTarget) -> Transport:
    return ParamikoTransport(target, connect_timeout=DEADLINE, batch=True, keepalive_interval=1.0)


@pytest.mark.parametrize("make", [_asyncssh, _paramiko], ids=["asyncssh", "paramiko"])
def test_a_hostile_refusal_reason_reaches_the_user_as_plain_text(
    keys: tuple[Any, Path], tmp_path: Path, make: Callable[[SSHTarget], Transport]
) -> None:
    async def main() -> str | None:
        async with ssh_server(keys, tmp_path) as bed:
            transport = make(bed.target())
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            try:
                channel = await transport.open_channel("127.0.0.1", HOSTILE_PORT)
                assert await asyncio.wait_for(channel.reader.read(1), DEADLINE) == b""
                why = await asyncio.wait_for(channel.refusal(), DEADLINE)
                await channel.close()
            finally:
                await asyncio.wait_for(transport.close(), DEADLINE)
            return why

    why = run(main())
    assert why is not None and why.startswith("connect failed: ")
    if make is _paramiko:
        # paramiko keeps the server's reason to its (silenced) log and words its own.
        assert not RAW.search(why) and "evil" not in why, why
        return
    assert_plain(why)
    # As the flow words the probe's verdict, on a terminal.
    console, out = terminal()
    reporter = ConsoleReporter(console=console)
    reporter.info(f"forwarding probe inconclusive ({why})")
    reporter.close()
    assert_terminal_safe(out.getvalue())


# -- errors, doctor, the reporter ------------------------------------------------------------


def test_errors_carry_plain_text_whatever_they_quote() -> None:
    error = SSHError(f"cannot connect: {HOSTILE_REASON}", stderr_tail=HOSTILE_REASON)
    assert_plain(error.message) and assert_plain(str(error)) and assert_plain(error.stderr_tail)
    failed = LoginFailedError("failed", hint=HOSTILE_REASON, last_lines=[HOSTILE_REASON])
    assert failed.hint is not None
    assert_plain(failed.hint) and assert_plain(failed.last_lines[0])


def test_doctor_table_shows_markup_as_text_and_no_link() -> None:
    report = Report(
        "remote",
        [
            Check("hermes", FAIL, f"Hermes Agent v0.19.0 {HOSTILE_REASON}", HOSTILE_REASON),
            Check("forwarding", WARN, HOSTILE_REASON, code=ExitStatus.LOGIN_FAILED),
        ],
    )
    for check in report.checks:
        assert_plain(check.detail)
    assert_plain(json.dumps(report.to_json(), ensure_ascii=False))
    console, out = terminal()
    print_doctor(report, console)
    assert_terminal_safe(out.getvalue())  # a str cell would have made "markup" an OSC 8 link


def test_the_reporter_shows_hostile_results_as_plain_text() -> None:
    console, out = terminal()
    reporter = ConsoleReporter(console=console)
    reporter.verified(True, HOSTILE_REASON)
    reporter.replaced(False, 0, 1, HOSTILE_REASON)
    reporter.warn(f"the relay failed (exit 3): {HOSTILE_REASON}")
    reporter.prompt(HOSTILE_REASON, False, origin="ssh")
    reporter.prompt_done()
    reporter.finish(False, HOSTILE_REASON, HOSTILE_REASON, [HOSTILE_REASON])
    assert_terminal_safe(out.getvalue())


# -- exec output bounds ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [_asyncssh, _paramiko], ids=["asyncssh", "paramiko"])
def test_exec_keeps_at_most_the_limit_and_says_so(
    keys: tuple[Any, Path], tmp_path: Path, make: Callable[[SSHTarget], Transport]
) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            transport = make(bed.target())
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            try:
                big = await transport.exec("flood 300000", timeout=DEADLINE, limit=1000)
                small = await transport.exec("flood 10", timeout=DEADLINE, limit=1000)
            finally:
                await asyncio.wait_for(transport.close(), DEADLINE)
        assert (big.exit_status, big.stdout, big.stderr, big.cut) == (
            0,
            b"o" * 1000,
            b"e" * 1000,
            True,
        )
        assert (small.stdout, small.stderr, small.cut) == (b"o" * 10, b"e" * 10, False)

    run(main())


def test_openssh_exec_keeps_at_most_the_limit_and_says_so() -> None:
    script = "head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2; exit 4"
    result = asyncio.run(run_ssh(["sh", "-c", script], timeout=DEADLINE, limit=1000))
    assert (result.exit_status, len(result.stdout), len(result.stderr)) == (4, 1000, 1000)
    assert result.cut


# -- scripts/ci-reauth ------------------------------------------------------------------------


def test_ci_reauth_prints_a_hostile_reason_as_visible_escapes(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tunnelauth"
    event = {"v": 1, "event": "failed", "exit_status": 6, "reason": HOSTILE_REASON}
    fake.write_text(
        f"import sys\nsys.stdout.write({json.dumps(event, ensure_ascii=False) + chr(10)!r})\n"
        "sys.exit(6)\n"
    )
    logins = tmp_path / "logins.txt"
    logins.write_text("remote spotify\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ci-reauth"), str(logins)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TUNNELAUTH": f"{sys.executable} {fake}"},
        check=False,
    )
    assert proc.returncode == 1, proc
    shown = proc.stdout + proc.stderr
    assert not RAW.search(shown), repr(shown)
    assert "FAILED" in shown and "evil-start" in shown and MARKUP in shown
    assert "\\x1b]52;c;" in shown and "\\x9b1mc1" in shown, "controls are shown as escapes"


def test_json_events_carry_no_control_whatever_the_caller_passed() -> None:
    from tunnelauth.jsonout import JsonReporter

    stream = io.StringIO()
    reporter = JsonReporter(stream=stream)
    # A local port holder's command line is not remote text, yet may carry 8-bit controls,
    # which JSON does not escape.
    reporter.warn(f"port 43827 is in use by pid 1: {HOSTILE_REASON}")
    reporter.finish(False, HOSTILE_REASON, HOSTILE_REASON, [HOSTILE_REASON], exit_status=6)
    shown = stream.getvalue()
    assert not NEVER.search(shown) and "\\u001b" not in shown, shown
    assert "evil-start" in shown and MARKUP in shown
