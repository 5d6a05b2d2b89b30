"""hermes's manual-tunnel hint blocks are hidden; everything else is shown."""

from __future__ import annotations

from pathlib import Path

from tunnelauth.hints import MAX_HIDDEN, HintFilter
from tunnelauth.watch import Watcher

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def _shown(lines: list[str]) -> list[str]:
    hints = HintFilter()
    return [line for line in lines if hints.shows(line)]


def _lines_of(name: str) -> list[str]:
    from tunnelauth.events import RemoteLine

    events = Watcher().feed((TRANSCRIPTS / name).read_bytes())
    return [e.text for e in events if isinstance(e, RemoteLine)]


def test_spotify_hint_block_is_hidden_but_the_url_and_result_stay() -> None:
    lines = [
        "Open this URL to authorize Hermes:",
        "https://accounts.spotify.com/authorize?x=1",
        "------------------------------------------------------------",
        "Remote session detected — SSH tunnel required",
        "------------------------------------------------------------",
        "Hermes is waiting for the OAuth callback on http://127.0.0.1:43827/spotify/callback",
        "  ssh -N -L 43827:127.0.0.1:43827 me@box",
        "",
        "Then open the authorize URL above in your local browser.",
        "------------------------------------------------------------",
        "Spotify login successful!",
    ]
    shown = _shown(lines)
    assert "https://accounts.spotify.com/authorize?x=1" in shown
    assert "Spotify login successful!" in shown
    assert not any("ssh -N -L" in line or "Remote session detected" in line for line in shown)


def test_mcp_hint_block_ends_at_the_headless_note() -> None:
    lines = [
        "  Remote session detected. After you authorize, the provider redirects to",
        "    http://127.0.0.1:5555/callback",
        "         ssh -N -L 5555:127.0.0.1:5555 me@box",
        "  (Headless environment detected — open the URL manually.)",
        "  ✓ Authenticated — 3 tool(s) available",
    ]
    assert _shown(lines) == ["  ✓ Authenticated — 3 tool(s) available"]


def test_a_block_never_hides_more_than_its_bound() -> None:
    lines = ["Remote session detected", *[f"line {i}" for i in range(40)]]
    shown = _shown(lines)
    assert shown == [f"line {i}" for i in range(MAX_HIDDEN, 40)]


def test_output_without_hints_is_untouched() -> None:
    lines = ["Starting Spotify PKCE login...", "-" * 60, "Login successful!"]
    assert _shown(lines) == lines


def test_golden_transcripts_keep_their_results_and_lose_only_the_hint() -> None:
    for name, result in (
        ("spotify_success_0190.pty", "Spotify login successful!"),
        ("mcp_success.pty", "Authenticated"),
    ):
        lines = _lines_of(name)
        assert any("ssh -N -L" in line for line in lines), name
        shown = _shown(lines)
        assert not any("ssh -N -L" in line for line in shown), name
        assert any(result in line for line in shown), name
        assert any("Redirect URI" in line or "Starting OAuth" in line for line in shown), name
