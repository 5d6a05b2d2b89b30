"""A jump host that cannot be reached is named in the one-line failure, on every backend.

The real CLI runs in a subprocess with the system ssh, through a jump host on a loopback
address where a socket is bound but not listening (so the connection is refused at once).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunnelauth.status import ExitStatus

DEADLINE = 60.0
JUMP_ADDRESS = "127.0.0.2"  # another loopback address than the target's: the message names it


@pytest.fixture
def refusing_jump() -> Iterator[int]:
    """A port on JUMP_ADDRESS that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind((JUMP_ADDRESS, 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("backend", ["openssh", "asyncssh", "paramiko"])
def test_an_unreachable_jump_host_is_named(
    refusing_jump: int, backend: str, tmp_path: Path
) -> None:
    if backend == "openssh" and shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TUNNELAUTH_CONFIG": os.devnull,
    }
    jump = f"{JUMP_ADDRESS}:{refusing_jump}"
    config = tmp_path / "ssh_config"
    config.write_text("")  # and HOME is empty: no user ssh config is read
    args = ["spotify", "127.0.0.1", "-J", jump, "-F", str(config), "--backend", backend]
    out = subprocess.run(
        [sys.executable, "-m", "tunnelauth", *args, "--batch", "--json"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )
    assert out.returncode == ExitStatus.SSH_FAILED, out.stderr
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert failed["event"] == "failed"
    assert JUMP_ADDRESS in failed["reason"], failed["reason"]
    assert JUMP_ADDRESS in out.stderr.strip().splitlines()[0]
