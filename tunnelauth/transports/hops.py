"""Jump hops and connection failures as OpenSSH words them, shared by every backend.

Pure helpers with no backend import, so the transports and ``resolve`` (which imports the
transports it builds) never import each other.
"""

from __future__ import annotations

import os
import socket
from types import MappingProxyType

from tunnelauth.errors import UsageError
from tunnelauth.sanitize import untrusted

# SSH_MSG_CHANNEL_OPEN_FAILURE reason codes (RFC 4254 §5.1) as OpenSSH words them.
_OPEN_FAILURES = MappingProxyType(
    {
        1: "administratively prohibited",
        2: "connect failed",
        3: "unknown channel type",
        4: "resource shortage",
    }
)


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
