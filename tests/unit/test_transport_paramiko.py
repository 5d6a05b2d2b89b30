"""ParamikoTransport against the same in-process SSH server as the asyncssh tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from test_transport_asyncssh import (  # the shared server; fixtures are imported to be used
    DEADLINE,
    _no_agent,
    keys,
    run,
    scenario_early_socket,
    scenario_full,
    scenario_host_keys,
    scenario_jumps,
    snapshot,
    ssh_server,
    until,
)

from tunnelauth.environment import Environment
from tunnelauth.errors import HostKeyError, SSHError, UsageError
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.base import Transport
from tunnelauth.transports.headstart import HeadStart
from tunnelauth.transports.paramiko_channels import host_socket
from tunnelauth.transports.paramiko_config import Effective
from tunnelauth.transports.paramiko_transport import ParamikoTransport

__all__ = ["_no_agent", "keys"]


def _paramiko(target: SSHTarget) -> Transport:
    return ParamikoTransport(target, connect_timeout=DEADLINE, batch=True, keepalive_interval=1.0)


async def _jumped(bed: Any) -> ParamikoTransport:
    """A connection to the test server through itself as a jump host (no keepalive)."""
    transport = ParamikoTransport(
        bed.target("jumped"), connect_timeout=DEADLINE, batch=True, keepalive_interval=60
    )
    await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
    return transport


def test_process_channels_exec_and_clean_close(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_full(_paramiko, bed)

    run(main())


def test_jump_from_flag_and_from_config(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_jumps(_paramiko, bed)

    run(main())


def test_the_early_socket_carries_the_handshake(keys: tuple[Any, Path], tmp_path: Path) -> None:
    def make(target: SSHTarget, head: HeadStart) -> Transport:
        return ParamikoTransport(target, connect_timeout=DEADLINE, batch=True, head_start=head)

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_early_socket(make, bed)

    run(main())


def test_host_key_changed_or_unknown(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            await scenario_host_keys(_paramiko, bed)

    run(main())


def test_host_key_alias(keys: tuple[Any, Path], tmp_path: Path) -> None:
    """HostKeyAlias names the known_hosts entry, whatever the address."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            line = bed.known_hosts.read_text().replace(f"[127.0.0.1]:{bed.port}", "aliased")
            bed.known_hosts.write_text(line)
            bed.config.write_text("HostKeyAlias aliased\n" + bed.config.read_text())
            transport = _paramiko(bed.target())
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()

    run(main())


@pytest.mark.parametrize(
    ("edit", "feature"),
    [
        ("ProxyCommand nc %h %p", "ProxyCommand"),
        ("IdentityAgent /tmp/elsewhere.sock", "IdentityAgent"),
    ],
)
def test_unsupported_config_is_a_usage_error(
    keys: tuple[Any, Path], tmp_path: Path, edit: str, feature: str
) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            bed.config.write_text(f"{edit}\n" + bed.config.read_text())
            transport = _paramiko(bed.target())
            with pytest.raises(UsageError, match=feature) as info:
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()
            assert "--backend openssh" in (info.value.hint or "")
            assert bed.state.sessions == []

    run(main())


def test_cert_authority_lines_count_for_certificates_only(
    keys: tuple[Any, Path], tmp_path: Path
) -> None:
    """A CA line neither makes a plain key known nor unknown: the plain lines decide (as ssh)."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            ca = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
            original = bed.known_hosts.read_text()
            bed.known_hosts.write_text(f"@cert-authority [127.0.0.1]:* {ca}{original}")
            transport = _paramiko(bed.target())
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()

            bed.known_hosts.write_text(f"@cert-authority [127.0.0.1]:* {ca}")
            transport = _paramiko(bed.target())
            with pytest.raises(HostKeyError, match="known_hosts does not list it") as info:
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()
            assert "does not check @cert-authority" in info.value.message

    run(main())


def test_sk_keys_are_usage_errors(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            sk_key = tmp_path / "id_sk"
            sk_key.write_text("unused\n")
            (tmp_path / "id_sk.pub").write_text("sk-ssh-ed25519@openssh.com AAAA x\n")
            transport = _paramiko(bed.target(identity=(sk_key,)))
            with pytest.raises(UsageError, match="sk-"):
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()

    run(main())


def test_batch_names_the_method_the_server_wants(keys: tuple[Any, Path], tmp_path: Path) -> None:
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            text = bed.config.read_text().replace(f"IdentityFile {keys[1]}", "IdentityFile /none")
            bed.config.write_text(text)
            transport = _paramiko(bed.target())
            with pytest.raises(SSHError, match="authentication"):
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            await transport.close()

    run(main())


def test_dead_link_is_noticed_by_keepalive(keys: tuple[Any, Path], tmp_path: Path) -> None:
    """A server that stops answering (but keeps the socket) ends the process with status None."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            before = snapshot()
            transport = ParamikoTransport(
                bed.target(), connect_timeout=DEADLINE, batch=True, keepalive_interval=0.2
            )
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            proc = await transport.start("hold")
            assert b"ready" in await asyncio.wait_for(proc.read(), DEADLINE)
            for conn in list(bed.state.connections):
                conn._transport.pause_reading()  # the server goes silent, the TCP link stays
            assert await asyncio.wait_for(proc.wait(), DEADLINE) is None
            await proc.close()
            await transport.close()
            for conn in list(bed.state.connections):
                conn._transport.resume_reading()
            await until(
                lambda: snapshot()[1] == before[1], f"threads to end: {threading.enumerate()}"
            )

    run(main())


def test_a_link_that_broke_before_teardown_still_closes_everything(
    keys: tuple[Any, Path], tmp_path: Path
) -> None:
    """The link under a jumped connection dies while the remote login runs (the server goes
    silent, the first hop's socket takes no more writes): closing the session and the
    connection raises nothing, and the hop behind the target is closed too.

    paramiko reports a write to a dead socket as a bare ``EOFError``; escaping a close, it
    stood in for a Ctrl-C's "interrupted" as an internal error and left the hop open.
    """

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            before = snapshot()
            transport = await _jumped(bed)
            proc = await transport.start("hold")
            assert b"ready" in await asyncio.wait_for(proc.read(), DEADLINE)
            servers = list(bed.state.connections)
            for conn in servers:
                conn._transport.pause_reading()  # silent: the client sees no EOF either
            transport._transports[0].sock.shutdown(socket.SHUT_WR)  # writes now fail
            try:
                await asyncio.wait_for(proc.close(), DEADLINE)
                await asyncio.wait_for(transport.close(), DEADLINE)
            finally:
                for conn in servers:
                    conn._transport.resume_reading()
            await until(lambda: snapshot() == before, f"sockets and threads to end: {snapshot()}")

    run(main())


def test_a_channel_through_a_hop_never_closes_under_a_write_still_on_its_way(
    keys: tuple[Any, Path], tmp_path: Path
) -> None:
    """Closing a jumped connection while one of its threads writes: the channel through the
    hop closes only after that write reached the hop, and a write after it fails cleanly.

    paramiko sends outside the channel's lock; a write that lost the race went to the hop
    after the channel's close, and OpenSSH then drops the whole hop connection ("data packet
    referred to nonexistent channel"), taking a fleet's other hosts behind it along. The
    hop's key exchange is held (as a rekey does) so that the write stays on its way.
    """

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            before = snapshot()
            transport = await _jumped(bed)
            hop, target = transport._transports
            through = target.sock.chan  # the target's channel on the hop
            window = through.out_window_size
            hop.clear_to_send.clear()  # the hop's sends wait, as during a key exchange
            writer = threading.Thread(
                target=target.global_request, args=("keepalive@openssh.com", None, False)
            )
            writer.start()
            await until(
                lambda: through.out_window_size < window, "the write to be on its way to the hop"
            )
            closer = threading.Thread(target=target.close)
            closer.start()
            writer.join(0.5)  # the closer has had its chance to close the channel early
            try:
                assert writer.is_alive(), "the write was expected to wait for the hop"
                assert not through.closed, "the channel closed under a write on its way"
            finally:
                hop.clear_to_send.set()
            writer.join(DEADLINE)
            closer.join(DEADLINE)
            assert through.closed
            with pytest.raises(OSError):
                target.sock.send(b"late")
            assert hop.is_active()  # the hop outlives the connection through it
            await asyncio.wait_for(transport.close(), DEADLINE)
            await until(lambda: snapshot() == before, f"sockets and threads to end: {snapshot()}")

    run(main())


def test_a_hop_whose_link_broke_is_a_clear_error_for_the_next_target(
    keys: tuple[Any, Path], tmp_path: Path
) -> None:
    """A fleet's shared hop dies before the next host's channel through it is opened: that
    host gets an SSH error naming the hop, not paramiko's bare EOFError."""

    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            transport = ParamikoTransport(
                bed.target(), connect_timeout=DEADLINE, batch=True, keepalive_interval=60
            )
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            servers = list(bed.state.connections)
            for conn in servers:
                conn._transport.pause_reading()
            hop = transport.transport
            hop.sock.shutdown(socket.SHUT_WR)
            eff = Effective({"hostname": "127.0.0.1"}, "fleet7", bed.port, "tester")
            try:
                with pytest.raises(SSHError) as caught:
                    await asyncio.to_thread(
                        host_socket, eff, hop, "testhost", timeout=DEADLINE, take=None
                    )
                assert caught.value.message == (
                    "cannot connect to fleet7: the connection to testhost broke"
                )
                assert caught.value.host == "fleet7"
            finally:
                for conn in servers:
                    conn._transport.resume_reading()
                await asyncio.wait_for(transport.close(), DEADLINE)

    run(main())


def test_handshake_packets_are_not_held_back(keys: tuple[Any, Path], tmp_path: Path) -> None:
    # With Nagle's algorithm on, each small handshake packet written while the previous one
    # is unacknowledged waits for the server's delayed ACK (~40 ms, several times a login).
    async def main() -> None:
        async with ssh_server(keys, tmp_path) as bed:
            transport = ParamikoTransport(bed.target(), connect_timeout=DEADLINE, batch=True)
            await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
            try:
                sock = transport.transport.sock
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            finally:
                await transport.close()

    run(main())
