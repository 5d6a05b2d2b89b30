"""The private OpenSSH ControlMaster: its config query, its one spawn and its one end.

The transport (``openssh.py``) starts its master here, and so does the head start of a batch
run, right after the command line is parsed: a login spends ~100 ms importing asyncio, rich and
the flow, then waits several hundred ms for ssh to authenticate, and starting the master first
lets the two overlap. The transport then adopts that master instead of starting one.

Light on purpose (no asyncio, no dataclasses): the head start runs before the heavy imports.
Every call blocks; the transport runs them on a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from typing import NamedTuple

from tunnelauth import tempdirs
from tunnelauth.errors import UsageError
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import sshargs

CONFIG_DEADLINE = 10.0  # seconds for ``ssh -G``
END_DEADLINE = 5.0  # seconds for the master's exit and for ``ssh -O exit``


class Master:
    """A private master: its files and the ssh process started to authenticate it.

    Once authenticated that process has exited (``-f``) and the master listens on ``socket``.
    """

    def __init__(self, tempdir: str, proc: subprocess.Popen[bytes]) -> None:
        self.tempdir = tempdir
        self.proc = proc

    @property
    def socket(self) -> str:
        """The control socket the master listens on once authenticated."""
        return socket_in(self.tempdir)

    @property
    def connect_log(self) -> str:
        """The stderr of the first ssh process (and of the jump hosts' ssh)."""
        return os.path.join(self.tempdir, "connect.log")

    @property
    def master_log(self) -> str:
        """The master's own log (``-E``)."""
        return os.path.join(self.tempdir, "master.log")


class Ahead(NamedTuple):
    """What a batch run's head start did for its OpenSSH target: its config, maybe a master."""

    ssh: str
    target: SSHTarget
    config: dict[str, str]
    master: Master | None


def short_tmp() -> str | None:
    """A temp dir short enough for a control socket path (macOS limits it to 104 bytes)."""
    return "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None


def make_dir() -> str:
    """A private temp dir for a master's socket and logs (and an askpass socket)."""
    return tempdirs.make(short_tmp())


def socket_in(tempdir: str) -> str:
    """The control socket's path in a master's temp dir."""
    return os.path.join(tempdir, "m")


def query_config(
    ssh: str, target: SSHTarget, *, timeout: float = CONFIG_DEADLINE
) -> dict[str, str]:
    """``ssh -G`` for the target; UsageError with ssh's words if it rejects the settings.

    OSError or subprocess.TimeoutExpired when ssh cannot run or does not answer in time.
    """
    result = subprocess.run(
        sshargs.config_query_argv(ssh, target),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise UsageError(f"ssh rejected the connection settings: {message}")
    return sshargs.parse_config_dump(result.stdout.decode("utf-8", "replace"))


def spawn(
    ssh: str,
    target: SSHTarget,
    config: Mapping[str, str],
    tempdir: str,
    *,
    batch: bool,
    verbose: bool = False,
    env: Mapping[str, str] | None = None,
) -> Master:
    """Start the master in ``tempdir`` (it backgrounds itself once authenticated).

    It runs in its own session, without the terminal: the terminal's Ctrl-C reaches
    tunnelauth alone, which then ends the remote login in order. Its stderr goes to a file: a
    pipe would be inherited by the detached master and never reach EOF. ``batch``: BatchMode,
    no prompts; otherwise ssh asks through the askpass ``env`` names.
    """
    master_log = os.path.join(tempdir, "master.log")
    argv = sshargs.master_argv(
        ssh,
        target,
        socket_in(tempdir),
        batch=batch,
        keepalive=sshargs.keepalive_unset(config),
        log=master_log,
        verbose=verbose,
    )
    with open(os.path.join(tempdir, "connect.log"), "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    return Master(tempdir, proc)


def start(target: SSHTarget, *, verbose: bool = False) -> Ahead | None:
    """A batch run's head start: ask ssh for the config, start the master unless a user's
    master may serve (its socket exists). None without ssh, or where ssh rejects the settings:
    the transport meets every failure again and reports it.

    ``verbose``: the master runs with ssh's ``-v`` (tunnelauth's ``-vv``), as the transport's.
    """
    ssh = shutil.which("ssh")
    if ssh is None or os.name != "posix":
        return None
    try:
        config = query_config(ssh, target)
    except (UsageError, OSError, subprocess.TimeoutExpired):
        return None
    path = sshargs.existing_control_path(config)
    if not target.has_connection_flags and path and os.path.exists(path):
        return Ahead(ssh, target, config, None)
    tempdir = make_dir()
    try:
        master = spawn(ssh, target, config, tempdir, batch=True, verbose=verbose)
    except BaseException:
        shutil.rmtree(tempdir, ignore_errors=True)
        raise
    return Ahead(ssh, target, config, master)


def end(master: Master, ssh: str, target: SSHTarget) -> None:
    """End a master, authenticated or not, and remove its temp dir.

    A process still authenticating is killed with its group; a master that listens is told to
    exit (``ssh -O exit``): it left that group when it went to the background.
    """
    if master.proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(master.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        master.proc.wait(END_DEADLINE)
    if os.path.exists(master.socket):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                sshargs.control_argv(ssh, target, master.socket, "exit"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=END_DEADLINE,
                check=False,
                start_new_session=True,
            )
    shutil.rmtree(master.tempdir, ignore_errors=True)
