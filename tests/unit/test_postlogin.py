"""--verify/--replace parsing and the run-as / HERMES_HOME prefix, run by a real shell."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tunnelauth.postlogin import entry_numbers, pool_name, removal_plan, status_says_logged_in
from tunnelauth.remote import remote_command
from tunnelauth.settings import Settings, SSHTarget

LISTING = """\
xai-oauth (3 credentials):
  #1  xai-oauth-oauth-1  oauth
  #2  xai-oauth-oauth-2  oauth
  #3  xai-oauth-oauth-3  oauth
"""


def test_entries_are_removed_newest_kept_highest_first() -> None:
    assert entry_numbers(LISTING) == [1, 2, 3]
    assert removal_plan([1, 2, 3]) == ([2, 1], 3)
    assert removal_plan([1]) == ([], 1)
    assert removal_plan([]) == ([], None)


def test_status_line_is_read_strictly() -> None:
    assert status_says_logged_in("spotify: logged in\n")
    assert not status_says_logged_in("spotify: logged out\n")
    assert not status_says_logged_in("spotify: not logged in\n")
    assert not status_says_logged_in("")


def test_pool_is_known_only_for_auth_add() -> None:
    def settings(*args: str) -> Settings:
        return Settings(target=SSHTarget("h"), program="hermes", args=args)

    assert pool_name(settings("auth", "add", "xai-oauth", "--no-browser")) == "xai-oauth"
    assert pool_name(settings("-p", "work", "auth", "add", "nous")) == "nous"
    assert pool_name(settings("auth", "spotify", "login")) is None
    assert pool_name(settings("mcp", "login", "linear")) is None


def test_hermes_home_prefix_expands_tilde_for_the_remote_user(tmp_path: Path) -> None:
    command = remote_command("sh", ["-c", 'echo "$HERMES_HOME"'], hermes_home="~/store")
    out = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=10,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.strip() == f"{tmp_path}/store"


def test_run_as_uses_sudo_without_prompting_unless_interactive() -> None:
    carried = 'env "SSH_CLIENT=$SSH_CLIENT" "SSH_CONNECTION=$SSH_CONNECTION" "SSH_TTY=$SSH_TTY" '
    batch = remote_command("hermes", ["--version"], run_as="agent")
    assert batch.startswith(f"exec sudo -n -u agent -i -- {carried}sh -c ")
    tty = remote_command("hermes", ["--version"], run_as="agent", interactive=True)
    assert tty.startswith(f"exec sudo -u agent -i -- {carried}sh -c ")
