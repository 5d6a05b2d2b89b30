"""Local port checks: the addresses a redirect host binds, whether a port is free, who holds it."""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import subprocess

from tunnelauth.errors import UsageError

_LSOF_TIMEOUT = 5.0
_DESCRIPTION_LIMIT = 120
# Errors meaning "this machine has no such address/family", not "someone holds the port".
_NO_ADDRESS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT})


def listen_addresses(host: str) -> tuple[str, ...]:
    """The loopback addresses a redirect URI's host names: ``localhost`` means both families."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return ("127.0.0.1", "::1")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        raise UsageError(
            f"{host!r} is not a loopback host",
            hint="The callback host must be 127.0.0.1, localhost or [::1].",
        ) from None
    if not address.is_loopback:
        raise UsageError(
            f"{host!r} is not a loopback address; tunnelauth never listens beyond this machine",
            hint="The callback host must be 127.0.0.1, localhost or [::1].",
        )
    return (str(address),)


def family_of(address: str) -> socket.AddressFamily:
    """The socket family of a numeric address."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def reuse_address(sock: socket.socket) -> None:
    """Allow binding a port whose old connections sit in TIME_WAIT (never SO_REUSEPORT)."""
    # On Windows SO_REUSEADDR would let us steal a port another process listens on.
    if os.name == "posix":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on every address ``host`` names (TIME_WAIT counts as free)."""
    for address in listen_addresses(host):
        optional = host.strip().lower() == "localhost" and family_of(address) == socket.AF_INET6
        try:
            sock = socket.socket(family_of(address), socket.SOCK_STREAM)
        except OSError:
            if optional:
                continue
            return False
        with sock:
            reuse_address(sock)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if optional and exc.errno in _NO_ADDRESS:
                    continue
                return False
    return True


def who_holds(port: int) -> str | None:
    """Describe the process listening on TCP ``port`` here (pid, name, command), or ``None``."""
    seen, pid = _listener_from_psutil(port)
    name = ""
    if pid is None:
        pid, name = _listener_from_lsof(port)
    if pid is not None:
        return _describe(pid, name)
    if seen:
        return "a process this user cannot identify (it may belong to another user)"
    return None


def holder_pid(port: int) -> int | None:
    """The pid listening on TCP ``port`` here (psutil, else lsof), or ``None``."""
    _, pid = _listener_from_psutil(port)
    return pid if pid is not None else _listener_from_lsof(port)[0]


def closing_on(port: int) -> bool:
    """Whether connections on local ``port`` sit in TIME_WAIT (they block a bind for a minute)."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return False
    return any(
        c.status == psutil.CONN_TIME_WAIT and c.laddr and c.laddr.port == port for c in connections
    )


def _listener_from_psutil(port: int) -> tuple[bool, int | None]:
    """(a listener was seen, its pid if visible) according to psutil."""
    import psutil  # imported late: only needed when a port is actually taken

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        # macOS refuses the system-wide table to non-root users; lsof still works there.
        return False, None
    seen = False
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.pid:
            return True, conn.pid
        seen = True
    return seen, None


def _listener_from_lsof(port: int) -> tuple[int | None, str]:
    """(pid, command name) of a listener according to lsof, if lsof is present and sees one."""
    lsof = shutil.which("lsof")
    if lsof is None:
        return None, ""
    argv = [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"]
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_LSOF_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, ""
    pid: int | None = None
    name = ""
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("p") and pid is None and line[1:].isdigit():
            pid = int(line[1:])
        elif line.startswith("c") and pid is not None and not name:
            name = line[1:]
    return pid, name


def _describe(pid: int, name: str) -> str:
    """``name (pid N): command line``, shortened and free of control characters."""
    import psutil

    command = ""
    try:
        process = psutil.Process(pid)
        name = process.name() or name
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
    text = f"{name or 'unknown'} (pid {pid})"
    if command:
        text += f": {command}"
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > _DESCRIPTION_LIMIT:
        text = text[: _DESCRIPTION_LIMIT - 1] + "…"
    return text
