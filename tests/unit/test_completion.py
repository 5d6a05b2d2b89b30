"""Shell completion comes from typer and completes commands and options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_TUNNELAUTH_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    code = "import sys; from tunnelauth.cli import main; sys.exit(main([]))"
    argv = [sys.executable, "-c", code]
    # click names the completion variable after the program name main() passes.
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


def test_commands_and_options_complete() -> None:
    assert "doctor" in complete("tunnelauth doc")
    assert "--verify" in complete("tunnelauth spotify --ver")


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _tunnelauth_completion tunnelauth"),
        ("zsh", "#compdef tunnelauth"),
        ("fish", "complete --command tunnelauth"),
    ],
)
def test_completion_script_for_the_named_shell(shell: str, marker: str) -> None:
    # Whatever shell runs the tests (or none): the script is the one asked for.
    code = "import sys; from tunnelauth.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "--show-completion", shell],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0 and marker in out.stdout, out.stderr


def complete_with_home(words: str, home: str) -> list[str]:
    env = {
        **os.environ,
        "HOME": home,
        "TUNNELAUTH_CONFIG": os.devnull,
        "_TUNNELAUTH_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    code = "import sys; from tunnelauth.cli import main; sys.exit(main([]))"
    argv = [sys.executable, "-c", code]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


def test_hosts_complete_from_the_ssh_config_and_its_includes(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "config").write_text(
        "Host agent-box bastion *.wild !negated\n  HostName 10.0.0.1\n"
        "Include conf.d/*.conf\nHost=eq-host\n"
    )
    (ssh / "conf.d" / "gpus.conf").write_text("Host gpu1 gpu2\n")
    assert complete_with_home("tunnelauth xai ", str(tmp_path)) == [
        "agent-box",
        "bastion",
        "gpu1",
        "gpu2",
        "eq-host",
    ]
    assert complete_with_home("tunnelauth spotify me@ag", str(tmp_path)) == ["me@agent-box"]
    assert complete_with_home("tunnelauth mcp linear gp", str(tmp_path)) == ["gpu1", "gpu2"]


def test_backend_and_via_values_complete(tmp_path: Path) -> None:
    assert complete_with_home("tunnelauth xai h --backend ", str(tmp_path)) == [
        "auto",
        "openssh",
        "asyncssh",
        "paramiko",
    ]
    assert complete_with_home("tunnelauth xai h --via re", str(tmp_path)) == ["relay"]


def test_mcp_server_names_complete_from_what_tunnelauth_saw(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = (
        "import sys; from tunnelauth.completion import remember_mcp_servers as r; "
        "r('box', ['linear', 'github', '$(evil)', 'x' * 100]); r('other', ['linkedin'])"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    words = "tunnelauth mcp li"
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from tunnelauth.cli import main; sys.exit(main([]))"],
        env={
            **env,
            "HOME": str(tmp_path),
            "TUNNELAUTH_CONFIG": os.devnull,
            "_TUNNELAUTH_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": "2",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.stdout.split() == ["linear", "linkedin"]
    stored = (cache / "tunnelauth" / "mcp-servers.json").read_text()
    assert "evil" not in stored and "x" * 100 not in stored
    assert oct((cache / "tunnelauth" / "mcp-servers.json").stat().st_mode & 0o777) == "0o600"
