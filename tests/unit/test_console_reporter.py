"""The human reporter: plain lines off a terminal, a live status on one."""

from __future__ import annotations

import io

from fresh_python import run_json
from rich.console import Console

from tunnelauth.render import ConsoleReporter
from tunnelauth.report import Stage


def test_plain_lines_off_a_terminal_without_the_live_display_loaded() -> None:
    code = (
        "import io, json, sys\n"
        "from rich.console import Console\n"
        "from tunnelauth.render import ConsoleReporter\n"
        "from tunnelauth.report import Stage\n"
        "out = io.StringIO()\n"
        "r = ConsoleReporter(console=Console(file=out, highlight=False, soft_wrap=True))\n"
        "r.stage(Stage.CONNECTING, 'to remote')\n"
        "r.info('the remote bound 127.0.0.1:43210')\n"
        "r.remote_line('Waiting for callback')\n"
        "r.finish(True, 'logged in', None, [])\n"
        "live = [m for m in ('rich.live', 'rich.spinner', 'rich.panel', 'rich.table')\n"
        "        if m in sys.modules]\n"
        "print(json.dumps({'out': out.getvalue(), 'loaded': live}))\n"
    )
    found = run_json(code)
    assert found["loaded"] == []
    assert found["out"].splitlines() == [
        "the remote bound 127.0.0.1:43210",
        "  │ Waiting for callback",
        "✓ logged in",
    ]


def test_a_terminal_gets_the_live_status_and_a_device_code_panel() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, highlight=False)
    reporter = ConsoleReporter(console=console)
    try:
        assert reporter._live is not None and reporter._live.is_started
        reporter.stage(Stage.WAITING_APPROVAL, "xai")
        reporter.device_code("https://accounts.x.ai/device", "ABCD-1234")
    finally:
        reporter.finish(False, "denied", "try again", ["last remote line"])
    assert reporter._live is None
    text = out.getvalue()
    assert "device login" in text and "ABCD-1234" in text
    assert "last remote line" in text and "denied" in text and "try again" in text
