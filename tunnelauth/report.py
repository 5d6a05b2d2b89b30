"""What the flow tells the user: a small protocol the renderers implement (no rich import here)."""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class Stage(str, Enum):
    """The stages a login goes through, shown in the live status."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RUNNING = "running"
    LISTENING = "listening"
    WAITING_BROWSER = "waiting for the browser"
    WAITING_APPROVAL = "waiting for approval"
    PROMPT = "waiting for your input"
    FINISHING = "finishing"
    DONE = "done"
    FAILED = "failed"


class Reporter(Protocol):
    """Receives what happens during a run; implementations decide how it looks.

    Every string is plain text: what came from the remote or the server already passed
    ``sanitize.untrusted``. An implementation never reads a string as markup.
    """

    def stage(self, stage: Stage, detail: str = "") -> None:
        """The run entered ``stage``."""
        ...

    def remote_line(self, text: str) -> None:
        """A sanitized line of remote output."""
        ...

    def info(self, message: str) -> None:
        """A notable step (shown unless quiet)."""
        ...

    def debug(self, message: str) -> None:
        """Detail shown with -v only."""
        ...

    def warn(self, message: str) -> None:
        """Something the user should look at, even when quiet."""
        ...

    def open_url(self, url: str, host: str, how: str, *, unusual_host: bool) -> None:
        """The authorize / verification URL and how it was opened (``printed`` = by the user)."""
        ...

    def device_code(self, url: str, code: str | None) -> None:
        """A device code to enter at ``url``."""
        ...

    def prompt(self, text: str, secret: bool, *, origin: str = "remote") -> None:
        """``origin`` (the remote, or ssh itself) waits for a line the user types next."""
        ...

    def prompt_done(self) -> None:
        """The remote prompt was answered."""
        ...

    def verified(self, ok: bool, detail: str) -> None:
        """``--verify``: whether the credential is really on the remote."""
        ...

    def replaced(self, ok: bool, removed: int, kept: int, detail: str) -> None:
        """``--replace``: how many older credentials of the provider were removed."""
        ...

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
        """The run ended with ``exit_status``; ``last_lines`` are the remote's last lines.

        ``login`` (on success): the flow tunnelauth saw, ``callback``, ``device``, ``paste``
        or ``none``.
        """
        ...

    def close(self) -> None:
        """Stop any live display and restore the terminal."""
        ...
