"""``scripts/bench``: build a bed, time tunnelauth against the floor and the manual recipe, report.

Needs root (it builds the network-namespace bed of ``tests/bed``) and removes everything it
started: relays, a user ControlMaster, the bed itself. ``--quick`` runs each row once and never
fails on a threshold; a full run exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from tests.bed import SSHD, netbed
from tests.bench import fleet as fleet_bench
from tests.bench.measure import CALLBACK_PORT, Bench, Login, compile_bytecode, network_path
from tests.bench.report import (
    TRANSPORTS,
    USER_MASTER,
    LatencyResults,
    Results,
    checks,
    render,
    render_fleet,
)

REPO = Path(__file__).resolve().parent.parent.parent
DOC = REPO / "docs" / "performance.md"
BEGIN = "<!-- bench:begin (written by scripts/bench) -->"
END = "<!-- bench:end -->"
FLEET_BEGIN = "<!-- bench-fleet:begin (written by scripts/bench) -->"
FLEET_END = "<!-- bench-fleet:end -->"
LATENCIES = (0, 50)


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _first_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def machine_lines() -> list[str]:
    """What the numbers were measured on."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            model = found.group(1).strip()
    memory = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        if found:
            memory = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    libs = []
    for name in ("asyncssh", "paramiko", "typer"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            libs.append(f"{name} {version(name)}")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"CPU: {os.cpu_count()} × {model} (`nproc` {os.cpu_count()}); memory {memory}",
        f"kernel {platform.release()}; {platform.system()} {_os_name()}",
        f"{(ssh.stderr or ssh.stdout).strip()}; Python {platform.python_version()}; "
        + ", ".join(libs),
        f"tunnelauth tree `{commit or 'unknown'}`; load average at the start {load}",
    ]


def _os_name() -> str:
    with contextlib.suppress(OSError):
        found = re.search(r'^PRETTY_NAME="?([^"\n]+)', Path("/etc/os-release").read_text(), re.M)
        if found:
            return found.group(1)
    return ""


def missing_prerequisites() -> list[str]:
    """What the bench needs and this machine lacks (as ``tests/conftest.py`` checks)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("ip", "ssh", "setpriv"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    return missing


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every ``finally`` removes what it started."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def measure_cli(bench: Bench, results: Results, runs: int) -> None:
    """``python -c pass``, ``--version`` and ``--help``, interleaved."""
    commands = {
        "pass": [sys.executable, "-c", "pass"],
        "version": [*bench.tunnelauth, "--version"],
        "help": [*bench.tunnelauth, "--help"],
    }
    for command in commands.values():
        bench.wall(command)  # warm the page cache once
    for _ in range(runs):
        for key, command in commands.items():
            results.cli.setdefault(key, []).append(bench.wall(command))


def _login_or_broken(res: LatencyResults, scenario: str, login: Login) -> None:
    res.logins.setdefault(scenario, []).append(login)
    if not login.ok:
        res.broken.setdefault(scenario, _first_line(login.error))
        _say(f"+{res.rtt_ms} ms {scenario}: FAILED: {login.error}")


def measure_latency(
    bench: Bench, results: Results, rtt_ms: int, runs: int, transports: tuple[str, ...]
) -> None:
    """Every login scenario at one latency, round-robin so drift hits all rows alike."""
    res = LatencyResults(rtt_ms)
    results.latencies.append(res)
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(network_path(bench.bed, rtt_ms, bench.workdir))
        master: tuple[Path, int] | None = None
        if "openssh" in transports:
            try:
                master = stack.enter_context(bench.user_master(path))
            except Exception as exc:  # a bed problem is reported in the row, not raised
                res.broken[USER_MASTER] = _first_line(str(exc))
                res.logins[USER_MASTER] = []
        for run in range(runs):
            _say(f"+{rtt_ms} ms RTT per hop: run {run + 1}/{runs}")
            seconds, auths = bench.floor(path)
            res.floor.append(seconds)
            res.floor_auths.append(auths)
            if rtt_ms == LATENCIES[0]:
                results.hermes_own.append(bench.hermes_own())
            _login_or_broken(res, "manual", bench.manual_login(path))
            for transport in transports:
                if (
                    run > 0
                    and transport in res.broken
                    and not any(x.ok for x in res.logins.get(transport, []))
                ):
                    continue  # it does not work at all: do not wait for it again
                _login_or_broken(res, transport, bench.tunnelauth_login(path, transport))
            if master is not None:
                config, pid = master
                login = bench.tunnelauth_login(path, "openssh", config=config, exclude=[pid])
                _login_or_broken(res, USER_MASTER, login)


def write_doc(doc: Path, report: str, begin: str = BEGIN, end: str = END) -> None:
    """Put the report between the markers of ``doc`` (the text around them is kept)."""
    block = f"{begin}\n{report.rstrip()}\n{end}\n"
    if doc.exists():
        text = doc.read_text()
        if begin in text and end in text:
            head, _, rest = text.partition(begin)
            _, _, tail = rest.partition(end)
            doc.write_text(head + block + tail.lstrip("\n"))
            return
        doc.write_text(text.rstrip() + "\n\n" + block)
        return
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("# Performance\n\n" + block)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Time tunnelauth on the SSH test bed against the floor and the manual recipe.",
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per row (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="one run per row, no PASS/FAIL exit status (CI)"
    )
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="comma list of backends to measure (default: all three)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default: {DOC.relative_to(REPO)} for a full run, "
        "nothing for --quick)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, write no file")
    parser.add_argument(
        "--fleet-only",
        action="store_true",
        help="only the fleet rows (and only their block of the markdown file)",
    )
    parser.add_argument(
        "--fleet-size",
        type=int,
        default=fleet_bench.FLEET_SIZE,
        help=f"hosts of the fleet rows, 0 to skip them (default {fleet_bench.FLEET_SIZE})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 0 <= args.fleet_size <= fleet_bench.FLEET_SIZE:
        parser.error(f"--fleet-size must be 0 to {fleet_bench.FLEET_SIZE}")
    if args.fleet_only and not args.fleet_size:
        parser.error("--fleet-only needs a fleet (--fleet-size 1 or more)")
    args.transports = tuple(t for t in args.transports.split(",") if t)
    unknown = set(args.transports) - set(TRANSPORTS)
    if unknown:
        parser.error(f"unknown transport(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 = done (and every target met, unless quick), 1 = a miss, 2 = error."""
    args = parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        _say("needs " + ", ".join(missing) + " (it builds the network-namespace SSH bed)")
        return 2
    command = "sudo scripts/bench" + (" --quick" if args.quick else f" --runs {args.runs}")
    if args.transports != TRANSPORTS:
        command += " --transports " + ",".join(args.transports)
    if args.fleet_only:
        command += " --fleet-only"
    if args.fleet_size != fleet_bench.FLEET_SIZE:
        command += f" --fleet-size {args.fleet_size}"
    results = Results(runs=args.runs, quick=args.quick)
    machine = machine_lines()
    started = time.monotonic()
    with terminate_cleanly():
        compile_bytecode()
        machine.insert(-1, "tunnelauth's bytecode written before the runs, as an install does")
        _say("building the network-namespace SSH bed (removed afterwards)")
        bed = netbed.build()
        try:
            bed.set_fake(
                spotify_client_id="tunnelauth-bench", spotify_port=CALLBACK_PORT, record_times=True
            )
            workdir = bed.tmp / "bench"
            workdir.mkdir(mode=0o700)
            bench = Bench(bed, workdir)
            if not args.fleet_only:
                _say("command-line start-up")
                measure_cli(bench, results, 1 if args.quick else args.runs * 4)
                for rtt in LATENCIES:
                    measure_latency(bench, results, rtt, args.runs, args.transports)
            if args.fleet_size:
                _say(f"a fleet of {args.fleet_size} hosts behind the bastion")
                results.fleet = fleet_bench.measure(
                    bench, args.runs, args.transports, say=_say, size=args.fleet_size
                )
        finally:
            bed.close()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    machine[-1] += f", at the end {load}; the whole bench took {time.monotonic() - started:.0f} s"
    report = "" if args.fleet_only else render(results, machine, command)
    fleet_report = render_fleet(results, machine, command)
    print("\n".join(text for text in (report, fleet_report) if text))
    output = args.output or (None if args.quick else DOC)
    if output is not None and not args.no_write:
        if report:
            write_doc(output, report)
        if fleet_report:
            write_doc(output, fleet_report, FLEET_BEGIN, FLEET_END)
        _say(f"wrote {output}")
    if args.quick:
        return 0
    return 0 if all(c.ok is not False for c in checks(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
