"""Temp dirs a killed run left behind (control sockets, askpass) are swept by the next run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunnelauth import tempdirs
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import master

NOBODY = 65534

# A run that starts its ControlMaster (here a stand-in ssh that exits at once), says where its
# temp dir is, and waits: killing it with SIGKILL leaves the dir behind.
RUN = (
    "import sys\n"
    "from tunnelauth.settings import SSHTarget\n"
    "from tunnelauth.transports import master\n"
    "started = master.spawn(sys.argv[1], SSHTarget('box'), {}, master.make_dir(), batch=True)\n"
    "started.proc.wait()\n"
    "print(started.tempdir, flush=True)\n"
    "sys.stdin.read()\n"
)


def _fake_ssh(tmp_path: Path) -> str:
    ssh = tmp_path / "ssh"
    ssh.write_text("#!/bin/sh\nexit 0\n")
    ssh.chmod(0o755)
    return str(ssh)


def _run(ssh: str) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, ssh], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_runs_temp_dir_is_swept_and_a_live_runs_is_kept(tmp_path: Path) -> None:
    ssh = _fake_ssh(tmp_path)
    killed, killed_dir = _run(ssh)
    live, live_dir = _run(ssh)
    mine = None
    try:
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(10) == -signal.SIGKILL
        assert killed_dir.is_dir(), "SIGKILL leaves the dir (nothing can remove it then)"
        mine = master.spawn(ssh, SSHTarget("box"), {}, master.make_dir(), batch=True)  # next run
        mine.proc.wait(10)
        assert not killed_dir.exists(), "the killed run's dir was left behind"
        assert live_dir.is_dir(), "a running run's dir was removed"
    finally:
        for proc in (killed, live):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
        for path in (killed_dir, live_dir, Path(mine.tempdir) if mine else None):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(10)
    return proc.pid


def test_a_reused_pid_does_not_keep_a_dir(tmp_path: Path) -> None:
    # The pid in the name now belongs to a process that started after the dir was last
    # changed: not the run that made it.
    other = subprocess.Popen(["sleep", "600"])
    try:
        reused = tmp_path / f"tunnelauth-{other.pid}-abc123"
        reused.mkdir(mode=0o700)
        past = time.time() - 3600
        os.utime(reused, (past, past))
        fresh = tmp_path / f"tunnelauth-{other.pid}-def456"  # made by it: kept
        fresh.mkdir(mode=0o700)
        assert tempdirs.sweep(str(tmp_path)) == [str(reused)]
        assert fresh.is_dir()
    finally:
        other.kill()
        other.wait(10)


def test_only_this_users_real_dirs_of_ended_runs_are_swept(tmp_path: Path) -> None:
    dead = _dead_pid()
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp_path / f"tunnelauth-{dead}-link00"
    link.symlink_to(target)
    plain = tmp_path / f"tunnelauth-{dead}-file00"
    plain.write_text("x")
    own = tmp_path / f"tunnelauth-{os.getpid()}-own000"
    own.mkdir()
    other_names = [tmp_path / "tunnelauth-locks-0", tmp_path / "tunnelauth-abcdefgh"]
    for path in other_names:
        path.mkdir()
    stale = tmp_path / f"tunnelauth-{dead}-stale0"
    (stale / "sub").mkdir(parents=True)
    (stale / "m").write_text("socket stand-in")
    assert tempdirs.sweep(str(tmp_path)) == [str(stale)]
    assert (target / "keep").exists() and link.is_symlink() and plain.exists() and own.is_dir()
    assert all(path.is_dir() for path in other_names)


@pytest.mark.skipif(os.geteuid() != 0, reason="another user's dir needs root")
def test_another_users_dir_is_never_swept(tmp_path: Path) -> None:
    theirs = tmp_path / f"tunnelauth-{_dead_pid()}-theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    assert tempdirs.sweep(str(tmp_path)) == []
    assert theirs.is_dir()


def test_a_new_dir_is_private_and_named_after_this_run(tmp_path: Path) -> None:
    made = Path(tempdirs.make(str(tmp_path)))
    assert made.parent == tmp_path and made.name.startswith(f"tunnelauth-{os.getpid()}-")
    assert oct(made.stat().st_mode & 0o777) == "0o700"
