"""The only module that imports rich: a live status on a terminal, plain lines elsewhere.

Everything goes to stderr; stdout stays free for machine-readable output. No string given
to this module is ever read as rich markup: each becomes a ``rich.text.Text`` after passing
``sanitize.untrusted`` once more (text from the remote already passed it where it entered;
this keeps any string that did not from reaching the terminal raw).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.text import Text

from tunnelauth.report import Stage
from tunnelauth.sanitize import untrusted

if TYPE_CHECKING:
    from rich.live import Live

    from tunnelauth.doctorreport import Report as DoctorReport
    from tunnelauth.fleetstatus import HostResult
    from tunnelauth.loginstatus import LoginStatus
    from tunnelauth.options import Resolution


SHOWN_LIMIT = 65536  # characters of one string shown (sources bound theirs much lower)


def plain(text: str, style: str = "") -> Text:
    """``text`` as literal, control-free text: never markup, never an escape sequence."""
    return Text(untrusted(text, limit=SHOWN_LIMIT, multiline=True), style=style)


def _bare(text: str) -> str:
    """One line of control-free text, for the pieces of assembled ``Text``."""
    return untrusted(text, limit=SHOWN_LIMIT)


class ConsoleReporter:
    """Human output: a live status line on a terminal, plain lines when stderr is not one."""

    def __init__(self, *, verbosity: int = 0, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbosity = verbosity
        self.started = time.monotonic()
        self._stage = Stage.CONNECTING
        self._detail = ""
        self._live: Live | None = None
        if self.console.is_terminal and verbosity >= 0:
            # The live display's classes are loaded only for a terminal (~7 ms otherwise).
            from rich.live import Live

            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=8,
                transient=True,
                redirect_stderr=False,
            )
            self._live.start()

    def __rich__(self) -> RenderableType:
        from rich.console import Group
        from rich.spinner import Spinner

        elapsed = time.monotonic() - self.started
        label = Text.assemble(
            (f" {self._stage.value}", "bold cyan"),
            (f" {_bare(self._detail)}" if self._detail else "", "cyan"),
            (f"  {elapsed:4.1f}s", "dim"),
        )
        return Group(Spinner("dots", text=label))

    # -- Reporter ------------------------------------------------------------------------

    def stage(self, stage: Stage, detail: str = "") -> None:
        """Update the live status (plain mode prints a line per stage with -v)."""
        self._stage, self._detail = stage, detail
        if self._live is None and self.verbosity > 0:
            self._line(f"[{stage.value}] {detail}".rstrip(), "cyan")

    def remote_line(self, text: str) -> None:
        """Remote output, dimmed."""
        if self.verbosity >= 0 and text.strip():
            self._line(f"  │ {text}", "dim")

    def info(self, message: str) -> None:
        """A notable step."""
        if self.verbosity >= 0:
            self._line(message)

    def debug(self, message: str) -> None:
        """Shown with -v."""
        if self.verbosity > 0:
            self._line(f"· {message}", "dim cyan")

    def warn(self, message: str) -> None:
        """Shown even with -q."""
        self._line(f"! {message}", "yellow")

    def open_url(self, url: str, host: str, how: str, *, unusual_host: bool) -> None:
        """Say which page opens (its host prominently); print it when the user must open it."""
        if unusual_host:
            self.warn(f"the login page is on {host}, not the provider's usual host: check it")
        if how == "printed":
            # The bare URL on a line of its own: no border or wrapping to break copy and paste.
            self._line(f"open this page in a browser on this machine ({host}):", "bold green")
            self.console.out(_bare(url), highlight=False)  # out() reads no markup
        elif how == "builtin":
            self._line(f"the demo's built-in browser opens the login page on {host}", "green")
            if self.verbosity > 0:
                self._line(f"  {url}", "dim")
        elif self.verbosity >= 0:
            self._line(f"opened the login page on {host} in the browser", "green")
            if self.verbosity > 0:
                self._line(f"  {url}", "dim")

    def device_code(self, url: str, code: str | None) -> None:
        """Show the code big: the user types it at ``url``."""
        from rich.panel import Panel

        body = Text.assemble(
            ("enter this code: ", ""),
            (_bare(code or "(none shown)"), "bold reverse"),
            f"\nat {_bare(url)}",
        )
        self.console.print(Panel(body, title="device login", border_style="magenta"))

    def prompt(self, text: str, secret: bool, *, origin: str = "remote") -> None:
        """Pause the live display so the user can answer the remote (or ssh itself)."""
        self._pause()
        kind = "typing is not shown or logged" if secret else "press Enter to send"
        self.console.print(
            Text.assemble((f"{_bare(origin)} asks: ", "bold"), _bare(text), (f"  ({kind})", "dim"))
        )

    def prompt_done(self) -> None:
        """Resume the live display."""
        self._resume()

    def verified(self, ok: bool, detail: str) -> None:
        """The ``--verify`` result."""
        if ok:
            self.info(f"verified: {detail}")
        else:
            self.warn(f"not verified: {detail}")

    def replaced(self, ok: bool, removed: int, kept: int, detail: str) -> None:
        """The ``--replace`` result."""
        if ok:
            self.info(f"replaced: {detail}")
        else:
            self.warn(f"replace incomplete: {detail}")

    def finish(
        self,
        ok: bool,
        message: str,
        hint: str | None,
        last_lines: list[str],
        *,
        exit_status: int = 0,
        login: str | None = None,
    ) -> None:
        """The final verdict (the exit status is the process's own; not repeated here)."""
        del exit_status, login  # the message already says what happened
        self.close()
        if not ok and last_lines:
            self.console.print(Text("last lines from the remote:", style="dim"))
            for line in last_lines:
                self.console.print(plain(f"  │ {line}", "dim"))
        if ok:
            if self.verbosity >= 0:
                self.console.print(plain(f"✓ {message}", "bold green"))
        else:
            self.console.print(plain(f"✗ {message}", "bold red"))
        if hint:
            self.console.print(plain(f"  {hint}", "yellow"))

    def close(self) -> None:
        """Stop the live display."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- helpers -------------------------------------------------------------------------

    def _line(self, message: str, style: str = "") -> None:
        self.console.print(plain(message, style))

    def _pause(self) -> None:
        if self._live is not None and self._live.is_started:
            self._live.stop()

    def _resume(self) -> None:
        if self._live is not None and not self._live.is_started:
            self._live.start()


# -- command results (stdout: they are what the command was asked for) ----------------------

_STATUS_STYLE = MappingProxyType(
    {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
)


def print_doctor(report: DoctorReport, console: Console | None = None) -> None:
    """The doctor's checks as a table, each problem with its fix."""
    from rich.table import Table

    console = console or Console(highlight=False, soft_wrap=False)
    table = Table(
        title=plain(f"tunnelauth doctor: {report.host}"), title_justify="left", expand=False
    )
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("found")
    table.add_column("fix")
    for check in report.checks:
        style = _STATUS_STYLE.get(check.status, "")
        # Cells as Text, never str: a str cell is rich markup ("[link=…]" would become a link).
        table.add_row(
            plain(check.name), plain(check.status, style), plain(check.detail), plain(check.fix)
        )
    console.print(table)
    if report.exit_status:
        console.print(
            Text(f"a login could not work (exit {int(report.exit_status)})", style="bold red")
        )
    else:
        console.print(Text("a login can work", style="bold green"))


def print_config(resolution: Resolution, console: Console | None = None) -> None:
    """The effective settings and where each came from."""
    from rich.table import Table

    console = console or Console(highlight=False, soft_wrap=False)
    table = Table(title=plain(f"config file: {resolution.config_file}"), title_justify="left")
    for name in ("setting", "value", "source", "from"):
        table.add_column(name)
    for setting, value, source, origin in resolution.rows():
        style = "dim" if source == "default" else ""
        table.add_row(plain(setting), plain(value), plain(source, style), plain(origin, "dim"))
    console.print(table)


def print_status(status: LoginStatus, console: Console | None = None) -> None:
    """What a host is logged in to (remote text is sanitized already and shown literally)."""
    from rich.table import Table

    console = console or Console(highlight=False, soft_wrap=False)
    styles = {"logged in": "green", "logged out": "yellow", "unknown": "red"}
    table = Table(title=plain(f"{status.host}: logins"), title_justify="left")
    for name in ("provider", "state", "remote says"):
        table.add_column(name)
    for row in status.providers:
        table.add_row(plain(row.name), plain(row.state, styles[row.state]), plain(row.detail))
    console.print(table)
    servers = ", ".join(status.mcp_servers) if status.mcp_servers else "none"
    console.print(plain(f"MCP servers with a token: {servers}"))


def print_fleet_status(results: Sequence[HostResult], console: Console | None = None) -> None:
    """One row per host: each provider's state, its MCP servers, or why it did not answer."""
    from rich.table import Table

    console = console or Console(highlight=False, soft_wrap=False)
    styles = {"logged in": "green", "logged out": "yellow", "unknown": "red"}
    providers = list(dict.fromkeys(p.name for r in results if r.status for p in r.status.providers))
    table = Table(title=plain(f"logins on {len(results)} hosts"), title_justify="left")
    for name in ("host", *providers, "MCP servers", "problem"):
        table.add_column(plain(name))
    for result in results:
        if result.status is None:
            cells = [plain("—") for _ in providers]
            table.add_row(plain(result.host.name), *cells, plain("—"), plain(result.error, "red"))
            continue
        states = {p.name: p.state for p in result.status.providers}
        cells = [plain(states.get(n, "—"), styles.get(states.get(n, ""), "")) for n in providers]
        servers = ", ".join(result.status.mcp_servers) or "none"
        table.add_row(plain(result.host.name), *cells, plain(servers), plain(""))
    console.print(table)
    answered = sum(1 for r in results if r.status is not None)
    console.print(plain(f"{answered} of {len(results)} hosts answered"))
