"""Real logins by remote users whose login shell is bash, dash, zsh or fish.

sshd hands every command to the user's login shell, so each of tunnelauth's command lines
(the login, the relay, the ``--as`` wrapper) must read the same under all four. The fake
hermes looks at every process's command line while the callback reaches it: the code may be
on none of them, on the laptop or on the remote.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed import wait_for
from tests.bed.netbed import Bed
from tests.bed.shells import SHELL_LETTERS, LoginShells, ShellUser, build
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus

SHELLS = list(SHELL_LETTERS)


@pytest.fixture(scope="module")
def login_shells(bed: Bed) -> Iterator[LoginShells]:
    made = build(bed)
    yield made
    made.close()


def _free_port() -> int:
    """A laptop port below the ephemeral range that nothing holds now.

    Other beds on this machine log in to Spotify on its fixed port 43827: a late browser
    redirect from one of their runs must never reach these logins.
    """
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@pytest.fixture
def shells(login_shells: LoginShells, fresh: Bed) -> Iterator[LoginShells]:
    """Clean records for every shell user; afterwards, none of them may run anything."""
    port = _free_port()
    for user in login_shells.users.values():
        user.reset()
        user.set_fake(
            spotify_client_id="tunnelauth-test-client", spotify_port=port, watch_cmdlines=True
        )
    yield login_shells
    for user in login_shells.users.values():
        wait_for(
            lambda user=user: not login_shells.processes(user) or None,
            timeout=10,
            what=f"{user.name}'s remote processes to end",
        )


def _assert_logged_in(bed: Bed, user: ShellUser) -> None:
    record = user.fake_record("spotify")
    assert record is not None, f"no login ran as {user.name}"
    issued = bed.provider_issued()
    assert issued and record["code"] == issued[-1]["code"] and record["state_ok"]
    assert record["exchanged"] and record["outcome"] == "ok"
    assert record["requests"] == ["/spotify/callback"]
    assert record["cmdline_leaks"] == [], "a command line held the code while it was carried"


@pytest.mark.parametrize("shell", SHELLS)
def test_relay_through_each_login_shell(
    shells: LoginShells, tmp_path: Path, shell: str, backend: str
) -> None:
    user = shells.users[shell]
    result = tunnelauth(
        shells.bed, "spotify", "remote-nofwd", "-l", user.name, tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.OK, result
    assert "relaying the callback" in result.stderr
    assert "Spotify authorization received" in result.dom
    _assert_logged_in(shells.bed, user)


@pytest.mark.parametrize("shell", SHELLS)
def test_forwarded_login_through_each_login_shell(
    shells: LoginShells, tmp_path: Path, shell: str
) -> None:
    user = shells.users[shell]
    result = tunnelauth(shells.bed, "spotify", "remote", "-l", user.name, tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    assert "over a direct SSH channel" in result.stderr
    _assert_logged_in(shells.bed, user)


@pytest.mark.parametrize("shell", SHELLS)
def test_as_another_user_from_and_to_each_login_shell(
    shells: LoginShells, tmp_path: Path, shell: str
) -> None:
    """``--as``: the SSH user's shell runs sudo, the target's shell runs what sudo -i passes."""
    user = shells.users[shell]
    target = shells.users[SHELLS[(SHELLS.index(shell) + 1) % len(SHELLS)]]
    result = tunnelauth(
        shells.bed,
        "spotify",
        "remote-nofwd",
        "-l",
        user.name,
        "--as",
        target.name,
        tmp=tmp_path,
    )
    assert result.code == ExitStatus.OK, result
    assert "relaying the callback" in result.stderr
    assert user.fake_record("spotify") is None, "the login ran as the SSH user"
    _assert_logged_in(shells.bed, target)
