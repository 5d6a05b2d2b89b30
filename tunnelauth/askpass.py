"""OpenSSH's askpass, routed to the running tunnelauth so prompts never fight the live display.

ssh (>= 8.4, with ``SSH_ASKPASS_REQUIRE=force``) runs ``SSH_ASKPASS PROMPT`` for every
password, keyboard-interactive question, key passphrase, host-key confirmation and FIDO
"confirm user presence" notice. tunnelauth points ``SSH_ASKPASS`` at a two-line script in the
run's 0700 temp dir that runs ``main`` below: it hands the prompt over a unix socket (also in
that dir) to ``AskpassServer``, which pauses the display, asks on the terminal, and sends
the answer back for ssh to read from the script's stdout.

The script runs this file by its absolute path with ``python -I -S``: ssh starts it in the
user's current directory with the user's environment, and neither may choose the code that
receives the password (no current directory or script directory on ``sys.path``, no
``PYTHON*`` variables, no site-packages). So this module imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping

SOCKET_ENV = "TUNNELAUTH_ASKPASS_SOCKET"
MESSAGE_LIMIT = 64 * 1024  # a prompt or an answer is never longer than this

# (prompt, hint) -> the answer, or None to refuse. hint is ssh's SSH_ASKPASS_PROMPT: "" for a
# secret, "confirm" for a yes/no question, "none" for a notice that needs no answer.
Asker = Callable[[str, str], Awaitable["str | None"]]


def main(argv: list[str] | None = None) -> int:
    """The askpass program: forward the prompt, print the answer; exit 1 if there is none."""
    args = sys.argv[1:] if argv is None else argv
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return 1
    request = {"prompt": args[0] if args else "", "hint": os.environ.get("SSH_ASKPASS_PROMPT", "")}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = sock.makefile("rb").readline(MESSAGE_LIMIT)
    except OSError:
        return 1
    try:
        answer = json.loads(reply).get("answer")
    except (ValueError, AttributeError):
        return 1
    if not isinstance(answer, str):
        return 1
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
    return 0


def program_argv() -> list[str]:
    """How to run the askpass program: this file, isolated from the caller's cwd and PYTHON*."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__)]


class AskpassServer:
    """The tunnelauth end: answers askpass requests with ``ask`` one at a time."""

    def __init__(self, directory: str, ask: Asker) -> None:
        self.directory = directory
        self.socket_path = os.path.join(directory, "askpass.sock")
        self.script_path = os.path.join(directory, "askpass")
        self.ask = ask
        self.waited = 0.0  # seconds spent waiting for the user (not counted as connect time)
        self.asked: list[str] = []  # the prompts shown, for messages
        self._server: asyncio.AbstractServer | None = None
        self._lock = asyncio.Lock()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, variables: Mapping[str, str]) -> dict[str, str]:
        """Listen, write the script, and return the environment ssh must run with: the
        command's ``variables`` and the askpass ones."""
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path)
        os.chmod(self.socket_path, 0o600)
        with open(self.script_path, "w") as fh:
            fh.write(f'#!/bin/sh\nexec {shlex.join(program_argv())} "$@"\n')
        os.chmod(self.script_path, 0o700)
        return {
            **variables,
            "SSH_ASKPASS": self.script_path,
            "SSH_ASKPASS_REQUIRE": "force",
            SOCKET_ENV: self.socket_path,
            # ssh < 8.4 ignores SSH_ASKPASS_REQUIRE and wants a display before it uses askpass.
            "DISPLAY": variables.get("DISPLAY") or ":tunnelauth",
        }

    @property
    def busy(self) -> bool:
        """Whether a question is on the terminal right now."""
        return self._lock.locked()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer: str | None = None
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            line = await reader.readline()
            request = json.loads(line[:MESSAGE_LIMIT] or b"{}")
            prompt, hint = str(request.get("prompt", "")), str(request.get("hint", ""))
            async with self._lock:
                self.asked.append(prompt)
                started = time.monotonic()
                try:
                    answer = await self.ask(prompt, hint)
                finally:
                    self.waited += time.monotonic() - started
        except (ValueError, OSError, AttributeError):
            answer = None
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(json.dumps({"answer": answer}).encode() + b"\n")
                await writer.drain()
            writer.close()

    async def close(self) -> None:
        """Stop listening; a waiting askpass reads end-of-file and exits (ssh then gives up)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # A question still on the terminal ends with the connection attempt.
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(set(self._handlers), timeout=2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        for path in (self.socket_path, self.script_path):
            with contextlib.suppress(OSError):
                os.unlink(path)


if __name__ == "__main__":  # pragma: no cover - run by ssh
    sys.exit(main())
