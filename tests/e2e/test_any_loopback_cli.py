"""``tunnelauth run HOST -- CMD`` with the kinds of loopback client seen in the wild.

Each kind is the fake ``loopback-cli`` in one of its modes (tests/fakes/README.md), run end to
end through the bed with real Chromium, on every backend, over a direct channel (``remote``)
and through the relay where the server refuses forwarding (``remote-nofwd``):

* ``rclone``: the link to open is the CLI's own loopback page (``/auth?state=…``), which
  redirects to the provider; the callback comes back to ``/``. ``rclone-custom`` first prints
  the redirect URL it expects (``http://127.0.0.1:P/``), as rclone does with its own client.
* ``refine``: ``Listening on http://127.0.0.1:P`` first, then a redirect URI naming
  ``localhost`` and ``/oauth/callback``: the later line refines the first.
* ``root``: Google's ``run_local_server``: the callback on ``/`` of ``localhost``, and the
  remote answers exactly one request.
* ``ipv6``: the CLI listens on ``[::1]`` only and its redirect URI names ``[::1]``.

The browser wrapper asks every loopback origin for its icons before Chromium loads the page
(``TA_BROWSER_EAGER_ICONS``): they must be answered on the laptop and never reach the CLI.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import Result, tunnelauth
from tunnelauth.status import ExitStatus

# (remote command after `loopback-cli`, the paths the CLI must see, its success text)
KINDS: dict[str, tuple[list[str], list[str], str]] = {
    "rclone": (["--rclone"], ["/auth", "/"], "NOTICE: Got code"),
    "rclone-custom": (["--rclone", "--client-id", "my-rclone"], ["/auth", "/"], "Got code"),
    "refine": (["--callback", "refine"], ["/oauth/callback"], "Login successful!"),
    "root": (["--callback", "root"], ["/"], "Login successful!"),
    "ipv6": (["--callback", "ipv6"], ["/callback"], "Login successful!"),
}
# The Host header the CLI sees: the name the redirect URI (or the link) gives the browser.
HOSTS = {
    "rclone": "127.0.0.1",
    "rclone-custom": "127.0.0.1",
    "refine": "localhost",
    "root": "localhost",
    "ipv6": "[::1]",
}


def free_port() -> int:
    """A port free on this machine's 127.0.0.1 and ::1 (the laptop end binds it)."""
    for _ in range(50):
        with socket.socket() as v4:
            v4.bind(("127.0.0.1", 0))
            port = int(v4.getsockname()[1])
        with socket.socket(socket.AF_INET6) as v6:
            try:
                v6.bind(("::1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def run_kind(bed: Bed, tmp: Path, host: str, backend: str, args: list[str]) -> Result:
    """Run ``loopback-cli ARGS`` on ``host`` through tunnelauth with the eager-icon browser."""
    dom = tmp / "dom.html"
    browser = bed.browser_cmd(dom).replace("env ", "env TA_BROWSER_EAGER_ICONS=1 ", 1)
    command = ["--browser-cmd", browser, "-v", "run", host, "--timeout", "60", "--"]
    return tunnelauth(
        bed, *command, "loopback-cli", *args, tmp=tmp, backend=backend, browser=False, deadline=90
    )


@pytest.mark.parametrize("host", ["remote", "remote-nofwd"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_loopback_cli_kind_logs_in(
    fresh: Bed, tmp_path: Path, backend: str, host: str, kind: str
) -> None:
    args, paths, success = KINDS[kind]
    port = free_port()
    result = run_kind(fresh, tmp_path, host, backend, [*args, "--port", str(port)])
    assert result.code == ExitStatus.OK, result
    assert success in result.stderr, result
    issued = fresh.provider_issued()
    record = fresh.fake_record("loopback-cli")
    assert record is not None and issued, result
    assert record["code"] == issued[-1]["code"], record
    assert record["port"] == port
    # Only the login's own pages reached the CLI: never an icon the browser asked for.
    assert record["requests"] == paths, record
    assert record["hosts"] == [f"{HOSTS[kind]}:{port}"] * len(paths), record
    if HOSTS[kind] == "localhost":
        # The redirect URI names localhost: the laptop listens on both families.
        assert re.search(rf"bound .*\[::1\]:{port}\b", result.stderr), result
    icons = (tmp_path / "dom.html.icons").read_text().splitlines()
    assert icons and all(line.endswith(" 404") for line in icons), icons
    if host == "remote-nofwd":
        assert "relaying the callback" in result.stderr, result
    else:
        assert "over a direct SSH channel" in result.stderr, result


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")
def test_refine_to_an_address_taken_here_exits_clearly(fresh: Bed, tmp_path: Path) -> None:
    """Another program holds [::1]:P here: a browser sent to localhost:P could reach it."""
    port = free_port()
    with socket.socket(socket.AF_INET6) as other:
        other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        other.bind(("::1", port))
        other.listen()
        result = run_kind(
            fresh, tmp_path, "remote", "openssh", ["--callback", "refine", "--port", str(port)]
        )
    assert result.code == ExitStatus.PORT_UNAVAILABLE, result
    assert f"port {port} is already in use on [::1]:{port}" in result.stderr, result
    assert result.dom == "", "the browser was never sent"
    record = fresh.fake_record("loopback-cli")
    assert record is None or record["requests"] == [], record
