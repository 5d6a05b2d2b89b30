"""The pure decider, driven by events alone: every golden transcript and every fallback path.

No sockets, no clock, no root: the watcher turns a transcript into events, ``decide`` turns
events into actions, and the tests read the actions (what the runner would do) and the state.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from tunnelauth import decide as decide_module
from tunnelauth import verdict
from tunnelauth.decide import channel_refusal, decide, probes_forwarding
from tunnelauth.errors import LoginFailedError, SSHError, TimedOutError
from tunnelauth.events import (
    AuthorizeUrl,
    Callback,
    DeviceCode,
    Outcome,
    Prompt,
    PromptKind,
    RemoteLine,
    Status,
)
from tunnelauth.flowstate import (
    Action,
    Answer,
    AwaitVerdict,
    CarryWholeOrigin,
    ChannelRefused,
    CloseListener,
    Config,
    EndPrompt,
    Fail,
    FlowState,
    FromListener,
    Idle,
    Input,
    OpenListener,
    OpenPage,
    PasteSettled,
    RefineListener,
    Relay,
    RelayResult,
    Say,
    ShowDeviceCode,
    ShowPrompt,
    StdinData,
    StopCarrying,
    TypeLine,
)
from tunnelauth.listener import NO_ANSWER, ListenerEvent
from tunnelauth.verdict import LoginSeen
from tunnelauth.watch import Watcher

TRANSCRIPTS = Path(__file__).parent / "transcripts"
HOST = "box"
GET_CALLBACK = b"GET /callback?code=abc&state=xyz HTTP/1.1\r\nHost: 127.0.0.1:38517\r\n\r\n"
POST_CALLBACK = (
    b"POST /callback HTTP/1.1\r\nHost: 127.0.0.1:38517\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 17\r\n\r\n"
    b"code=abc&state=xy"
)


def fresh(**config: object) -> FlowState:
    return FlowState(Config(host=HOST, **config))  # type: ignore[arg-type]


def drive(state: FlowState, events: Iterable[Input]) -> tuple[FlowState, list[Action]]:
    """Feed every event in order; the final state and every action, in order."""
    actions: list[Action] = []
    for event in events:
        state, more = decide(state, event)
        actions += more
    return state, actions


def transcript_events(name: str) -> list[Input]:
    """A golden transcript as the runner feeds it: the output, a silence, the end."""
    watcher = Watcher()
    data = (TRANSCRIPTS / f"{name}.pty").read_bytes()
    return [*watcher.feed(data), *watcher.idle(), Idle(), *watcher.close()]


def summary(actions: Sequence[Action]) -> list[str]:
    """The actions that change the world, one short line each."""
    out: list[str] = []
    for a in actions:
        if isinstance(a, OpenListener):
            out.append(f"listen {a.host}:{a.port}{a.path or ''}")
        elif isinstance(a, RefineListener):
            out.append(f"refine {a.host} {a.path}")
        elif isinstance(a, CloseListener):
            out.append("close listener")
        elif isinstance(a, OpenPage):
            out.append(f"open {a.host}")
        elif isinstance(a, ShowDeviceCode):
            out.append(f"device {a.code}")
        elif isinstance(a, ShowPrompt):
            out.append("prompt (secret)" if a.secret else "prompt")
        elif isinstance(a, Fail):
            out.append(f"fail {type(a.error).__name__}")
        elif isinstance(a, StopCarrying):
            out.append("stop carrying")
        elif isinstance(a, CarryWholeOrigin):
            out.append("carry whole origin")
    return out


SPOTIFY = ["listen 127.0.0.1:43827/spotify/callback", "open accounts.spotify.com"]
MCP = ["listen 127.0.0.1:38517/callback", "open mcp.linear.app"]
XAI = ["listen 127.0.0.1:56121/callback", "open auth.x.ai"]
CODEX = ["open auth.openai.com", "device K7QF-3MZP"]

# transcript -> (what the runner is asked to do, the login flow seen, the status line's outcome)
GOLDEN: dict[str, tuple[list[str], LoginSeen, Outcome | None]] = {
    "anthropic_paste": (["open claude.ai", "prompt (secret)"], LoginSeen.NONE, Outcome.SUCCEEDED),
    "codex_browser_021": (
        ["listen localhost:1455/auth/callback", "open auth.openai.com", "stop carrying"],
        LoginSeen.NONE,
        Outcome.SUCCEEDED,
    ),
    "codex_browser_port_busy_021": (CODEX, LoginSeen.DEVICE, Outcome.SUCCEEDED),
    "codex_device": (CODEX, LoginSeen.DEVICE, Outcome.SUCCEEDED),
    "codex_loopback_then_device": (
        ["listen localhost:1455/auth/callback", "open auth.openai.com", *CODEX, "stop carrying"],
        LoginSeen.DEVICE,
        Outcome.SUCCEEDED,
    ),
    "mcp_failure_exit0": ([], LoginSeen.NONE, Outcome.FAILED),
    "mcp_paste": ([*MCP, "stop carrying"], LoginSeen.NONE, Outcome.SUCCEEDED),
    "mcp_paste_waiting": (MCP, LoginSeen.NONE, None),
    "mcp_success": ([*MCP, "stop carrying"], LoginSeen.NONE, Outcome.SUCCEEDED),
    "mcp_timeout": (MCP, LoginSeen.NONE, Outcome.TIMED_OUT),
    "minimax_device": (
        ["open www.minimax.io", "device MNQX-7RTA"],
        LoginSeen.DEVICE,
        Outcome.SUCCEEDED,
    ),
    "notfound_bash": ([], LoginSeen.NONE, Outcome.NOT_FOUND),
    "notfound_marker": ([], LoginSeen.NONE, Outcome.NOT_FOUND),
    "notfound_plain": ([], LoginSeen.NONE, Outcome.NOT_FOUND),
    "notfound_sh": ([], LoginSeen.NONE, Outcome.NOT_FOUND),
    "notfound_zsh": ([], LoginSeen.NONE, Outcome.NOT_FOUND),
    "nous_device": (
        ["open portal.nousresearch.com", "device QWER-TYUI"],
        LoginSeen.DEVICE,
        Outcome.TIMED_OUT,
    ),
    "nous_device_timeout_021": (
        ["open portal.nousresearch.com", "device QWER-TYUI"],
        LoginSeen.DEVICE,
        Outcome.TIMED_OUT,
    ),
    "openrouter_headless_paste_021": (["prompt (secret)"], LoginSeen.NONE, None),
    "plugin_generic": (
        ["listen 127.0.0.1:8765/oauth2callback", "open login.example.com", "stop carrying"],
        LoginSeen.NONE,
        Outcome.SUCCEEDED,
    ),
    "rclone": (
        ["listen 127.0.0.1:53682", "carry whole origin", "open 127.0.0.1"],
        LoginSeen.NONE,
        None,
    ),
    "spotify_bind_failure": (SPOTIFY[:1], LoginSeen.NONE, Outcome.FAILED),
    "spotify_manual_paste_021": (SPOTIFY, LoginSeen.NONE, None),
    "spotify_state_mismatch": (SPOTIFY, LoginSeen.NONE, Outcome.FAILED),
    "spotify_success_0190": ([*SPOTIFY, "stop carrying"], LoginSeen.NONE, Outcome.SUCCEEDED),
    "spotify_success_legacy": ([*SPOTIFY, "stop carrying"], LoginSeen.NONE, Outcome.SUCCEEDED),
    "spotify_timeout_traceback": (SPOTIFY, LoginSeen.NONE, Outcome.TIMED_OUT),
    "unknown_provider": ([], LoginSeen.NONE, Outcome.FAILED),
    "xai_device_0190": (
        ["open accounts.x.ai", "device ABCD-EFGH"],
        LoginSeen.DEVICE,
        Outcome.SUCCEEDED,
    ),
    "xai_device_timeout": (
        ["open accounts.x.ai", "device WXYZ-2345"],
        LoginSeen.DEVICE,
        Outcome.TIMED_OUT,
    ),
    # The later announcement of 41877 only moves the remote end: the laptop port stays.
    "xai_legacy_port_bump": ([*XAI, "stop carrying"], LoginSeen.NONE, Outcome.SUCCEEDED),
    "xai_legacy_success": ([*XAI, "stop carrying"], LoginSeen.NONE, Outcome.SUCCEEDED),
}


def test_every_transcript_has_a_golden_decision() -> None:
    assert {p.stem for p in TRANSCRIPTS.glob("*.pty")} == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_transcript_decisions(name: str) -> None:
    expected, seen, outcome = GOLDEN[name]
    state, actions = drive(fresh(check_remote_port=False), transcript_events(name))
    assert summary(actions) == expected
    assert state.seen is seen
    assert (state.status.outcome if state.status else None) is outcome
    assert state.finished is (outcome is not None)
    # Each page is decided on once, and never opened while no laptop end is ready for it.
    opened = [a.url for a in actions if isinstance(a, OpenPage)]
    assert len(opened) == len(set(opened))


def test_batch_run_fails_at_a_prompt_it_cannot_answer() -> None:
    _, actions = drive(fresh(batch=True), transcript_events("openrouter_headless_paste_021"))
    fails = [a for a in actions if isinstance(a, Fail)]
    assert len(fails) == 1 and isinstance(fails[0].error, LoginFailedError)
    assert "cannot answer" in fails[0].error.message
    assert not [a for a in actions if isinstance(a, ShowPrompt)]


# -- the callback's listener ----------------------------------------------------------------


def test_loopback_page_waits_for_the_listener_and_checks_the_remote_port() -> None:
    auth = AuthorizeUrl(
        "https://login.example.com/a?redirect_uri=x",
        "login.example.com",
        "http://127.0.0.1:8765/cb",
    )
    state, actions = decide(fresh(), auth)
    assert actions == []  # nothing listens for its redirect yet
    state, actions = decide(state, Callback("127.0.0.1", 8765, "/cb", "redirect_uri"))
    pages = [a for a in actions if isinstance(a, OpenPage)]
    assert len(pages) == 1 and pages[0].check_port == 8765
    assert isinstance(actions[0], OpenListener) and actions[0].port == 8765


def test_a_later_line_on_the_same_port_refines_without_rebinding() -> None:
    state, _ = decide(fresh(), Callback("localhost", 1455, None, "announcement"))
    state, actions = decide(state, Callback("127.0.0.1", 1455, "/auth/callback", "redirect_uri"))
    assert actions == [RefineListener("127.0.0.1", "/auth/callback")]
    assert state.listener_port == 1455 and state.listen_source == "redirect_uri"
    # A waiting line after the redirect URI changes nothing: the browser comes back there.
    state, actions = decide(state, Callback("localhost", 1455, "/", "announcement"))
    assert actions == []


def test_a_callback_on_another_port_replaces_the_listener() -> None:
    state, _ = decide(fresh(), Callback("127.0.0.1", 5000, "/cb", "announcement"))
    state, actions = decide(state, Callback("127.0.0.1", 5001, "/cb", "announcement"))
    assert summary(actions) == ["close listener", "listen 127.0.0.1:5001/cb"]
    assert state.listener_port == 5001 and state.remote_port == 5001


def test_a_page_with_no_callback_opens_once_the_remote_goes_quiet() -> None:
    auth = AuthorizeUrl("https://claude.ai/oauth/authorize?x=1", "claude.ai", None)
    state, actions = decide(fresh(), auth)
    assert actions == []  # a callback announcement may still follow the URL
    state, actions = decide(state, Idle())
    assert summary(actions) == ["open claude.ai"]
    state, actions = decide(state, Idle())
    assert actions == []  # decided once


def test_an_unusual_host_and_an_unsafe_url_are_flagged() -> None:
    usual = fresh(usual_hosts=("spotify.com",))
    _, actions = drive(
        usual, [AuthorizeUrl("https://evil.example/a", "evil.example", None), Idle()]
    )
    assert [a.unusual for a in actions if isinstance(a, OpenPage)] == [True]
    _, actions = drive(usual, [DeviceCode("https://accounts.spotify.com/device", "AB-CD")])
    assert [a.unusual for a in actions if isinstance(a, OpenPage)] == [False]
    unsafe = "https://a.example/" + "x" * 9000
    _, actions = drive(fresh(), [DeviceCode(unsafe, None)])
    assert [a.safe for a in actions if isinstance(a, OpenPage)] == [False]


def test_device_code_is_shown_and_copied_only_when_someone_is_there() -> None:
    event = DeviceCode("https://accounts.x.ai/device", "ABCD-EFGH")
    state, actions = decide(fresh(), event)
    assert ShowDeviceCode(event.url, "ABCD-EFGH", True) in actions
    assert state.seen is LoginSeen.DEVICE
    _, actions = decide(fresh(batch=True), event)
    assert ShowDeviceCode(event.url, "ABCD-EFGH", False) in actions


def test_success_stops_carrying_and_a_later_failure_line_still_wins() -> None:
    state, _ = decide(fresh(), Callback("127.0.0.1", 8765, "/cb", "redirect_uri"))
    state, actions = decide(state, Status(Outcome.SUCCEEDED, "ok"))
    assert StopCarrying() in actions and state.finished
    state, _ = decide(state, Status(Outcome.FAILED, "but then it failed"))
    assert state.status == Status(Outcome.FAILED, "but then it failed")
    state, _ = decide(state, Status(Outcome.SUCCEEDED, "ok again"))
    assert state.status is not None and state.status.outcome is Outcome.FAILED


# -- prompts and the user's keyboard --------------------------------------------------------


def test_paste_prompt_with_the_user_typing_the_code() -> None:
    state, actions = decide(fresh(), Prompt("Paste code here: ", PromptKind.CODE))
    assert ShowPrompt("Paste code here: ", True) in actions
    state, actions = decide(state, StdinData(b"abc#def\n"))
    assert actions == [TypeLine(b"abc#def\r"), EndPrompt()]
    assert state.seen is LoginSeen.PASTE and state.prompt is None
    _, actions = decide(state, StdinData(b"again\n"))
    assert [a.level for a in actions if isinstance(a, Say)] == ["warn"]


def test_an_overlong_answer_is_not_typed() -> None:
    state, _ = decide(fresh(), Prompt("Code: ", PromptKind.CODE))
    state, actions = decide(state, StdinData(b"x" * 5000 + b"\n"))
    assert not [a for a in actions if isinstance(a, TypeLine)] and state.prompt is not None


def test_a_remote_line_ends_the_prompt() -> None:
    state, _ = decide(fresh(), Prompt("Name: ", PromptKind.TEXT))
    state, actions = decide(state, RemoteLine("thanks"))
    assert EndPrompt() in actions and state.prompt is None


# -- fallbacks: refused channel → relay → paste -----------------------------------------------


def listening(**config: object) -> FlowState:
    state, _ = drive(
        fresh(**config),
        [
            Callback("127.0.0.1", 38517, "/callback", "redirect_uri"),
            Prompt("Or paste the redirect URL here:", PromptKind.PASTE),
        ],
    )
    return state


def test_refused_channel_goes_to_the_relay() -> None:
    state = listening()
    state, actions = decide(state, ChannelRefused(GET_CALLBACK, "administratively prohibited"))
    assert [a for a in actions if isinstance(a, Relay)] == [
        Relay(GET_CALLBACK, "administratively prohibited")
    ]
    state, actions = decide(state, RelayResult(GET_CALLBACK, "ok", b"HTTP/1.1 200 OK\r\n\r\nok"))
    assert actions == [Answer(b"HTTP/1.1 200 OK\r\n\r\nok")]
    assert state.seen is LoginSeen.CALLBACK


def test_failed_relay_falls_back_to_the_paste_prompt() -> None:
    state = listening()
    state, _ = decide(state, ChannelRefused(GET_CALLBACK, "refused"))
    state, actions = decide(state, RelayResult(GET_CALLBACK, "failed", exit_status=127))
    typed = [a for a in actions if isinstance(a, TypeLine)]
    assert typed == [TypeLine(b"http://127.0.0.1:38517/callback?code=abc&state=xyz\r")]
    assert isinstance(actions[-1], AwaitVerdict) and state.seen is LoginSeen.PASTE
    state, _ = decide(state, Status(Outcome.SUCCEEDED, "✓ Authenticated"))
    state, actions = decide(state, PasteSettled(timed_out=False))
    assert len(actions) == 1 and isinstance(actions[0], Answer)
    assert actions[0].page is not None and actions[0].page.startswith(b"HTTP/1.1 200")


def test_failed_relay_without_a_paste_prompt_leaves_the_listener_answer() -> None:
    state, _ = decide(fresh(), Callback("127.0.0.1", 38517, "/callback", "redirect_uri"))
    state, _ = decide(state, ChannelRefused(GET_CALLBACK, "refused"))
    _, actions = decide(state, RelayResult(GET_CALLBACK, "failed", exit_status=1))
    assert actions[-1] == Answer(None) and not [a for a in actions if isinstance(a, TypeLine)]


@pytest.mark.parametrize("outcome, status", [("late", b"504"), ("no_answer", b"502")])
def test_a_relay_that_reached_the_remote_is_never_pasted(outcome: str, status: bytes) -> None:
    state = listening()
    state, _ = decide(state, ChannelRefused(GET_CALLBACK, "refused"))
    _, actions = decide(state, RelayResult(GET_CALLBACK, outcome))
    assert not [a for a in actions if isinstance(a, TypeLine)]
    page = actions[-1]
    assert isinstance(page, Answer) and page.page is not None and status in page.page[:20]


def test_a_posted_callback_is_never_pasted() -> None:
    state = listening(via="paste")
    _, actions = decide(state, ChannelRefused(POST_CALLBACK, "--via paste"))
    assert not [a for a in actions if isinstance(a, TypeLine)]
    fails = [a.error for a in actions if isinstance(a, Fail)]
    assert len(fails) == 1 and "form POST" in fails[0].message
    assert isinstance(actions[-1], Answer) and actions[-1].page is not None


def test_a_request_that_is_no_callback_url_is_not_typed() -> None:
    state = listening(via="paste")
    bad = b"GET /callback?x=\x01 HTTP/1.1\r\nHost: 127.0.0.1:38517\r\n\r\n"
    _, actions = decide(state, ChannelRefused(bad, "--via paste"))
    assert not [a for a in actions if isinstance(a, TypeLine)]


def test_paste_that_gets_no_verdict_in_time() -> None:
    state = listening(via="paste")
    state, _ = decide(state, ChannelRefused(GET_CALLBACK, "--via paste"))
    _, actions = decide(state, PasteSettled(timed_out=True))
    assert isinstance(actions[0], Answer) and actions[0].page is not None
    assert actions[0].page.startswith(b"HTTP/1.1 504")


def test_via_channel_fails_on_a_refused_channel() -> None:
    _, actions = decide(listening(via="channel"), ChannelRefused(GET_CALLBACK, "prohibited"))
    assert isinstance(actions[0], Fail) and isinstance(actions[0].error, SSHError)
    assert actions[-1] == Answer(None)


@pytest.mark.parametrize(
    ("via", "forwarding", "refusal"),
    [
        ("auto", "allowed", None),
        ("auto", "unknown", None),  # an inconclusive probe: a channel is tried
        ("auto", "refused", "the server refuses forwarding"),
        ("channel", "refused", None),  # --via channel tries, and fails if refused
        ("relay", "unknown", "--via relay"),
        ("paste", "unknown", "--via paste"),
    ],
)
def test_which_callbacks_go_over_a_channel(via: str, forwarding: str, refusal: str | None) -> None:
    """The runner opens a forwarding channel only where the decider says; only auto probes."""
    config = Config(host="remote", via=via)
    assert channel_refusal(config, forwarding) == refusal
    assert probes_forwarding(config) is (via == "auto")


def test_via_relay_never_pastes() -> None:
    state = listening(via="relay")
    state, _ = decide(state, ChannelRefused(GET_CALLBACK, "--via relay"))
    _, actions = decide(state, RelayResult(GET_CALLBACK, "failed", exit_status=1))
    assert actions[-1] == Answer(None)


# -- the listener's reports -------------------------------------------------------------------


def test_the_carried_callback_counts_only_on_its_own_path() -> None:
    state = listening()
    other = FromListener(ListenerEvent("request_carried", "/start", 200), "/callback")
    state, _ = decide(state, other)
    assert state.seen is LoginSeen.NONE
    state, _ = decide(
        state, FromListener(ListenerEvent("request_carried", "/callback", 200), "/callback")
    )
    assert state.seen is LoginSeen.CALLBACK


def test_no_answer_after_success_is_only_a_debug_line() -> None:
    failed = FromListener(ListenerEvent("carry_failed", "/callback", 502, NO_ANSWER), "/callback")
    _, actions = decide(listening(), failed)
    assert "warn" in [a.level for a in actions if isinstance(a, Say)]
    state, _ = decide(listening(), Status(Outcome.SUCCEEDED, "ok"))
    _, actions = decide(state, failed)
    assert "warn" not in [a.level for a in actions if isinstance(a, Say)]


# -- the end: remote exit, deadline ---------------------------------------------------------


def judge(state: FlowState, exit_status: int | None) -> verdict.Success:
    return verdict.judge(
        verdict.Facts(
            host=HOST,
            program="hermes",
            provider="spotify",
            run_as=None,
            status=state.status,
            exit_status=exit_status,
            last_lines=state.last_lines,
            seen=state.seen,
        )
    )


def test_remote_exit_before_success_fails_with_its_last_lines() -> None:
    events = transcript_events("spotify_manual_paste_021")
    state, _ = drive(fresh(), events)
    with pytest.raises(LoginFailedError) as caught:
        judge(state, 1)
    shown = [line.strip() for line in caught.value.last_lines]
    assert state.last_lines and shown == [line.strip() for line in state.last_lines]


def test_a_timed_out_login_maps_to_the_timeout_error() -> None:
    state, _ = drive(fresh(), transcript_events("spotify_timeout_traceback"))
    with pytest.raises(TimedOutError):
        judge(state, 1)


def test_the_decider_does_no_io() -> None:
    """No asyncio, sockets, clock or process state in the decider's own code."""
    for module in (decide_module,):
        source = Path(str(module.__file__)).read_text()
        tree = ast.parse(source)
        names = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (
                node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
            )
        }
        assert not names & {"asyncio", "socket", "time", "os", "sys", "subprocess"}
        assert not any(isinstance(n, (ast.AsyncFunctionDef, ast.Await)) for n in ast.walk(tree))
