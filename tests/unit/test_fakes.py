"""Tests for the fakes (provider.py, hermes, loopback-cli) on this machine's loopback.

No namespaces and no root: a throwaway CA, provider.py on 127.0.0.1, the fakes under a PTY.
Tests that need hermes' fixed ports (43827, 56121) skip when this machine already uses them.
"""

from __future__ import annotations

import html
import http.client
import io
import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

pexpect = pytest.importorskip("pexpect")

FAKES = Path(__file__).resolve().parents[1] / "fakes"
HERMES = FAKES / "hermes"
LOOPBACK_CLI = FAKES / "loopback-cli"
WAIT = 15.0  # generous deadline for anything that should happen at once

SPOTIFY_BLOCK = """Starting Spotify PKCE login...
Client ID: {client_id}
Redirect URI: http://127.0.0.1:43827/spotify/callback
Make sure this redirect URI is allow-listed in your Spotify app settings.

Open this URL to authorize Hermes:
{url}
"""
SPOTIFY_HINT = """------------------------------------------------------------
Remote session detected — SSH tunnel required
------------------------------------------------------------
Hermes is waiting for the OAuth callback on http://127.0.0.1:43827/spotify/callback
but your browser is on a different machine. Run this command
in a NEW terminal on your local machine BEFORE opening the URL:

  ssh -N -L 43827:127.0.0.1:43827 {user_at_host}

Then open the authorize URL above in your local browser.
"""
MCP_BLOCK_HEAD = """
  MCP OAuth: authorization required.
  Open this URL in your browser:

    {url}

  Remote session detected. After you authorize, the provider redirects to
    http://127.0.0.1:{port}/callback
  which only the listener on THIS machine can receive. Two options:
"""
MCP_BLOCK_TAIL = """         ssh -N -L {port}:127.0.0.1:{port} <user>@<this-host>
"""
MCP_PASTE_TAIL = """  (Headless environment detected — open the URL manually.)


  Or paste the redirect URL here (or the ``?code=...&state=...`` portion) and press Enter. \
Type ``skip`` + Enter to continue without this server:
"""
URL_RE = re.compile(r"https://127\.0\.0\.1:\d+/[\w/-]*\?[^\s\x1b]+")


# -- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """A throwaway CA and a server certificate for idp.test and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Provider:
    """A running provider.py."""

    port: int
    state_dir: Path
    ca: Path

    @property
    def base(self) -> str:
        """The provider's base URL."""
        return f"https://127.0.0.1:{self.port}"

    def lines(self, name: str) -> list[dict[str, Any]]:
        """Parsed JSON lines of one of its state files."""
        path = self.state_dir / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Make the CA and server certificate with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("pki")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:idp.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tunnelauth test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=idp.test",
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return Certs(d / "ca.pem", d / "srv.pem", d / "srv.key")


def read_ready(proc: subprocess.Popen[bytes], deadline: float) -> int:
    """Wait for provider.py's ``READY <port>`` line."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                line = buf.split(b"\n", 1)[0].decode()
                assert line.startswith("READY "), line
                return int(line.split()[1])
    raise AssertionError(f"provider never printed READY (got {buf!r}, rc={proc.poll()})")


@pytest.fixture(scope="module")
def provider(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """Run provider.py on 127.0.0.1, port 0, for the whole module."""
    state_dir = tmp_path_factory.mktemp("idp-state")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(FAKES / "provider.py"),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--certfile",
            str(certs.cert),
            "--keyfile",
            str(certs.key),
            "--state-dir",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        port = read_ready(proc, time.monotonic() + WAIT)
        yield Provider(port, state_dir, certs.ca)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def home(tmp_path: Path, provider: Provider) -> Path:
    """A fresh HERMES_HOME with a default fake.json pointing at the provider."""
    h = tmp_path / "hermes-home"
    h.mkdir()
    configure(h, provider)
    return h


def configure(home: Path, provider: Provider, **overrides: Any) -> None:
    """Write fake.json."""
    cfg: dict[str, Any] = {
        "provider": provider.base,
        "ca_file": str(provider.ca),
        "spotify_client_id": "test-client",
        "timeout": 60,
    }
    cfg.update(overrides)
    (home / "fake.json").write_text(json.dumps(cfg))


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a remote login: HERMES_HOME and an SSH session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "HERMES_"))}
    env.update(HERMES_HOME=str(home), SSH_CLIENT="10.0.0.1 50000 22", PYTHONIOENCODING="utf-8")
    env.update(extra)
    return env


class Session:
    """The fake hermes (or loopback-cli) under a PTY, with its whole transcript."""

    def __init__(self, argv: list[str], env: dict[str, str], home: Path | None) -> None:
        self.home = home
        self.log = io.StringIO()
        self.child = pexpect.spawn(
            argv[0], argv[1:], env=env, encoding="utf-8", timeout=WAIT, dimensions=(50, 400)
        )
        self.child.logfile_read = self.log

    def expect(self, pattern: Any, timeout: float = WAIT) -> str:
        """Wait for ``pattern``; returns the matched text."""
        self.child.expect(pattern, timeout=timeout)
        return str(self.child.after)

    def expect_exact(self, text: str, timeout: float = WAIT) -> None:
        """Wait for a literal string."""
        self.child.expect_exact(text, timeout=timeout)

    def transcript(self) -> str:
        """Everything read so far, with the PTY's CRLF turned into LF."""
        return self.log.getvalue().replace("\r\n", "\n")

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for exit; returns the exit status (128+N for a signal)."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        if self.child.signalstatus is not None:
            return 128 + int(self.child.signalstatus)
        return int(self.child.exitstatus)

    def cleanup(self) -> None:
        """Kill if still running; then nothing of it may be left."""
        pid = self.child.pid
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close(force=True)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        if self.home is not None:
            leftovers = list((self.home / "fake-record").glob("*.pid"))
            assert not leftovers, f"pid files left behind: {leftovers}"


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Factory for Sessions; every one is reaped and checked at teardown."""
    sessions: list[Session] = []

    def start(
        args: list[str], home: Path | None, env: dict[str, str], program: Path = HERMES
    ) -> Session:
        s = Session([str(program), *args], env, home)
        sessions.append(s)
        return s

    yield start
    for s in sessions:
        s.cleanup()


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound right now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def need_free_port(port: int) -> None:
    """Skip the test when a fixed hermes port is in use on this machine."""
    if not port_is_free(port):
        pytest.skip(f"127.0.0.1:{port} is in use on this machine")


def hold_port(port: int) -> socket.socket:
    """Listen on 127.0.0.1:port so the fake cannot (SO_REUSEADDR: TIME_WAIT is no excuse)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        pytest.skip(f"127.0.0.1:{port} is in use on this machine")
    s.listen(1)
    return s


# -- the browser ----------------------------------------------------------------------------


def tls(provider: Provider) -> ssl.SSLContext:
    """A client context trusting the throwaway CA."""
    return ssl.create_default_context(cafile=str(provider.ca))


def provider_get(provider: Provider, path_and_query: str) -> http.client.HTTPResponse:
    """One GET to the provider, redirects not followed."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", provider.port, context=tls(provider), timeout=WAIT
    )
    conn.request("GET", path_and_query)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def authorize(provider: Provider, url: str) -> str:
    """Visit an authorize URL; returns the Location the provider redirects to."""
    parts = urlsplit(url)
    resp = provider_get(provider, f"{parts.path}?{parts.query}")
    assert resp.status == 302, resp.status
    return str(resp.getheader("Location"))


def loopback_get(url: str) -> tuple[int, dict[str, str], bytes, str]:
    """GET a loopback URL over plain TCP; returns status, headers, body, status line."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=WAIT) as s:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body, lines[0]


def record(home: Path, flow: str) -> dict[str, Any]:
    """The fake's record file for one flow."""
    return json.loads((home / "fake-record" / f"{flow}.json").read_text())


def wait_for(predicate: Any, what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until true or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def user_at_host() -> str:
    """What hermes puts in its ssh hint."""
    import getpass

    user = os.environ.get("USER") or os.environ.get("LOGNAME") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


# -- provider -------------------------------------------------------------------------------


def test_provider_codes_are_single_use_and_bound_to_redirect_uri(provider: Provider) -> None:
    """A code is exchanged once, only with its own redirect_uri; unknown paths are 404."""
    redirect = "http://127.0.0.1:9/cb"
    location = authorize(
        provider,
        f"{provider.base}/authorize?response_type=code&client_id=c"
        f"&redirect_uri={redirect}&state=s1",
    )
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(redirect + "?") and query["state"] == ["s1"]
    code = query["code"][0]
    assert {"code": code, "redirect_uri": redirect, "client_id": "c", "state": "s1"} in (
        provider.lines("issued.jsonl")
    )

    def token(form: str) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(f"{provider.base}/token", data=form.encode())
        try:
            with urllib.request.urlopen(req, context=tls(provider), timeout=WAIT) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert token(f"grant_type=authorization_code&code={code}&redirect_uri=http://x/")[1] == {
        "error": "invalid_grant"
    }
    status, body = token(f"grant_type=authorization_code&code={code}&redirect_uri={redirect}")
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert token(f"grant_type=authorization_code&code={code}&redirect_uri={redirect}")[0] == 400
    denied = authorize(
        provider,
        f"{provider.base}/authorize?response_type=code&client_id=deny"
        f"&redirect_uri={redirect}&state=s2",
    )
    assert parse_qs(urlsplit(denied).query) == {"error": ["access_denied"], "state": ["s2"]}
    assert provider_get(provider, "/nope").status == 404
    page = (
        urllib.request.urlopen(
            f"{provider.base}/authorize-page?x=1", context=tls(provider), timeout=WAIT
        )
        .read()
        .decode()
    )
    assert "/authorize?x=1" in page
    access_log = (provider.state_dir / "access.log").read_text()
    assert code not in access_log and "/token" in access_log


# -- Spotify --------------------------------------------------------------------------------


def test_spotify_prints_the_reference_block_and_completes(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """Block and hint as in the reference; the callback listener serves 404s and the code."""
    need_free_port(43827)
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    url = s.expect(URL_RE)
    s.expect_exact("Then open the authorize URL above in your local browser.")
    text = s.transcript()
    assert SPOTIFY_BLOCK.format(client_id="test-client", url=url) in text
    assert SPOTIFY_HINT.format(user_at_host=user_at_host()) in text
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A43827%2Fspotify%2Fcallback" in url
    params = parse_qs(urlsplit(url).query)
    assert params["code_challenge_method"] == ["S256"] and params["response_type"] == ["code"]

    wait_for(lambda: record(home, "spotify")["port"] == 43827, "the Spotify listener")
    status, _, _, _ = loopback_get("http://127.0.0.1:43827/favicon.ico")
    assert status == 404
    status, headers, body, line = loopback_get(authorize(provider, url))
    assert status == 200 and line.startswith("HTTP/1.1")
    assert int(headers["content-length"]) == len(body) and b"Spotify authorization" in body
    s.expect_exact("Spotify login successful!")
    s.expect_exact(f"  Auth state: {home / 'auth.json'}")
    s.expect_exact("  Provider state saved under providers.spotify")
    assert s.finish() == 0

    rec = record(home, "spotify")
    issued = [i["code"] for i in provider.lines("issued.jsonl")]
    assert rec["code"] in issued and rec["state_ok"] is True and rec["exchanged"] is True
    assert rec["requests"] == ["/favicon.ico", "/spotify/callback"]
    assert rec["env_ssh_client"] is True and rec["tty"] is True and rec["outcome"] == "ok"
    assert rec["code"] in [e["code"] for e in provider.lines("exchanged.jsonl")]
    store = json.loads((home / "auth.json").read_text())
    assert store["providers"]["spotify"]["tokens"]["access_token"]
    status_out = subprocess.run(
        [str(HERMES), "auth", "status", "spotify"],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert status_out.stdout == "spotify: logged in\n"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 43827), timeout=WAIT).close()


def test_spotify_state_mismatch(spawn: Any, home: Path, provider: Provider) -> None:
    """A callback whose state differs fails with hermes' line and exit 1."""
    need_free_port(43827)
    configure(home, provider, mode="state_mismatch")
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    url = s.expect(URL_RE)
    wait_for(lambda: record(home, "spotify")["port"] == 43827, "the Spotify listener")
    loopback_get(authorize(provider, url))
    s.expect_exact("Spotify authorization failed: state mismatch.")
    assert s.finish() == 1
    assert record(home, "spotify")["state_ok"] is False


@pytest.mark.parametrize(
    ("version", "last_line"),
    [
        (
            "0.19.0",
            "hermes_cli.auth.AuthError: Spotify authorization timed out waiting for the "
            "local callback.",
        ),
        ("legacy", "Authorization timed out waiting for the local callback."),
    ],
)
def test_spotify_timeout_text_per_version(
    spawn: Any, home: Path, provider: Provider, version: str, last_line: str
) -> None:
    """0.19.0 shows a traceback; older installs one line. Both exit 1."""
    need_free_port(43827)
    configure(home, provider, mode="timeout", timeout=1, version=version)
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    assert s.finish() == 1
    text = s.transcript()
    assert text.rstrip("\n").endswith(last_line)
    assert ("Traceback (most recent call last):" in text) == (version == "0.19.0")


def test_spotify_port_taken(spawn: Any, home: Path) -> None:
    """With 43827 held, 0.19.0 names the Spotify callback server in its bind error."""
    holder = hold_port(43827)
    try:
        s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
        assert s.finish() == 1
    finally:
        holder.close()
    assert (
        "hermes_cli.auth.AuthError: Could not bind Spotify callback server on "
        "127.0.0.1:43827: [Errno 98] Address already in use"
    ) in s.transcript()


def test_spotify_bind_busy_mode(spawn: Any, home: Path, provider: Provider) -> None:
    """``bind_busy`` prints the bind failure without touching the port (legacy wording)."""
    configure(home, provider, mode="bind_busy", version="legacy")
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    assert s.finish() == 1
    assert s.transcript().endswith(
        "Could not bind callback server on 127.0.0.1:43827: [Errno 98] Address already in use\n"
    )
    assert record(home, "spotify")["port"] is None


def test_spotify_asks_for_client_id_then_crash_mode(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """No client id: the ``Spotify Client ID: `` prompt; crash mode: traceback after the URL."""
    configure(home, provider, mode="crash", spotify_client_id=None)
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    s.expect_exact("Spotify Client ID: ")
    s.child.sendline("typed-id")
    s.expect_exact("Client ID: typed-id")
    s.expect(URL_RE)
    s.expect_exact("ConnectionResetError: [Errno 104] Connection reset by peer")
    assert s.finish() == 1
    assert record(home, "spotify")["outcome"] == "crash"


def test_auth_add_spotify_is_unknown(home: Path) -> None:
    """``hermes auth add spotify`` is not how Spotify logs in."""
    r = subprocess.run(
        [str(HERMES), "auth", "add", "spotify"],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert r.returncode == 1 and "Unknown provider 'spotify'." in r.stdout + r.stderr


# -- MCP ------------------------------------------------------------------------------------


def start_mcp(spawn: Any, home: Path) -> tuple[Session, str, int]:
    """Start ``hermes mcp login linear``; returns the session, the URL and the port."""
    s = spawn(["mcp", "login", "linear"], home, env_for(home))
    s.expect_exact("  Starting OAuth flow for 'linear'...")
    url = s.expect(URL_RE)
    s.expect_exact("without this server:")
    port = int(parse_qs(urlsplit(url).query)["redirect_uri"][0].split(":")[2].split("/")[0])
    return s, url, port


def test_mcp_block_single_request_listener_and_success(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """The stderr block as in the reference; one HTTP/1.0 answer without length; then closed."""
    s, url, port = start_mcp(spawn, home)
    text = s.transcript()
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback" in url
    assert MCP_BLOCK_HEAD.format(url=url, port=port) in text
    assert MCP_BLOCK_TAIL.format(port=port) in text
    assert text.endswith(MCP_PASTE_TAIL)
    status, headers, body, line = loopback_get(authorize(provider, url))
    assert status == 200 and line.startswith("HTTP/1.0") and "content-length" not in headers
    assert b"Authorization Successful" in body
    s.expect_exact("  ✓ Authenticated — 3 tool(s) available")
    assert s.finish() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    rec = record(home, "mcp-linear")
    assert rec["connections"] == 1 and rec["requests"] == ["/callback"] and rec["exchanged"]
    assert json.loads((home / "mcp-tokens" / "linear.json").read_text())["access_token"]


def test_mcp_probe_uses_up_the_listener_then_times_out(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """A probe takes the one answer; the next connection is never served; exit 0 on ✗."""
    configure(home, provider, timeout=2)
    s, _, port = start_mcp(spawn, home)
    status, _, body, _ = loopback_get(f"http://127.0.0.1:{port}/favicon.ico")
    assert status == 200 and b"Authorization Failed" in body
    second = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        second.sendall(b"GET /callback?code=x&state=y HTTP/1.1\r\nHost: x\r\n\r\n")
        s.expect_exact(
            "  ✗ Authentication failed: OAuth callback timed out — no authorization code received."
        )
        assert s.finish() == 0
        second.settimeout(WAIT)
        assert not second.recv(1024).startswith(b"HTTP/")  # closed unanswered
    except ConnectionResetError:
        pass
    finally:
        second.close()
    rec = record(home, "mcp-linear")
    assert rec["connections"] == 2 and rec["requests"] == ["/favicon.ico"]


def test_mcp_paste_completes_and_skip_aborts(spawn: Any, home: Path, provider: Provider) -> None:
    """A pasted ``?code=…&state=…`` completes the flow; ``skip`` gives a ✗ line; both exit 0."""
    s, url, _ = start_mcp(spawn, home)
    location = authorize(provider, url)
    s.child.sendline("?" + urlsplit(location).query)
    s.expect_exact("  Got authorization code from paste — completing flow.")
    s.expect_exact("  ✓ Authenticated — 3 tool(s) available")
    assert s.finish() == 0
    assert record(home, "mcp-linear")["connections"] == 0

    s2, _, _ = start_mcp(spawn, home)
    s2.child.sendline("skip")
    s2.expect_exact("  ✗ Authentication failed: user_skipped")
    assert s2.finish() == 0


def test_mcp_denied_is_a_failure_line_with_exit_0(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """The provider's access_denied reaches the listener; hermes still exits 0."""
    configure(home, provider, mode="deny")
    s, url, _ = start_mcp(spawn, home)
    loopback_get(authorize(provider, url))
    s.expect_exact("  ✗ Authentication failed: OAuth authorization failed: access_denied")
    assert s.finish() == 0


def test_mcp_without_tty(home: Path) -> None:
    """0.19.0 refuses to start the flow without a TTY on stdin, and exits 0."""
    r = subprocess.run(
        [str(HERMES), "mcp", "login", "linear"],
        env=env_for(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert r.returncode == 0
    assert r.stdout == (
        "  Starting OAuth flow for 'linear'...\n"
        "  ✗ Authentication failed: MCP OAuth for 'linear': non-interactive environment and no "
        "cached tokens found. Run `hermes mcp login linear` interactively first to complete "
        "initial authorization.\n"
    )
    assert not list((home / "fake-record").glob("*.pid"))


def test_sighup_exits_quietly(spawn: Any, home: Path) -> None:
    """SIGHUP (the SSH session went away) ends the login and removes the pid file."""
    s, _, _ = start_mcp(spawn, home)
    pid_file = home / "fake-record" / "mcp-linear.pid"
    assert int(pid_file.read_text()) == s.child.pid
    os.kill(s.child.pid, signal.SIGHUP)
    assert s.finish() == 128 + signal.SIGHUP
    assert not pid_file.exists()


# -- device code ----------------------------------------------------------------------------


def approve(provider: Provider, url: str) -> None:
    """Open a verification URL the way a browser would."""
    with urllib.request.urlopen(url, context=tls(provider), timeout=WAIT) as r:
        assert b"Device approved" in r.read()


def test_xai_device_flow_adds_to_the_pool(spawn: Any, home: Path, provider: Provider) -> None:
    """Two runs add credentials #1 and #2; list and remove work on the pool."""
    for number in (1, 2):
        s = spawn(["auth", "add", "xai-oauth", "--no-browser"], home, env_for(home))
        s.expect_exact("To continue:")
        url = s.expect(re.compile(r"(?<=  1\. Open: )https://\S+"))
        code = s.expect(re.compile(r"(?<=  2\. If prompted, enter code: )[A-Z]{4}-[A-Z]{4}"))
        s.expect_exact("Waiting for approval (polling every 5s)...")
        assert url.endswith(f"/device?user_code={code}")
        approve(provider, url)
        s.expect_exact("Login successful!")
        s.expect_exact(f'Added xai-oauth OAuth credential #{number}: "xai-oauth-oauth-{number}"')
        assert s.finish() == 0
    run = [str(HERMES), "auth"]
    listed = subprocess.run(
        [*run, "list", "xai-oauth"], env=env_for(home), capture_output=True, text=True, timeout=WAIT
    ).stdout
    assert "#1" in listed and "#2" in listed
    subprocess.run(
        [*run, "remove", "xai-oauth", "1"],
        env=env_for(home),
        check=True,
        capture_output=True,
        timeout=WAIT,
    )
    listed = subprocess.run(
        [*run, "list", "xai-oauth"], env=env_for(home), capture_output=True, text=True, timeout=WAIT
    ).stdout
    assert "#1" in listed and "#2" not in listed


def test_device_timeout_and_ctrl_c(spawn: Any, home: Path, provider: Provider) -> None:
    """Timeout gives xAI's line (exit 1); Ctrl-C gives ``Login cancelled.`` and 130."""
    configure(home, provider, mode="timeout", timeout=1)
    s = spawn(["auth", "add", "xai-oauth", "--no-browser"], home, env_for(home))
    s.expect_exact("Timed out waiting for xAI device authorization.")
    assert s.finish() == 1

    configure(home, provider)
    s2 = spawn(["auth", "add", "xai-oauth", "--no-browser"], home, env_for(home))
    s2.expect_exact("Waiting for approval (polling every 5s)...")
    s2.child.sendintr()
    s2.expect_exact("Login cancelled.")
    assert s2.finish() == 130
    assert record(home, "xai-oauth")["outcome"] == "cancelled"


def test_codex_colours_and_success_exit1(spawn: Any, home: Path, provider: Provider) -> None:
    """Codex's hard-coded colour codes; success_exit1 prints success yet exits 1."""
    configure(home, provider, mode="success_exit1")
    s = spawn(["auth", "add", "openai-codex"], home, env_for(home, NO_COLOR="1"))
    url = s.expect(re.compile(r"(?<=     \x1b\[94m)https://\S+(?=\x1b\[0m)"))
    code = s.expect(re.compile(r"(?<=     \x1b\[94m)[A-Z]{4}-[A-Z]{4}(?=\x1b\[0m)"))
    assert url.endswith("/device")
    approve(provider, f"{url}?user_code={code}")
    s.expect_exact("Login successful!")
    s.expect_exact('Added openai-codex OAuth credential #1: "openai-codex-oauth-1"')
    assert s.finish() == 1


def test_minimax_success_line(spawn: Any, home: Path, provider: Provider) -> None:
    """MiniMax ends with its own check-mark line."""
    s = spawn(["auth", "add", "minimax-oauth"], home, env_for(home))
    url = s.expect(re.compile(r"(?<=  1\. Open: )https://\S+"))
    approve(provider, url)
    s.expect_exact("✓ MiniMax OAuth login successful.")
    assert s.finish() == 0


# -- legacy xAI, Anthropic ------------------------------------------------------------------


def test_legacy_xai_bumps_when_56121_is_taken(spawn: Any, home: Path, provider: Provider) -> None:
    """Old installs try 56121, then an OS-picked port, and announce the port they bound."""
    configure(home, provider, version="legacy")
    holder = hold_port(56121)
    try:
        s = spawn(["auth", "add", "xai-oauth", "--no-browser"], home, env_for(home))
        s.expect_exact("Open this URL to authorize Hermes with xAI:")
        url = s.expect(URL_RE)
        waiting = s.expect(re.compile(r"Waiting for callback on http://127\.0\.0\.1:\d+/callback"))
    finally:
        holder.close()
    port = int(waiting.rsplit(":", 1)[1].split("/")[0])
    assert port != 56121
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback" in url
    status, _, _, _ = loopback_get(authorize(provider, url))
    assert status == 200
    s.expect_exact("Login successful!")
    assert s.finish() == 0
    version = subprocess.run(
        [str(HERMES), "--version"], env=env_for(home), capture_output=True, text=True, timeout=WAIT
    ).stdout
    assert version == "Hermes Agent v0.17.2\n"


def test_anthropic_paste_the_code(spawn: Any, home: Path, provider: Provider) -> None:
    """The provider shows ``code#state``; pasting it adds a credential."""
    s = spawn(["auth", "add", "anthropic"], home, env_for(home))
    s.expect_exact("Open this link in your browser:")
    url = s.expect(URL_RE)
    s.expect_exact("After authorizing, you'll see a code. Paste it below.")
    s.expect_exact("Authorization code: ")
    assert urlsplit(url).path == "/oauth/authorize"
    landing = authorize(provider, url)
    assert landing.startswith(f"{provider.base}/oauth/code/callback?")
    parts = urlsplit(landing)
    with urllib.request.urlopen(landing, context=tls(provider), timeout=WAIT) as r:
        shown = re.search(r"<code id='code'>([^<]+)</code>", r.read().decode())
    assert shown is not None and shown.group(1).split("#")[1] == parse_qs(parts.query)["state"][0]
    s.child.sendline(shown.group(1))
    s.expect_exact('Added anthropic OAuth credential #1: "anthropic-oauth-1"')
    assert s.finish() == 0


def test_profile_switches_home(home: Path) -> None:
    """``-p NAME`` keeps its own store under profiles/NAME."""
    r = subprocess.run(
        [str(HERMES), "-p", "work", "auth", "status", "nous"],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert r.stdout == "nous: logged out\n" and (home / "profiles" / "work").is_dir()
    r = subprocess.run(
        [str(HERMES), "--version"], env=env_for(home), capture_output=True, text=True, timeout=WAIT
    )
    assert r.stdout == "Hermes Agent v0.19.0\n"


# -- loopback-cli ---------------------------------------------------------------------------


def test_loopback_cli_plain(spawn: Any, home: Path, provider: Provider) -> None:
    """Provider and CA from fake.json; authorize URL, the plugin-style waiting line, success."""
    s = spawn([], None, env_for(home), program=LOOPBACK_CLI)
    s.expect_exact("Open this URL:")
    url = s.expect(URL_RE)
    waiting = s.expect(
        re.compile(
            r"Waiting for callback on http://127\.0\.0\.1:\d+/callback "
            r"\(timeout 180s, Ctrl\+C to cancel\)\.\.\."
        )
    )
    assert waiting.split()[4] == parse_qs(urlsplit(url).query)["redirect_uri"][0]
    loopback_get(authorize(provider, url))
    s.expect_exact("Login successful!")
    assert s.finish() == 0


def test_loopback_cli_rclone(spawn: Any, provider: Provider) -> None:
    """rclone's own start page redirects to the provider; the callback returns to ``/``."""
    env = env_for(Path("/nonexistent"), SSL_CERT_FILE=str(provider.ca))
    s = spawn(
        ["--rclone", "--port", "0", "--provider", provider.base], None, env, program=LOOPBACK_CLI
    )
    link = s.expect(
        re.compile(
            r"(?<=go to the following link: )http://127\.0\.0\.1:\d+/auth"
            r"\?state=\S+"
        )
    )
    s.expect_exact("NOTICE: Waiting for code...")
    parts = urlsplit(link)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=WAIT)
    conn.request("GET", f"/auth?{parts.query}")
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 302
    location = authorize(provider, str(resp.getheader("Location")))
    assert location.startswith(f"http://127.0.0.1:{parts.port}/?")
    assert loopback_get(location)[0] == 200
    s.expect_exact("NOTICE: Got code")
    s.expect_exact("Login successful!")
    assert s.finish() == 0


def test_loopback_cli_rclone_custom_client_names_its_redirect_first(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """A custom client: rclone first says where the redirect must go, then links its page."""
    s = spawn(
        ["--rclone", "--port", "0", "--client-id", "my-own"],
        None,
        env_for(home),
        program=LOOPBACK_CLI,
    )
    redirect = s.expect(re.compile(r'(?<=Make sure your Redirect URL is set to ")[^"]+'))
    link = s.expect(re.compile(r"(?<=go to the following link: )http://127\.0\.0\.1:\d+/auth\S+"))
    port = urlsplit(link).port
    assert redirect == f"http://127.0.0.1:{port}/"
    s.expect_exact("NOTICE: Waiting for code...")
    status, headers, _, _ = loopback_get(link)
    assert status == 302 and parse_qs(urlsplit(headers["location"]).query)["client_id"] == [
        "my-own"
    ]
    assert loopback_get(authorize(provider, headers["location"]))[0] == 200
    s.expect_exact("NOTICE: Got code")
    assert s.finish() == 0
    rec = record(home, "loopback-cli")
    assert rec["requests"] == ["/auth", "/"]
    assert rec["hosts"] == [f"127.0.0.1:{port}"] * 2


def test_loopback_cli_callback_refine(spawn: Any, home: Path, provider: Provider) -> None:
    """``Listening on http://127.0.0.1:P`` first; the redirect URI names localhost and a path."""
    s = spawn(["--callback", "refine"], None, env_for(home), program=LOOPBACK_CLI)
    listening = s.expect(re.compile(r"(?<=Listening on )http://127\.0\.0\.1:\d+(?=\r?\n)"))
    s.expect_exact("Open this URL:")
    url = s.expect(URL_RE)
    port = urlsplit(listening).port
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert redirect == f"http://localhost:{port}/oauth/callback"
    assert loopback_get(authorize(provider, url))[0] == 200
    s.expect_exact("Login successful!")
    assert s.finish() == 0
    rec = record(home, "loopback-cli")
    assert rec["requests"] == ["/oauth/callback"] and rec["hosts"] == [f"localhost:{port}"]


def test_loopback_cli_callback_root_answers_one_request_only(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """Google's shape: whatever comes first is taken as the redirect; nothing after it."""
    s = spawn(["--callback", "root"], None, env_for(home), program=LOOPBACK_CLI)
    url = s.expect(
        re.compile(r"(?<=Please visit this URL to authorize this application: )https://\S+")
    )
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    port = urlsplit(redirect).port
    assert redirect == f"http://localhost:{port}/"
    assert loopback_get(f"http://127.0.0.1:{port}/favicon.ico")[0] == 400
    s.expect_exact("Login failed: state mismatch")
    assert s.finish() == 1
    rec = record(home, "loopback-cli")
    assert rec["requests"] == ["/favicon.ico"] and rec["code"] is None


def test_loopback_cli_callback_ipv6(spawn: Any, home: Path, provider: Provider) -> None:
    """Listens on [::1] only; the redirect URI and the waiting line name [::1]."""
    if not ipv6_loopback():
        pytest.skip("no ::1 here")
    s = spawn(["--callback", "ipv6"], None, env_for(home), program=LOOPBACK_CLI)
    s.expect_exact("Open this URL:")
    url = s.expect(URL_RE)
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    port = urlsplit(redirect).port
    assert redirect == f"http://[::1]:{port}/callback"
    s.expect_exact(f"Waiting for callback on http://[::1]:{port}/callback ")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    assert loopback_get(authorize(provider, url))[0] == 200
    s.expect_exact("Login successful!")
    assert s.finish() == 0
    assert record(home, "loopback-cli")["hosts"] == [f"[::1]:{port}"]


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_loopback_cli_as_aws_sso_login(
    spawn: Any, home: Path, provider: Provider, tmp_path: Path
) -> None:
    """Installed as ``aws``: ``sso login --no-browser`` prints the AWS CLI's wording."""
    aws = tmp_path / "aws"
    aws.symlink_to(LOOPBACK_CLI)
    s = spawn(["sso", "login", "--no-browser", "--profile", "dev"], None, env_for(home), aws)
    s.expect_exact("Browser will not be automatically opened.")
    s.expect_exact("Please visit the following URL:")
    url = s.expect(URL_RE)
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/oauth/callback", redirect), redirect
    loopback_get(authorize(provider, url))
    s.expect_exact("Successfully logged into Start URL: https://start.idp.test/start")
    assert s.finish() == 0


def _form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of a form_post page."""
    action = re.search(r"<form method='POST' name='hiddenform' action='([^']*)'>", page)
    assert action is not None, page
    fields = re.findall(r"<input type='hidden' name='([^']*)' value='([^']*)'>", page)
    return html.unescape(action.group(1)), {k: html.unescape(v) for k, v in fields}


def _loopback_raw(port: int, request: bytes) -> bytes:
    """Send one raw request to 127.0.0.1:PORT; everything that came back until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _post(url: str, form: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    assert parts.port is not None
    body = urlencode(form).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return _loopback_raw(parts.port, head.encode() + body)


def test_provider_form_post_answers_with_a_self_submitting_form(provider: Provider) -> None:
    query = urlencode(
        {"client_id": "c", "redirect_uri": "http://127.0.0.1:9/cb?x=1", "state": "s'&<"}
    )
    conn = http.client.HTTPSConnection(
        "127.0.0.1", provider.port, context=tls(provider), timeout=WAIT
    )
    conn.request("GET", f"/authorize?{query}&response_mode=form_post")
    resp = conn.getresponse()
    page = resp.read().decode()
    conn.close()
    assert resp.status == 200 and resp.getheader("Location") is None
    action, fields = _form_fields(page)
    assert action == "http://127.0.0.1:9/cb?x=1"
    issued = provider.lines("issued.jsonl")[-1]
    assert fields == {"code": issued["code"], "state": "s'&<"}
    assert issued["response_mode"] == "form_post"
    assert "document.forms[0].submit()" in page
    assert provider_get(provider, f"/authorize?{query}&response_mode=fragment").status == 400


def test_loopback_cli_form_post_takes_the_callback_only_as_a_post(
    spawn: Any, home: Path, provider: Provider
) -> None:
    s = spawn(["--form-post"], None, env_for(home), program=LOOPBACK_CLI)
    url = s.expect(URL_RE)
    assert parse_qs(urlsplit(url).query)["response_mode"] == ["form_post"]
    conn = http.client.HTTPSConnection(
        "127.0.0.1", provider.port, context=tls(provider), timeout=WAIT
    )
    parts = urlsplit(url)
    conn.request("GET", f"{parts.path}?{parts.query}")
    action, fields = _form_fields(conn.getresponse().read().decode())
    conn.close()
    refused = loopback_get(f"{action}?{urlencode(fields)}")
    assert refused[0] == 400, "a GET callback is not what a form_post login takes"
    assert _post(action, fields).startswith(b"HTTP/1.1 200 ")
    s.expect_exact("Login successful!")
    assert s.finish() == 0
    assert record(home, "loopback-cli")["code"] == fields["code"]


def test_loopback_cli_answers_only_after_its_token_exchange(
    spawn: Any, home: Path, provider: Provider
) -> None:
    s = spawn(["--answer-delay", "0.5"], None, env_for(home), program=LOOPBACK_CLI)
    location = authorize(provider, s.expect(URL_RE))
    code = parse_qs(urlsplit(location).query)["code"][0]
    status = loopback_get(location)[0]
    # The answer came, and by then the provider had already exchanged the code.
    assert status == 200
    assert code in [line.get("code") for line in provider.lines("exchanged.jsonl")]
    s.expect_exact("Login successful!")
    assert s.finish() == 0


def test_loopback_cli_can_exit_without_answering_the_callback(
    spawn: Any, home: Path, provider: Provider
) -> None:
    s = spawn(["--exit-without-answer"], None, env_for(home), program=LOOPBACK_CLI)
    location = authorize(provider, s.expect(URL_RE))
    parts = urlsplit(location)
    assert parts.port is not None
    request = f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    assert _loopback_raw(parts.port, request.encode()) == b"", "the callback got no answer"
    s.expect_exact("Error: the sign-in was interrupted.")
    assert s.finish() == 1
    assert record(home, "loopback-cli")["code"] == parse_qs(parts.query)["code"][0]


def test_loopback_cli_as_wrangler_refuses_other_commands(tmp_path: Path) -> None:
    wrangler = tmp_path / "wrangler"
    wrangler.symlink_to(LOOPBACK_CLI)
    done = subprocess.run(
        [str(wrangler), "whoami"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 1 and "unknown command 'whoami'" in done.stderr


# -- upstream 0.21 flows (version "0.21") -----------------------------------------------------


@pytest.mark.parametrize("ask", ["flag", "config"])
def test_codex_browser_021_serves_1455_and_exchanges(
    spawn: Any, home: Path, provider: Provider, ask: str
) -> None:
    """``--browser`` or ``auth.codex_login_flow: browser``: the 0.21 lines, 1455, one code."""
    need_free_port(1455)
    configure(home, provider, version="0.21")
    args = ["auth", "add", "openai-codex"]
    if ask == "flag":
        args.append("--browser")
    else:
        (home / "config.yaml").write_text("model: x\nauth:\n  codex_login_flow: browser\n")
    s = spawn(args, home, env_for(home))
    s.expect_exact("Signing in to OpenAI Codex (browser authorization)...")
    s.expect_exact("Open this URL to authorize Hermes:")
    url = s.expect(URL_RE)
    s.expect_exact("  ssh -N -L 1455:127.0.0.1:1455 ")
    s.expect_exact(
        "Waiting for the OpenAI callback on http://localhost:1455/auth/callback "
        "(timeout 60s, Ctrl+C to cancel)..."
    )
    assert "redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback" in url
    location = authorize(provider, url)
    assert location.startswith("http://localhost:1455/auth/callback?")
    status, _, _, _ = loopback_get(location.replace("localhost", "127.0.0.1", 1))
    assert status == 200
    s.expect_exact("Exchanging the authorization code for Codex tokens...")
    s.expect_exact('Added openai-codex OAuth credential #1: "openai-codex-oauth-1"')
    assert s.finish() == 0
    rec = record(home, "openai-codex")
    assert rec["code"] == parse_qs(urlsplit(location).query)["code"][0]
    assert rec["exchanged"] and rec["port"] == 1455 and rec["version"] == "0.21.0"


def test_codex_browser_021_falls_back_to_the_device_code_when_1455_is_busy(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """The busy port is really detected; the 0.21 device block follows and completes."""
    configure(home, provider, version="0.21")
    holder = hold_port(1455)
    try:
        s = spawn(["auth", "add", "openai-codex", "--browser"], home, env_for(home))
        s.expect_exact(
            "Port 1455 is already in use (a Codex CLI sign-in may be running). OpenAI only "
            "redirects to that port, so falling back to the device-code login."
        )
        s.expect_exact(
            "Follow these steps to sign in with ChatGPT using device code authorization:"
        )
        url = s.expect(re.compile(r"(?<=     \x1b\[94m)https://\S+(?=\x1b\[0m)"))
        code = s.expect(re.compile(r"(?<=     \x1b\[94m)[A-Z]{4}-[A-Z]{4}(?=\x1b\[0m)"))
        s.expect_exact("Device codes are a common phishing target. Never share this code.")
        approve(provider, f"{url}?user_code={code}")
        s.expect_exact("Login successful!")
        s.expect_exact('Added openai-codex OAuth credential #1: "openai-codex-oauth-1"')
        assert s.finish() == 0
    finally:
        holder.close()
    assert record(home, "openai-codex")["port"] is None


def test_openrouter_021_headless_paste_is_masked(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """Over SSH: the headless line, a masked ``Authorization code: ``, the code exchanged."""
    configure(home, provider, version="0.21")
    s = spawn(["auth", "add", "openrouter", "--type", "oauth"], home, env_for(home))
    s.expect_exact("Remote session detected — using OpenRouter's headless flow.")
    s.expect_exact("Authorization code: ")
    landing = authorize(
        provider,
        f"{provider.base}/authorize?client_id=hermes-openrouter&state=s&redirect_uri="
        f"{provider.base}/oauth/code/callback",
    )
    code = parse_qs(urlsplit(landing).query)["code"][0]
    s.child.sendline(code)
    s.expect_exact('Added openrouter OAuth credential #1: "openrouter-oauth-1"')
    assert s.finish() == 0
    assert code not in s.transcript(), "the typed code was echoed"
    assert record(home, "openrouter")["code"] == code


def test_openrouter_is_unknown_before_021(home: Path) -> None:
    r = subprocess.run(
        [str(HERMES), "auth", "add", "openrouter", "--type", "oauth"],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert r.returncode == 1 and r.stderr == "Unknown provider 'openrouter'.\n"


@pytest.mark.parametrize("answer", ["paste", "callback"])
def test_spotify_manual_paste_021_races_the_listener(
    spawn: Any, home: Path, provider: Provider, answer: str
) -> None:
    """``Callback URL: `` after the hint; a paste or the listener's callback completes it."""
    with socket.socket() as probe:  # not 43827: e2e runs on this machine carry logins there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(home, provider, version="0.21", spotify_port=port)
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    url = s.expect(URL_RE)
    s.expect_exact("Then open the authorize URL above in your local browser.")
    s.expect_exact("─── Manual callback paste ───")
    s.expect_exact("Callback URL: ")
    location = authorize(provider, url)
    if answer == "paste":
        s.child.sendline(location)
    else:
        wait_for(lambda: record(home, "spotify")["port"] == port, "the Spotify listener")
        assert loopback_get(location)[0] == 200
    s.expect_exact("Spotify login successful!")
    assert s.finish() == 0
    rec = record(home, "spotify")
    assert rec["state_ok"] and rec["exchanged"] and rec["paste_prompt"]
    assert rec["requests"] == ([] if answer == "paste" else ["/spotify/callback"])


def test_nous_021_device_timeout(spawn: Any, home: Path, provider: Provider) -> None:
    """0.21's Nous block; the timeout line, then the portal line, exit 1."""
    configure(home, provider, version="0.21", mode="timeout", timeout=1)
    s = spawn(["auth", "add", "nous"], home, env_for(home))
    s.expect_exact("Requesting device code from Nous Portal...")
    s.expect(re.compile(r"Please visit https://\S+/device and enter the code: [A-Z]{4}-[A-Z]{4}"))
    s.expect_exact("Waiting for you to approve the login in your browser...")
    s.expect_exact("Timed out waiting for device authorization.\r\n  Portal sign-in is required…")
    assert s.finish() == 1


# The golden 0.21 transcripts (tests/unit/transcripts) and the fake must print the same lines,
# up to what differs per run: URLs, device codes, user@host, pool labels.
GOLDEN = Path(__file__).resolve().parent / "transcripts"


def normalized(text: str) -> list[str]:
    """Lines with the per-run parts replaced by placeholders."""
    text = text.replace("\r\n", "\n")
    text = re.sub(r"https?://[^\s\x1b]+", "URL", text)
    text = re.sub(r"(?<![A-Z0-9])[A-Z0-9]{4}-[A-Z0-9]{4}(?![A-Z0-9])", "CODE", text)
    text = re.sub(r"(ssh -N -L \S+) \S+@\S+", r"\1 USER@HOST", text)
    text = re.sub(r'(OAuth credential #\d+: )"[^"]*"', r'\1"LABEL"', text)
    text = re.sub(r"^Client ID: \S+$", "Client ID: ID", text, flags=re.M)
    return text.split("\n")


def golden(name: str) -> list[str]:
    return normalized((GOLDEN / f"{name}.pty").read_text(encoding="utf-8"))


def test_codex_browser_021_prints_the_golden_lines(
    spawn: Any, home: Path, provider: Provider
) -> None:
    need_free_port(1455)
    configure(home, provider, version="0.21", timeout=None)
    s = spawn(["auth", "add", "openai-codex", "--browser"], home, env_for(home))
    url = s.expect(URL_RE)
    s.expect_exact("Ctrl+C to cancel)...")
    assert loopback_get(authorize(provider, url).replace("localhost", "127.0.0.1", 1))[0] == 200
    assert s.finish() == 0
    assert normalized(s.transcript()) == golden("codex_browser_021")


def test_codex_port_busy_021_prints_the_golden_lines(
    spawn: Any, home: Path, provider: Provider
) -> None:
    configure(home, provider, version="0.21")
    holder = hold_port(1455)
    try:
        s = spawn(["auth", "add", "openai-codex", "--browser"], home, env_for(home))
        url = s.expect(re.compile(r"(?<=     \x1b\[94m)https://\S+(?=\x1b\[0m)"))
        code = s.expect(re.compile(r"(?<=     \x1b\[94m)[A-Z]{4}-[A-Z]{4}(?=\x1b\[0m)"))
        approve(provider, f"{url}?user_code={code}")
        assert s.finish() == 0
    finally:
        holder.close()
    assert normalized(s.transcript()) == golden("codex_browser_port_busy_021")


def test_openrouter_and_nous_021_print_the_golden_lines(
    spawn: Any, home: Path, provider: Provider
) -> None:
    configure(home, provider, version="0.21", mode="timeout", timeout=1)
    s = spawn(["auth", "add", "openrouter", "--type", "oauth"], home, env_for(home))
    s.expect_exact("Authorization code: ")
    assert normalized(s.transcript()) == golden("openrouter_headless_paste_021")
    n = spawn(["auth", "add", "nous"], home, env_for(home))
    assert n.finish() == 1
    assert normalized(n.transcript()) == golden("nous_device_timeout_021")


def test_spotify_manual_paste_021_prints_the_golden_lines(
    spawn: Any, home: Path, provider: Provider
) -> None:
    """In order; the fake adds the setup-guide and docs lines the source prints (README)."""
    need_free_port(43827)
    configure(home, provider, version="0.21")
    s = spawn(["auth", "spotify", "login", "--no-browser"], home, env_for(home))
    s.expect_exact("Callback URL: ")
    fake = iter(normalized(s.transcript()))
    expected = golden("spotify_manual_paste_021")
    missing = [line for line in expected if not any(line == f for f in fake)]
    assert missing == [], f"golden lines not printed in order: {missing}"
