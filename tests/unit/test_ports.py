"""Port checks against real sockets held by real processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from tunnelauth import ports
from tunnelauth.errors import UsageError

DEADLINE = 30.0
HOLDER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
    "s.bind((sys.argv[1], 0))\n"
    "s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "sys.stdin.read()\n"
)


@contextmanager
def held_port(address: str = "127.0.0.1", *extra: str) -> Iterator[tuple[int, int]]:
    """A port another process LISTENs on; yields (port, pid) and ends the process after."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, address, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the holder prints as soon as it listens
        yield int(line), proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=DEADLINE)


def ipv6_available() -> bool:
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def free_port() -> int:
    """A port nobody holds right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_who_holds_names_the_listening_process() -> None:
    with held_port() as (port, pid):
        holder = ports.who_holds(port)
        assert holder is not None
        assert f"(pid {pid})" in holder and "python" in holder.lower()
        assert len(holder) <= 120


def test_who_holds_shortens_long_command_lines() -> None:
    with held_port("127.0.0.1", "x" * 500) as (port, pid):
        holder = ports.who_holds(port)
        assert holder is not None and f"pid {pid}" in holder
        assert len(holder) <= 120 and holder.endswith("…")


def test_who_holds_nothing_listening() -> None:
    assert ports.who_holds(free_port()) is None


def test_lsof_fallback_sees_the_holder() -> None:
    if shutil.which("lsof") is None:
        pytest.skip("lsof not installed")
    with held_port() as (port, pid):
        found_pid, name = ports._listener_from_lsof(port)
        assert found_pid == pid and "python" in name


def test_is_free_reports_held_and_free_ports() -> None:
    with held_port() as (port, _):
        assert not ports.is_free("127.0.0.1", port)
        assert not ports.is_free("localhost", port)
    assert ports.is_free("127.0.0.1", free_port())


def test_localhost_is_not_free_when_only_v6_is_held() -> None:
    if not ipv6_available():
        pytest.skip("no ::1 here")
    with held_port("::1") as (port, _):
        assert not ports.is_free("::1", port)
        assert not ports.is_free("localhost", port)
        # 127.0.0.1 alone may be free: the v6 holder did not take it.
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pytest.skip("127.0.0.1 of that port happens to be taken too")
        assert ports.is_free("127.0.0.1", port)


def test_a_port_in_time_wait_counts_as_free() -> None:
    server = socket.socket()
    # Like the previous listener (tunnelauth's own, or ssh -L): Linux lets a TIME_WAIT port be
    # bound again only when both the old and the new socket set SO_REUSEADDR.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    conn, _ = server.accept()
    conn.close()  # the server side closes first, so it is the side left in TIME_WAIT
    client.settimeout(DEADLINE)
    assert client.recv(1) == b""
    client.close()
    server.close()
    states = {c.status for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port}
    assert psutil.CONN_TIME_WAIT in states
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what a bind without SO_REUSEADDR hits
    assert ports.is_free("127.0.0.1", port)
    assert ports.closing_on(port)


def test_listen_addresses() -> None:
    assert ports.listen_addresses("127.0.0.1") == ("127.0.0.1",)
    assert ports.listen_addresses("LocalHost") == ("127.0.0.1", "::1")
    assert ports.listen_addresses("[::1]") == ("::1",)
    assert ports.listen_addresses("::1") == ("::1",)
    for bad in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""):
        with pytest.raises(UsageError):
            ports.listen_addresses(bad)
