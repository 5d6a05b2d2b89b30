"""After a successful login, on the same connection: ``--replace`` old credentials, ``--verify``.

``hermes auth add`` appends a pool entry on every run, so a daily re-auth piles them up;
``--replace`` keeps only the newest. ``--verify`` asks the remote whether the credential is
really there. Both run short remote commands before teardown, inside the overall deadline.

Each command runs on a PTY, like the login: when the deadline passes (or the output grows
past ``OUTPUT_LIMIT``) its session is closed and the remote command is hung up, where a
command without a terminal would keep running on the host. What it prints is the remote's,
so it passes ``sanitize.untrusted`` before it is parsed or shown.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tunnelauth.errors import LoginFailedError
from tunnelauth.providers import PROVIDERS
from tunnelauth.remote import remote_command
from tunnelauth.report import Reporter
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import Settings
from tunnelauth.transports.base import Bounded, Transport

COMMAND_DEADLINE = 30.0  # one short hermes command (auth status/list/remove)
OUTPUT_LIMIT = 64 * 1024  # bytes of one command's output kept (a real listing is a few lines)
SHOWN_LIMIT = 300  # characters of a remote line quoted in a result
_ENTRY = re.compile(r"^\s*#(\d+)\b", re.MULTILINE)
_LOGGED_IN = re.compile(r"\blogged in\b", re.IGNORECASE)
_LOGGED_OUT = re.compile(r"\b(logged out|not logged in)\b", re.IGNORECASE)

# Checks the MCP token file without reading it: $1 server, $2 profile (may be empty).
_MCP_TOKEN_CHECK = (
    'h=${HERMES_HOME:-$HOME/.hermes}; [ -n "$2" ] && h=$h/profiles/$2; '
    'f=$h/mcp-tokens/$1.json; if [ -s "$f" ]; then echo "present $f"; '
    'else echo "missing $f"; exit 1; fi'
)


def pool_name(settings: Settings) -> str | None:
    """The hermes credential pool a login adds to (``auth add X`` → ``X``), else ``None``."""
    args = _without_profile(settings.args)
    if len(args) >= 3 and args[0] == "auth" and args[1] == "add":
        return args[2]
    return None


def _without_profile(args: Sequence[str]) -> tuple[str, ...]:
    return tuple(args[2:]) if args[:1] == ("-p",) else tuple(args)


def _profile_args(settings: Settings) -> list[str]:
    return list(settings.args[:2]) if settings.args[:1] == ("-p",) else []


def entry_numbers(listing: str) -> list[int]:
    """The ``#N`` entry numbers in ``hermes auth list PROVIDER`` output."""
    return [int(n) for n in _ENTRY.findall(listing)]


def removal_plan(numbers: Sequence[int]) -> tuple[list[int], int | None]:
    """(numbers to remove, highest first, so lower ones keep their place; the one kept).

    hermes appends each new credential, so the highest number is the one just added.
    """
    if not numbers:
        return [], None
    keep = max(numbers)
    return sorted({n for n in numbers if n != keep}, reverse=True), keep


def status_says_logged_in(output: str) -> bool:
    """Whether ``hermes auth status P`` output says logged in (and not logged out)."""
    return bool(_LOGGED_IN.search(output)) and not _LOGGED_OUT.search(output)


@dataclass(frozen=True)
class Answer:
    """What one remote command said: exit status (-1 unknown), plain text, what went wrong."""

    code: int
    text: str
    problem: str = ""  # "" or why the answer is incomplete (cut, no answer in time)

    def last_line(self) -> str:
        """The last non-empty line, shortened for a message ("" if there is none)."""
        lines = [line for line in self.text.splitlines() if line.strip()]
        return untrusted(lines[-1], limit=SHOWN_LIMIT) if lines else ""


async def run_remote(
    settings: Settings, transport: Transport, args: Sequence[str], *, program: str | None = None
) -> Answer:
    """Run ``PROGRAM ARGS`` (default: hermes) on a PTY as the login's user; hung up at the end.

    At most ``OUTPUT_LIMIT`` bytes are read, for at most ``COMMAND_DEADLINE`` seconds: past
    either the command is hung up, and the answer says why it is incomplete.
    """
    # sudo -n for --as: a fresh PTY is a fresh sudo ticket, and no one answers a prompt here.
    command = remote_command(
        program or settings.program,
        args,
        hermes_home=settings.hermes_home,
        run_as=settings.run_as,
        need_tty=True,
    )
    kept = Bounded(OUTPUT_LIMIT)

    async def collect() -> int | None:
        while not kept.cut and (chunk := await process.read()):
            kept.add(chunk)
        return None if kept.cut else await process.wait()

    process = await transport.start(command)
    problem = ""
    try:
        status = await asyncio.wait_for(collect(), COMMAND_DEADLINE)
    except asyncio.TimeoutError:
        status, problem = None, f"no answer within {COMMAND_DEADLINE:g} s"
    finally:
        await process.close()  # the remote gets Ctrl-C, then SIGHUP, if it still runs
    if kept.cut:
        problem = f"output cut after {OUTPUT_LIMIT // 1024} KiB"
    text = untrusted(kept.value(), limit=OUTPUT_LIMIT, multiline=True)
    return Answer(-1 if status is None else status, text, problem)


async def _hermes(settings: Settings, transport: Transport, args: Sequence[str]) -> Answer:
    """Run ``hermes [-p P] ARGS`` on the remote."""
    return await run_remote(settings, transport, [*_profile_args(settings), *args])


async def replace_older(settings: Settings, transport: Transport, reporter: Reporter) -> None:
    """Remove the provider's older pool entries, keeping the newest (warns, never fails)."""
    pool = pool_name(settings)
    if pool is None:
        what = f"MCP server {settings.server}" if settings.provider == "mcp" else settings.provider
        reporter.replaced(True, 0, 1, f"{what} keeps a single credential: nothing to replace")
        return
    listing = await _hermes(settings, transport, ["auth", "list", pool])
    if listing.problem:
        # A partial listing may miss the newest entry: removing from it could drop the new one.
        reporter.replaced(
            False, 0, 0, f"`hermes auth list {pool}`: {listing.problem}; nothing removed"
        )
        return
    if listing.code != 0:
        said = f": {listing.last_line()}" if listing.last_line() else ""
        reporter.replaced(
            False, 0, 0, f"`hermes auth list {pool}` failed (exit {listing.code}){said}"
        )
        return
    remove, keep = removal_plan(entry_numbers(listing.text))
    if keep is None:
        reporter.replaced(False, 0, 0, f"`hermes auth list {pool}` listed no entries")
        return
    removed = 0
    for number in remove:
        answer = await _hermes(settings, transport, ["auth", "remove", pool, str(number)])
        if answer.code != 0:
            said = answer.last_line() or f"exit {answer.code}"
            reporter.replaced(
                False, removed, 1 + len(remove) - removed, f"removing {pool} #{number}: {said}"
            )
            return
        removed += 1
    reporter.replaced(True, removed, 1, f"{pool}: removed {removed} older, kept #{keep}")


async def verify(settings: Settings, transport: Transport, reporter: Reporter) -> None:
    """Check on the remote that the credential is there; raise LoginFailedError if it is not."""
    if settings.provider == "mcp":
        assert settings.server is not None
        profile = settings.args[1] if settings.args[:1] == ("-p",) else ""
        answer = await run_remote(
            settings,
            transport,
            ["-c", _MCP_TOKEN_CHECK, "tunnelauth", settings.server, profile],
            program="sh",
        )
        text = answer.last_line()
        ok = answer.code == 0 and text.startswith("present ")
        detail = f"token file {text.partition(' ')[2] or '?'} {'present' if ok else 'missing'}"
    else:
        assert settings.provider is not None
        args = PROVIDERS[settings.provider].verify
        answer = await _hermes(settings, transport, args)
        ok = answer.code == 0 and status_says_logged_in(answer.text)
        said = answer.last_line() or f"exit {answer.code}"
        note = f" ({answer.problem})" if answer.problem else ""
        detail = f"`hermes {' '.join(args)}`: {said}{note}"
    reporter.verified(ok, detail)
    if not ok:
        raise LoginFailedError(
            f"the login reported success but the credential is not there ({detail})",
            hint="run the login again; if it persists, check HERMES_HOME/--profile on the remote",
        )


async def after_login(settings: Settings, transport: Transport, reporter: Reporter) -> None:
    """The post-success hook: replace first, so the verification sees the final state."""
    if settings.replace:
        await replace_older(settings, transport, reporter)
    if settings.verify:
        await verify(settings, transport, reporter)
