"""Typed events the watcher reads out of the remote command's output.

Data moves one way: remote bytes become these events, and only ``flow`` acts on them.
Every string in an event has already been sanitized (no control characters).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class RemoteLine:
    """One complete, sanitized line of remote output, for display."""

    text: str


@dataclass(frozen=True)
class AuthorizeUrl:
    """A URL the user's browser must open (an https authorize URL, or a loopback start page).

    ``redirect_uri`` is the decoded ``redirect_uri`` query parameter, if any.
    """

    url: str
    host: str
    redirect_uri: str | None = None


@dataclass(frozen=True)
class BrowserRequest:
    """The remote CLI asked its ``$BROWSER`` (tunnelauth's helper) to open ``url``.

    ``url`` is as the helper printed it (sanitized, cut to a few hundred characters). It earns
    no trust: the URL is judged like any printed one, and the events that follow it say what
    became of it (an ``AuthorizeUrl``, a ``DeviceCode``, a ``RejectedUrl``...).
    """

    url: str


@dataclass(frozen=True)
class RejectedUrl:
    """A URL that looks like part of the login but is never opened or listened for.

    ``url`` is the URL as printed (sanitized, cut to a few hundred characters); ``reason``
    says which safety rule it breaks.
    """

    url: str
    reason: str


@dataclass(frozen=True)
class Callback:
    """The remote listens for the OAuth callback on 127.0.0.1:``port``.

    ``host`` is the loopback host the redirect URI names (``127.0.0.1``, ``localhost`` or ``::1``).
    ``path`` is the callback path (e.g. ``/callback``); ``None`` means every path on that port
    belongs to the flow (a CLI that serves its own loopback start page, such as rclone).
    ``source`` says where it was read: ``"redirect_uri"`` or ``"announcement"``.
    """

    host: str
    port: int
    path: str | None
    source: str


@dataclass(frozen=True)
class DeviceCode:
    """A device-code flow: open ``url`` and enter ``code`` (``None`` if none was printed)."""

    url: str
    code: str | None


class PromptKind(str, Enum):
    """What a remote prompt asks for; secrets are never echoed or logged."""

    PASTE = "paste"  # paste the redirect URL / callback URL
    CODE = "code"  # an authorization code (paste-the-code flows)
    SECRET = "secret"  # a password or passphrase
    YESNO = "yesno"
    TEXT = "text"  # anything else (e.g. "Spotify Client ID: ")

    @property
    def is_secret(self) -> bool:
        """Whether what the user types for this prompt must be kept out of every output."""
        return self in (PromptKind.PASTE, PromptKind.CODE, PromptKind.SECRET)


@dataclass(frozen=True)
class Prompt:
    """The remote waits for a line on stdin (a partial line that stayed idle, or a known prompt)."""

    text: str
    kind: PromptKind


class Outcome(str, Enum):
    """How a status line ends the flow."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Status:
    """A line that says how the login ended (success, failure, remote timeout, command missing)."""

    outcome: Outcome
    line: str


Event = (
    RemoteLine
    | AuthorizeUrl
    | BrowserRequest
    | RejectedUrl
    | Callback
    | DeviceCode
    | Prompt
    | Status
)
