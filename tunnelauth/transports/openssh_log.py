"""The OpenSSH transport's reading of ssh: the master's log at -vv, and failures worded as errors.

ssh's stderr names which hop of a jump chain failed and why (tunnelauth.transports.sshargs
parses it); this module turns that into the error the user reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tunnelauth.errors import (
    HostKeyError,
    SSHError,
    hop_hint,
    hop_label,
)
from tunnelauth.sanitize import strip
from tunnelauth.transports import sshargs
from tunnelauth.transports.hops import unreachable_from

if TYPE_CHECKING:
    pass

LOG_POLL = 0.1  # seconds between looks at the master's log at -vv
STDERR_LIMIT = 16 * 1024  # bytes of an ssh client's stderr (or of a log's end) kept for messages


def log_tail(path: str) -> str:
    """The end of one of ssh's log files (``STDERR_LIMIT`` bytes) as text; "" if unreadable."""
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        return fh.read()[-STDERR_LIMIT:].decode("utf-8", "replace")
    return ""


class LogFollower:
    """Hands the lines ssh writes to its log files to a sink as they are written (``-vv``)."""

    def __init__(self, paths: Sequence[str], sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._read: dict[str, int] = {path: 0 for path in paths}
        self._partial: dict[str, bytes] = {path: b"" for path in paths}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the files until ``stop``."""
        self._task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        while True:
            self.drain()
            await asyncio.sleep(LOG_POLL)

    def drain(self, *, final: bool = False) -> None:
        """Pass on every complete line written since the last call (``final``: also the rest)."""
        for path, offset in self._read.items():
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
                self._read[path] = offset + len(data)
                data = self._partial[path] + data
                *lines, self._partial[path] = data.split(b"\n")
                if final and self._partial[path]:
                    lines.append(self._partial[path])
                    self._partial[path] = b""
                for line in lines:
                    text = line.decode("utf-8", "replace").rstrip("\r")
                    if text.strip():
                        self._sink(text)

    def stop(self) -> None:
        """Stop following, after passing on what is left."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.drain(final=True)


def connect_error(
    host: str,
    stderr: str,
    *,
    batch: bool = False,
    asked: Sequence[str] = (),
    chain: Sequence[str] = (),
) -> SSHError:
    """Turn ssh's stderr after a failed connect into the matching error.

    Through jump hosts (``chain``, first hop first), the error names the hop whose ssh failed
    and keeps that ssh's own reason; ``error.hop`` is set to it.
    """
    stderr = strip(stderr, keep_newlines=True)  # ssh relays server-chosen text (banners)
    depth, lines = sshargs.proxied_failure(stderr)
    hop = sshargs.failed_hop(chain, depth)
    if hop is None:
        return failure_error(host, host, "\n".join(lines), batch=batch, asked=asked)
    if sshargs.channel_failed(lines):
        # The hop was reached, but it could not open the channel onward.
        onward = sshargs.next_after(chain, hop, host)
        why = sshargs.reason_line(lines).removeprefix("channel 0: ").removeprefix("open failed: ")
        who = host if onward == host else hop_label(onward, host)
        error = SSHError(
            f"cannot connect to {who}: {unreachable_from(hop, why)}",
            host=onward,
            stderr_tail="\n".join(lines[-6:]),
        )
        error.hop = None if onward == host else onward
        return error
    error = failure_error(hop_label(hop, host), hop, "\n".join(lines), batch=batch, asked=asked)
    error.hop = hop
    if not isinstance(error, HostKeyError):
        error.hint = hop_hint(hop, host)
    return error


def failure_error(
    who: str, host: str, stderr: str, *, batch: bool = False, asked: Sequence[str] = ()
) -> SSHError:
    """The error for one ssh process's failure; ``who`` names the host in the message."""
    kind, detail = sshargs.classify_connect_failure(stderr)
    wanted = sshargs.auth_methods_offered(stderr) if kind == "auth" else []
    needs_prompt = [m for m in wanted if m in sshargs.PROMPTING_METHODS]
    tail = "\n".join(stderr.strip().splitlines()[-6:])
    if batch and needs_prompt and not any(m in wanted for m in ("publickey", "hostbased")):
        message, hint = sshargs.batch_prompt_refusal(who, needs_prompt)
        return SSHError(message, host=host, stderr_tail=tail, hint=hint)
    if kind == "hostkey":
        return HostKeyError(
            f"host key for {who} could not be verified: {detail}",
            host=host,
            stderr_tail=tail,
            hint="check the key with the host's owner, then add it to known_hosts "
            "(tunnelauth never weakens StrictHostKeyChecking)",
        )
    if kind == "auth" and batch and needs_prompt:
        return SSHError(
            f"SSH authentication to {who} failed: no key was accepted, and the "
            f"{sshargs.method_prompt(needs_prompt)} it also offers needs a terminal",
            host=host,
            stderr_tail=tail,
            hint="use a key the server accepts, or run from a terminal (not --batch or CI)",
        )
    if kind == "auth":
        said = f" (after: {'; '.join(p.strip() for p in asked)})" if asked else ""
        return SSHError(
            f"SSH authentication to {who} failed{said}",
            host=host,
            stderr_tail=tail,
            hint="check `ssh HOST true` works with the same options",
        )
    reason = sshargs.reason_line(sshargs.meaningful_lines(stderr))
    return SSHError(f"cannot connect to {who}: {reason}", host=host, stderr_tail=tail)
