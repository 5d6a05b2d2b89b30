"""How a login ended, judged from what tunnelauth saw (pure: no I/O).

The facts are the remote's status line, its exit status, its last lines and which login flow
tunnelauth itself carried out. A provider login succeeds only with its success line and exit 0;
a ``run`` command has no known success line, so it is "logged in" only when a callback reached
the remote or a device or paste flow ran, and otherwise merely "succeeded".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tunnelauth.errors import (
    CommandNotFoundError,
    LoginFailedError,
    SSHError,
    TimedOutError,
    no_terminal_error,
)
from tunnelauth.events import Outcome, Status
from tunnelauth.providers import PROVIDERS
from tunnelauth.remote import (
    NO_BASE64_MARKER,
    NO_TTY_MARKER,
    NO_TTY_STATUS,
    NOT_DECODED_MARKER,
    NOT_DECODED_STATUS,
    NOT_FOUND_MARKER,
)

SUDO_NEEDS_PASSWORD = "sudo: a password is required"


class LoginSeen(str, Enum):
    """The login flow tunnelauth saw through (the newest one wins)."""

    CALLBACK = "callback"  # the browser's callback was delivered to the remote
    DEVICE = "device"  # a device code was shown (the remote then exited 0)
    PASTE = "paste"  # a code or redirect URL was typed or pasted into the remote's prompt
    NONE = "none"


@dataclass(frozen=True)
class Facts:
    """Everything the verdict depends on."""

    host: str
    program: str
    provider: str | None  # None for `run`
    run_as: str | None
    status: Status | None  # the status line that ended the login, if any
    exit_status: int | None  # None: cut off (no exit status came back)
    last_lines: tuple[str, ...]
    seen: LoginSeen


@dataclass(frozen=True)
class Success:
    """A run that ended well: what to tell the user and which flow it was."""

    message: str
    login: LoginSeen


NO_LOGIN_SEEN = "the command succeeded (no login flow seen)"


def judge(facts: Facts) -> Success:
    """The verdict on a finished run; raises the error that names the exit status on failure."""
    status, exit_status, host = facts.status, facts.exit_status, facts.host
    lines = list(facts.last_lines)
    _check_wrapper(facts, lines)
    missing = status is not None and status.outcome is Outcome.NOT_FOUND
    if missing or (exit_status == 127 and any(NOT_FOUND_MARKER in line for line in lines)):
        raise CommandNotFoundError(
            f"{facts.program!r} was not found on {host}",
            hint="install it there, or name its path with --hermes PATH "
            "(a leading ~ is expanded on the remote)",
        )
    if facts.run_as and any(SUDO_NEEDS_PASSWORD in line for line in lines):
        raise LoginFailedError(
            f"sudo on {host} asks for a password to run as {facts.run_as}, and this run "
            "cannot answer it",
            exit_status=exit_status,
            last_lines=lines,
            hint="run tunnelauth from a terminal to type it, or allow the command "
            "without a password (NOPASSWD) in sudoers",
        )
    if exit_status is None and status is None:
        raise SSHError(
            f"connection lost: the SSH link to {host} ended before the login finished",
            host=host,
            hint="the remote login could not be ended over a dead link: it ends by its own "
            "timeout there; run tunnelauth again once the link is back",
        )
    if status is not None and status.outcome is Outcome.TIMED_OUT:
        raise TimedOutError(f"the remote login timed out: {status.line.strip()}")
    if status is not None and status.outcome is Outcome.FAILED:
        raise LoginFailedError(
            f"the remote login failed: {status.line.strip()}",
            exit_status=exit_status,
            last_lines=lines,
            hint=_remote_port_hint(status.line, host),
        )
    if exit_status != 0:
        why = f"exited with status {exit_status}" if exit_status is not None else "was cut off"
        said = " after printing its success line" if status is not None else ""
        raise LoginFailedError(
            f"the remote login {why}{said}", exit_status=exit_status, last_lines=lines
        )
    if facts.provider is not None:
        if status is None:
            raise LoginFailedError(
                "the remote exited 0 but never printed its success line "
                f"({_success_example(facts.provider)}): no login can be confirmed",
                exit_status=exit_status,
                last_lines=lines,
                hint="the last lines show what it printed instead; a hermes that cannot log "
                "in this way, or a wrapper that ran nothing, ends like this",
            )
        return Success("logged in", facts.seen)
    if facts.seen is LoginSeen.NONE:
        return Success(NO_LOGIN_SEEN, facts.seen)
    return Success("logged in", facts.seen)


def _check_wrapper(facts: Facts, lines: list[str]) -> None:
    """The wrapper's own refusals: no terminal, and (``--as``) a login command not decoded."""
    host, exit_status = facts.host, facts.exit_status
    if exit_status == NO_TTY_STATUS and any(NO_TTY_MARKER in line for line in lines):
        raise no_terminal_error(host)
    if facts.run_as is None:
        return
    if exit_status == 127 and any(NO_BASE64_MARKER in line for line in lines):
        raise CommandNotFoundError(
            f"the remote tool base64 was not found on {host} for {facts.run_as}: --as passes "
            "the login command through sudo base64-encoded, so the login never started",
            hint=f"install base64 (coreutils or busybox) on {facts.run_as}'s login PATH "
            "there, or log in without --as",
        )
    if exit_status == NOT_DECODED_STATUS and any(NOT_DECODED_MARKER in line for line in lines):
        raise LoginFailedError(
            f"base64 on {host} did not decode the login command for --as {facts.run_as}, "
            "so the login never started",
            exit_status=exit_status,
            last_lines=lines,
            hint="its base64 must understand -d (GNU coreutils or busybox)",
        )


def _success_example(provider: str) -> str:
    """What the provider's success line looks like, for the message."""
    spec = PROVIDERS.get(provider)
    return f"such as {spec.success!r}" if spec is not None and spec.success else "none seen"


def _remote_port_hint(line: str, host: str) -> str | None:
    """Explain hermes' "port taken" failure: the port is busy on the remote, not here."""
    if "Could not bind" not in line and "already in use" not in line:
        return None
    return (
        f"the callback port is taken on the remote host {host}, not on this machine: another "
        "login there (perhaps from another laptop) is using it; wait for it to finish, then "
        "run tunnelauth again"
    )
