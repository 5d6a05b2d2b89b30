"""The asyncssh transport's ssh config: which files it reads, the overrides, a connection's options.

The command line's ``-o``/``-i`` go into a private config file read before the user's (ssh's
first value wins), removed when the connection closes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunnelauth import tempdirs
from tunnelauth.errors import UsageError
from tunnelauth.settings import SSHTarget


def config_paths(target: SSHTarget, tempdir: str | None) -> list[str]:
    """``--ssh-config`` alone (like ``ssh -F``), else ~/.ssh/config; overrides (in ``tempdir``)
    come first."""
    paths: list[str] = []
    if tempdir is not None:
        paths.append(os.path.join(tempdir, "overrides"))
    if target.ssh_config is not None:
        paths.append(str(target.ssh_config))
    else:
        default = Path("~/.ssh/config").expanduser()
        if os.access(default, os.R_OK):
            paths.append(str(default))
    return paths


def write_overrides(target: SSHTarget) -> str | None:
    """``-o`` options and ``-i`` keys as a config file in a new private directory (returned;
    None when there are none)."""
    lines = []
    for option in target.options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid ssh option {option!r} (expected Key=Value)")
        lines.append(f"{key.strip()} {value.strip()}")
    for identity in target.identity:
        # IdentityFile is %-expanded and shell-split by the config reader.
        lines.append(f"IdentityFile {shlex.quote(str(identity).replace('%', '%%'))}")
    if not lines:
        return None
    tempdir = tempdirs.make()
    path = os.path.join(tempdir, "overrides")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return tempdir


def remove_overrides(tempdir: str) -> None:
    """Remove the overrides file and its directory."""
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(tempdir, "overrides"))
        os.rmdir(tempdir)


def connection_options(
    paths: list[str],
    host: str,
    port: int | None,
    user: str | None,
    keepalive_interval: float,
    passphrase: Callable[[str], str | None] | None,
) -> dict[str, Any]:
    """asyncssh's options for one connection (``passphrase``: None in batch runs)."""
    kwargs: dict[str, Any] = {
        "config": paths,
        "host": host,
        "port": port if port is not None else (),
        "username": user if user is not None else (),
        "keepalive_interval": keepalive_interval,
        "keepalive_count_max": 3,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "connect_timeout": None,  # our own deadline pauses while the user types
        # OpenSSH has no X.509 host authentication; asyncssh's default would also look in
        # ~/.ssh/crt and fail outright where ~/.ssh cannot be read (ssh skips it).
        "x509_trusted_certs": None,
        "x509_trusted_cert_paths": None,
    }
    if passphrase is not None:
        kwargs["passphrase"] = passphrase
        kwargs["ignore_encrypted"] = False
    return kwargs
