#!/usr/bin/python3
"""A fake OAuth authorization server over HTTPS for tunnelauth's tests (stdlib only).

Authorization-code flow (``/authorize``, ``/token``; ``response_mode=form_post`` answers
with an auto-submitting form that POSTs the code, as Microsoft's MSAL logins ask), a two-step
authorize page,
a paste-the-code page (``/oauth/code/callback``) and the device-code flow
(``/device/code``, ``/device``). Every consent is automatic. What it issued,
exchanged and approved is appended as JSON lines under ``--state-dir``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_EXPIRES_IN = 900
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: never spells a word


@dataclass
class IssuedCode:
    """One authorization code handed out by ``/authorize``."""

    redirect_uri: str
    client_id: str
    code_challenge: str | None
    used: bool = False


@dataclass
class DeviceGrant:
    """One device authorization handed out by ``/device/code``."""

    user_code: str
    client_id: str
    expires_at: float
    approved: bool = False
    exchanged: bool = False


@dataclass
class ProviderState:
    """Everything the provider remembers, guarded by one lock."""

    state_dir: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: dict[str, IssuedCode] = field(default_factory=dict)
    devices: dict[str, DeviceGrant] = field(default_factory=dict)

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line to ``state_dir/name`` (caller holds the lock)."""
        with (self.state_dir / name).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def log(self, line: str) -> None:
        """Append one access-log line (never to stdout)."""
        with self.lock, (self.state_dir / "access.log").open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def new_user_code() -> str:
    """A random ``ABCD-EFGH`` style user code."""
    letters = [secrets.choice(USER_CODE_ALPHABET) for _ in range(8)]
    return "".join(letters[:4]) + "-" + "".join(letters[4:])


def pkce_matches(challenge: str | None, verifier: str | None) -> bool:
    """Whether an S256 ``code_verifier`` matches the challenge (no challenge: always true)."""
    if not challenge:
        return True
    if not verifier:
        return False
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=") == challenge


def token_payload() -> dict[str, Any]:
    """A fresh bearer token response."""
    return {
        "access_token": "fake-at-" + secrets.token_urlsafe(24),
        "refresh_token": "fake-rt-" + secrets.token_urlsafe(24),
        "token_type": "Bearer",
        "expires_in": 3600,
    }


def page(title: str, body: str, head: str = "") -> bytes:
    """A tiny HTML page."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{head}"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    """Routes the provider's endpoints; the shared state hangs off the server."""

    server: ProviderServer
    protocol_version = "HTTP/1.1"
    server_version = "FakeIdP/1.0"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def state(self) -> ProviderState:
        """The provider's shared state."""
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:
        """Access log to ``state_dir/access.log``, without query strings (they carry codes)."""
        message = format % args
        self.state.log(f"{self.log_date_time_string()} {self.address_string()} {message}")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log the method and path only: queries and bodies can hold secrets."""
        path = urlsplit(self.path).path
        self.log_message('"%s %s" %s %s', self.command, path, str(code), str(size))

    def send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        """Send one complete response with a Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        """Send a JSON response."""
        self.send(status, json.dumps(payload).encode(), "application/json")

    def not_found(self) -> None:
        """404 for everything the provider does not serve."""
        self.send(404, page("Not found", ""), "text/html; charset=utf-8")

    def query(self) -> dict[str, str]:
        """The query string as a flat dict (first value wins)."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def form(self) -> dict[str, str]:
        """The urlencoded request body as a flat dict."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def origin(self) -> str:
        """``https://<Host header>``: the address the client used to reach us."""
        host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.port}"
        return f"https://{host}"

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        """Route GET requests."""
        path = urlsplit(self.path).path
        routes = {
            "/authorize": self.authorize,
            "/oauth/authorize": self.authorize,
            "/authorize-page": self.authorize_page,
            "/oauth/code/callback": self.code_page,
            "/device": self.device_page,
        }
        routes.get(path, self.not_found)()

    def do_HEAD(self) -> None:
        """HEAD is answered like GET without a body."""
        self.do_GET()

    def do_POST(self) -> None:
        """Route POST requests."""
        path = urlsplit(self.path).path
        routes = {
            "/token": self.token,
            "/api/token": self.token,
            "/oauth/token": self.token,
            "/device/code": self.device_code,
        }
        handler = routes.get(path)
        if handler is None:
            self.form()  # drain the body so the connection stays usable
            self.not_found()
            return
        handler()

    # -- authorization code -----------------------------------------------------------------

    def authorize(self) -> None:
        """Auto-consent: redirect to ``redirect_uri`` with a fresh code (or access_denied).

        ``response_mode=form_post``: instead of the redirect, a page whose form POSTs the same
        parameters to ``redirect_uri`` by itself (a ``noscript`` button without scripts).
        """
        q = self.query()
        redirect_uri, state = q.get("redirect_uri", ""), q.get("state")
        mode = q.get("response_mode", "query")
        bad = not redirect_uri or q.get("response_type", "code") != "code"
        if bad or mode not in ("query", "form_post"):
            self.send(400, page("Bad authorization request", ""), "text/html; charset=utf-8")
            return
        client_id = q.get("client_id", "")
        if client_id == "deny":
            params = {"error": "access_denied"}
        else:
            code = secrets.token_urlsafe(24)
            with self.state.lock:
                issued = IssuedCode(redirect_uri, client_id, q.get("code_challenge"))
                self.state.codes[code] = issued
                line = {
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "state": state,
                }
                if mode != "query":
                    line["response_mode"] = mode
                self.state.append("issued.jsonl", line)
            params = {"code": code}
        if state is not None:
            params["state"] = state
        if mode == "form_post":
            self.form_post(redirect_uri, params)
            return
        sep = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + sep + urlencode(params)
        self.send(302, b"", "text/plain", {"Location": location})

    def form_post(self, redirect_uri: str, params: dict[str, str]) -> None:
        """The form_post answer: hidden fields POSTed to the redirect URI once the page loads."""
        fields = "".join(
            f"<input type='hidden' name='{html.escape(k, quote=True)}' "
            f"value='{html.escape(v, quote=True)}'>"
            for k, v in params.items()
        )
        action = html.escape(redirect_uri, quote=True)
        body = (
            f"<form method='POST' name='hiddenform' action='{action}'>"
            f"{fields}<noscript><p>Script is disabled. Click Submit to continue.</p>"
            "<input type='submit' value='Submit'></noscript></form>"
            "<script>document.forms[0].submit();</script>"
        )
        self.send(200, page("Working...", body), "text/html; charset=utf-8")

    def authorize_page(self) -> None:
        """A consent page that moves on to ``/authorize`` by itself (meta refresh and JS)."""
        target = "/authorize?" + urlsplit(self.path).query
        quoted = html.escape(target, quote=True)
        head = (
            f"<meta http-equiv='refresh' content='0;url={quoted}'>"
            f"<script>window.location.replace({json.dumps(target)});</script>"
        )
        body = f"<p>Authorizing… <a id='continue' href='{quoted}'>Continue</a></p>"
        self.send(200, page("Authorize Hermes", body, head), "text/html; charset=utf-8")

    def code_page(self) -> None:
        """The paste-the-code landing page: shows ``code#state`` for the user to copy."""
        q = self.query()
        if "error" in q:
            text = "Error: " + q["error"]
        else:
            text = q.get("code", "") + "#" + q.get("state", "")
        body = f"<p>Paste this into Hermes:</p><code id='code'>{html.escape(text)}</code>"
        self.send(200, page("Authorization code", body), "text/html; charset=utf-8")

    def token(self) -> None:
        """Exchange a code (or a device code) for tokens."""
        f = self.form()
        grant = f.get("grant_type", "")
        if grant == "authorization_code":
            self.exchange_code(f)
        elif grant == DEVICE_GRANT:
            self.exchange_device(f)
        else:
            self.send_json(400, {"error": "unsupported_grant_type"})

    def exchange_code(self, f: dict[str, str]) -> None:
        """Single-use code exchange; redirect_uri and PKCE verifier must match."""
        code = f.get("code", "")
        with self.state.lock:
            issued = self.state.codes.get(code)
            ok = (
                issued is not None
                and not issued.used
                and issued.redirect_uri == f.get("redirect_uri", "")
                and pkce_matches(issued.code_challenge, f.get("code_verifier"))
            )
            if ok and issued is not None:
                issued.used = True
                self.state.append(
                    "exchanged.jsonl",
                    {
                        "code": code,
                        "redirect_uri": issued.redirect_uri,
                        "client_id": issued.client_id,
                    },
                )
        if ok:
            self.send_json(200, token_payload())
        else:
            self.send_json(400, {"error": "invalid_grant"})

    # -- device code ------------------------------------------------------------------------

    def device_code(self) -> None:
        """Start a device authorization."""
        f = self.form()
        device_code = secrets.token_urlsafe(32)
        user_code = new_user_code()
        with self.state.lock:
            self.state.devices[device_code] = DeviceGrant(
                user_code, f.get("client_id", ""), time.monotonic() + DEVICE_EXPIRES_IN
            )
        base = self.origin()
        self.send_json(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": f"{base}/device",
                "verification_uri_complete": f"{base}/device?{urlencode({'user_code': user_code})}",
                "interval": 1,
                "expires_in": DEVICE_EXPIRES_IN,
            },
        )

    def exchange_device(self, f: dict[str, str]) -> None:
        """Poll: pending until approved, then tokens exactly once."""
        with self.state.lock:
            grant = self.state.devices.get(f.get("device_code", ""))
            if grant is None or grant.exchanged:
                result: tuple[int, dict[str, Any]] = (400, {"error": "invalid_grant"})
            elif time.monotonic() > grant.expires_at:
                result = (400, {"error": "expired_token"})
            elif grant.client_id == "deny":
                result = (400, {"error": "access_denied"})
            elif not grant.approved:
                result = (400, {"error": "authorization_pending"})
            else:
                grant.exchanged = True
                self.state.append(
                    "exchanged.jsonl", {"user_code": grant.user_code, "client_id": grant.client_id}
                )
                result = (200, token_payload())
        self.send_json(*result)

    def device_page(self) -> None:
        """Approve a user code (auto-consent), or show the entry form."""
        user_code = self.query().get("user_code", "").strip().upper()
        if not user_code:
            form = (
                "<form method='get' action='/device'><label>Code "
                "<input name='user_code' autocomplete='off'></label>"
                "<button type='submit'>Continue</button></form>"
            )
            self.send(200, page("Enter your code", form), "text/html; charset=utf-8")
            return
        with self.state.lock:
            grant = next((g for g in self.state.devices.values() if g.user_code == user_code), None)
            if grant is not None:
                grant.approved = True
                self.state.append(
                    "approved.jsonl", {"user_code": user_code, "client_id": grant.client_id}
                )
        if grant is None:
            self.send(404, page("Unknown code", ""), "text/html; charset=utf-8")
        else:
            self.send(
                200,
                page("Device approved", "<p>You can close this tab.</p>"),
                "text/html; charset=utf-8",
            )


class ProviderServer(ThreadingHTTPServer):
    """HTTPS server carrying the provider state; TLS handshakes run in the request threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ProviderState, context: ssl.SSLContext):
        super().__init__(address, Handler)
        self.state = state
        self.context = context
        self.port: int = self.socket.getsockname()[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake in this connection's thread, so a silent client never stalls the others."""
        request.settimeout(30)
        conn = self.context.wrap_socket(request, server_side=True)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Handshake failures and resets are the client's business: log, never print."""
        self.state.log(f"error from {client_address}: {sys.exc_info()[1]!r}")


def main(argv: list[str] | None = None) -> int:
    """Parse options, serve until SIGTERM/SIGINT, close the socket."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)

    args.state_dir.mkdir(parents=True, exist_ok=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.certfile, args.keyfile)
    server = ProviderServer((args.bind, args.port), ProviderState(args.state_dir), context)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    print(f"READY {server.port}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
