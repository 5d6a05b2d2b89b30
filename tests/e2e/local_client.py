#!/usr/bin/env python3
"""A hostile local program beside the browser, used as ``--browser-cmd``.

``local_client.py MODE REPORT URL``: it reads the callback port from the authorize URL's
``redirect_uri``, does what MODE says to that port (what it saw goes to REPORT as JSON), then
lets the bed's Chromium wrapper log in with URL as usual (``TA_BED_JSON``/``TA_BROWSER_DOM``
come from the environment, as for ``chromium-browser``).

Modes:
- ``evil-host``: a callback with its own code and ``Host: evil.example:P`` (a DNS-rebinding
  page's request);
- ``credentials``: a request with the laptop's ``Cookie`` and ``Authorization`` headers, then
  Chromium logs in carrying a cookie another local app set for 127.0.0.1;
- ``idle-flood``: FLOOD connections that never send a byte, held open during the login;
- ``request-flood``: FLOOD complete requests to the callback path (without a code) at once,
  with the ``ssh -W`` processes for the port counted meanwhile;
- ``paste-control``: callbacks whose target a paste prompt must never see typed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil

FLOOD = 200
LAPTOP_SECRET = "laptop-session-of-another-local-app"
DEADLINE = 60.0  # one hostile exchange; the listener answers or closes long before


def callback_of(url: str) -> tuple[int, str]:
    """The port and path of the authorize URL's redirect_uri."""
    redirect = urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0])
    assert redirect.port is not None
    return redirect.port, redirect.path or "/"


def exchange(port: int, raw: bytes) -> str:
    """Send raw bytes to 127.0.0.1:port; the answer's status line ("closed" if none came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
        conn.sendall(raw)
        data = b""
        with contextlib.suppress(ConnectionError):
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed"


def get(port: int, target: str, *headers: str, host: str = "127.0.0.1") -> bytes:
    """A GET head for ``target`` with ``Host: host:port`` and ``headers``."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Replace the report file in one step."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(report))
    tmp.replace(path)


def evil_host(port: int, path: str, report: dict[str, Any]) -> str | None:
    """A rebinding page's request: its own code, its own host name."""
    target = f"{path}?code=attacker&state=attacker"
    report["evil"] = exchange(port, get(port, target, host="evil.example"))
    return None


def paste_control(port: int, path: str, report: dict[str, Any]) -> str | None:
    """Targets that must never be typed into the remote's paste prompt."""
    report["control"] = exchange(port, get(port, f"{path}?code=x\rLINE\x03"))
    report["brace"] = exchange(port, get(port, f"{path}?code={{x}}&state=y"))
    return None


def credentials(port: int, path: str, report: dict[str, Any], url: str) -> str | None:
    """Laptop credentials on a request; then Chromium with a cookie for 127.0.0.1."""
    report["raw"] = exchange(
        port,
        get(
            port,
            path,
            f"Cookie: laptop_app={LAPTOP_SECRET}",
            f"Authorization: Bearer {LAPTOP_SECRET}",
        ),
    )
    seen: list[str] = []

    class Seed(BaseHTTPRequestHandler):
        """Another local app: sets its cookie for 127.0.0.1, then sends the browser on."""

        def do_GET(self) -> None:
            self.send_response(302)
            if self.path == "/seed":
                self.send_header("Set-Cookie", f"laptop_app={LAPTOP_SECRET}; Path=/")
                self.send_header("Location", "/check")
            else:
                seen.append(self.headers.get("Cookie", ""))
                self.send_header("Location", url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Seed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    report["seed_cookie_seen"] = seen
    return f"http://127.0.0.1:{server.server_address[1]}/seed"


def idle_flood(port: int, path: str, report: dict[str, Any]) -> Callable[[], None]:
    """Open FLOOD connections that send nothing; the returned function counts and closes them."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(FLOOD)]

    def finish() -> None:
        closed = 0
        for conn in conns:
            conn.setblocking(False)
            try:
                closed += conn.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionError:
                closed += 1
            conn.close()
        report["idle_closed_by_listener"] = closed

    return finish


def ssh_w_processes(port: int) -> int:
    """How many ``ssh -W 127.0.0.1:port`` processes exist right now."""
    count = 0
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "-W" in argv and f"127.0.0.1:{port}" in argv:
            count += 1
    return count


def request_flood(port: int, path: str, report: dict[str, Any]) -> str | None:
    """FLOOD complete requests at once; the most ``ssh -W`` processes seen meanwhile."""
    stop = threading.Event()
    most = 0

    def sample() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, ssh_w_processes(port))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answers: list[str] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        try:
            status = exchange(port, get(port, f"{path}?flood={n}"))
        except OSError as exc:
            status = f"error {type(exc).__name__}"
        with lock:
            answers.append(status.split(" ", 2)[1] if status.startswith("HTTP/") else status)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(FLOOD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    stop.set()
    sampler.join()
    report["flood_answers"] = dict(Counter(answers))
    report["most_ssh_w"] = most
    return None


def main(argv: list[str]) -> int:
    mode, report_path, url = argv
    port, path = callback_of(url)
    report: dict[str, Any] = {"mode": mode, "port": port}
    finish: Callable[[], None] | None = None
    open_url = url
    if mode == "evil-host":
        evil_host(port, path, report)
    elif mode == "paste-control":
        paste_control(port, path, report)
    elif mode == "credentials":
        open_url = credentials(port, path, report, url) or url
    elif mode == "idle-flood":
        finish = idle_flood(port, path, report)
    elif mode == "request-flood":
        request_flood(port, path, report)
    else:
        raise SystemExit(f"unknown mode {mode}")
    write_report(Path(report_path), report)
    # The bed's wrapper, loaded as chromium-browser loads it (tests.bed is no package here).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bed"))
    from chromium import main as chromium_main

    try:
        return int(chromium_main([open_url]))
    finally:
        if finish is not None:
            finish()
        write_report(Path(report_path), report)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
