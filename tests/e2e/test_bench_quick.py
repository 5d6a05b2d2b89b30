"""CI keeps the benchmark alive: ``scripts/bench --quick`` must run to the end and print its table.

No timing is judged here. The bench builds its own bed, so this follows the bed policy of
``tests/conftest.py`` directly: skipped without root (or ``ip``/sshd) outside CI, failed in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bed import SSHD

REPO = Path(__file__).resolve().parent.parent.parent
BENCH = REPO / "scripts" / "bench"
DEADLINE = 240  # seconds; a quick run takes about 40 s (15 of them the fleet rows)
TRANSPORT_ROWS = ("`--backend openssh`", "`--backend asyncssh`", "`--backend paramiko`")

pytestmark = pytest.mark.bed


def _missing() -> list[str]:
    """What the bench's bed needs and this machine lacks (the policy of tests/conftest.py)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    if shutil.which("ip") is None:
        missing.append("ip (iproute2)")
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    return missing


def test_bench_quick_completes_and_prints_its_table() -> None:
    missing = _missing()
    if missing:
        reason = "scripts/bench builds the network-namespace SSH bed, which needs "
        reason += ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(reason)
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the bench unwinds on SIGTERM and removes its bed
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"scripts/bench --quick took over {DEADLINE} s\n{out}\n{err[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err[-3000:]}"
    # The targets of each latency and of the whole run, stated but not judged in a quick run.
    assert out.count("Quick run: not judged.") == 4, out
    for heading in ("#### +0 ms RTT per hop", "#### +50 ms RTT per hop"):
        assert heading in out, out
    for row in ("floor: `ssh -J bastion remote true`", "manual recipe", *TRANSPORT_ROWS):
        assert out.count(row) >= 2, f"missing row {row!r}\n{out}"
    # The fleet rows: each backend logged one host and the ten hosts in (no "not working").
    assert "#### Fleet: 10 hosts behind one bastion, +50 ms RTT per hop" in out, out
    fleet = out.split("#### Fleet:", 1)[1].split("####", 1)[0]
    for backend in ("openssh", "asyncssh", "paramiko"):
        (row,) = [ln for ln in fleet.splitlines() if ln.startswith(f"| `--backend {backend}` |")]
        assert "not working" not in row and " / 1 each |" in row, row
    assert "`tunnelauth --version`" in out, out
    # Its bed (named after its pid) is gone.
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert f"tabed-{proc.pid}-" not in ns.stdout, f"the bench left a namespace: {ns.stdout}"
    assert not list(Path("/run/tabed").glob(f"tabed-{proc.pid}-*")), "the bench left its record"
