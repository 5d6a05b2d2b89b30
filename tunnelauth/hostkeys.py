"""Unknown host keys for the library backends, decided like ssh's StrictHostKeyChecking.

A changed key is always refused (the caller shows its fingerprint). An unknown key follows the
user's policy: ``yes`` refuses, ``accept-new`` (or ``--accept-new``) adds it to known_hosts,
``ask`` (ssh's default) asks on the terminal like ssh does and refuses in batch runs. ``no`` is
treated as ``accept-new``: tunnelauth adds a new key but never accepts a changed one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

POLICIES = ("yes", "accept-new", "ask")
_ANSWER_LIMIT = 200


def normalize_policy(value: str | None, *, accept_new: bool) -> str:
    """The effective policy: ``--accept-new`` wins, then the config's value, else ``ask``."""
    if accept_new:
        return "accept-new"
    word = (value or "ask").strip().lower()
    if word in ("yes", "true"):
        return "yes"
    if word in ("accept-new", "no", "off", "false"):
        return "accept-new"
    return "ask"


def option_value(options: Sequence[str], name: str) -> str | None:
    """The value of ``name`` among ``-o Key=Value`` options (first one wins, like ssh)."""
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            key, _, value = option.partition(" ")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def config_value(paths: Sequence[str], host: str, key: str) -> str | None:
    """An option's value for ``host`` in the ssh config files (first file that sets it wins)."""
    import paramiko

    for path in paths:
        with contextlib.suppress(OSError, paramiko.SSHException, ValueError):
            value = paramiko.SSHConfig.from_path(path).lookup(host).get(key.lower())
            if value:
                return str(value)
    return None


def config_policy(paths: Sequence[str], host: str) -> str | None:
    """StrictHostKeyChecking for ``host`` in the ssh config files."""
    return config_value(paths, host, "StrictHostKeyChecking")


def never_asks(value: str | None) -> bool:
    """Whether a config's BatchMode forbids questions (ssh then refuses an unknown key)."""
    return (value or "").strip().lower() in ("yes", "true")


# Asked again after an answer that is neither yes, no nor the fingerprint.
RETRY_QUESTION = "Please type 'yes', 'no' or the fingerprint: "


def question(host: str, key_type: str, fingerprint: str) -> str:
    """The question ssh asks about an unknown host key."""
    return (
        f"The authenticity of host '{host}' can't be established.\n"
        f"{key_type} key fingerprint is {fingerprint}.\n"
        "This key is not known by any other names.\n"
        "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    )


def answer_accepts(answer: str, fingerprint: str) -> bool | None:
    """``yes`` or the fingerprint accepts, ``no`` refuses, anything else asks again (None)."""
    word = answer.strip()
    if word.lower() == "yes" or word == fingerprint:
        return True
    if word.lower() == "no":
        return False
    return None


def ask_terminal(text: str, fingerprint: str, tty: str = "/dev/tty") -> bool:
    """Ask on the controlling terminal (never stdout: it may carry --json); False without one."""
    try:
        fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    try:
        os.write(fd, text.encode())
        while True:
            line = _read_line(fd)
            if line is None:
                return False
            verdict = answer_accepts(line, fingerprint)
            if verdict is not None:
                return verdict
            os.write(fd, RETRY_QUESTION.encode())
    finally:
        os.close(fd)


def _read_line(fd: int) -> str | None:
    """One line typed at the terminal (bounded), or None at end of input."""
    data = b""
    while not data.endswith(b"\n") and len(data) < _ANSWER_LIMIT:
        chunk = os.read(fd, 1)
        if not chunk:
            return data.decode("utf-8", "replace") if data else None
        data += chunk
    return data.decode("utf-8", "replace")


def decide(
    policy: str,
    *,
    batch: bool,
    host: str,
    key_type: str,
    fingerprint: str,
    ask: Callable[[str, str], bool] = ask_terminal,
) -> bool:
    """Whether to accept an unknown (never a changed) host key under ``policy``."""
    if policy == "accept-new":
        return True
    if policy == "yes" or batch:
        return False
    return ask(question(host, key_type, fingerprint), fingerprint)


def add_known_host(path: str, names: Sequence[str], key_line: str) -> None:
    """Append ``names key_line`` to the user's known_hosts (created 0600, dir 0700)."""
    file = Path(os.path.expanduser(path))
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8") as out:
        out.write(f"{','.join(names)} {key_line.strip()}\n")
