"""The one set of exit statuses tunnelauth returns."""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitStatus(IntEnum):
    """Process exit codes; each is documented in the README."""

    OK = 0
    """The remote login printed its success line and exited 0."""
    ERROR = 1
    """An unexpected internal error (a bug: please report it)."""
    USAGE = 2
    """Bad command line, configuration or name."""
    SSH_FAILED = 3
    """The SSH connection or authentication failed (or the link died)."""
    HOST_KEY = 4
    """The host key could not be verified (unknown, changed or refused)."""
    PORT_UNAVAILABLE = 5
    """The redirect URI's port is taken on this machine."""
    LOGIN_FAILED = 6
    """The remote login failed (its last lines are shown)."""
    TIMED_OUT = 7
    """The login did not finish within the deadline."""
    COMMAND_NOT_FOUND = 8
    """The remote command (hermes) was not found on the host."""
    INTERRUPTED = 130
    """Interrupted by Ctrl-C (SIGINT), SIGTERM or SIGHUP."""
