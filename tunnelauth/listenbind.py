"""Binding the callback listener's loopback sockets, and saying clearly why a bind failed."""

from __future__ import annotations

import asyncio
import errno
import socket

from tunnelauth import ports
from tunnelauth.errors import PortUnavailableError


def show(address: str, port: int) -> str:
    """``127.0.0.1:P`` or ``[::1]:P``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def bind_all(
    addresses: tuple[str, ...], port: int, optional_v6: bool
) -> tuple[list[socket.socket], list[str]]:
    """Bind every address on ``port`` (all or nothing) and listen; PortUnavailableError on
    conflict. With ``optional_v6`` a machine without IPv6 loopback binds IPv4 only, and the
    notes say so."""
    socks: list[socket.socket] = []
    notes: list[str] = []
    try:
        for address in addresses:
            family = ports.family_of(address)
            optional = optional_v6 and family == socket.AF_INET6
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                if not optional:
                    raise
                notes.append(f"[::1] unavailable ({exc.strerror}): IPv4 only")
                continue
            socks.append(sock)
            ports.reuse_address(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if optional and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    socks.remove(sock)
                    sock.close()
                    notes.append(f"[::1] unavailable ({exc.strerror}): IPv4 only")
                    continue
                raise await bind_error(address, port, exc) from exc
        for sock in socks:
            sock.listen(64)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks, notes


async def bind_error(address: str, port: int, exc: OSError) -> PortUnavailableError:
    """A clear PortUnavailableError for a failed bind, naming the holder when possible."""
    where = show(address, port)
    if exc.errno == errno.EADDRINUSE:
        holder = await asyncio.to_thread(ports.who_holds, port) or ""
        who = holder or "another program (it could not be identified)"
        if not holder and await asyncio.to_thread(ports.closing_on, port):
            who = "connections of an earlier program that are still closing (TIME_WAIT)"
        return PortUnavailableError(
            f"port {port} is already in use on {where} by {who}",
            port=port,
            holder=holder,
            hint=(
                "The redirect URI fixes this port, so tunnelauth cannot pick another. "
                "Stop that program (or an earlier login still waiting) and run tunnelauth "
                f"again; `lsof -nP -iTCP:{port} -sTCP:LISTEN` shows who holds it."
            ),
        )
    if exc.errno == errno.EACCES:
        hint = "Ports below 1024 need privileges on this machine."
    else:
        hint = "Check that the loopback interface is up on this machine."
    return PortUnavailableError(
        f"cannot listen on {where}: {exc.strerror or exc}", port=port, hint=hint
    )
