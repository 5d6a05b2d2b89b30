"""Turn the measurements into markdown tables (medians, ratios) and say which targets held."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.bench.fleet import FleetLogin, FleetResults
from tests.bench.measure import Login

TRANSPORTS = ("openssh", "asyncssh", "paramiko")
USER_MASTER = "openssh+user-master"
BROWSER_SLACK = 0.150  # seconds allowed over floor + the remote's own time
EXIT_LIMIT = 0.300  # seconds from the success line to exit
VERSION_SLACK = 0.050  # seconds over a bare `python -c pass`
RSS_LIMIT = 60 * 1024 * 1024  # bytes, the tunnelauth process with the openssh transport
FLEET_BASTION_AUTHS = 1  # one bastion authentication for the whole fleet (a shared hop)
FLEET_RATIO_LIMIT = 2.0  # all hosts' device-code logins at most twice one host's
FLEET_RSS_LIMIT = 80 * 1024 * 1024  # bytes, the tunnelauth process logging the fleet in


@dataclass
class LatencyResults:
    """Everything measured at one added latency."""

    rtt_ms: int
    floor: list[float] = field(default_factory=list)
    floor_auths: list[dict[str, int]] = field(default_factory=list)
    logins: dict[str, list[Login]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # scenario → why it does not work


@dataclass
class Results:
    """The whole run."""

    runs: int
    quick: bool
    hermes_own: list[float] = field(default_factory=list)
    cli: dict[str, list[float]] = field(default_factory=dict)  # "pass", "version", "help"
    latencies: list[LatencyResults] = field(default_factory=list)
    fleet: FleetResults | None = None


@dataclass
class Check:
    """One target row."""

    name: str
    measured: str
    limit: str
    ratio: float | None
    ok: bool | None  # None: could not be judged (e.g. the transport does not work)
    group: str = ""  # where the report states it: a latency ("+0 ms") or "overall"


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def ms(value: float | None) -> str:
    """Seconds as whole milliseconds."""
    return "—" if value is None else f"{value * 1000:.0f} ms"


def mb(value: float | None) -> str:
    """Bytes as MB with one decimal."""
    return "—" if value is None else f"{value / 1024 / 1024:.1f} MB"


def ratio(value: float | None, base: float | None) -> str:
    """``value / base`` with two decimals."""
    if value is None or not base:
        return "—"
    return f"{value / base:.2f}"


def _good(logins: Sequence[Login]) -> list[Login]:
    return [login for login in logins if login.ok]


def _med(logins: Sequence[Login], key: Callable[[Login], float | None]) -> float | None:
    values = [v for v in (key(login) for login in _good(logins)) if v is not None]
    return median(values)


def _spread(logins: Sequence[Login], key: Callable[[Login], float | None]) -> str:
    """`` (min–max)`` over the completed runs when there is more than one."""
    values = [v for v in (key(login) for login in _good(logins)) if v is not None]
    if len(values) < 2:
        return ""
    return f" ({min(values) * 1000:.0f}–{max(values) * 1000:.0f})"


def _range(values: Sequence[float]) -> str:
    """`` (min–max)`` of plain values when there is more than one."""
    if len(values) < 2:
        return ""
    return f" ({min(values) * 1000:.0f}–{max(values) * 1000:.0f})"


def _auth_text(auths: Sequence[dict[str, int]]) -> str:
    """``b/r`` when every run agrees, else the distinct values."""
    seen = sorted({f"{a.get('bastion', 0)}/{a.get('remote', 0)}" for a in auths})
    return ", ".join(seen) if seen else "—"


def _label(scenario: str) -> str:
    if scenario == "manual":
        return "manual recipe: `ssh -N -L P:…` + `ssh -tt remote hermes …`"
    if scenario == USER_MASTER:
        return "tunnelauth, openssh, user's live ControlMaster"
    return f"tunnelauth `--backend {scenario}`"


def latency_table(res: LatencyResults, hermes_own: float | None) -> list[str]:
    """The side-by-side table for one latency."""
    floor = median(res.floor)
    lines = [
        f"#### +{res.rtt_ms} ms RTT per hop",
        "",
        "| | to browser, median (min–max) | ÷ floor | port printed → browser "
        "| exit after success line | start → exit | SSH auths bastion/remote "
        "| TCP conns bastion/remote | tunnelauth peak RSS | its ssh processes |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| floor: `ssh -J bastion remote true` | {ms(floor)}{_range(res.floor)} (whole command) "
        "| 1.00 | | "
        f"| {ms(floor)} | {_auth_text(res.floor_auths)} | | | |",
        f"| the fake hermes' own time to print its port (no SSH) | {ms(hermes_own)} | | | | | "
        "| | | |",
    ]
    for scenario, logins in res.logins.items():
        label = _label(scenario)
        if scenario in res.broken and not _good(logins):
            lines.append(f"| {label} | **not working**: {res.broken[scenario]} |" + " |" * 8)
            continue
        good = _good(logins)
        failed = len(logins) - len(good)
        note = f" ({failed}/{len(logins)} runs failed)" if failed else ""
        to_browser = _med(logins, lambda x: x.to_browser)
        rss = _med(logins, lambda x: x.rss)
        ssh_rss = _med(logins, lambda x: x.ssh_rss)
        ssh_count = max((x.ssh_count for x in good), default=0)
        tcp = [x.tcp for x in good if x.tcp]
        ssh_text = f"{ssh_count} seen, {mb(ssh_rss)} at most at once" if ssh_count else ""
        lines.append(
            f"| {label}{note} | {ms(to_browser)}{_spread(logins, lambda x: x.to_browser)} "
            f"| {ratio(to_browser, floor)} "
            f"| {ms(_med(logins, lambda x: x.port_to_browser))} "
            f"| {ms(_med(logins, lambda x: x.exit_after_success))} "
            f"| {ms(_med(logins, lambda x: x.total))} | {_auth_text([x.auths for x in good])} "
            f"| {_auth_text(tcp) if tcp else ''} | {mb(rss) if rss else ''} | {ssh_text} |"
        )
    return lines


def cli_table(cli: dict[str, list[float]]) -> list[str]:
    """Start-up of the command line itself."""
    base = median(cli.get("pass", []))
    rows = (
        ("pass", "`python -c pass` (same interpreter)"),
        ("version", "`tunnelauth --version`"),
        ("help", "`tunnelauth --help`"),
    )
    lines = ["| command | median wall time | ÷ python -c pass |", "|---|---|---|"]
    for key, label in rows:
        value = median(cli.get(key, []))
        lines.append(f"| {label} | {ms(value)} | {ratio(value, base)} |")
    return lines


def checks(results: Results) -> list[Check]:
    """Every target of the issue, judged on the medians (authentications on every run)."""
    out: list[Check] = []
    own = median(results.hermes_own)
    for res in results.latencies:
        at = f"+{res.rtt_ms} ms"
        floor = median(res.floor)
        for scenario in TRANSPORTS:
            if scenario not in res.logins and scenario not in res.broken:
                continue  # not measured in this run (--transports)
            logins = res.logins.get(scenario, [])
            good = _good(logins)
            broken = res.broken.get(scenario) if not good else None
            label = f"{scenario}, {at}"
            if broken is not None or not good:
                why = f"not working: {broken or 'no successful run'}"
                for what in ("1 SSH auth per host per login", "time to browser", "exit after"):
                    out.append(Check(f"{what}, {label}", why, "", None, False, at))
                continue
            auths = [x.auths for x in good]
            one_each = all(a.get("bastion") == 1 and a.get("remote") == 1 for a in auths)
            lost = len(logins) - len(good)
            failed = f" ({lost} failed runs left out)" if lost else ""
            out.append(
                Check(
                    f"1 SSH auth per host per login, {label}",
                    f"{_auth_text(auths)} in all {len(good)} completed logins{failed}",
                    "1/1",
                    None,
                    one_each,
                    at,
                )
            )
            to_browser = _med(logins, lambda x: x.to_browser)
            if floor is not None and own is not None and to_browser is not None:
                limit = floor + own + BROWSER_SLACK
                out.append(
                    Check(
                        f"time to browser, {label}",
                        ms(to_browser),
                        f"{ms(limit)} = floor {ms(floor)} + hermes {ms(own)} + 150 ms",
                        to_browser / limit,
                        to_browser <= limit,
                        at,
                    )
                )
            exit_after = _med(logins, lambda x: x.exit_after_success)
            if exit_after is not None:
                out.append(
                    Check(
                        f"exit after the success line, {label}",
                        ms(exit_after),
                        ms(EXIT_LIMIT),
                        exit_after / EXIT_LIMIT,
                        exit_after <= EXIT_LIMIT,
                        at,
                    )
                )
        master = res.logins.get(USER_MASTER, [])
        good = _good(master)
        if master:
            zero = bool(good) and all(not any(x.auths.values()) for x in good)
            out.append(
                Check(
                    f"0 new SSH auths with a live user ControlMaster, openssh, {at}",
                    f"{_auth_text([x.auths for x in good])} in all {len(good)} completed logins"
                    if good
                    else f"not working: {res.broken.get(USER_MASTER, 'no successful run')}",
                    "0/0",
                    None,
                    zero,
                    at,
                )
            )
    base, version = median(results.cli.get("pass", [])), median(results.cli.get("version", []))
    if base is not None and version is not None:
        limit = base + VERSION_SLACK
        out.append(
            Check(
                "`tunnelauth --version`",
                ms(version),
                f"{ms(limit)} = python -c pass {ms(base)} + 50 ms",
                version / limit,
                version <= limit,
                "overall",
            )
        )
    rss_values = [
        x.rss for res in results.latencies for x in _good(res.logins.get("openssh", [])) if x.rss
    ]
    ssh_values = [
        x.ssh_rss
        for res in results.latencies
        for x in _good(res.logins.get("openssh", []))
        if x.ssh_rss
    ]
    if results.fleet is not None:
        out += fleet_checks(results.fleet)
    rss = median(rss_values)
    if rss is not None:
        out.append(
            Check(
                "peak RSS of the tunnelauth process, openssh",
                f"{mb(rss)} (largest {mb(max(rss_values))}; its ssh processes "
                f"{mb(median(ssh_values))} at most at once)",
                mb(RSS_LIMIT),
                rss / RSS_LIMIT,
                rss <= RSS_LIMIT,
                "overall",
            )
        )
    return out


FLEET = "fleet"  # the group of the fleet checks


def _fleet_good(logins: Sequence[FleetLogin]) -> list[FleetLogin]:
    return [login for login in logins if login.ok]


def _fleet_med(
    logins: Sequence[FleetLogin], key: Callable[[FleetLogin], float | None]
) -> float | None:
    return median([v for v in (key(x) for x in _fleet_good(logins)) if v is not None])


def _fleet_spread(logins: Sequence[FleetLogin]) -> str:
    return _range([x.total for x in _fleet_good(logins) if x.total is not None])


def _fleet_auths(logins: Sequence[FleetLogin]) -> str:
    """Bastion authentications per run, and what each target's sshd accepted."""
    good = _fleet_good(logins)
    if not good:
        return "—"
    bastion = ", ".join(str(n) for n in sorted({x.bastion_auths for x in good}))
    targets = sorted({n for x in good for n in x.target_auths.values()})
    return f"{bastion} / {', '.join(str(n) for n in targets)} each"


def fleet_transports(fleet: FleetResults) -> list[str]:
    """The transports measured, in the order they ran."""
    return list(dict.fromkeys(transport for transport, _ in fleet.logins))


def fleet_table(fleet: FleetResults) -> list[str]:
    """Per transport: the whole fleet's run next to one host's."""
    size, rtt = fleet.size, fleet.rtt_ms
    lines = [f"#### Fleet: {size} hosts behind one bastion, +{rtt} ms RTT per hop", ""]
    if fleet.broken:
        return [*lines, f"**not working**: {fleet.broken}"]
    lines += [
        f"| `tunnelauth nous` | {size} hosts: start → exit, median (min–max) | 1 host | ÷ "
        f"| SSH auths bastion / each target | tunnelauth peak RSS | its ssh processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for transport in fleet_transports(fleet):
        ones = fleet.logins.get((transport, 1), [])
        logins = fleet.logins.get((transport, size), [])
        good = _fleet_good(logins)
        label = f"`--backend {transport}`"
        if not good:
            reason = next((x.error for x in logins if x.error), "no run")
            lines.append(f"| {label} | **not working**: {reason} |" + " |" * 5)
            continue
        failed = sum(not x.ok for x in (*logins, *ones))
        note = f" ({failed} of {len(logins) + len(ones)} runs failed)" if failed else ""
        total = _fleet_med(logins, lambda x: x.total)
        one = _fleet_med(ones, lambda x: x.total)
        ssh_rss = _fleet_med(logins, lambda x: x.ssh_rss)
        ssh_count = max(x.ssh_count for x in good)
        ssh_text = f"{ssh_count} seen, {mb(ssh_rss)} at most at once" if ssh_count else ""
        lines.append(
            f"| {label}{note} | {ms(total)}{_fleet_spread(logins)} | {ms(one)} "
            f"| {ratio(total, one)} | {_fleet_auths(logins)} "
            f"| {mb(_fleet_med(logins, lambda x: x.rss))} | {ssh_text} |"
        )
    return lines


def fleet_checks(fleet: FleetResults) -> list[Check]:
    """Per transport: one bastion authentication, all hosts ≤ 2× one host, peak RSS."""
    out: list[Check] = []
    size = fleet.size
    transports = fleet_transports(fleet)
    if fleet.broken:
        return [Check("fleet logins", f"not working: {fleet.broken}", "", None, False, FLEET)]
    for transport in transports:
        logins = fleet.logins.get((transport, size), [])
        good = _fleet_good(logins)
        one = _fleet_med(fleet.logins.get((transport, 1), []), lambda x: x.total)
        label = transport
        if not good or one is None:
            why = "not working: " + next((x.error for x in logins if x.error), "no run")
            for what in ("bastion authentications", f"{size} hosts ÷ 1 host", "peak RSS"):
                out.append(Check(f"{what}, {label}", why, "", None, False, FLEET))
            continue
        bastion = [x.bastion_auths for x in good]
        out.append(
            Check(
                f"bastion authentications, {label}",
                ", ".join(str(n) for n in sorted(set(bastion))),
                str(FLEET_BASTION_AUTHS),
                None,
                all(n == FLEET_BASTION_AUTHS for n in bastion),
                FLEET,
            )
        )
        total = _fleet_med(logins, lambda x: x.total)
        assert total is not None
        out.append(
            Check(
                f"{size} hosts ÷ 1 host, {label}",
                f"{total / one:.2f} ({ms(total)} ÷ {ms(one)})",
                f"{FLEET_RATIO_LIMIT:.2f}",
                total / one / FLEET_RATIO_LIMIT,
                total / one <= FLEET_RATIO_LIMIT,
                FLEET,
            )
        )
        rss = _fleet_med(logins, lambda x: x.rss)
        if rss is not None:
            out.append(
                Check(
                    f"peak RSS, {label}",
                    mb(rss),
                    mb(FLEET_RSS_LIMIT),
                    rss / FLEET_RSS_LIMIT,
                    rss <= FLEET_RSS_LIMIT,
                    FLEET,
                )
            )
    return out


def fleet_targets(fleet: FleetResults, items: Sequence[Check], judged: bool) -> str:
    """The fleet's targets and whether they held."""
    return (
        f"Targets: {FLEET_BASTION_AUTHS} bastion authentication per fleet run; {fleet.size} "
        f"hosts ≤ {FLEET_RATIO_LIMIT:g} × 1 host; tunnelauth's peak RSS ≤ {mb(FLEET_RSS_LIMIT)}. "
        + verdict(items, judged)
    )


def verdict(items: Sequence[Check], judged: bool) -> str:
    """One sentence: every target met, or each one missed with its measure and limit."""
    if not judged:
        return "Quick run: not judged."
    missed = [item for item in items if item.ok is False]
    if not missed:
        return "Every target met."
    return (
        "Missed: "
        + "; ".join(f"{i.name}: {i.measured} (limit {i.limit or '—'})" for i in missed)
        + "."
    )


def latency_targets(
    res: LatencyResults, own: float | None, items: Sequence[Check], judged: bool
) -> str:
    """The targets at one latency, with the limits worked out, and whether they held."""
    floor = median(res.floor)
    browser = "floor + the fake hermes' own time + 150 ms"
    if floor is not None and own is not None:
        limit = ms(floor + own + BROWSER_SLACK)
        browser = f"{limit} (floor {ms(floor)} + the fake hermes' own {ms(own)} + 150 ms)"
    return (
        f"Targets: to browser ≤ {browser}; exit ≤ {ms(EXIT_LIMIT)} after the success line; "
        "1/1 SSH authentications per host per login (0/0 with the user's live ControlMaster). "
        + verdict(items, judged)
    )


def startup_targets(items: Sequence[Check], judged: bool) -> str:
    """The targets over the whole run (start-up, memory), and whether they held."""
    parts = []
    for item in items:
        if item.name == "`tunnelauth --version`":
            parts.append(f"`tunnelauth --version` ≤ {item.limit}")
        else:
            parts.append(f"{item.name} ≤ {item.limit}: {item.measured}")
    return f"Targets: {'; '.join(parts)}. {verdict(items, judged)}" if parts else ""


def _header(results: Results, machine: Sequence[str], command: str) -> list[str]:
    return [
        f"Measured with `{command}` ({results.runs} run(s) per row, medians; "
        f"{'quick run' if results.quick else 'full run'}).",
        "",
        "Machine:",
        "",
        *(f"- {item}" for item in machine),
        "",
    ]


def render(results: Results, machine: Sequence[str], command: str) -> str:
    """The report of the single-host rows and the start-up (the fleet has its own)."""
    own = median(results.hermes_own)
    items = checks(results)
    judged = not results.quick
    lines = _header(results, machine, command)
    for res in results.latencies:
        here = [item for item in items if item.group == f"+{res.rtt_ms} ms"]
        lines += [*latency_table(res, own), "", latency_targets(res, own, here, judged), ""]
    lines += ["#### Command line start-up", "", *cli_table(results.cli), ""]
    startup = startup_targets([item for item in items if item.group == "overall"], judged)
    lines += [startup, ""] if startup else []
    return "\n".join(lines)


def render_fleet(results: Results, machine: Sequence[str], command: str) -> str:
    """The report of the fleet rows ("" when they were not measured)."""
    if results.fleet is None:
        return ""
    here = [item for item in checks(results) if item.group == FLEET]
    judged = not results.quick
    where = "; ".join(dict.fromkeys([*machine[:1], *machine[-1:]]))
    lines = [
        f"Measured with `{command}` ({results.runs} run(s) per row, medians; "
        f"{'quick run' if results.quick else 'full run'}). {where}.",
        "",
        *fleet_table(results.fleet),
        "",
        fleet_targets(results.fleet, here, judged),
    ]
    return "\n".join([*lines, ""])
