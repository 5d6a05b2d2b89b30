"""``tunnelauth demo``: the real flow against the in-process simulated host, end to end.

The CLI runs as a subprocess with a fresh HOME (holding an ssh config that would break any
connection that read it), a fake agent socket that must stay unused, its own TMPDIR and a PATH
with no ssh binaries at all. A small wrapper makes itself the child subreaper, so anything the
demo leaves running (even re-parented) is found.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.installed import Installed
from tunnelauth.demo.provider import DemoProvider
from tunnelauth.demo.run import DEMO_HOST, write_ssh_files
from tunnelauth.demo.server import DEMO_ARGV, DemoServer, free_port
from tunnelauth.environment import Environment
from tunnelauth.remote import remote_command
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.asyncssh_transport import AsyncSSHTransport

RUN_DEADLINE = 120.0  # the demo itself takes about a second
DEADLINE = 20.0
_PORTS = re.compile(
    r"SSH on 127\.0\.0\.1:(\d+), callback port (\d+); demo provider on 127\.0\.0\.1:(\d+)"
)

# Runs the demo, then reports what is still alive below it (PR_SET_CHILD_SUBREAPER = 36 makes
# orphans of the demo our children instead of init's) and ends it.
_WRAPPER = r"""
import ctypes, json, subprocess, sys
import psutil
try:
    reaper = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
except (OSError, AttributeError):
    reaper = False
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True, timeout=110)
left = psutil.Process().children(recursive=True)
names = [f"{p.pid} {p.name()}" for p in left]
for p in left:
    p.kill()
psutil.wait_procs(left, timeout=10)
json.dump({"rc": done.returncode, "stdout": done.stdout.decode(errors="replace"),
           "stderr": done.stderr.decode(errors="replace"), "left": names,
           "reaper": reaper}, sys.stdout)
"""


class Bed:
    """A private HOME, TMPDIR and agent socket for one demo run."""

    def __init__(self, root: Path) -> None:
        root.chmod(0o755)  # another user (nobody) must be able to reach the files below
        self.home = root / "home"
        self.tmp = root / "tmp"
        for path in (self.home / ".ssh", self.tmp):
            path.mkdir(parents=True)
        # Read by mistake, this would send the connection to a documentation address.
        (self.home / ".ssh" / "config").write_text(
            f"Host {DEMO_HOST} 127.0.0.1\n  HostName 192.0.2.1\n  Port 1\n"
        )
        self.agent_path = root / "agent.sock"
        self.agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.agent.bind(str(self.agent_path))
        self.agent.listen(8)
        self.agent.setblocking(False)
        for path in (root, self.home, self.home / ".ssh", self.tmp):
            path.chmod(0o777)

    def env(self, python: str = sys.executable, **extra: str) -> dict[str, str]:
        """An environment with nothing of the user's in it, and no ssh on PATH."""
        env = {
            "PATH": os.path.dirname(python),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "CI": "1",
            "TUNNELAUTH_CONFIG": os.devnull,
            "SSH_AUTH_SOCK": str(self.agent_path),
            "LANG": "C.UTF-8",
        }
        env.update(extra)
        return env

    def agent_was_used(self) -> bool:
        """Whether anything connected to the fake agent."""
        try:
            conn, _ = self.agent.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def leftover_dirs(self) -> list[str]:
        """tunnelauth temp dirs left in the run's TMPDIR."""
        return [name for name in os.listdir(self.tmp) if name.startswith("tunnelauth-")]

    def close(self) -> None:
        self.agent.close()


@pytest.fixture
def bed(tmp_path: Path) -> Any:
    bed = Bed(tmp_path)
    yield bed
    bed.close()


def run_demo(
    bed: Bed,
    args: list[str],
    prefix: Sequence[str] = (),
    python: str = sys.executable,
    **env: str,
) -> dict[str, Any]:
    """Run ``tunnelauth demo ARGS`` under the reaping wrapper; its result as a dict."""
    argv = [*prefix, python, "-c", _WRAPPER, python, "-m", "tunnelauth", "demo"]
    done = subprocess.run(
        [*argv, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=bed.env(python, **env),
        cwd=bed.home,
        timeout=RUN_DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_clean(bed: Bed, result: dict[str, Any]) -> None:
    """Nothing left running, listening, or on disk, and the agent never asked."""
    stderr = result["stderr"]
    assert result["left"] == [], f"left running: {result['left']}"
    assert bed.leftover_dirs() == []
    assert not bed.agent_was_used(), "the demo talked to the user's agent"
    ports = _PORTS.search(stderr)
    assert ports is not None, stderr
    for port in map(int, ports.groups()):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    # The one-time code never appears; the listener shows it redacted.
    assert not re.search(r"code=[A-Za-z0-9_-]{8,}", stderr), stderr


def assert_completed(result: dict[str, Any]) -> None:
    stderr = result["stderr"]
    assert result["rc"] == 0, stderr
    for expected in (
        "[connecting] tunnelauth-demo",
        "[running] hermes auth demo login --no-browser",
        "[listening] 127.0.0.1:",
        "Demo login successful!",
        "built-in browser: GET",
        "(Demo login complete)",
        "logged in",
        "tunnelauth spotify user@host",
    ):
        assert expected in stderr, f"{expected!r} missing from:\n{stderr}"


def test_demo_completes_by_itself_and_leaves_nothing(bed: Bed) -> None:
    result = run_demo(bed, ["--no-browser", "-v"])
    assert_completed(result)
    stderr = result["stderr"]
    assert "backend asyncssh" in stderr
    # Every message says what happened: no real browser opened, and the start page carried to
    # the remote is not the callback.
    assert "the demo's built-in browser opens the login page on 127.0.0.1" in stderr
    assert "in the browser" not in stderr
    lines = stderr.splitlines()
    start = next(
        i for i, ln in enumerate(lines) if "carried the browser's request for /login" in ln
    )
    (reached,) = [i for i, ln in enumerate(lines) if "the callback reached the remote" in ln]
    assert start < reached
    assert "/callback" in " ".join(lines[start:reached])
    assert_clean(bed, result)


def _unprivileged_prefix(bed: Bed, python: str) -> list[str]:
    """A command prefix that runs as ``nobody``; fails saying why when there is none."""
    for tool, prefix in (
        ("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]),
        ("runuser", ["-u", "nobody", "--"]),
    ):
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if path is None:
            continue
        probe = subprocess.run(
            [path, *prefix, python, "-c", "import tunnelauth, asyncssh, psutil"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=bed.env(python),
            cwd=bed.home,
            timeout=DEADLINE * 3,
            check=False,
        )
        assert probe.returncode == 0, f"nobody cannot run {python}: {probe.stderr!r}"
        return [path, *prefix]
    pytest.fail("neither setpriv nor runuser is available to drop root")


@pytest.fixture
def open_bed() -> Any:
    """A bed in a directory ``nobody`` can reach (pytest's own temp root is private)."""
    root = Path(tempfile.mkdtemp(prefix="demotest-", dir="/tmp"))
    bed = Bed(root)
    yield bed
    bed.close()
    shutil.rmtree(root, ignore_errors=True)


def test_demo_runs_unprivileged(open_bed: Bed, installed: Installed) -> None:
    # As root the run above was privileged: run the installed wheel as nobody too.
    if os.geteuid() != 0:
        pytest.skip("not root: the run above already was unprivileged")
    python = str(installed.venv_python)
    prefix = _unprivileged_prefix(open_bed, python)
    # A ~/.ssh the user cannot read (as after sudo without -H): ssh skips it, so must we.
    (open_bed.home / ".ssh").chmod(0o700)
    result = run_demo(open_bed, ["--no-browser", "-v"], prefix, python)
    assert_completed(result)
    assert_clean(open_bed, result)


def test_demo_failure_exits_6_and_shows_it(bed: Bed) -> None:
    # No DISPLAY and no --no-browser: the built-in browser must step in by itself.
    result = run_demo(bed, ["-v"], TUNNELAUTH_DEMO_FAIL="1")
    stderr = result["stderr"]
    assert result["rc"] == 6, stderr
    assert "Demo authorization failed" in stderr
    assert "the remote login failed" in stderr
    assert "built-in browser: GET" in stderr
    assert_clean(bed, result)


# -- the simulated remote on its own, through the real asyncssh transport -------------------


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, RUN_DEADLINE))


async def _read_until(process: Any, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(process.read(), DEADLINE)
        if not chunk:
            break
        data += chunk
    return data


def test_simulated_remote_ctrl_c_and_refused_ports(tmp_path: Path) -> None:
    async def scenario() -> None:
        import asyncssh

        provider = await DemoProvider.start()
        port = free_port()
        server = DemoServer(
            host_key=asyncssh.generate_private_key("ssh-ed25519"),
            client_key=asyncssh.generate_private_key("ssh-ed25519"),
            callback_port=port,
            authorize_url=lambda uri, state, challenge: provider.authorize_url(
                redirect_uri=uri, state=state, challenge=challenge
            ),
            redeem=provider.redeem,
            fail=False,
        )
        await server.start()
        files = write_ssh_files(tmp_path, server.port, server.host_key, server.client_key)
        transport = AsyncSSHTransport(SSHTarget(DEMO_HOST, ssh_config=files.config), batch=True)
        try:
            await transport.connect(env=Environment())
            # Before the login runs, the remote's port P has no listener: refused like sshd.
            early = await transport.open_channel("127.0.0.1", port)
            assert await early.refusal() == "connect failed: Connection refused"
            process = await transport.start(remote_command(DEMO_ARGV[0], DEMO_ARGV[1:]))
            shown = await _read_until(process, b"Waiting for the callback")
            assert b"\r\n" in shown and f"127.0.0.1:{port}/login".encode() in shown
            other = await transport.open_channel("127.0.0.1", provider.port)
            assert await other.refusal() == "connect failed: Connection refused"
            process.interrupt()
            rest = await _read_until(process, b"Login cancelled.")
            assert b"Login cancelled." in rest
            assert await asyncio.wait_for(process.wait(), DEADLINE) == 130
            await process.close()
            assert server.outcomes == ["cancelled"]
        finally:
            await transport.close()
            await server.close()
            await provider.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE).close()

    run(scenario())


def test_simulated_remote_accepts_only_its_keys(tmp_path: Path) -> None:
    async def scenario() -> None:
        import asyncssh

        from tunnelauth.errors import HostKeyError, SSHError

        provider = await DemoProvider.start()
        server = DemoServer(
            host_key=asyncssh.generate_private_key("ssh-ed25519"),
            client_key=asyncssh.generate_private_key("ssh-ed25519"),
            callback_port=free_port(),
            authorize_url=lambda uri, state, challenge: "",
            redeem=provider.redeem,
            fail=False,
        )
        await server.start()
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        try:
            for name, host_key, client_key, error in (
                ("other-client", server.host_key, stranger, SSHError),
                ("other-host", stranger, server.client_key, HostKeyError),
            ):
                directory = tmp_path / name
                directory.mkdir()
                files = write_ssh_files(directory, server.port, host_key, client_key)
                target = SSHTarget(DEMO_HOST, ssh_config=files.config)
                transport = AsyncSSHTransport(target, batch=True, connect_timeout=DEADLINE)
                with pytest.raises(error) as caught:
                    await transport.connect(env=Environment())
                assert type(caught.value) is error, caught.value  # HostKeyError is an SSHError
                await transport.close()
        finally:
            await server.close()
            await provider.close()

    run(scenario())


# -- a system browser that never arrives -----------------------------------------------------

ARRIVAL_DEADLINE = 90.0  # the demo's own arrival check is 10 s; this is the test's limit


def _browser_script(bed: Bed, body: str) -> str:
    script = bed.home / "fake-browser"
    script.write_text(f"#!{sys.executable}\nimport sys, urllib.request\n{body}\n")
    script.chmod(0o755)
    return str(script)


def _demo_until(bed: Bed, browser: str, wanted: str) -> tuple[int, str]:
    """Run the demo with a DISPLAY and BROWSER; once ``wanted`` is shown, end it with SIGTERM."""
    env = bed.env(DISPLAY=":99", BROWSER=browser)
    argv = [sys.executable, "-m", "tunnelauth", "demo", "-v"]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=bed.home,
    )
    assert proc.stderr is not None
    shown: list[str] = []
    # Read on to the end through the same buffered reader: communicate() would read the pipe
    # itself and lose what the reader already holds (the lines right after ``wanted``).
    stopper: threading.Timer | None = None
    try:
        for raw in proc.stderr:
            shown.append(raw.decode(errors="replace"))
            if stopper is None and wanted in shown[-1]:
                proc.send_signal(signal.SIGTERM)
                stopper = threading.Timer(ARRIVAL_DEADLINE, proc.kill)
                stopper.start()
        proc.wait()
    finally:
        if stopper is not None:
            stopper.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(shown)


def test_a_browser_that_never_comes_gets_the_url_printed(bed: Bed) -> None:
    # xdg-open succeeded, but nothing ever fetched the page (a stale DISPLAY, say).
    browser = _browser_script(bed, "sys.exit(0)")
    code, stderr = _demo_until(bed, browser, "open this page in a browser")
    assert "no browser has opened the login page after 10 s" in stderr, stderr
    lines = stderr.splitlines()
    at = next(i for i, ln in enumerate(lines) if "open this page in a browser" in ln)
    assert lines[at + 1].startswith("http://127.0.0.1:") and "/login?state=" in lines[at + 1], (
        stderr
    )
    assert code == 130, stderr
    assert bed.leftover_dirs() == []


def test_a_browser_that_fetches_the_page_is_seen_arriving(bed: Bed) -> None:
    # The browser is handed a local redirect first; following it means the browser came.
    browser = _browser_script(bed, "urllib.request.urlopen(sys.argv[1], timeout=30).read()")
    code, stderr = _demo_until(bed, browser, "the browser has fetched the login page")
    assert "the browser has fetched the login page" in stderr, stderr
    assert "no browser has opened" not in stderr
    assert code == 130, stderr
