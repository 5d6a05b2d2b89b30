"""Which URLs in remote output may be opened or announced, and where they are in a line.

Pure: the rules the watcher applies to every URL candidate (see ``watch``'s module docstring
for the whole reading of remote output). Only ``https`` URLs, or ``http`` to this machine's
loopback with a port in 1024-65535, never with credentials, pass; what a browser would
percent-encode is encoded; anything else outside RFC 3986 rejects the URL with a reason.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl, urlsplit

from tunnelauth.loopback import LOOPBACK_HOSTS
from tunnelauth.sanitize import strip

MAX_URL = 8192
"""Longest URL accepted."""

OAUTH_PARAMS = frozenset({"response_type", "client_id", "redirect_uri", "code_challenge"})
_SINGLE_PARAMS = ("redirect_uri", "user_code")  # repeated, they could mean two things

# --------------------------------------------------------------------------- URLs

_URL_START = re.compile(r"(?<![\w+.\-:/@])(?i:https?)://")
_URL_END = re.compile(r"[\s<>]")
_CLOSERS = MappingProxyType(
    {'"': '"', "'": "'", "`": "`", "<": ">"}
)  # a URL after one of these ends at its pair
_BROWSER_ENCODED = re.compile(r"[\"`{}|^\\]")  # what a browser percent-encodes after the host
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_SHAPE = re.compile(r"(?P<scheme>(?i:https?))://(?P<authority>[^/?#]*)(?P<rest>.*)", re.S)
_AUTHORITY = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>\d{1,5}))?"
)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TRAILING_PUNCT = ".,;:!?*"
_TRAILING_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"))
_TRAILING_QUOTES = "\"'`"
SHOWN_REJECTED = 200  # characters of a rejected URL kept for the message
LOGIN_PARAMS = re.compile(
    r"[?&#](?:response_type|client_id|redirect_uri|code_challenge|user_code)=", re.I
)


@dataclass(frozen=True)
class ParsedUrl:
    """A URL that passed every safety check, with the parts the watcher needs."""

    url: str
    scheme: str  # "https" or "http" (http only to loopback with a port)
    host: str  # lower case; IPv6 without brackets
    port: int | None
    path: str
    params: tuple[tuple[str, str], ...]  # decoded query parameters, in order

    @property
    def loopback(self) -> bool:
        """Whether the host is 127.0.0.1, localhost or ::1."""
        return self.host in LOOPBACK_HOSTS

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, if present."""
        return next((v for k, v in self.params if k == name), None)

    def has_param(self, name: str) -> bool:
        """Whether query parameter ``name`` is present."""
        return any(k == name for k, _ in self.params)


def _safe_value(value: str) -> bool:
    """Whether a decoded parameter holds no whitespace and nothing ``strip`` would remove."""
    return strip(value) == value and not any(c.isspace() for c in value)


def _parse_host(authority: str) -> tuple[str, int | None] | None:
    """Split ``host[:port]`` into a normalized host and port; ``None`` if invalid."""
    m = _AUTHORITY.fullmatch(authority)
    if m is None:
        return None
    if m["v6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(m["v6"]))
        except ValueError:
            return None
    else:
        host = m["name"].lower()
        labels = host.removesuffix(".").split(".")  # "localhost." is valid but not loopback
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            return None
    port = None if m["port"] is None else int(m["port"])
    if port is not None and not 1 <= port <= 65535:
        return None
    return host, port


def _params(query: str) -> tuple[tuple[str, str], ...] | None:
    """Decode the query; ``None`` if a parameter that must be single and safe is not."""
    pairs = tuple(parse_qsl(query, keep_blank_values=True))
    for name in _SINGLE_PARAMS:
        values = [v for k, v in pairs if k == name]
        if len(values) > 1 or not all(_safe_value(v) for v in values):
            return None
    return pairs


def parse_url(url: str) -> ParsedUrl | None:
    """Check ``url`` may be opened or announced; ``None`` if it must be ignored."""
    checked = check_url(url)
    return checked if isinstance(checked, ParsedUrl) else None


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be opened or announced (``None`` if it may)."""
    checked = check_url(url)
    return None if isinstance(checked, ParsedUrl) else checked


def _browser_encoded(url: str) -> str:
    """``url`` with what a browser would percent-encode after the host encoded (ASCII only)."""
    shape = _URL_SHAPE.fullmatch(url)
    if shape is None:
        return url
    rest = _BROWSER_ENCODED.sub(lambda m: f"%{ord(m.group()):02X}", shape["rest"])
    return url[: shape.start("rest")] + rest


def check_url(raw: str) -> ParsedUrl | str:
    """The parsed URL (browser-encoded), or the reason it must be ignored."""
    if len(raw) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    shape = _URL_SHAPE.fullmatch(raw)
    if shape is None:
        return "not an http(s) URL"
    if "@" in shape["authority"]:
        return "it carries a user name (user@host)"  # a classic spoof: https://bank.com@evil/
    host_port = _parse_host(shape["authority"])  # judged as printed, never encoded
    if host_port is None:
        return "its host or port is not valid"
    host, port = host_port
    url = _browser_encoded(raw)
    if not _URL_CHARS.fullmatch(url):
        return "it holds characters a URL cannot carry"
    if _BAD_PERCENT.search(url):
        return "it holds a % that starts no escape"
    scheme = shape["scheme"].lower()
    if scheme == "http" and (host not in LOOPBACK_HOSTS or port is None or port < 1024):
        return "plain http is opened only to this machine's loopback, with a port 1024-65535"
    parts = urlsplit(url)
    params = _params(parts.query)
    if params is None:
        return "its redirect_uri or user_code is repeated or holds blanks or controls"
    return ParsedUrl(url, scheme, host, port, parts.path, params)


def _trim_url(raw: str) -> str:
    """Drop trailing punctuation that belongs to the sentence, not to the URL."""
    while raw:
        last = raw[-1]
        if (
            last in _TRAILING_PUNCT
            or any(
                last == close and raw.count(close) > raw.count(op) for op, close in _TRAILING_PAIRS
            )
            or (last in _TRAILING_QUOTES and raw.count(last) % 2 == 1)
        ):
            raw = raw[:-1]
        else:
            break
    return raw


@dataclass(frozen=True)
class Rejected:
    """A URL candidate that failed a check, as printed (trimmed), and why."""

    text: str
    reason: str


def _candidates(text: str) -> list[tuple[int, int]]:
    """Where URL candidates start and end in ``text``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (m := _URL_START.search(text, pos)) is not None:
        start = m.start()
        closer = _CLOSERS.get(text[start - 1]) if start else None
        end_at = _URL_END.search(text, m.end())
        end = len(text) if end_at is None else end_at.start()
        if closer is not None:
            close = text.find(closer, m.end(), end)
            end = end if close < 0 else close
        spans.append((start, end))
        pos = max(end, m.end())
    return spans


def find_urls(text: str) -> tuple[list[ParsedUrl], list[Rejected], str]:
    """The valid and the rejected URLs in ``text``, and the text with every candidate blanked."""
    urls: list[ParsedUrl] = []
    rejected: list[Rejected] = []
    words = text
    for start, end in _candidates(text):
        raw = _trim_url(text[start:end])
        checked = check_url(raw)
        if isinstance(checked, ParsedUrl):
            urls.append(checked)
        else:
            rejected.append(Rejected(raw, checked))
        words = words[:start] + " " * (end - start) + words[end:]
    return urls, rejected, words
