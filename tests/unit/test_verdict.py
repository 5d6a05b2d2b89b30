"""The verdict on a finished run: a login happened only when tunnelauth saw one."""

from __future__ import annotations

import dataclasses

import pytest

from tunnelauth.errors import (
    CommandNotFoundError,
    LoginFailedError,
    SSHError,
    TimedOutError,
    TunnelauthError,
)
from tunnelauth.events import Outcome, Status
from tunnelauth.remote import (
    NO_BASE64_MARKER,
    NOT_DECODED_MARKER,
    NOT_DECODED_STATUS,
    NOT_FOUND_MARKER,
)
from tunnelauth.status import ExitStatus
from tunnelauth.verdict import NO_LOGIN_SEEN, Facts, LoginSeen, Success, judge

SPOTIFY_OK = Status(Outcome.SUCCEEDED, "Spotify login successful!")
PROVIDER = Facts(
    host="agent-box",
    program="hermes",
    provider="spotify",
    run_as=None,
    status=SPOTIFY_OK,
    exit_status=0,
    last_lines=("Spotify login successful!",),
    seen=LoginSeen.CALLBACK,
)
RUN = dataclasses.replace(
    PROVIDER, program="echo", provider=None, status=None, last_lines=("hello",), seen=LoginSeen.NONE
)


def failure(facts: Facts) -> TunnelauthError:
    with pytest.raises(TunnelauthError) as caught:
        judge(facts)
    return caught.value


def test_a_provider_login_needs_its_success_line_and_exit_0() -> None:
    assert judge(PROVIDER) == Success("logged in", LoginSeen.CALLBACK)


def test_a_provider_that_exits_0_without_its_success_line_failed() -> None:
    error = failure(dataclasses.replace(PROVIDER, status=None, last_lines=("Starting…",)))
    assert isinstance(error, LoginFailedError) and error.status is ExitStatus.LOGIN_FAILED
    assert "exited 0 but never printed its success line" in error.message
    assert "'Spotify login successful!'" in error.message
    assert error.last_lines == ["Starting…"]


def test_a_success_line_then_a_non_zero_exit_failed() -> None:
    error = failure(dataclasses.replace(PROVIDER, exit_status=1))
    assert error.status is ExitStatus.LOGIN_FAILED
    assert "exited with status 1 after printing its success line" in error.message


def test_a_failure_line_wins_over_exit_0() -> None:
    status = Status(Outcome.FAILED, "✗ Authentication failed: user_skipped")
    error = failure(dataclasses.replace(PROVIDER, provider="mcp", status=status))
    assert error.status is ExitStatus.LOGIN_FAILED and "user_skipped" in error.message


def test_a_command_without_a_login_flow_only_succeeded() -> None:
    assert judge(RUN) == Success(NO_LOGIN_SEEN, LoginSeen.NONE)
    assert NO_LOGIN_SEEN == "the command succeeded (no login flow seen)"


def test_a_success_line_alone_is_no_login_for_a_command() -> None:
    # `run HOST -- echo 'Login successful!'`: the wording proves nothing; no flow was seen.
    said = dataclasses.replace(RUN, status=Status(Outcome.SUCCEEDED, "Login successful!"))
    assert judge(said) == Success(NO_LOGIN_SEEN, LoginSeen.NONE)


@pytest.mark.parametrize("seen", [LoginSeen.CALLBACK, LoginSeen.DEVICE, LoginSeen.PASTE])
def test_a_command_whose_login_flow_was_seen_logged_in(seen: LoginSeen) -> None:
    assert judge(dataclasses.replace(RUN, seen=seen)) == Success("logged in", seen)


def test_a_command_that_exits_non_zero_failed_whatever_was_seen() -> None:
    error = failure(dataclasses.replace(RUN, exit_status=2, seen=LoginSeen.CALLBACK))
    assert error.status is ExitStatus.LOGIN_FAILED and "status 2" in error.message


def test_as_without_base64_on_the_remote_is_named() -> None:
    facts = dataclasses.replace(
        RUN, run_as="svc", exit_status=127, last_lines=(NO_BASE64_MARKER,), program="hermes"
    )
    error = failure(facts)
    assert isinstance(error, CommandNotFoundError)
    assert error.status is ExitStatus.COMMAND_NOT_FOUND
    assert "base64 was not found on agent-box for svc" in error.message
    assert "never started" in error.message
    assert error.hint is not None and "base64" in error.hint


def test_as_with_a_base64_that_decodes_nothing_failed() -> None:
    facts = dataclasses.replace(
        PROVIDER,
        run_as="svc",
        status=None,
        exit_status=NOT_DECODED_STATUS,
        last_lines=(NOT_DECODED_MARKER,),
    )
    error = failure(facts)
    assert error.status is ExitStatus.LOGIN_FAILED
    assert "did not decode the login command for --as svc" in error.message


def test_the_wrapper_markers_count_only_for_as() -> None:
    # A plain `run` that prints the marker text is judged by its exit status as any other.
    facts = dataclasses.replace(RUN, exit_status=127, last_lines=(NO_BASE64_MARKER,))
    error = failure(facts)
    assert isinstance(error, LoginFailedError) and "status 127" in error.message


def test_a_missing_program_is_exit_8() -> None:
    facts = dataclasses.replace(
        PROVIDER, status=None, exit_status=127, last_lines=(f"{NOT_FOUND_MARKER} hermes",)
    )
    error = failure(facts)
    assert error.status is ExitStatus.COMMAND_NOT_FOUND and "'hermes'" in error.message


def test_a_lost_link_and_a_remote_timeout() -> None:
    assert isinstance(failure(dataclasses.replace(RUN, exit_status=None)), SSHError)
    timed = Status(Outcome.TIMED_OUT, "Login timed out after 15 minutes.")
    assert isinstance(failure(dataclasses.replace(PROVIDER, status=timed)), TimedOutError)
