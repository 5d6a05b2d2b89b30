"""Which SSH backend a run uses (``auto`` or a named one), and why: decided here alone.

Light on purpose (no asyncio, no SSH library, no dataclasses): the head start asks it before
the heavy imports, and ``resolve.make`` builds the transport it names.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from tunnelauth.errors import UsageError

if TYPE_CHECKING:
    from tunnelauth.settings import Settings

LIBRARY_BACKENDS = ("asyncssh", "paramiko")
KNOWN = ("auto", "openssh", *LIBRARY_BACKENDS)


class Choice(NamedTuple):
    """The backend a run uses and the reason it was chosen (shown at ``-v``)."""

    name: str
    reason: str


def library_installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def choose(
    settings: Settings,
    *,
    which: Callable[[str], str | None] = shutil.which,
    installed: Callable[[str], bool] = library_installed,
) -> Choice:
    """The backend for ``settings.backend`` (``auto`` or a name); UsageError if none can run.

    ``which`` finds the ssh client and ``installed`` tells whether a library is there: both
    ask this machine unless a caller says otherwise.
    """
    requested = settings.backend
    if requested not in KNOWN:
        raise UsageError(
            f"unknown backend {requested!r}", hint=f"choose one of: {', '.join(KNOWN)}"
        )
    if requested == "openssh":
        return Choice("openssh", "asked for by name")
    if requested in LIBRARY_BACKENDS:
        if not installed(requested):
            raise UsageError(
                f"backend {requested!r} needs the {requested} library, which is not installed",
                hint=f"pip install {requested}",
            )
        return Choice(requested, "asked for by name")
    usable, why = openssh_usable(which)
    if usable:
        return Choice("openssh", f"auto: {why}")
    for name in LIBRARY_BACKENDS:
        if installed(name):
            return Choice(name, f"auto: {why}; {name} is installed")
    raise UsageError(
        f"no SSH backend can run here: {why}, and neither asyncssh nor paramiko is installed",
        hint="install OpenSSH, or pip install asyncssh",
    )


def openssh_usable(which: Callable[[str], str | None] = shutil.which) -> tuple[bool, str]:
    """Whether the system ssh exists and can multiplex (Windows' OpenSSH has no ControlMaster)."""
    if os.name != "posix":
        return False, "this platform's OpenSSH has no ControlMaster"
    ssh = which("ssh")
    if ssh is None:
        return False, "no ssh client on PATH"
    # Every OpenSSH on a POSIX system multiplexes; no probe process is spent on asking (it
    # would delay every login). A client that cannot is caught by the transport's `ssh -G`.
    return True, f"{ssh} supports ControlMaster"
