"""Tests for terminal-control stripping and secret redaction."""

from __future__ import annotations

import itertools
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnelauth.sanitize import DEFAULT_MAX_SEQUENCE, Stripper, redact, strip

# ----------------------------------------------------------------------------- strip


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "\x1b[94mhttps://auth.openai.com/codex/device\x1b[0m",
            "https://auth.openai.com/codex/device",
        ),
        ("\x1b[1;31;48;5;200mred\x1b[m", "red"),
        ("a\x1b[2Kb\x1b[?25lc\x1b[?2004hd", "abcd"),
        ("\x1b[>4;2m\x1b[ qx", "x"),  # private parameters and an intermediate byte
        ("\x9b31mc1\x9b0m", "c1"),  # 8-bit CSI
        ("\x1b]0;evil title\x07after", "after"),
        ("\x1b]2;title\x1b\\after", "after"),
        ("\x1b]52;c;ZXZpbCBjbGlwYm9hcmQ=\x07x", "x"),  # clipboard write
        ("\x1b]8;;https://evil.example/\x07text\x1b]8;;\x07", "text"),  # hyperlink
        ("\x9d8;;https://evil/\x9ctext", "text"),  # 8-bit OSC and ST
        ("\x1bP1$r0m\x1b\\x", "x"),  # DCS
        ("\x1bXsos\x1b\\\x1b^pm\x1b\\\x1b_apc\x1b\\x", "x"),
        ("\x90dcs\x9cx", "x"),
        ("\x1b7saved\x1b8", "saved"),
        ("\x1b(Bascii\x1b)0", "ascii"),
        ("\x1b=\x1b>x", "x"),
        ("bell\x07 back\x08space del\x7f nul\x00", "bell backspace del nul"),
        ("c1\x85\x8d\x9a", "c1"),
        ("tab\there", "tab here"),
        ("\u202eevil\u202c \u2066iso\u2069", "evil iso"),
        ("zero\u200bwidth\u200d\ufeffjoin\u00ad", "zerowidthjoin"),
        ("tag\U000e0041\U000e0042s", "tags"),
        ("fill\u3164er", "filler"),
        ("line\u2028sep", "line sep"),
        ("lone\ud800surrogate", "lonesurrogate"),
        ("✓ Authenticated — ünïcode", "✓ Authenticated — ünïcode"),
    ],
)
def test_strip(raw: str, clean: str) -> None:
    assert strip(raw) == clean


def test_strip_newlines() -> None:
    assert strip("a\r\nb\nc") == "a b c"
    assert strip("a\r\nb\nc", keep_newlines=True) == "a\r\nb\nc"


def test_broken_sequence_never_swallows_a_newline_or_text() -> None:
    assert strip("\x1b[12\nnext", keep_newlines=True) == "\nnext"
    assert strip("\x1b\nnext", keep_newlines=True) == "\nnext"
    assert strip("\x1b[1é", keep_newlines=True) == "é"


def test_cancel_aborts_a_sequence() -> None:
    assert strip("\x1b]0;title\x18visible") == "visible"
    assert strip("\x1b[12\x1avisible") == "visible"


def test_esc_inside_a_string_starts_a_new_sequence() -> None:
    assert strip("\x1b]0;title\x1b[31mred") == "red"


def test_unterminated_sequence_is_dropped_at_end() -> None:
    assert strip("visible\x1b]0;never ends") == "visible"
    assert strip("visible\x1b[") == "visible"
    assert strip("visible\x1b") == "visible"


def test_every_format_character_is_removed() -> None:
    format_chars = "".join(
        chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"
    )
    assert strip(format_chars) == ""


def test_every_control_character_is_removed() -> None:
    introducers = "\x1b\x90\x98\x9b\x9d\x9e\x9f"  # these start a sequence that eats "b"
    for code in [*range(0x20), *range(0x7F, 0xA0)]:
        c = chr(code)
        if c in "\t\n":
            continue
        assert strip(f"a{c}b") == ("a" if c in introducers else "ab"), repr(c)


# ----------------------------------------------------------------------------- Stripper


SAMPLE = (
    "\x1b[94mhttps://x.example/device\x1b[0m\r\n"
    "\x1b]8;;https://evil/\x07link\x1b]8;;\x1b\\ and \x9b1mbold\x9b0m\r\n"
    "\x1bP+q\x1b\\ \x1b(0\u202eend\r\n"
)


def test_stripper_any_split_equals_whole() -> None:
    whole = strip(SAMPLE, keep_newlines=True)
    for cut in range(len(SAMPLE) + 1):
        s = Stripper(keep_newlines=True)
        assert s.feed(SAMPLE[:cut]) + s.feed(SAMPLE[cut:]) == whole, cut
    s = Stripper(keep_newlines=True)
    assert "".join(s.feed(c) for c in SAMPLE) == whole


def test_stripper_reports_open_sequence() -> None:
    s = Stripper()
    s.feed("a\x1b]0;ti")
    assert s.in_sequence
    s.feed("tle\x07")
    assert not s.in_sequence
    s.feed("\x1b[")
    s.flush()
    assert not s.in_sequence


def test_unterminated_string_is_bounded() -> None:
    s = Stripper(max_sequence=10)
    out = s.feed("\x1b]52;c;" + "A" * 20)
    # the first 10 characters of the body ("52;c;AAAAA") were swallowed, the rest is text
    assert out == "A" * 15
    assert not s.in_sequence


def test_unterminated_string_is_bounded_across_chunks() -> None:
    s = Stripper(max_sequence=10)
    body = "\x1b]52;c;" + "A" * 20
    assert "".join(s.feed(c) for c in body) == "A" * 15


def test_long_csi_is_bounded() -> None:
    s = Stripper(max_sequence=8)
    assert s.feed("\x1b[" + "1" * 20 + "m") == "1" * 12 + "m"


def test_default_bound() -> None:
    s = Stripper()
    assert s.feed("\x1b]0;" + "x" * (DEFAULT_MAX_SEQUENCE - 2) + "\x07") == ""
    body = "0;" + "y" * (DEFAULT_MAX_SEQUENCE + 5)
    assert s.feed("\x1b]" + body) == body[DEFAULT_MAX_SEQUENCE:]


def test_bad_bound() -> None:
    with pytest.raises(ValueError):
        Stripper(max_sequence=0)


NASTY = st.sampled_from(
    ["\x1b", "[", "]", "P", "\\", "\x07", "\x9b", "\x9c", "\x9d", "\x18", ";", "m", "1", "\n", "\r"]
)
texts = st.lists(st.one_of(NASTY, st.text(max_size=8)), max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=10))
def test_stripper_chunking_property(text: str, cuts: list[int]) -> None:
    whole = Stripper(keep_newlines=True, max_sequence=16).feed(text)
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    s = Stripper(keep_newlines=True, max_sequence=16)
    assert "".join(s.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) == whole
    for ch in whole:
        assert ch in "\r\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
    # the default bound also enables the one-step path for short CSI sequences
    whole = Stripper(keep_newlines=True).feed(text)
    s = Stripper(keep_newlines=True)
    assert "".join(s.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) == whole


@settings(max_examples=200, deadline=None)
@given(texts)
def test_strip_output_is_clean_and_idempotent(text: str) -> None:
    once = strip(text)
    assert all(unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in once)
    assert strip(once) == once


# ----------------------------------------------------------------------------- redact


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        ("http://127.0.0.1:5/cb?code=abc&state=s", "http://127.0.0.1:5/cb?code=…&state=s"),
        (
            "https://x/cb#access_token=t0k&token_type=bearer",
            "https://x/cb#access_token=…&token_type=bearer",
        ),
        (
            "?refresh_token=r&id_token=i&code_verifier=v",
            "?refresh_token=…&id_token=…&code_verifier=…",
        ),
        ("client_secret=s3cr3t password=hunter2", "client_secret=… password=…"),
        ("https://x/?token=abc;x=1", "https://x/?token=…;x=1"),
        ("https://x/?CODE=abc", "https://x/?CODE=…"),
        ("paste it: http://h/cb?state=s&code=abc", "paste it: http://h/cb?state=s&code=…"),
    ],
)
def test_redact(raw: str, redacted: str) -> None:
    assert redact(raw) == redacted


@pytest.mark.parametrize(
    "kept",
    [
        "https://x/device?user_code=ABCD-EFGH",
        "https://x/a?code_challenge=abc&code_challenge_method=S256&state=st",
        "https://x/a?response_type=code&client_id=c&redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcb",
        "https://x/a?auth_code_hint=1&xcode=2&my.token=3",
        "?code=&state=s",
        "no secrets here",
    ],
)
def test_redact_keeps_everything_else(kept: str) -> None:
    assert redact(kept) == kept


ANTHROPIC_AUTHORIZE = (
    "https://claude.ai/oauth/authorize?code=true&client_id=9d1c250a&response_type=code"
    "&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback"
    "&code_challenge=Hc8Lr2Vq6Yt0&code_challenge_method=S256&state=anth-7c1f0e"
)


def test_code_true_on_an_authorize_url_is_not_a_secret() -> None:
    # The anthropic authorize URL must survive redaction whole: --json consumers open it.
    assert redact(ANTHROPIC_AUTHORIZE) == ANTHROPIC_AUTHORIZE
    assert (
        redact(f"Open this link: {ANTHROPIC_AUTHORIZE}.")
        == f"Open this link: {ANTHROPIC_AUTHORIZE}."
    )


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        # a callback or pasted redirect next to an authorize URL keeps its own code hidden
        (
            f"{ANTHROPIC_AUTHORIZE} then http://127.0.0.1:5/cb?code=SECRET&state=s",
            f"{ANTHROPIC_AUTHORIZE} then http://127.0.0.1:5/cb?code=…&state=s",
        ),
        (
            "Paste: https://console.anthropic.com/cb?code=SECRET#st",
            "Paste: https://console.anthropic.com/cb?code=…#st",
        ),
        # other secrets on an authorize URL are still hidden
        (
            "https://x/a?response_type=code&code=true&client_secret=s3",
            "https://x/a?response_type=code&code=true&client_secret=…",
        ),
    ],
)
def test_codes_off_the_authorize_url_stay_hidden(raw: str, redacted: str) -> None:
    assert redact(raw) == redacted


@given(st.text(max_size=200))
def test_redact_is_idempotent(text: str) -> None:
    assert redact(redact(text)) == redact(text)


_SECRET_VALUE = st.text(alphabet=st.characters(whitelist_categories=("L", "N")), min_size=6)


@given(
    value=_SECRET_VALUE,
    name=st.sampled_from(["code", "access_token", "refresh_token", "code_verifier", "id_token"]),
    before=st.sampled_from(["?", "&", " ", "#"]),
)
def test_redact_never_leaves_a_secret_value(value: str, name: str, before: str) -> None:
    text = f"http://127.0.0.1:5/cb{before}{name}={value}&state=st"
    assert value not in redact(text).replace("state=st", "")
