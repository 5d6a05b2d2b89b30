"""The data the decider works on: its state, the events it is fed and the actions it returns.

Everything here is plain frozen data: no sockets, no clock, no asyncio. The runner turns
actions into I/O and what happens back into events.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnelauth import verdict
from tunnelauth.errors import TunnelauthError
from tunnelauth.events import AuthorizeUrl, Event, Prompt, Status
from tunnelauth.listener import ListenerEvent
from tunnelauth.providers import PROVIDERS
from tunnelauth.report import Stage
from tunnelauth.settings import Settings
from tunnelauth.verdict import LoginSeen

LAST_LINES = 12  # remote lines shown with a failure
PTY_LINE_LIMIT = 4000  # a canonical-mode PTY line holds at most 4095 bytes


@dataclass(frozen=True)
class Config:
    """What the settings fix for the whole run."""

    host: str  # the SSH target, as the user named it
    via: str = "auto"  # auto | channel | relay | paste
    batch: bool = False
    verbose: bool = False  # -v: every remote line is shown
    show_secrets: bool = False
    check_remote_port: bool = True  # read the remote socket table before opening the browser
    usual_hosts: tuple[str, ...] = ()  # the provider's login hosts (others are flagged)


@dataclass(frozen=True)
class FlowState:
    """What the run has learned so far; replaced, never changed, by each decision."""

    config: Config
    listener_port: int | None = None  # the laptop port listened on (None: no listener)
    listen_source: str = ""
    remote_host: str = "127.0.0.1"
    remote_port: int | None = None
    callback_path: str | None = None  # the redirect URI's path, once the remote says
    authorize: AuthorizeUrl | None = None
    opened: frozenset[str] = frozenset()  # URLs decided on once (opened, printed or refused)
    status: Status | None = None
    prompt: Prompt | None = None  # the remote prompt showing right now
    paste_prompt: Prompt | None = None  # the remote accepts a pasted redirect URL
    seen: LoginSeen = LoginSeen.NONE  # the login flow carried out so far (the newest wins)
    finished: bool = False  # a status line ended the login
    last_lines: tuple[str, ...] = ()
    hints_left: int = 0  # lines of hermes's manual-tunnel hint block still hidden
    hint_noted: bool = False


def config_of(settings: Settings) -> Config:
    """The decider's view of the settings."""
    usual = PROVIDERS[settings.provider].usual_hosts if settings.provider else ()
    return Config(
        host=settings.target.host,
        via=settings.via,
        batch=settings.batch,
        verbose=settings.verbosity > 0,
        show_secrets=settings.show_secrets,
        # hermes prints the port it really bound (a later line moves it): no check, so its
        # logins open the browser the moment the URL is known.
        check_remote_port=settings.provider is None,
        usual_hosts=tuple(usual),
    )


def facts(settings: Settings, state: FlowState, exit_status: int | None) -> verdict.Facts:
    """What the verdict is judged from: the settings, the decider's state, the exit status."""
    return verdict.Facts(
        host=settings.target.host,
        program=settings.program,
        provider=settings.provider,
        run_as=settings.run_as,
        status=state.status,
        exit_status=exit_status,
        last_lines=state.last_lines,
        seen=state.seen,
    )


# -- events besides the watcher's ------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """The remote has been silent for a moment (a partial line may be a prompt)."""


@dataclass(frozen=True)
class FromListener:
    """Something the laptop listener did; ``listener_path`` is the path it carries now."""

    event: ListenerEvent
    listener_path: str | None


@dataclass(frozen=True)
class StdinData:
    """Bytes the user typed on the local terminal."""

    data: bytes


@dataclass(frozen=True)
class ChannelRefused:
    """The server refused the direct channel for the browser's held ``request``."""

    request: bytes
    why: str


@dataclass(frozen=True)
class RelayResult:
    """The relay session's outcome (ok | late | no_answer | failed) for ``request``."""

    request: bytes
    outcome: str
    stdout: bytes = b""
    exit_status: int | None = None
    detail: str = ""  # the relay's stderr, made plain


@dataclass(frozen=True)
class PasteSettled:
    """After a pasted redirect: the login finished, or the paste deadline passed first."""

    timed_out: bool


Input = Event | Idle | FromListener | StdinData | ChannelRefused | RelayResult | PasteSettled

# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """A line for the reporter: ``info``, ``warn``, ``debug`` or ``remote_line``."""

    level: str
    text: str


@dataclass(frozen=True)
class SetStage:
    stage: Stage
    detail: str = ""


@dataclass(frozen=True)
class OpenListener:
    """Claim the laptop port and listen on it for the redirect URI's host and path."""

    host: str
    port: int
    path: str | None


@dataclass(frozen=True)
class CloseListener:
    """Close the laptop listener (a callback on another port replaces it)."""


@dataclass(frozen=True)
class RefineListener:
    """The same port, a better host and path: the sockets stay open."""

    host: str
    path: str | None


@dataclass(frozen=True)
class CarryWholeOrigin:
    """Every path of the listener's origin is the login's (the CLI's own loopback page)."""


@dataclass(frozen=True)
class StopCarrying:
    """The login succeeded: later requests are answered locally."""


@dataclass(frozen=True)
class OpenPage:
    """Open ``url`` in the browser; ``check_port``: first see the remote listen on it."""

    url: str
    host: str
    unusual: bool = False  # the host is not one of the provider's
    safe: bool = True  # False: only a warning, the URL is never opened
    check_port: int | None = None


@dataclass(frozen=True)
class ShowDeviceCode:
    url: str
    code: str | None
    copy: bool  # put the code on the clipboard


@dataclass(frozen=True)
class ShowPrompt:
    """The remote asks something the user answers on the local terminal."""

    text: str
    secret: bool


@dataclass(frozen=True)
class EndPrompt:
    """The remote prompt is over: echo back on, the live display back."""


@dataclass(frozen=True)
class TypeLine:
    """Write ``data`` to the remote PTY (what it echoes back is hidden)."""

    data: bytes


@dataclass(frozen=True)
class Relay:
    """Replay ``request`` to the remote listener through an exec session."""

    request: bytes
    why: str


@dataclass(frozen=True)
class AwaitVerdict:
    """Wait (bounded) for the remote's verdict on a pasted redirect, then say PasteSettled."""


@dataclass(frozen=True)
class Answer:
    """The page the browser's refused request gets (None: the listener's own answer)."""

    page: bytes | None


@dataclass(frozen=True)
class Fail:
    """The run ends with ``error``."""

    error: TunnelauthError


Action = (
    Say
    | SetStage
    | OpenListener
    | CloseListener
    | RefineListener
    | CarryWholeOrigin
    | StopCarrying
    | OpenPage
    | ShowDeviceCode
    | ShowPrompt
    | EndPrompt
    | TypeLine
    | Relay
    | AwaitVerdict
    | Answer
    | Fail
)
