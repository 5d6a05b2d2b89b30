"""Callbacks that are not a GET answered at once, through the bed with real Chromium.

- ``form_post`` (``response_mode=form_post``, as MSAL-based CLIs such as az ask): the
  provider's page makes the browser POST ``code``/``state`` to the loopback redirect URL.
- A late answer: the CLI answers the callback only after its token exchange.
- A CLI that takes the callback and exits without answering it.

Each runs over the direct channel (``remote``) and over the relay (``remote-nofwd`` refuses
forwarding), on every backend. The fake ``loopback-cli`` takes a form_post callback only as a
POST, so a code it recorded came through the body.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth import relay
from tunnelauth.status import ExitStatus

HOSTS = {"channel": "remote", "relay": "remote-nofwd"}
CARRIED = {
    "channel": "the callback reached the remote over a direct SSH channel",
    "relay": "relaying the callback through an SSH session",
}
SHAPES = {
    "form_post": ["--form-post"],
    "late_answer": ["--answer-delay", "3"],
}
# Chromium follows the navigation the form_post page's script starts before dumping the DOM.
SETTLE = {"TA_BROWSER_SETTLE_MS": "1000"}
CLI_PAGE = "All done. Please go back to the terminal."  # loopback-cli's own success page


def _issued(bed: Bed) -> dict[str, object]:
    issued = bed.provider_issued()
    assert issued, "the browser never reached the provider"
    return issued[-1]


@pytest.mark.parametrize("via", list(HOSTS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_callback_shape_logs_in(
    fresh: Bed, tmp_path: Path, backend: str, via: str, shape: str
) -> None:
    args = ["run", HOSTS[via], "--", "loopback-cli", *SHAPES[shape]]
    result = tunnelauth(fresh, *args, tmp=tmp_path, backend=backend, env=SETTLE)
    assert result.code == ExitStatus.OK, result
    issued = _issued(fresh)
    assert issued.get("response_mode") == ("form_post" if "form_post" in shape else None)
    record = fresh.fake_record("loopback-cli")
    assert record is not None and record["code"] == issued["code"], record
    assert CLI_PAGE in result.dom, "the CLI's own page (sent after its exchange) reached Chrome"
    assert CARRIED[via] in result.stderr, result
    assert "Login successful!" in result.stderr
    assert str(issued["code"]) not in result.stderr + result.stdout


def test_an_answer_after_more_than_a_minute_still_reaches_the_browser_over_the_relay(
    fresh: Bed, tmp_path: Path
) -> None:
    # Longer than the relay used to wait (60 s), shorter than it waits now.
    delay = 65
    assert delay + 10 < relay.ANSWER_DEADLINE
    args = ["run", "remote-nofwd", "--", "loopback-cli", "--form-post"]
    args += ["--answer-delay", str(delay)]
    env = {**SETTLE, "TA_BROWSER_TIMEOUT": str(relay.SESSION_DEADLINE)}
    result = tunnelauth(fresh, *args, tmp=tmp_path, env=env, deadline=delay + 90)
    assert result.code == ExitStatus.OK, result
    record = fresh.fake_record("loopback-cli")
    assert record is not None and record["code"] == _issued(fresh)["code"], record
    assert CLI_PAGE in result.dom, result.dom
    assert "the relay failed" not in result.stderr, result


@pytest.mark.parametrize("via", list(HOSTS))
def test_a_cli_that_exits_without_answering_is_reported(
    fresh: Bed, tmp_path: Path, backend: str, via: str
) -> None:
    args = ["run", HOSTS[via], "--", "loopback-cli", "--exit-without-answer"]
    result = tunnelauth(fresh, *args, tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.LOGIN_FAILED, result
    record = fresh.fake_record("loopback-cli")
    assert record is not None and record["code"] == _issued(fresh)["code"], record
    assert "closed the connection without answering" in result.stderr, result
    assert "Error: the sign-in was interrupted." in result.stderr
    assert "Remote listener did not answer" in result.dom, result.dom
    assert "refused" not in result.dom.lower(), "the relay's empty answer is no refusal"


def test_a_posted_callback_is_never_pasted(fresh: Bed, tmp_path: Path) -> None:
    # --via paste types the redirect URL into the remote's terminal: a form_post callback's
    # code is in the body, so nothing is typed and the run fails with a hint.
    args = ["run", "remote-nofwd", "--via", "paste", "--", "loopback-cli", "--form-post"]
    result = tunnelauth(fresh, *args, "--timeout", "60", tmp=tmp_path, env=SETTLE)
    assert result.code == ExitStatus.LOGIN_FAILED, result
    assert "the callback came as a form POST" in result.stderr, result
    assert "without --via paste" in result.stderr
    assert "Callback not pasted" in result.dom, result.dom
    assert "passing the redirect to the remote's paste prompt" not in result.stderr
    assert "Timed out waiting for the callback" not in result.stderr, "tunnelauth ended it first"
    record = fresh.fake_record("loopback-cli")  # written only once a callback came
    assert record is None or record["code"] is None, record
    assert str(_issued(fresh)["code"]) not in result.stderr + result.stdout
