"""``user@host`` destinations are read as ssh reads them, by every backend."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tunnelauth.settings import SSHTarget

CASES = [
    ("host", None),
    ("host", "alice"),
    ("bob@host", None),
    ("bob@host", "alice"),
    ("bob@corp@host", None),
]


def _ssh_reads(host: str, login: str | None) -> tuple[str, str]:
    """The user and host name ``ssh -G`` resolves for ``[-l LOGIN] HOST`` with no config."""
    ssh = shutil.which("ssh")
    assert ssh, "the OpenSSH client is part of the test environment"
    argv = [ssh, "-G", "-F", "/dev/null", *(["-l", login] if login else []), "--", host]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    values = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    return values["user"], values["hostname"]


@pytest.mark.parametrize(("host", "login"), CASES)
def test_destination_split_matches_ssh(host: str, login: str | None) -> None:
    user, name = SSHTarget(host=host, login=login).user_and_host()
    ssh_user, ssh_host = _ssh_reads(host, login)
    assert name == ssh_host
    if user is not None:  # None: the config (or the local user) decides, as for ssh
        assert user == ssh_user
    else:
        assert "@" not in host and login is None
