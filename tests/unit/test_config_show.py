"""Settings resolution: each value's source (flag, env, file, default) and `config show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunnelauth.cli import main
from tunnelauth.cmdline import build_settings
from tunnelauth.environment import Environment
from tunnelauth.options import resolve_batch
from tunnelauth.status import ExitStatus

CONFIG = """\
default_host = "box"

[hosts.box]
jump = ["bastion1", "bastion2"]
user = "agent"
port = 2200
profile = "work"
hermes = "~/venv/bin/hermes"
timeout = 99
run_as = "hermes"
hermes_home = "~/hh"
browser_cmd = "firefox {url}"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config file."""
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def variables(tmp_path: Path, config: Path) -> dict[str, str]:
    """The config file named, and a PATH where the browser command's program exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "firefox").write_text("#!/bin/sh\n")
    (bin_dir / "firefox").chmod(0o755)
    return {"TUNNELAUTH_CONFIG": str(config), "PATH": f"{bin_dir}:/usr/bin:/bin"}


@pytest.fixture(autouse=True)
def process(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    """``main`` is an edge that reads the process: those variables, and no user env leaks in."""
    for var in ("TUNNELAUTH_HOST", "TUNNELAUTH_HERMES", "TUNNELAUTH_BACKEND", "CI"):
        monkeypatch.delenv(var, raising=False)
    for var in ("TUNNELAUTH_TIMEOUT", "TUNNELAUTH_PROFILE", "TUNNELAUTH_BROWSER_CMD"):
        monkeypatch.delenv(var, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def show(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict[str, object]]:
    assert main(["config", "show", *args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "config" and document["v"] == 1
    settings: dict[str, dict[str, object]] = document["settings"]
    return settings


def test_each_value_is_attributed_to_its_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    monkeypatch.setenv("TUNNELAUTH_HERMES", "/opt/hermes/bin/hermes")
    monkeypatch.setenv("CI", "1")
    settings = show(capsys, "--profile", "other")
    origin = f"{config} default_host"
    assert settings["host"] == {"value": "box", "source": "file", "origin": origin}
    assert settings["profile"]["value"] == "other" and settings["profile"]["source"] == "flag"
    assert settings["hermes"]["source"] == "env"
    assert settings["hermes"]["origin"] == "$TUNNELAUTH_HERMES"
    assert settings["jump"] == {
        "value": ["bastion1", "bastion2"],
        "source": "file",
        "origin": f"{config} [hosts.box]",
    }
    assert settings["timeout"]["value"] == 99 and settings["timeout"]["source"] == "file"
    assert settings["backend"] == {"value": "auto", "source": "default", "origin": "built-in"}
    assert settings["batch"]["source"] == "env" and settings["batch"]["origin"] == "$CI"


def test_flag_host_uses_its_own_section(capsys: pytest.CaptureFixture[str]) -> None:
    settings = show(capsys, "elsewhere")
    assert settings["host"]["source"] == "flag"
    assert settings["jump"]["source"] == "default"


def test_human_table_names_the_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--jump", "j"]) == 0
    out = capsys.readouterr().out
    assert "flag" in out and "file" in out and "default" in out


def test_file_values_reach_the_settings(variables: dict[str, str]) -> None:
    settings = build_settings("spotify", {}, environment=Environment(variables=variables))
    assert settings.target.jump == ("bastion1", "bastion2")
    assert settings.target.login == "agent" and settings.target.port == 2200
    assert settings.program == "~/venv/bin/hermes" and settings.args[:2] == ("-p", "work")
    assert settings.timeout == 99.0 and settings.browser_cmd == "firefox {url}"
    assert settings.run_as == "hermes" and settings.hermes_home == "~/hh"
    assert settings.sources["timeout"] == "file" and settings.sources["backend"] == "default"


def test_unknown_or_mistyped_keys_are_usage_errors(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text('[hosts.box]\njumphost = "x"\n')
    assert main(["config", "show", "box"]) == ExitStatus.USAGE
    assert "jumphost" in capsys.readouterr().err
    config.write_text('[hosts.box]\nport = "twenty"\n')
    assert main(["config", "show", "box"]) == ExitStatus.USAGE


def test_verify_is_refused_where_it_means_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--verify"]) == ExitStatus.USAGE
    assert main(["run", "h", "--replace", "--", "true"]) == ExitStatus.USAGE


def test_batch_sources() -> None:
    assert resolve_batch(True, {}, True).origin == "--batch"
    assert resolve_batch(False, {"CI": "true"}, True).source == "env"
    assert resolve_batch(False, {"CI": "0"}, False).value is True
    assert resolve_batch(False, {}, True).value is False
