"""The one place an error becomes an exit status (and, if nobody showed it yet, a message).

A reporter that has shown an error to the user says so by raising ``Shown(error)`` in its
place; every other ``TunnelauthError`` reaching the top is printed here, once.
"""

from __future__ import annotations

from typing import TextIO

from tunnelauth.errors import TunnelauthError
from tunnelauth.status import ExitStatus


class Shown(Exception):
    """``error`` was already shown to the user (by a reporter's last line): only its status."""

    def __init__(self, error: TunnelauthError) -> None:
        super().__init__(error.message)
        self.error = error


def status_of(exc: BaseException, stderr: TextIO | None = None) -> int:
    """The exit status ``exc`` ends the run with; an error not shown yet is written first.

    ``Shown`` and ``TunnelauthError`` map to their status, ``KeyboardInterrupt`` to 130;
    anything else is not an expected failure and is raised again.
    """
    if isinstance(exc, Shown):
        return int(exc.error.status)
    if isinstance(exc, TunnelauthError):
        if stderr is None:
            import sys

            stderr = sys.stderr
        stderr.write(f"tunnelauth: {exc.message}\n")
        if exc.hint:
            stderr.write(f"  {exc.hint}\n")
        return int(exc.status)
    if isinstance(exc, KeyboardInterrupt):
        return int(ExitStatus.INTERRUPTED)
    raise exc
