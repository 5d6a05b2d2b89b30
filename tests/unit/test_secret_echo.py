"""Secret prompts at a real terminal: an answer typed the moment the prompt shows is never echoed.

A person typing ahead, expect, or a password manager answers as soon as the prompt is on the
screen. The code runs in a pseudo-terminal with a display that keeps the prompt on screen until
the whole answer has reached the terminal (the slowest a display can be): echo must already be
off by then, as getpass does it, or the kernel echoes the answer back for everyone to see.
"""

from __future__ import annotations

import io
import sys

import pexpect
import pytest

SECRET = "hunter2-typed-at-once"

CHILD = r"""
import asyncio, select, sys
from tunnelauth.terminal import Terminal

class SlowScreen:
    # Draws the prompt, then holds on until the user's whole line is in the terminal's input
    # (a canonical-mode terminal is readable only once a line is complete).
    def prompt(self, text, secret, *, origin="remote"):
        sys.stdout.write(f"{origin} asks: {text}\n")
        sys.stdout.flush()
        ready, _, _ = select.select([sys.stdin], [], [], 30)
        assert ready, "the answer never arrived"
    def prompt_done(self): pass
    def warn(self, message): print("warn:", message)
    def stage(self, *args): pass
    def debug(self, *args): pass

terminal = Terminal(sys.stdin.fileno())
try:
    if sys.argv[1] == "ssh":
        from tunnelauth.flow import _ssh_asker
        answer = asyncio.run(_ssh_asker(SlowScreen(), terminal)("user@box's password: ", ""))
    else:
        from tunnelauth.flowstate import EndPrompt, ShowPrompt
        from tunnelauth.runner import Runner
        from tunnelauth.settings import Settings, SSHTarget
        settings = Settings(SSHTarget("box"), "hermes", ())
        runner = Runner(settings, None, SlowScreen(), None, None, terminal=terminal)
        runner._perform_now(ShowPrompt("Password: ", secret=True))
        answer = sys.stdin.readline().rstrip("\n")  # what the flow relays to the remote
        runner._perform_now(EndPrompt())
finally:
    terminal.restore()
print("DONE", answer == sys.argv[2])
"""


@pytest.mark.parametrize("asker", ["ssh", "remote"])
def test_a_secret_typed_as_the_prompt_shows_is_never_echoed(asker: str) -> None:
    shown = io.StringIO()
    child = pexpect.spawn(
        sys.executable, ["-c", CHILD, asker, SECRET], encoding="utf-8", timeout=30
    )
    child.logfile_read = shown
    try:
        child.expect("asks: .*[Pp]assword:")
        child.send(SECRET + "\r")  # at once, while the prompt is being shown
        child.expect(r"DONE (\w+)")
        assert child.match.group(1) == "True", "the answer reached the asker intact"
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, shown.getvalue()
    assert SECRET not in shown.getvalue(), "the secret was echoed at the terminal"
