"""The questions a library transport (asyncssh, paramiko) asks the user, asked through the flow.

The flow gives every transport's ``connect`` the asker it gives OpenSSH's askpass: it pauses the
live display, reads the answer with echo off for a secret, and has a deadline. Passwords,
keyboard-interactive questions, key passphrases and host-key confirmations all go through it,
from the event loop or from a worker thread (paramiko authenticates in one; asyncssh loads keys
in one). A transport used on its own, without a flow, asks the terminal directly: a secret
through ``getpass``, an answer that may be shown read from stdin as the command found it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import os
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tunnelauth import hostkeys
from tunnelauth.askpass import Asker
from tunnelauth.environment import Environment
from tunnelauth.sanitize import untrusted

SECRET = ""  # the asker's hints, as OpenSSH's SSH_ASKPASS_PROMPT: a secret (no echo),
CONFIRM = "confirm"  # an answer that may be shown,
NOTICE = "none"  # or a notice that needs no answer
T = TypeVar("T")
RETRY = hostkeys.RETRY_QUESTION


class Prompter:
    """Asks through the flow's asker once bound, else on the terminal."""

    def __init__(self) -> None:
        self._ask: Asker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._waiting = 0
        self.asked: list[str] = []  # the questions asked, for messages
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._closed = False
        self._stdin_fd = 0  # where the terminal's answers are read (bind: the command's stdin)

    def bind(self, ask: Asker | None, env: Environment) -> None:
        """Ask through ``ask`` on the running loop from now on; without one, on the terminal,
        reading answers from ``env``'s stdin."""
        self._stdin_fd = env.stdin_fd
        if ask is not None:
            self._ask = ask
            self._loop = asyncio.get_running_loop()

    @property
    def bound(self) -> bool:
        """Whether the flow's asker answers (so questions may wait for a free event loop)."""
        return self._ask is not None

    @property
    def prompting(self) -> bool:
        """Whether a question is waiting for the user (connect deadlines pause meanwhile)."""
        return self._waiting > 0

    def _count(self, step: int) -> None:
        with self._lock:
            self._waiting += step

    async def ask(self, prompt: str, hint: str = SECRET) -> str | None:
        """The user's answer, or None if there is none (refused, timed out, no terminal)."""
        self.asked.append(prompt)
        self._count(1)
        try:
            if self._ask is not None:
                return await self._ask(prompt, hint)
            if hint == NOTICE:
                return ""
            return await asyncio.to_thread(_terminal, prompt, hint, self._stdin_fd)
        finally:
            self._count(-1)

    def ask_blocking(self, prompt: str, hint: str = SECRET) -> str | None:
        """``ask`` from a worker thread (on the loop's own thread: the terminal, directly)."""
        if self._ask is None or self._loop is None or _on_a_loop():
            self.asked.append(prompt)
            self._count(1)
            try:
                return "" if hint == NOTICE else _terminal(prompt, hint, self._stdin_fd)
            finally:
                self._count(-1)
        return self._wait(self.ask(prompt, hint))

    async def confirm_key(self, question: str, fingerprint: str) -> bool:
        """ssh's yes/no/fingerprint question about an unknown host key (False without an answer)."""
        while True:
            answer = await self.ask(question, CONFIRM)
            if answer is None:
                return False
            verdict = hostkeys.answer_accepts(answer, fingerprint)
            if verdict is not None:
                return verdict
            question = RETRY

    def confirm_key_blocking(self, question: str, fingerprint: str) -> bool:
        """``confirm_key`` from a worker thread (the terminal's own question without a flow)."""
        if self._ask is None or self._loop is None or _on_a_loop():
            return hostkeys.ask_terminal(question, fingerprint)
        return self._wait(self.confirm_key(question, fingerprint))

    def _wait(self, question: Coroutine[Any, Any, T]) -> T:
        """Run ``question`` on the loop and wait for it here (``cancel`` ends the wait)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(question, self._loop)
        with self._lock:
            self._pending.add(future)
            closed = self._closed
        if closed:  # cancel() ran before this wait was registered
            future.cancel()
        try:
            return future.result()
        finally:
            with self._lock:
                self._pending.discard(future)

    def cancel(self) -> None:
        """End every question a worker thread waits for, and any asked later (closing)."""
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        for future in pending:
            future.cancel()


def _on_a_loop() -> bool:
    """Whether this thread runs an event loop (waiting there for it would never end)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _terminal(prompt: str, hint: str, stdin_fd: int) -> str | None:
    """Ask on the terminal (never stdout: it may carry --json); None at end of input."""
    prompt = untrusted(prompt, multiline=True)  # a keyboard-interactive prompt is the server's
    try:
        if hint == SECRET:
            return getpass.getpass(prompt)
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return _read_line(stdin_fd)
    except (EOFError, OSError):
        return None


def _read_line(fd: int) -> str | None:
    """One line from ``fd`` without its newline (nothing after it is read); None at its end."""
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte:
            return line.decode("utf-8", "replace") if line else None
        if byte == b"\n":
            return line.decode("utf-8", "replace")
        line += byte
