"""After a successful login, on the same connection: ``--replace`` old credentials, ``--verify``.

``hermes auth add`` appends a pool entry on every run, so a daily re-auth piles them up;
``--replace`` keeps only the newest. ``--verify`` asks the remote whether the credential is
really there. Both run short remote commands through ``transport.exec`` before teardown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tunnelauth.errors import LoginFailedError
from tunnelauth.providers import PROVIDERS
from tunnelauth.remote import settings_command
from tunnelauth.report import Reporter
from tunnelauth.settings import Settings
from tunnelauth.transports.base import Transport

EXEC_DEADLINE = 30.0  # one short hermes command (auth status/list/remove)
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


async def _hermes(settings: Settings, transport: Transport, args: Sequence[str]) -> tuple[int, str]:
    """Run ``hermes [-p P] ARGS`` on the remote; (exit status, stdout+stderr text)."""
    command = settings_command(settings, [*_profile_args(settings), *args])
    result = await transport.exec(command, timeout=EXEC_DEADLINE)
    text = (result.stdout + result.stderr).decode("utf-8", "replace")
    return (result.exit_status if result.exit_status is not None else -1), text


async def replace_older(settings: Settings, transport: Transport, reporter: Reporter) -> None:
    """Remove the provider's older pool entries, keeping the newest (warns, never fails)."""
    pool = pool_name(settings)
    if pool is None:
        what = f"MCP server {settings.server}" if settings.provider == "mcp" else settings.provider
        reporter.replaced(True, 0, 1, f"{what} keeps a single credential: nothing to replace")
        return
    code, listing = await _hermes(settings, transport, ["auth", "list", pool])
    if code != 0:
        reporter.replaced(False, 0, 0, f"`hermes auth list {pool}` failed (exit {code})")
        return
    remove, keep = removal_plan(entry_numbers(listing))
    if keep is None:
        reporter.replaced(False, 0, 0, f"`hermes auth list {pool}` listed no entries")
        return
    removed = 0
    for number in remove:
        code, text = await _hermes(settings, transport, ["auth", "remove", pool, str(number)])
        if code != 0:
            last = text.strip().splitlines()[-1:] or [""]
            reporter.replaced(
                False, removed, 1 + len(remove) - removed, f"removing {pool} #{number}: {last[0]}"
            )
            return
        removed += 1
    reporter.replaced(True, removed, 1, f"{pool}: removed {removed} older, kept #{keep}")


async def verify(settings: Settings, transport: Transport, reporter: Reporter) -> None:
    """Check on the remote that the credential is there; raise LoginFailedError if it is not."""
    if settings.provider == "mcp":
        assert settings.server is not None
        profile = settings.args[1] if settings.args[:1] == ("-p",) else ""
        command = settings_command(
            settings, ["-c", _MCP_TOKEN_CHECK, "tunnelauth", settings.server, profile], program="sh"
        )
        result = await transport.exec(command, timeout=EXEC_DEADLINE)
        text = result.stdout.decode("utf-8", "replace").strip()
        ok = result.exit_status == 0 and text.startswith("present ")
        detail = f"token file {text.partition(' ')[2] or '?'} {'present' if ok else 'missing'}"
    else:
        assert settings.provider is not None
        args = PROVIDERS[settings.provider].verify
        code, text = await _hermes(settings, transport, args)
        ok = code == 0 and status_says_logged_in(text)
        said = text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
        detail = f"`hermes {' '.join(args)}`: {said}"
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
