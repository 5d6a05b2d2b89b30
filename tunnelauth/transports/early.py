"""Start the OpenSSH master before the heavy imports, so authentication overlaps them.

A login spends ~100 ms importing asyncio, rich and the flow before it could start ssh, and
then waits several hundred ms for ssh to authenticate. Starting the master right after the
command line is parsed lets the two overlap. Only this module's light imports run first; the
transport adopts the started master in ``connect``. Used only in batch runs: interactively, ssh
may ask for a password or a host key, and that must happen before any live display starts.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
from typing import NamedTuple

from tunnelauth import tempdirs
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import sshargs


class MasterStart(NamedTuple):
    """A private master being started: its files and the ssh process authenticating."""

    tempdir: str
    socket: str
    log_path: str
    master_log: str
    proc: subprocess.Popen[bytes]
    verbose: bool = False  # started with ssh's -v (tunnelauth -vv)


class Early(NamedTuple):
    """What was done ahead for one target: its ``ssh -G`` config, and maybe a master."""

    target: SSHTarget
    config: dict[str, str]
    master: MasterStart | None


_pending: list[Early] = []


def short_tmp() -> str | None:
    """A temp dir short enough for a control socket path (macOS limits it to 104 bytes)."""
    return "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None


def spawn_master(
    ssh: str, target: SSHTarget, config: dict[str, str], *, verbose: bool = False
) -> MasterStart:
    """Start a private ControlMaster for a batch run (it backgrounds once authenticated).

    As the transport's own: its own session (the terminal's signals reach tunnelauth alone),
    BatchMode (no prompts), stderr to a file (a pipe would be inherited by the detached
    master and never reach EOF).
    """
    tempdir = tempdirs.make(short_tmp())
    socket = os.path.join(tempdir, "m")
    master_log = os.path.join(tempdir, "master.log")
    keepalive = sshargs.keepalive_unset(config)
    argv = sshargs.master_argv(
        ssh, target, socket, batch=True, keepalive=keepalive, log=master_log, verbose=verbose
    )
    log_path = os.path.join(tempdir, "connect.log")
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
    except BaseException:
        shutil.rmtree(tempdir, ignore_errors=True)
        raise
    return MasterStart(tempdir, socket, log_path, master_log, proc, verbose)


def query_config(ssh: str, target: SSHTarget) -> dict[str, str] | None:
    """``ssh -G`` for the target, or None if ssh rejects the settings."""
    try:
        result = subprocess.run(
            sshargs.config_query_argv(ssh, target),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return sshargs.parse_config_dump(result.stdout.decode("utf-8", "replace"))


def start(target: SSHTarget, *, verbose: bool = False) -> None:
    """Ask ssh for the target's config and start the master, unless a user's master may serve.

    ``verbose``: the master runs with ssh's ``-v`` (tunnelauth's ``-vv``), as the transport's.

    Every failure is left for the transport's ``connect`` to meet again and report.
    """
    ssh = shutil.which("ssh")
    if ssh is None or os.name != "posix" or any(e.target == target for e in _pending):
        return
    config = query_config(ssh, target)
    if config is None:
        return
    master = None
    path = sshargs.existing_control_path(config)
    if target.has_connection_flags or not (path and os.path.exists(path)):
        master = spawn_master(ssh, target, config, verbose=verbose)
    _pending.append(Early(target, config, master))
    if len(_pending) == 1:
        atexit.register(discard_unclaimed)


def take(target: SSHTarget) -> Early | None:
    """The early start made for ``target``, handed over once."""
    for index, early in enumerate(_pending):
        if early.target == target:
            return _pending.pop(index)
    return None


def discard_unclaimed() -> None:
    """End every master no transport adopted (the run failed before connecting).

    Called by the entry point when the run is over (it ends the process without atexit), and
    at interpreter exit for runs that do not go through it.
    """
    while _pending:
        master = _pending.pop().master
        if master is None:
            continue
        with contextlib.suppress(OSError):
            os.killpg(master.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            master.proc.wait(5)
        if os.path.exists(master.socket):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    ["ssh", "-S", master.socket, "-O", "exit", "x"],
                    capture_output=True,
                    timeout=5,
                    check=False,
                )
        shutil.rmtree(master.tempdir, ignore_errors=True)
