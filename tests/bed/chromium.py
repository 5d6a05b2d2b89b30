"""Headless Chromium for the bed: fixed flags that keep it on this machine, a hard deadline.

Used directly by tests (``run_chromium``) and by the ``chromium-browser`` wrapper that
tunnelauth starts through ``--browser-cmd``. This module imports nothing from the bed
so that the wrapper can load it with a plain ``sys.path`` entry.

With ``TA_BROWSER_EAGER_ICONS=1`` the wrapper first asks each loopback origin involved (the
URL's own, and its ``redirect_uri``'s) for the icons a desktop browser fetches by itself
(``/favicon.ico``, ``/apple-touch-icon.png``), before Chromium loads the page: the harshest
timing for a remote listener that answers only once. The statuses go to
``$TA_BROWSER_DOM.icons`` as ``URL STATUS`` lines (``-`` when nothing answered).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, urlsplit

CHROMIUM = "/usr/bin/chromium"
DEFAULT_TIMEOUT = 30.0
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def resolver_rules(idp_ip: str) -> str:
    """Map idp.test to the bed, every other name to NOTFOUND, loopback untouched."""
    return (
        f"MAP idp.test {idp_ip} , MAP * ~NOTFOUND , "
        "EXCLUDE 127.0.0.1, EXCLUDE localhost, EXCLUDE ::1"
    )


def chromium_argv(
    url: str, *, idp_ip: str, profile_dir: Path | str, settle_ms: int = 0
) -> list[str]:
    """The full Chromium command line for dumping one URL's DOM.

    ``settle_ms`` > 0 lets the page's scripts run on (``--virtual-time-budget``) before the
    DOM is dumped: a navigation they start (a form_post page submitting its form on load) is
    followed to its answer, however long that answer takes. Without it, ``--dump-dom`` dumps
    the first page once it has loaded.
    """
    settle = [f"--virtual-time-budget={settle_ms}"] if settle_ms > 0 else []
    return [
        CHROMIUM,
        *BASE_FLAGS,
        f"--host-resolver-rules={resolver_rules(idp_ip)}",
        "--ignore-certificate-errors",
        f"--user-data-dir={profile_dir}",
        *settle,
        "--dump-dom",
        url,
    ]


@dataclass(frozen=True)
class BrowserResult:
    """What one headless Chromium run produced."""

    returncode: int
    dom: str
    stderr: str
    elapsed: float
    timed_out: bool


def _prctl(option: int, value: int) -> bool:
    """Call prctl(2); True if it worked (failure only loses a nicety)."""
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _child_setup() -> None:
    """In the Chromium child: die with the wrapper."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in process group ``pgid``."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _reap_children() -> bool:
    """Collect exited children (orphans come to us as subreaper); True when none are left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def _kill_group(pgid: int, *, reap_all: bool, timeout: float = 5.0) -> None:
    """SIGKILL a process group and wait (deadline) until none of it runs.

    With ``reap_all`` (only in the wrapper, a subreaper with no other children) dead
    grandchildren are handed to us one by one as their parents exit: keep reaping until
    we have no children at all, so none is left as a zombie for init.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while time.monotonic() < deadline:
        if not _group_alive(pgid) and (not reap_all or _reap_children()):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def run_chromium(
    url: str,
    *,
    idp_ip: str,
    workdir: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    reap_all: bool = False,
    settle_ms: int = 0,
) -> BrowserResult:
    """Dump ``url``'s DOM with a fresh profile; kill the whole group at the deadline."""
    start = time.monotonic()
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
    proc: subprocess.Popen[str] | None = None
    try:
        proc = subprocess.Popen(
            chromium_argv(url, idp_ip=idp_ip, profile_dir=profile, settle_ms=settle_ms),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid, reap_all=reap_all)
            out, err = proc.communicate()
        return BrowserResult(proc.returncode, out, err, time.monotonic() - start, timed_out)
    finally:
        if proc is not None:
            _kill_group(proc.pid, reap_all=reap_all)
        shutil.rmtree(profile, ignore_errors=True)


def bed_browser_settings(env: dict[str, str] | os._Environ[str]) -> tuple[str, str | None]:
    """The idp IP and profile workdir, from TA_BED_IDP_IP or the bed's JSON (TA_BED_JSON)."""
    workdir = env.get("TA_BROWSER_WORKDIR")
    if env.get("TA_BED_JSON"):
        info = json.loads(Path(env["TA_BED_JSON"]).read_text())
        workdir = workdir or info.get("browser_workdir")
        return env.get("TA_BED_IDP_IP") or info["idp_ip"], workdir
    if env.get("TA_BED_IDP_IP"):
        return env["TA_BED_IDP_IP"], workdir
    raise SystemExit("chromium-browser: set TA_BED_JSON or TA_BED_IDP_IP")


def _write_atomically(path: Path, text: str) -> None:
    """Write a file so that a reader never sees it half-written."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    tmp.replace(path)


EAGER_ICONS = ("/favicon.ico", "/apple-touch-icon.png")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ICON_DEADLINE = 10.0


def icon_origins(url: str) -> list[tuple[str, int, str]]:
    """(host, port, Host header) of the loopback origins a page load involves."""
    urls = [url, *parse_qs(urlsplit(url).query).get("redirect_uri", [])[:1]]
    origins = []
    for each in urls:
        parts = urlsplit(each)
        if parts.scheme == "http" and parts.hostname in LOOPBACK and parts.port:
            origin = (parts.hostname, parts.port, parts.netloc)
            if origin not in origins:
                origins.append(origin)
    return origins


def fetch_icons(url: str) -> list[str]:
    """Request the icons of each loopback origin (``URL STATUS`` lines, ``-``: no answer)."""
    lines = []
    for host, port, authority in icon_origins(url):
        for path in EAGER_ICONS:
            status = "-"
            conn = http.client.HTTPConnection(host, port, timeout=ICON_DEADLINE)
            try:
                conn.request("GET", path, headers={"Host": authority, "Accept": "image/*"})
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            lines.append(f"http://{authority}{path} {status}")
    return lines


def main(argv: Sequence[str]) -> int:
    """Wrapper entry point: ``chromium-browser URL`` → DOM into $TA_BROWSER_DOM (or stdout)."""
    if len(argv) != 1:
        print("usage: chromium-browser URL", file=sys.stderr)
        return 2
    idp_ip, workdir = bed_browser_settings(os.environ)
    timeout = float(os.environ.get("TA_BROWSER_TIMEOUT", DEFAULT_TIMEOUT))
    settle_ms = int(os.environ.get("TA_BROWSER_SETTLE_MS", "0"))
    subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    dom_file = os.environ.get("TA_BROWSER_DOM")
    if os.environ.get("TA_BROWSER_EAGER_ICONS") == "1":
        icons = fetch_icons(argv[0])
        if dom_file:
            _write_atomically(Path(dom_file + ".icons"), "".join(f"{x}\n" for x in icons))
    result = run_chromium(
        argv[0],
        idp_ip=idp_ip,
        workdir=workdir,
        timeout=timeout,
        reap_all=subreaper,
        settle_ms=settle_ms,
    )
    if dom_file:
        _write_atomically(Path(dom_file + ".log"), result.stderr)
        _write_atomically(Path(dom_file), result.dom)
    else:
        sys.stdout.write(result.dom)
    if result.timed_out:
        print(f"chromium-browser: no DOM within {timeout}s", file=sys.stderr)
        return 124
    return result.returncode if result.returncode >= 0 else 128 - result.returncode
