"""The bench report states each latency's targets with their limits, and names every miss."""

from __future__ import annotations

from tests.bench.measure import Login
from tests.bench.report import LatencyResults, Results, render

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
