"""Choose the SSH backend (``auto`` or a named one) and build it, importing only what is chosen."""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import TYPE_CHECKING

from tunnelauth.errors import UsageError
from tunnelauth.settings import SSHTarget

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.settings import Settings
    from tunnelauth.transports.base import Transport

LIBRARY_BACKENDS = ("asyncssh", "paramiko")
KNOWN = ("auto", "openssh", *LIBRARY_BACKENDS)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def _openssh_usable() -> tuple[bool, str]:
    """Whether the system ssh exists and can multiplex (Windows' OpenSSH has no ControlMaster)."""
    if os.name != "posix":
        return False, "this platform's OpenSSH has no ControlMaster"
    ssh = shutil.which("ssh")
    if ssh is None:
        return False, "no ssh client on PATH"
    # Every OpenSSH on a POSIX system multiplexes; no probe process is spent on asking (it
    # would delay every login). A client that cannot is caught by the transport's `ssh -G`.
    return True, f"{ssh} supports ControlMaster"


def choose_backend(requested: str, target: SSHTarget) -> tuple[str, str]:
    """The backend to use for ``requested`` (``auto`` or a name) and why it was chosen."""
    del target  # every backend serves every target; unsupported features fail at connect time
    if requested not in KNOWN:
        raise UsageError(
            f"unknown backend {requested!r}", hint=f"choose one of: {', '.join(KNOWN)}"
        )
    if requested == "openssh":
        return "openssh", "asked for by name"
    if requested in LIBRARY_BACKENDS:
        if not _installed(requested):
            raise UsageError(
                f"backend {requested!r} needs the {requested} library, which is not installed",
                hint=f"pip install {requested}",
            )
        return requested, "asked for by name"
    usable, why = _openssh_usable()
    if usable:
        return "openssh", f"auto: {why}"
    for name in LIBRARY_BACKENDS:
        if _installed(name):
            return name, f"auto: {why}; {name} is installed"
    raise UsageError(
        f"no SSH backend can run here: {why}, and neither asyncssh nor paramiko is installed",
        hint="install OpenSSH, or pip install asyncssh",
    )


def make(settings: Settings, *, hops: HopPool | None = None) -> Transport:
    """Build the chosen transport; the reason for the choice is left in ``choice_reason``.

    ``hops``: a fleet's shared jump chains (one login alone opens its own).
    """
    name, reason = choose_backend(settings.backend, settings.target)
    timeout, batch = settings.connect_timeout, settings.batch
    transport: Transport
    if name == "asyncssh":
        from tunnelauth.transports import native_libs

        with native_libs.answered():  # the lookups started ahead, if any
            from tunnelauth.transports.asyncssh_transport import AsyncSSHTransport

        transport = AsyncSSHTransport(
            settings.target, connect_timeout=timeout, batch=batch, hops=hops
        )
    elif name == "paramiko":
        from tunnelauth.transports.paramiko_transport import ParamikoTransport

        transport = ParamikoTransport(
            settings.target, connect_timeout=timeout, batch=batch, hops=hops
        )
    else:
        from tunnelauth.transports.openssh import OpenSSHTransport

        transport = OpenSSHTransport(
            settings.target, connect_timeout=timeout, batch=batch, hops=hops
        )
    # An instance attribute, so the Transport protocol (owned elsewhere) need not change.
    setattr(transport, "choice_reason", reason)  # noqa: B010
    return transport
