"""AsyncSSHTransport against a real SSH server (asyncssh, in-process, loopback only).

The server and its client files live here; ``test_transport_paramiko`` imports them so both
library backends are checked against the same remote emulation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import psutil
import pytest

from tunnelauth.environment import Environment
from tunnelauth.errors import HostKeyError, SSHError
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import asyncssh_pty, early_dial
from tunnelauth.transports.asyncssh_transport import AsyncSSHTransport
from tunnelauth.transports.base import Transport
from tunnelauth.transports.headstart import HeadStart

DEADLINE = 20.0
ADMIN_PROHIBITED_PORT = 9  # the server refuses direct-tcpip to this port by policy
HOSTILE_PORT = 13  # the server refuses direct-tcpip to this port with a hostile reason
# A refusal reason as a hostile server may word it: OSC 52, OSC 8, CSI, 8-bit CSI, rich markup
# and a bidi override between plain words.
HOSTILE_REASON = (
    "evil-start \x1b]52;c;cm0gLXJmIH4K\x07osc52 \x1b]8;;https://evil.test/\x1b\\osc8"
    "\x1b]8;;\x1b\\ \x1b[2Jcsi \x9b1mc1 [link=https://evil.test]markup[/link] \u202ebidi evil-end"
)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run a test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` when the deadline passes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def read_until(read: Callable[[], Awaitable[bytes]], marker: bytes) -> bytes:
    """Read chunks until ``marker`` shows up (or the output ends); each read has a deadline."""
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(read(), DEADLINE)
        if not chunk:
            break
        data += chunk
    return data


@dataclass
class ServerState:
    """What the emulated remote saw."""

    auth_begun: int = 0
    sessions: list[dict[str, Any]] = field(default_factory=list)
    tcp_requests: list[tuple[str, int]] = field(default_factory=list)
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    session_ended: asyncio.Event = field(default_factory=asyncio.Event)
    connections: list[Any] = field(default_factory=list)


class _Server(asyncssh.SSHServer):  # type: ignore[misc]
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def connection_made(self, conn: Any) -> None:
        self.state.connections.append(conn)

    def begin_auth(self, username: str) -> bool:
        self.state.auth_begun += 1
        return True

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        self.state.tcp_requests.append((dest_host, dest_port))
        if dest_port == ADMIN_PROHIBITED_PORT:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed"
            )
        if dest_port == HOSTILE_PORT:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, HOSTILE_REASON)
        return True  # asyncssh connects to the destination itself (or reports connect failed)


async def _session(state: ServerState, process: Any) -> None:
    """The remote command emulation: a few commands, answering like a PTY would (CRLF)."""
    width = process.get_terminal_size()[0]
    record = {"command": process.command, "pty": process.get_terminal_type(), "width": width}
    state.sessions.append(record)
    argv = (process.command or "").split()
    out = process.stdout
    status = 0
    try:
        if argv[:1] == ["lines"]:
            out.write(b"one\r\ntwo\r\n")
            process.stderr.write(b"to-stderr\r\n")
        elif argv[:1] == ["ptyinfo"]:
            out.write(f"pty={record['pty']} width={width}\r\n".encode())
        elif argv[:1] == ["ask"]:
            out.write(b"Name? ")
            line = b""
            while not line.endswith((b"\r", b"\n")):  # a tty's ICRNL turns Enter into \n
                line += await process.stdin.read(1)
            out.write(b"hello " + line.strip() + b"\r\n")
        elif argv[:1] == ["exit"]:
            status = int(argv[1])
        elif argv[:1] == ["slow-exit"]:  # a remote that takes a moment to end (a loaded host)
            await asyncio.sleep(float(argv[1]))
            status = 77
        elif argv[:1] == ["cat"]:  # no PTY: plain stdin to stdout, stderr separate
            data = await process.stdin.read()
            out.write(data)
            process.stderr.write(b"err")
            status = 3
        elif argv[:1] == ["flood"]:  # N bytes on stdout and on stderr
            size = int(argv[1])
            out.write(b"o" * size)
            process.stderr.write(b"e" * size)
        elif argv[:1] == ["hold"]:  # run until ^C arrives or the session is closed
            out.write(b"ready\r\n")
            while chunk := await process.stdin.read(1024):
                if b"\x03" in chunk:
                    state.interrupted.set()
                    out.write(b"^C\r\nLogin cancelled.\r\n")
                    status = 130
                    if argv[1:] != ["ignore-int"]:
                        break
        else:
            out.write(b"unknown command\r\n")
            status = 127
        process.exit(status)
    except (asyncssh.Error, OSError, BrokenPipeError):
        pass
    finally:
        state.session_ended.set()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A loopback service the channels reach: echoes until EOF, then closes."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _free_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Bed:
    """A running server and the client files that reach it."""

    state: ServerState
    port: int
    echo_port: int
    closed_port: int
    config: Path
    known_hosts: Path
    host_key: Any
    dir: Path

    def target(self, host: str = "testhost", **kwargs: Any) -> SSHTarget:
        """A target using the private ssh_config."""
        return SSHTarget(host=host, ssh_config=self.config, **kwargs)

    def trust(self, key: Any | None) -> None:
        """Rewrite known_hosts to list ``key`` for the server (``None``: list nothing)."""
        line = ""
        if key is not None:
            line = f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n"
        self.known_hosts.write_text(line)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A throwaway server host key and a client key file (written once per module)."""
    directory = tmp_path_factory.mktemp("keys")
    client = asyncssh.generate_private_key("ssh-ed25519")
    path = directory / "id_ed25519"
    client.write_private_key(str(path))
    path.chmod(0o600)
    (directory / "id_ed25519.pub").write_bytes(client.export_public_key())
    return asyncssh.generate_private_key("ssh-ed25519"), path


@contextlib.asynccontextmanager
async def ssh_server(
    keys: tuple[Any, Path], directory: Path, *, allow_pty: bool = True
) -> AsyncIterator[Bed]:
    """Start the server and a loopback echo service; write ssh_config and known_hosts."""
    host_key, client_key = keys
    state = ServerState()
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    authorized = asyncssh.import_authorized_keys((client_key.parent / "id_ed25519.pub").read_text())

    async def handler(process: Any) -> None:
        await _session(state, process)

    server = await asyncssh.create_server(
        lambda: _Server(state),
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        process_factory=handler,
        encoding=None,
        line_editor=False,  # raw PTY bytes: the emulation sees ^C as a byte, like a tty would
        allow_pty=allow_pty,
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = directory / "known_hosts"
    config = directory / "ssh_config"
    common = f"""  HostName 127.0.0.1
  Port {port}
  User tester
  IdentityFile {client_key}
  IdentitiesOnly yes
  UserKnownHostsFile {known_hosts}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  PasswordAuthentication no
  KbdInteractiveAuthentication no
"""
    config.write_text(f"Host testhost\n{common}\nHost jumped\n  ProxyJump testhost\n{common}")
    bed = Bed(
        state,
        port,
        echo.sockets[0].getsockname()[1],
        _free_port(),
        config,
        known_hosts,
        host_key,
        directory,
    )
    bed.trust(host_key)
    try:
        yield bed
    finally:
        server.close()
        await server.wait_closed()
        echo.close()
        await echo.wait_closed()


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's agent must not take part (IdentitiesOnly covers files, not this):
    asyncssh finds the agent in the process's environment itself."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def snapshot() -> tuple[int, int]:
    """(inet sockets, threads) of this process, leaving out the event loop's executor pool.

    The pool (``asyncio.to_thread``) belongs to the loop and lives until it closes; any other
    thread left over was started by a transport.
    """
    threads = [t for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    return len(psutil.Process().net_connections("inet")), len(threads)


# -- scenarios shared by both library transports -----------------------------------------


async def scenario_process(transport: Transport, bed: Bed) -> None:
    """PTY, merged output, stdin, exit status, interrupt, close."""
    proc = await transport.start("ptyinfo")
    assert b"pty=xterm width=1000" in await read_until(proc.read, b"\n")
    assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
    await proc.close()

    proc = await transport.start("lines")
    out = await read_until(proc.read, b"to-stderr")
    assert b"one\r\ntwo\r\n" in out and b"to-stderr" in out  # stderr merged into the stream
    await proc.close()

    proc = await transport.start("ask")
    assert b"Name? " in await read_until(proc.read, b"? ")
    proc.write(b"alice\r")
    assert b"hello alice" in await read_until(proc.read, b"alice\r\n")
    assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
    await proc.close()

    proc = await transport.start("exit 7")
    assert await asyncio.wait_for(proc.wait(), DEADLINE) == 7
    assert await asyncio.wait_for(proc.read(), DEADLINE) == b""
    await proc.close()

    proc = await transport.start("hold")
    assert b"ready" in await read_until(proc.read, b"ready")
    # A read cancelled by an idle timeout must not lose what arrives afterwards.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(proc.read(), 0.05)
    proc.interrupt()
    await asyncio.wait_for(bed.state.interrupted.wait(), DEADLINE)
    assert b"Login cancelled." in await read_until(proc.read, b"cancelled.")
    assert await asyncio.wait_for(proc.wait(), DEADLINE) == 130
    await proc.close()

    # close() on a remote that ignores ^C still ends the session.
    bed.state.interrupted.clear()
    bed.state.session_ended.clear()
    proc = await transport.start("hold ignore-int")
    assert b"ready" in await read_until(proc.read, b"ready")
    await asyncio.wait_for(proc.close(), DEADLINE)
    assert bed.state.interrupted.is_set()
    await asyncio.wait_for(bed.state.session_ended.wait(), DEADLINE)


async def scenario_channels(transport: Transport, bed: Bed) -> None:
    """A live port carries bytes both ways and the close; refusals read as EOF with a reason."""
    channel = await transport.open_channel("127.0.0.1", bed.echo_port)
    channel.write(b"GET /callback HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(channel.drain(), DEADLINE)
    channel.write_eof()
    data = await asyncio.wait_for(channel.reader.read(), DEADLINE)  # until the echo closes
    assert data == b"GET /callback HTTP/1.1\r\n\r\n"
    assert await channel.refusal() is None
    await asyncio.wait_for(channel.close(), DEADLINE)

    channel = await transport.open_channel("127.0.0.1", ADMIN_PROHIBITED_PORT)
    channel.write(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(channel.drain(), DEADLINE)
    assert await asyncio.wait_for(channel.reader.read(1024), DEADLINE) == b""
    why = await asyncio.wait_for(channel.refusal(), DEADLINE)
    assert why is not None and why.startswith("administratively prohibited")
    await channel.close()

    channel = await transport.open_channel("127.0.0.1", bed.closed_port)
    channel.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(channel.reader.read(1024), DEADLINE) == b""
    why = await asyncio.wait_for(channel.refusal(), DEADLINE)
    assert why is not None and why.startswith("connect failed")
    await channel.close()


async def scenario_exec(transport: Transport) -> None:
    """A short command without a PTY: stdin in, stdout and stderr apart, exit status."""
    result = await transport.exec("cat", stdin=b"request bytes", timeout=DEADLINE)
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"request bytes", b"err")


async def scenario_full(make: Callable[[SSHTarget], Transport], bed: Bed) -> None:
    """Everything over one connection, then nothing of ours is left open."""
    before = snapshot()
    tasks_before = len(asyncio.all_tasks())
    transport = make(bed.target())
    await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
    await scenario_process(transport, bed)
    await scenario_channels(transport, bed)
    await scenario_exec(transport)
    assert bed.state.sessions[0]["pty"] == "xterm"
    await asyncio.wait_for(transport.close(), DEADLINE)
    await until(lambda: snapshot() == before, f"sockets and threads back to {before}")
    await until(lambda: len(asyncio.all_tasks()) == tasks_before, "tasks to end")


async def scenario_jumps(make: Callable[[SSHTarget], Transport], bed: Bed) -> None:
    """``-J`` hops and the config's ProxyJump both reach the host through direct-tcpip."""
    for target in (bed.target(jump=("testhost",)), bed.target("jumped")):
        before = snapshot()
        bed.state.tcp_requests.clear()
        transport = make(target)
        await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
        try:
            assert ("127.0.0.1", bed.port) in bed.state.tcp_requests
            proc = await transport.start("exit 0")
            assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
            await proc.close()
        finally:
            await asyncio.wait_for(transport.close(), DEADLINE)
        await until(lambda b=before: snapshot() == b, "sockets and threads back")  # type: ignore[misc]


async def scenario_host_keys(make: Callable[[SSHTarget], Transport], bed: Bed) -> None:
    """A changed key and an unknown key both fail before anything authenticates or runs."""
    other = asyncssh.generate_private_key("ssh-ed25519")
    fingerprint = bed.host_key.get_fingerprint("sha256")
    for trusted in (other, None):
        bed.trust(trusted)
        transport = make(bed.target())
        with pytest.raises(HostKeyError) as info:
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
        await transport.close()
        assert info.value.status == 4
        assert fingerprint in info.value.message
    assert bed.state.auth_begun == 0 and bed.state.sessions == []


async def scenario_early_socket(
    make: Callable[[SSHTarget, HeadStart], Transport], bed: Bed
) -> None:
    """The first hop's TCP connection, opened ahead, is the one the handshake runs on.

    Direct, and as the first hop of a ProxyJump: the server sees no connection beyond the
    hops (an early socket left unused would be one more).
    """
    for target, hops in ((bed.target(), 1), (bed.target("jumped"), 2)):
        before = len(bed.state.connections)
        dial = early_dial.start(target)
        assert dial is not None, "no ssh client: the dial needs ssh -G"
        assert await asyncio.to_thread(dial.done.wait, DEADLINE)
        assert dial.sock is not None, "the dial did not connect"
        early = dial.sock.getsockname()
        with HeadStart(target=target, dial=dial) as head:
            transport = make(target, head)
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            try:
                assert dial.sock is None, "the transport did not claim the socket"
                seen = bed.state.connections[before:]
                assert len(seen) == hops
                assert seen[0].get_extra_info("peername") == early
                proc = await transport.start("exit 0")
                assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
                await proc.close()
            finally:
                await asyncio.wait_for(transport.close(), DEADLINE)


# -- the asyncssh transport --------------------------------------------------------------


def _asyncssh(target: SSHTarget) -> Transport:
    return AsyncSSHTransport(target, connect_timeout=DEADLINE, batch=True)


def test_process_channels_exec_and_clean_close(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_full(_asyncssh, bed)

    run(main())


def test_jump_from_flag_and_from_config(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_jumps(_asyncssh, bed)

    run(main())


def test_the_early_socket_carries_the_handshake(keys: tuple[Any, Path], tmp_path: Path) -> None:
    def make(target: SSHTarget, head: HeadStart) -> Transport:
        return AsyncSSHTransport(target, connect_timeout=DEADLINE, batch=True, head_start=head)

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_early_socket(make, bed)

    run(main())


def test_host_key_changed_or_unknown(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_host_keys(_asyncssh, bed)

    run(main())


def test_user_known_hosts_none_still_checks(keys: tuple[Any, Path], tmp_path: Path) -> None:
    """``UserKnownHostsFile none`` must not turn checking off (asyncssh would, given None)."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            text = bed.config.read_text().replace(f"UserKnownHostsFile {bed.known_hosts}", "")
            bed.config.write_text("UserKnownHostsFile none\n" + text)
            transport = _asyncssh(bed.target())
            with pytest.raises(HostKeyError):
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()

    run(main())


def test_batch_names_the_method_the_server_wants(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            other = tmp_path / "other_key"
            asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
            other.chmod(0o600)
            text = bed.config.read_text()
            text = text.replace(str(keys[1]), str(other)).replace("Authentication no", "A yes")
            bed.config.write_text(text)
            transport = _asyncssh(bed.target())
            with pytest.raises(SSHError) as info:
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()
            assert "authentication" in info.value.message
            assert not isinstance(info.value, HostKeyError)

    run(main())


def test_options_and_identity_override_the_config(keys: tuple[Any, Path], tmp_path: Path) -> None:
    """``-i`` adds a key before the config's; ``-o Port=`` and ``-p`` beat the config."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            text = bed.config.read_text().replace(f"IdentityFile {keys[1]}\n", "")
            bed.config.write_text(text.replace(f"Port {bed.port}", f"Port {bed.closed_port}"))
            target = bed.target(identity=(keys[1],), options=(f"Port={bed.port}",))
            transport = _asyncssh(target)
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()
            transport = _asyncssh(bed.target(identity=(keys[1],), port=bed.port))
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()

    run(main())


def test_dead_link_is_noticed_by_keepalive(keys: tuple[Any, Path], tmp_path: Path) -> None:
    """A server that stops answering (but keeps the socket) ends the process with status None."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            transport = AsyncSSHTransport(
                bed.target(), connect_timeout=DEADLINE, batch=True, keepalive_interval=0.2
            )
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            proc = await transport.start("hold")
            assert b"ready" in await asyncio.wait_for(proc.read(), DEADLINE)
            for conn in list(bed.state.connections):
                conn._transport.pause_reading()  # private: the server goes silent, TCP stays up
            assert await asyncio.wait_for(proc.wait(), DEADLINE) is None
            await proc.close()
            await transport.close()
            for conn in list(bed.state.connections):
                conn._transport.resume_reading()

    run(main())


def _client_and_server_order(
    keys: tuple[Any, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> list[str]:
    """asyncssh's own log of one ``start``: which of client and server did what, in order."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            transport = _asyncssh(bed.target())
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            asyncssh.set_debug_level(2)
            try:
                with caplog.at_level(logging.DEBUG, logger="asyncssh"):
                    proc = await transport.start("ptyinfo")
                    assert b"pty=xterm width=1000" in await read_until(proc.read, b"\n")
                    await proc.close()
            finally:
                asyncssh.set_debug_level(1)
                await transport.close()

    run(main())
    steps = []
    for record in caplog.records:
        text = record.getMessage()
        if "PTY created" in text:
            steps.append("server made the PTY")
        elif "Command: ptyinfo" in text and "server made the PTY" not in steps:
            steps.append("client sent the command")  # the server logs its own line after
    return steps


def test_pty_request_and_command_leave_in_one_flight(
    keys: tuple[Any, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncssh alone waits a round trip for the PTY reply before sending the command.
    assert asyncssh_pty.supported(), "this asyncssh lacks what the one-flight session needs"
    steps = _client_and_server_order(keys, tmp_path, caplog)
    assert steps == ["client sent the command", "server made the PTY"]


def test_sessions_opened_side_by_side_each_go_in_one_flight(
    keys: tuple[Any, Path], tmp_path: Path
) -> None:
    """Two connections start their sessions at once: the first to finish puts the stock class
    back while the other still waits for its replies, and that one is not slowed by it."""
    assert asyncssh_pty.supported()

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            first, second = _asyncssh(bed.target()), _asyncssh(bed.target())
            try:
                await asyncio.wait_for(
                    asyncio.gather(
                        first.connect(env=Environment()), second.connect(env=Environment())
                    ),
                    DEADLINE,
                )
                procs = await asyncio.wait_for(
                    asyncio.gather(first.start("ptyinfo"), second.start("ptyinfo")), DEADLINE
                )
                try:
                    for proc in procs:
                        assert b"pty=xterm" in await read_until(proc.read, b"\n")
                        channel = proc._proc.channel  # private: the class it was built with
                        assert type(channel).__name__ == "OneFlightChannel"
                    assert asyncssh.connection.SSHClientChannel is asyncssh_pty._STOCK
                finally:
                    for proc in procs:
                        await proc.close()
            finally:
                await first.close()
                await second.close()

    run(main())


def test_without_one_flight_the_command_waits_for_the_pty(
    keys: tuple[Any, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fallback for an asyncssh without the internals: stock behaviour, still working.
    monkeypatch.setattr(asyncssh_pty, "_ONE_FLIGHT", None)
    steps = _client_and_server_order(keys, tmp_path, caplog)
    assert steps == ["server made the PTY"]  # the client's Command line came after it


@pytest.mark.parametrize("one_flight", [True, False])
def test_a_refused_pty_is_a_clear_error_and_leaves_no_command_running(
    keys: tuple[Any, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_flight: bool
) -> None:
    """Sent before the refusal came, the command ran: the error comes only after it ended."""
    if not one_flight:
        monkeypatch.setattr(asyncssh_pty, "_ONE_FLIGHT", None)

    async def main() -> None:
        async with ssh_server(keys, tmp_path, allow_pty=False) as bed:
            transport = _asyncssh(bed.target())
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            try:
                with pytest.raises(SSHError, match=r"refused the login a terminal \(PTY\)"):
                    await asyncio.wait_for(transport.start("slow-exit 0.3"), DEADLINE)
                started = [s["command"] for s in bed.state.sessions]
                # stock asyncssh waits for the PTY's reply: the command is never sent
                assert started == (["slow-exit 0.3"] if one_flight else [])
                assert bed.state.session_ended.is_set() is one_flight
                # The connection stays usable, and the stock class is back for other sessions.
                result = await transport.exec("exit 7", timeout=DEADLINE)
                assert result.exit_status == 7
            finally:
                await transport.close()
            assert asyncssh.connection.SSHClientChannel is asyncssh_pty._STOCK

    run(main())
