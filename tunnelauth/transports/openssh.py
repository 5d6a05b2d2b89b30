"""The OpenSSH transport: one private ControlMaster (or the user's live one) carries everything.

Every other ssh process tunnelauth starts is a multiplexing client of that master, so a run
authenticates exactly once; the remote command runs with ``-tt`` and the browser's callback
travels over ``-W 127.0.0.1:P`` channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tunnelauth.askpass import Asker, AskpassServer
from tunnelauth.errors import (
    CommandNotFoundError,
    HostKeyError,
    SSHError,
    UsageError,
    at_hop,
    hop_hint,
    hop_label,
)
from tunnelauth.remote import PTY_COLUMNS
from tunnelauth.sanitize import strip
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import master, sshargs
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, Bounded, ExecResult, Transport
from tunnelauth.transports.hops import jump_chain, split_hop, unreachable_from

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.transports.headstart import HeadStart

STDERR_LIMIT = 16 * 1024  # bytes of an ssh client's stderr kept for messages
MAX_HOPS = 10  # a longer ProxyJump chain is taken for a loop
LOG_POLL = 0.1  # seconds between looks at the master's log at -vv
PTY_ROWS = 50


async def _run(
    argv: Sequence[str], *, timeout: float, stdin: bytes = b"", limit: int = EXEC_OUTPUT_LIMIT
) -> ExecResult:
    """Run a short local command with a deadline; it is killed and reaped if the deadline passes.

    At most ``limit`` bytes of stdout and of stderr are kept; the rest is read and dropped.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    out, err = Bounded(limit), Bounded(limit)

    async def collect() -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        proc.stdin.close()
        await asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
        await proc.wait()

    try:
        await asyncio.wait_for(collect(), timeout)
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        raise
    return ExecResult(proc.returncode, out.value(), err.value(), out.cut or err.cut)


async def _drain(stream: asyncio.StreamReader, into: Bounded) -> None:
    """Read ``stream`` to its end, keeping what ``into`` has room for."""
    while chunk := await stream.read(65536):
        into.add(chunk)


class _Launched:
    """The master's first ssh process (``master.spawn``), seen the way asyncio's are."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited, else None."""
        return self._popen.poll()

    async def wait(self) -> int:
        """Wait for it without blocking the event loop."""
        return await asyncio.to_thread(self._popen.wait)


def _kill_group(proc: asyncio.subprocess.Process | _Launched, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a child started with ``start_new_session``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


async def _reap(proc: asyncio.subprocess.Process, grace: float) -> None:
    """Wait ``grace`` seconds for a child to exit, then end its group and reap it."""
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        _kill_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except asyncio.TimeoutError:
            _kill_group(proc)
            await proc.wait()


class _StderrTail:
    """Collects the tail of a child's stderr in the background."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        self._data = bytearray()
        self._task = asyncio.ensure_future(self._pump(stream)) if stream else None

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._data += chunk
            del self._data[:-STDERR_LIMIT]

    async def text(self, timeout: float = 1.0) -> str:
        """The collected text, after the stream ended (or ``timeout`` passed)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self._data.decode("utf-8", "replace")

    def cancel(self) -> None:
        """Stop collecting."""
        if self._task is not None:
            self._task.cancel()


class OpenSSHProcess:
    """The remote command, run as ``ssh -tt`` over the master.

    ssh's stdin is a local pseudo-terminal, not a pipe: a multiplexing client with a forced
    remote PTY forwards nothing from a pipe, and the local PTY also gives the remote its size.
    """

    def __init__(self, proc: asyncio.subprocess.Process, pty_fd: int) -> None:
        self._proc = proc
        self._pty = pty_fd
        self._stderr = _StderrTail(proc.stderr)
        assert proc.stdout is not None
        self._stdout = proc.stdout

    async def read(self) -> bytes:
        """Next chunk of the merged remote output, ``b""`` at the end."""
        return await self._stdout.read(65536)

    def write(self, data: bytes) -> None:
        """Send bytes to the remote PTY (small writes: prompt answers and Ctrl-C)."""
        if self._pty < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._pty, data)

    def interrupt(self) -> None:
        """Ctrl-C through the PTY: the remote line discipline turns it into SIGINT."""
        self.write(b"\x03")

    async def wait(self) -> int | None:
        """The remote exit status; ``None`` when ssh itself failed (255) or was killed."""
        code = await self._proc.wait()
        return None if code < 0 or code == 255 else code

    async def stderr_text(self) -> str:
        """What the local ssh client printed (its own errors, not the remote's stderr)."""
        return await self._stderr.text()

    async def close(self) -> None:
        """Interrupt the remote if it still runs, then end the session (SIGHUP on the remote)."""
        if self._proc.returncode is None:
            self.interrupt()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 2.0)
        if self._proc.returncode is None:
            _kill_group(self._proc, signal.SIGTERM)
        await _reap(self._proc, 2.0)
        self._stderr.cancel()
        if self._pty >= 0:
            os.close(self._pty)
            self._pty = -1


class OpenSSHChannel:
    """A direct-tcpip channel carried by an ``ssh -W`` client of the master."""

    def __init__(self, proc: asyncio.subprocess.Process, master_log: str | None = None) -> None:
        self._proc = proc
        self._master_log = master_log
        assert proc.stdout is not None and proc.stdin is not None
        self.reader: asyncio.StreamReader = proc.stdout
        self._stdin = proc.stdin
        self._stderr = _StderrTail(proc.stderr)

    def write(self, data: bytes) -> None:
        """Queue bytes to the remote end."""
        self._stdin.write(data)

    async def drain(self) -> None:
        """Wait until the bytes are handed to ssh."""
        await self._stdin.drain()

    def write_eof(self) -> None:
        """Half-close towards the remote."""
        if self._stdin.can_write_eof():
            self._stdin.write_eof()

    async def refusal(self) -> str | None:
        """The server's refusal, read from ssh's stderr once the client has ended."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 5.0)
        message = sshargs.channel_refusal(await self._stderr.text())
        if message and "session open refused" in message.lower() and self._master_log:
            # A mux client hears only "refused"; our own master logged the server's reason.
            with contextlib.suppress(OSError), open(self._master_log, "rb") as fh:
                tail = fh.read()[-STDERR_LIMIT:].decode("utf-8", "replace")
                message = sshargs.last_open_failure(tail) or message
        return message

    async def close(self) -> None:
        """Close the channel and reap its ssh client."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        await _reap(self._proc, 2.0)
        self._stderr.cancel()


class _LogFollower:
    """Hands the lines ssh writes to its log files to a sink as they are written (``-vv``)."""

    def __init__(self, paths: Sequence[str], sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._read: dict[str, int] = {path: 0 for path in paths}
        self._partial: dict[str, bytes] = {path: b"" for path in paths}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the files until ``stop``."""
        self._task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        while True:
            self.drain()
            await asyncio.sleep(LOG_POLL)

    def drain(self, *, final: bool = False) -> None:
        """Pass on every complete line written since the last call (``final``: also the rest)."""
        for path, offset in self._read.items():
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
                self._read[path] = offset + len(data)
                data = self._partial[path] + data
                *lines, self._partial[path] = data.split(b"\n")
                if final and self._partial[path]:
                    lines.append(self._partial[path])
                    self._partial[path] = b""
                for line in lines:
                    text = line.decode("utf-8", "replace").rstrip("\r")
                    if text.strip():
                        self._sink(text)

    def stop(self) -> None:
        """Stop following, after passing on what is left."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.drain(final=True)


class OpenSSHTransport(Transport):
    """Drives the system ``ssh`` binary through one ControlMaster."""

    name = "openssh"

    def __init__(
        self,
        target: SSHTarget,
        *,
        connect_timeout: float = 30.0,
        batch: bool = False,
        ssh: str | None = None,
        hops: HopPool | None = None,
        shared_hop: bool = False,
        head_start: HeadStart | None = None,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.batch = batch
        self.ssh = ssh or shutil.which("ssh") or "ssh"
        self.hops = hops  # a fleet's shared jump chains (None: this connection opens its own)
        self.shared_hop = shared_hop  # this connection is a jump host the fleet shares
        self._hop: OpenSSHTransport | None = None  # the fleet's hop this target goes through
        self.config: dict[str, str] = {}
        self.head_start = head_start
        self._socket: str | None = None  # the control socket in use
        self._own: master.Master | None = None  # the master tunnelauth opened, if it did
        self.reused_master = False
        self._asker: Asker | None = None
        self._debug_sink: Callable[[str], None] | None = None
        self._follower: _LogFollower | None = None

    @property
    def socket(self) -> str:
        """The control socket in use (after ``connect``)."""
        if self._socket is None:
            raise RuntimeError("not connected")
        return self._socket

    async def connect(
        self, *, asker: Asker | None = None, debug_log: Callable[[str], None] | None = None
    ) -> None:
        """Adopt the user's live master for the host, or open and authenticate a private one.

        A batch run's head start may have asked ``ssh -G`` and started the master already:
        those are adopted instead of asked and started again. ``debug_log`` (``-vv``): the
        master runs with ssh's ``-v``, its log lines go there. ``asker`` answers ssh's
        prompts (passwords, codes, passphrases) in interactive runs.
        """
        self._asker, self._debug_sink = asker, debug_log
        if shutil.which(self.ssh) is None:
            raise CommandNotFoundError(
                "the ssh client was not found on this machine",
                hint="install OpenSSH, or use --backend asyncssh",
            )
        ahead = self.head_start.take_openssh(self.target) if self.head_start else None
        if ahead is not None:
            self.config = ahead.config
            if ahead.master is not None:
                await self._open_master(ahead.master)  # started before the heavy imports
                return
        else:
            self.config = await self._query_config()
        if await self._adopt():
            return
        if self.hops is not None:
            await self._through_shared_hop()
        await self._open_master()

    async def _adopt(self) -> bool:
        """Use the user's live master for the host, if no flag asks for another connection.

        A jump host a fleet shares is named by user, host and port (from ProxyJump), which the
        user's ControlPath tells apart: its master is adopted whatever those say.
        """
        target = self.target
        flags = target.has_connection_flags
        if self.shared_hop:
            flags = bool(target.identity or target.options)
        if flags:
            return False
        path = sshargs.existing_control_path(self.config)
        if path and os.path.exists(path) and await self._check(path):
            self._socket = path
            self.reused_master = True
            return True
        return False

    async def open_hops(self, *, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else."""
        if self.hops is None:
            return
        if shutil.which(self.ssh) is None:
            return  # the host's own login says so
        self._asker = asker
        self.config = await self._query_config()
        await self._shared_hop()

    async def _shared_hop(self) -> OpenSSHTransport | None:
        """The fleet's master to this host's last jump host (shared with the fleet's hosts).

        None when the host is reached directly or through a ProxyCommand (nothing to share).
        """
        assert self.hops is not None
        from tunnelauth.hoppool import hop_key

        proxy = self.config.get("proxycommand", "none")
        hops = list(jump_chain(self.config.get("proxyjump"))) or list(self.target.jump)
        if not hops or proxy.lower() != "none":
            return None
        config = str(self.target.ssh_config) if self.target.ssh_config is not None else ""
        key = hop_key(self.name, hops, (config,))
        user, host, port = split_hop(hops[-1])
        hop_target = SSHTarget(
            host=host,
            jump=tuple(hops[:-1]),
            ssh_config=self.target.ssh_config,
            port=port,
            login=user,
        )

        async def open_hop() -> OpenSSHTransport:
            hop = OpenSSHTransport(
                hop_target,
                connect_timeout=self.connect_timeout,
                batch=self.batch,
                ssh=self.ssh,
                shared_hop=True,
            )
            try:
                await hop.connect(asker=self._asker)
            except SSHError as exc:
                await hop.close()
                raise at_hop(exc, hops[-1], self.target.host) from None
            except BaseException:
                await hop.close()
                raise
            return hop

        async def usable(hop: OpenSSHTransport) -> bool:
            # Its ControlPersist may have run out while no host used it.
            return await hop.alive()

        return await self.hops.get(key, open_hop, target=self.target.host, usable=usable)

    async def _through_shared_hop(self) -> None:
        """Reach the target through the fleet's master to its last jump host.

        ssh's own ProxyJump would authenticate to every hop again; instead the target's
        connection runs ``ssh -S <hop master> -W [%h]:%p`` as its ProxyCommand (which takes
        precedence over the config's ProxyJump), with the same host-key checks for the target.
        """
        hop = await self._shared_hop()
        if hop is None:
            return
        self._hop = hop
        command = sshargs.shared_hop_proxy(self.ssh, hop.target, hop.socket)
        self.target = self.target._replace(
            jump=(), options=(f"ProxyCommand={command}", *self.target.options)
        )

    async def _query_config(self) -> dict[str, str]:
        """``ssh -G`` for the target (on a worker thread: it blocks)."""
        return await asyncio.to_thread(master.query_config, self.ssh, self.target)

    async def _check(self, socket: str) -> bool:
        argv = sshargs.control_argv(self.ssh, self.target, socket, "check")
        try:
            result = await _run(argv, timeout=3.0)
        except asyncio.TimeoutError:
            return False
        return result.exit_status == 0

    async def _open_master(self, started: master.Master | None = None) -> None:
        """Authenticate a private master (``started``: one a batch run's head start launched).

        ssh asks for passwords, one-time codes and passphrases through tunnelauth's askpass
        (SSH_ASKPASS_REQUIRE=force; older ssh uses it as it has no terminal and a DISPLAY), so
        every question is shown while the live display is paused.
        """
        tempdir = started.tempdir if started is not None else master.make_dir()
        askpass: AskpassServer | None = None
        if started is None and not self.batch and self._asker is not None:
            askpass = AskpassServer(tempdir, self._asker)
        log_paths = (os.path.join(tempdir, "connect.log"), os.path.join(tempdir, "master.log"))
        if self._debug_sink is not None:
            # connect.log has the jump hosts' ssh (their stderr), master.log the master's own.
            self._follower = _LogFollower(log_paths, self._debug_sink)
            self._follower.start()
        try:
            if started is None:
                env = {**os.environ, **await askpass.start()} if askpass is not None else None
                started = master.spawn(
                    self.ssh,
                    self.target,
                    self.config,
                    tempdir,
                    batch=self.batch,
                    verbose=self._debug_sink is not None,
                    env=env,
                )
        except BaseException:
            if askpass is not None:
                await askpass.close()
            self._stop_follower()
            shutil.rmtree(tempdir, ignore_errors=True)
            raise
        self._own = started
        proc = _Launched(started.proc)
        try:
            code = await self._wait_connected(proc, askpass)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if askpass is not None:
                await askpass.close()
            await self._discard_master()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SSHError(
                f"connecting to {self.target.host} timed out after {self.connect_timeout:g} s",
                host=self.target.host,
            ) from None
        asked = askpass.asked if askpass is not None else []
        if askpass is not None:
            await askpass.close()
        stderr = ""
        for path in log_paths:
            with contextlib.suppress(OSError), open(path, "rb") as log:
                stderr += log.read()[-STDERR_LIMIT:].decode("utf-8", "replace")
        # ssh -f exits 0 only once the master listens on its socket: no `-O check` needed.
        if code == 0 and os.path.exists(started.socket):
            self._socket = started.socket
            return
        await self._discard_master()
        chain: list[str] = []
        if self._through_proxy():
            chain = await self._jump_chain()
            if sshargs.proxy_failure_hidden(stderr) and not sshargs.proxied_failure(stderr)[0]:
                stderr = await self._diagnose() or stderr
        if self._hop is not None:
            stderr = sshargs.shared_hop_refusal(stderr, self._hop.last_open_failure())
        error = _connect_error(self.target.host, stderr, batch=self.batch, asked=asked, chain=chain)
        if isinstance(error, HostKeyError) and "SHA256:" not in error.message:
            # ssh names the offered key only when it asks; a -v repeat logs it.
            offered = sshargs.server_host_key(await self._diagnose(verbose=True))
            if offered:
                error.message += f" (the server offers {offered})"
                error.args = (error.message,)
        raise error

    async def _wait_connected(self, proc: _Launched, askpass: AskpassServer | None) -> int:
        """The master's exit code once it has authenticated and backgrounded itself.

        The connect deadline leaves out the time the user spent answering ssh's questions.
        """
        started = time.monotonic()
        while True:
            waited = askpass.waited if askpass is not None else 0.0
            left = started + self.connect_timeout + waited - time.monotonic()
            busy = askpass is not None and askpass.busy
            if left <= 0 and not busy:
                raise asyncio.TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(proc.wait()), max(left, 0.5))
            except asyncio.TimeoutError:
                continue

    def _through_proxy(self) -> bool:
        """Whether the connection goes through a jump host or proxy command."""
        jump = self.config.get("proxyjump", "none")
        proxy = self.config.get("proxycommand", "none")
        return bool(self.target.jump) or jump.lower() != "none" or proxy.lower() != "none"

    async def _jump_chain(self) -> list[str]:
        """The jump hosts in order, the first hop's own ProxyJump included (failure path only).

        ssh applies the config's ProxyJump of the first hop alone (later hops are reached
        through the earlier ones), so only that one is followed.
        """
        hops = list(self.target.jump) or list(jump_chain(self.config.get("proxyjump")))
        while hops and len(hops) < MAX_HOPS:
            try:
                first = SSHTarget(host=split_hop(hops[0])[1], ssh_config=self.target.ssh_config)
                config = await asyncio.to_thread(master.query_config, self.ssh, first, timeout=5.0)
            except (UsageError, subprocess.TimeoutExpired, OSError):
                break
            before = [h for h in jump_chain(config.get("proxyjump")) if h not in hops]
            if not before:
                break
            hops = before + hops
        return hops

    async def _diagnose(self, *, verbose: bool = False) -> str:
        """Repeat a failed connect without ControlPersist to read the jump host's own error.

        With ControlPersist, ssh sends its proxy's stderr to /dev/null, so a jump host's
        "Host key verification failed" is lost. The repeat never prompts (BatchMode) and runs
        only on this failure path.
        """
        argv = sshargs.diagnose_argv(self.ssh, self.target, verbose=verbose)
        try:
            result = await _run(argv, timeout=self.connect_timeout)
        except asyncio.TimeoutError:
            return ""
        text = result.stderr.decode("utf-8", "replace")
        return text if verbose else text[-STDERR_LIMIT:]

    def _master_log_path(self) -> str | None:
        """The log of a master tunnelauth opened (an adopted one's log is not ours to read)."""
        return self._own.master_log if self._own is not None else None

    def last_open_failure(self) -> str | None:
        """Why the server last refused a channel, from the log of a master tunnelauth opened."""
        path = self._master_log_path()
        if path is None:
            return None
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            return sshargs.last_open_failure(fh.read()[-STDERR_LIMIT:].decode("utf-8", "replace"))
        return None

    def _stop_follower(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.stop()

    async def _discard_master(self) -> None:
        """End the master tunnelauth opened (never one it adopted) and remove its temp dir."""
        self._stop_follower()
        own, self._own, self._socket = self._own, None, None
        if own is not None:
            await asyncio.to_thread(master.end, own, self.ssh, self.target)

    async def alive(self) -> bool:
        """Whether the master still answers (the link is up)."""
        return self._socket is not None and await self._check(self._socket)

    async def start(self, command: str) -> OpenSSHProcess:
        """Run ``command`` with a PTY over the master."""
        argv = sshargs.session_argv(self.ssh, self.target, self.socket, command)
        pty_fd, tty_fd = pty.openpty()
        try:
            # The local terminal modes stay cooked: ssh sends them as the remote PTY's modes
            # (ICRNL, ISIG for Ctrl-C, ONLCR) and puts its own side in raw mode itself.
            size = struct.pack("HHHH", PTY_ROWS, PTY_COLUMNS, 0, 0)
            fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, size)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=tty_fd,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            os.close(pty_fd)
            raise
        finally:
            os.close(tty_fd)
        return OpenSSHProcess(proc, pty_fd)

    async def open_channel(self, host: str, port: int) -> OpenSSHChannel:
        """A direct-tcpip channel to ``host:port`` on the remote side, over the master."""
        argv = sshargs.stdio_forward_argv(self.ssh, self.target, self.socket, host, port)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return OpenSSHChannel(proc, self._master_log_path())

    async def exec(
        self, command: str, *, stdin: bytes = b"", timeout: float, limit: int = EXEC_OUTPUT_LIMIT
    ) -> ExecResult:
        """Run a short command over the master without a PTY (``limit`` bytes per stream)."""
        argv = sshargs.exec_argv(self.ssh, self.target, self.socket, command)
        return await _run(argv, timeout=timeout, stdin=stdin, limit=limit)

    async def close(self) -> None:
        """End a master tunnelauth opened (never one it adopted) and remove its temp dir."""
        await self._discard_master()


def _connect_error(
    host: str,
    stderr: str,
    *,
    batch: bool = False,
    asked: Sequence[str] = (),
    chain: Sequence[str] = (),
) -> SSHError:
    """Turn ssh's stderr after a failed connect into the matching error.

    Through jump hosts (``chain``, first hop first), the error names the hop whose ssh failed
    and keeps that ssh's own reason; ``error.hop`` is set to it.
    """
    stderr = strip(stderr, keep_newlines=True)  # ssh relays server-chosen text (banners)
    depth, lines = sshargs.proxied_failure(stderr)
    hop = sshargs.failed_hop(chain, depth)
    if hop is None:
        return _failure(host, host, "\n".join(lines), batch=batch, asked=asked)
    if sshargs.channel_failed(lines):
        # The hop was reached, but it could not open the channel onward.
        onward = sshargs.next_after(chain, hop, host)
        why = sshargs.reason_line(lines).removeprefix("channel 0: ").removeprefix("open failed: ")
        who = host if onward == host else hop_label(onward, host)
        error = SSHError(
            f"cannot connect to {who}: {unreachable_from(hop, why)}",
            host=onward,
            stderr_tail="\n".join(lines[-6:]),
        )
        error.hop = None if onward == host else onward
        return error
    error = _failure(hop_label(hop, host), hop, "\n".join(lines), batch=batch, asked=asked)
    error.hop = hop
    if not isinstance(error, HostKeyError):
        error.hint = hop_hint(hop, host)
    return error


def _failure(
    who: str, host: str, stderr: str, *, batch: bool = False, asked: Sequence[str] = ()
) -> SSHError:
    """The error for one ssh process's failure; ``who`` names the host in the message."""
    kind, detail = sshargs.classify_connect_failure(stderr)
    wanted = sshargs.auth_methods_offered(stderr) if kind == "auth" else []
    needs_prompt = [m for m in wanted if m in sshargs.PROMPTING_METHODS]
    tail = "\n".join(stderr.strip().splitlines()[-6:])
    if batch and needs_prompt and not any(m in wanted for m in ("publickey", "hostbased")):
        message, hint = sshargs.batch_prompt_refusal(who, needs_prompt)
        return SSHError(message, host=host, stderr_tail=tail, hint=hint)
    if kind == "hostkey":
        return HostKeyError(
            f"host key for {who} could not be verified: {detail}",
            host=host,
            stderr_tail=tail,
            hint="check the key with the host's owner, then add it to known_hosts "
            "(tunnelauth never weakens StrictHostKeyChecking)",
        )
    if kind == "auth" and batch and needs_prompt:
        return SSHError(
            f"SSH authentication to {who} failed: no key was accepted, and the "
            f"{sshargs.method_prompt(needs_prompt)} it also offers needs a terminal",
            host=host,
            stderr_tail=tail,
            hint="use a key the server accepts, or run from a terminal (not --batch or CI)",
        )
    if kind == "auth":
        said = f" (after: {'; '.join(p.strip() for p in asked)})" if asked else ""
        return SSHError(
            f"SSH authentication to {who} failed{said}",
            host=host,
            stderr_tail=tail,
            hint="check `ssh HOST true` works with the same options",
        )
    reason = sshargs.reason_line(sshargs.meaningful_lines(stderr))
    return SSHError(f"cannot connect to {who}: {reason}", host=host, stderr_tail=tail)
