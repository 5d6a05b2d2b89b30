"""Look up asyncssh's optional native libraries on a thread, ahead of its import.

Importing asyncssh asks ``ctypes.util.find_library`` for liboqs (post-quantum key exchange)
and libnettle (UMAC). Where a library is missing, which is the usual case for liboqs, each
name costs a run of ldconfig, gcc and ld: some 35 ms on the way to the first packet. The same
lookups, in the same order, run on a thread while the rest of tunnelauth imports (started by
the head start, which holds them), and ``answered`` hands their results to asyncssh's import.
A name that was not looked up ahead, or a lookup that failed, goes to the real function as
before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

# The names asyncssh tries, group by group, stopping at the first one found (crypto/pq.py and
# crypto/umac.py).
GROUPS: tuple[tuple[str, ...], ...] = (("oqs", "liboqs"), ("nettle", "libnettle", "libnettle-6"))
WAIT = 10.0  # seconds the import waits for the thread: it would do the same work otherwise

Finder = Callable[[str], str | None]


class Lookups:
    """The thread's answers, complete once ``done`` is set."""

    def __init__(self) -> None:
        self.found: dict[str, str | None] = {}
        self.done = threading.Event()

    def run(self, find: Finder) -> None:
        """Look the names up as asyncssh does: within a group, until one is found."""
        try:
            for group in GROUPS:
                for name in group:
                    self.found[name] = find(name)
                    if self.found[name]:
                        break
        except Exception:  # what was not answered is looked up the usual way
            pass
        finally:
            self.done.set()


def prewarm() -> Lookups:
    """Start the lookups on a thread; the head start holds what it returns."""
    import ctypes.util  # on this thread: the worker then imports nothing

    lookups = Lookups()
    threading.Thread(
        target=lookups.run,
        args=(ctypes.util.find_library,),
        name="tunnelauth-find-library",
        daemon=True,
    ).start()
    return lookups


@contextlib.contextmanager
def answered(lookups: Lookups | None, wait: float = WAIT) -> Iterator[None]:
    """While inside, ``ctypes.util.find_library`` answers the names ``lookups`` looked up."""
    if lookups is None:
        yield
        return
    import ctypes.util

    answers = dict(lookups.found) if lookups.done.wait(wait) else {}
    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return answers[name] if name in answers else real(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = real
