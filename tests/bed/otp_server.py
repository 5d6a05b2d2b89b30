"""An SSH server that asks for a password and then a one-time code (keyboard-interactive).

Without ``--password`` it asks for the one-time code alone (the fleet's OTP bastion). Every
code prompt is logged (``Asked one-time code for USER``), and every verdict, so a test can
count prompts per login.

Run as root inside the bed's remote namespace (``ip netns exec``); the machine's PAM stack is
never involved. Sessions run the command as the bed's test user through ``/bin/bash -c``,
with a PTY when one is asked for (like sshd) and ``SSH_CLIENT``/``SSH_TTY`` set, so the fake
hermes behaves as under a real sshd. Direct TCP channels are allowed (the callback path).
Prints ``READY <port>`` once listening; SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import pty
import pwd
import signal
import struct
import sys
import termios
from typing import Any

import asyncssh


class OtpServer(asyncssh.SSHServer):
    """Keyboard-interactive only: round 1 the password, round 2 the one-time code."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.round = 0
        self.peer = ("", 0)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.peer = conn.get_extra_info("peername")[:2]
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        if self.opts.password is None:
            return self._ask_code(username)
        self.round = 1
        return ("", "", "", [("Password: ", False)])

    def _ask_code(self, username: str) -> Any:
        """Round 2: the one-time code (logged, so prompts can be counted)."""
        self.round = 2
        log(f"Asked one-time code for {username}")
        return ("", "Two-step verification", "", [("One-time code: ", False)])

    def validate_kbdint_response(self, username: str, responses: Any) -> Any:
        ok_user = username == self.opts.user
        if self.round == 1:
            if ok_user and list(responses) == [self.opts.password]:
                return self._ask_code(username)
            log(f"Failed password for {username}")
            return False
        ok = ok_user and list(responses) == [self.opts.code]
        log(f"{'Accepted' if ok else 'Failed'} keyboard-interactive/otp for {username}")
        return ok

    def connection_requested(self, dest_host: str, dest_port: int, *_: Any) -> bool:
        log(f"Forwarding to {dest_host}:{dest_port}")
        return True  # asyncssh connects from inside the remote namespace itself


def log(message: str) -> None:
    """One line to the log (stdout, appended to a file by the bed)."""
    print(message, flush=True)


def _become(uid: int, gid: int, with_tty: bool) -> None:
    """In the child: a new session (the PTY as controlling terminal), then the user's ids."""
    os.setsid()
    if with_tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


async def _session(process: asyncssh.SSHServerProcess[bytes], opts: argparse.Namespace) -> None:
    """Run the command as the test user and carry bytes both ways until it exits."""
    pw = pwd.getpwnam(opts.user)
    conn = process.channel.get_connection()
    peer_ip, peer_port = conn.get_extra_info("peername")[:2]
    env = {
        "HOME": pw.pw_dir,
        "USER": pw.pw_name,
        "LOGNAME": pw.pw_name,
        "SHELL": "/bin/bash",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SSH_CLIENT": f"{peer_ip} {peer_port} {opts.port}",
        "SSH_CONNECTION": f"{peer_ip} {peer_port} 0.0.0.0 {opts.port}",
    }
    argv = ["/bin/bash", "-c", process.command or "exec /bin/bash -l"]
    loop = asyncio.get_running_loop()
    size = process.get_terminal_size()
    with_tty = process.get_terminal_type() is not None
    if with_tty:
        master, slave = pty.openpty()
        cols, rows = size[0] or 80, size[1] or 24
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env["SSH_TTY"] = os.ttyname(slave)
        env["TERM"] = process.get_terminal_type() or "xterm"
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=pw.pw_dir,
            preexec_fn=lambda: _become(pw.pw_uid, pw.pw_gid, True),
        )
        os.close(slave)
        ended = asyncio.Event()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if data:
                process.stdout.write(data)
            else:
                loop.remove_reader(master)
                ended.set()

        loop.add_reader(master, readable)

        async def pump_in() -> None:
            while data := await process.stdin.read(4096):
                with contextlib.suppress(OSError):
                    os.write(master, data)

        feeder = asyncio.ensure_future(pump_in())
        waiting = asyncio.ensure_future(child.wait())
        # The session ends when the command exits or the client closes the channel; a
        # client that goes away hangs the terminal up, as sshd does (SIGHUP).
        await asyncio.wait({waiting, feeder}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGHUP)
        code = await waiting
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ended.wait(), 2.0)
        loop.remove_reader(master)
        os.close(master)
        feeder.cancel()
    else:
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=pw.pw_dir,
            preexec_fn=lambda: _become(pw.pw_uid, pw.pw_gid, False),
        )
        assert child.stdin and child.stdout and child.stderr

        async def copy_out(src: asyncio.StreamReader, dst: Any) -> None:
            while data := await src.read(65536):
                dst.write(data)

        async def copy_in() -> None:
            assert child.stdin is not None
            while data := await process.stdin.read(65536):
                child.stdin.write(data)
                await child.stdin.drain()
            child.stdin.close()

        feeder = asyncio.ensure_future(copy_in())
        await asyncio.gather(
            copy_out(child.stdout, process.stdout), copy_out(child.stderr, process.stderr)
        )
        code = await child.wait()
        feeder.cancel()
    process.exit(code if code >= 0 else 128 - code)


async def serve(opts: argparse.Namespace) -> None:
    """Listen until SIGTERM."""
    server = await asyncssh.create_server(
        lambda: OtpServer(opts),
        "0.0.0.0",
        opts.port,
        server_host_keys=[opts.host_key],
        process_factory=lambda process: _session(process, opts),
        encoding=None,
        allow_pty=True,
        agent_forwarding=False,
        x11_forwarding=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"READY {opts.port}")
    await stop.wait()
    server.close()


def main() -> int:
    """Parse options and serve."""
    parser = argparse.ArgumentParser()
    for name in ("--host-key", "--user", "--code"):
        parser.add_argument(name, required=True)
    parser.add_argument("--password", default=None, help="ask it before the code (else: code only)")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
