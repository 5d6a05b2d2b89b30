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
* URLs: only ``https`` URLs, or ``http`` to 127.0.0.1/localhost/[::1] with an explicit
  port in 1024-65535, and never with credentials, are ever reported.  A URL runs up to
  whitespace or ``<>``; one that follows a quote, a backtick or ``<`` ends at the matching
  closer.  Trailing punctuation (and an unbalanced ``)``/``]``/``}`` or quote) is dropped.
  As a browser does, the printable ASCII characters RFC 3986 does not allow (quotes,
  backticks, ``{}|^\\``) are percent-encoded after the host; the scheme and host are judged
  as printed.  Any other character outside RFC 3986, or a stray ``%``, rejects the URL.
  A rejected URL that looks like a login URL (an open instruction, OAuth parameters, or a
  loopback URL on an announcement line) is reported as ``RejectedUrl`` with the reason, so
  the user is never left waiting without a word.
* An https URL is an ``AuthorizeUrl`` when it carries OAuth parameters (``response_type``,
  ``client_id``, ``redirect_uri``, ``code_challenge``), a ``DeviceCode`` when it carries
  ``user_code``, and otherwise only when an instruction to open it stands on its line or
  on the previous non-blank line ending with ``:``.  Such a plain URL is held: if the next
  non-blank line (or the same line) gives a device code (``enter code: ABCD-EFGH``), or
  says to enter a code and the line after it is the code, it becomes a ``DeviceCode``;
  otherwise an ``AuthorizeUrl``.  ``idle()``/``close()`` settle a held URL too, except
  that ``idle()`` keeps waiting while a code is announced but not yet printed or while the
  remote stopped half-way through a line that is not a prompt.
* Callbacks come from a loopback ``redirect_uri`` of an authorize URL, or from a loopback
  URL on a line that (outside the URL) says ``callback``/``redirect``, or says
  ``waiting``/``listening`` without naming a server/connection/endpoint, or whose path
  contains callback/redirect/oauth/auth on such a server-free line, or follows a line
  ending in "redirects to".  A loopback URL on an open-instruction line is the CLI's own
  start page (rclone): ``Callback(path=None)`` then ``AuthorizeUrl``.  ``ssh -L`` hints
  count only when nothing announced a callback before.  A loopback URL carrying ``code=``
  or ``error=`` is a finished redirect (e.g. echoed input), never an announcement.  A new
  ``Callback`` is emitted only when (host, port, path) changes: the newest one wins.
* A line that starts with ``tunnelauth-browser:`` is what tunnelauth's ``$BROWSER`` helper
  prints when the remote CLI opens a browser: it is not shown; a ``BrowserRequest`` comes
  instead, and the rest of the line, taken whole as one URL, is judged exactly like a URL on
  an open-instruction line (the remote can print such a line itself: it earns no more trust).
* Status lines are matched anchored at the start of the stripped line; URLs on a status
  line are ignored and a held URL is dropped.  A traceback's final exception line is a
  failure, reported once the next non-blank line shows the traceback was not chained.
* Known prompts are recognised at the first character where the line so far reads as
  one, so detection does not depend on chunking; other partial lines become a ``Prompt``
  at ``idle()`` when they end like a question.  After a prompt, the rest of the line is a
  new partial line.  Once the remote has waited at a secret-kind prompt (``idle()`` was
  called, or the orchestrator called ``input_sent()``), a single-word rest of the line is
  the PTY's echo of the user's input and is neither shown nor scanned; without a pause it
  is remote text like any other (a known prompt that did not wait was not a prompt).
"""

from __future__ import annotations

import codecs
import re
from enum import Enum

from tunnelauth.events import (
    AuthorizeUrl,
    BrowserRequest,
    Callback,
    DeviceCode,
    Event,
    Prompt,
    PromptKind,
    RejectedUrl,
    RemoteLine,
    Status,
)
from tunnelauth.loopback import LOOPBACK_HOSTS
from tunnelauth.remote import BROWSER_MARKER
from tunnelauth.sanitize import Stripper
from tunnelauth.urlcheck import (
    LOGIN_PARAMS,
    OAUTH_PARAMS,
    ParsedUrl,
    Rejected,
    check_url,
    find_urls,
    parse_url,
)
from tunnelauth.watchrules import (
    BARE_CODE,
    CODE_LABEL,
    MAX_PROMPT,
    OPEN,
    PROMPT_LEAD,
    PROMPT_TRIGGER,
    REDIRECT_HINT,
    SSH_FORWARD,
    SSH_WORD,
    TB_CHAIN,
    TB_FINAL,
    TB_HEADER,
    failure,
    inline_code,
    is_announcement,
    known_prompt,
    looks_like_prompt,
    prompt_kind,
    prompt_text,
    shown,
    status_of,
)

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
        # what earlier lines left behind
        self._open_hint = False  # previous non-blank line said "open this URL:"
        self._redirect_hint = False  # previous non-blank line said "redirects to"
        self._in_traceback = False
        self._held_status: Status | None = None
        self._held_url: ParsedUrl | None = None
        self._await_code = False  # a held URL's code is announced for the next line
        self._last_callback: tuple[str, int, str | None] | None = None
        self._last_authorize: str | None = None
        self._last_device: DeviceCode | None = None
        self._last_rejected: RejectedUrl | None = None

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
        self._settle_status(out)
        rest = "" if self._discard else self._line[self._seg :]
        waiting = looks_like_prompt(rest)
        if not self._await_code and (waiting or not rest.strip()):
            self._settle_url(out)  # not while the remote is half-way through a line
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
        self._settle_status(out)
        self._settle_url(out)
        self._closed = True
        return out

    def buffered(self) -> int:
        """How many characters (and undecoded bytes) the watcher holds right now."""
        held = 0 if self._held_url is None else len(self._held_url.url)
        status = 0 if self._held_status is None else len(self._held_status.line)
        return len(self._line) + held + status + len(self._decoder.getstate()[0])

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
        self._line_done(rest + "…" if truncated else rest, out)

    # ----------------------------------------------------------------- complete lines

    def _line_done(self, text: str, out: list[Event]) -> None:
        """Process one complete sanitized line."""
        stripped = text.strip()
        if stripped.startswith(BROWSER_MARKER):
            self._settle_status(out)
            self._browser_request(stripped[len(BROWSER_MARKER) :].strip(), out)
            return
        out.append(RemoteLine(text))
        if not stripped:
            return  # blank lines keep every hint and held item for the next line
        if self._held_status is not None and TB_CHAIN.match(stripped):
            self._held_status = None  # a chained traceback follows; its own end decides
            return
        self._settle_status(out)
        if self._traceback_line(text, stripped):
            return
        status = status_of(stripped)
        if status is not None:
            out.append(status)
            self._held_url, self._await_code = None, False
            self._open_hint = self._redirect_hint = False
            return
        self._scan(text, stripped, out)

    def _traceback_line(self, text: str, stripped: str) -> bool:
        """Follow a Python traceback; True if the line belongs to it."""
        if TB_HEADER.fullmatch(stripped):
            self._in_traceback = True
            return True
        if not self._in_traceback:
            return False
        if text[:1].isspace():
            return True  # frames and source lines: never scanned for URLs or statuses
        self._in_traceback = False
        if TB_FINAL.fullmatch(stripped):
            self._held_status = Status(failure(stripped), stripped)
            return True
        return False

    def _scan(self, text: str, stripped: str, out: list[Event]) -> None:
        """Look for URLs, callbacks and device codes in a line that is not a status."""
        urls, rejected, words = find_urls(text)
        self._settle_held_with(words, stripped, out)
        open_ctx = self._open_hint or bool(OPEN.search(words))
        announce_ctx = self._redirect_hint
        for bad in rejected:
            self._rejected(bad, words, open_ctx or announce_ctx, out)
        held_before = self._held_url
        for url in urls:
            self._url(url, words, open_ctx, announce_ctx, out)
        if self._held_url is not None and self._held_url is not held_before:
            self._settle_held_with(words, "", out)  # "visit URL and enter code: X" on one line
        if not urls:
            self._ssh_forward(text, out)
        words_end = words.rstrip()
        found = bool(urls or rejected)
        self._open_hint = not found and words_end.endswith(":") and bool(OPEN.search(words))
        self._redirect_hint = not found and bool(REDIRECT_HINT.search(words_end))

    def _browser_request(self, raw: str, out: list[Event]) -> None:
        """The ``$BROWSER`` helper's line: its URL is judged as if printed after "Open:"."""
        out.append(BrowserRequest(shown(raw)))
        if not self._await_code:
            self._settle_url(out)  # this line is the next non-blank one for a held URL
        self._open_hint = self._redirect_hint = False
        checked = check_url(raw)
        if isinstance(checked, ParsedUrl):
            self._url(checked, "", True, False, out)
            return
        event = RejectedUrl(shown(raw), checked)
        if event != self._last_rejected:
            self._last_rejected = event
            out.append(event)

    def _rejected(self, bad: Rejected, words: str, context: bool, out: list[Event]) -> None:
        """Report a rejected URL that the login may depend on (never a plain docs link)."""
        loopback_announcement = bad.text[:5].lower() == "http:" and is_announcement(words, "")
        if not (context or LOGIN_PARAMS.search(bad.text) or loopback_announcement):
            return
        event = RejectedUrl(shown(bad.text), bad.reason)
        if event != self._last_rejected:
            self._last_rejected = event
            out.append(event)

    def _url(
        self, url: ParsedUrl, words: str, open_ctx: bool, announce_ctx: bool, out: list[Event]
    ) -> None:
        """Classify one valid URL found on a line."""
        if url.scheme == "http":
            self._loopback_url(url, words, open_ctx, announce_ctx, out)
            return
        code = url.param("user_code")
        if code:
            self._device(url.url, code, out)
        elif any(url.has_param(name) for name in OAUTH_PARAMS):
            self._authorize(url, out)
        elif open_ctx:
            self._settle_url(out)
            self._held_url, self._await_code = url, False

    def _loopback_url(
        self, url: ParsedUrl, words: str, open_ctx: bool, announce_ctx: bool, out: list[Event]
    ) -> None:
        """A loopback URL is the CLI's own start page, a callback announcement, or neither."""
        if url.port is None or url.has_param("code") or url.has_param("error"):
            return
        if open_ctx:
            self._callback(url.host, url.port, None, "announcement", out)
            self._emit_authorize(AuthorizeUrl(url.url, url.host, url.param("redirect_uri")), out)
        elif announce_ctx or is_announcement(words, url.path):
            self._callback(url.host, url.port, url.path or "/", "announcement", out)

    def _authorize(self, url: ParsedUrl, out: list[Event]) -> None:
        """An authorize URL: its loopback redirect_uri first, then the URL itself."""
        redirect = url.param("redirect_uri")
        target = parse_url(redirect) if redirect else None
        if target is not None and target.scheme == "http" and target.port is not None:
            self._callback(target.host, target.port, target.path or "/", "redirect_uri", out)
        self._emit_authorize(AuthorizeUrl(url.url, url.host, redirect), out)

    def _ssh_forward(self, text: str, out: list[Event]) -> None:
        """An ``ssh -L p:127.0.0.1:p`` hint, used only when no URL announced a callback."""
        if self._last_callback is not None or not SSH_WORD.search(text):
            return
        m = SSH_FORWARD.search(text)
        if m is None:
            return
        port = int(m["port"])
        if 1024 <= port <= 65535:
            host = m["host"].strip("[]")
            self._callback(host, port, None, "announcement", out)

    # ----------------------------------------------------------------- held items

    def _settle_held_with(self, words: str, stripped: str, out: list[Event]) -> None:
        """Decide a held URL from the next non-blank line (its own line when ``stripped`` is "")."""
        held = self._held_url
        if held is None:
            return
        if self._await_code:
            code = stripped if BARE_CODE.fullmatch(stripped) else inline_code(words)
            self._held_url, self._await_code = None, False
            self._device(held.url, code, out)
            return
        code = inline_code(words)
        if code is not None:
            self._held_url = None
            self._device(held.url, code, out)
        elif CODE_LABEL.search(words.rstrip()):
            self._await_code = True
        elif stripped:
            self._settle_url(out)

    def _settle_url(self, out: list[Event]) -> None:
        """No code came for the held URL: it is a page to open (or a code-less device URL)."""
        held = self._held_url
        if held is None:
            return
        self._held_url = None
        if self._await_code:
            self._await_code = False
            self._device(held.url, None, out)
        else:
            self._emit_authorize(AuthorizeUrl(held.url, held.host, None), out)

    def _settle_status(self, out: list[Event]) -> None:
        """Report a held traceback status."""
        if self._held_status is not None:
            out.append(self._held_status)
            self._held_status = None

    # ----------------------------------------------------------------- emitting

    def _callback(
        self, host: str, port: int, path: str | None, source: str, out: list[Event]
    ) -> None:
        """Emit a callback unless it repeats the last one."""
        if not 1024 <= port <= 65535 or host not in LOOPBACK_HOSTS:
            return
        key = (host, port, path)
        if key != self._last_callback:
            self._last_callback = key
            out.append(Callback(host, port, path, source))

    def _emit_authorize(self, event: AuthorizeUrl, out: list[Event]) -> None:
        """Emit an authorize URL unless it repeats the last one."""
        if event.url != self._last_authorize:
            self._last_authorize = event.url
            out.append(event)

    def _device(self, url: str, code: str | None, out: list[Event]) -> None:
        """Emit a device code unless it repeats the last one."""
        event = DeviceCode(url, code)
        if event != self._last_device:
            self._last_device = event
            out.append(event)
