"""known_hosts judged as OpenSSH judges it, for the library backends (asyncssh and paramiko).

The rules are those of OpenSSH's hostfile.c and sshconnect.c: the host is looked up under one
name, ``HostKeyAlias`` if set, else the host name (``[host]:port`` for a port other than 22),
lowercased. A line applies when its host field matches that name: a hashed ``|1|salt|hash``
field, or a comma list of patterns where ``*`` and ``?`` are the only wildcards, patterns are
lowercased and any matching ``!pattern`` excludes the line. No address ranges, no IP address
lookups (ssh's ``CheckHostIP`` has been off by default since 8.5). Among the lines that apply,
a ``@revoked`` key is refused, a listed key is known, any other plain key listed makes the
offered key a changed one, and ``@cert-authority`` lines count only for host certificates.
A port other than 22 with nothing listed under ``[host]:port`` falls back to the bare host
name, where only a listed, unrevoked key counts (a different key there is not a change).

asyncssh's own known_hosts matcher is not used for the verdict: it also matches the peer's IP
address, falls back to the bare name for every verdict, reads ``10.0.0.0/8`` as an address
range and compares plain names case-sensitively, and each of these accepts keys ssh refuses.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tunnelauth import hostkeys

CA_MARKER = "@cert-authority"
REVOKED_MARKER = "@revoked"
_HASH_MAGIC = "|1|"
_SEPARATORS = " \t"  # ssh splits known_hosts fields on these two only
DEFAULT_USER_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
SYSTEM_CONFIG = "/etc/ssh/ssh_config"


class Verdict(enum.Enum):
    """What known_hosts says about an offered key."""

    KNOWN = "known"
    UNKNOWN = "unknown-host"
    CHANGED = "changed-key"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Entry:
    """One known_hosts line; its key is decoded only if the line applies (as ssh does)."""

    marker: str  # "", CA_MARKER or REVOKED_MARKER
    hosts: str  # the host field as written
    key_type: str
    data: str  # the base64 key

    @functools.cached_property
    def blob(self) -> bytes | None:
        """The key in SSH wire form, or None when ssh could not read it (it skips the line)."""
        return _blob(self.key_type, self.data)


def blob_type(blob: bytes) -> str:
    """The key type a wire-form key names first."""
    size = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + size].decode("ascii", "replace")


def openssh(blob: bytes) -> str:
    """A wire-form key as ``type base64``."""
    return f"{blob_type(blob)} {base64.b64encode(blob).decode()}"


def _fields(line: str) -> list[str]:
    """Fields split on spaces and tabs (ssh's separators), empty ones dropped."""
    return [field for field in re.split(f"[{_SEPARATORS}]+", line) if field]


def _blob(key_type: str, text: str) -> bytes | None:
    """The key's wire form, or None when it is not a key of ``key_type`` (ssh skips the line)."""
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    parts = _strings(blob)
    # A key is its type and at least one more field, nothing left over (ssh's parser refuses
    # a truncated or padded key, and then skips the line).
    if parts is None or len(parts) < 2 or parts[0] != key_type.encode():
        return None
    return blob


def _strings(blob: bytes) -> list[bytes] | None:
    """The SSH strings a wire-form key is made of, or None if it does not split into them."""
    parts, offset = [], 0
    while offset < len(blob):
        size = int.from_bytes(blob[offset : offset + 4], "big")
        if offset + 4 + size > len(blob):
            return None
        parts.append(blob[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return parts


def parse(text: str) -> list[Entry]:
    """The lines ssh uses (comments, bad markers and truncated lines are skipped as in ssh)."""
    entries = []
    for raw in text.split("\n"):
        fields = _fields(raw)
        if not fields or fields[0].startswith("#"):
            continue
        marker = ""
        if fields[0].startswith("@"):
            marker = fields.pop(0)
            if marker not in (CA_MARKER, REVOKED_MARKER):
                continue
        if len(fields) < 3:
            continue
        entries.append(Entry(marker, *fields[:3]))
    return entries


def read(paths: Iterable[str]) -> list[Entry]:
    """Every entry of the files in order; a missing or unreadable file adds none (as in ssh)."""
    entries: list[Entry] = []
    for path in paths:
        try:
            with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as fh:
                entries += parse(fh.read())
        except OSError:
            continue
    return entries


def lookup_name(hostname: str, port: int | None, alias: str | None = None) -> str:
    """The name ssh looks the host up under: the alias, else ``host`` or ``[host]:port``."""
    if alias:
        return alias.lower()
    host = hostname.lower()
    return host if port in (None, 0, 22) else f"[{host}]:{port}"


def _match(pattern: str, name: str) -> bool:
    """One ssh pattern, lowercased: ``*`` and ``?`` are the only wildcards."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name
    return _wildcard(pattern.lower()).fullmatch(name) is not None


@functools.lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """A wildcard pattern as a regular expression (brackets and the rest are literal)."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.S)


def _hashed(salt_and_hash: str, name: str) -> bool:
    """Whether a ``|1|salt|hash`` field is the HMAC-SHA1 of ``name``."""
    salt_text, sep, digest_text = salt_and_hash.partition("|")
    try:
        salt = base64.b64decode(salt_text, validate=True)
        digest = base64.b64decode(digest_text, validate=True)
    except (binascii.Error, ValueError):
        return False
    if not sep or len(salt) != hashlib.sha1().digest_size:
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def host_matches(hosts: str, name: str) -> bool:
    """Whether a known_hosts host field applies to ``name`` (already lowercased)."""
    if hosts.startswith("|"):
        return hosts.startswith(_HASH_MAGIC) and _hashed(hosts[len(_HASH_MAGIC) :], name)
    positive = False
    for pattern in hosts.split(","):
        negated = pattern.startswith("!")
        if _match(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            positive = True
    return positive


@dataclass(frozen=True)
class HostKeys:
    """What known_hosts lists for one host, and the verdict on any key it offers."""

    name: str  # the name the host is looked up (and recorded) under
    keys: tuple[bytes, ...] = ()  # plain keys listed under the name
    authorities: tuple[bytes, ...] = ()  # @cert-authority keys (for host certificates only)
    revoked: tuple[bytes, ...] = ()
    bare_keys: tuple[bytes, ...] = ()  # the bare host name's unrevoked keys (port fallback)

    def judge(self, blob: bytes) -> Verdict:
        """The verdict on an offered plain key, as ssh gives it."""
        if blob in self.revoked:
            return Verdict.REVOKED
        if blob in self.keys:
            return Verdict.KNOWN
        if self.keys:
            return Verdict.CHANGED
        return Verdict.KNOWN if blob in self.bare_keys else Verdict.UNKNOWN

    @property
    def trusted(self) -> tuple[bytes, ...]:
        """The keys known without asking: exactly those ``judge`` calls known, unless revoked."""
        return self.keys or self.bare_keys


def _applying(entries: Sequence[Entry], name: str) -> list[tuple[Entry, bytes]]:
    """The readable entries whose host field matches ``name``, with their keys."""
    return [
        (entry, entry.blob)
        for entry in entries
        if host_matches(entry.hosts, name) and entry.blob is not None
    ]


def for_host(
    entries: Sequence[Entry], hostname: str, port: int | None, alias: str | None = None
) -> HostKeys:
    """The keys known_hosts lists for a host reached as ``hostname:port`` (or ``alias``)."""
    name = lookup_name(hostname, port, alias)
    applying = _applying(entries, name)
    keys = tuple(blob for e, blob in applying if not e.marker)
    revoked = tuple(blob for e, blob in applying if e.marker == REVOKED_MARKER)
    authorities = tuple(blob for e, blob in applying if e.marker == CA_MARKER)
    bare: tuple[bytes, ...] = ()
    if not keys and name != lookup_name(hostname, None, alias):
        bare_entries = _applying(entries, lookup_name(hostname, None))
        bare_revoked = {blob for e, blob in bare_entries if e.marker == REVOKED_MARKER}
        bare = tuple(b for e, b in bare_entries if not e.marker and b not in bare_revoked)
        if not authorities:  # ssh falls back for certificates too
            authorities = tuple(blob for e, blob in bare_entries if e.marker == CA_MARKER)
    return HostKeys(name, keys, authorities, revoked, bare)


def load(
    user_files: Sequence[str] | None, global_files: Sequence[str] | None
) -> tuple[list[str], list[Entry]]:
    """(the user's files, every entry) with ssh's defaults; ``none`` names no file."""
    users = _files(DEFAULT_USER_FILES if user_files is None else user_files)
    system = _files(DEFAULT_GLOBAL_FILES if global_files is None else global_files)
    return users, read([*users, *system])


def _files(names: Sequence[str]) -> list[str]:
    return [os.path.expanduser(name) for name in names if name.lower() != "none"]


def wants_hashing(
    value: str | None, host: str, *, system: bool, system_config: str = SYSTEM_CONFIG
) -> bool:
    """HashKnownHosts from the user's config, else the system's (unless ``-F``); default no."""
    if value is None and system:
        value = hostkeys.config_value([system_config], host, "HashKnownHosts")
    return (value or "").strip().lower() in ("yes", "true")


def hashed_name(name: str, salt: bytes | None = None) -> str:
    """``|1|salt|hash`` for ``name``, as ssh writes it under HashKnownHosts yes."""
    salt = salt if salt is not None else os.urandom(hashlib.sha1().digest_size)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"{_HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def record(user_files: Sequence[str], name: str, key_line: str, *, hashed: bool) -> None:
    """Add an accepted key under ``name`` to the first UserKnownHostsFile, as ssh does."""
    if user_files:
        hostkeys.add_known_host(user_files[0], [hashed_name(name) if hashed else name], key_line)


def refusal(verdict: Verdict, alias: str, name: str, fingerprint: str) -> str:
    """Why the offered key was refused, with its fingerprint (one wording for every backend)."""
    why = {
        Verdict.CHANGED: "the host key changed: known_hosts lists another key for it",
        Verdict.REVOKED: "that key is marked @revoked in known_hosts",
        Verdict.UNKNOWN: f"known_hosts does not list it (as {name})",
        Verdict.KNOWN: "",
    }[verdict]
    return f"host key for {alias} could not be verified: the server offers {fingerprint}; {why}"
