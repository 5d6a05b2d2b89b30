"""The typer-free reading of login command lines agrees with typer's, or declines."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from tunnelauth import cli
from tunnelauth.cmdline import build_settings, parse_login
from tunnelauth.environment import Environment
from tunnelauth.hostset import single_host
from tunnelauth.transports.choice import choose
from tunnelauth.transports.headstart import plan


def typer_reading(argv: list[str]) -> tuple[str, dict[str, Any], list[str]]:
    """What the typer app hands the login of one host: the name, the options, the run command."""
    seen: list[tuple[str, dict[str, Any], list[str]]] = []

    def one_host(name: str, options: dict[str, Any], run_command: Sequence[str]) -> None:
        assert single_host(options)  # HOST... with one plain host: the single-host login
        seen.append((name, options, list(run_command)))

    assert cli.main(argv, login=one_host) == 0
    assert len(seen) == 1
    return seen[0]


AGREED = [
    ["spotify", "user@host"],
    ["xai", "host", "-J", "b1,b2", "--jump", "b3", "-p", "2222", "-l", "me"],
    ["--jump", "bastion", "-vv", "mcp", "linear", "remote", "-F", "cfg"],
    ["mcp", "linear"],
    ["nous", "--timeout=12.5", "--connect-timeout", "3", "host", "--batch", "--json"],
    ["spotify", "h", "-i", "~/k1", "--identity=k2", "-o", "Port=1", "-o", "User=x"],
    ["spotify", "h", "-v", "--verbose", "-q", "--no-browser", "--accept-new", "--no-wait"],
    ["xai", "h", "--as", "svc", "--hermes-home", "/srv/h", "--hermes", "~/bin/hermes"],
    ["xai", "h", "--backend", "openssh", "--via", "relay", "--profile", "work", "--reap"],
    ["-J", "b", "run", "host", "--", "rclone", "config", "--help"],
    ["spotify", "--browser-cmd", "firefox {url}", "--config", "c.toml", "--verify"],
]


@pytest.mark.parametrize("argv", AGREED, ids=[" ".join(a) for a in AGREED])
def test_login_lines_read_as_typer_reads_them(argv: list[str]) -> None:
    parsed = parse_login(argv)
    assert parsed is not None
    name, options, run_command = parsed
    assert (name, options, run_command) == typer_reading(argv)


def test_run_keeps_its_command() -> None:
    parsed = parse_login(["run", "h", "--", "loopback-cli", "-v", "--port", "9"])
    assert parsed is not None
    assert parsed[2] == ["loopback-cli", "-v", "--port", "9"]
    assert parsed[1]["verbose"] == 0 and parsed[1]["port"] is None


DECLINED = [
    [],
    ["--help"],
    ["spotify", "--help"],
    ["spotify", "-h"],
    ["doctor", "host"],
    ["config", "show", "host"],
    ["demo"],
    ["spotify", "a", "b"],  # several hosts: a fleet
    ["spotify", "web-*"],  # a Host pattern: a fleet
    ["mcp", "linear", "@agents"],  # a group: a fleet
    ["mcp"],  # NAME is required
    ["spotify", "h", "-p"],  # a value is missing
    ["spotify", "h", "-p", "twenty"],  # not a number
    ["spotify", "h", "--batch=yes"],  # a switch takes no value
    ["spotify", "h", "--no-such-flag"],
    ["spotify", "h", "-p2222"],  # attached short values are left to typer
    ["spotify", "h", "-qv"],  # clustered switches too
]


@pytest.mark.parametrize("argv", DECLINED, ids=[" ".join(a) or "(empty)" for a in DECLINED])
def test_anything_unusual_is_left_to_typer(argv: list[str]) -> None:
    assert parse_login(argv) is None


def test_interactive_lines_start_no_ssh() -> None:
    """Only batch runs start an ssh master ahead: an interactive one may be asked for a password."""
    env = Environment(variables={"TUNNELAUTH_CONFIG": os.devnull}, stdin_tty=True)
    planned = {}
    for argv in (
        ["spotify", "user@host"],
        ["spotify", "user@host", "--backend", "paramiko", "--batch"],
        ["spotify", "user@host", "-p", "2200", "--batch"],
    ):
        parsed = parse_login(argv)
        assert parsed is not None
        name, options, run_command = parsed
        settings = build_settings(name, options, run_command=run_command, environment=env)
        planned[" ".join(argv[2:])] = plan(choose(settings), settings)
    assert [key for key, parts in planned.items() if parts.master] == ["-p 2200 --batch"]
    # The paramiko line, batch or not, opens its first hop's connection ahead.
    assert [key for key, parts in planned.items() if parts.dial] == ["--backend paramiko --batch"]


def _batch_login_refused(probe: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``probe`` (Python) with a batch login line to a closed local port as its argv."""
    argv = ["spotify", "user@127.0.0.1", "-p", "1", "-F", os.devnull, "--batch"]
    env = {**os.environ, "TUNNELAUTH_CONFIG": os.devnull}
    return subprocess.run(
        [sys.executable, "-c", probe, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_login_line_runs_without_importing_typer(tmp_path: Path) -> None:
    """The whole login (here: refused at a closed local port) runs with typer never loaded."""
    probe = (
        "import os, sys\n"
        "from tunnelauth.entry import main\n"
        "code = main(sys.argv[1:])\n"
        "print('typer' in sys.modules, code, os.getpid())\n"
    )
    result = _batch_login_refused(probe, tmp_path)
    typer_loaded, code, pid = result.stdout.split()
    assert (typer_loaded, code) == ("False", "3"), result
    assert "127.0.0.1" in result.stderr and "refused" in result.stderr.lower(), result.stderr
    # This run's own temp dirs only: other runs on the machine make theirs meanwhile.
    assert glob.glob(f"/tmp/tunnelauth-{pid}-*") == [], "a temp dir was left behind"


def test_the_early_master_starts_before_the_heavy_imports(tmp_path: Path) -> None:
    """A batch login asks ssh for the config before asyncio, rich or the flow are loaded.

    Nor dataclasses: it brings inspect, ast and dis (~8 ms), and the settings are tuples.
    """
    probe = (
        "import os, subprocess, sys\n"
        "heavy = ('asyncio', 'rich', 'typer', 'tunnelauth.flow', 'asyncssh', 'paramiko',\n"
        "         'dataclasses', 'inspect')\n"
        "class Popen(subprocess.Popen):\n"
        "    def __init__(self, args, *rest, **kwargs):\n"
        "        if os.path.basename(args[0]) == 'ssh' and ('-G' in args or '-f' in args):\n"
        "            what = 'config' if '-G' in args else 'master'\n"
        "            print(what, 'loaded:', *[m for m in heavy if m in sys.modules])\n"
        "        super().__init__(args, *rest, **kwargs)\n"
        "subprocess.Popen = Popen\n"
        "from tunnelauth.entry import main\n"
        "print('exit', main(sys.argv[1:]))\n"
    )
    result = _batch_login_refused(probe, tmp_path)
    assert result.stdout.splitlines() == ["config loaded:", "master loaded:", "exit 3"], result


def test_an_interrupted_batch_login_leaves_no_master(tmp_path: Path) -> None:
    """Ctrl-C while the master started ahead still authenticates (a host that never answers):
    the run ends with 130, and neither the master nor its temp dir outlives it."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says a word
        port = str(silent.getsockname()[1])
        argv = ["spotify", "user@127.0.0.1", "-p", port, "-F", os.devnull, "--batch"]
        run = subprocess.Popen(
            [sys.executable, "-c", "from tunnelauth.entry import main; main()", *argv],
            env={**os.environ, "TUNNELAUTH_CONFIG": os.devnull},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not (logs := glob.glob(f"/tmp/tunnelauth-{run.pid}-*/connect.log")):
                assert run.poll() is None and time.monotonic() < deadline, "no master started"
                time.sleep(0.01)
            tempdir = os.path.dirname(logs[0])
            run.send_signal(signal.SIGINT)
            assert run.wait(30) == 130
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(30)
            assert run.stderr is not None
            run.stderr.close()
    assert not os.path.exists(tempdir), "the master's temp dir was left behind"
    masters = [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if any(tempdir in part for part in proc.info["cmdline"] or ())
    ]
    assert masters == [], "the master outlived the run"
