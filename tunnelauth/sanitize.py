"""Make untrusted remote text safe to show: strip terminal controls, hide OAuth secrets.

Pure functions and a small state machine; no I/O.  ``Stripper`` keeps no text between
calls (only which kind of escape sequence it is inside and how long that has run), so
feeding it a stream piecewise costs constant memory whatever the remote prints.
"""

from __future__ import annotations

import re
from enum import Enum

__all__ = ["DEFAULT_MAX_SEQUENCE", "TEXT_LIMIT", "Stripper", "redact", "strip", "untrusted"]

DEFAULT_MAX_SEQUENCE = 8192
"""How many characters an unterminated escape sequence may swallow before it is dropped."""

# Characters that render as nothing or reorder what follows: bidi embeddings, overrides and
# isolates, zero-width characters, the BOM, soft hyphen, interlinear annotations, tag
# characters (every Unicode "Cf" format character), the combining grapheme joiner and the
# Hangul fillers (blank glyphs used to fake empty names).
_INVISIBLE = (
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5"
    "\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
# Everything the ground state must look at: C0, DEL, C1, invisible characters, the Unicode
# line/paragraph separators and lone surrogates (they cannot be encoded for display).
_SPECIAL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff" + _INVISIBLE + "]")
# Characters that end (or cancel) an OSC/DCS/SOS/PM/APC string.
_STRING_END = re.compile("[\x07\x18\x1a\x1b\x9c]")
# Characters that may not continue a CSI sequence (parameters and intermediates are 0x20-0x3F).
_CSI_END = re.compile("[^\x20-\x3f]")
# A whole short CSI sequence (colours, cursor moves): skipped in one step, as the state
# machine would, because coloured output is full of them.
_CSI_FAST_LIMIT = 64
_CSI_WHOLE = re.compile("\x1b\\[[\x20-\x3f]{0," + str(_CSI_FAST_LIMIT) + "}[\x40-\x7e]")

_ESC = "\x1b"
_CANCEL = "\x18\x1a"  # CAN and SUB abort any sequence in progress
_STRING_INTRODUCERS = "]PX^_"  # OSC, DCS, SOS, PM, APC after ESC
_C1_STRINGS = "\x90\x98\x9d\x9e\x9f"  # the same as 8-bit C1 controls


class _State(Enum):
    """Where the parser is inside an escape sequence."""

    GROUND = 0
    ESC = 1  # after ESC
    ESC_INTER = 2  # ESC followed by intermediate bytes (e.g. charset selection ESC ( B)
    CSI = 3  # control sequence: ESC [ params final
    STRING = 4  # OSC/DCS/SOS/PM/APC body, up to BEL or ST
    STRING_ESC = 5  # ESC seen inside a string: ST if a backslash follows


class Stripper:
    """Incremental remover of terminal control sequences; feed text in any pieces."""

    def __init__(
        self, *, keep_newlines: bool = False, max_sequence: int = DEFAULT_MAX_SEQUENCE
    ) -> None:
        """Keep line ends if ``keep_newlines``; drop sequences longer than ``max_sequence``."""
        if max_sequence < 1:
            raise ValueError("max_sequence must be positive")
        self._keep_newlines = keep_newlines
        self._max = max_sequence
        self._state = _State.GROUND
        self._length = 0  # characters consumed by the current sequence

    @property
    def in_sequence(self) -> bool:
        """Whether an escape sequence is open (its end has not been seen yet)."""
        return self._state is not _State.GROUND

    def feed(self, text: str) -> str:
        """Return ``text`` without control sequences, continuing any sequence left open."""
        out: list[str] = []
        i = 0
        n = len(text)
        while i < n:
            state = self._state
            if state is _State.GROUND:
                i = self._ground(text, i, out)
            elif state is _State.STRING:
                i = self._string(text, i)
            elif state is _State.CSI:
                i = self._csi(text, i)
            else:
                i = self._escape(text, i)
        return "".join(out)

    def flush(self) -> str:
        """End of input: drop an unfinished sequence and start afresh."""
        self._enter(_State.GROUND)
        return ""

    def _enter(self, state: _State) -> None:
        """Switch state and restart the sequence length count."""
        self._state = state
        self._length = 0

    def _ground(self, text: str, i: int, out: list[str]) -> int:
        """Copy plain text up to the next special character and handle that character."""
        m = _SPECIAL.search(text, i)
        if m is None:
            out.append(text[i:])
            return len(text)
        out.append(text[i : m.start()])
        ch = m.group()
        if ch == _ESC:
            whole = _CSI_WHOLE.match(text, m.start()) if self._max > _CSI_FAST_LIMIT else None
            if whole is not None:
                return whole.end()
            self._enter(_State.ESC)
        elif ch == "\x9b":
            self._enter(_State.CSI)
        elif ch in _C1_STRINGS:
            self._enter(_State.STRING)
        elif ch in "\t\u2028\u2029":
            out.append(" ")
        elif ch in "\r\n":
            if self._keep_newlines:
                out.append(ch)
            elif ch == "\n":
                out.append(" ")
        # everything else (other C0/C1 controls, DEL, invisible characters) is dropped
        return m.end()

    def _string(self, text: str, i: int) -> int:
        """Skip the body of an OSC/DCS/SOS/PM/APC string, bounded by ``max_sequence``."""
        m = _STRING_END.search(text, i)
        end = len(text) if m is None else m.start()
        room = self._max - self._length
        if end - i > room:
            # Unterminated for too long: drop what was swallowed and show the rest as text,
            # so a missing terminator cannot hide the remainder of the output.
            self._enter(_State.GROUND)
            return i + room
        self._length += end - i
        if m is None:
            return end
        ch = m.group()
        if ch == _ESC:
            self._enter(_State.STRING_ESC)
        else:  # BEL, 8-bit ST, CAN or SUB: the string is over
            self._enter(_State.GROUND)
        return m.end()

    def _csi(self, text: str, i: int) -> int:
        """Skip CSI parameters and intermediates up to the final byte."""
        m = _CSI_END.search(text, i)
        end = len(text) if m is None else m.start()
        room = self._max - self._length
        if end - i > room:
            self._enter(_State.GROUND)
            return i + room
        self._length += end - i
        if m is None:
            return end
        ch = m.group()
        if "\x40" <= ch <= "\x7e" or ch in _CANCEL:
            self._enter(_State.GROUND)
            return m.end()
        if ch == _ESC:
            self._enter(_State.ESC)
            return m.end()
        # Malformed: abandon the sequence and let the ground state judge this character,
        # so a newline or visible text is never swallowed by a broken sequence.
        self._enter(_State.GROUND)
        return m.start()

    def _escape(self, text: str, i: int) -> int:
        """Handle one character after ESC (or inside ESC intermediates, or ESC in a string)."""
        ch = text[i]
        state = self._state
        if state is _State.STRING_ESC:
            if ch == "\\":
                self._enter(_State.GROUND)
                return i + 1
            # Anything else ends the string and starts a fresh escape sequence with this byte.
            self._enter(_State.ESC)
            return i
        if ch in _CANCEL:
            self._enter(_State.GROUND)
            return i + 1
        if ch == _ESC:
            self._enter(_State.ESC)
            return i + 1
        if "\x20" <= ch <= "\x2f":
            self._length += 1
            if self._length > self._max:
                self._enter(_State.GROUND)
                return i
            self._state = _State.ESC_INTER
            return i + 1
        if state is _State.ESC and ch == "[":
            self._enter(_State.CSI)
            return i + 1
        if state is _State.ESC and ch in _STRING_INTRODUCERS:
            self._enter(_State.STRING)
            return i + 1
        if "\x30" <= ch <= "\x7e":
            self._enter(_State.GROUND)  # a complete two-byte (or intermediate) escape
            return i + 1
        self._enter(_State.GROUND)  # not a valid escape: judge the character as text
        return i


def strip(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` without terminal controls; unterminated sequences are dropped."""
    stripper = Stripper(keep_newlines=keep_newlines)
    return stripper.feed(text) + stripper.flush()


TEXT_LIMIT = 4096
"""Characters of one piece of untrusted text kept for display (the rest is cut, visibly)."""


def untrusted(text: str | bytes, *, limit: int = TEXT_LIMIT, multiline: bool = False) -> str:
    """The one gate for text tunnelauth did not write itself, before anything shows it.

    Remote output, ssh's and the server's messages, exec output: decoded (bytes as UTF-8,
    bad bytes replaced), cut to ``limit`` characters with a visible note, and stripped of
    every terminal control (ESC and C1 sequences, OSC 52/8, CSI, control and bidi
    characters). ``multiline`` keeps line ends as ``\n`` (a bare ``\r``, which would let
    text overwrite its own line, becomes one); otherwise the result is a single line.
    The result is plain text: renderers must never read it as markup.
    """
    if isinstance(text, bytes):
        text = text[: limit * 4 + 4].decode("utf-8", "replace")
    note = ""
    if len(text) > limit:
        note = f" … [cut after {limit} characters]"
        text = text[:limit]
    if not multiline:
        return strip(text).strip() + note
    shown = strip(text, keep_newlines=True).replace("\r\n", "\n").replace("\r", "\n")
    return shown + note


_SECRET_NAMES = (
    "code",
    "access_token",
    "refresh_token",
    "id_token",
    "code_verifier",
    "client_secret",
    "token",
    "password",
)
# ``name=value`` where name is a whole parameter name (not the tail of ``user_code`` or
# ``code_challenge``); the value runs to the next parameter, fragment or end of the URL.
_SECRET_PARAM = re.compile(
    r"(?<![\w.-])(?P<name>(?i:" + "|".join(_SECRET_NAMES) + r"))=(?P<value>[^&#;\s\"'`<>]+)"
)


# A run of characters that may form one URL or query; redaction judges each such word alone.
_WORD = re.compile(r"[^\s\"'`<>]+")
# Parameters only an authorization *request* carries: on such a URL, ``code`` is not a code
# (claude.ai's authorize URL carries ``code=true``); callbacks and pasted redirects never
# carry them, so their ``code=`` is still hidden.
_AUTHORIZE_REQUEST = re.compile(r"(?<![\w.-])(?i:response_type|code_challenge)=")


def redact(text: str) -> str:
    """Replace the values of OAuth secret parameters (``code=``, tokens, …) with ``…``.

    ``code=`` on an authorization request (a URL with ``response_type`` or ``code_challenge``)
    is a flag, not an authorization code, and stays as it is.
    """
    return _WORD.sub(_redact_word, text)


def _redact_word(word: re.Match[str]) -> str:
    text = word.group()
    if "=" not in text:
        return text
    keep_code = _AUTHORIZE_REQUEST.search(text) is not None

    def hide(m: re.Match[str]) -> str:
        if keep_code and m.group("name").lower() == "code":
            return m.group()
        return m.group("name") + "=…"

    return _SECRET_PARAM.sub(hide, text)
