"""The asyncssh transport: one SSHClientConnection carries the PTY process and every channel.

Configuration comes from the user's ssh config (or only ``--ssh-config``), read by asyncssh
itself; ``-J`` hops and ProxyJump from the config are opened here, hop by hop, so every hop
gets the same strict host-key check, batch rules and keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import socket
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from tunnelauth import hostkeys, knownhosts, tempdirs
from tunnelauth.askpass import Asker
from tunnelauth.errors import HostKeyError, SSHError, UsageError, at_hop, no_terminal_error
from tunnelauth.settings import SSHTarget
from tunnelauth.transports.asyncssh_pty import pty_in_one_flight
from tunnelauth.transports.base import EXEC_OUTPUT_LIMIT, Bounded, ExecResult, Transport
from tunnelauth.transports.hops import (
    jump_chain,
    os_error_reason,
    refusal_message,
    split_hop,
    unreachable_from,
)
from tunnelauth.transports.library_log import LibraryLog
from tunnelauth.transports.prompts import CONFIRM, SECRET, Prompter
from tunnelauth.transports.sshargs import PROMPTING_METHODS, batch_prompt_refusal

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.transports.headstart import HeadStart

MAX_HOPS = 8  # a ProxyJump loop in the config must not recurse forever
CLOSE_GRACE = 2.0  # seconds the remote gets to exit after Ctrl-C before the session is ended
QUEUE_CHUNKS = 64  # output chunks buffered before the SSH window stops the remote


class _Client(asyncssh.SSHClient):  # type: ignore[misc]
    """Records what the server asked for, and asks the user (through the flow) unless batch."""

    def __init__(
        self,
        batch: bool,
        lookup: Callable[[str], str | None] = lambda option: None,
        known: knownhosts.HostKeys | None = None,
        add_to: Sequence[str] = (),
        *,
        prompter: Prompter | None = None,
        label: str = "",
        accepted_key: Any = None,
    ) -> None:
        self.batch = batch
        self.lookup = lookup  # an option's value in the user's ssh config for this host
        self.known = known or knownhosts.HostKeys("")  # what known_hosts lists for this host
        self.add_to = add_to  # the user's known_hosts files (a new key goes to the first)
        self.system_config = False  # whether ssh would read /etc/ssh/ssh_config too
        self.prompter = prompter or Prompter()
        self.label = label  # user@host, as ssh names it in its password question
        self.accepted_key = accepted_key  # a new key the user accepted on the first attempt
        self.offered_key: Any = None
        self.ask_about_key = False  # the question is asked once asyncssh has given up
        self.verdict: knownhosts.Verdict | None = None
        self.methods: list[str] = []
        self.confirming = False  # a host-key question on the terminal (no flow)

    @property
    def prompting(self) -> bool:
        """The connect deadline pauses while the user types."""
        return self.confirming or self.prompter.prompting

    # Read from the config only when needed (an unknown key, a password): asyncssh does not
    # parse these options, and the reader used for them costs ~60 ms of imports.
    @functools.cached_property
    def policy(self) -> str:
        """StrictHostKeyChecking for an unknown key (hostkeys.POLICIES)."""
        policy = hostkeys.normalize_policy(self.lookup("StrictHostKeyChecking"), accept_new=False)
        if policy == "ask" and hostkeys.never_asks(self.lookup("BatchMode")):
            policy = "yes"  # the user's BatchMode: ssh would refuse rather than ask
        # `UserKnownHostsFile none`: ssh has nowhere to record a new key and refuses it.
        return policy if self.add_to else "yes"

    @functools.cached_property
    def password_tries(self) -> int:
        """NumberOfPasswordPrompts, as ssh reads it (default 3)."""
        return _password_tries(self.lookup("NumberOfPasswordPrompts"))

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        # asyncssh calls this only for a plain key outside the trusted keys _trust gave it:
        # the verdict is then a changed, revoked or unknown key. Keep the key for the message.
        self.offered_key = key
        self.verdict = self.known.judge(key.public_data)
        if self.verdict is knownhosts.Verdict.KNOWN:
            return True
        if self.verdict is not knownhosts.Verdict.UNKNOWN:
            return False  # a changed key is never accepted
        if self.accepted_key is not None:
            return bool(key == self.accepted_key)
        if self.policy == "ask" and not self.batch and self.prompter.bound:
            # Synchronous in asyncssh: refuse now, ask once the attempt has ended (the live
            # display pauses for it), and connect again if the user accepts.
            self.ask_about_key = True
            return False
        self.confirming = True
        try:
            accepted = hostkeys.decide(
                self.policy,
                batch=self.batch,
                host=host,
                key_type=key.get_algorithm(),
                fingerprint=key.get_fingerprint("sha256"),
            )
        finally:
            self.confirming = False
        if accepted:
            self.remember(key)
        return accepted

    def remember(self, key: Any) -> None:
        """Add an accepted new key to the user's known_hosts, as ssh does."""
        hashed = knownhosts.wants_hashing(
            self.lookup("HashKnownHosts"), self.known.name, system=self.system_config
        )
        line = knownhosts.openssh(key.public_data)
        knownhosts.record(self.add_to, self.known.name, line, hashed=hashed)

    async def password_auth_requested(self) -> str | None:
        self.methods.append("password")
        if self.batch or self.methods.count("password") > self.password_tries:
            return None
        return await self.prompter.ask(f"{self.label}'s password: ")

    def kbdint_auth_requested(self) -> str | None:
        self.methods.append("keyboard-interactive")
        return None if self.batch else ""

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        if self.batch:
            return None
        answers = []
        intro = "\n".join(part for part in (name, instructions) if part)
        for prompt, echo in prompts:
            text = f"{intro}\n{prompt}" if intro else prompt
            intro = ""
            answer = await self.prompter.ask(text, CONFIRM if echo else SECRET)
            if answer is None:
                return None
            answers.append(answer)
        return answers


class AsyncSSHProcess:
    """The remote command on a PTY; output is pumped into a queue so ``read`` is cancel-safe."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_CHUNKS)
        self._ended = False
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while chunk := await self._proc.stdout.read(65536):
                await self._queue.put(chunk)
        except (asyncssh.Error, OSError):
            pass  # the link broke: the output simply ends, wait() reports None
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(b"")

    async def read(self) -> bytes:
        """Next chunk of merged output, ``b""`` at the end."""
        if self._ended:
            return b""
        chunk = await self._queue.get()
        if not chunk:
            self._ended = True
        return chunk

    def write(self, data: bytes) -> None:
        """Send bytes to the remote PTY."""
        if not self._proc.is_closing():
            with contextlib.suppress(asyncssh.Error, OSError):
                self._proc.stdin.write(data)

    def interrupt(self) -> None:
        """Ctrl-C through the PTY: the remote line discipline turns it into SIGINT."""
        self.write(b"\x03")

    async def wait(self) -> int | None:
        """The remote exit status; ``None`` if it died by a signal or the link broke."""
        await self._proc.wait_closed()
        status = self._proc.exit_status
        return None if status is None or status < 0 else int(status)

    async def close(self) -> None:
        """Interrupt the remote if it still runs, then close the session (SIGHUP there)."""
        if not self._proc.is_closing():
            self.interrupt()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait_closed()), CLOSE_GRACE)
        self._proc.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._proc.wait_closed(), CLOSE_GRACE)
        self._pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump_task


class _TCPSession(asyncssh.SSHTCPSession[bytes]):
    """Feeds a direct-tcpip channel into an asyncio.StreamReader and tracks write flow control."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.reader.feed_data(data)

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return False  # let asyncssh close our side once we finish writing

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reader.at_eof():
            self.reader.feed_eof()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class AsyncSSHChannel:
    """A direct-tcpip channel; a refused one reads as EOF and keeps the server's reason."""

    def __init__(
        self, chan: Any, session: _TCPSession | None, reader: asyncio.StreamReader, refused: str
    ) -> None:
        self._chan = chan
        self._session = session
        self.reader = reader
        self._refused = refused

    def write(self, data: bytes) -> None:
        """Queue bytes to the remote end (dropped if the channel was refused or closed)."""
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write(data)

    async def drain(self) -> None:
        """Wait until the SSH window accepts more."""
        if self._session is not None and self._chan is not None and not self._chan.is_closing():
            await self._session.writable.wait()

    def write_eof(self) -> None:
        """Half-close towards the remote."""
        if self._chan is not None and not self._chan.is_closing():
            with contextlib.suppress(asyncssh.Error, OSError):
                self._chan.write_eof()

    async def refusal(self) -> str | None:
        """The server's refusal (``administratively prohibited: …`` / ``connect failed: …``)."""
        return self._refused or None

    async def close(self) -> None:
        """Close the channel and wait until the server confirmed it."""
        if self._chan is not None:
            self._chan.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._chan.wait_closed(), CLOSE_GRACE)


def _known_hosts(options: Any) -> tuple[list[str], knownhosts.HostKeys]:
    """(the user's known_hosts files, what the files list for this host), as ssh reads them."""
    users, entries = knownhosts.load(
        _names(options.config.get("UserKnownHostsFile", None)),
        _names(options.config.get("GlobalKnownHostsFile", None)),
    )
    alias = options.host_key_alias or None
    return users, knownhosts.for_host(entries, options.host, options.port, alias)


def _host_key_algs(trusted: Sequence[Any]) -> list[str]:
    """ssh's order: the known key types first, then every other.

    asyncssh alone would offer only the known types (or only certificates, given a CA line),
    so a server with a key of another type would fail the handshake instead of being judged.
    """
    from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs

    known = [alg for key in trusted for alg in key.sig_algorithms]
    others = [*get_default_certificate_algs(), *get_default_public_key_algs()]
    return list(dict.fromkeys(alg.decode("ascii") for alg in [*known, *others]))


def _names(value: Any) -> list[str] | None:
    """A config file list as strings (None when the config does not set it)."""
    return None if value is None else [str(v) for v in value]


def _trust(known: knownhosts.HostKeys) -> tuple[list[Any], list[Any], list[Any]]:
    """known_hosts for asyncssh: the keys it may accept unasked, the CAs, the revoked keys.

    Never ``None`` (that would turn checking off); any other key reaches _Client's judgement.
    The revoked keys are asyncssh's only where a CA makes certificates acceptable (it checks
    a certificate's key and signer against them); a revoked plain key reaches _Client, which
    refuses it with its fingerprint.
    """
    revoked = set(known.revoked)
    trusted = [b for b in known.trusted if b not in revoked]

    def keys(blobs: Sequence[bytes]) -> list[Any]:
        return [asyncssh.import_public_key(knownhosts.openssh(b)) for b in blobs]

    certified = keys(known.revoked) if known.authorities else []
    return keys(trusted), keys(known.authorities), certified


class AsyncSSHTransport(Transport):
    """One asyncssh connection (plus one per jump hop) carries the process and the channels."""

    name = "asyncssh"

    def __init__(
        self,
        target: SSHTarget,
        *,
        connect_timeout: float = 30.0,
        batch: bool = False,
        keepalive_interval: float = 5.0,
        hops: HopPool | None = None,
        head_start: HeadStart | None = None,
    ) -> None:
        self.target = target
        self.head_start = head_start  # may hold the first hop's connection, opened early
        self.connect_timeout = connect_timeout
        self.batch = batch
        self.keepalive_interval = keepalive_interval
        self.hops = hops  # a fleet's shared jump chains (None: this connection opens its own)
        self._conns: list[Any] = []  # hops first, the target last (never a shared hop)
        self._passphrases: dict[str, str | None] = {}
        self._tempdir: str | None = None
        self._hop_names: dict[int, str] = {}  # id(connection to a jump host) → its spec
        self.prompter = Prompter()
        self._library_log: LibraryLog | None = None

    @property
    def conn(self) -> Any:
        """The connection to the target (after ``connect``)."""
        if not self._conns:
            raise RuntimeError("not connected")
        return self._conns[-1]

    # -- connecting ----------------------------------------------------------------------

    def _config_paths(self, *, with_overrides: bool) -> list[str]:
        """``--ssh-config`` alone (like ``ssh -F``), else ~/.ssh/config; overrides come first."""
        paths: list[str] = []
        if with_overrides and self._tempdir is not None:
            paths.append(os.path.join(self._tempdir, "overrides"))
        if self.target.ssh_config is not None:
            paths.append(str(self.target.ssh_config))
        else:
            default = Path("~/.ssh/config").expanduser()
            if os.access(default, os.R_OK):
                paths.append(str(default))
        return paths

    def _write_overrides(self) -> None:
        """``-o`` options and ``-i`` keys as a config file read first (first value wins)."""
        lines = []
        for option in self.target.options:
            key, sep, value = option.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"invalid ssh option {option!r} (expected Key=Value)")
            lines.append(f"{key.strip()} {value.strip()}")
        for identity in self.target.identity:
            # IdentityFile is %-expanded and shell-split by the config reader.
            lines.append(f"IdentityFile {shlex.quote(str(identity).replace('%', '%%'))}")
        if lines:
            self._tempdir = tempdirs.make()
            path = os.path.join(self._tempdir, "overrides")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")

    def _passphrase(self, filename: str) -> str | None:
        """Ask once per key file for its passphrase (never in batch mode)."""
        if self.batch:
            return None
        if filename not in self._passphrases:
            # Called from the worker thread that reads the config and loads the keys.
            prompt = f"Enter passphrase for key '{filename}': "
            self._passphrases[filename] = self.prompter.ask_blocking(prompt)
        return self._passphrases[filename]

    def _kwargs(self, host: str, port: int | None, user: str | None, final: bool) -> dict[str, Any]:
        """Options for one connection (the target when ``final``, else a jump hop)."""
        kwargs: dict[str, Any] = {
            "config": self._config_paths(with_overrides=final),
            "host": host,
            "port": port if port is not None else (),
            "username": user if user is not None else (),
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": 3,
            "agent_forwarding": False,
            "x11_forwarding": False,
            "connect_timeout": None,  # our own deadline below pauses while the user types
            # OpenSSH has no X.509 host authentication; asyncssh's default would also look in
            # ~/.ssh/crt and fail outright where ~/.ssh cannot be read (ssh skips it).
            "x509_trusted_certs": None,
            "x509_trusted_cert_paths": None,
        }
        if not self.batch:
            kwargs["passphrase"] = self._passphrase
            kwargs["ignore_encrypted"] = False
        return kwargs

    async def connect(
        self, *, asker: Asker | None = None, debug_log: Callable[[str], None] | None = None
    ) -> None:
        """Open the hops (``-J`` or the config's ProxyJump) and the target; authenticate each.

        ``asker``: passwords, codes, passphrases and host keys are asked through the flow
        (display paused). ``debug_log`` (``-vv``): asyncssh's own debug log goes there until
        ``close``.
        """
        if debug_log is not None:
            asyncssh.set_debug_level(1)  # never the packet dumps of level 3
            self._library_log = LibraryLog("asyncssh", debug_log)
        if asker is not None:
            self.prompter.bind(asker)
        self._write_overrides()
        try:
            hops = tuple(self.target.jump)
            tunnel = None
            if hops:
                tunnel = await self._target_tunnel(hops)
            user, host = self.target.user_and_host()
            await self._open(host, self.target.port, user, tunnel, final=True, depth=0)
        except BaseException:
            await self.close()
            raise
        finally:
            self._remove_overrides()

    async def open_hops(self, *, asker: Asker | None = None) -> None:
        """A fleet's first pass: open (or find) this host's shared jump chain, nothing else."""
        if self.hops is None:
            return
        if asker is not None:
            self.prompter.bind(asker)
        self._write_overrides()
        try:
            hops = tuple(self.target.jump)
            if not hops:
                kwargs = self._kwargs(self.target.host, self.target.port, self.target.login, True)
                # Only the ProxyJump is read: no key is loaded (nor its passphrase asked) here.
                kwargs.pop("passphrase", None)
                kwargs["client_keys"] = None
                options = await asyncio.to_thread(
                    lambda: asyncssh.SSHClientConnectionOptions(**kwargs)
                )
                hops = jump_chain(options.tunnel if isinstance(options.tunnel, str) else None)
            if hops:
                await self._target_tunnel(hops)
        except (ValueError, asyncssh.Error) as exc:
            raise UsageError(f"ssh configuration for {self.target.host}: {exc}") from exc
        finally:
            self._remove_overrides()

    async def _target_tunnel(self, hops: Sequence[str]) -> Any:
        """The connection the target is reached through: the fleet's shared one, or our own."""
        if self.hops is None:
            return await self._open_chain(hops, depth=1)
        from tunnelauth.hoppool import hop_key

        key = hop_key(self.name, hops, self._config_paths(with_overrides=False))

        async def open_shared() -> _SharedChain:
            conns: list[Any] = []
            try:
                await self._open_chain(hops, depth=1, into=conns)
            except BaseException:
                await _close_all(conns)
                raise
            return _SharedChain(conns, hops[-1])

        async def usable(chain: _SharedChain) -> bool:
            return not chain.tunnel.is_closed()

        chain = await self.hops.get(key, open_shared, target=self.target.host, usable=usable)
        self._hop_names[id(chain.tunnel)] = chain.spec
        return chain.tunnel

    async def _open_chain(
        self, hops: Sequence[str], depth: int, into: list[Any] | None = None
    ) -> Any:
        """Connect hop after hop, each through the previous one; returns the last.

        The connections go to ``into`` (a shared chain's list), else to this transport's.
        """
        tunnel = None
        for spec in hops:
            user, host, port = split_hop(spec)
            try:
                tunnel = await self._open(
                    host, port, user, tunnel, final=False, depth=depth, into=into
                )
            except SSHError as exc:
                raise at_hop(exc, spec, self.target.host) from None
            self._hop_names[id(tunnel)] = spec
        return tunnel

    async def _open(
        self,
        host: str,
        port: int | None,
        user: str | None,
        tunnel: Any,
        *,
        final: bool,
        depth: int,
        into: list[Any] | None = None,
    ) -> Any:
        """One authenticated connection to ``host``; ProxyJump from the config when no tunnel.

        It is kept in ``into`` (a shared chain's list), else in this transport's.
        """
        if depth > MAX_HOPS:
            raise UsageError(f"more than {MAX_HOPS} jump hops (a ProxyJump loop?)")
        kwargs = self._kwargs(host, port, user, final)
        try:
            options = await asyncio.to_thread(lambda: asyncssh.SSHClientConnectionOptions(**kwargs))
        except (ValueError, OSError, asyncssh.Error) as exc:
            raise UsageError(f"ssh configuration for {host}: {exc}") from exc
        if tunnel is None and not (final and self.target.jump):
            hops = jump_chain(options.tunnel if isinstance(options.tunnel, str) else None)
            if hops and final:
                tunnel = await self._target_tunnel(hops)
            elif hops:
                tunnel = await self._open_chain(hops, depth + 1, into=into)
        add_to, known = _known_hosts(options)
        kwargs["known_hosts"] = trust = _trust(known)
        if not options.config.get("HostKeyAlgorithms"):
            kwargs["server_host_key_algs"] = _host_key_algs(trust[0])
        kwargs["tunnel"] = tunnel
        lookup = partial(hostkeys.config_value, self._config_paths(with_overrides=final), host)
        asking: dict[str, Any] = {"prompter": self.prompter, "label": f"{options.username}@{host}"}
        client = _Client(self.batch, lookup, known, add_to, **asking)
        client.system_config = self.target.ssh_config is None
        kwargs["client_factory"] = lambda: client
        try:
            sock = self._early_socket(options, tunnel)
        except TimeoutError:
            raise SSHError(
                f"connecting to {host} timed out after {self.connect_timeout:g} s", host=host
            ) from None
        try:
            conn = await self._connect_with_deadline(host, {**kwargs, "sock": sock}, client)
        except HostKeyError:
            key = client.offered_key
            if not client.ask_about_key or key is None:
                raise
            fingerprint = key.get_fingerprint("sha256")
            question = hostkeys.question(host, key.get_algorithm(), fingerprint)
            if not await self.prompter.confirm_key(question, fingerprint):
                raise
            client.remember(key)
            # Once more, with the key the user accepted (nothing was authenticated yet).
            again = _Client(self.batch, lookup, known, add_to, **asking, accepted_key=key)
            again.system_config = client.system_config
            kwargs["client_factory"] = lambda: again
            conn = await self._connect_with_deadline(host, kwargs, again)
        (self._conns if into is None else into).append(conn)
        return conn

    def _early_socket(self, options: Any, tunnel: Any) -> socket.socket | None:
        """The first hop's TCP connection opened during the imports, if it goes where asyncssh
        would connect (no tunnel, proxy command or host name canonicalization in the way)."""
        if tunnel is not None or options.proxy_command:
            return None
        if str(options.config.get("CanonicalizeHostname", "no")).lower() not in ("no", "false"):
            return None
        if self.head_start is None:
            return None
        return self.head_start.take_socket(options.host, options.port, self.connect_timeout)

    async def _connect_with_deadline(
        self, host: str, kwargs: dict[str, Any], client: _Client
    ) -> Any:
        """``asyncssh.connect`` under ``connect_timeout``, not counting time spent at a prompt."""
        kwargs = dict(kwargs)
        task = asyncio.ensure_future(asyncssh.connect(kwargs.pop("host"), **kwargs))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.connect_timeout)
                if done:
                    return task.result()
                if not client.prompting:
                    raise SSHError(
                        f"connecting to {host} timed out after {self.connect_timeout:g} s",
                        host=host,
                    )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _host_key_error(host, exc, client) from None
        except asyncssh.PermissionDenied as exc:
            raise _auth_error(host, exc, client, self.batch) from None
        except asyncssh.ChannelOpenError as exc:
            via = self._hop_names.get(id(kwargs.get("tunnel")))
            reason = refusal_message(exc.code, exc.reason)
            message = f"cannot connect to {host}: {unreachable_from(via, reason)}"
            raise SSHError(message, host=host) from None
        except (asyncssh.Error, OSError) as exc:
            reason = os_error_reason(exc, host, kwargs.get("port") or None)
            raise SSHError(f"cannot connect to {host}: {reason}", host=host) from None
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _remove_overrides(self) -> None:
        if self._tempdir is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._tempdir, "overrides"))
                os.rmdir(self._tempdir)
            self._tempdir = None

    # -- using the connection ------------------------------------------------------------

    async def start(self, command: str) -> AsyncSSHProcess:
        """Run ``command`` on a PTY (bytes, stderr merged)."""
        try:
            with pty_in_one_flight():  # pty-req and exec in one round trip, as OpenSSH sends them
                proc = await self.conn.create_process(
                    command,
                    term_type="xterm",
                    term_size=(1000, 50),
                    request_pty="force",  # a config's RequestTTY must not take the PTY away
                    encoding=None,
                    stderr=asyncssh.STDOUT,
                )
        except (asyncssh.Error, OSError) as exc:
            code = exc.code if isinstance(exc, asyncssh.ChannelOpenError) else None
            if code == asyncssh.OPEN_REQUEST_PTY_FAILED:
                raise no_terminal_error(self.target.host) from exc
            message = f"cannot start the remote command: {exc}"
            raise SSHError(message, host=self.target.host) from exc
        return AsyncSSHProcess(proc)

    async def open_channel(self, host: str, port: int) -> AsyncSSHChannel:
        """A direct-tcpip channel to ``host:port`` on the remote; a refusal reads as EOF."""
        reader = asyncio.StreamReader()
        try:
            chan, session = await self.conn.create_connection(
                lambda: _TCPSession(reader), host, port
            )
        except asyncssh.ChannelOpenError as exc:
            reader.feed_eof()
            return AsyncSSHChannel(None, None, reader, refusal_message(exc.code, exc.reason))
        return AsyncSSHChannel(chan, session, reader, "")

    async def exec(
        self, command: str, *, stdin: bytes = b"", timeout: float, limit: int = EXEC_OUTPUT_LIMIT
    ) -> ExecResult:
        """Run a short command without a PTY; keep at most ``limit`` bytes of each stream."""
        out, err = Bounded(limit), Bounded(limit)

        async def drain(stream: Any, into: Bounded) -> None:
            while chunk := await stream.read(65536):
                into.add(chunk)

        async def run() -> int | None:
            proc = await self.conn.create_process(command, encoding=None, request_pty=False)
            try:
                # A command that has already exited closes the channel: nothing to send.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, asyncssh.Error):
                    proc.stdin.write(stdin)
                    proc.stdin.write_eof()
                await asyncio.gather(drain(proc.stdout, out), drain(proc.stderr, err))
                completed = await proc.wait(check=False)
                status: int | None = completed.exit_status
                return status
            finally:
                proc.close()

        try:
            status = await asyncio.wait_for(run(), timeout)
        except (asyncssh.Error, OSError) as exc:
            raise SSHError(f"remote command failed to run: {exc}", host=self.target.host) from exc
        return ExecResult(
            None if status is None or status < 0 else int(status),
            out.value(),
            err.value(),
            out.cut or err.cut,
        )

    async def close(self) -> None:
        """Close the target connection, then each hop in reverse order."""
        self.prompter.cancel()  # a key-loading thread waiting for a passphrase ends now
        await _close_all(self._conns)
        self._remove_overrides()
        if self._library_log is not None:
            self._library_log.stop()
            self._library_log = None


async def _close_all(conns: list[Any]) -> None:
    """Close connections, the newest first (the target before its hops)."""
    while conns:
        conn = conns.pop()
        conn.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.wait_closed(), CLOSE_GRACE)


class _SharedChain:
    """A fleet's jump chain: its connections, the last one carrying every target's tunnel."""

    def __init__(self, conns: list[Any], spec: str) -> None:
        self.conns = conns
        self.spec = spec  # the last hop as ProxyJump names it

    @property
    def tunnel(self) -> Any:
        """The connection to the last hop (targets' connections go through it)."""
        return self.conns[-1]

    async def close(self) -> None:
        """Close the hops, the last first."""
        await _close_all(self.conns)


def _password_tries(value: str | None) -> int:
    """NumberOfPasswordPrompts from the config (ssh's default is 3)."""
    try:
        return max(0, int(value)) if value else 3
    except ValueError:
        return 3


def _host_key_error(host: str, exc: Exception, client: _Client) -> HostKeyError:
    """An unknown or changed host key, with the server key's fingerprint when seen."""
    key, verdict = client.offered_key, client.verdict
    if key is not None and verdict is not None:
        fingerprint = key.get_fingerprint("sha256")
        message = knownhosts.refusal(verdict, host, client.known.name, fingerprint)
        if verdict is knownhosts.Verdict.UNKNOWN and client.batch and client.policy == "ask":
            message += "; a batch run cannot ask (--accept-new adds a new key)"
    elif "revoked" in str(exc):  # a CA's host: asyncssh refuses a revoked key before _Client
        message = f"host key for {host} could not be verified: the server offers a key that "
        message += "known_hosts marks @revoked"
    else:
        message = f"host key for {host} could not be verified: {exc}"
    return HostKeyError(
        message,
        host=host,
        hint="check the key with the host's owner, then add it to known_hosts "
        "(tunnelauth never turns host-key checking off)",
    )


def _auth_error(host: str, exc: Exception, client: _Client, batch: bool) -> SSHError:
    """Authentication failed; name the method the server wanted when batch mode skipped it."""
    wanted = [m for m in PROMPTING_METHODS if m in client.methods]
    if batch and wanted:
        message, hint = batch_prompt_refusal(host, wanted)
        return SSHError(message, host=host, hint=hint)
    return SSHError(
        f"SSH authentication to {host} failed: {exc}",
        host=host,
        hint="check `ssh HOST true` works with the same options",
    )
