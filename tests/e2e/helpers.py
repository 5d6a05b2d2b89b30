"""Running the real tunnelauth CLI against the bed, as a user would from a laptop."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.bed.netbed import Bed

RUN_DEADLINE = 120.0  # a whole login in the bed takes a few seconds; this only stops a hang


@dataclass
class Result:
    """What one tunnelauth run did."""

    code: int
    stdout: str
    stderr: str
    dom: str  # the page the browser ended on ("" if it never loaded one)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def tunnelauth(
    bed: Bed,
    *args: str,
    tmp: Path,
    backend: str | None = None,
    browser: bool = True,
    env: dict[str, str] | None = None,
    ssh_config: Path | None = None,
    deadline: float = RUN_DEADLINE,
) -> Result:
    """Run ``python -m tunnelauth ARGS`` with the bed's ssh config and Chromium as the browser."""
    dom = tmp / "dom.html"
    dom.unlink(missing_ok=True)
    # Connection options go before the subcommand (as a user may write them): `run`'s command
    # after `--` must stay untouched.
    options = ["-F", str(ssh_config or bed.ssh_config)]
    if browser:
        options += ["--browser-cmd", bed.browser_cmd(dom)]
    if backend:
        options += ["--backend", backend]
    argv = [sys.executable, "-m", "tunnelauth", *options, *args]
    full_env = {
        **os.environ,
        "TUNNELAUTH_CONFIG": os.devnull,
        "CI": "1",
        "COLUMNS": "200",
    }
    full_env.pop("TUNNELAUTH_HOST", None)
    full_env.update(env or {})
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    try:
        out, err = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        # Hung: end it as a user would (SIGTERM runs the ordered teardown), then report.
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        err += f"\n[the test ended this run after {deadline:g} s]"
    text = dom.read_text(errors="replace") if dom.exists() else ""
    return Result(proc.returncode, out, err, text)


@contextmanager
def remote_port_held(bed: Bed, port: int) -> Iterator[None]:
    """Hold 127.0.0.1:PORT inside the remote namespace for the duration."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen(); print('READY', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        bed.netns_argv("remote", [sys.executable, "-c", code]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def derived_ssh_config(bed: Bed, path: Path, extra: Sequence[str]) -> Path:
    """The bed's ssh config with ``extra`` global lines first (first value wins in ssh)."""
    path.write_text("\n".join(extra) + "\n" + bed.ssh_config.read_text())
    return path


def code_received(bed: Bed, flow: str) -> str | None:
    """The authorization code the fake hermes received for ``flow``."""
    record = bed.fake_record(flow)
    return None if record is None else record.get("code")
