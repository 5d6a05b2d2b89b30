"""Read a remote login command's PTY output and turn it into typed events.

Pure: no I/O, no clocks.  The orchestrator feeds raw bytes as they arrive, calls
``idle()`` when output has paused for a while and ``close()`` at end of output.  The
events do not depend on how the bytes were chunked (only ``idle()`` calls, which stand
for real pauses, can move a decision earlier).

Rules for ambiguous output (each tested in tests/unit/test_watch.py):

* Lines end at ``\\n``, ``\\r\\n`` or a bare ``\\r`` (a progress rewrite); a run of ``\\r``
  before ``\\n`` is one line end.  A bare ``\\r`` after an empty line emits nothing.
* A partial line is capped at ``max_line`` characters: the first ``max_line`` are emitted
  as a line ending in ``…`` and the rest, up to the next line end, is dropped.
* Known prompts are recognised at the first character where the line so far reads as
  one, so detection does not depend on chunking; other partial lines become a ``Prompt``
  at ``idle()`` when they end like a question.  After a prompt, the rest of the line is a
  new partial line.  Once the remote has waited at a secret-kind prompt (``idle()`` was
  called, or the orchestrator called ``input_sent()``), a single-word rest of the line is
  the PTY's echo of the user's input and is neither shown nor scanned; without a pause it
  is remote text like any other (a known prompt that did not wait was not a prompt).

What a complete line means (URLs, device codes, callbacks, statuses) is ``watchscan``'s to say;
its docstring lists those rules.
"""

from __future__ import annotations

import codecs
import re
from enum import Enum

from tunnelauth.events import Event, Prompt, PromptKind
from tunnelauth.sanitize import Stripper
from tunnelauth.watchrules import (
    MAX_PROMPT,
    PROMPT_LEAD,
    PROMPT_TRIGGER,
    known_prompt,
    looks_like_prompt,
    prompt_kind,
    prompt_text,
)
from tunnelauth.watchscan import LineScanner

__all__ = ["MAX_LINE", "Watcher"]

MAX_LINE = 64 * 1024
"""Longest partial line kept, in characters."""


# --------------------------------------------------------------------------- the watcher

_NEWLINE = re.compile(r"[\r\n]")


class _CR(Enum):
    """Whether a carriage return is waiting to learn if a line feed follows."""

    NONE = 0
    PENDING = 1  # "\r" seen, the line not yet emitted
    DONE = 2  # "\r" seen and the line emitted by idle(): swallow a following "\n"


class Watcher:
    """Turns a remote command's raw PTY output into events; bounded memory, no I/O."""

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        """Start with empty state; partial lines are capped at ``max_line`` characters."""
        if max_line < MAX_PROMPT:
            raise ValueError(f"max_line must be at least {MAX_PROMPT}")
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stripper = Stripper(keep_newlines=True)
        self._max_line = max_line
        self._closed = False
        # the partial line
        self._line = ""
        self._seg = 0  # where the part not yet reported as a prompt starts
        self._prompted = False  # a prompt was reported on this line
        self._secret = False  # the last prompt on this line asked for a secret
        self._waited = False  # output paused (or input was sent) since that prompt
        self._discard = False  # the line overflowed: drop text until it ends
        self._cr = _CR.NONE
        self._scanner = LineScanner()  # complete lines, and what earlier ones left behind

    # ----------------------------------------------------------------- public API

    def feed(self, data: bytes) -> list[Event]:
        """Read the next chunk of output, split anywhere; return the events it completes."""
        if self._closed:
            raise ValueError("feed() after close()")
        out: list[Event] = []
        self._text(self._stripper.feed(self._decoder.decode(data)), out)
        return out

    def idle(self) -> list[Event]:
        """Output paused: settle what waits for more output and report a waiting prompt."""
        out: list[Event] = []
        if self._closed:
            return out
        if self._cr is _CR.PENDING and self._line:
            self._cr = _CR.DONE
            self._end_line(out)
        self._scanner.settle_status(out)
        rest = "" if self._discard else self._line[self._seg :]
        waiting = looks_like_prompt(rest)
        if not self._scanner.awaiting_code and (waiting or not rest.strip()):
            self._scanner.settle_url(out)  # not while the remote is half-way through a line
        if waiting:
            self._report_prompt(rest, prompt_kind(rest), len(self._line), out)
        if self._prompted:
            self._waited = True  # the remote really stopped at the prompt: input will follow
        return out

    def input_sent(self) -> None:
        """The orchestrator wrote a line to the remote's stdin: what the PTY echoes is input."""
        if self._prompted:
            self._waited = True

    def close(self) -> list[Event]:
        """End of output: flush the partial line and settle everything still held."""
        out: list[Event] = []
        if self._closed:
            return out
        self._text(self._stripper.feed(self._decoder.decode(b"", final=True)), out)
        self._stripper.flush()
        if self._line or self._discard:
            self._end_line(out)  # a last line without a line end, or one a bare CR ended
        self._cr = _CR.NONE
        self._scanner.settle_status(out)
        self._scanner.settle_url(out)
        self._closed = True
        return out

    def buffered(self) -> int:
        """How many characters (and undecoded bytes) the watcher holds right now."""
        return len(self._line) + self._scanner.held() + len(self._decoder.getstate()[0])

    # ----------------------------------------------------------------- splitting lines

    def _text(self, text: str, out: list[Event]) -> None:
        """Split sanitized text into line content and line ends."""
        start = 0
        for m in _NEWLINE.finditer(text):
            self._chars(text[start : m.start()], out)
            self._newline(m.group(), out)
            start = m.end()
        self._chars(text[start:], out)

    def _newline(self, ch: str, out: list[Event]) -> None:
        """Handle ``\\r`` or ``\\n``: CR waits to see whether LF follows."""
        if ch == "\r":
            if self._cr is _CR.NONE:
                self._cr = _CR.PENDING
            return
        if self._cr is _CR.DONE:
            self._cr = _CR.NONE  # the line already ended at idle()
            return
        self._cr = _CR.NONE
        self._end_line(out)

    def _chars(self, run: str, out: list[Event]) -> None:
        """Append text without line ends to the partial line, within the cap."""
        if not run:
            return
        if self._cr is _CR.PENDING and (self._line or self._discard):
            self._end_line(out)  # a bare CR rewrote the line: what was there is a line
        self._cr = _CR.NONE
        if self._discard:
            return
        room = self._max_line - len(self._line)
        self._append(run[:room], out)
        if len(run) > room:
            self._end_line(out, truncated=True)
            self._discard = True

    def _append(self, run: str, out: list[Event]) -> None:
        """Add text to the partial line, reporting known prompts where they end."""
        base = len(self._line)
        self._line += run
        if base - self._seg >= MAX_PROMPT:
            return
        for m in PROMPT_TRIGGER.finditer(run):
            end = base + m.end()
            if end - self._seg > MAX_PROMPT:
                break  # no prompt is this long; only a reported prompt moves _seg on
            candidate = self._line[self._seg : end]
            kind = known_prompt(candidate)
            if kind is not None:
                self._report_prompt(candidate, kind, end, out)

    def _report_prompt(self, text: str, kind: PromptKind, end: int, out: list[Event]) -> None:
        """Emit a prompt once; text after it on the same line is a new partial line."""
        out.append(Prompt(prompt_text(text), kind))
        self._seg = end
        self._prompted = True
        self._secret = kind.is_secret
        self._waited = False

    def _end_line(self, out: list[Event], *, truncated: bool = False) -> None:
        """The partial line is complete: reset it and process what it holds."""
        rest = self._line[self._seg :]
        prompted, discarding = self._prompted, self._discard
        echo = self._secret and self._waited
        self._line, self._seg = "", 0
        self._prompted = self._secret = self._waited = self._discard = False
        if discarding:
            return  # its first part was already emitted when it overflowed
        if prompted:
            rest = rest.lstrip(PROMPT_LEAD)
            word = rest.strip()
            if not word or (echo and not truncated and not any(c.isspace() for c in word)):
                return  # nothing after the prompt, or the user's echoed secret
        self._scanner.line(rest + "…" if truncated else rest, out)
