"""The remote wrapper command, run for real by local shells with a fake HOME."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunnelauth.providers import hermes_args
from tunnelauth.remote import (
    NO_BASE64_MARKER,
    NO_TTY_MARKER,
    NO_TTY_STATUS,
    NOT_DECODED_MARKER,
    NOT_DECODED_STATUS,
    NOT_FOUND_MARKER,
    remote_command,
    settings_command,
)
from tunnelauth.settings import Settings, SSHTarget

# The remote login shell runs the command line: every one a user may have must read it alike.
SHELLS = [s for s in ("sh", "bash", "dash", "zsh", "fish") if shutil.which(s)]
# Words that end a single-quoted string early, or change inside one, under fish.
BACKSLASHES = ["tail\\", "\\'", "a\\\\b", "'\\", "\\n"]

ECHO_ARGV = """#!/usr/bin/env python3
import json, os, sys
out = os.environ["ARGV_OUT"]
with open(out, "w") as fh:
    json.dump({"argv": sys.argv[1:], "unbuffered": os.environ.get("PYTHONUNBUFFERED")}, fh)
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake remote home with a program in ~/.local/bin only (not on PATH)."""
    bindir = tmp_path / "home" / ".local" / "bin"
    bindir.mkdir(parents=True)
    prog = bindir / "hermes"
    prog.write_text(ECHO_ARGV)
    prog.chmod(0o755)
    return tmp_path / "home"


def _run(shell: str, command: str, home: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv.json")}
    return subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=20, check=False
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_finds_hermes_outside_path_and_passes_arguments_verbatim(
    shell: str, home: Path, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    nasty = [f"$(touch {canary})", f"; touch {canary}", 'it\'s "quoted"', "a b", "`id`", ""]
    nasty += [*BACKSLASHES, "~", "=sh", "%self", "{a,b}", "*", "#x", "$HOME"]
    result = _run(shell, remote_command("hermes", ["mcp", "login", *nasty]), home, tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "argv.json").read_text())
    assert data["argv"] == ["mcp", "login", *nasty]
    assert data["unbuffered"] == "1"
    assert not canary.exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_tilde_path_is_expanded_on_the_remote(shell: str, home: Path, tmp_path: Path) -> None:
    result = _run(shell, remote_command("~/.local/bin/hermes", ["--version"]), home, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "argv.json").read_text())["argv"] == ["--version"]


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_program_prints_marker_and_exits_127(
    shell: str, home: Path, tmp_path: Path
) -> None:
    result = _run(shell, remote_command("nosuchcli", ["login"]), home, tmp_path)
    assert result.returncode == 127
    assert f"{NOT_FOUND_MARKER} nosuchcli" in result.stdout


def test_program_with_a_slash_must_be_executable(home: Path, tmp_path: Path) -> None:
    result = _run("sh", remote_command("/nonexistent/hermes", []), home, tmp_path)
    assert result.returncode == 127
    assert NOT_FOUND_MARKER in result.stdout


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(ValueError):
        remote_command("hermes", ["a\0b"])


def test_profile_and_server_names_reach_hermes_as_arguments(home: Path, tmp_path: Path) -> None:
    args = hermes_args("mcp", name="linear", profile="work")
    result = _run("sh", remote_command("hermes", args), home, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "argv.json").read_text())["argv"] == [
        "-p",
        "work",
        "mcp",
        "login",
        "linear",
    ]


# Stands in for `sudo -u USER -i -- CMD...` as far as the command line goes (the real sudo is
# exercised on the bed): every character of CMD but letters, digits, `_`, `-` and `$` gets a
# backslash, and the words joined with spaces run under the target's login shell with `-c`.
SUDO_I = """#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
words = args[args.index("--") + 1:]
assert "-i" in args[:args.index("--")]
escaped = ["".join(c if c.isalnum() or c in "_-$" else "\\\\" + c for c in w) for w in words]
shell = os.environ["LOGIN_SHELL"]
os.execv(shell, [shell, "-c", " ".join(escaped)])
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_as_another_user_the_command_survives_sudo_i_quoting(
    shell: str, home: Path, tmp_path: Path
) -> None:
    """Newlines, quotes and `$` reach hermes as typed; nothing is expanded by the login shell."""
    standin = tmp_path / "sbin"
    standin.mkdir()
    (standin / "sudo").write_text(SUDO_I)
    (standin / "sudo").chmod(0o755)
    canary = tmp_path / "canary"
    nasty = [f"$(touch {canary})", "$HOME", "a\nb", 'it\'s "quoted"', "`id`", "\\x", *BACKSLASHES]
    command = remote_command(
        "hermes", ["auth", *nasty], run_as="svc", hermes_home="~/.hermes-svc", interactive=True
    )
    assert command.startswith("exec sudo -u svc -i -- env ")
    env = {
        "HOME": str(home),
        "PATH": f"{standin}:/usr/bin:/bin",
        "ARGV_OUT": str(tmp_path / "argv.json"),
        "LOGIN_SHELL": shutil.which(shell) or shell,
        "SSH_CLIENT": "10.0.0.1 50000 22",
    }
    show_env = ECHO_ARGV.replace(
        '"unbuffered"',
        '"hermes_home": os.environ.get("HERMES_HOME"), '
        '"ssh_client": os.environ.get("SSH_CLIENT"), "unbuffered"',
    )
    (home / ".local" / "bin" / "hermes").write_text(show_env)
    result = subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "argv.json").read_text())
    assert data["argv"] == ["auth", *nasty]
    assert data["hermes_home"] == f"{home}/.hermes-svc"
    assert data["ssh_client"] == "10.0.0.1 50000 22"
    assert not canary.exists()


def _run_on_a_terminal(command: str, home: Path, tmp_path: Path) -> int:
    """``sh -c command`` with a pseudo-terminal as stdin/stdout/stderr; its exit status."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv.json")}
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            ["sh", "-c", command], stdin=terminal, stdout=terminal, stderr=terminal, env=env
        )
        os.close(terminal)
        terminal = -1
        while True:  # drain the terminal so the child never blocks on a full buffer
            try:
                if not os.read(controller, 4096):
                    break
            except OSError:  # EIO: the child closed its side
                break
        return proc.wait(timeout=20)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


def test_a_login_without_a_terminal_starts_nothing(home: Path, tmp_path: Path) -> None:
    # The PTY is what ends the login with the connection: without one it must not start.
    command = remote_command("hermes", ["auth", "spotify", "login"], need_tty=True)
    result = _run("sh", command, home, tmp_path)
    assert result.returncode == NO_TTY_STATUS
    assert result.stdout.strip() == NO_TTY_MARKER
    assert not (tmp_path / "argv.json").exists(), "the login ran without a terminal"


def test_a_login_on_a_terminal_runs(home: Path, tmp_path: Path) -> None:
    command = remote_command("hermes", ["auth", "spotify", "login"], need_tty=True)
    assert _run_on_a_terminal(command, home, tmp_path) == 0
    argv = json.loads((tmp_path / "argv.json").read_text())["argv"]
    assert argv == ["auth", "spotify", "login"]


def test_commands_without_a_pty_need_no_terminal(home: Path, tmp_path: Path) -> None:
    # Short commands run over exec without a PTY (version checks, post-login steps).
    result = _run("sh", remote_command("hermes", ["--version"]), home, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "argv.json").read_text())["argv"] == ["--version"]


def _as_svc_without(
    shell: str, home: Path, tmp_path: Path, base64: str | None
) -> subprocess.CompletedProcess[str]:
    """``--as svc`` under the sudo stand-in on a PATH whose only base64 is ``base64``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # The stand-in's interpreter by its real path: a python3 found on PATH may be a shim.
    python = os.path.realpath(sys.executable)
    (bindir / "sudo").write_text(SUDO_I.replace("/usr/bin/env python3", python, 1))
    (bindir / "sudo").chmod(0o755)
    (bindir / "python3").symlink_to(python)  # hermes' stand-in runs with /usr/bin/env python3
    for tool in sorted({"env", "sh", "stty", shell}):
        found = shutil.which(tool)
        assert found is not None
        (bindir / tool).symlink_to(found)
    if base64 is not None:
        (bindir / "base64").write_text(base64)
        (bindir / "base64").chmod(0o755)
    command = remote_command("hermes", ["auth", "add", "nous"], run_as="svc", interactive=True)
    env = {
        "HOME": str(home),
        "PATH": str(bindir),  # no /usr/bin: the real base64 is out of reach
        "ARGV_OUT": str(tmp_path / "argv.json"),
        "LOGIN_SHELL": str(bindir / shell),
    }
    return subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=20, check=False
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_as_without_base64_says_so_instead_of_exiting_0(
    shell: str, home: Path, tmp_path: Path
) -> None:
    # Before: `eval ""` ran nothing and exited 0, and the run was reported as logged in.
    result = _as_svc_without(shell, home, tmp_path, base64=None)
    assert result.returncode == 127, result
    assert result.stdout.strip() == NO_BASE64_MARKER
    assert not (tmp_path / "argv.json").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_as_with_a_base64_that_decodes_nothing_says_so(
    shell: str, home: Path, tmp_path: Path
) -> None:
    # A base64 without -d (or a broken one) prints nothing and exits 0.
    result = _as_svc_without(shell, home, tmp_path, base64="#!/bin/sh\nexit 0\n")
    assert result.returncode == NOT_DECODED_STATUS, result
    assert result.stdout.strip() == NOT_DECODED_MARKER
    assert not (tmp_path / "argv.json").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_as_with_base64_runs_the_login_and_never_reaches_the_markers(
    shell: str, home: Path, tmp_path: Path
) -> None:
    real = shutil.which("base64")
    assert real is not None
    result = _as_svc_without(shell, home, tmp_path, base64=f'#!/bin/sh\nexec {real} "$@"\n')
    assert result.returncode == 0, result
    assert json.loads((tmp_path / "argv.json").read_text())["argv"] == ["auth", "add", "nous"]
    assert result.stdout == ""


def test_openrouter_runs_hermes_oauth_login(home: Path, tmp_path: Path) -> None:
    # hermes 0.21: `--type oauth` selects OpenRouter's OAuth login (its headless paste over SSH).
    result = _run("sh", remote_command("hermes", hermes_args("openrouter")), home, tmp_path)
    assert result.returncode == 0, result.stderr
    argv = json.loads((tmp_path / "argv.json").read_text())["argv"]
    assert argv == ["auth", "add", "openrouter", "--type", "oauth"]


# A remote CLI that opens its URL through Python's webbrowser, then runs $BROWSER itself as
# xdg-open does, records what each returned, and exits with the status it is given.
OPENS_A_BROWSER = """#!/usr/bin/env python3
import json, os, subprocess, sys, time, webbrowser
record = {"browser": os.environ.get("BROWSER")}
record["webbrowser"] = webbrowser.open("https://idp.test/authorize?client_id=a&state=1")
record["browser_env"] = subprocess.call([os.environ["BROWSER"], "https://idp.test/device"])
with open(os.environ["ARGV_OUT"], "w") as fh:
    json.dump(record, fh)
if sys.argv[1] == "hang":
    print("hanging", flush=True)
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def opener(home: Path) -> Path:
    """``~/.local/bin/opener``: the CLI above."""
    prog = home / ".local" / "bin" / "opener"
    prog.write_text(OPENS_A_BROWSER.replace("/usr/bin/env python3", sys.executable))
    prog.chmod(0o755)
    return prog


def _on_a_terminal_with_output(
    command: str, home: Path, tmp_path: Path, *, shell: str = "sh"
) -> tuple[int, str]:
    """``shell -c command`` with a pseudo-terminal as stdin/stdout/stderr: status, output."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv.json")}
    env["TMPDIR"] = str(tmp_path)
    controller, terminal = pty.openpty()
    out = b""
    try:
        proc = subprocess.Popen(
            [shell, "-c", command],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
        )
        os.close(terminal)
        terminal = -1
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=20), out.decode(errors="replace")
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


@pytest.mark.parametrize("shell", SHELLS)
def test_browser_helper_hands_the_url_to_the_terminal_and_says_it_opened(
    shell: str, home: Path, opener: Path, tmp_path: Path
) -> None:
    command = remote_command("opener", ["3"], need_tty=True, browser_helper=True)
    status, text = _on_a_terminal_with_output(command, home, tmp_path, shell=shell)
    assert status == 3, text  # the CLI's own status comes back
    assert "tunnelauth-browser: https://idp.test/authorize?client_id=a&state=1\r\n" in text
    assert "tunnelauth-browser: https://idp.test/device\r\n" in text
    record = json.loads((tmp_path / "argv.json").read_text())
    assert record["webbrowser"] is True and record["browser_env"] == 0  # "a browser opened"
    helper = Path(record["browser"])
    assert helper.parent.parent == tmp_path and helper.parent.name.startswith("tunnelauth-")
    assert not helper.parent.exists(), "the helper's directory outlived the login"


def test_browser_helper_directory_is_private_and_removed_at_hangup(
    home: Path, opener: Path, tmp_path: Path
) -> None:
    command = remote_command("opener", ["hang"], need_tty=True, browser_helper=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv.json")}
    env["TMPDIR"] = str(tmp_path)
    controller, terminal = pty.openpty()
    record = tmp_path / "argv.json"
    try:
        proc = subprocess.Popen(
            ["sh", "-c", command],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
            start_new_session=True,
        )
        out = b""
        deadline = time.monotonic() + 20
        while b"hanging" not in out:
            left = deadline - time.monotonic()
            assert select.select([controller], [], [], max(left, 0))[0], out
            out += os.read(controller, 4096)
        helper = Path(json.loads(record.read_text())["browser"])
        assert helper.parent.stat().st_mode & 0o777 == 0o700
        assert helper.stat().st_mode & 0o777 == 0o700
        os.killpg(proc.pid, signal.SIGHUP)  # what the session's end sends the login
        assert proc.wait(timeout=20) == 129
        assert not helper.parent.exists(), "the helper's directory outlived the hangup"
    finally:
        os.close(controller)
        os.close(terminal)


def test_browser_helper_only_for_run_logins() -> None:
    target = SSHTarget(host="remote")
    run_login = Settings(target=target, program="some-cli", args=())
    hermes_login = Settings(target=target, program="hermes", args=(), provider="spotify")
    assert "BROWSER=" in settings_command(run_login, [], pty=True)
    # hermes knows it runs over SSH and prints its URLs; exec commands never open a browser.
    assert "BROWSER=" not in settings_command(hermes_login, [], pty=True)
    assert "BROWSER=" not in settings_command(run_login, [], pty=False)
    assert "BROWSER=" not in settings_command(run_login, ["-c", "x"], program="sh", pty=True)


@pytest.mark.parametrize("shell", SHELLS)
def test_browser_helper_survives_sudo_i_for_another_user(
    shell: str, home: Path, opener: Path, tmp_path: Path
) -> None:
    standin = tmp_path / "sbin"
    standin.mkdir()
    (standin / "sudo").write_text(SUDO_I)
    (standin / "sudo").chmod(0o755)
    command = remote_command("opener", ["3"], run_as="svc", interactive=True, browser_helper=True)
    env = {
        "HOME": str(home),
        "PATH": f"{standin}:/usr/bin:/bin",
        "ARGV_OUT": str(tmp_path / "argv.json"),
        "LOGIN_SHELL": shutil.which(shell) or shell,
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 3, result.stderr
    # No terminal here: the helper falls back to stderr, which is the PTY in a real login.
    assert "tunnelauth-browser: https://idp.test/device\n" in result.stderr
    record = json.loads((tmp_path / "argv.json").read_text())
    assert record["webbrowser"] is True and record["browser_env"] == 0
    assert not Path(record["browser"]).parent.exists()
