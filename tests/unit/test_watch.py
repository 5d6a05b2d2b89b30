"""Tests for the pure output watcher: golden transcripts, chunking, bounds and adversarial input."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnelauth.browser import is_safe_browser_url
from tunnelauth.events import (
    AuthorizeUrl,
    BrowserRequest,
    Callback,
    DeviceCode,
    Event,
    Outcome,
    Prompt,
    PromptKind,
    RejectedUrl,
    RemoteLine,
    Status,
)
from tunnelauth.urlcheck import parse_url, url_problem
from tunnelauth.watch import MAX_LINE, Watcher
from tunnelauth.watchrules import known_prompt, prompt_kind, status_of

TRANSCRIPTS = Path(__file__).parent / "transcripts"

# ----------------------------------------------------------------------------- helpers


def run(chunks: Iterable[bytes], *, idle_at_end: bool = True) -> list[Event]:
    """Feed chunks to a fresh watcher, then idle (optionally) and close."""
    watcher = Watcher()
    events: list[Event] = []
    for chunk in chunks:
        events += watcher.feed(chunk)
    if idle_at_end:
        events += watcher.idle()
    return events + watcher.close()


def feed_text(text: str) -> list[Event]:
    """Run one string (UTF-8) through a watcher and close it."""
    return run([text.encode()], idle_at_end=False)


def signals(events: Sequence[Event]) -> list[Event]:
    """Every event except plain remote lines."""
    return [e for e in events if not isinstance(e, RemoteLine)]


def actions(events: Sequence[Event]) -> list[Event]:
    """The events the orchestrator acts on: a page to open, a port to listen on."""
    return [e for e in events if isinstance(e, (AuthorizeUrl, DeviceCode, Callback))]


def rejected(events: Sequence[Event]) -> list[RejectedUrl]:
    return [e for e in events if isinstance(e, RejectedUrl)]


def lines_of(events: Sequence[Event]) -> list[str]:
    """The text of every remote line."""
    return [e.text for e in events if isinstance(e, RemoteLine)]


def load(name: str) -> bytes:
    """The raw bytes of one golden transcript."""
    return (TRANSCRIPTS / f"{name}.pty").read_bytes()


def succeeded(line: str) -> Status:
    return Status(Outcome.SUCCEEDED, line)


def failed(line: str) -> Status:
    return Status(Outcome.FAILED, line)


def timed_out(line: str) -> Status:
    return Status(Outcome.TIMED_OUT, line)


def not_found(line: str) -> Status:
    return Status(Outcome.NOT_FOUND, line)


# ----------------------------------------------------------------------------- golden transcripts

SPOTIFY_URL = (
    "https://accounts.spotify.com/authorize?client_id=4f1c2a9b7d8e4c0fa1b2c3d4e5f60718"
    "&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A43827%2Fspotify%2Fcallback"
    "&scope=user-read-playback-state+user-modify-playback-state+user-read-currently-playing"
    "&code_challenge_method=S256&code_challenge=q8Vd0mK3x1aZbF9pLw7tYcN2rGhJ5uE4sOiT6kDvB0A"
    "&state=Qm9sZWF0dGVyLXNwb3RpZnktc3RhdGU"
)
SPOTIFY: list[Event] = [
    Callback("127.0.0.1", 43827, "/spotify/callback", "announcement"),
    AuthorizeUrl(SPOTIFY_URL, "accounts.spotify.com", "http://127.0.0.1:43827/spotify/callback"),
]
MCP_URL = (
    "https://mcp.linear.app/authorize?response_type=code&client_id=hermes-3f9a1c"
    "&redirect_uri=http%3A%2F%2F127.0.0.1%3A38517%2Fcallback&state=8d1e4b0a9c7f"
    "&code_challenge=Zk2v8QpR0sT3uW6xY9aB1cD4eF7gH0iJ2kL5mN8oP1q&code_challenge_method=S256"
)
MCP_PROMPT = Prompt(
    "Or paste the redirect URL here (or the ``?code=...&state=...`` portion) and press Enter."
    " Type ``skip`` + Enter to continue without this server:",
    PromptKind.PASTE,
)
MCP: list[Event] = [
    Callback("127.0.0.1", 38517, "/callback", "redirect_uri"),
    AuthorizeUrl(MCP_URL, "mcp.linear.app", "http://127.0.0.1:38517/callback"),
    MCP_PROMPT,
]


def xai_url(port: int) -> str:
    return (
        "https://auth.x.ai/oauth2/auth?response_type=code"
        "&client_id=b1a00492-073a-47ea-816f-4c329264a828"
        f"&redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback"
        "&scope=openid+profile+offline_access"
        "&code_challenge=3kQ9vT2mX7pL0aR5sW8yB1cE4fH6jN9oU2iZ5dG7hK0&code_challenge_method=S256"
        "&state=xai-5f2c9e"
    )


CODEX_AUTH_URL = (
    "https://auth.openai.com/oauth/authorize?response_type=code"
    "&client_id=app_EMoamEEZ73f0CkXaXp7hrann"
    "&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback"
    "&scope=openid+profile+email+offline_access"
    "&code_challenge=Tq4nW8xZ1bC5dF9gJ2kM6pR0sV3yA7eH1iL4oU8wX2z&code_challenge_method=S256"
    "&id_token_add_organizations=true&codex_cli_simplified_flow=true&state=c0d3x5t4t3"
)
CODEX_DEVICE = DeviceCode("https://auth.openai.com/codex/device", "K7QF-3MZP")
ANTHROPIC_URL = (
    "https://claude.ai/oauth/authorize?code=true&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    "&response_type=code"
    "&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback"
    "&scope=org%3Acreate_api_key+user%3Aprofile+user%3Ainference"
    "&code_challenge=Hc8Lr2Vq6Yt0Wm4Xp9Zb3Na7Ks1Jd5Ge8Fu2Ci6Oh0Tl&code_challenge_method=S256"
    "&state=anth-7c1f0e"
)

EXPECTED: dict[str, list[Event]] = {
    "spotify_success_0190": [*SPOTIFY, succeeded("Spotify login successful!")],
    "spotify_success_legacy": [*SPOTIFY, succeeded("Spotify login successful!")],
    "spotify_bind_failure": [
        SPOTIFY[0],
        failed(
            "Could not bind Spotify callback server on 127.0.0.1:43827: "
            "[Errno 98] Address already in use"
        ),
    ],
    "spotify_timeout_traceback": [
        *SPOTIFY,
        timed_out(
            "hermes_cli.auth.AuthError: "
            "Spotify authorization timed out waiting for the local callback."
        ),
    ],
    "spotify_state_mismatch": [*SPOTIFY, failed("Spotify authorization failed: state mismatch.")],
    "mcp_success": [*MCP, succeeded("✓ Authenticated — 12 tool(s) available")],
    "mcp_failure_exit0": [
        failed(
            "✗ Authentication failed: MCP OAuth for 'linear': non-interactive environment and no "
            "cached tokens found. Run `hermes mcp login linear` interactively first to complete "
            "initial authorization."
        )
    ],
    "mcp_timeout": [
        *MCP,
        timed_out(
            "✗ Authentication failed: OAuth callback timed out — no authorization code received."
        ),
    ],
    "mcp_paste": [*MCP, succeeded("✓ Authenticated (server reported no tools)")],
    "mcp_paste_waiting": MCP,
    "xai_legacy_success": [
        Callback("127.0.0.1", 56121, "/callback", "redirect_uri"),
        AuthorizeUrl(xai_url(56121), "auth.x.ai", "http://127.0.0.1:56121/callback"),
        succeeded("Login successful!"),
    ],
    "xai_legacy_port_bump": [
        Callback("127.0.0.1", 56121, "/callback", "redirect_uri"),
        AuthorizeUrl(xai_url(56121), "auth.x.ai", "http://127.0.0.1:56121/callback"),
        Callback("127.0.0.1", 41877, "/callback", "announcement"),
        succeeded("Login successful!"),
    ],
    "xai_device_0190": [
        DeviceCode("https://accounts.x.ai/device?user_code=ABCD-EFGH", "ABCD-EFGH"),
        succeeded("Login successful!"),
        succeeded('Added xai-oauth OAuth credential #2: "alice@example.com"'),
    ],
    "xai_device_timeout": [
        DeviceCode("https://accounts.x.ai/device?user_code=WXYZ-2345", "WXYZ-2345"),
        timed_out("Timed out waiting for xAI device authorization."),
    ],
    "codex_device": [
        CODEX_DEVICE,
        succeeded("Login successful!"),
        succeeded('Added openai-codex OAuth credential #1: "alice@example.com"'),
    ],
    "codex_loopback_then_device": [
        Callback("localhost", 1455, "/auth/callback", "redirect_uri"),
        AuthorizeUrl(CODEX_AUTH_URL, "auth.openai.com", "http://localhost:1455/auth/callback"),
        CODEX_DEVICE,
        succeeded("Login successful!"),
    ],
    "minimax_device": [
        DeviceCode("https://www.minimax.io/oauth/device", "MNQX-7RTA"),
        succeeded("✓ MiniMax OAuth login successful."),
        succeeded('Added minimax-oauth OAuth credential #1: "MiniMax (alice)"'),
    ],
    "nous_device": [
        DeviceCode("https://portal.nousresearch.com/device", "QWER-TYUI"),
        timed_out("Login timed out after 15 minutes."),
    ],
    "anthropic_paste": [
        AuthorizeUrl(
            ANTHROPIC_URL, "claude.ai", "https://console.anthropic.com/oauth/code/callback"
        ),
        Prompt("Authorization code:", PromptKind.CODE),
        succeeded('Added anthropic OAuth credential #1: "claude.ai (alice)"'),
    ],
    "rclone": [
        Callback("127.0.0.1", 53682, None, "announcement"),
        AuthorizeUrl("http://127.0.0.1:53682/auth?state=Zq8Xk2LwPp4s", "127.0.0.1", None),
    ],
    # hermes 0.20-0.21 (upstream strings, not yet released for Python 3.11)
    "codex_browser_021": [
        Callback("localhost", 1455, "/auth/callback", "redirect_uri"),
        AuthorizeUrl(CODEX_AUTH_URL, "auth.openai.com", "http://localhost:1455/auth/callback"),
        succeeded('Added openai-codex OAuth credential #1: "alice@example.com"'),
    ],
    "codex_browser_port_busy_021": [
        CODEX_DEVICE,
        succeeded("Login successful!"),
        succeeded('Added openai-codex OAuth credential #1: "alice@example.com"'),
    ],
    "openrouter_headless_paste_021": [Prompt("Authorization code:", PromptKind.CODE)],
    "spotify_manual_paste_021": [*SPOTIFY, Prompt("Callback URL:", PromptKind.PASTE)],
    "nous_device_timeout_021": [
        DeviceCode("https://portal.nousresearch.com/device", "QWER-TYUI"),
        timed_out("Timed out waiting for device authorization."),
    ],
    "notfound_plain": [not_found("hermes: command not found")],
    "notfound_bash": [not_found("bash: line 1: hermes: command not found")],
    "notfound_sh": [not_found("sh: 1: hermes: not found")],
    "notfound_zsh": [not_found("zsh: command not found: hermes")],
    "notfound_marker": [not_found("tunnelauth: remote command not found: hermes")],
    "unknown_provider": [failed("Unknown provider 'spotify'.")],
    "plugin_generic": [
        AuthorizeUrl(
            "https://login.example.com/oauth2/authorize?client_id=plug-42&response_type=code"
            "&state=p1ug",
            "login.example.com",
            None,
        ),
        Callback("127.0.0.1", 8765, "/oauth2callback", "announcement"),
        succeeded("Logged in successfully as alice."),
    ],
}

# Lines that must be shown as they are, and text that must never be shown.
SHOWN: dict[str, list[str]] = {
    "spotify_success_0190": [
        "Remote session detected — SSH tunnel required",
        "  ssh -N -L 43827:127.0.0.1:43827 alice@devbox",
        "",
        "  Provider state saved under providers.spotify",
    ],
    "codex_device": ["     https://auth.openai.com/codex/device", "     K7QF-3MZP"],
    "spotify_timeout_traceback": ["Traceback (most recent call last):", "             ^^^^^^"],
    "mcp_paste": ["  Got authorization code from paste — completing flow."],
    "mcp_success": ["✓ Authenticated — 12 tool(s) available"],
    "rclone": ["2026/07/14 10:12:19 NOTICE: Got code"],
    "codex_browser_021": [
        "Signing in to OpenAI Codex (browser authorization)...",
        "Exchanging the authorization code for Codex tokens...",
    ],
    "codex_browser_port_busy_021": [
        "Port 1455 is already in use (a Codex CLI sign-in may be running). OpenAI only "
        "redirects to that port, so falling back to the device-code login."
    ],
    "openrouter_headless_paste_021": [
        "Remote session detected — using OpenRouter's headless flow."
    ],
    "nous_device_timeout_021": ["  Portal sign-in is required…"],
}
HIDDEN: dict[str, list[str]] = {
    "mcp_paste": ["ac_9f8e7d6c5b4a"],  # the pasted redirect URL echoed by the PTY
    "anthropic_paste": ["Xk3pQ9vT2mL7aR5sW8yB1cE4"],  # the pasted code
    "codex_device": ["\x1b", "[94m"],
}


def test_every_transcript_has_expectations() -> None:
    names = {p.stem for p in TRANSCRIPTS.glob("*.pty")}
    assert names == set(EXPECTED)


def test_transcripts_use_pty_line_ends() -> None:
    for path in TRANSCRIPTS.glob("*.pty"):
        data = path.read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), path.name


# Where the remote really waits for input: the orchestrator calls idle() there.
PAUSE_AFTER: dict[str, bytes] = {
    "mcp_success": b"without this server: ",
    "mcp_timeout": b"without this server: ",
    "mcp_paste": b"without this server: ",
    "anthropic_paste": b"Authorization code: ",
}


def run_with_pause(name: str) -> list[Event]:
    """Run a transcript as it happens live: idle() where the remote waits, and at the end."""
    data = load(name)
    marker = PAUSE_AFTER.get(name)
    if marker is None:
        return run([data])
    cut = data.index(marker) + len(marker)
    watcher = Watcher()
    events = watcher.feed(data[:cut]) + watcher.idle() + watcher.feed(data[cut:])
    return events + watcher.idle() + watcher.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_events(name: str) -> None:
    events = run_with_pause(name)
    assert signals(events) == EXPECTED[name]
    shown = lines_of(events)
    for line in SHOWN.get(name, []):
        assert line in shown
    for secret in HIDDEN.get(name, []):
        assert all(secret not in repr(e) for e in events)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_chunking_does_not_matter(name: str) -> None:
    data = load(name)
    whole = run([data], idle_at_end=False)
    for cut in range(1, len(data)):
        assert run([data[:cut], data[cut:]], idle_at_end=False) == whole, f"split at {cut}"
    one_by_one = [data[i : i + 1] for i in range(len(data))]
    assert run(one_by_one, idle_at_end=False) == whole


def test_transcript_events_appear_as_soon_as_their_line_is_complete() -> None:
    watcher = Watcher()
    data = load("spotify_success_0190")
    first = data.index(b"https://accounts")
    end = data.index(b"\r\n", first) + 2
    events = watcher.feed(data[:end])
    assert signals(events) == SPOTIFY


# ----------------------------------------------------------------------------- lines


def test_line_ends_crlf_lf_and_bare_cr() -> None:
    events = feed_text("one\r\ntwo\nthree\r\r\nfour")
    assert lines_of(events) == ["one", "two", "three", "four"]


def test_blank_lines_are_emitted() -> None:
    assert lines_of(feed_text("a\r\n\r\n\nb\r\n")) == ["a", "", "", "b"]


def test_bare_cr_progress_rewrites_become_lines() -> None:
    assert lines_of(feed_text("\r10%\r55%\r100%\r\ndone\r\n")) == ["10%", "55%", "100%", "done"]


def test_cr_at_end_of_chunk_waits_for_lf() -> None:
    watcher = Watcher()
    assert watcher.feed(b"abc\r") == []
    assert watcher.feed(b"\n") == [RemoteLine("abc")]


def test_idle_completes_a_line_ended_by_cr_and_swallows_the_lf() -> None:
    watcher = Watcher()
    watcher.feed(b"Login successful!\r")
    assert watcher.idle() == [RemoteLine("Login successful!"), succeeded("Login successful!")]
    assert watcher.feed(b"\nnext\r\n") == [RemoteLine("next")]


def test_close_flushes_partial_line() -> None:
    watcher = Watcher()
    assert watcher.feed(b"Login successful!") == []
    assert watcher.close() == [RemoteLine("Login successful!"), succeeded("Login successful!")]


def test_feed_after_close_is_an_error() -> None:
    watcher = Watcher()
    watcher.close()
    with pytest.raises(ValueError):
        watcher.feed(b"x")
    assert watcher.idle() == []
    assert watcher.close() == []


def test_utf8_split_inside_a_character() -> None:
    data = "✓ Authenticated — 3 tool(s) available\r\n".encode()
    watcher = Watcher()
    events = [e for b in data for e in watcher.feed(bytes([b]))] + watcher.close()
    assert events == [
        RemoteLine("✓ Authenticated — 3 tool(s) available"),
        succeeded("✓ Authenticated — 3 tool(s) available"),
    ]


def test_invalid_utf8_is_replaced() -> None:
    assert lines_of(run([b"a\xffb\xe2\x9c\r\n"])) == ["a\ufffdb\ufffd"]


def test_colours_are_stripped_from_lines() -> None:
    assert lines_of(feed_text("\x1b[1m\x1b[94mhello\x1b[0m\x1b[K\r\n")) == ["hello"]


def test_overlong_line_is_truncated_and_the_rest_dropped() -> None:
    watcher = Watcher()
    events = watcher.feed(b"x" * (MAX_LINE + 10))
    assert events == [RemoteLine("x" * MAX_LINE + "…")]
    assert watcher.buffered() == 0
    assert watcher.feed(b"yyy\r\nnext\r\n") == [RemoteLine("next")]


def test_truncated_url_is_never_emitted() -> None:
    url = "https://example.com/authorize?client_id=x&response_type=code&pad="
    text = "Open: " + url + "a" * MAX_LINE + "\r\n"
    events = feed_text(text)
    assert actions(events) == []
    (bad,) = rejected(events)
    assert bad.reason == "longer than 8192 characters" and len(bad.url) <= 201


def test_fifty_megabytes_without_newline_keep_memory_flat() -> None:
    watcher = Watcher()
    chunk = (b"0123456789abcdef\x1b[31m" * 4096)[: 64 * 1024]
    peak = 0
    for _ in range(50 * 16):
        watcher.feed(chunk)
        peak = max(peak, watcher.buffered())
    assert peak <= MAX_LINE
    events = watcher.close()
    assert events == []


def test_unterminated_osc_does_not_hide_the_rest_forever() -> None:
    watcher = Watcher()
    events = watcher.feed(b"\x1b]52;c;" + b"A" * 100_000 + b"\r\nLogin successful!\r\n")
    assert succeeded("Login successful!") in events
    assert watcher.buffered() == 0


# ----------------------------------------------------------------------------- URLs

GOOD_URLS = [
    "https://example.com/authorize?client_id=a&response_type=code",
    "https://EXAMPLE.com:8443/x",
    "http://127.0.0.1:43827/spotify/callback",
    "http://localhost:1455/auth/callback",
    "http://[::1]:8080/cb",
    "https://[2001:db8::1]/device",
    "https://example.com/cb?x=$(id);y='1'",
]
BAD_URLS = [
    "http://example.com/authorize?client_id=a",  # plain http off loopback
    "http://127.0.0.1/callback",  # no port
    "http://127.0.0.1:80/callback",  # privileged port
    "http://127.0.0.1:0/callback",
    "http://127.0.0.1:70000/callback",
    "http://127.0.0.2:8080/callback",  # not one of the three loopback names
    "http://localhost.:8080/callback",
    "https://user:pw@example.com/x",
    "https://example.com@evil.com/x",
    "https://exa mple.com/x",
    "https://example.com/\x07x",
    "https://exämple.com/x",
    "https://example.com/%zz",
    "https://example.com\\@evil.com/",
    "https:///path",
    "https://-bad-.com/",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "data:text/html,hi",
    "https://example.com/cb?redirect_uri=a&redirect_uri=b",
    "https://example.com/cb?redirect_uri=http%3A%2F%2Fx%0A",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_parse_url_accepts(url: str) -> None:
    parsed = parse_url(url)
    assert parsed is not None
    assert parsed.url == url


@pytest.mark.parametrize("url", BAD_URLS)
def test_parse_url_rejects(url: str) -> None:
    assert parse_url(url) is None


def test_parse_url_normalizes_host() -> None:
    parsed = parse_url("http://[::1]:8080/cb")
    assert parsed is not None and parsed.host == "::1" and parsed.port == 8080


@pytest.mark.parametrize(
    ("line", "url"),
    [
        ("Open: https://example.com/activate.", "https://example.com/activate"),
        ("Open (https://example.com/activate), then", "https://example.com/activate"),
        ("Open https://example.com/wiki/Foo_(bar) now", "https://example.com/wiki/Foo_(bar)"),
        ('Open "https://example.com/activate"', "https://example.com/activate"),
        ("Open <https://example.com/activate>", "https://example.com/activate"),
        ("Open `https://example.com/activate`!", "https://example.com/activate"),
        ("Open this: url='https://example.com/activate'", "https://example.com/activate"),
        ('Open: {"url": "https://example.com/activate"}', "https://example.com/activate"),
        ('Open https://example.com/activate".', "https://example.com/activate"),
        ("Open [link](https://example.com/activate)", "https://example.com/activate"),
        ("Open **https://example.com/activate**", "https://example.com/activate"),
        ("Open 'https://example.com/a?b=c;'", "https://example.com/a?b=c"),
    ],
)
def test_url_boundaries_in_text(line: str, url: str) -> None:
    assert signals(feed_text(line + "\r\n")) == [AuthorizeUrl(url, "example.com", None)]


def test_plain_https_url_without_instruction_is_ignored() -> None:
    assert signals(feed_text("Docs: https://example.com/docs\r\nbye\r\n")) == []


def test_https_url_with_oauth_params_needs_no_instruction() -> None:
    url = "https://idp.example/auth?response_type=code&client_id=c&state=s"
    assert signals(feed_text(f"  {url}\r\n")) == [AuthorizeUrl(url, "idp.example", None)]


def test_same_authorize_url_twice_is_reported_once() -> None:
    url = "https://idp.example/auth?response_type=code&client_id=c&state=s"
    assert len(signals(feed_text(f"{url}\r\nagain: {url}\r\n"))) == 1


@pytest.mark.parametrize(
    "line",
    [
        "Open this URL: javascript:alert(document.cookie)",
        "Open this URL: javascript:https://example.com/x",
        "Open this URL: file:///etc/passwd",
        "Open this URL: data:text/html;base64,PHNjcmlwdD4=",
        "Open this URL: https://user:secret@example.com/authorize?client_id=x",
        "Open this URL: http://example.com/authorize?client_id=x&response_type=code",
        "Open this URL: xhttps://example.com/authorize?client_id=x",
    ],
)
def test_dangerous_urls_are_never_emitted(line: str) -> None:
    assert actions(feed_text(line + "\r\n")) == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("Open this URL: https://user:secret@example.com/a?client_id=x", "user name"),
        ("Open this URL: http://example.com/authorize?client_id=x", "plain http"),
        ("Open this URL: https://exämple.com/authorize", "host or port is not valid"),
        ("  https://idp.example/auth?client_id=c&scope=café", "characters a URL cannot carry"),
        ("Open: https://idp.example/auth?x=%zz", "a % that starts no escape"),
        ("Open: https://idp.example{x}/auth", "host or port is not valid"),
        ("Waiting for callback on http://127.0.0.1:22/callback", "port 1024-65535"),
        ("  https://idp.example/auth?redirect_uri=a&redirect_uri=b", "repeated"),
    ],
)
def test_a_login_url_that_is_refused_says_why(line: str, reason: str) -> None:
    # Never silent: the user learns at once why nothing opens, instead of at the timeout.
    events = feed_text(line + "\r\n")
    assert actions(events) == []
    (bad,) = rejected(events)
    assert reason in bad.reason and bad.url in line


@pytest.mark.parametrize(
    "line",
    [
        "Docs: http://example.com/guide",  # not a login URL: plain http docs links stay quiet
        "see https://exämple.com/about",
        "Open this URL: javascript:alert(1)",  # not an http(s) URL at all: nothing to open
    ],
)
def test_other_unusable_urls_are_not_reported(line: str) -> None:
    assert signals(feed_text(line + "\r\n")) == []


@pytest.mark.parametrize(
    ("printed", "opened"),
    [
        (
            "https://idp.example/authorize?client_id=c&response_type=code&claims={}",
            "https://idp.example/authorize?client_id=c&response_type=code&claims=%7B%7D",
        ),
        (
            'https://idp.example/authorize?client_id=c&q={"a":[1]}|x^y\\z',
            "https://idp.example/authorize?client_id=c&q=%7B%22a%22:[1]%7D%7Cx%5Ey%5Cz",
        ),
        (
            "https://idp.example/authorize?client_id=c&tpl=`id`&it's=1",
            "https://idp.example/authorize?client_id=c&tpl=%60id%60&it's=1",
        ),
    ],
)
def test_a_url_is_percent_encoded_as_a_browser_would(printed: str, opened: str) -> None:
    (event,) = actions(feed_text(f"Open this URL: {printed}\r\n"))
    assert event == AuthorizeUrl(opened, "idp.example")
    assert is_safe_browser_url(opened)


def test_encoding_judges_the_host_as_printed() -> None:
    # Encoding only ever touches what follows the host: it never makes a bad host look good.
    for url in (
        "https://good.example{}/x",
        "https://good.example\\@evil.example/x",
        "https://good.example|evil.example/x",
        "http://evil.example/cb?x={}",
        "http://127.0.0.1:80/cb?x={}",
    ):
        assert parse_url(url) is None, url
        assert url_problem(url) is not None


def test_shell_metacharacters_in_a_valid_url_stay_data() -> None:
    url = "https://example.com/cb?x=$(touch%20/tmp/p);y=`id`"
    events = signals(feed_text(f"Open this URL: {url}\r\n"))
    opened = "https://example.com/cb?x=$(touch%20/tmp/p);y=%60id%60"
    assert events == [AuthorizeUrl(opened, "example.com")]


@settings(max_examples=300, deadline=None)
@given(
    host=st.sampled_from(["idp.example", "127.0.0.1:5000", "[::1]:8080", "a{b}.c", "x.y:0"]),
    scheme=st.sampled_from(["https", "http"]),
    rest=st.text(alphabet="/?#&=%abc{}|^\\\"'`[]()$;:@!é.", max_size=30),
)
def test_an_accepted_url_is_openable_and_keeps_its_host(host: str, scheme: str, rest: str) -> None:
    printed = f"{scheme}://{host}/{rest}"
    parsed = parse_url(printed)
    if parsed is None:
        return
    assert is_safe_browser_url(parsed.url), parsed
    assert parsed.url.startswith(f"{scheme}://{host}/")
    assert all(c.isascii() and c not in '{}|^\\"`' for c in parsed.url)


def test_osc8_hyperlink_target_is_not_a_url() -> None:
    text = "Open this link: \x1b]8;;https://evil.example/steal\x07click here\x1b]8;;\x07\r\n"
    events = feed_text(text)
    assert signals(events) == []
    assert lines_of(events) == ["Open this link: click here"]


def test_escape_injection_cannot_splice_a_url() -> None:
    text = "Open: https://good.example/\x1b]52;c;ZXZpbA==\x07path\x1b[0m\r\n"
    events = feed_text(text)
    assert signals(events) == [AuthorizeUrl("https://good.example/path", "good.example")]


def test_bidi_override_around_url_is_removed() -> None:
    text = "Open: \u202ehttps://example.com/lanif\u202c\r\n"
    assert signals(feed_text(text)) == [AuthorizeUrl("https://example.com/lanif", "example.com")]


# ----------------------------------------------------------------------------- callbacks


def cb(port: int, path: str | None = "/callback", host: str = "127.0.0.1") -> Callback:
    return Callback(host, port, path, "announcement")


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("Waiting for callback on http://127.0.0.1:56121/callback", cb(56121)),
        ("Redirect URI: http://127.0.0.1:43827/spotify/callback", cb(43827, "/spotify/callback")),
        (
            "Hermes is waiting for the OAuth callback on http://127.0.0.1:43827/spotify/callback",
            cb(43827, "/spotify/callback"),
        ),
        (
            "Waiting for the OpenAI callback on http://localhost:1455/auth/callback "
            "(timeout 300s, Ctrl+C to cancel)...",
            cb(1455, "/auth/callback", "localhost"),
        ),
        (
            "Waiting for callback on http://[::1]:8765/cb (timeout 180s, Ctrl+C to cancel)...",
            cb(8765, "/cb", "::1"),
        ),
        ("Listening on http://127.0.0.1:9000", cb(9000, "/")),
        ("Local login page: http://127.0.0.1:8085/oauth2callback", cb(8085, "/oauth2callback")),
    ],
)
def test_callback_announcements(line: str, event: Callback) -> None:
    assert signals(feed_text(line + "\r\n")) == [event]


@pytest.mark.parametrize(
    "line",
    [
        "Connecting to MCP server http://localhost:3000/mcp",
        "MCP server listening on http://localhost:3000/mcp",
        "Starting local login server on http://localhost:1455.",
        "See http://127.0.0.1:8080/status for details",
        "Waiting for callback on http://evil.com:8080/callback",
        "Waiting for callback on http://127.0.0.1:22/callback",
        "Waiting for callback on http://127.0.0.1:0/callback",
        "Waiting for callback on http://127.0.0.1:70000/callback",
        "Waiting for callback on http://127.0.0.1/callback",
        "Waiting for callback on https://127.0.0.1:8443/callback",
        "Received callback http://127.0.0.1:5000/callback?code=abc&state=s",
        "Redirect URI: http://0.0.0.0:5000/callback",
        "Redirect URI: 127.0.0.1:5000/callback",
    ],
)
def test_not_a_callback(line: str) -> None:
    assert [e for e in signals(feed_text(line + "\r\n")) if isinstance(e, Callback)] == []


def test_redirects_to_hint_on_previous_line() -> None:
    text = "the provider redirects to\r\n\r\n    http://127.0.0.1:5001/cb\r\n"
    assert signals(feed_text(text)) == [cb(5001, "/cb")]


def test_newest_announcement_wins_and_repeats_are_silent() -> None:
    text = (
        "Waiting for callback on http://127.0.0.1:56121/callback\r\n"
        "Waiting for callback on http://127.0.0.1:56121/callback\r\n"
        "Waiting for callback on http://127.0.0.1:40000/callback\r\n"
        "Waiting for callback on http://127.0.0.1:56121/callback\r\n"
    )
    assert signals(feed_text(text)) == [cb(56121), cb(40000), cb(56121)]


def test_ssh_forward_hint_used_only_without_an_earlier_announcement() -> None:
    hint = "  ssh -N -L 43827:127.0.0.1:43827 alice@devbox\r\n"
    assert signals(feed_text(hint)) == [cb(43827, None)]
    announced = "Waiting for callback on http://127.0.0.1:43827/callback\r\n" + hint
    assert signals(feed_text(announced)) == [cb(43827)]


@pytest.mark.parametrize(
    "line",
    [
        "  ssh -N -L 22:127.0.0.1:22 alice@devbox",
        "  ssh -N -L 8080:10.0.0.5:8080 alice@devbox",
        "  autossh-ish -L 8080:127.0.0.1:99999 x",
        "  run -L 5000:127.0.0.1:5000",
    ],
)
def test_ssh_forward_hint_negatives(line: str) -> None:
    assert signals(feed_text(line + "\r\n")) == []


def test_redirect_uri_that_is_not_loopback_gives_no_callback() -> None:
    url = "https://idp.example/a?client_id=c&redirect_uri=http%3A%2F%2Fevil.com%3A8080%2Fcb"
    assert signals(feed_text(url + "\r\n")) == [
        AuthorizeUrl(url, "idp.example", "http://evil.com:8080/cb")
    ]


@pytest.mark.parametrize("port", ["22", "0", "70000", "1023"])
def test_redirect_uri_with_bad_port_gives_no_callback(port: str) -> None:
    url = f"https://idp.example/a?client_id=c&redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcb"
    assert [e for e in signals(feed_text(url + "\r\n")) if isinstance(e, Callback)] == []


def test_rclone_got_code_is_not_success() -> None:
    assert signals(feed_text("2026/07/14 10:12:19 NOTICE: Got code\r\n")) == []


# ----------------------------------------------------------------------------- device codes


def test_device_url_then_code_on_following_lines() -> None:
    text = (
        "Open this URL:\r\n  https://x.example/device\r\n\r\n"
        "Enter this code:\r\n\r\n  AB12-CD34\r\n"
    )
    assert signals(feed_text(text)) == [DeviceCode("https://x.example/device", "AB12-CD34")]


def test_held_url_without_code_becomes_authorize_on_next_line() -> None:
    text = "Visit https://x.example/activate\r\nWaiting...\r\n"
    assert signals(feed_text(text)) == [AuthorizeUrl("https://x.example/activate", "x.example")]


def test_held_url_is_settled_at_idle() -> None:
    watcher = Watcher()
    assert signals(watcher.feed(b"Visit https://x.example/activate\r\n")) == []
    assert watcher.idle() == [AuthorizeUrl("https://x.example/activate", "x.example")]


def test_idle_in_the_middle_of_a_line_does_not_settle_a_held_url() -> None:
    watcher = Watcher()
    watcher.feed(b"Open: https://x.example/device\r\n  2. Enter th")
    assert watcher.idle() == []
    assert signals(watcher.feed(b"is code: QQQQ-RRRR\r\n")) == [
        DeviceCode("https://x.example/device", "QQQQ-RRRR")
    ]


def test_idle_keeps_waiting_for_an_announced_code_and_close_gives_up() -> None:
    watcher = Watcher()
    watcher.feed(b"Open: https://x.example/device\r\nEnter this code:\r\n")
    assert signals(watcher.idle()) == []
    assert signals(watcher.feed(b"QQQQ-RRRR\r\n")) == [
        DeviceCode("https://x.example/device", "QQQQ-RRRR")
    ]
    watcher = Watcher()
    watcher.feed(b"Open: https://x.example/device\r\nEnter this code:\r\n")
    assert signals(watcher.close()) == [DeviceCode("https://x.example/device", None)]


def test_code_label_then_non_code_line_gives_device_without_code() -> None:
    text = "Open: https://x.example/device\r\nEnter this code:\r\nsomething else happened\r\n"
    assert signals(feed_text(text)) == [DeviceCode("https://x.example/device", None)]


def test_user_code_param_gives_device_immediately() -> None:
    watcher = Watcher()
    events = watcher.feed(b"Go to https://x.example/device?user_code=WDJB-MJHT\r\n")
    assert signals(events) == [
        DeviceCode("https://x.example/device?user_code=WDJB-MJHT", "WDJB-MJHT")
    ]


def test_device_flow_after_loopback_flow_keeps_order() -> None:
    text = load("codex_loopback_then_device").decode()
    kinds = [type(e).__name__ for e in signals(feed_text(text))]
    assert kinds == ["Callback", "AuthorizeUrl", "DeviceCode", "Status"]


# ----------------------------------------------------------------------------- status lines


@pytest.mark.parametrize(
    ("line", "outcome"),
    [
        ("Spotify login successful!", Outcome.SUCCEEDED),
        ("Login successful!", Outcome.SUCCEEDED),
        ("  ✓ Authenticated — 4 tool(s) available", Outcome.SUCCEEDED),
        ("  ✓ Authenticated (server reported no tools)", Outcome.SUCCEEDED),
        ('Added xai-oauth OAuth credential #3: "work"', Outcome.SUCCEEDED),
        ('Added some-other.provider OAuth credential #1: "x"', Outcome.SUCCEEDED),
        ("✓ MiniMax OAuth login successful.", Outcome.SUCCEEDED),
        ("Successfully logged in.", Outcome.SUCCEEDED),
        ("Spotify authorization failed: state mismatch.", Outcome.FAILED),
        ("  ✗ Authentication failed: boom", Outcome.FAILED),
        (
            "  ✗ Authentication failed: OAuth callback timed out — no authorization code received.",
            Outcome.TIMED_OUT,
        ),
        (
            "  ✗ Authentication failed: OAuth callback port 27890 is already in use (pid 1)",
            Outcome.FAILED,
        ),
        ("OAuth callback port 27890 is already in use", Outcome.FAILED),
        ("Login failed: invalid_grant", Outcome.FAILED),
        ("Login failed: request timed out", Outcome.TIMED_OUT),
        ("Could not bind callback server on 127.0.0.1:43827: [Errno 98] in use", Outcome.FAILED),
        ("Could not bind Spotify callback server on 127.0.0.1:43827: x", Outcome.FAILED),
        ("Unknown provider 'spotify'.", Outcome.FAILED),
        ("hermes_cli.auth.AuthError: refresh token revoked", Outcome.FAILED),
        ("hermes_cli.auth.AuthError: Spotify authorization timed out waiting", Outcome.TIMED_OUT),
        ("Login cancelled.", Outcome.FAILED),
        ("Authorization timed out waiting for the local callback.", Outcome.TIMED_OUT),
        ("xAI authorization timed out waiting for the local callback.", Outcome.TIMED_OUT),
        ("Timed out waiting for xAI device authorization.", Outcome.TIMED_OUT),
        ("Login timed out after 15 minutes.", Outcome.TIMED_OUT),
        ("hermes: command not found", Outcome.NOT_FOUND),
        ("sh: 1: hermes: not found", Outcome.NOT_FOUND),
        ("bash: line 1: hermes: command not found", Outcome.NOT_FOUND),
        ("zsh: command not found: hermes", Outcome.NOT_FOUND),
        ("tunnelauth: remote command not found: hermes", Outcome.NOT_FOUND),
    ],
)
def test_status_lines(line: str, outcome: Outcome) -> None:
    assert signals(feed_text(line + "\r\n")) == [Status(outcome, line.strip())]


@pytest.mark.parametrize(
    "line",
    [
        "Make sure this redirect URI is allow-listed in your Spotify app settings.",
        "Remote session detected — SSH tunnel required",
        "Then open the authorize URL above in your local browser.",
        "  Got authorization code from paste — completing flow.",
        "The last login successful was yesterday, now failing",
        "Error: not found",
        "Was the login successful? Check below",
        "Not logged in; Login failed earlier is no longer relevant",
        "  Auth state: /home/alice/.hermes/auth.json",
        "spotify: logged in",
        "Waiting for approval (polling every 5s)...",
        "NOTICE: Got code",
    ],
)
def test_not_status_lines(line: str) -> None:
    assert status_of(line.strip()) is None


def test_chained_traceback_reports_only_the_final_exception() -> None:
    text = (
        "Traceback (most recent call last):\r\n"
        '  File "x.py", line 1, in <module>\r\n'
        "KeyError: 'token'\r\n"
        "\r\n"
        "During handling of the above exception, another exception occurred:\r\n"
        "\r\n"
        "Traceback (most recent call last):\r\n"
        '  File "x.py", line 3, in <module>\r\n'
        '    raise AuthError("Login successful! is not what happened")\r\n'
        "hermes_cli.auth.AuthError: could not refresh\r\n"
    )
    assert signals(feed_text(text)) == [failed("hermes_cli.auth.AuthError: could not refresh")]


def test_traceback_status_settles_on_next_line_or_idle() -> None:
    watcher = Watcher()
    events = watcher.feed(b"Traceback (most recent call last):\r\n  x\r\nTimeoutError: slow\r\n")
    assert signals(events) == []
    assert watcher.idle() == [timed_out("TimeoutError: slow")]


def test_status_line_discards_a_held_url() -> None:
    text = "Visit https://x.example/activate\r\nLogin failed: nope\r\n"
    assert signals(feed_text(text)) == [failed("Login failed: nope")]


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("partial", "kind"),
    [
        ("Callback URL: ", PromptKind.PASTE),
        ("Authorization code: ", PromptKind.CODE),
        ("Paste code here: ", PromptKind.CODE),
        ("Spotify Client ID: ", PromptKind.TEXT),
        ("Password: ", PromptKind.SECRET),
        ("[sudo] password for alice: ", PromptKind.SECRET),
        ("alice@devbox's password: ", PromptKind.SECRET),
        ("Enter passphrase for key '/home/a/.ssh/id_ed25519': ", PromptKind.SECRET),
        ("Overwrite existing credential? [Y/n] ", PromptKind.YESNO),
        ("Continue? [y/N]: ", PromptKind.YESNO),
        ("Proceed (y/n)? ", PromptKind.YESNO),
        ("Are you sure you want to continue connecting (yes/no/[fingerprint])? ", PromptKind.YESNO),
    ],
)
def test_known_prompts_are_reported_during_feed_once(partial: str, kind: PromptKind) -> None:
    watcher = Watcher()
    events = watcher.feed(partial.encode())
    assert len(events) == 1 and isinstance(events[0], Prompt)
    assert events[0].kind is kind
    assert events[0].text and partial.strip().startswith(events[0].text)
    assert watcher.idle() == []
    assert watcher.close() == []


def test_known_prompt_text() -> None:
    watcher = Watcher()
    assert watcher.feed(b"Authorization code: ") == [Prompt("Authorization code:", PromptKind.CODE)]


@pytest.mark.parametrize(
    ("partial", "kind"),
    [
        ("Label for this credential: ", PromptKind.TEXT),
        ("Enter code: ", PromptKind.CODE),
        ("Which profile? ", PromptKind.TEXT),
        ("> ", None),
        ("name> ", PromptKind.TEXT),
        ("Enter the API key: ", PromptKind.SECRET),
        ("Paste the full redirect URL from your browser: ", PromptKind.PASTE),
        ("Type the code shown on the page: ", PromptKind.CODE),
        ("Waiting for approval...", None),
        ("Downloading 45%", None),
    ],
)
def test_idle_prompts(partial: str, kind: PromptKind | None) -> None:
    watcher = Watcher()
    assert watcher.feed(partial.encode()) == []
    expected = [] if kind is None else [Prompt(partial.strip(), kind)]
    assert watcher.idle() == expected
    assert watcher.idle() == []  # once per prompt


def test_text_after_a_prompt_is_a_new_partial_line() -> None:
    watcher = Watcher()
    assert watcher.feed(b"Name: ") == []
    assert watcher.idle() == [Prompt("Name:", PromptKind.TEXT)]
    assert watcher.feed(b"alice\r\nLabel: ") == [RemoteLine("alice")]
    assert watcher.idle() == [Prompt("Label:", PromptKind.TEXT)]


def test_secret_echo_after_a_waiting_prompt_is_hidden() -> None:
    watcher = Watcher()
    assert watcher.feed(b"Callback URL: ") == [Prompt("Callback URL:", PromptKind.PASTE)]
    assert watcher.idle() == []
    assert watcher.feed(b"http://127.0.0.1:9999/callback?code=abc&state=s\r\n") == []
    assert watcher.feed(b"Login successful!\r\n") == [
        RemoteLine("Login successful!"),
        succeeded("Login successful!"),
    ]


def test_input_sent_marks_the_echo() -> None:
    watcher = Watcher()
    watcher.feed(b"Authorization code: ")
    watcher.input_sent()
    assert watcher.feed(b"c0de#st4te\r\n") == []


def test_remote_text_after_a_prompt_that_did_not_wait_is_shown() -> None:
    events = feed_text("Callback URL: http://127.0.0.1:9999/callback\r\n")
    assert events == [
        Prompt("Callback URL:", PromptKind.PASTE),
        RemoteLine("http://127.0.0.1:9999/callback"),
        cb(9999),
    ]
    events = feed_text("Callback URL: Login successful!\r\n")
    assert signals(events)[-1] == succeeded("Login successful!")


def test_enter_code_with_the_code_is_not_a_prompt() -> None:
    text = "Visit https://x.example/activate\r\nEnter code: WXYZ-1234\r\n"
    assert signals(feed_text(text)) == [DeviceCode("https://x.example/activate", "WXYZ-1234")]


def test_yes_no_prompt_leaves_no_colon_behind() -> None:
    watcher = Watcher()
    assert watcher.feed(b"Continue? [Y/n]: ") == [Prompt("Continue? [Y/n]", PromptKind.YESNO)]
    assert watcher.idle() == []
    assert watcher.feed(b"y\r\n") == [RemoteLine("y")]


def test_known_prompt_and_kind_helpers() -> None:
    assert known_prompt("  Callback URL: ") is PromptKind.PASTE
    assert known_prompt("Client ID: abc") is None
    assert known_prompt("Redirect URI:") is None
    assert prompt_kind("Enter your password:") is PromptKind.SECRET
    assert prompt_kind("Overwrite? [y/N]") is PromptKind.YESNO


def test_codex_enter_this_code_line_is_not_a_prompt() -> None:
    watcher = Watcher()
    assert signals(watcher.feed(b"  2. Enter this code:\r\n")) == []


# ----------------------------------------------------------------------------- properties

FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x1b[94m",
    b"\x1b[0m",
    b"\x1b]8;;https://evil.example/\x07",
    b"\x1b]52;c;ZXZpbA==\x07",
    b"\x1bP1$r\x1b\\",
    b"\x1b]0;title",
    b"\x9b31m",
    b"\xe2\x80\xae",
    b"\xe2\x9c\x93",
    b"\xff",
    b"Open this URL: ",
    b"Waiting for callback on ",
    b"Redirect URI: ",
    b"http://127.0.0.1:",
    b"http://localhost:",
    b"http://[::1]:",
    b"http://evil.com:",
    b"https://",
    b"javascript:",
    b"file:///",
    b"user:pw@",
    b"example.com",
    b"/callback",
    b"?response_type=code&client_id=x&redirect_uri=http%3A%2F%2F127.0.0.1%3A",
    b"%2Fcallback",
    b"?user_code=ABCD-EFGH",
    b"22",
    b"0",
    b"70000",
    b"43827",
    b"1455",
    b"Enter this code:",
    b"ABCD-EFGH",
    b"  ssh -N -L 43827:127.0.0.1:43827 a@b",
    b"Password: ",
    b"[Y/n] ",
    b"Login successful!",
    b"Traceback (most recent call last):",
    b"  File x",
    b"AuthError: timed out",
    b" ",
    b"\t",
    b"\x00",
    b"\x7f",
]

byte_streams = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=16)), max_size=40
).map(b"".join)

_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def _clean(text: str) -> bool:
    """No control, format or line-separator characters."""
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def _openable(url: str) -> bool:
    """An independent restatement of what may reach a browser."""
    if not _clean(url) or any(c.isspace() for c in url) or not url.isascii():
        return False
    m = re.fullmatch(r"(https?)://([^/?#]*)(.*)", url, re.I)
    if m is None or "@" in m[2]:
        return False
    if m[1].lower() == "https":
        return True
    hm = re.fullmatch(r"(127\.0\.0\.1|localhost|\[::1\]):(\d+)", m[2], re.I)
    return hm is not None and 1024 <= int(hm[2]) <= 65535


def check_invariants(events: Sequence[Event]) -> None:
    for event in events:
        for value in vars(event).values():
            if isinstance(value, str):
                assert _clean(value), event
                assert "\x1b" not in value
        if isinstance(event, Callback):
            assert event.host in _LOOPBACK_NAMES
            assert 1024 <= event.port <= 65535
            assert event.path is None or event.path.startswith("/") or event.path == ""
            assert event.source in ("redirect_uri", "announcement")
        elif isinstance(event, (AuthorizeUrl, DeviceCode)):
            assert _openable(event.url), event
        elif isinstance(event, RemoteLine):
            assert len(event.text) <= MAX_LINE + 1


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=byte_streams, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_bytes_any_chunking(data: bytes, cuts: list[int]) -> None:
    whole = run([data], idle_at_end=False)
    check_invariants(whole)
    assert run(chunked(data, cuts), idle_at_end=False) == whole


@settings(max_examples=200, deadline=None)
@given(data=byte_streams, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_idle_anywhere_never_breaks_invariants(data: bytes, cuts: list[int]) -> None:
    watcher = Watcher()
    events: list[Event] = []
    for chunk in chunked(data, cuts):
        events += watcher.feed(chunk)
        events += watcher.idle()
        assert watcher.buffered() <= MAX_LINE + MAX_LINE + 8
    events += watcher.close()
    check_invariants(events)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    check_invariants(run([data]))


def test_adversarial_lines_keep_invariants() -> None:
    lines = [
        "Waiting for callback on http://127.0.0.1:22/callback",
        "Waiting for callback on http://127.0.0.1:0/callback",
        "Waiting for callback on http://127.0.0.1:70000/callback",
        "Waiting for callback on http://evil.com:8080/callback",
        "Open this URL: \x1b]8;;https://evil/\x07https://good.example/x\x1b]8;;\x07",
        "\x1b]52;c;aHR0cHM6Ly9ldmls\x07Open: https://ok.example/device",
        "Open: https://example.com/$(rm -rf ~);'\"x",
        "Open: javascript:alert(1)",
        "Open: file:///etc/shadow",
    ]
    events = feed_text("\r\n".join(lines) + "\r\n")
    check_invariants(events)
    assert not [e for e in events if isinstance(e, Callback)]
    urls = [e.url for e in events if isinstance(e, (AuthorizeUrl, DeviceCode))]
    assert urls == [
        "https://good.example/x",
        "https://ok.example/device",
        "https://example.com/$(rm",
    ]


# ----------------------------------------------------------------------------- $BROWSER helper

HELPER_AUTH = (
    "https://idp.test/authorize?response_type=code&client_id=cli"
    "&redirect_uri=http%3A%2F%2F127.0.0.1%3A8976%2Fcallback&state=s1"
)


def helper_line(url: str) -> str:
    """What tunnelauth's $BROWSER helper writes to the terminal for ``url``."""
    return f"\r\ntunnelauth-browser: {url}\r\n"


def test_browser_helper_line_is_an_authorize_url_and_is_not_shown() -> None:
    events = feed_text("Starting login\r\n" + helper_line(HELPER_AUTH) + "waiting\r\n")
    assert signals(events) == [
        BrowserRequest(HELPER_AUTH),
        Callback("127.0.0.1", 8976, "/callback", "redirect_uri"),
        AuthorizeUrl(HELPER_AUTH, "idp.test", "http://127.0.0.1:8976/callback"),
    ]
    assert not any("tunnelauth-browser" in line for line in lines_of(events))
    assert "Starting login" in lines_of(events) and "waiting" in lines_of(events)


def test_browser_helper_line_is_read_whatever_the_chunking() -> None:
    data = ("Starting login\r\n" + helper_line(HELPER_AUTH)).encode()
    whole = signals(run([data]))
    for cut in range(1, len(data)):
        assert signals(run([data[:cut], data[cut:]])) == whole


def test_browser_helper_plain_https_url_is_opened_like_an_open_instruction() -> None:
    # No OAuth parameter: held like "Open this URL:" for a device code, else a page to open.
    events = feed_text(helper_line("https://login.test/device") + "Enter the code: ABCD-EFGH\r\n")
    assert actions(events) == [DeviceCode("https://login.test/device", "ABCD-EFGH")]
    events = run([helper_line("https://login.test/start").encode()])
    assert actions(events) == [AuthorizeUrl("https://login.test/start", "login.test", None)]


def test_browser_helper_loopback_url_is_the_clis_own_start_page() -> None:
    url = "http://127.0.0.1:53682/auth?state=xyz"
    events = feed_text(helper_line(url))
    assert actions(events) == [
        Callback("127.0.0.1", 53682, None, "announcement"),
        AuthorizeUrl(url, "127.0.0.1", None),
    ]


def test_browser_helper_url_follows_the_percent_encoding_rules() -> None:
    events = feed_text(helper_line(HELPER_AUTH + "&claims={}"))
    encoded = HELPER_AUTH + "&claims=%7B%7D"
    assert [e for e in actions(events) if isinstance(e, AuthorizeUrl)] == [
        AuthorizeUrl(encoded, "idp.test", "http://127.0.0.1:8976/callback")
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("javascript:alert(1)", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("", "not an http(s) URL"),
        ("https://idp.test@evil.test/authorize?client_id=x", "user name"),
        ("http://evil.test:8080/authorize?client_id=x", "plain http"),
        ("http://127.0.0.1:22/", "plain http"),
        ("https://idp.test/a https://evil.test/b", "characters a URL cannot carry"),
        ("https://idp.test/caf\u00e9", "characters a URL cannot carry"),
        ("https://idp.test/a%zz", "starts no escape"),
        ("https://idp.test/" + "a" * 9000, "longer than"),
        (
            "https://idp.test/authorize?redirect_uri=http://127.0.0.1:1/&redirect_uri=x",
            "repeated",
        ),
    ],
)
def test_hostile_browser_helper_lines_are_rejected_with_the_reason(raw: str, reason: str) -> None:
    events = feed_text(helper_line(raw))
    assert [type(e) for e in signals(events)] == [BrowserRequest, RejectedUrl]
    (bad,) = rejected(events)
    assert reason in bad.reason
    assert len(bad.url) <= 201
    assert not any(isinstance(e, AuthorizeUrl | Callback | DeviceCode) for e in events)


def test_forged_helper_line_earns_nothing_an_open_line_would_not() -> None:
    # The remote can print the marker itself: each URL gives the events the same URL gives
    # on an "Open this URL:" line, no more.
    for url in (HELPER_AUTH, "https://login.test/x", "http://localhost:8976/callback?state=1"):
        marked = actions(feed_text(helper_line(url)))
        printed = actions(feed_text(f"Open this URL: {url}\r\n"))
        assert marked == printed, url


def test_marker_inside_a_line_or_with_escapes_is_no_helper_line() -> None:
    events = feed_text(f"note: tunnelauth-browser: {HELPER_AUTH}\r\n")
    assert not any(isinstance(e, BrowserRequest) for e in events)
    assert any(isinstance(e, RemoteLine) and "tunnelauth-browser" in e.text for e in events)
    # Colour codes are stripped first: the line is judged on its plain text, URL included.
    events = feed_text(f"\x1b[31mtunnelauth-browser:\x1b[0m {HELPER_AUTH}\x1b]8;;x\x07\r\n")
    assert [type(e) for e in signals(events)] == [BrowserRequest, Callback, AuthorizeUrl]


def test_helper_line_settles_a_held_url_and_ends_a_traceback_status() -> None:
    events = feed_text("Open this URL:\r\nhttps://a.test/x\r\n" + helper_line("https://b.test/y"))
    opened = [e.url for e in actions(events) if isinstance(e, AuthorizeUrl)]
    assert opened == ["https://a.test/x", "https://b.test/y"]
    tb = 'Traceback (most recent call last):\r\n  File "x", line 1\r\nValueError: bad\r\n'
    events = feed_text(tb + helper_line(HELPER_AUTH))
    assert signals(events)[0] == failed("ValueError: bad")
