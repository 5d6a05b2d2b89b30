"""``scripts/ci-reauth`` over a stand-in tunnelauth: one fleet command per provider, one row per
line from the fleet's per-host results, a port-taken line retried once alone, bad lines refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CI_REAUTH = REPO / "scripts" / "ci-reauth"

# Answers like tunnelauth --json: per-host events and fleet_done for several hosts, a single
# host's events otherwise. Host "busy" exits 5 on its first run only; "down" fails with 3.
FAKE = r"""
import json, os, sys
calls = os.environ["FAKE_CALLS"]
with open(calls, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
words = [w for w in sys.argv[1:] if not w.startswith("--")]
hosts = words[2:] if words[0] == "mcp" else words[1:]
tries = open(calls).read().count(" busy ")
def result(host):
    if host == "down":
        return 3, "cannot connect to down: No route to host"
    if host == "busy" and tries < 2:
        return 5, "port 43827 is in use by pid 1 (other)"
    return 0, "logged in"
def emit(**event):
    sys.stdout.write(json.dumps({"v": 1, **event}) + "\n")
rows = []
for host in hosts:
    code, message = result(host)
    extra = {"target": host} if len(hosts) > 1 else {}
    if code:
        emit(event="failed", exit_status=code, reason=message, hint=None, last_lines=[], **extra)
    else:
        emit(event="succeeded", exit_status=0, message=message, login="device", **extra)
    rows.append({"host": host, "exit_status": code, "message": message, "login": None,
                 "elapsed": 1.5})
first = next((r["exit_status"] for r in rows if r["exit_status"]), 0)
if len(hosts) > 1:
    emit(event="fleet_done", exit_status=first, hosts=rows)
sys.exit(first)
"""


def ci_reauth(
    tmp_path: Path, text: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake = tmp_path / "fake-tunnelauth.py"
    fake.write_text(FAKE)
    calls = tmp_path / "calls.txt"
    logins = tmp_path / "logins.txt"
    logins.write_text(text)
    proc = subprocess.run(
        [sys.executable, str(CI_REAUTH), str(logins), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TUNNELAUTH": f"{sys.executable} {fake}", "FAKE_CALLS": str(calls)},
        check=False,
    )
    return proc, calls.read_text().splitlines() if calls.exists() else []


def test_one_fleet_command_per_provider_and_a_row_per_line(tmp_path: Path) -> None:
    text = "a xai\nb spotify\ndown xai\nc mcp linear\nd xai\ne mcp linear\nf mcp github\n"
    proc, calls = ci_reauth(tmp_path, text, "--jobs", "3", "--", "--verify")
    assert calls == [
        "xai a down d --json --batch --jobs 3 --verify",
        "spotify b --json --batch --verify",
        "mcp linear c e --json --batch --jobs 3 --verify",
        "mcp github f --json --batch --verify",
    ]
    assert proc.returncode == 1, proc
    rows = [line.split() for line in proc.stdout.splitlines()[1:8]]
    assert [(r[0], r[2] if r[1] != "mcp" else r[3]) for r in rows] == [
        ("a", "ok"),
        ("b", "ok"),
        ("down", "FAILED"),
        ("c", "ok"),
        ("d", "ok"),
        ("e", "ok"),
        ("f", "ok"),
    ], proc.stdout
    down = proc.stdout.splitlines()[3]
    assert " 3 " in down and "1.5" in down and "No route to host" in down, down
    assert "6 ok, 1 failed" in proc.stdout


def test_a_line_whose_port_was_taken_is_retried_once_alone(tmp_path: Path) -> None:
    proc, calls = ci_reauth(tmp_path, "a spotify\nbusy spotify\n")
    assert calls == ["spotify a busy --json --batch", "spotify busy --json --batch"]
    assert proc.returncode == 0, proc
    busy = proc.stdout.splitlines()[2].split()
    assert busy[:5] == ["busy", "spotify", "ok", "0", "2"], proc.stdout


def test_a_pattern_or_a_group_is_not_one_host(tmp_path: Path) -> None:
    for host in ("web-*", "@agents"):
        proc, calls = ci_reauth(tmp_path, f"remote spotify\n{host} xai\n")
        assert proc.returncode == 2, proc
        assert f"line 2: {host!r} is not one host" in proc.stderr
        assert calls == []
