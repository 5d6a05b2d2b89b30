"""One measurement of each kind, taken from outside the measured processes with time stamps.

Every login here is a Spotify login on the bed; its callback port is printed in the authorize
URL and moved off Spotify's 43827 (``spotify_port``), which tests on the same laptop use.
Times are ``time.time()`` values, which the laptop and both namespaces share: the stand-in
browser stamps when it is invoked, the fake hermes (``record_times``) stamps its URL line and
its success line, and this module stamps process start and exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.bed import BedError, wait_for
from tests.bed.netbed import Bed

HERE = Path(__file__).resolve().parent
BROWSER = HERE / "browser.py"
RELAY = HERE / "relay.py"
# Spotify's real port is 43827, which tests on the same laptop use; the bench moves the fake's to
# a port below the ephemeral range (32768-60999), so no outgoing connection can be holding it.
CALLBACK_PORT = 29431
SPOTIFY_ARGS = ("auth", "spotify", "login", "--no-browser")
RUN_DEADLINE = 60.0  # one login takes a few seconds; this only stops a hang
RSS_POLL = 0.01  # seconds between reads of the tunnelauth process's peak RSS
SSH_SCAN_EVERY = 5  # ssh processes are looked for every this many polls
RELAY_PORT = 2250


@dataclass
class Login:
    """What one login (tunnelauth or the manual recipe) took."""

    ok: bool
    error: str = ""
    to_browser: float | None = None  # process start → browser command invoked
    port_to_browser: float | None = None  # remote printed its port → browser invoked
    exit_after_success: float | None = None  # remote success line → everything exited
    total: float | None = None  # process start → exit
    auths: dict[str, int] = field(default_factory=dict)  # sshd authentications per host
    tcp: dict[str, int] = field(default_factory=dict)  # connections a relay accepted per host
    rss: int | None = None  # bytes: peak RSS of the tunnelauth process itself
    ssh_rss: int | None = None  # bytes: largest total RSS of its ssh processes at one time
    ssh_count: int = 0  # ssh processes seen during the run


# -- small helpers ---------------------------------------------------------------------------


def vm_hwm(pid: int) -> int | None:
    """The kernel's peak RSS of ``pid`` in bytes (``VmHWM``), None once it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def listening(port: int) -> bool:
    """Whether something in this namespace listens on TCP ``port`` (read from /proc)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name, encoding="ascii") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM by pid, SIGKILL at the deadline, and reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class ExitClock:
    """Reaps a child in a thread and stamps the moment it exited."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.at: float | None = None
        self.done = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(RUN_DEADLINE)
        self.at = time.time() if self.proc.returncode is not None else None
        self.done.set()


class MemoryWatch:
    """Peak RSS of one process, and of the ssh processes whose argv names ``marker``."""

    def __init__(self, pid: int, marker: str, exclude: Sequence[int] = ()) -> None:
        self.pid = pid
        self.marker = marker
        self.exclude = set(exclude)
        self.peak = 0
        self.ssh_pids: set[int] = set()
        self.ssh_peak = 0
        self.polls = 0

    def poll(self) -> None:
        """Read the process's VmHWM; every few polls also total its ssh processes."""
        self.polls += 1
        hwm = vm_hwm(self.pid)
        if hwm is not None:
            self.peak = max(self.peak, hwm)
        if self.polls % SSH_SCAN_EVERY == 1:
            self._scan_ssh()

    def _scan_ssh(self) -> None:
        total = 0
        for proc in psutil.process_iter(["name", "cmdline"]):
            info = proc.info
            if info["name"] != "ssh" or proc.pid in self.exclude:
                continue
            if self.marker not in (info["cmdline"] or ()):
                continue
            self.ssh_pids.add(proc.pid)
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.ssh_peak = max(self.ssh_peak, total)


# -- latency ---------------------------------------------------------------------------------


@dataclass
class Path_:
    """How the laptop reaches the hosts at one latency: an ssh config and relay logs."""

    rtt_ms: int
    ssh_config: Path
    relay_logs: dict[str, Path] = field(default_factory=dict)

    def relay_counts(self) -> dict[str, int]:
        """Connections each relay accepted so far (empty without relays)."""
        counts = {}
        for host, log in self.relay_logs.items():
            try:
                text = log.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            counts[host] = sum(1 for line in text.splitlines() if line.startswith("ACCEPT "))
        return counts


RELAYED_CONFIG = """\
Host bastion
  Port {port}
  HostKeyAlias {bastion_ip}
Host remote
  Port {port}
  HostKeyAlias {remote_ip}
"""


@contextlib.contextmanager
def network_path(bed: Bed, rtt_ms: int, workdir: Path) -> Iterator[Path_]:
    """The bed as is (``rtt_ms`` 0), or with a delay relay in front of each sshd."""
    if rtt_ms == 0:
        yield Path_(0, bed.ssh_config)
        return
    delay = rtt_ms / 2000.0  # seconds each way
    relays: list[subprocess.Popen[bytes]] = []
    logs: dict[str, Path] = {}
    try:
        for host, role, ip in (
            ("bastion", "bastion", bed.bastion_ip),
            ("remote", "remote", bed.remote_ip),
        ):
            log = workdir / f"relay-{host}-{rtt_ms}.log"
            argv = [sys.executable, "-I", str(RELAY), "--listen", f"{ip}:{RELAY_PORT}"]
            argv += ["--to", "127.0.0.1:22", "--delay", f"{delay:.4f}"]
            with log.open("wb") as out:
                relays.append(
                    subprocess.Popen(
                        bed.netns_argv(role, argv),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            logs[host] = log
        for (host, log), relay in zip(logs.items(), relays, strict=True):

            def ready(log: Path = log, relay: subprocess.Popen[bytes] = relay) -> bool:
                if relay.poll() is not None:
                    raise BedError(f"relay exited: {log.read_text(errors='replace')[-500:]}")
                return "READY" in log.read_text(errors="replace")

            wait_for(ready, timeout=10, what=f"the {host} relay")
        config = workdir / f"ssh_config-{rtt_ms}ms"
        relayed = RELAYED_CONFIG.format(
            port=RELAY_PORT, bastion_ip=bed.bastion_ip, remote_ip=bed.remote_ip
        )
        config.write_text(relayed + bed.ssh_config.read_text())
        config.chmod(0o600)
        yield Path_(rtt_ms, config, logs)
    finally:
        for relay in relays:
            stop_process(relay)


# -- the measurements ------------------------------------------------------------------------


def compile_bytecode() -> None:
    """Write the installed tunnelauth's bytecode, as installing a wheel does.

    An editable install has none, and with PYTHONDONTWRITEBYTECODE (or a read-only tree) every
    run would compile the modules it imports again: a cost no installed copy pays. Asked of the
    interpreter the console script runs, from ``/``, so the checkout on ``sys.path`` is not the
    one compiled by mistake.
    """
    code = (
        "import compileall, os, sys, tunnelauth\n"
        "where = os.path.dirname(tunnelauth.__file__)\n"
        "sys.exit(0 if compileall.compile_dir(where, quiet=1) else 1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BedError(f"could not compile tunnelauth's bytecode: {result.stderr.strip()}")


class Bench:
    """Runs single measurements against one bed."""

    def __init__(self, bed: Bed, workdir: Path) -> None:
        self.bed = bed
        self.workdir = workdir
        script = Path(sys.executable).with_name("tunnelauth")
        self.tunnelauth = [str(script)] if script.exists() else [sys.executable, "-m", "tunnelauth"]
        self.env = {
            **os.environ,
            "TUNNELAUTH_CONFIG": os.devnull,
            "COLUMNS": "200",
        }
        for name in ("TUNNELAUTH_HOST", "TUNNELAUTH_BACKEND", "TUNNELAUTH_BROWSER_CMD"):
            self.env.pop(name, None)
        self.counter = 0

    # helpers

    def _stamp_file(self) -> Path:
        self.counter += 1
        path = self.workdir / f"browser-{self.counter}.json"
        path.unlink(missing_ok=True)
        return path

    def browser_argv(self, stamp: Path) -> list[str]:
        """The stand-in browser, without the URL."""
        bed = self.bed
        return [sys.executable, "-S", "-I", str(BROWSER), str(stamp), bed.idp_ip, str(bed.ca_file)]

    def _record(self) -> Path:
        return self.bed.home / ".hermes" / "fake-record" / "spotify.json"

    def _fresh_record(self) -> None:
        """Remove the last record, and wait (briefly) until the laptop's callback port is free."""
        self._record().unlink(missing_ok=True)
        with contextlib.suppress(BedError):  # still taken: the run fails and says so
            wait_for(lambda: not listening(CALLBACK_PORT), timeout=15, what="a free port")

    def _read_stamp(self, stamp: Path) -> dict[str, object] | None:
        try:
            return json.loads(stamp.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            return None

    def _finish_login(
        self,
        result: Login,
        *,
        t0: float,
        t_exit: float | None,
        stamp: Path,
        before: dict[str, int],
        before_tcp: dict[str, int],
        path: Path_,
    ) -> Login:
        """Fill times and counts from the stamp file, the fake's record and the sshd logs."""
        after = self.bed.auth_counts()
        result.auths = {h: after[h] - before.get(h, 0) for h in ("bastion", "remote")}
        after_tcp = path.relay_counts()
        result.tcp = {h: n - before_tcp.get(h, 0) for h, n in after_tcp.items()}
        browser = self._read_stamp(stamp)
        record = self.bed.fake_record("spotify") or {}
        if t_exit is not None:
            result.total = t_exit - t0
        if browser is not None:
            invoked = float(browser["t_invoked"])  # type: ignore[arg-type]
            result.to_browser = invoked - t0
            if "t_port_printed" in record:
                result.port_to_browser = invoked - float(record["t_port_printed"])
            if browser.get("error") and result.ok:
                result.ok, result.error = False, f"browser: {browser['error']}"
        elif result.ok:
            result.ok, result.error = False, "the browser was never invoked"
        if t_exit is not None and "t_success" in record:
            result.exit_after_success = t_exit - float(record["t_success"])
        if result.ok and record.get("outcome") != "ok":
            result.ok, result.error = False, f"remote outcome {record.get('outcome')!r}"
        return result

    # the floor

    def floor(self, path: Path_) -> tuple[float, dict[str, int]]:
        """``ssh -J bastion remote true``: wall time and authentications."""
        before = self.bed.auth_counts()
        argv = ["ssh", "-F", str(path.ssh_config), "-J", "bastion", "remote", "true"]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BedError(f"the floor failed: {proc.stderr.decode(errors='replace')[-300:]}")
        after = self.bed.auth_counts()
        return elapsed, {h: after[h] - before[h] for h in ("bastion", "remote")}

    # the remote's own time

    def hermes_own(self) -> float:
        """Seconds from starting the fake hermes on the remote to its URL line (no SSH)."""
        bed = self.bed
        self._fresh_record()
        argv = bed.netns_argv(
            "remote",
            [
                *("setpriv", f"--reuid={bed.uid}", f"--regid={bed.gid}", "--init-groups"),
                *("env", "-i", f"HOME={bed.home}", f"USER={bed.user}", "PATH=/usr/bin:/bin"),
                bed.hermes_path,
                *SPOTIFY_ARGS,
            ],
        )
        t0 = time.time()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                if b"/authorize?" in raw:
                    return time.time() - t0
            raise BedError("the fake hermes never printed its URL")
        finally:
            stop_process(proc)  # SIGTERM: the fake leaves quietly
            if proc.stdout is not None:
                proc.stdout.close()

    # the command line itself

    def wall(self, argv: Sequence[str]) -> float:
        """Wall time of one short command (output discarded)."""
        t0 = time.perf_counter()
        subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
            timeout=30,
            check=True,
        )
        return time.perf_counter() - t0

    # tunnelauth

    def tunnelauth_login(
        self, path: Path_, backend: str, *, config: Path | None = None, exclude: Sequence[int] = ()
    ) -> Login:
        """One ``tunnelauth spotify remote`` with the stand-in browser; memory polled meanwhile."""
        cfg = config or path.ssh_config
        stamp = self._stamp_file()
        template = shlex.join(self.browser_argv(stamp)) + " {url}"
        argv = [*self.tunnelauth, "-F", str(cfg), "--browser-cmd", template]
        argv += ["--backend", backend, "--timeout", "45", "spotify", "remote"]
        self._fresh_record()
        before, before_tcp = self.bed.auth_counts(), path.relay_counts()
        log = self.workdir / f"tunnelauth-{self.counter}.log"
        with log.open("wb") as out:
            t0 = time.time()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        clock = ExitClock(proc)
        watch = MemoryWatch(proc.pid, str(cfg), exclude)
        while not clock.done.wait(RSS_POLL):
            watch.poll()
        if proc.returncode is None:
            stop_process(proc)
        code = proc.returncode
        ok = code == 0
        error = "" if ok else f"exit {code}: {_last_line(log)}"
        result = Login(ok, error, rss=watch.peak or None, ssh_count=len(watch.ssh_pids))
        result.ssh_rss = watch.ssh_peak if watch.ssh_pids else None
        return self._finish_login(
            result, t0=t0, t_exit=clock.at, stamp=stamp, before=before, before_tcp=before_tcp,
            path=path,
        )  # fmt: skip

    # the manual two-connection recipe

    def manual_login(self, path: Path_) -> Login:
        """The docs' recipe scripted: ``ssh -N -L P:…`` and ``ssh -tt host hermes …`` at once."""
        cfg = str(path.ssh_config)
        stamp = self._stamp_file()
        self._fresh_record()
        before, before_tcp = self.bed.auth_counts(), path.relay_counts()
        forward = f"127.0.0.1:{CALLBACK_PORT}:127.0.0.1:{CALLBACK_PORT}"
        tunnel_argv = ["ssh", "-F", cfg, "-N", "-o", "ExitOnForwardFailure=yes", "-L", forward]
        hermes = " ".join([".local/bin/hermes", *SPOTIFY_ARGS])
        login_argv = ["ssh", "-F", cfg, "-tt", "remote", hermes]
        seen_url = threading.Event()
        seen_success = threading.Event()
        url: list[str] = []
        t0 = time.time()
        tunnel = subprocess.Popen(
            [*tunnel_argv, "remote"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        login = subprocess.Popen(
            login_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

        def read_output() -> None:
            assert login.stdout is not None
            for raw in login.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if "/authorize?" in line and not url:
                    url.append(line)
                    seen_url.set()
                elif "login successful" in line.lower():
                    seen_success.set()
            seen_url.set()
            seen_success.set()

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        browser: subprocess.Popen[bytes] | None = None
        ok, error = True, ""
        try:
            seen_url.wait(RUN_DEADLINE)
            # A person opens the URL once the tunnel terminal shows it is up.
            wait_for(
                lambda: listening(CALLBACK_PORT) or tunnel.poll() is not None,
                timeout=RUN_DEADLINE,
                what="the -L forward",
            )
            if not url or tunnel.poll() is not None:
                raise BedError("the recipe's URL or tunnel never came up")
            browser = subprocess.Popen(
                [*self.browser_argv(stamp), url[0]], stdin=subprocess.DEVNULL
            )
            seen_success.wait(RUN_DEADLINE)
            stop_process(tunnel)  # Ctrl-C in the tunnel terminal once the login succeeded
            login.wait(RUN_DEADLINE)
            t_exit = time.time()
            ok = login.returncode == 0
            error = "" if ok else f"hermes session exited {login.returncode}"
        except (BedError, subprocess.TimeoutExpired) as exc:
            ok, error, t_exit = False, str(exc), time.time()
        finally:
            for proc in (tunnel, login, browser):
                if proc is not None:
                    if proc.stdin is not None:
                        proc.stdin.close()
                    stop_process(proc)
            reader.join(5)
            if login.stdout is not None:
                login.stdout.close()
        return self._finish_login(
            Login(ok, error), t0=t0, t_exit=t_exit, stamp=stamp, before=before,
            before_tcp=before_tcp, path=path,
        )  # fmt: skip

    # a live user ControlMaster

    @contextlib.contextmanager
    def user_master(self, path: Path_) -> Iterator[tuple[Path, int]]:
        """A user's own live ControlMaster for ``remote`` (config + master pid), closed after."""
        config = self.workdir / f"ssh_config-user-master-{path.rtt_ms}ms"
        socket = self.workdir / f"cm-{path.rtt_ms}"
        extra = f"Host *\n  ControlMaster auto\n  ControlPath {socket}\n  ControlPersist no\n"
        config.write_text(extra + path.ssh_config.read_text())
        config.chmod(0o600)
        base = ["ssh", "-F", str(config)]
        subprocess.run(
            [*base, "-M", "-f", "-N", "remote"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=True,
        )
        try:
            check = subprocess.run(
                [*base, "-O", "check", "remote"], capture_output=True, text=True, timeout=10
            )
            running = re.search(r"pid=(\d+)", check.stderr)
            if check.returncode != 0 or running is None:
                raise BedError(f"the user's master did not come up: {check.stderr.strip()}")
            yield config, int(running.group(1))
        finally:
            subprocess.run(
                [*base, "-O", "exit", "remote"], capture_output=True, timeout=10, check=False
            )
            socket.unlink(missing_ok=True)


def _last_line(log: Path) -> str:
    """The last non-empty line of a log (for an error message)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"
