"""The paramiko transport's authentication: keys (agent, files), keyboard-interactive, password.

Passphrases, codes and passwords are asked through the flow's Prompter (none in batch runs).
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import paramiko

from tunnelauth.errors import SSHError
from tunnelauth.transports.paramiko_config import Effective, unsupported
from tunnelauth.transports.prompts import CONFIRM, SECRET, Prompter
from tunnelauth.transports.sshargs import batch_prompt_refusal

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def key_type(path: Path) -> str:
    """The key type of a private key file, read from its ``.pub`` or its OpenSSH header."""
    pub = path.with_name(path.name + ".pub")
    with contextlib.suppress(OSError, IndexError):
        return pub.read_text(encoding="utf-8").split()[0]
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = path.read_text(encoding="utf-8")
        if "BEGIN OPENSSH PRIVATE KEY" in text:
            body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
            blob = base64.b64decode(body)
            # magic, cipher, kdf, kdf options, key count, then the public key whose first
            # field is its type: all unencrypted even in a passphrase-protected file.
            offset = len(b"openssh-key-v1\0")
            for _ in range(3):
                offset += 4 + int.from_bytes(blob[offset : offset + 4], "big")
            offset += 4 + 4  # key count, public key length
            size = int.from_bytes(blob[offset : offset + 4], "big")
            return blob[offset + 4 : offset + 4 + size].decode("ascii", "replace")
    return ""


# Each authentication method and the ssh config option that turns it off.
METHOD_OPTIONS = (
    ("publickey", "pubkeyauthentication"),
    ("keyboard-interactive", "kbdinteractiveauthentication"),
    ("password", "passwordauthentication"),
)


def config_allows(eff: Effective, option: str) -> bool:
    """Whether the config leaves an authentication method on (ssh's default: yes)."""
    return str(eff.looked.get(option, "yes")).strip().lower() not in ("no", "false")


def load_keys(eff: Effective, prompter: Prompter | None, *, agent: bool) -> list[Any]:
    """Agent keys (unless IdentitiesOnly), then IdentityFile keys (or the default files).

    ``agent``: the environment names an agent's socket (paramiko connects to it). An
    encrypted key's passphrase is asked through ``prompter`` (none in batch runs).
    """
    keys: list[Any] = []
    only = str(eff.looked.get("identitiesonly", "no")).lower() == "yes"
    if not only and agent:
        with contextlib.suppress(paramiko.SSHException, OSError):
            keys += list(paramiko.Agent().get_keys())
    files = eff.files("identityfile", [f"~/.ssh/{name}" for name in DEFAULT_KEYS])
    for name in files:
        path = Path(name)
        if not os.path.isfile(path):
            continue
        if key_type(path).startswith("sk-"):
            unsupported(f"FIDO security-key (sk-) keys ({path})")
        try:
            keys.append(paramiko.PKey.from_path(path))
        except (paramiko.PasswordRequiredException, TypeError):
            # TypeError: paramiko 3.2+ reads OpenSSH-format keys through cryptography, which
            # says "password-protected" that way.
            secret = None
            if prompter is not None:
                secret = prompter.ask_blocking(f"Enter passphrase for key '{path}': ")
            if secret is not None:  # a wrong passphrase skips the key, as ssh does at the end
                with contextlib.suppress(paramiko.SSHException, ValueError):
                    # bytes, whatever the annotation says: cryptography refuses a str here
                    keys.append(paramiko.PKey.from_path(path, secret.encode()))  # type: ignore[arg-type]
        except (paramiko.SSHException, OSError, ValueError):
            continue  # a file paramiko cannot read is skipped, as ssh skips unusable keys
    return keys


def ask_all(
    prompter: Prompter, title: str, instructions: str, prompts: Sequence[tuple[str, bool]]
) -> list[str]:
    """keyboard-interactive: ask each prompt (a question left unanswered ends the method)."""
    answers = []
    intro = "\n".join(part for part in (title, instructions) if part)
    for prompt, echo in prompts:
        text = f"{intro}\n{prompt}" if intro else prompt
        intro = ""
        answer = prompter.ask_blocking(text, CONFIRM if echo else SECRET)
        if answer is None:
            raise paramiko.AuthenticationException("keyboard-interactive question unanswered")
        answers.append(answer)
    return answers


def authenticate(
    conn: Any, eff: Effective, prompter: Prompter, *, batch: bool, agent: bool
) -> None:
    """Blocking: keys (agent, files), then keyboard-interactive/password if the server allows.

    Keys go first and "none" only after they failed: paramiko re-requests the userauth
    service for every attempt, which OpenSSH accepts but stricter servers answer with a
    disconnect, so the usual case should need one attempt only. Where the config turns
    keys off, the first attempt is already the prompt the config allows.
    """
    enabled = [m for m, option in METHOD_OPTIONS if config_allows(eff, option)]
    keys_allowed = "publickey" in enabled
    keys = load_keys(eff, None if batch else prompter, agent=agent) if keys_allowed else []
    for key in keys:
        try:
            if not conn.auth_publickey(eff.user, key):
                return
        except paramiko.BadAuthenticationType:
            break  # the server takes no keys at all
        except paramiko.AuthenticationException:
            if not conn.is_active():
                break
    allowed = allowed_methods(conn, eff) if keys_allowed else enabled
    others = [m for m in ("keyboard-interactive", "password") if m in allowed and m in enabled]
    if others and batch:
        message, hint = batch_prompt_refusal(eff.alias, others)
        raise SSHError(message, host=eff.alias, hint=hint)
    with contextlib.suppress(paramiko.AuthenticationException):
        if "keyboard-interactive" in others and not conn.auth_interactive(
            eff.user, partial(ask_all, prompter)
        ):
            return
        if "password" in others:
            secret = prompter.ask_blocking(f"{eff.user}@{eff.alias}'s password: ")
            if secret is not None and not conn.auth_password(eff.user, secret):
                return
    listed = f" (the server allows: {', '.join(allowed)})" if allowed else ""
    raise SSHError(
        f"SSH authentication to {eff.alias} failed{listed}",
        host=eff.alias,
        hint="check `ssh HOST true` works with the same options",
    )


def allowed_methods(conn: Any, eff: Effective) -> list[str]:
    """The methods the server still allows (asked with "none"; empty if it hung up)."""
    if not conn.is_active():
        return []
    try:
        conn.auth_none(eff.user)
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except (paramiko.SSHException, OSError, EOFError):
        return []
    return []
