"""What the callback listener tells: its events, and the pages a browser gets from it directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventKind = Literal["bound", "request_carried", "request_local", "carry_failed", "refused"]


@dataclass
class Progress:
    """How far one carried exchange got: whether the browser already has an answer."""

    answered: bool = False


@dataclass(frozen=True)
class ListenerEvent:
    """Something the listener did; ``path`` is redacted (query values never appear)."""

    kind: EventKind
    path: str = ""
    status: int | None = None
    detail: str = ""


# (title, text) of each page the listener answers itself; the remote never sees these requests.
DONE_PAGE = (
    "Login already completed",
    "tunnelauth has already passed the login on. You can close this tab.",
)
REFUSED_PAGE = (
    "SSH server refused the tunnel",
    "tunnelauth could not carry this callback to the remote host: the SSH server refused "
    "the forwarding channel. Look at the tunnelauth terminal for what to do next.",
)
TUNNEL_FAILED_PAGE = (
    "Tunnel failed",
    "tunnelauth could not carry this callback to the remote host. "
    "Look at the tunnelauth terminal for what happened.",
)
BUSY_PAGE = (
    "Busy",
    "tunnelauth is already carrying other requests to the remote host. Try again.",
)
NO_ANSWER = "no answer"  # the detail of a carry that reached the remote and got no answer
NO_ANSWER_PAGE = (
    "Remote listener did not answer",
    "The callback reached the remote host, but its login listener closed without answering. "
    "Look at the tunnelauth terminal for the login's result.",
)
