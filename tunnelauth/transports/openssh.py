"""The OpenSSH transport: one private ControlMaster (or the user's live one) carries everything.

Every other ssh process tunnelauth starts is a multiplexing client of that master, so a run
authenticates exactly once; the remote command runs with ``-tt`` and the browser's callback
travels over ``-W 127.0.0.1:P`` channels.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import shutil
import struct
import termios
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunnelauth.askpass import Asker, AskpassServer
from tunnelauth.environment import Environment
from tunnelauth.errors import (
    CommandNotFoundError,
    HostKeyError,
    SSHError,
    at_hop,
)
from tunnelauth.remote import PTY_COLUMNS
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import master, sshargs
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, ExecResult, Transport
from tunnelauth.transports.hops import jump_chain, split_hop
from tunnelauth.transports.openssh_chain import diagnose, jump_hosts, through_proxy
from tunnelauth.transports.openssh_log import LogFollower, connect_error, log_tail
from tunnelauth.transports.openssh_sessions import (
    PTY_ROWS,
    Launched,
    OpenSSHChannel,
    OpenSSHProcess,
    run_ssh,
)

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.transports.headstart import HeadStart


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
        self._env = Environment()  # the command's, from connect (or open_hops)
        self._debug_sink: Callable[[str], None] | None = None
        self._follower: LogFollower | None = None

    @property
    def socket(self) -> str:
        """The control socket in use (after ``connect``)."""
        if self._socket is None:
            raise RuntimeError("not connected")
        return self._socket

    async def connect(
        self,
        *,
        env: Environment,
        asker: Asker | None = None,
        debug_log: Callable[[str], None] | None = None,
    ) -> None:
        """Adopt the user's live master for the host, or open and authenticate a private one.

        A batch run's head start may have asked ``ssh -G`` and started the master already:
        those are adopted instead of asked and started again. ``debug_log`` (``-vv``): the
        master runs with ssh's ``-v``, its log lines go there. ``asker`` answers ssh's
        prompts (passwords, codes, passphrases) in interactive runs, through askpass: that
        master runs with ``env``'s variables and the askpass ones.
        """
        self._asker, self._debug_sink, self._env = asker, debug_log, env
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

    async def open_hops(self, *, env: Environment, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else."""
        if self.hops is None:
            return
        if shutil.which(self.ssh) is None:
            return  # the host's own login says so
        self._asker, self._env = asker, env
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
                await hop.connect(asker=self._asker, env=self._env)
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
            result = await run_ssh(argv, timeout=3.0)
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
            self._follower = LogFollower(log_paths, self._debug_sink)
            self._follower.start()
        try:
            if started is None:
                env = await askpass.start(self._env.variables) if askpass is not None else None
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
        proc = Launched(started.proc)
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
        stderr = "".join(log_tail(path) for path in log_paths)
        # ssh -f exits 0 only once the master listens on its socket: no `-O check` needed.
        if code == 0 and os.path.exists(started.socket):
            self._socket = started.socket
            return
        await self._discard_master()
        chain: list[str] = []
        if through_proxy(self.target, self.config):
            chain = await jump_hosts(self.ssh, self.target, self.config)
            if sshargs.proxy_failure_hidden(stderr) and not sshargs.proxied_failure(stderr)[0]:
                stderr = await diagnose(self.ssh, self.target, self.connect_timeout) or stderr
        if self._hop is not None:
            stderr = sshargs.shared_hop_refusal(stderr, self._hop.last_open_failure())
        error = connect_error(self.target.host, stderr, batch=self.batch, asked=asked, chain=chain)
        if isinstance(error, HostKeyError) and "SHA256:" not in error.message:
            # ssh names the offered key only when it asks; a -v repeat logs it.
            repeat = await diagnose(self.ssh, self.target, self.connect_timeout, verbose=True)
            offered = sshargs.server_host_key(repeat)
            if offered:
                error.message += f" (the server offers {offered})"
                error.args = (error.message,)
        raise error

    async def _wait_connected(self, proc: Launched, askpass: AskpassServer | None) -> int:
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

    def _master_log_path(self) -> str | None:
        """The log of a master tunnelauth opened (an adopted one's log is not ours to read)."""
        return self._own.master_log if self._own is not None else None

    def last_open_failure(self) -> str | None:
        """Why the server last refused a channel, from the log of a master tunnelauth opened."""
        path = self._master_log_path()
        return sshargs.last_open_failure(log_tail(path)) if path is not None else None

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
        return await run_ssh(argv, timeout=timeout, stdin=stdin, limit=limit)

    async def close(self) -> None:
        """End a master tunnelauth opened (never one it adopted) and remove its temp dir."""
        await self._discard_master()
