"""A stand-in browser for the benchmark: stamps when it was invoked, then follows the login.

``browser.py STAMP_JSON IDP_IP CA_FILE URL``: the first statement records ``time.time()``; the
script then GETs the URL and follows redirects (https to ``idp.test`` goes to IDP_IP with that
SNI and Host, verified with the bed's CA; http only to loopback) and writes what happened to
STAMP_JSON. Stdlib only, meant to run as ``python3 -S -I``, so that the time to the browser is
not the time a real browser takes to start.
"""

from __future__ import annotations

import time

INVOKED = time.time()

import http.client  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urljoin, urlsplit  # noqa: E402

IDP_NAME = "idp.test"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_HOPS = 10
TIMEOUT = 20.0


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``idp.test`` at a fixed address (the bed has no resolver for the name)."""

    def __init__(self, address: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(IDP_NAME, port, timeout=TIMEOUT, context=context)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        """Connect to the pinned address; SNI and certificate check use ``idp.test``."""
        raw = socket.create_connection((self.address, self.port or 443), TIMEOUT)
        self.sock = self.tls.wrap_socket(raw, server_hostname=IDP_NAME)


def fetch(url: str, idp_ip: str, context: ssl.SSLContext) -> tuple[int, str | None]:
    """One GET; returns (status, Location header)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https" and host == IDP_NAME:
        conn = PinnedHTTPSConnection(idp_ip, parts.port or 443, context)
    elif parts.scheme == "http" and host in LOOPBACK:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=TIMEOUT)
    else:
        raise ValueError(f"the bench browser does not leave the bed: {url[:80]!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    """Follow the URL's redirects and write the stamp file."""
    stamp_path, idp_ip, ca_file, url = argv
    record: dict[str, Any] = {"t_invoked": INVOKED, "steps": [], "error": None, "status": None}
    try:
        context = ssl.create_default_context(cafile=ca_file)
        for _ in range(MAX_HOPS):
            status, location = fetch(url, idp_ip, context)
            record["steps"].append([urlsplit(url).netloc, status, time.time()])
            record["status"] = status
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            url = urljoin(url, location)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["t_done"] = time.time()
    with open(stamp_path, "w", encoding="utf-8") as out:
        json.dump(record, out)
    return 0 if record["error"] is None and record["status"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
