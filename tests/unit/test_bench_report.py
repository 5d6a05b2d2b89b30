"""The bench report states each latency's targets with their limits, and names every miss."""

from __future__ import annotations

from tests.bench.fleet import FleetLogin, FleetResults
from tests.bench.measure import Login
from tests.bench.report import LatencyResults, Results, render, render_fleet

ONE_EACH = {"bastion": 1, "remote": 1}


def results(to_browser: float, *, quick: bool = False) -> Results:
    """One latency, one openssh login taking ``to_browser`` seconds, start-up measured."""
    latency = LatencyResults(0, floor=[0.300], floor_auths=[ONE_EACH])
    login = Login(
        ok=True,
        to_browser=to_browser,
        port_to_browser=0.010,
        exit_after_success=0.050,
        total=0.600,
        auths=dict(ONE_EACH),
        rss=20 * 1024 * 1024,
    )
    latency.logins = {"openssh": [login]}
    cli = {"pass": [0.040], "version": [0.045], "help": [0.090]}
    return Results(runs=1, quick=quick, hermes_own=[0.050], cli=cli, latencies=[latency])


def test_every_target_met_is_said_with_its_limits() -> None:
    text = render(results(0.400), ["test machine"], "scripts/bench")
    assert (
        "Targets: to browser ≤ 500 ms (floor 300 ms + the fake hermes' own 50 ms + 150 ms)" in text
    )
    assert text.count("Every target met.") == 2
    assert "Missed" not in text


def test_a_missed_target_is_named_with_its_measure_and_limit() -> None:
    text = render(results(0.700), ["test machine"], "scripts/bench")
    assert "Missed: time to browser, openssh, +0 ms: 700 ms (limit 500 ms = floor 300 ms" in text


def test_a_quick_run_judges_nothing() -> None:
    text = render(results(0.700, quick=True), ["test machine"], "scripts/bench --quick")
    assert text.count("Quick run: not judged.") == 2
    assert "Missed" not in text and "Every target met" not in text


def fleet_results(bastion: int, ten_seconds: float, rss_mb: float) -> FleetResults:
    """openssh: one host in 3 s, ten in ``ten_seconds`` with ``bastion`` bastion auths."""
    one = FleetLogin(1, True, total=3.0, rss=30 * 2**20, bastion_auths=1, target_auths={"f1": 1})
    ten = FleetLogin(
        10,
        True,
        total=ten_seconds,
        rss=int(rss_mb * 2**20),
        bastion_auths=bastion,
        target_auths={f"f{i}": 1 for i in range(1, 11)},
    )
    return FleetResults(10, 50, logins={("openssh", 1): [one], ("openssh", 10): [ten]})


def test_the_fleet_rows_state_their_targets_and_pass() -> None:
    res = results(0.400)
    res.fleet = fleet_results(bastion=1, ten_seconds=5.0, rss_mb=40)
    assert "Fleet" not in render(res, ["test machine"], "scripts/bench")
    text = render_fleet(res, ["test machine"], "scripts/bench --fleet-only")
    assert text.startswith("Measured with `scripts/bench --fleet-only`")
    assert "#### Fleet: 10 hosts behind one bastion, +50 ms RTT per hop" in text
    assert "| `--backend openssh` | 5000 ms | 3000 ms | 1.67 | 1 / 1 each | 40.0 MB |" in text
    assert "Targets: 1 bastion authentication per fleet run; 10 hosts ≤ 2 × 1 host;" in text
    assert text.count("Every target met.") == 1, text


def test_each_missed_fleet_target_is_named() -> None:
    res = results(0.400)
    res.fleet = fleet_results(bastion=10, ten_seconds=6.3, rss_mb=90)
    text = render_fleet(res, ["test machine"], "scripts/bench")
    assert "bastion authentications, openssh: 10 (limit 1)" in text
    assert "10 hosts ÷ 1 host, openssh: 2.10 (6300 ms ÷ 3000 ms) (limit 2.00)" in text
    assert "peak RSS, openssh: 90.0 MB (limit 80.0 MB)" in text


def test_a_fleet_that_could_not_be_built_is_a_miss() -> None:
    res = results(0.400)
    res.fleet = FleetResults(10, 50, broken="cannot build the fleet")
    text = render_fleet(res, ["test machine"], "scripts/bench")
    assert "**not working**: cannot build the fleet" in text
    assert "Missed: fleet logins: not working: cannot build the fleet" in text
