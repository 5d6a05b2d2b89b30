"""What a person sees of a fleet login: one row per host (stage, elapsed, result) and its lines.

``FleetBoard`` holds the rows; ``HostReporter`` is one host's Reporter, feeding its row. On a
terminal the rows are a live table; elsewhere each change worth knowing is one plain line
``tunnelauth: HOST: …``. What a person must act on (a device code, a URL to open by hand, a
warning, a failure's reason) is always printed as a line, never only in the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunnelauth.report import Stage
from tunnelauth.sanitize import untrusted

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

LAST_LINES_SHOWN = 5  # a failed host's last remote lines printed under its reason


@dataclass
class Row:
    """One host's line in the table."""

    name: str
    stage: str = "waiting"
    detail: str = ""
    result: str = ""
    ok: bool | None = None
    started: float | None = None
    ended: float | None = None

    def elapsed(self, now: float) -> str:
        """Seconds since the host's login started (frozen once it ended)."""
        if self.started is None:
            return ""
        return f"{(self.ended or now) - self.started:.0f} s"


@dataclass
class FleetBoard:
    """The rows of a fleet run and how they are shown (live table or plain lines)."""

    names: list[str]
    verbosity: int = 0
    console: Console | None = None
    live: bool = True  # False: logins run in the foreground one by one, the table comes last
    rows: dict[str, Row] = field(default_factory=dict)
    _live: Live | None = None

    def __post_init__(self) -> None:
        from rich.console import Console

        self.rows = {name: Row(name) for name in self.names}
        self.console = self.console or Console(stderr=True, highlight=False, soft_wrap=True)
        if self.live and self.console.is_terminal and self.verbosity >= 0:
            from rich.live import Live

            # stdout is not the table's: ``--json`` events written there go where stdout goes
            # (a file, a pipe), never into the live display on the terminal.
            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
            )
            self._live.start()

    def __rich__(self) -> RenderableType:
        """The live table (rich calls this at each refresh)."""
        return self.table()

    def table(self) -> RenderableType:
        """Host, stage, elapsed, result: every string literal text."""
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        table = Table(title_justify="left")
        for name in ("host", "stage", "elapsed", "result"):
            table.add_column(name)
        for row in self.rows.values():
            style = "" if row.ok is None else ("green" if row.ok else "red")
            stage = row.stage + (f" ({row.detail})" if row.detail and row.ok is None else "")
            table.add_row(
                Text(_one_line(row.name)),
                Text(_one_line(stage)),
                Text(row.elapsed(now)),
                Text(_one_line(row.result), style=style),
            )
        return table

    def line(self, name: str, text: str, *, style: str = "") -> None:
        """One line about a host, above the live table (or plain on stderr)."""
        from rich.text import Text

        assert self.console is not None
        self.console.print(Text(f"tunnelauth: {_one_line(name)}: {_one_line(text)}", style=style))

    def update(self, name: str, **changes: object) -> None:
        """Change a row; the live table shows it at its next refresh."""
        row = self.rows[name]
        for key, value in changes.items():
            setattr(row, key, value)

    def close(self) -> None:
        """Stop the live table, then print the final table once (terminal or not)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.verbosity >= 0:
            assert self.console is not None
            self.console.print(self.table())


class HostReporter:
    """One host's Reporter: its stage and result go to the board's row."""

    def __init__(self, board: FleetBoard, name: str) -> None:
        self.board = board
        self.name = name

    def _say(self, text: str, style: str = "") -> None:
        self.board.line(self.name, text, style=style)

    def stage(self, stage: Stage, detail: str = "") -> None:
        """The row's stage; the clock starts at connecting."""
        changes: dict[str, object] = {"stage": stage.value, "detail": ""}
        if stage is Stage.CONNECTING and self.board.rows[self.name].started is None:
            changes["started"] = time.monotonic()
        self.board.update(self.name, **changes)
        if self.board.verbosity > 0:
            self._say(stage.value + (f": {detail}" if detail else ""))

    def remote_line(self, text: str) -> None:
        """Remote lines only with -v: ten hosts' output at once is noise."""
        if self.board.verbosity > 0:
            self._say(text)

    def info(self, message: str) -> None:
        """Shown with -v."""
        if self.board.verbosity > 0:
            self._say(message)

    def debug(self, message: str) -> None:
        """Shown with -vv."""
        if self.board.verbosity > 1:
            self._say(message, "dim")

    def warn(self, message: str) -> None:
        """Always shown."""
        self._say(f"warning: {message}", "yellow")

    def open_url(self, url: str, host: str, how: str, *, unusual_host: bool) -> None:
        """A URL the person must open by hand is printed; an opened one is noted in the row."""
        if how == "printed":
            self._say(f"open this URL in a browser: {url}", "bold")
        else:
            self.board.update(self.name, detail="browser opened")
        if unusual_host:
            self._say(f"note: the page is on {host}, not the provider's usual host", "yellow")

    def device_code(self, url: str, code: str | None) -> None:
        """Always printed: the person enters the code."""
        what = f"enter the code {code} at {url}" if code else f"approve at {url}"
        self._say(what, "bold")
        self.board.update(self.name, detail=f"code {code}" if code else "approve")

    def prompt(self, text: str, secret: bool, *, origin: str = "remote") -> None:
        """A prompt (batch fleets refuse them; this says which host asked)."""
        self._say(f"{origin} asks: {text}")

    def prompt_done(self) -> None:
        """Nothing to show."""

    def verified(self, ok: bool, detail: str) -> None:
        """--verify's result."""
        self._say(("verified: " if ok else "not verified: ") + detail, "" if ok else "red")

    def replaced(self, ok: bool, removed: int, kept: int, detail: str) -> None:
        """--replace's result."""
        self._say(f"replaced: {removed} removed, {kept} kept" + (f" ({detail})" if detail else ""))

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
        """The row's result; a failure's reason, hint and last lines are printed."""
        now = time.monotonic()
        stage = Stage.DONE if ok else Stage.FAILED
        result = ("✓ " if ok else f"✗ (exit {exit_status}) ") + message
        self.board.update(self.name, stage=stage.value, result=result, ok=ok, ended=now)
        if ok:
            self._say(f"✓ {message}", "green")
            return
        self._say(f"✗ {message}", "red")
        if hint:
            self._say(f"  {hint}")
        for line in last_lines[-LAST_LINES_SHOWN:]:
            self._say(f"  | {line}", "dim")

    def close(self) -> None:
        """The board closes once, for every host."""


def _one_line(text: str) -> str:
    return untrusted(text, limit=2000)
