"""The decider: ``decide(state, event) -> (state, actions)``, the whole login's judgement.

It is fed the watcher's events (remote lines, URLs, callbacks, prompts, status lines), the
listener's, the user's keystrokes and the fallback's results (channel refused, relay result,
paste settled), and answers with plain actions for the runner. No I/O, no clock, no asyncio:
every path, fallbacks included, is tested by feeding it events.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

from tunnelauth import hints, httpreq, relay
from tunnelauth.errors import LoginFailedError, SSHError
from tunnelauth.events import (
    AuthorizeUrl,
    BrowserRequest,
    Callback,
    DeviceCode,
    Outcome,
    Prompt,
    PromptKind,
    RejectedUrl,
    RemoteLine,
    Status,
)
from tunnelauth.flowstate import (
    LAST_LINES,
    PTY_LINE_LIMIT,
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
    SetStage,
    ShowDeviceCode,
    ShowPrompt,
    StdinData,
    StopCarrying,
    TypeLine,
)
from tunnelauth.httpreq import local_response
from tunnelauth.listener import NO_ANSWER, NO_ANSWER_PAGE
from tunnelauth.loopback import is_loopback_url, loopback_port
from tunnelauth.report import Stage
from tunnelauth.sanitize import redact
from tunnelauth.verdict import LoginSeen

Step = tuple[FlowState, list[Action]]
HINT_NOTE = "(hermes's steps for a manual ssh -L tunnel: not needed)"


def decide(state: FlowState, event: Input) -> Step:
    """The next state and the actions for one event."""
    if isinstance(event, RemoteLine):
        return _remote_line(state, event)
    if isinstance(event, Callback):
        return _callback(state, event)
    if isinstance(event, AuthorizeUrl):
        return _maybe_open_browser(replace(state, authorize=event), idle=False)
    if isinstance(event, BrowserRequest):
        # The helper's line itself is not shown: its URL follows as the usual events.
        return state, [Say("info", "the remote CLI asked to open a browser (its URL is checked)")]
    if isinstance(event, DeviceCode):
        return _device_code(state, event)
    if isinstance(event, RejectedUrl):
        # Said at once: a login URL that is never opened must not leave the user waiting
        # for the timeout without a word.
        url = _redacted(state, event.url)
        return state, [Say("warn", f"not opening a URL the remote printed ({event.reason}): {url}")]
    if isinstance(event, Prompt):
        return _prompt(state, event)
    if isinstance(event, Status):
        return _status(state, event)
    if isinstance(event, Idle):
        return _maybe_open_browser(state, idle=True)
    if isinstance(event, FromListener):
        return _from_listener(state, event)
    if isinstance(event, StdinData):
        return _stdin(state, event.data)
    if isinstance(event, ChannelRefused):
        return _channel_refused(state, event)
    if isinstance(event, RelayResult):
        return _relay_result(state, event)
    if isinstance(event, PasteSettled):
        return state, [Answer(_paste_page(state, event.timed_out))]
    return state, []


# -- the remote's output -----------------------------------------------------------------


def _remote_line(state: FlowState, event: RemoteLine) -> Step:
    actions: list[Action] = []
    if event.text.strip():
        kept = (*state.last_lines, _redacted(state, event.text))[-LAST_LINES:]
        state = replace(state, last_lines=kept)
    shown, left = hints.step(state.hints_left, event.text)
    state = replace(state, hints_left=left)
    if shown or state.config.verbose:
        actions.append(Say("remote_line", _redacted(state, event.text)))
    elif not state.hint_noted:
        state = replace(state, hint_noted=True)
        actions.append(Say("remote_line", HINT_NOTE))
    if state.prompt is not None:
        state = replace(state, prompt=None)
        actions.append(EndPrompt())
    return state, actions


def _callback(state: FlowState, event: Callback) -> Step:
    """Listen on the redirect URI's port on the laptop; carry to the remote's listener."""
    # "localhost" is resolved by the remote sshd.
    state = replace(state, remote_port=event.port, remote_host=event.host)
    if event.path:
        state = replace(state, callback_path=urlsplit(event.path).path or "/")
    actions: list[Action] = []
    if state.listener_port is not None:
        keeps_uri = event.source == "announcement" and state.listen_source == "redirect_uri"
        if state.listener_port == event.port:
            # A later line about the same port: its host and path win, the sockets stay open
            # (but the browser comes back where the redirect URI says, not a waiting line).
            if keeps_uri:
                return state, []
            return replace(state, listen_source=event.source), [
                RefineListener(event.host, event.path)
            ]
        if keeps_uri:
            # The redirect URI fixes the laptop port; a later announcement only moves the
            # remote end (hermes prints the port it really bound).
            return state, [Say("debug", f"remote listener moved to port {event.port}")]
        actions.append(CloseListener())
    state = replace(state, listener_port=event.port, listen_source=event.source)
    actions += [
        OpenListener(event.host, event.port, event.path),
        SetStage(Stage.LISTENING, f"127.0.0.1:{event.port} → remote port {event.port}"),
    ]
    state, more = _maybe_open_browser(state, idle=False)
    return state, actions + more


def _maybe_open_browser(state: FlowState, *, idle: bool) -> Step:
    """Open the authorize URL once the laptop end is ready for its redirect."""
    auth = state.authorize
    if auth is None or auth.url in state.opened:
        return state, []
    redirect = auth.redirect_uri
    needs_listener = is_loopback_url(auth.url) or (
        redirect is not None and is_loopback_url(redirect)
    )
    if needs_listener and state.listener_port is None:
        return state, []
    if not needs_listener and redirect is None and state.listener_port is None and not idle:
        return state, []  # a callback announcement may still follow the URL
    state = replace(state, opened=state.opened | {auth.url})  # decided once
    actions: list[Action] = []
    if state.listener_port is not None and loopback_port(auth.url) == state.listener_port:
        # The CLI's own page (rclone's /auth): its origin's pages are the login's.
        actions.append(CarryWholeOrigin())
    check = state.remote_port if needs_listener and state.config.check_remote_port else None
    actions += [_page(state, auth.url, auth.host, check), SetStage(Stage.WAITING_BROWSER)]
    return state, actions


def _page(state: FlowState, url: str, host: str, check_port: int | None = None) -> OpenPage:
    from tunnelauth.browser import is_safe_browser_url

    usual = state.config.usual_hosts
    unusual = bool(usual) and not any(host == h or host.endswith("." + h) for h in usual)
    return OpenPage(
        url,
        host,
        unusual=unusual and not is_loopback_url(url),
        safe=is_safe_browser_url(url),
        check_port=check_port,
    )


def _device_code(state: FlowState, event: DeviceCode) -> Step:
    state = replace(state, seen=LoginSeen.DEVICE)
    actions: list[Action] = []
    if event.url not in state.opened:
        state = replace(state, opened=state.opened | {event.url})
        actions.append(_page(state, event.url, urlsplit(event.url).hostname or ""))
    copy = bool(event.code) and not state.config.batch
    actions += [ShowDeviceCode(event.url, event.code, copy), SetStage(Stage.WAITING_APPROVAL)]
    return state, actions


def _prompt(state: FlowState, event: Prompt) -> Step:
    state = replace(state, prompt=event)
    if event.kind is PromptKind.PASTE:
        state = replace(state, paste_prompt=event)
        if state.listener_port is not None:
            return state, [Say("debug", "the remote also accepts a pasted redirect URL")]
    if state.config.batch:
        # Nobody can answer: fail now, naming the prompt, instead of waiting for a timeout.
        error = LoginFailedError(
            f"the remote asks {event.text.strip()!r} and this run cannot answer it",
            last_lines=list(state.last_lines),
            hint="run tunnelauth from a terminal, or set the value on the remote beforehand",
        )
        return state, [Fail(error)]
    return state, [ShowPrompt(event.text, event.kind.is_secret), SetStage(Stage.PROMPT)]


def _status(state: FlowState, event: Status) -> Step:
    if state.status is None or event.outcome is not Outcome.SUCCEEDED:
        state = replace(state, status=event)
    state = replace(state, finished=True)
    actions: list[Action] = []
    if event.outcome is Outcome.SUCCEEDED and state.listener_port is not None:
        actions.append(StopCarrying())
    actions.append(SetStage(Stage.FINISHING, event.line.strip()))
    return state, actions


# -- the listener and the user -------------------------------------------------------------


def _from_listener(state: FlowState, wrapped: FromListener) -> Step:
    event = wrapped.event
    actions: list[Action] = [
        Say("debug", f"browser: {event.kind} {event.path} {event.detail}".rstrip())
    ]
    if event.kind == "request_carried":
        known = state.callback_path or wrapped.listener_path
        if known is None or urlsplit(event.path).path == known:
            state = replace(state, seen=LoginSeen.CALLBACK)
            actions.append(Say("info", "the callback reached the remote over a direct SSH channel"))
        else:
            # A page of the remote's own login (its start page), not the callback.
            actions.append(
                Say("debug", f"carried the browser's request for {event.path} to the remote")
            )
    elif event.kind == "carry_failed" and event.detail == NO_ANSWER:
        actions.append(_no_answer_note(state))
    elif event.kind == "request_local" and event.status == 421:
        # The Host it named is the sender's text: not shown.
        actions.append(
            Say(
                "warn",
                "refused a request to the callback port that named another host "
                "(a web page trying DNS rebinding?); it never reached the remote",
            )
        )
    return state, actions


def _no_answer_note(state: FlowState) -> Say:
    """The remote CLI took the callback and closed without answering the browser."""
    if state.status is not None and state.status.outcome is Outcome.SUCCEEDED:
        return Say("debug", "a request after the login got no answer from the remote")
    return Say(
        "warn",
        "the remote CLI took the callback but closed the connection without answering "
        "(it may have exited); the browser shows that no answer came",
    )


def _stdin(state: FlowState, data: bytes) -> Step:
    """Relay the user's line to a remote prompt (only while one is showing)."""
    if state.prompt is None:
        return state, [Say("warn", "not sent: the remote is not asking for input right now")]
    line = data.rstrip(b"\r\n")
    if len(line) >= PTY_LINE_LIMIT:
        text = (
            f"not sent: the line is {len(line)} bytes, longer than the remote terminal "
            f"takes ({PTY_LINE_LIMIT}); type or paste a shorter answer"
        )
        return state, [Say("warn", text)]
    if state.prompt.kind in (PromptKind.PASTE, PromptKind.CODE):
        state = replace(state, seen=LoginSeen.PASTE)
    return replace(state, prompt=None), [TypeLine(line + b"\r"), EndPrompt()]


# -- fallbacks: refused channel → relay → paste -------------------------------------------


def probes_forwarding(config: Config) -> bool:
    """Whether to learn, while the login starts, if the server allows forwarding channels."""
    return config.via == "auto"


def channel_refusal(config: Config, forwarding: str) -> str | None:
    """Why the callback is not to be carried over a forwarding channel (None: open one).

    ``forwarding``: the probe's verdict (``allowed``, ``refused`` or ``unknown``). The reason
    becomes the ``ChannelRefused`` event that picks the fallback.
    """
    if config.via in ("relay", "paste"):
        return f"--via {config.via}"
    if config.via == "auto" and forwarding == "refused":
        return "the server refuses forwarding"
    return None


def _channel_refused(state: FlowState, event: ChannelRefused) -> Step:
    via = state.config.via
    if via == "channel":
        error = SSHError(
            f"the SSH server refused the forwarding channel ({event.why})",
            host=state.config.host,
            hint="use --via auto (the default) or --via relay on hosts that forbid forwarding",
        )
        return state, [Fail(error), Answer(None)]
    if via != "paste":
        note = Say("info", f"relaying the callback through an SSH session ({event.why})")
        return state, [note, Relay(event.request, event.why)]
    return _paste(state, event.request)


def _relay_result(state: FlowState, event: RelayResult) -> Step:
    if event.outcome == "late":
        # The request may well have reached the CLI: nothing else (no paste) is tried.
        return state, [
            Say(
                "warn",
                f"the relay got no answer from the remote CLI within {relay.ANSWER_DEADLINE:g} s",
            ),
            Answer(local_response(504, "No answer", "See the tunnelauth terminal.")),
        ]
    if event.outcome == "no_answer":
        return state, [_no_answer_note(state), Answer(local_response(502, *NO_ANSWER_PAGE))]
    if event.outcome == "failed":
        warn = Say("warn", f"the relay failed (exit {event.exit_status}): {event.detail}")
        if state.config.via == "relay" or state.paste_prompt is None:
            return state, [warn, Answer(None)]
        state, actions = _paste(state, event.request)
        return state, [warn, *actions]
    return replace(state, seen=LoginSeen.CALLBACK), [Answer(event.stdout)]


def _paste(state: FlowState, request: bytes) -> Step:
    """Type the captured redirect URL into the remote's paste prompt; page = the result."""
    try:
        parsed: httpreq.Request | None = httpreq.parse_request(request)
    except httpreq.LocalAnswer:
        parsed = None
    if parsed is not None and (parsed.method == "POST" or parsed.body):
        # A form_post callback carries its code in the body: the URL alone would lose it,
        # and a body is never typed into a terminal.
        error = LoginFailedError(
            "the callback came as a form POST (response_mode=form_post): its code is in "
            "the request body, which a paste prompt cannot take, so nothing was pasted",
            hint="log in where the callback can be carried: without --via paste, on a host "
            "that allows forwarding (AllowTcpForwarding) or has python, bash or curl for "
            "the relay",
        )
        text = "A POSTed callback cannot be pasted. See the tunnelauth terminal."
        return state, [Fail(error), Answer(local_response(502, "Callback not pasted", text))]
    assert state.remote_port is not None
    target = parsed.target if parsed is not None else ""
    url = httpreq.paste_url(state.remote_host, state.remote_port, target)
    if url is None or len(url) >= PTY_LINE_LIMIT:
        # Only a well-formed callback URL is ever typed: a control byte (CR, Ctrl-C) in the
        # target would become keystrokes in the remote's terminal.
        return state, [
            Say("warn", "the browser's request is not a callback URL; nothing was pasted"),
            Answer(local_response(400, "Not a callback", "See the tunnelauth terminal.")),
        ]
    state = replace(state, prompt=None, seen=LoginSeen.PASTE)
    return state, [
        Say("info", "passing the redirect to the remote's paste prompt"),
        TypeLine(url.encode() + b"\r"),
        AwaitVerdict(),
    ]


def _paste_page(state: FlowState, timed_out: bool) -> bytes:
    if timed_out:
        return local_response(504, "No answer yet", "See the tunnelauth terminal.")
    host, status = state.config.host, state.status
    if status is not None and status.outcome is Outcome.SUCCEEDED:
        text = f"{host} says: {status.line.strip()}"
        return local_response(200, "Login complete: you can close this tab", text)
    line = status.line.strip() if status else "the login ended"
    return local_response(502, "Login failed", f"{host}: {line}")


def _redacted(state: FlowState, text: str) -> str:
    return text if state.config.show_secrets else redact(text)
