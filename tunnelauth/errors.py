"""The TunnelauthError tree: every expected failure, with structured fields and its exit status."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tunnelauth.sanitize import untrusted
from tunnelauth.status import ExitStatus

MESSAGE_LIMIT = 8192  # characters of a message or hint kept (they may carry remote text)


def _shown(text: str) -> str:
    """Error text may quote ssh, the server or the remote: made plain before anyone shows it."""
    return untrusted(text, limit=MESSAGE_LIMIT, multiline=True)


class TunnelauthError(Exception):
    """Base of every error tunnelauth expects; ``status`` is the exit code it maps to.

    Message and hint are sanitized here, once, so every way an error is shown (the live
    display, ``--json``, the plain last line, doctor's table) gets plain text.
    """

    status: ExitStatus = ExitStatus.ERROR
    last_lines: Sequence[str] = ()  # the remote's last lines, shown with the failure

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = _shown(message)
        super().__init__(message)
        self.message = message
        self.hint = None if hint is None else _shown(hint)


class UsageError(TunnelauthError):
    """The command line, a name or the configuration is invalid."""

    status = ExitStatus.USAGE


class SSHError(TunnelauthError):
    """Connecting or authenticating to the host failed, or the link was lost."""

    status = ExitStatus.SSH_FAILED

    def __init__(
        self, message: str, *, host: str = "", stderr_tail: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.stderr_tail = _shown(stderr_tail)
        self.hop: str | None = None  # the jump host that failed (None: the target itself)


def no_terminal_error(host: str) -> SSHError:
    """The server refused the login a PTY (the same message from every transport)."""
    return SSHError(
        f"{host} refused the login a terminal (PTY); without one the login could not be "
        "ended together with the connection, so it was not started",
        host=host,
        hint="the server has `PermitTTY no`, or the key is marked `no-pty` in "
        "~/.ssh/authorized_keys (or a forced command); log in with a key or user that may "
        "have a terminal",
    )


class HostKeyError(SSHError):
    """The server's host key is unknown, changed or was refused."""

    status = ExitStatus.HOST_KEY


def hop_label(hop: str, target: str) -> str:
    """How messages name a jump host: ``jump host HOP (for TARGET)``."""
    return f"jump host {hop} (for {target})"


def at_hop(error: SSHError, hop: str, target: str) -> SSHError:
    """``error`` (raised while connecting to ``hop``) reworded to name the hop as a jump host.

    Every backend's messages name the host they were connecting to; the first mention of it
    becomes ``jump host HOP (for TARGET)``, so the three backends read alike. An error that
    already names its hop (from a deeper hop) is left as it is.
    """
    if getattr(error, "hop", None) is not None:
        return error
    label = hop_label(hop, target)
    names = [n for n in (error.host, hop) if n]
    for name in names:
        found = re.search(rf"(?<![\w.@-]){re.escape(name)}(?![\w.-])", error.message)
        if found:
            error.message = error.message[: found.start()] + label + error.message[found.end() :]
            break
    else:
        error.message = f"{label}: {error.message}"
    error.args = (error.message,)
    error.hop = hop
    error.host = hop
    if not isinstance(error, HostKeyError):
        error.hint = hop_hint(hop, target)
    return error


def hop_hint(hop: str, target: str) -> str:
    """What to try when a jump host failed."""
    return f"the jump host failed, not {target}: check that `ssh {hop} true` works"


class PortUnavailableError(TunnelauthError):
    """The redirect URI's port cannot be bound on this machine."""

    status = ExitStatus.PORT_UNAVAILABLE

    def __init__(self, message: str, *, port: int, holder: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.port = port
        self.holder = holder


class LoginFailedError(TunnelauthError):
    """The remote login reported a failure or exited non-zero."""

    status = ExitStatus.LOGIN_FAILED

    def __init__(
        self,
        message: str,
        *,
        exit_status: int | None = None,
        last_lines: Sequence[str] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_status = exit_status
        self.last_lines = [untrusted(line) for line in last_lines]


class TimedOutError(TunnelauthError):
    """A deadline passed (connect, overall login, or the remote's own timeout)."""

    status = ExitStatus.TIMED_OUT


class CommandNotFoundError(TunnelauthError):
    """The remote command could not be found on the host."""

    status = ExitStatus.COMMAND_NOT_FOUND


class ChannelRefusedError(TunnelauthError):
    """The server refused a direct-tcpip channel (forwarding disabled, or nothing listening)."""

    def __init__(self, message: str, *, administratively: bool, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.administratively = administratively


class Interrupted(TunnelauthError):
    """The user interrupted the run (SIGINT, SIGTERM, SIGHUP)."""

    status = ExitStatus.INTERRUPTED
