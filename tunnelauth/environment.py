"""The process's surroundings, read once at the edge and passed down.

Whether stdin is a terminal and the environment variables decide defaults (``--batch`` when
nobody can answer, ``TUNNELAUTH_*`` settings). The CLI reads them once into an
``Environment``; everything below takes that object, so a test states them instead of
patching the process. (A NamedTuple, not a dataclass: this is read before the early SSH
master starts, when every import counts.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple


class Environment(NamedTuple):
    """What the process was started with."""

    variables: Mapping[str, str] = MappingProxyType({})
    stdin_tty: bool = False  # a person may answer prompts on stdin
    stdin_fd: int = 0

    @classmethod
    def current(cls) -> Environment:
        """This process's environment variables and standard input, as they are now."""
        stdin = sys.stdin
        tty = stdin is not None and stdin.isatty()
        fd = 0
        if tty:
            try:
                fd = stdin.fileno()
            except (OSError, ValueError):  # a stand-in stdin without a descriptor
                fd = 0
        return cls(variables=MappingProxyType(dict(os.environ)), stdin_tty=tty, stdin_fd=fd)
