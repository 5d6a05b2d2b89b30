"""Choose the SSH backend (``auto`` or a named one) and build it, importing only what is chosen.

Also holds the small pure helpers both pure-Python backends share, so neither imports the other's
library.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from typing import TYPE_CHECKING

from tunnelauth.errors import UsageError
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import SSHTarget

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.settings import Settings
    from tunnelauth.transports.base import Transport

LIBRARY_BACKENDS = ("asyncssh", "paramiko")
KNOWN = ("auto", "openssh", *LIBRARY_BACKENDS)

# SSH_MSG_CHANNEL_OPEN_FAILURE reason codes (RFC 4254 §5.1) as OpenSSH words them.
_OPEN_FAILURES = {
    1: "administratively prohibited",
    2: "connect failed",
    3: "unknown channel type",
    4: "resource shortage",
}


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


# -- helpers shared by the asyncssh and paramiko backends ------------------------------------


def split_hop(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (or ``ssh://…``, ``[v6]:port``) of a ProxyJump hop → parts."""
    spec = spec.strip()
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://") :].rstrip("/")
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port: int | None = None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, _, text = spec.partition(":")
        port = _port(text, spec)
    else:
        host = spec
    if not host:
        raise UsageError(f"invalid jump host {spec!r}")
    return user or None, host, port


def _port(text: str, spec: str) -> int:
    """A port number from a hop spec, or a usage error naming the spec."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid port in jump host {spec!r}")
    return int(text)


def jump_chain(value: str | None) -> tuple[str, ...]:
    """The hops of a ProxyJump value (``none`` or empty → no hops)."""
    if not value or value.strip().lower() == "none":
        return ()
    return tuple(hop.strip() for hop in value.split(",") if hop.strip())


REASON_LIMIT = 500  # characters of a server's channel-open failure reason kept


def refusal_message(code: int, reason: str) -> str:
    """A channel-open failure worded like OpenSSH: ``administratively prohibited: …``.

    The reason is the server's own text: it is made plain here, where it becomes a string.
    """
    kind = _OPEN_FAILURES.get(code, f"open failed (code {code})")
    reason = untrusted(reason, limit=REASON_LIMIT)
    return f"{kind}: {reason}" if reason else kind


def os_error_reason(exc: BaseException, host: str, port: int | None) -> str:
    """A socket error worded as OpenSSH words it, so the backends' messages agree."""
    if isinstance(exc, socket.gaierror):
        return f"Could not resolve hostname {host}: {exc.strerror or exc}"
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        # os.strerror: asyncio's own text is "Connect call failed (address)".
        return f"connect to host {host} port {port or 22}: {os.strerror(exc.errno)}"
    return str(exc)


def unreachable_from(via: str | None, reason: str) -> str:
    """Why a jump host could not open the channel onward (every backend words it so)."""
    who = f"jump host {via}" if via else "the jump host"
    return f"{who} could not reach it ({reason})"
