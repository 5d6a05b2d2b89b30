"""The head start: what a login starts before the heavy imports, held until its transport adopts it.

A login spends 100-250 ms importing asyncio, rich, the flow and an SSH library before it could
send its first packet. ``prepare`` starts, right after the command line is read, what needs
none of them, for the backend the run will use:

- OpenSSH, batch runs: ``ssh -G`` and the private ControlMaster, which authenticates meanwhile
  (interactive runs may be asked for a password or a host key: that comes after the imports);
- asyncssh and paramiko: the first hop's TCP connection (``early_dial``);
- asyncssh: the library lookups its import would make (``native_libs``).

The login holds the ``HeadStart`` in a ``with`` block and passes it down to the transport,
which adopts each part once. Leaving the block discards what nobody adopted: a master is
ended, a socket closed.

Light on purpose: only what a part needs is imported, and only when that part starts.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import socket

    from tunnelauth.settings import Settings, SSHTarget
    from tunnelauth.transports.choice import Choice
    from tunnelauth.transports.early_dial import Dial
    from tunnelauth.transports.master import Ahead, Master
    from tunnelauth.transports.native_libs import Lookups


class HeadStart:
    """What one login started ahead; each part is handed over once, the rest discarded."""

    def __init__(
        self,
        choice: Choice | None = None,
        *,
        target: SSHTarget | None = None,
        ahead: Ahead | None = None,
        dial: Dial | None = None,
        lookups: Lookups | None = None,
    ) -> None:
        self.choice = choice  # the backend chosen for it (None: none could be)
        self.target = target  # the target it was started for
        self.lookups = lookups  # asyncssh's library lookups (read, never discarded)
        self._ahead = ahead
        self._dial = dial

    @property
    def master(self) -> Master | None:
        """The OpenSSH master started ahead, until its transport adopts it."""
        return self._ahead.master if self._ahead is not None else None

    def for_target(self, target: SSHTarget) -> bool:
        """Whether this head start was made for ``target`` (another run adopts nothing)."""
        return self.target is not None and self.target == target

    def take_openssh(self, target: SSHTarget) -> Ahead | None:
        """The config and master started for ``target``, handed over once (None: do it)."""
        ahead = self._ahead
        if ahead is None or ahead.target != target:
            return None
        self._ahead = None
        return ahead

    def take_socket(self, host: str, port: int, wait: float) -> socket.socket | None:
        """The first hop's socket if it goes to ``host``:``port``; asked once (None after).

        TimeoutError: the early connection to that address is still pending after ``wait``
        (connecting again would only double the wait).
        """
        dial, self._dial = self._dial, None
        return dial.claim(host, port, wait) if dial is not None else None

    def discard(self) -> None:
        """End what nobody adopted: a master (and its temp dir), a socket. Safe to repeat."""
        dial, self._dial = self._dial, None
        if dial is not None:
            dial.drop()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.master is not None:
            from tunnelauth.transports import master

            master.end(ahead.master, ahead.ssh, ahead.target)

    def __enter__(self) -> HeadStart:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()


class Plan(NamedTuple):
    """Which parts of a head start a run can use."""

    master: bool  # ``ssh -G`` and the OpenSSH master (batch runs only)
    dial: bool  # the first hop's TCP connection
    lookups: bool  # asyncssh's native library lookups


def plan(choice: Choice, settings: Settings) -> Plan:
    """The parts worth starting for the chosen backend (see the module text)."""
    return Plan(
        master=choice.name == "openssh" and settings.batch,
        dial=choice.name in ("asyncssh", "paramiko"),
        lookups=choice.name == "asyncssh",
    )


def prepare(choice: Choice, settings: Settings) -> HeadStart:
    """Start what the chosen backend can use before the heavy imports (``plan``).

    Nothing here fails the run: what does not start is left for the transport to do, and to
    report if it fails there too.
    """
    target, parts = settings.target, plan(choice, settings)
    dial = lookups = ahead = None
    if parts.dial:
        from tunnelauth.transports import early_dial

        dial = early_dial.start(target)
    if parts.lookups:
        from tunnelauth.transports import native_libs

        lookups = native_libs.prewarm()
    if parts.master:
        from tunnelauth.transports import master

        with contextlib.suppress(OSError):
            ahead = master.start(target, verbose=settings.verbosity >= 2)
    return HeadStart(choice, target=target, ahead=ahead, dial=dial, lookups=lookups)
