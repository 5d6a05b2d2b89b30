"""Open a URL safely: a --browser-cmd template, the system browser, or just print it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shlex
import signal
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit

from tunnelauth.errors import TunnelauthError, UsageError
from tunnelauth.loopback import LOOPBACK_HOSTS
from tunnelauth.status import ExitStatus

HowOpened = Literal["command", "system", "printed", "builtin"]

MAX_URL_LENGTH = 8192
# Text-mode browsers the stdlib may pick; started from here they would take over the terminal.
CONSOLE_BROWSERS = frozenset({"lynx", "links", "links2", "elinks", "w3m", "www-browser"})
# Shells whose -c script a --browser-cmd may carry: {url} must never be part of that script.
SHELLS = frozenset({"sh", "ash", "bash", "dash", "ksh", "mksh", "zsh", "fish", "csh", "tcsh"})
_HOSTNAME = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)*"
)
_SYSTEM_WAIT = 3.0  # the stdlib opener normally returns at once; a foreground one keeps running
_TERM_DEADLINE = 3.0

# Runs in a child with its output discarded, so a browser's chatter never reaches our terminal.
_OPENER = """
import os, sys, webbrowser
url, console = sys.argv[1], set(sys.argv[2].split(","))
try:
    controller = webbrowser.get()
except webbrowser.Error:
    sys.exit(3)
name = os.path.basename(str(getattr(controller, "name", "") or "")).lower()
if name in console:
    sys.exit(3)
sys.exit(0 if controller.open(url, new=2) else 1)
"""


class UnsafeUrlError(TunnelauthError):
    """A URL tunnelauth refuses to hand to a browser."""

    status = ExitStatus.LOGIN_FAILED


def is_safe_browser_url(url: str) -> bool:
    """https with a host, or http to a loopback host with a port; no credentials or odd chars."""
    if not url or len(url) > MAX_URL_LENGTH:
        return False
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    if "@" in parts.netloc or "\\" in parts.netloc or not host:
        return False
    scheme = parts.scheme.lower()
    if scheme == "http":
        return host in LOOPBACK_HOSTS and port is not None and port > 0
    if scheme != "https":
        return False
    if parts.netloc.startswith("["):
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(host).version == 6
        return False
    return _HOSTNAME.fullmatch(host) is not None


def build_browser_argv(template: str, url: str) -> list[str]:
    """Split a --browser-cmd like a shell would, put the URL in place of ``{url}`` (or last)."""
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise UsageError(f"cannot parse --browser-cmd: {exc}") from None
    if not tokens:
        raise UsageError("--browser-cmd is empty", hint="Example: --browser-cmd 'firefox {url}'")
    if "{url}" in tokens[0]:
        # The URL must never choose the program that runs.
        raise UsageError("--browser-cmd must start with a program, not {url}")
    script = _shell_script_index(tokens)
    if script is not None and "{url}" in tokens[script]:
        # There the URL, written by the remote, would be shell code: $(…), `…`, ; would run.
        raise UsageError(
            "--browser-cmd puts {url} inside a shell's -c script, where the URL could run commands",
            hint="use the URL from the environment instead: sh -c 'xdg-open \"$TUNNELAUTH_URL\"'",
        )
    # Splitting happened before the URL went in, so the URL stays inside one argument.
    argv = [token.replace("{url}", url) for token in tokens]
    if not any("{url}" in token for token in tokens):
        argv.append(url)
    return argv


def _shell_script_index(tokens: list[str]) -> int | None:
    """Where the script is when ``tokens`` run a shell with ``-c`` (directly or through env)."""
    at = 0
    if os.path.basename(tokens[0]) == "env":
        at = 1
        while at < len(tokens) and (tokens[at].startswith("-") or "=" in tokens[at]):
            at += 1
    if at >= len(tokens) or os.path.basename(tokens[at]) not in SHELLS:
        return None
    flagged = False
    for index in range(at + 1, len(tokens)):
        token = tokens[index]
        if token == "--":
            continue
        if token.startswith("-") and not token.startswith("--"):
            flagged = flagged or "c" in token[1:]
        elif flagged:
            return index  # the first operand after -c is the script
    return None


def _stderr_fd() -> int:
    """Our stderr's descriptor, or DEVNULL when there is none."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return asyncio.subprocess.DEVNULL


def system_browser_possible(env: Mapping[str, str], platform: str, *, wsl: bool) -> bool:
    """Whether a graphical system browser can exist (a Linux/BSD console has none)."""
    if platform in ("darwin", "win32", "cygwin") or wsl:
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def running_in_wsl(env: Mapping[str, str]) -> bool:
    """Whether this is Windows Subsystem for Linux (it opens the Windows browser)."""
    if env.get("WSL_DISTRO_NAME") or env.get("WSL_INTEROP"):
        return True
    try:
        return "microsoft" in Path("/proc/sys/kernel/osrelease").read_text().lower()
    except OSError:
        return False


@dataclass
class _Started:
    """A process this launcher started; ``group`` says whether close() may end its group."""

    process: asyncio.subprocess.Process
    group: bool


class BrowserLauncher:
    """Opens URLs for one run and ends what it started when the run is over."""

    def __init__(
        self,
        *,
        command: str | None = None,
        no_browser: bool = False,
        output: Path | None = None,
        env: Mapping[str, str],
        platform: str = sys.platform,
    ) -> None:
        self._command = command
        self._no_browser = no_browser
        self._output = output
        self._env = dict(env)  # the variables of the run: what is started runs with them
        self._platform = platform
        self._started: list[_Started] = []
        self._closed = False

    async def open(self, url: str) -> HowOpened:
        """Open ``url``; returns how ("printed" means the caller must show the URL)."""
        if not is_safe_browser_url(url):
            raise UnsafeUrlError(
                "refusing to open a URL that is not https (or http to this machine's loopback)",
                hint="Open it yourself only if you trust it.",
            )
        if self._closed:
            raise RuntimeError("BrowserLauncher is closed")
        if self._no_browser:
            return "printed"
        if self._command is not None:
            argv = build_browser_argv(self._command, url)
            await self._spawn(argv, group=True, env={**self._env, "TUNNELAUTH_URL": url})
            return "command"
        if not system_browser_possible(self._env, self._platform, wsl=running_in_wsl(self._env)):
            return "printed"
        return await self._open_system(url)

    def uses_system_browser(self) -> bool:
        """Whether open() will hand URLs to the system browser (not a command, not printing)."""
        if self._no_browser or self._command is not None:
            return False
        return system_browser_possible(self._env, self._platform, wsl=running_in_wsl(self._env))

    def last_command(self) -> asyncio.subprocess.Process | None:
        """The --browser-cmd process open() started last, if any."""
        commands = [item.process for item in self._started if item.group]
        return commands[-1] if commands else None

    async def close(self, grace: float = 5.0) -> None:
        """Give started commands ``grace`` seconds to exit, then end their process groups."""
        self._closed = True
        started, self._started = self._started, []
        await asyncio.gather(*(self._end(item, grace) for item in started))

    async def _open_system(self, url: str) -> HowOpened:
        """The stdlib's choice of browser, from a child whose output goes nowhere."""
        env = dict(self._env)
        # Without TERM the stdlib never even considers text-mode browsers.
        env.pop("TERM", None)
        argv = [sys.executable, "-I", "-c", _OPENER, url, ",".join(sorted(CONSOLE_BROWSERS))]
        # The opener's own group is NOT ended at close(): what it started is the user's browser.
        item = await self._spawn(argv, group=False, env=env)
        try:
            code = await asyncio.wait_for(item.process.wait(), _SYSTEM_WAIT)
        except asyncio.TimeoutError:
            return "system"  # a foreground browser is running; close() reaps the opener
        return "system" if code == 0 else "printed"

    async def _spawn(
        self, argv: list[str], *, group: bool, env: Mapping[str, str] | None = None
    ) -> _Started:
        """Start argv detached from our terminal, output discarded or sent to ``output``."""
        with contextlib.ExitStack() as stack:
            sink: int | IO[bytes] = asyncio.subprocess.DEVNULL
            if self._output is not None:
                sink = stack.enter_context(self._output.open("ab"))
            elif group:
                # A --browser-cmd's messages matter (a chat poster's error, a headless browser's
                # log): they go to our stderr, never to stdout, which may carry --json events.
                sink = _stderr_fd()
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=sink,
                    stderr=sink,
                    env=dict(self._env if env is None else env),
                    # Own session: Ctrl-C at our terminal does not reach it, and its group can be
                    # ended as a whole.
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise UsageError(f"browser command not found: {argv[0]}") from None
            except PermissionError:
                raise UsageError(f"browser command is not executable: {argv[0]}") from None
        item = _Started(process, group)
        self._started.append(item)
        return item

    async def _end(self, item: _Started, grace: float) -> None:
        """Wait for one process; if it outlives ``grace``, SIGTERM then SIGKILL, and reap it."""
        process = item.process
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
        if process.returncode is not None:
            # It exited by itself: what it left running (a browser it handed the URL to) stays.
            return
        self._signal(item, signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), _TERM_DEADLINE)
        # Members of the group may ignore SIGTERM even when the leader did not.
        self._signal(item, signal.SIGKILL)
        await process.wait()

    @staticmethod
    def _signal(item: _Started, sig: signal.Signals) -> None:
        """Signal the process group (or only the process), ignoring ones already gone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if item.group and hasattr(os, "killpg"):
                # The group id is the leader's pid (own session), valid while the group lives.
                os.killpg(item.process.pid, sig)
            elif item.process.returncode is None:
                item.process.send_signal(sig)
