"""A newcomer's first five minutes, from the README alone, with what `pipx install .` gives.

The install is the README's first command, run in a clean copy of the checkout
(``tests/installed.py``); then the commands a newcomer tries, and the mistakes they make.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.installed import REPO, Installed

DEADLINE = 120.0


def readme_setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", setup, re.S)]


def test_the_readme_shows_exactly_two_setup_commands() -> None:
    assert readme_setup_commands() == ["pipx install . && tunnelauth demo", "scripts/test"]
    assert "Python 3.10" in (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci


def newcomer(installed: Installed, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(installed.pipx_bin / "tunnelauth")
    env = {"PATH": f"{installed.pipx_bin}:/usr/bin:/bin", "HOME": str(installed.root), "CI": "1"}
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        env={**env, "LANG": "C.UTF-8", "COLUMNS": "100"},
        cwd="/",
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )


def test_first_commands_work(installed: Installed) -> None:
    helped = newcomer(installed, "--help")
    assert helped.returncode == 0 and "providers" in helped.stdout and "demo" in helped.stdout
    listed = newcomer(installed, "providers")
    assert listed.returncode == 0 and "hermes auth spotify login" in listed.stdout
    shown = newcomer(installed, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "no host given" in shown.stdout
    demo = newcomer(installed, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "logged in" in demo.stderr


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["xai", "box", "--timeout", "0"], "--timeout must be more than 0 seconds"),
        (["xai", "box", "-p", "99999"], "the SSH port must be from 1 to 65535"),
        (["xai", "box", "--browser-cmd", ""], "--browser-cmd is empty"),
        (["xai", "box", "--config", "/nonexistent.toml"], "config file /nonexistent.toml"),
        (["run", "box", "echo", "hi"], "put the command after --"),
        (["nosuchprovider", "box"], "No such command"),
    ],
)
def test_mistakes_get_one_clear_line(
    installed: Installed, args: list[str], first_line: str
) -> None:
    out = newcomer(installed, *args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert first_line in out.stderr, out.stderr
