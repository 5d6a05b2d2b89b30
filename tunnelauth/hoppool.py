"""The jump hosts a fleet shares: one authenticated connection per jump chain, for every host.

Ten hosts behind one bastion would otherwise authenticate to the bastion ten times (ten
one-time codes). A fleet command owns one ``HopPool`` for its whole run and hands it to every
host's transport; a transport whose target is reached through jump hosts asks the pool for
that chain, and the first to ask opens it (an OpenSSH ControlMaster to the last hop, or the
library's connection to it) while the others wait for the same one. Each host still opens
and authenticates its own connection to itself, through the shared hop, with the same
host-key checks as ever. Only the pool closes what it opened: after every host finished, in
reverse order, on success, failure and Ctrl-C alike.

Two targets share a chain when their keys are equal: the backend, the user, host and port of
every hop as written, and the configuration the hops are read from. A chain that failed to
open is not opened again for the next host (that would ask for a second code): each host
gets the same error, naming itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

from tunnelauth.errors import SSHError, hop_hint, hop_label
from tunnelauth.transports.hops import split_hop

Hop = tuple[str | None, str, int | None]  # user, host, port of one jump host, as written


class HopKey(NamedTuple):
    """What makes two targets' jump chains the same connection."""

    backend: str
    hops: tuple[Hop, ...]  # first hop first
    config: tuple[str, ...]  # where the hops' settings come from (ssh config files, flags)

    @property
    def label(self) -> str:
        """The chain as ProxyJump writes it."""
        return ",".join(_spec(hop) for hop in self.hops)


def hop_key(backend: str, hops: Sequence[str], config: Sequence[str]) -> HopKey:
    """The key of a jump chain (``hops`` as ProxyJump or ``-J`` write them)."""
    return HopKey(backend, tuple(split_hop(spec) for spec in hops), tuple(config))


def _spec(hop: Hop) -> str:
    user, host, port = hop
    name = f"[{host}]" if ":" in host and port is not None else host
    return (f"{user}@" if user else "") + name + (f":{port}" if port is not None else "")


class SharedHop(Protocol):
    """An open jump chain: only the pool closes it."""

    async def close(self) -> None:
        """Close the chain's connections, last hop first."""
        ...


H = TypeVar("H", bound=SharedHop)


class _Failed(NamedTuple):
    error: BaseException
    target: str  # the host whose connection asked first (its name is in the message)


class HopPool:
    """The open jump chains of one fleet run, keyed by ``HopKey``; closed once, in reverse."""

    def __init__(self) -> None:
        self._opening: dict[HopKey, asyncio.Task[Any]] = {}
        self._open: dict[HopKey, Any] = {}
        self._failed: dict[HopKey, _Failed] = {}
        self._order: list[Any] = []  # opened chains, oldest first
        self._closed = False

    def __len__(self) -> int:
        """How many chains are open."""
        return len(self._open)

    def keys(self) -> list[HopKey]:
        """The keys of the open chains, oldest first."""
        return list(self._open)

    async def get(
        self,
        key: HopKey,
        opener: Callable[[], Awaitable[H]],
        *,
        target: str,
        usable: Callable[[H], Awaitable[bool]] | None = None,
    ) -> H:
        """The open chain for ``key``, opened by ``opener`` if no host opened it yet.

        ``target`` names the asking host in a failure's message. ``usable``: whether an open
        chain still works (else it is closed and opened again).
        """
        if self._closed:
            raise RuntimeError("the hop pool is closed")
        failed = self._failed.get(key)
        if failed is not None:
            raise for_target(failed.error, failed.target, target)
        hop = self._open.get(key)
        if hop is not None:
            if usable is None or await usable(hop):
                return hop  # type: ignore[no-any-return]
            self._open.pop(key, None)
            self._order.remove(hop)
            await _close_quietly(hop)
        task = self._opening.get(key)
        if task is None:
            task = asyncio.ensure_future(opener())
            self._opening[key] = task
            task.add_done_callback(lambda done: self._settle(key, target, done))
        # Shielded: a host cancelled while waiting leaves the opening to the others.
        try:
            return await asyncio.shield(task)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if task.cancelled() or not task.done():
                raise
            failed = self._failed.get(key)
            if failed is None:
                raise
            raise for_target(failed.error, failed.target, target) from None
        except Exception as exc:
            failed = self._failed.get(key)
            if failed is None:
                raise
            raise for_target(failed.error, failed.target, target) from exc

    def _settle(self, key: HopKey, target: str, task: asyncio.Task[Any]) -> None:
        """An opening ended: keep the chain, or its error (a cancelled one is forgotten)."""
        self._opening.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._failed[key] = _Failed(error, target)
            return
        hop = task.result()
        self._open[key] = hop
        self._order.append(hop)

    async def close(self) -> None:
        """Cancel openings still under way, then close every chain, the newest first."""
        self._closed = True
        pending = list(self._opening.values())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        while self._order:
            hop = self._order.pop()
            await _close_quietly(hop)
        self._open.clear()

    async def __aenter__(self) -> HopPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _close_quietly(hop: SharedHop) -> None:
    """Close one chain; a failure to close one never keeps the others open."""
    with contextlib.suppress(Exception):
        await hop.close()


def for_target(error: BaseException, opened_for: str, target: str) -> BaseException:
    """A copy of a chain's failure for another host: it names that host, not the first one."""
    if not isinstance(error, SSHError):
        return copy.copy(error)
    found = copy.copy(error)
    hop = getattr(error, "hop", None)
    if hop and opened_for != target:
        found.message = error.message.replace(hop_label(hop, opened_for), hop_label(hop, target))
        found.args = (found.message,)
        if error.hint == hop_hint(hop, opened_for):
            found.hint = hop_hint(hop, target)
    return found
