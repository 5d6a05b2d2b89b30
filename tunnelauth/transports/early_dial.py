"""Open the first hop's TCP connection while tunnelauth imports (asyncssh and paramiko).

The library transports send nothing before asyncssh or paramiko is imported, some 100-250 ms
after the start. The TCP handshake and the server's version line need neither: a thread asks
``ssh -G`` where the first hop is (when OpenSSH is installed) and connects, so the SSH handshake
starts with the server's version line already received. The head start holds the ``Dial``; the
transport claims the socket only if its own configuration resolves the same host name and port;
otherwise the socket is closed unused and the transport connects as it always did. Nothing is
sent on the socket here.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading

from tunnelauth.errors import UsageError
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.hops import split_hop
from tunnelauth.transports.master import query_config

DIAL_TIMEOUT = 10.0  # seconds for the TCP connect on the thread


class Dial:
    """One early connection: where it goes, and the socket once connected."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None  # (HostName as configured, port)
        self.sock: socket.socket | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._dropped = False

    def run(self, ssh: str, target: SSHTarget) -> None:
        """Find the first hop, connect; keep the socket unless dropped meanwhile."""
        try:
            address = first_hop(ssh, target)
            if address is None:
                return
            self.address = address
            sock = socket.create_connection(address, DIAL_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._dropped:
                    sock.close()
                else:
                    self.sock = sock
        except Exception:  # the transport connects itself and reports what fails
            pass
        finally:
            self.done.set()

    def claim(self, host: str, port: int, wait: float) -> socket.socket | None:
        """The socket, if it goes to ``host``:``port``; the dial ends here either way.

        Raises TimeoutError if the dial to that address is still connecting after ``wait``:
        it started earlier than a new attempt would, so connecting again would only double
        the wait (a host that drops packets).
        """
        finished = self.done.wait(wait)
        with self._lock:
            sock, self.sock, self._dropped = self.sock, None, True
        ours = self.address is not None and _same(self.address, (host, port))
        if not finished and ours:
            raise TimeoutError(f"no TCP connection to {host}:{port} within {wait:g} s")
        if sock is not None and not ours:
            sock.close()
            return None
        return sock

    def drop(self) -> None:
        """Close the socket now, or as soon as the thread has it."""
        with self._lock:
            sock, self.sock, self._dropped = self.sock, None, True
        if sock is not None:
            sock.close()


def start(target: SSHTarget) -> Dial | None:
    """Start the dial for ``target`` on a thread (None without an ssh client to ask)."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    # Loaded here, so the thread imports nothing (two threads importing can deadlock):
    # getaddrinfo encodes the host name with the idna codec.
    import encodings.idna  # noqa: F401

    dial = Dial()
    threading.Thread(
        target=dial.run, args=(ssh, target), name="tunnelauth-early-dial", daemon=True
    ).start()
    return dial


def first_hop(ssh: str, target: SSHTarget) -> tuple[str, int] | None:
    """Where ssh would open its TCP connection for ``target``: (HostName, Port), or None.

    None when a proxy command is involved, the first hop itself needs a jump, or the config
    shapes the socket (BindAddress, BindInterface, an AddressFamily): those are left to the
    transport, which applies them.
    """
    config = _config(ssh, target)
    if config is None:
        return None
    jump = target.jump[0] if target.jump else _first(config.get("proxyjump", "none"))
    if jump is not None:
        user, host, port = split_hop(jump)
        hop = SSHTarget(host=host, port=port, login=user, ssh_config=target.ssh_config)
        config = _config(ssh, hop)
        if config is None or _first(config.get("proxyjump", "none")) is not None:
            return None
    if config.get("proxycommand", "none") != "none" or _shapes_socket(config):
        return None
    with contextlib.suppress(KeyError, ValueError):
        return config["hostname"], int(config["port"])
    return None


def _config(ssh: str, target: SSHTarget) -> dict[str, str] | None:
    """``ssh -G`` for ``target``; None where ssh rejects it or cannot answer."""
    try:
        return query_config(ssh, target)
    except (UsageError, OSError, subprocess.TimeoutExpired):
        return None


def _shapes_socket(config: dict[str, str]) -> bool:
    """Whether the config binds the socket or picks its address family."""
    bound = "bindaddress" in config or "bindinterface" in config
    return bound or config.get("addressfamily", "any") != "any"


def _first(proxyjump: str) -> str | None:
    """The first hop of an ``ssh -G`` proxyjump value, None for none."""
    first = proxyjump.split(",")[0].strip()
    return None if first.lower() in ("", "none") else first


def _same(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Host names compare without case (ssh lowercases them), ports exactly."""
    return a[0].lower() == b[0].lower() and a[1] == b[1]
