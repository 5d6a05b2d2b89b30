"""Command-line parsing: options before or after the subcommand, host fallbacks, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnelauth.cli import main
from tunnelauth.cmdline import build_settings, normalize_argv
from tunnelauth.environment import Environment
from tunnelauth.errors import UsageError
from tunnelauth.status import ExitStatus


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """An empty config file of the test's own: no user config leaks into these tests."""
    path = tmp_path / "config.toml"
    path.write_text("")
    return path


@pytest.fixture
def env(cfg: Path) -> Environment:
    """An environment naming only that config file (no TUNNELAUTH_* of the user's, no CI)."""
    return Environment(variables={"TUNNELAUTH_CONFIG": str(cfg)})


@pytest.fixture
def clean_process(monkeypatch: pytest.MonkeyPatch, cfg: Path) -> None:
    """For ``main``, the edge that reads the process: no user config or variables leak in."""
    for var in ("TUNNELAUTH_HOST", "TUNNELAUTH_CONFIG", "TUNNELAUTH_HERMES", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TUNNELAUTH_CONFIG", str(cfg))


def test_options_before_the_subcommand_are_moved_after_it() -> None:
    args, run = normalize_argv(["--jump", "bastion", "-v", "mcp", "linear", "-F", "cfg"])
    assert args == ["mcp", "linear", "-F", "cfg", "--jump", "bastion", "-v"]
    assert run == []


def test_run_command_is_split_at_double_dash() -> None:
    args, run = normalize_argv(["-J", "b", "run", "host", "--", "rclone", "config", "-v"])
    assert args == ["run", "host", "-J", "b"]
    assert run == ["rclone", "config", "-v"]


def test_host_falls_back_to_env_then_config(cfg: Path, env: Environment) -> None:
    cfg.write_text('default_host = "fromfile"\n[hosts.fromfile]\njump = "bastion"\n')
    settings = build_settings("spotify", {}, environment=env)
    assert settings.target.host == "fromfile"
    assert settings.target.jump == ("bastion",)
    assert settings.sources["host"] == "file"
    env = env._replace(variables={**env.variables, "TUNNELAUTH_HOST": "fromenv"})
    assert build_settings("spotify", {}, environment=env).target.host == "fromenv"
    assert build_settings("spotify", {"host": "flag"}, environment=env).target.host == "flag"


def test_no_host_anywhere_is_a_usage_error(env: Environment) -> None:
    with pytest.raises(UsageError):
        build_settings("xai", {}, environment=env)


def test_provider_maps_to_the_real_remote_command(env: Environment) -> None:
    s = build_settings("spotify", {"host": "h"}, environment=env)
    assert (s.program, s.args) == ("hermes", ("auth", "spotify", "login", "--no-browser"))
    s = build_settings("mcp", {"host": "h", "server": "linear", "profile": "work"}, environment=env)
    assert s.args == ("-p", "work", "mcp", "login", "linear")
    s = build_settings("xai", {"host": "h", "hermes": "~/venv/bin/hermes"}, environment=env)
    assert s.program == "~/venv/bin/hermes"
    assert s.args == ("auth", "add", "xai-oauth", "--no-browser")


def test_jump_lists_are_split_and_validated(env: Environment) -> None:
    s = build_settings("nous", {"host": "h", "jump": ["a,b", "c"]}, environment=env)
    assert s.target.jump == ("a", "b", "c")
    with pytest.raises(UsageError):
        build_settings("nous", {"host": "h", "jump": ["-oProxyCommand=x"]}, environment=env)


@pytest.mark.parametrize("bad", ["../x", "a b", "x;rm", "-rf", "$(id)", ""])
def test_unsafe_names_are_refused(bad: str, env: Environment) -> None:
    with pytest.raises(UsageError):
        build_settings("mcp", {"host": "h", "server": bad}, environment=env)


def test_hosts_that_look_like_options_are_refused(env: Environment) -> None:
    with pytest.raises(UsageError):
        build_settings("xai", {"host": "-oProxyCommand=touch /tmp/x"}, environment=env)


@pytest.mark.usefixtures("clean_process")
def test_cli_reports_usage_errors_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp", "bad name!", "host"]) == ExitStatus.USAGE
    assert "invalid MCP server name" in capsys.readouterr().err
    assert main(["run", "host"]) == ExitStatus.USAGE
    assert main(["nosuchcommand"]) == ExitStatus.USAGE


@pytest.mark.usefixtures("clean_process")
def test_version_and_providers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "tunnelauth" in capsys.readouterr().out
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    assert "hermes auth spotify login --no-browser" in out
    assert "hermes mcp login NAME" in out
