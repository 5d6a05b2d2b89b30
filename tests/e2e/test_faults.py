"""Fault injection on the bed: each fault's exit code and message, and nothing left behind.

For every transport: the SSH link dies mid-flow, the remote crashes, the binary is missing, the
connection or the whole login times out, the remote prints success then exits 1 (or exits 0
without its success line), the remote's callback port is taken. After each, the laptop
(``no_leftovers``: processes, listeners, sockets, temp dirs, port locks) and the remote
namespace (the user's processes, listeners) are clean.
Then the laptop port lock: a second run for the same port waits, fails with ``--no-wait`` or
reaps a stale run with ``--reap``; runs on different ports go on in parallel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.bed import leftovers
from tests.bed.netbed import Bed
from tests.e2e.helpers import RUN_DEADLINE, Result, remote_port_held, tunnelauth
from tunnelauth.portlock import PortLock, lock_dir
from tunnelauth.status import ExitStatus

SPOTIFY_PORT = 43827
WAIT_DEADLINE = 60.0  # for a line, a file or a process: only stops a hang


def _locks() -> Path:
    """Where the runs this test starts keep their port locks: they inherit its environment."""
    return lock_dir(os.environ)


def _remote_listeners(bed: Bed) -> list[str]:
    """TCP listeners in the remote namespace other than its sshds."""
    out = subprocess.run(
        bed.netns_argv("remote", ["ss", "-Hltnp"]),
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip() and '"sshd' not in line]


@pytest.fixture
def fresh(fresh: Bed) -> Iterator[Bed]:
    """The shared clean bed; afterwards no listener or port lock of the login may remain."""
    yield fresh
    assert _remote_listeners(fresh) == [], "a listener survived on the remote"
    # Another engineer's concurrent run may hold the port's lock: only a dead owner's counts.
    assert leftovers.stale_locks(_locks(), {}) == set(), "a port lock was left"


class Background:
    """A tunnelauth run in the background whose stderr is collected line by line."""

    def __init__(self, bed: Bed, tmp: Path, *args: str) -> None:
        env = {
            **os.environ,
            "TUNNELAUTH_CONFIG": os.devnull,
            "CI": "1",
            "COLUMNS": "200",
        }
        env.pop("TUNNELAUTH_HOST", None)
        argv = [sys.executable, "-m", "tunnelauth", "-F", str(bed.ssh_config), *args]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("")  # end of output
            self.changed.notify_all()

    def expect(self, text: str, deadline: float = WAIT_DEADLINE) -> None:
        """Wait until a stderr line contains ``text``."""
        with self.changed:
            ok = self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or "" in self.lines, deadline
            )
        assert ok and any(text in line for line in self.lines), f"no {text!r} in {self.text}"

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def finish(self, deadline: float = RUN_DEADLINE) -> int:
        """Wait for the run to end (SIGTERM, as a user would, if it hangs) and reap it."""
        try:
            code = self.proc.wait(deadline)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            code = self.proc.wait(30)
        self._reader.join(30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def _wait_for(predicate: object, what: str, deadline: float = WAIT_DEADLINE) -> None:
    """Poll ``predicate`` until true (files and process tables have no wake-up to wait on)."""
    assert callable(predicate)
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.1)


# -- faults, for every transport ------------------------------------------------------------


def test_link_death_is_noticed_by_keepalive_and_the_remote_ends_by_itself(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    # hermes' own timeout outlasts the keepalive window (3 x 5 s), tunnelauth's is far longer.
    fresh.set_fake(mode="timeout", timeout=30)
    run = Background(fresh, tmp_path, "spotify", "remote", "--backend", backend, "--no-browser")
    link = ["ip", "-n", fresh.netns["bastion"], "link", "set", "eth1"]
    try:
        run.expect("open this page in a browser")
        record = fresh.fake_record("spotify")
        assert record is not None and record["outcome"] == "running"
        subprocess.run([*link, "down"], check=True, timeout=20)
        code = run.finish()
        assert code == ExitStatus.SSH_FAILED, run.text
        assert "connection lost" in run.text
        assert "own timeout" in run.text
        # Left to its own timeout: it must end by timing out, never by a signal from us.
        _wait_for(
            lambda: (fresh.fake_record("spotify") or {}).get("outcome") != "running",
            "the remote login to end by its own timeout",
        )
        record = fresh.fake_record("spotify")
        # 0.19.0 lets the timeout's AuthError escape (outcome "crash", exit 1); a signal
        # would have given cancelled / hangup / terminated.
        assert record is not None and record["outcome"] in ("failed", "crash"), record
        assert record["exit_code"] == 1, record
    finally:
        subprocess.run([*link, "up"], check=True, timeout=20)
        run.finish()


@pytest.mark.parametrize(
    ("fault", "expected", "shown"),
    [
        ("crash", ExitStatus.LOGIN_FAILED, "ConnectionResetError"),
        ("success_exit1", ExitStatus.LOGIN_FAILED, "exited with status 1 after printing its"),
        ("no_success_line", ExitStatus.LOGIN_FAILED, "exited 0 but never printed its success"),
        ("missing", ExitStatus.COMMAND_NOT_FOUND, "--hermes PATH"),
        ("overall_timeout", ExitStatus.TIMED_OUT, "did not finish within 4 s"),
        ("connect_timeout", ExitStatus.SSH_FAILED, "timed out after 2 s"),
        ("auth_timeout", ExitStatus.SSH_FAILED, "timed out after 2 s"),
        ("remote_port_taken", ExitStatus.LOGIN_FAILED, "Could not bind Spotify callback server"),
    ],
)
def test_fault_exit_code_message_and_cleanup(
    fresh: Bed, tmp_path: Path, backend: str, fault: str, expected: ExitStatus, shown: str
) -> None:
    args = ["spotify", "remote", "--backend", backend]
    config = None
    if fault in ("crash", "success_exit1", "no_success_line"):
        fresh.set_fake(mode=fault)
    elif fault == "missing":
        args += ["--hermes", "/opt/none/hermes"]
    elif fault == "overall_timeout":
        fresh.set_fake(mode="timeout", timeout=120)
        args += ["--timeout", "4"]
    if fault == "connect_timeout":
        # A server that accepts TCP and never says a word: only the connect deadline ends it.
        silent = socket.create_server(("127.0.0.1", 0))
        config = tmp_path / "cfg"
        config.write_text(
            f"Host silent\n  HostName 127.0.0.1\n  Port {silent.getsockname()[1]}\n"
            + fresh.ssh_config.read_text()
        )
        args = ["spotify", "silent", "--backend", backend, "--connect-timeout", "2"]
        with silent:
            result = tunnelauth(fresh, *args, tmp=tmp_path, browser=False, ssh_config=config)
    elif fault == "auth_timeout":
        # A server that greets like sshd and then stalls in the handshake.
        with _stalling_server() as port:
            config = tmp_path / "cfg"
            config.write_text(
                f"Host stall\n  HostName 127.0.0.1\n  Port {port}\n" + fresh.ssh_config.read_text()
            )
            args = ["spotify", "stall", "--backend", backend, "--connect-timeout", "2"]
            result = tunnelauth(fresh, *args, tmp=tmp_path, browser=False, ssh_config=config)
    elif fault == "remote_port_taken":
        with remote_port_held(fresh, SPOTIFY_PORT):
            result = tunnelauth(fresh, *args, tmp=tmp_path, browser=False)
    else:
        # No browser for the timeout: the login must stay unfinished.
        browser = fault != "overall_timeout"
        result = tunnelauth(fresh, *args, tmp=tmp_path, browser=browser)
    assert result.code == expected, result
    assert shown in result.stderr, result
    if fault == "remote_port_taken":
        assert "on the remote host" in result.stderr, "say whose port it is"


@contextlib.contextmanager
def _stalling_server() -> Iterator[int]:
    """A loopback server that sends an SSH banner to each client and then says nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2 stalled\r\n")
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        for conn in held:
            conn.close()
        server.close()


# -- the laptop port lock --------------------------------------------------------------------


def _stale_run(bed: Bed, tmp: Path) -> Background:
    """A tunnelauth run that holds the Spotify port on the laptop and waits (remote: a sleep)."""
    announce = f"echo Waiting for callback on http://127.0.0.1:{SPOTIFY_PORT}/callback; sleep 120"
    run = Background(bed, tmp, "--no-browser", "run", "remote", "--", "sh", "-c", announce)
    lock = PortLock(SPOTIFY_PORT, host="remote", directory=_locks())

    def locked() -> bool:
        owner = lock.owner()
        return owner is not None and owner.pid == run.proc.pid

    _wait_for(locked, "the first run to lock the port")
    return run


def test_no_wait_names_the_other_run_and_reap_ends_exactly_it(fresh: Bed, tmp_path: Path) -> None:
    first = _stale_run(fresh, tmp_path)
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        refused = tunnelauth(fresh, "spotify", "remote", "--no-wait", tmp=tmp_path)
        assert refused.code == ExitStatus.PORT_UNAVAILABLE, refused
        assert f"pid {first.proc.pid}" in refused.stderr
        assert "another tunnelauth run" in refused.stderr
        assert first.proc.poll() is None, "--no-wait never touches the other run"

        # A run for another host never reaps it: it waits instead (cut short by --no-wait).
        other = tunnelauth(fresh, "spotify", "remote-nofwd", "--no-wait", "--reap", tmp=tmp_path)
        assert other.code == ExitStatus.PORT_UNAVAILABLE, other
        assert first.proc.poll() is None

        reaped = tunnelauth(fresh, "spotify", "remote", "--reap", tmp=tmp_path)
        assert reaped.code == ExitStatus.OK, reaped
        assert first.finish() == ExitStatus.INTERRUPTED, first.text
        assert "everything was closed" in first.text
        assert bystander.poll() is None and psutil.pid_exists(bystander.pid)
    finally:
        if first.proc.poll() is None:
            first.proc.send_signal(signal.SIGTERM)
        first.finish()
        assert bystander.stdin is not None
        bystander.stdin.close()
        bystander.wait(10)


def test_second_run_waits_for_the_port_and_says_so(fresh: Bed, tmp_path: Path) -> None:
    holder = PortLock(SPOTIFY_PORT, host="remote", directory=_locks())
    assert holder.try_acquire()
    dom = tmp_path / "dom.html"
    run = Background(fresh, tmp_path, "--browser-cmd", fresh.browser_cmd(dom), "spotify", "remote")
    try:
        run.expect(f"port {SPOTIFY_PORT} is in use by pid {os.getpid()}")
        run.expect("waiting for it to finish")
        assert run.proc.poll() is None
    finally:
        holder.release()
    assert run.finish() == ExitStatus.OK, run.text
    assert "Spotify authorization received" in dom.read_text()


def test_runs_on_different_ports_proceed_in_parallel(fresh: Bed, tmp_path: Path) -> None:
    results: dict[str, Result] = {}

    def login(name: str, *args: str) -> None:
        own = tmp_path / name
        own.mkdir()
        results[name] = tunnelauth(fresh, *args, tmp=own)

    threads = [
        threading.Thread(target=login, args=("spotify", "spotify", "remote")),
        threading.Thread(target=login, args=("mcp", "mcp", "linear", "remote")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_DEADLINE + 30)
    assert results["spotify"].code == ExitStatus.OK, results["spotify"]
    assert results["mcp"].code == ExitStatus.OK, results["mcp"]
    # Each port has its own lock: the MCP run never waits (the Spotify run may, but only for
    # another run on 43827, e.g. a concurrent test session).
    assert "waiting for it to finish" not in results["mcp"].stderr
