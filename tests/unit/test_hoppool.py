"""The fleet's shared jump chains: which targets share one, opened once, closed in reverse."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from tunnelauth.errors import SSHError, UsageError, at_hop
from tunnelauth.hoppool import HopPool, hop_key
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import sshargs

CONFIG = ("/home/u/.ssh/config",)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["bastion"], ["bastion"]),
        (["alice@bastion:2222"], ["alice@bastion:2222"]),
        (["a", "b"], ["a", "b"]),
        (["[fd00::1]:22"], ["[fd00::1]:22"]),
    ],
)
def test_the_same_chain_is_one_key(first: list[str], second: list[str]) -> None:
    assert hop_key("openssh", first, CONFIG) == hop_key("openssh", second, CONFIG)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["alice@bastion"], ["bob@bastion"]),  # another user
        (["alice@bastion"], ["bastion"]),
        (["bastion:22"], ["bastion:2222"]),  # another port
        (["bastion"], ["bastion2"]),  # another host
        (["a", "b"], ["b"]),  # another chain ending at the same hop
        (["a", "b"], ["b", "a"]),
        (["a", "b"], ["c", "b"]),
    ],
)
def test_another_user_port_host_or_chain_is_another_key(
    first: list[str], second: list[str]
) -> None:
    assert hop_key("openssh", first, CONFIG) != hop_key("openssh", second, CONFIG)


def test_another_config_or_backend_is_another_key() -> None:
    key = hop_key("openssh", ["bastion"], CONFIG)
    assert key != hop_key("openssh", ["bastion"], ("/tmp/other_config",))
    assert key != hop_key("asyncssh", ["bastion"], CONFIG)
    assert key.label == "bastion"
    assert hop_key("paramiko", ["a@b:2", "c"], CONFIG).label == "a@b:2,c"


def test_a_hop_that_is_not_a_host_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        hop_key("openssh", ["bastion:port"], CONFIG)


class Hop:
    """A stand-in for an open chain: records when it is closed."""

    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self._closed = closed

    async def close(self) -> None:
        self._closed.append(self.name)


def test_targets_behind_the_same_chain_share_one_opening() -> None:
    opened: list[str] = []
    closed: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def open_hop() -> Hop:
            opened.append("bastion")
            await gate.wait()  # every target asks while the one opening is under way
            return Hop("bastion", closed)

        key = hop_key("openssh", ["bastion"], CONFIG)
        async with HopPool() as pool:
            waiting = [
                asyncio.ensure_future(pool.get(key, open_hop, target=f"fleet{i}"))
                for i in range(1, 6)
            ]
            await asyncio.sleep(0)
            gate.set()
            hops = await asyncio.gather(*waiting)
            assert len({id(h) for h in hops}) == 1
            assert await pool.get(key, open_hop, target="fleet6") is hops[0]
            assert len(pool) == 1 and closed == []

    asyncio.run(main())
    assert opened == ["bastion"]
    assert closed == ["bastion"]


def test_different_chains_are_opened_apart_and_closed_newest_first() -> None:
    closed: list[str] = []

    async def main() -> None:
        async with HopPool() as pool:
            for spec in (["alice@bastion"], ["bob@bastion"], ["bastion:2222"], ["a", "bastion"]):
                key = hop_key("asyncssh", spec, CONFIG)

                async def open_hop(name: str = key.label) -> Hop:
                    return Hop(name, closed)

                await pool.get(key, open_hop, target="fleet1")
            assert len(pool) == 4

    asyncio.run(main())
    assert closed == ["a,bastion", "bastion:2222", "bob@bastion", "alice@bastion"]


def test_a_chain_that_failed_is_not_opened_again_and_names_each_host() -> None:
    calls: list[str] = []

    async def main() -> None:
        key = hop_key("paramiko", ["bastion-otp"], CONFIG)

        async def open_hop(target: str) -> Hop:
            calls.append(target)
            error = SSHError("SSH authentication to bastion-otp failed", host="bastion-otp")
            raise at_hop(error, "bastion-otp", target)

        async with HopPool() as pool:
            with pytest.raises(SSHError) as first:
                await pool.get(key, lambda: open_hop("fleet1"), target="fleet1")
            with pytest.raises(SSHError) as second:
                await pool.get(key, lambda: open_hop("fleet2"), target="fleet2")
        assert first.value.message == (
            "SSH authentication to jump host bastion-otp (for fleet1) failed"
        )
        assert second.value.message == (
            "SSH authentication to jump host bastion-otp (for fleet2) failed"
        )
        assert second.value.hop == "bastion-otp" and "fleet2" in (second.value.hint or "")
        assert first.value is not second.value

    asyncio.run(main())
    assert calls == ["fleet1"], "a second code would have been asked"


def test_a_chain_that_stopped_working_is_closed_and_opened_again() -> None:
    closed: list[str] = []
    made: list[Hop] = []

    async def main() -> None:
        key = hop_key("openssh", ["bastion"], CONFIG)

        async def open_hop() -> Hop:
            made.append(Hop(f"bastion-{len(made) + 1}", closed))
            return made[-1]

        async def usable(hop: Hop) -> bool:
            return hop is made[-1] and len(made) > 1

        async with HopPool() as pool:
            first = await pool.get(key, open_hop, target="fleet1", usable=usable)
            second = await pool.get(key, open_hop, target="fleet2", usable=usable)
            assert (first.name, second.name) == ("bastion-1", "bastion-2")
            assert closed == ["bastion-1"]
            assert await pool.get(key, open_hop, target="fleet3", usable=usable) is second

    asyncio.run(main())
    assert closed == ["bastion-1", "bastion-2"]


def test_a_host_cancelled_while_waiting_leaves_the_opening_to_the_others() -> None:
    closed: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()
        key = hop_key("openssh", ["bastion"], CONFIG)

        async def open_hop() -> Hop:
            await gate.wait()
            return Hop("bastion", closed)

        async with HopPool() as pool:
            first = asyncio.ensure_future(pool.get(key, open_hop, target="fleet1"))
            second = asyncio.ensure_future(pool.get(key, open_hop, target="fleet2"))
            await asyncio.sleep(0)
            first.cancel()
            gate.set()
            assert (await second).name == "bastion"
            assert first.cancelled()

    asyncio.run(main())
    assert closed == ["bastion"]


def test_closing_ends_an_opening_under_way_and_refuses_new_ones() -> None:
    ended: list[str] = []

    async def main() -> None:
        key = hop_key("openssh", ["bastion"], CONFIG)
        started = asyncio.Event()

        async def open_hop() -> Hop:
            started.set()
            try:
                await asyncio.Event().wait()  # a prompt nobody answers
            finally:
                ended.append("opening")
            raise AssertionError("unreachable")

        pool = HopPool()
        waiter = asyncio.ensure_future(pool.get(key, open_hop, target="fleet1"))
        await started.wait()
        waiter.cancel()  # Ctrl-C reached the host first
        await pool.close()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(RuntimeError):
            await pool.get(key, open_hop, target="fleet2")

    asyncio.run(main())
    assert ended == ["opening"]


def test_the_proxy_command_goes_through_the_hop_master_only() -> None:
    hop = SSHTarget(host="bastion", ssh_config=None, login="alice", port=2222)
    command = sshargs.shared_hop_proxy("/usr/bin/ssh", hop, "/tmp/tunnelauth-1 x%/m")
    # ssh doubles nothing back but %%: undo that, then the shell's quoting.
    words = shlex.split(command.replace("%%", "\x00").replace("\x00", "%"))
    assert words[:3] == ["/usr/bin/ssh", "-S", "/tmp/tunnelauth-1 x%/m"]
    assert "ProxyCommand=false" in words and "ProxyJump=none" in words
    assert "BatchMode=yes" in words and "ControlMaster=no" in words
    assert words[-4:] == ["-W", "[%h]:%p", "--", "bastion"]
    assert "x%%/m" in command and "'[%h]:%p'" in command


def test_the_proxy_command_keeps_the_named_config() -> None:
    hop = SSHTarget(host="bastion", ssh_config=Path("/cfg/it's"))
    words = shlex.split(sshargs.shared_hop_proxy("ssh", hop, "/s"))
    assert words[1:3] == ["-F", "/cfg/it's"]


def test_a_target_the_hop_could_not_reach_is_worded_as_with_proxyjump() -> None:
    stderr = (
        "Stdio forwarding request failed: Session open refused by peer\n"
        "Connection closed by UNKNOWN port 65535\n"
    )
    rewritten = sshargs.shared_hop_refusal(stderr, "connect failed: Connection refused")
    assert rewritten.splitlines()[:2] == [
        "channel 0: open failed: connect failed: Connection refused",
        "stdio forwarding failed",
    ]
    assert sshargs.shared_hop_refusal(stderr, None) == stderr
    assert sshargs.channel_failed(stderr.splitlines())
