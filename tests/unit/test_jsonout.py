"""The --json reporter: every event conforms to the schema, secrets never reach stdout."""

from __future__ import annotations

import io
import json
from typing import Any

from tunnelauth.jsonout import EVENTS, SCHEMA_VERSION, JsonReporter, validate
from tunnelauth.report import Stage


class Recorder:
    """An inner reporter that records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append(name)

        return record


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def drive(reporter: JsonReporter) -> None:
    """One loopback login, as the flow reports it."""
    reporter.stage(Stage.CONNECTING, "remote")
    reporter.stage(Stage.CONNECTED, "openssh")
    reporter.stage(Stage.RUNNING, "hermes auth spotify login --no-browser")
    reporter.stage(Stage.LISTENING, "127.0.0.1:43827 → remote port 43827")
    url = "https://idp.test/authorize?client_id=c&state=s&redirect_uri=http%3A%2F%2F127.0.0.1"
    reporter.open_url(url, "idp.test", "command", unusual_host=False)
    reporter.device_code("https://idp.test/device", "ABCD-EFGH")
    reporter.remote_line("GET /callback?code=SECRET123&state=s")
    reporter.prompt("Callback URL: ", True)
    reporter.stage(Stage.FINISHING, "Spotify login successful!")
    reporter.warn("a warning with access_token=SECRET123")
    reporter.replaced(True, 2, 1, "removed 2")
    reporter.verified(True, "spotify: logged in")
    reporter.finish(True, "logged in", None, [], exit_status=0, login="callback")


def test_every_event_is_one_valid_json_line() -> None:
    out = io.StringIO()
    drive(JsonReporter(stream=out))
    events = lines(out)
    assert all(validate(e) == [] for e in events), events
    assert {e["event"] for e in events} == set(EVENTS) - {"failed", "fleet_done"}
    assert all("target" not in e for e in events)  # one host: no fleet field
    assert all(e["v"] == SCHEMA_VERSION for e in events)
    listening = next(e for e in events if e["event"] == "listening")
    assert listening["port"] == 43827


def test_secrets_are_redacted_in_every_field() -> None:
    out = io.StringIO()
    reporter = JsonReporter(stream=out)
    drive(reporter)
    reporter.finish(False, "failed code=SECRET123", None, ["x?code=SECRET123"], exit_status=6)
    assert "SECRET123" not in out.getvalue()
    assert "code=…" in out.getvalue()


def test_failure_carries_exit_status_reason_and_last_lines() -> None:
    out = io.StringIO()
    reporter = JsonReporter(stream=out)
    reporter.finish(False, "the remote login failed", "a hint", ["one", "two"], exit_status=6)
    reporter.finish(False, "a second verdict is not written", None, [], exit_status=1)
    (event,) = lines(out)
    assert event["event"] == "failed" and event["exit_status"] == 6
    assert event["reason"] == "the remote login failed" and event["last_lines"] == ["one", "two"]


def test_success_says_which_login_flow_was_seen() -> None:
    out = io.StringIO()
    message = "the command succeeded (no login flow seen)"
    JsonReporter(stream=out).finish(True, message, None, [], exit_status=0, login="none")
    (event,) = lines(out)
    assert validate(event) == []
    assert event["event"] == "succeeded" and event["login"] == "none"
    assert event["message"] == message


def test_the_anthropic_authorize_url_event_is_usable() -> None:
    # claude.ai's authorize URL carries code=true: a flag, not a code, so it is kept.
    url = (
        "https://claude.ai/oauth/authorize?code=true&client_id=9d1c&response_type=code"
        "&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback"
        "&code_challenge=Hc8Lr2Vq&code_challenge_method=S256&state=anth-7c1f0e"
    )
    out = io.StringIO()
    JsonReporter(stream=out).open_url(url, "claude.ai", "command", unusual_host=False)
    assert [e["url"] for e in lines(out)] == [url, url]


def test_printed_url_has_no_browser_opened_event() -> None:
    out = io.StringIO()
    JsonReporter(stream=out).open_url("https://x.test/a", "x.test", "printed", unusual_host=True)
    assert [e["event"] for e in lines(out)] == ["authorize_url"]


def test_inner_reporter_gets_every_call() -> None:
    inner = Recorder()
    drive(JsonReporter(stream=io.StringIO(), inner=inner))  # type: ignore[arg-type]
    for name in ("stage", "remote_line", "open_url", "device_code", "warn", "finish"):
        assert name in inner.calls


def test_validate_names_problems() -> None:
    assert validate({"v": 1, "event": "nope", "time": 0}) == ["unknown event 'nope'"]
    assert "succeeded: missing exit_status" in validate(
        {"v": 1, "event": "succeeded", "time": 0, "message": "x"}
    )
    assert any("expected 1" in p for p in validate({"v": 2, "event": "warning", "time": 0}))


def test_in_a_fleet_every_event_names_its_target() -> None:
    out = io.StringIO()
    drive(JsonReporter(stream=out, host="web1", fleet=True))
    events = lines(out)
    assert all(validate(e) == [] for e in events), events
    assert {e["target"] for e in events} == {"web1"}
    # The authorize URL's own "host" field still names the page's host.
    assert next(e for e in events if e["event"] == "authorize_url")["host"] == "idp.test"
    assert next(e for e in events if e["event"] == "connecting")["host"] == "web1"
