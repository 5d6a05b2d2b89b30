"""``-vv`` for the library backends: asyncssh's or paramiko's own debug log, passed to a sink.

The libraries log what ``ssh -v`` shows (versions, key exchange, host key, authentication
methods), never packet contents at the levels used here: asyncssh's debug level 1 (level 3
would dump packets, passwords included) and paramiko without ``set_hexdump``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


class _ToSink(logging.Handler):
    """Each line of each record goes to the sink as ``name: line``."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a library's malformed log call must not end the login
            self.handleError(record)
            return
        for line in text.splitlines():
            if line.strip():
                self._sink(f"{record.name}: {line}")


class LibraryLog:
    """The library's logger at DEBUG into a sink, until ``stop`` puts it back as it was."""

    def __init__(self, logger: str, sink: Callable[[str], None]) -> None:
        self._logger = logging.getLogger(logger)
        self._handler = _ToSink(sink)
        self._level = self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)

    def stop(self) -> None:
        """Detach from the library's logger."""
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)
