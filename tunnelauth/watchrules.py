"""The wording the watcher recognises: open instructions, callback announcements, device
codes, status lines and prompts.

Pure tables and small predicates over one line of already stripped text; ``watch.Watcher``
decides when they apply.
"""

from __future__ import annotations

import re

from tunnelauth.events import Outcome, PromptKind, Status
from tunnelauth.urlcheck import SHOWN_REJECTED

MAX_PROMPT = 1024
"""Longest partial line that can still be a prompt."""

# --------------------------------------------------------------------------- wording

OPEN = re.compile(
    r"(?i)\b(?:open|visit|go to|navigate to|browse to|point your browser|follow (?:this|the) link"
    r"|sign in at|log in at|in (?:a|your|the) (?:web )?browser|the following (?:link|url)"
    r"|(?:authori[sz]ation|login|sign-in|verification) (?:url|link))\b"
)
_ANNOUNCE = re.compile(r"(?i)\b(?:callback|redirect\w*)\b")
_WAITING = re.compile(r"(?i)\b(?:waiting|listening|listens)\b")
_SERVERISH = re.compile(r"(?i)\b(?:connect\w*|server|endpoint|api|proxy|base url|mcp)\b")
_CALLBACK_PATH = re.compile(r"(?i)callback|redirect|oauth|auth")
REDIRECT_HINT = re.compile(
    r"(?i)(?:\bredirect(?:s|ed)? (?:you )?(?:back )?to|\bredirect ur[il](?: is)?):?$"
)
SSH_FORWARD = re.compile(
    r"(?<!\S)-L\s*(?:(?:\[[0-9A-Fa-f:.]*\]|[\w.-]+):)?\d{1,5}:"
    r"(?P<host>127\.0\.0\.1|localhost|\[::1\]):(?P<port>\d{1,5})(?!\S)"
)
SSH_WORD = re.compile(r"\bssh\b")

_CODE_TOKEN = r"[A-Z0-9]{3,12}(?:-[A-Z0-9]{3,12}){0,3}"
BARE_CODE = re.compile(_CODE_TOKEN)
_INLINE_CODE = re.compile(
    r"(?i:\bcode\b)(?:\s+is)?\s*[:=]?\s*[`\"']?(?P<code>" + _CODE_TOKEN + r")(?![\w-])"
)
CODE_LABEL = re.compile(r"(?i)\b(?:enter|input|type|use)\b.*\bcode\b[^.!]*$")

# --------------------------------------------------------------------------- status lines

_TIMEOUT_WORDS = re.compile(r"(?i)tim(?:ed|e)?[ _-]?out")
TB_HEADER = re.compile(r"Traceback \(most recent call last\):?")
TB_FINAL = re.compile(r"[A-Za-z_][\w.]*(?::(?: .*)?)?")
TB_CHAIN = re.compile(
    r"During handling of the above exception|The above exception was the direct cause"
)

# (pattern, outcome, whether "timed out" in the line makes it a timeout)
_STATUS_RULES: tuple[tuple[re.Pattern[str], Outcome, bool], ...] = (
    (re.compile(r"^tunnelauth: remote command not found: \S+$"), Outcome.NOT_FOUND, False),
    (
        re.compile(r"^(?:[\w./-]+: )?(?:line \d+: )?[\w./+-]+: command not found$"),
        Outcome.NOT_FOUND,
        False,
    ),
    (re.compile(r"^[\w./-]*sh: (?:\d+: )?[\w./+-]+: not found$"), Outcome.NOT_FOUND, False),
    (re.compile(r"^zsh: command not found: \S+$"), Outcome.NOT_FOUND, False),
    (re.compile(r"^fish: Unknown command:? \S+$"), Outcome.NOT_FOUND, False),
    (re.compile(r"(?i)^(?:[\w-]+ )?authori[sz]ation timed out\b"), Outcome.TIMED_OUT, False),
    (re.compile(r"(?i)^timed out waiting for\b"), Outcome.TIMED_OUT, False),
    (re.compile(r"(?i)^login timed out\b"), Outcome.TIMED_OUT, False),
    (re.compile(r"^✗\s*(?:Authentication|Authorization|Login) failed\b"), Outcome.FAILED, True),
    (re.compile(r"(?i)^login failed\b"), Outcome.FAILED, True),
    (re.compile(r"(?i)^(?:[\w-]+ )?authori[sz]ation failed\b"), Outcome.FAILED, True),
    (re.compile(r"^[\w.]*AuthError\b"), Outcome.FAILED, True),
    (re.compile(r"(?i)^could not bind (?:[\w-]+ )?callback server on\b"), Outcome.FAILED, False),
    (re.compile(r"(?i)^OAuth callback port \d+ is already in use\b"), Outcome.FAILED, False),
    (re.compile(r"^Unknown provider '[^']*'\.?$"), Outcome.FAILED, False),
    (re.compile(r"(?i)^login cancell?ed\.?$"), Outcome.FAILED, False),
    (
        re.compile(r"(?i)^(?:✓\s*)?(?:[\w-]+\s+){0,3}login successful[.!]?$"),
        Outcome.SUCCEEDED,
        False,
    ),
    (re.compile(r"^✓\s*Authenticated\b"), Outcome.SUCCEEDED, False),
    (re.compile(r"^Added [\w.-]+ OAuth credential #\d+\b"), Outcome.SUCCEEDED, False),
    (
        re.compile(
            r"(?i)^(?:✓\s*)?(?:successfully (?:logged in|authenticated)|logged in successfully"
            r"|authentication successful|authorization successful)\b"
        ),
        Outcome.SUCCEEDED,
        False,
    ),
)


def failure(line: str) -> Outcome:
    """FAILED, or TIMED_OUT when the failure says it timed out."""
    return Outcome.TIMED_OUT if _TIMEOUT_WORDS.search(line) else Outcome.FAILED


def status_of(line: str) -> Status | None:
    """The status a (stripped) line announces, if any."""
    for pattern, outcome, timeout_aware in _STATUS_RULES:
        if pattern.search(line):
            return Status(failure(line) if timeout_aware else outcome, line)
    return None


# --------------------------------------------------------------------------- prompts

_KNOWN_PROMPTS: tuple[tuple[re.Pattern[str], PromptKind], ...] = (
    (re.compile(r"(?i)continue without this server:$"), PromptKind.PASTE),
    (re.compile(r"(?i)^(?:paste (?:the |your )?)?callback url:$"), PromptKind.PASTE),
    (
        re.compile(r"(?i)^paste (?:the |your )?(?:full )?redirect ur[il](?: here)?:$"),
        PromptKind.PASTE,
    ),
    (
        re.compile(r"(?i)^(?:paste (?:the |your )?)?(?:authorization|auth) code(?: here)?:$"),
        PromptKind.CODE,
    ),
    (re.compile(r"(?i)^paste (?:the |your )?code(?: here)?:$"), PromptKind.CODE),
    (re.compile(r"(?i)^(?:\[sudo\] )?password(?: for [^:]{1,64})?:$"), PromptKind.SECRET),
    (re.compile(r"(?i)^[\w.-]+@[\w.-]+'s password:$"), PromptKind.SECRET),
    (re.compile(r"(?i)^enter passphrase(?: for [^:]{1,200})?:$"), PromptKind.SECRET),
    (re.compile(r"^Spotify Client ID:$"), PromptKind.TEXT),
    (re.compile(r"(?i)[\[(](?:y/n|yes/no)(?:/\[fingerprint\])?[\])]$"), PromptKind.YESNO),
)
PROMPT_TRIGGER = re.compile(r"[:?\])]")  # every known prompt ends with one of these
PROMPT_LEAD = " \t:?"  # left over after a prompt such as "[Y/n]: "
_PROMPT_END = re.compile(r"[:?>]$")
_YESNO = re.compile(r"(?i)[\[(]\s*(?:y/n|yes/no)\b")
_SECRET_WORDS = re.compile(
    r"(?i)\b(?:password|passphrase|passcode|pin|secret|api[ _-]?key|token)\b"
)
_PASTE_WORDS = re.compile(
    r"(?i)\b(?:callback|redirect)[ _-]?ur[il]\b|\bpaste\b.*\bur[il]\b|without this server"
)
_CODE_WORD = re.compile(r"(?i)\bcode\b")


def prompt_text(text: str) -> str:
    """The prompt as shown: without surrounding blanks or leftovers of a previous prompt."""
    return text.lstrip(PROMPT_LEAD).rstrip()


def known_prompt(text: str) -> PromptKind | None:
    """The kind of a well-known prompt that ``text`` is exactly, if any."""
    shown = prompt_text(text)
    return next((kind for pattern, kind in _KNOWN_PROMPTS if pattern.search(shown)), None)


def prompt_kind(text: str) -> PromptKind:
    """Guess what an idle partial line asks for."""
    if _YESNO.search(text):
        return PromptKind.YESNO
    if _SECRET_WORDS.search(text):
        return PromptKind.SECRET
    if _PASTE_WORDS.search(text):
        return PromptKind.PASTE
    if _CODE_WORD.search(text):
        return PromptKind.CODE
    return PromptKind.TEXT


def looks_like_prompt(text: str) -> bool:
    """Whether an idle partial line seems to wait for input."""
    shown = prompt_text(text)
    if not shown or len(text) > MAX_PROMPT or not any(c.isalnum() for c in shown):
        return False
    return bool(_PROMPT_END.search(shown) or _YESNO.search(shown))


def shown(url: str) -> str:
    """A URL cut to the length shown in messages."""
    return url if len(url) <= SHOWN_REJECTED else url[:SHOWN_REJECTED] + "…"


def inline_code(words: str) -> str | None:
    """A device code printed after the word "code" on this line, if any."""
    m = _INLINE_CODE.search(words)
    return None if m is None else m["code"]


def is_announcement(words: str, path: str) -> bool:
    """Whether a loopback URL on a line is where the CLI waits for the callback."""
    if _ANNOUNCE.search(words):
        return True
    if _SERVERISH.search(words):
        return False  # "Connecting to MCP server http://localhost:3000/mcp"
    return bool(_WAITING.search(words) or _CALLBACK_PATH.search(path))
