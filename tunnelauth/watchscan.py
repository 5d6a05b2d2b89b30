"""What one complete line of a login's output means: statuses, URLs, device codes, callbacks.

Pure: no I/O, no clocks.  ``watch.Watcher`` assembles the lines (and reports prompts) and hands
each complete, sanitized line to a ``LineScanner``, which also keeps what earlier lines left
behind: an open or redirect hint, a held URL waiting for its device code, a held traceback
status, and the last event of each kind, so that none is emitted twice in a row.

Rules for ambiguous output (each tested in tests/unit/test_watch.py):

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
  otherwise an ``AuthorizeUrl``.  The watcher's ``idle()``/``close()`` settle a held URL
  too, except that ``idle()`` keeps waiting while a code is announced but not yet printed or
  while the remote stopped half-way through a line that is not a prompt.
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
"""

from __future__ import annotations

from tunnelauth.events import (
    AuthorizeUrl,
    BrowserRequest,
    Callback,
    DeviceCode,
    Event,
    RejectedUrl,
    RemoteLine,
    Status,
)
from tunnelauth.loopback import LOOPBACK_HOSTS
from tunnelauth.remote import BROWSER_MARKER
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
    OPEN,
    REDIRECT_HINT,
    SSH_FORWARD,
    SSH_WORD,
    TB_CHAIN,
    TB_FINAL,
    TB_HEADER,
    failure,
    inline_code,
    is_announcement,
    shown,
    status_of,
)


class LineScanner:
    """Turns complete lines into events; remembers what earlier lines left behind."""

    def __init__(self) -> None:
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

    @property
    def awaiting_code(self) -> bool:
        """A held URL's code is announced for the next line: a pause must not settle it."""
        return self._await_code

    def held(self) -> int:
        """How many characters the held URL and the held status take."""
        held = 0 if self._held_url is None else len(self._held_url.url)
        status = 0 if self._held_status is None else len(self._held_status.line)
        return held + status

    def line(self, text: str, out: list[Event]) -> None:
        """Process one complete sanitized line."""
        stripped = text.strip()
        if stripped.startswith(BROWSER_MARKER):
            self.settle_status(out)
            self._browser_request(stripped[len(BROWSER_MARKER) :].strip(), out)
            return
        out.append(RemoteLine(text))
        if not stripped:
            return  # blank lines keep every hint and held item for the next line
        if self._held_status is not None and TB_CHAIN.match(stripped):
            self._held_status = None  # a chained traceback follows; its own end decides
            return
        self.settle_status(out)
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
            self.settle_url(out)  # this line is the next non-blank one for a held URL
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
            self.settle_url(out)
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
            self.settle_url(out)

    def settle_url(self, out: list[Event]) -> None:
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

    def settle_status(self, out: list[Event]) -> None:
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
