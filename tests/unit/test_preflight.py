"""Mistakes on the command line or in the config file stop the run before the first packet.

Each case runs the real CLI in a subprocess whose PATH holds a fake ``ssh`` that records any
start, aimed at a loopback socket that records any TCP connection: the run must exit 2 with one
clear first line, having started no ssh and connected nowhere, on every backend.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

DEADLINE = 60.0
BACKENDS = ("openssh", "asyncssh", "paramiko")


class Trap(NamedTuple):
    """A loopback port nobody should connect to, and a fake ssh that records its starts."""

    port: int
    listener: socket.socket
    bin_dir: Path
    marker: Path
    home: Path

    def connected(self) -> bool:
        self.listener.setblocking(False)
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def trap(tmp_path: Path) -> Iterator[Trap]:
    listener = socket.create_server(("127.0.0.1", 0))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ssh-started"
    fake = bin_dir / "ssh"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 255\n')
    fake.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    yield Trap(listener.getsockname()[1], listener, bin_dir, marker, home)
    listener.close()


def run_cli(trap: Trap, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        "PATH": f"{trap.bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(trap.home),
        "LANG": "C.UTF-8",
        "CI": "1",
        "TUNNELAUTH_CONFIG": os.devnull,
        **env,
    }
    if "TUNNELAUTH_CONFIG" in env and not env["TUNNELAUTH_CONFIG"]:
        del clean["TUNNELAUTH_CONFIG"]
    return subprocess.run(
        [sys.executable, "-m", "tunnelauth", *args],
        capture_output=True,
        text=True,
        env=clean,
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )


def assert_refused_before_connecting(
    trap: Trap, out: subprocess.CompletedProcess[str], first_line: str
) -> None:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines, "no message"
    assert first_line in lines[0], lines
    assert "Traceback" not in out.stderr
    assert not trap.marker.exists(), f"ssh was started: {trap.marker.read_text()}"
    assert not trap.connected(), "a TCP connection was made"


CASES = {
    "timeout zero": (["--timeout", "0"], "--timeout must be more than 0 seconds, not 0"),
    "timeout negative": (["--timeout", "-5"], "--timeout must be more than 0 seconds, not -5"),
    "connect timeout negative": (
        ["--connect-timeout", "-1"],
        "--connect-timeout must be more than 0 seconds, not -1",
    ),
    "port too big": (["-p", "99999"], "the SSH port must be from 1 to 65535, not 99999"),
    "browser cmd unparsable": (
        ["--browser-cmd", 'x "unterminated'],
        "cannot parse --browser-cmd",
    ),
    "browser cmd without program": (
        ["--browser-cmd", "{url}"],
        "--browser-cmd must start with a program",
    ),
    "browser cmd missing program": (
        ["--browser-cmd", "no-such-browser-here {url}"],
        "--browser-cmd names 'no-such-browser-here', which is not an executable program",
    ),
    "browser cmd empty": (["--browser-cmd", ""], "--browser-cmd is empty"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_exits_2_before_connecting(trap: Trap, case: str, backend: str) -> None:
    extra, first_line = CASES[case]
    # -p of the trap comes first, so a later -p 99999 is the value in force.
    args = ["xai", "127.0.0.1", "-p", str(trap.port), "--backend", backend, *extra]
    assert_refused_before_connecting(trap, run_cli(trap, args), first_line)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_values_in_the_config_file_exit_2_before_connecting(trap: Trap, backend: str) -> None:
    config = trap.home / "config.toml"
    for body, first_line in (
        ("timeout = -3", "--timeout must be more than 0 seconds, not -3"),
        ("port = 99999", "the SSH port must be from 1 to 65535, not 99999"),
        ("connect_timeout = 0", "--connect-timeout must be more than 0 seconds"),
    ):
        config.write_text(f'[hosts."127.0.0.1"]\n{body}\n')
        args = ["xai", "127.0.0.1", "--backend", backend, "--config", str(config)]
        out = run_cli(trap, args)
        assert_refused_before_connecting(trap, out, first_line)
        assert str(config) in out.stderr.splitlines()[0]


def test_a_missing_config_file_named_by_flag_or_environment_exits_2(trap: Trap) -> None:
    missing = trap.home / "nope.toml"
    out = run_cli(trap, ["xai", "127.0.0.1", "-p", str(trap.port), "--config", str(missing)])
    assert_refused_before_connecting(trap, out, f"config file {missing} not found (--config)")
    out = run_cli(trap, ["xai", "127.0.0.1", "-p", str(trap.port)], TUNNELAUTH_CONFIG=str(missing))
    assert_refused_before_connecting(
        trap, out, f"config file {missing} not found ($TUNNELAUTH_CONFIG)"
    )


def test_run_without_the_separator_says_where_the_command_goes(trap: Trap) -> None:
    out = run_cli(trap, ["run", "127.0.0.1", "-p", str(trap.port), "echo", "hi"])
    assert_refused_before_connecting(
        trap, out, "put the command after --: tunnelauth run 127.0.0.1 -- echo hi"
    )


def test_a_missing_identity_file_is_a_warning_and_the_run_goes_on(trap: Trap) -> None:
    key = trap.home / "no-such-key"
    out = run_cli(
        trap,
        ["xai", "127.0.0.1", "-p", str(trap.port), "--backend", "paramiko", "-i", str(key)],
        TUNNELAUTH_CONFIG="",
    )
    assert f"identity file {key} not found; going on without it" in out.stderr
    # It went on: the connection was attempted (the trap accepts, then the handshake fails).
    assert trap.connected()
    assert out.returncode == 3, out.stderr


def test_config_show_without_a_host_shows_the_global_settings(trap: Trap) -> None:
    out = run_cli(trap, ["config", "show"])
    assert out.returncode == 0, out.stderr
    assert "no host given" in out.stdout
    assert "connect_timeout" in out.stdout
