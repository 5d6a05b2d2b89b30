"""Checks of what the user typed, made before any connection: each mistake is one clear line.

Pure apart from looking up programs and files: ``build_settings`` calls these on the values it
resolved (flag, environment or config file alike), so a bad value stops the run before the
first packet, the first prompt or the remote login.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
from collections.abc import Sequence, Set
from pathlib import Path

from tunnelauth.errors import UsageError

BROWSER_EXAMPLE = "Example: --browser-cmd 'firefox {url}'"


def positive_seconds(value: object, what: str, origin: str) -> float:
    """A deadline in seconds: a finite number above zero."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number of seconds, not {value!r} ({origin})") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(
            f"{what} must be more than 0 seconds, not {seconds:g} ({origin})",
            hint=f"for example {what} 120",
        )
    return seconds


def tcp_port(value: object, origin: str) -> int:
    """An SSH port: a whole number from 1 to 65535."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise UsageError(f"the SSH port must be a whole number, not {value!r} ({origin})")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"the SSH port must be from 1 to 65535, not {value!r} ({origin})")
    return port


def browser_command(template: str, origin: str, path: str | None) -> str:
    """A ``--browser-cmd`` that parses, starts with a program, and names one that exists (on
    ``path``, the PATH it will run with)."""
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise UsageError(
            f"cannot parse --browser-cmd {template!r}: {exc} ({origin})", hint=BROWSER_EXAMPLE
        ) from None
    if not tokens:
        raise UsageError(f"--browser-cmd is empty ({origin})", hint=BROWSER_EXAMPLE)
    program = tokens[0]
    if "{url}" in program:
        raise UsageError(
            f"--browser-cmd must start with a program, not {program!r} ({origin})",
            hint=BROWSER_EXAMPLE,
        )
    if "/" in program:
        found = os.path.isfile(program) and os.access(program, os.X_OK)
    else:
        found = shutil.which(program, path=path) is not None
    if not found:
        raise UsageError(
            f"--browser-cmd names {program!r}, which is not an executable program here ({origin})",
            hint=BROWSER_EXAMPLE,
        )
    return template


def config_file(path: Path, origin: str) -> None:
    """A config file the user named must exist (the default one may be absent)."""
    if not path.exists():
        raise UsageError(
            f"config file {path} not found ({origin})",
            hint="create it, or leave --config / TUNNELAUTH_CONFIG unset to use the default",
        )


def identity_notices(paths: Sequence[Path]) -> tuple[str, ...]:
    """Warnings for identity files that cannot be read (ssh warns, then goes on without them)."""
    notices = []
    for path in paths:
        if not os.path.isfile(path):
            notices.append(f"identity file {path} not found; going on without it (as ssh does)")
        elif not os.access(path, os.R_OK):
            notices.append(f"identity file {path} cannot be read; going on without it")
    return tuple(notices)


def run_positionals(tail: Sequence[str], value_flags: Set[str]) -> list[str]:
    """The positional words of ``run``'s arguments (flag values skipped)."""
    words: list[str] = []
    i = 0
    while i < len(tail):
        token = tail[i]
        i += 1
        if token in value_flags:
            i += 1
        elif not token.startswith("-") or token == "-":
            words.append(token)
    return words


def run_separator(tail: Sequence[str], value_flags: Set[str]) -> None:
    """``run HOST echo hi``: the command must come after ``--``; say so."""
    words = run_positionals(tail, value_flags)
    if len(words) > 1:
        host, command = words[0], shlex.join(words[1:])
        raise UsageError(
            f"put the command after --: tunnelauth run {shlex.quote(host)} -- {command}",
        )
