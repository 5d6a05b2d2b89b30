"""The simulated remote host: an in-process asyncssh server with a virtual remote loopback.

Sessions run a hermes-like login program "on a PTY"; direct-tcpip channels to the remote's
127.0.0.1:P reach the listener that program registered on the *virtual* loopback, so nothing
on this machine's real port P is involved and the laptop side can bind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
import shlex
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import asyncssh

from tunnelauth.demo.provider import html_page, http_response, pkce_challenge, read_request_head
from tunnelauth.remote import NOT_FOUND_MARKER

USER = "demo"
DEMO_ARGV = ("hermes", "auth", "demo", "login", "--no-browser")
LOGIN_TIMEOUT = 180.0  # like hermes's Spotify login: the program gives up on its own
CLOSE_DEADLINE = 5.0

Outcome = Literal["running", "succeeded", "failed", "timed out", "cancelled", "hung up"]

Handler = Callable[[Any, Any], Awaitable[None]]  # (SSHReader, SSHWriter) of one channel


def free_port() -> int:
    """A port nobody listens on right now (bound to 0 and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class VirtualLoopback:
    """The simulated remote's 127.0.0.1: which port has a listener, and its handler."""

    def __init__(self) -> None:
        self._listeners: dict[int, Handler] = {}

    def listen(self, port: int, handler: Handler) -> None:
        """Bind ``port`` (virtually); a second listener on it fails like a real bind."""
        if port in self._listeners:
            raise OSError(f"[Errno 98] Address already in use: 127.0.0.1:{port}")
        self._listeners[port] = handler

    def unlisten(self, port: int) -> None:
        """Release ``port``."""
        self._listeners.pop(port, None)

    def connect(self, host: str, port: int) -> Handler:
        """The handler for a connection to ``host:port``, or the refusal sshd would send."""
        handler = self._listeners.get(port) if host in ("127.0.0.1", "localhost") else None
        if handler is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Connection refused")
        return handler


class _SSHServer(asyncssh.SSHServer):  # type: ignore[misc]
    """One client connection: public-key auth for the demo key only, tunnels to the loopback."""

    def __init__(self, owner: DemoServer) -> None:
        self._owner = owner
        self._conn: Any = None

    def connection_made(self, conn: Any) -> None:
        # Kept so close() can end it: closing the acceptor leaves open connections running.
        self._conn = conn
        self._owner.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: Any) -> bool:
        wanted = self._owner.client_key
        return username == USER and key.public_data == wanted.public_data

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Handler:
        return self._owner.loopback.connect(dest_host, dest_port)


class DemoServer:
    """Listens on 127.0.0.1 (random port) with a throwaway host key; runs the demo program."""

    def __init__(
        self,
        *,
        host_key: Any,
        client_key: Any,
        callback_port: int,
        authorize_url: Callable[[str, str, str], str],
        redeem: Callable[[str, str, str], bool],
        fail: bool,
    ) -> None:
        self.host_key = host_key
        self.client_key = client_key
        self.callback_port = callback_port
        self.loopback = VirtualLoopback()
        self.connections: set[Any] = set()
        self.outcomes: list[Outcome] = []
        self._authorize_url = authorize_url
        self._redeem = redeem
        self._fail = fail
        self._acceptor: Any = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen on 127.0.0.1, port picked by the system."""
        self._acceptor = await asyncssh.create_server(
            lambda: _SSHServer(self),
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            process_factory=self._session,
            encoding=None,  # bytes both ways: the program writes its own \r\n like a PTY
            line_editor=False,  # a raw PTY: Ctrl-C reaches the program as \x03
            allow_pty=True,
            agent_forwarding=False,
            x11_forwarding=False,
            sftp_factory=None,
        )
        self.port = self._acceptor.get_port()

    async def close(self) -> None:
        """Stop listening, end running sessions and close every connection."""
        if self._acceptor is not None:
            self._acceptor.close()
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=CLOSE_DEADLINE)
        for conn in list(self.connections):
            conn.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), CLOSE_DEADLINE)
        self.connections.clear()
        if self._acceptor is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._acceptor.wait_closed(), CLOSE_DEADLINE)
            self._acceptor = None

    async def _session(self, process: Any) -> None:
        """One exec request: the demo login if it asks for it, else what a shell would say."""
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            status = await self._dispatch(process)
        except asyncio.CancelledError:
            status = 129  # the host is shutting down: like SIGHUP
        finally:
            self._sessions.discard(task)
        with contextlib.suppress(asyncssh.Error, OSError):
            process.exit(status)

    async def _dispatch(self, process: Any) -> int:
        """Run what the command asks for; the exit status."""
        newline = b"\r\n" if process.get_terminal_type() else b"\n"
        argv = requested_argv(process.command or "")
        if not argv or argv[0].rsplit("/", 1)[-1] != DEMO_ARGV[0]:
            name = argv[0] if argv else "(none)"
            _write(process, f"{NOT_FOUND_MARKER} {name}".encode() + newline)
            return 127
        if tuple(argv[1:]) != DEMO_ARGV[1:]:
            usage = "usage: hermes auth demo login --no-browser (the only command simulated here)"
            _write(process, usage.encode() + newline)
            return 2
        program = LoginProgram(
            process,
            newline=newline,
            loopback=self.loopback,
            port=self.callback_port,
            authorize_url=self._authorize_url,
            redeem=self._redeem,
            fail=self._fail,
        )
        status = await program.run()
        self.outcomes.append(program.outcome)
        return status


def requested_argv(command: str) -> list[str]:
    """The program and arguments tunnelauth's remote wrapper would exec (or the plain command)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    # tunnelauth sends: exec sh -c SCRIPT tunnelauth PROGRAM ARGS...
    if words[:3] == ["exec", "sh", "-c"] and len(words) > 5 and words[4] == "tunnelauth":
        return words[5:]
    return words


class LoginProgram:
    """The simulated ``hermes auth demo login``: a PKCE loopback login, written like hermes's."""

    def __init__(
        self,
        process: Any,
        *,
        newline: bytes,
        loopback: VirtualLoopback,
        port: int,
        authorize_url: Callable[[str, str, str], str],
        redeem: Callable[[str, str, str], bool],
        fail: bool,
    ) -> None:
        self.process = process
        self.newline = newline
        self.loopback = loopback
        self.port = port
        self.redirect_uri = f"http://127.0.0.1:{port}/callback"
        self.state = secrets.token_urlsafe(16)
        self.verifier = secrets.token_urlsafe(48)
        self.outcome: Outcome = "running"
        self._authorize_url = authorize_url
        self._redeem = redeem
        self._fail = fail
        self._result: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()

    async def run(self) -> int:
        """Run the login while watching the keyboard; returns the exit status."""
        login = asyncio.ensure_future(self._login())
        keys = asyncio.ensure_future(self._keyboard())
        try:
            done, _ = await asyncio.wait({login, keys}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (login, keys):
                task.cancel()
            await asyncio.gather(login, keys, return_exceptions=True)
        if login in done and not login.cancelled():
            return login.result()
        if keys.result() == "interrupt":
            self.say("Login cancelled.")
            self.outcome = "cancelled"
            return 130
        self.outcome = "hung up"
        return 129  # the session went away: a real program would get SIGHUP

    def say(self, text: str = "") -> None:
        """Print one line the way it arrives through a PTY."""
        _write(self.process, text.encode() + self.newline)

    async def _login(self) -> int:
        try:
            self.loopback.listen(self.port, self._serve)
        except OSError as exc:
            self.say(f"Could not bind demo callback server on 127.0.0.1:{self.port}: {exc}")
            self.outcome = "failed"
            return 1
        try:
            self.say("Starting demo PKCE login...")
            self.say("Client ID: tunnelauth-demo")
            self.say()
            # Like rclone, the program's own loopback page sends the browser on to the
            # provider, so the page it prints is on the callback port too.
            self.say("Open this URL to authorize Hermes (demo):")
            self.say(f"http://127.0.0.1:{self.port}/login?state={self.state}")
            self.say()
            self.say(f"Redirect URI: {self.redirect_uri}")
            self.say(
                f"Waiting for the callback (timeout {LOGIN_TIMEOUT:.0f}s, Ctrl+C to cancel)..."
            )
            try:
                ok, why = await asyncio.wait_for(self._result, LOGIN_TIMEOUT)
            except asyncio.TimeoutError:
                self.say("Demo authorization timed out waiting for the local callback.")
                self.outcome = "timed out"
                return 1
        finally:
            self.loopback.unlisten(self.port)
        if not ok:
            self.say(f"Demo authorization failed: {why}")
            self.outcome = "failed"
            return 1
        self.say("Demo login successful!")
        self.say("  Token stored (simulated: nothing was written anywhere).")
        self.outcome = "succeeded"
        return 0

    async def _keyboard(self) -> str:
        """Wait for Ctrl-C on the PTY (or a signal/break request); ``hangup`` if input ends."""
        while True:
            try:
                data = await self.process.stdin.read(1024)
            except asyncssh.BreakReceived:
                return "interrupt"
            except asyncssh.SignalReceived as exc:
                return "interrupt" if exc.signal == "INT" else "hangup"
            except asyncssh.TerminalSizeChanged:
                continue
            except (asyncssh.Error, OSError):
                return "hangup"
            if not data:
                return "hangup"
            if b"\x03" in data:
                return "interrupt"

    async def _serve(self, reader: Any, writer: Any) -> None:
        """One connection to the virtual 127.0.0.1:P (HTTP/1.0: the page ends at close)."""
        verdict: tuple[bool, str] | None = None
        try:
            head = await read_request_head(reader)
            if head is not None:
                response, verdict = self._answer(*head)
                writer.write(response)
        except (asyncssh.Error, OSError):
            verdict = None  # the tunnel broke before the answer went out
        finally:
            writer.close()
            with contextlib.suppress(asyncio.TimeoutError, asyncssh.Error, OSError):
                await asyncio.wait_for(writer.channel.wait_closed(), CLOSE_DEADLINE)
        # Decided only after the page went out, so the browser has it before the result prints.
        if verdict is not None and not self._result.done():
            self._result.set_result(verdict)

    def _answer(self, method: str, target: str) -> tuple[bytes, tuple[bool, str] | None]:
        """The page for one request and, for the callback, the login's verdict."""
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        if method != "GET":
            return http_response(
                405, html_page("Not allowed", "<p>Only GET.</p>"), http10=True
            ), None
        if parts.path == "/login" and query.get("state") == self.state:
            url = self._authorize_url(self.redirect_uri, self.state, pkce_challenge(self.verifier))
            return http_response(302, "", headers=[("Location", url)], http10=True), None
        if parts.path != "/callback":
            return http_response(
                404, html_page("Not found", "<p>Nothing here.</p>"), http10=True
            ), None
        if self._result.done():
            return _page(200, "Already done", "This login has already finished."), None
        verdict = self._check(query)
        if verdict[0]:
            text = "Demo login complete. You can close this tab and return to the terminal."
            return _page(200, "Demo login complete", text), verdict
        return _page(400, "Demo login failed", f"The login failed: {verdict[1]}"), verdict

    def _check(self, query: dict[str, str]) -> tuple[bool, str]:
        """Judge a callback like hermes: state first, then the provider's answer, then the code."""
        if not secrets.compare_digest(query.get("state", ""), self.state):
            return False, "state mismatch."
        if "error" in query:
            return False, f"the provider answered {query['error']}."
        code = query.get("code", "")
        if not code:
            return False, "the callback carried no code."
        if self._fail:
            return False, "the token exchange was refused (TUNNELAUTH_DEMO_FAIL is set)."
        if not self._redeem(code, self.verifier, self.redirect_uri):
            return False, "the provider did not accept the code."
        return True, ""


def _page(status: int, title: str, text: str) -> bytes:
    return http_response(status, html_page(title, f"<p>{html.escape(text)}</p>"), http10=True)


def _write(process: Any, data: bytes) -> None:
    """Output to the session; a session already gone swallows it, like a hung-up terminal."""
    with contextlib.suppress(asyncssh.Error, OSError):
        process.stdout.write(data)
