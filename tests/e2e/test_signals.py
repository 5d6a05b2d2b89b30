"""Ctrl-C, SIGHUP and SIGTERM at a real terminal: ordered teardown, exit 130, terminal intact.

tunnelauth runs in a pseudo-terminal (as at a person's terminal, with ``CI`` unset) under a
bash that records ``stty -g`` before and after. The remote login must be ended through its
PTY (hermes prints ``Login cancelled.``), not cut off by a dying SSH connection.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pexpect
import pytest

from tests.bed.netbed import Bed
from tunnelauth.status import ExitStatus


def _terminal_run(bed: Bed, tmp_path: Path, *args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    command = " ".join(["tunnelauth", *args, "-F", str(bed.ssh_config), "--no-browser"])
    script = (
        f"trap 'true' INT; stty -g > {tmp_path}/before; {command}; "
        f"echo EXIT=$?; stty -g > {tmp_path}/after"
    )
    return pexpect.spawn(
        "bash", ["-c", script], env=env, encoding="utf-8", timeout=60, dimensions=(50, 200)
    )


def _tunnelauth_pid(shell: pexpect.spawn) -> int:
    import psutil

    for child in psutil.Process(shell.pid).children(recursive=True):
        if "tunnelauth" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError("tunnelauth is not running")


@pytest.mark.parametrize("how", ["ctrl-c", "SIGHUP", "SIGTERM"])
@pytest.mark.parametrize("stage", ["waiting for the browser", "waiting for approval"])
def test_interrupt_ends_the_remote_login_in_order(
    fresh: Bed, tmp_path: Path, how: str, stage: str
) -> None:
    provider, flow = ("spotify", "spotify") if "browser" in stage else ("xai", "xai-oauth")
    shell = _terminal_run(fresh, tmp_path, provider, "remote")
    shell.expect("open this page in a browser|enter this code")
    shell.expect(stage)
    if how == "ctrl-c":
        shell.sendintr()
    else:
        os.kill(_tunnelauth_pid(shell), getattr(signal, how))
    shell.expect(r"EXIT=(\d+)")
    shown, code = shell.before or "", int(shell.match.group(1))
    shell.expect(pexpect.EOF)
    assert code == ExitStatus.INTERRUPTED
    assert "interrupted by" in shown and "everything was closed" in shown
    record = fresh.fake_record(flow)
    assert record is not None
    assert record["outcome"] == "cancelled", "the remote got Ctrl-C through its PTY first"
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()


def test_ctrl_c_while_connecting(fresh: Bed, tmp_path: Path) -> None:
    slow = tmp_path / "slow_config"
    # A proxy command that only waits: the connection can only be cut while it hangs.
    slow.write_text(
        fresh.ssh_config.read_text().replace("ProxyJump bastion", "ProxyCommand sleep 30", 1)
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    script = (
        f"trap 'true' INT; stty -g > {tmp_path}/before; "
        f"tunnelauth spotify remote -F {slow} --no-browser -v; "
        f"echo EXIT=$?; stty -g > {tmp_path}/after"
    )
    shell = pexpect.spawn("bash", ["-c", script], env=env, encoding="utf-8", timeout=60)
    shell.expect("connecting")
    shell.sendintr()
    shell.expect(r"EXIT=(\d+)")
    assert int(shell.match.group(1)) == ExitStatus.INTERRUPTED
    shell.expect(pexpect.EOF)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()
    assert fresh.fake_record("spotify") is None
