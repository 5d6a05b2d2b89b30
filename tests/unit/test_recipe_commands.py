"""Recipes: the remote command line and environment each produces, run for real by each shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_remote_command import SUDO_I
from tunnelauth.cli import main
from tunnelauth.cmdline import OPTION_SPECS, build_settings, parse_login
from tunnelauth.environment import Environment
from tunnelauth.recipes import RECIPES, display, env_assignments
from tunnelauth.remote import remote_command, settings_command
from tunnelauth.status import ExitStatus

SHELLS = [s for s in ("sh", "bash", "dash", "zsh", "fish") if shutil.which(s)]

# What each recipe must run: (program, arguments, environment). Written out, not derived.
EXPECTED: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "wrangler": ("wrangler", ["login", "--browser=false"], {}),
    "databricks": ("databricks", ["auth", "login"], {"BROWSER": "none"}),
    "aws": ("aws", ["sso", "login", "--no-browser"], {}),
}

# Records its argv and the variables a recipe may set, wherever it is installed as.
ECHO = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["ARGV_OUT"], "w") as fh:
    json.dump({"argv": sys.argv[1:], "browser": os.environ.get("BROWSER"),
               "odd": os.environ.get("ODD_VALUE")}, fh)
"""

ENV = Environment(variables={"TUNNELAUTH_CONFIG": os.devnull})  # no user config leaks in

HOSTILE = ["--host", "https://adb.test/?o=1&x=$(touch pwned)'\"`id`\\", "; rm -rf ~"]


def _options(**chosen: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        key: (0 if kind is int else False if kind is bool else None)
        for key, _, kind, _, _ in OPTION_SPECS
    }
    options.update(chosen)
    return options


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake remote home with every recipe's program in ~/.local/bin only (not on PATH)."""
    bindir = tmp_path / "home" / ".local" / "bin"
    bindir.mkdir(parents=True)
    for program, _, _ in EXPECTED.values():
        (bindir / program).write_text(ECHO)
        (bindir / program).chmod(0o755)
    return tmp_path / "home"


def _run(shell: str, command: str, home: Path, tmp_path: Path) -> dict[str, Any]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv.json")}
    done = subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done
    result: dict[str, Any] = json.loads((tmp_path / "argv.json").read_text())
    return result


def test_the_table_is_the_one_tested() -> None:
    assert set(RECIPES) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_recipe_builds_its_program_arguments_and_environment(name: str) -> None:
    settings = build_settings(
        "recipe", _options(recipe=name, host="box"), run_command=["-x"], environment=ENV
    )
    program, args, env = EXPECTED[name]
    assert (settings.program, list(settings.args), dict(settings.env)) == (
        program,
        [*args, "-x"],
        env,
    )
    assert settings.provider is None  # judged like `run`: callback (or device flow) + exit 0
    assert settings.timeout == RECIPES[name].timeout + 30.0


def test_the_exact_remote_command_lines() -> None:
    wrangler = build_settings("recipe", _options(recipe="wrangler", host="box"), environment=ENV)
    line = settings_command(wrangler, wrangler.args, pty=True)
    assert line.startswith("exec sh -c ")
    assert line.endswith(" tunnelauth wrangler login --browser=false")
    databricks = build_settings(
        "recipe",
        _options(recipe="databricks", host="box"),
        run_command=["--host", "https://a.b"],
        environment=ENV,
    )
    line = settings_command(databricks, databricks.args, pty=True)
    assert line.startswith("exec env BROWSER=none sh -c ")
    assert line.endswith(" tunnelauth databricks auth login --host https://a.b")
    # The short commands (doctor's checks) never inherit the recipe's variables.
    assert "BROWSER" not in settings_command(databricks, ["-c", "true"], program="sh")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_shell_runs_the_recipe_with_its_environment_and_extra_words_verbatim(
    shell: str, name: str, home: Path, tmp_path: Path
) -> None:
    settings = build_settings(
        "recipe", _options(recipe=name, host="box"), run_command=HOSTILE, environment=ENV
    )
    seen = _run(shell, settings_command(settings, settings.args), home, tmp_path)
    _, args, env = EXPECTED[name]
    assert seen["argv"] == [*args, *HOSTILE]
    assert seen["browser"] == env.get("BROWSER")
    assert not (home / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_value_with_quotes_and_dollars_arrives_unchanged(
    shell: str, home: Path, tmp_path: Path
) -> None:
    value = "a b'$(touch pwned)\"\\`id`"
    command = remote_command("wrangler", ["login"], env=[("ODD_VALUE", value)])
    assert _run(shell, command, home, tmp_path)["odd"] == value


@pytest.mark.parametrize(
    ("name", "value"),
    [("lower", "x"), ("1ST", "x"), ("A-B", "x"), ("A=B", "x"), ("", "x"), ("OK", "a\nb")],
)
def test_unsafe_names_and_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=r"invalid environment|control character"):
        env_assignments([(name, value)])
    with pytest.raises(ValueError):
        remote_command("wrangler", ["login"], env=[(name, value)])


def test_no_recipe_sets_a_secret_or_a_security_switch() -> None:
    # The only variables a recipe may set stop a browser from opening on the host.
    for recipe in RECIPES.values():
        assert {name for name, _ in recipe.env} <= {"BROWSER"}, recipe
        assert all(value == "none" for _, value in recipe.env), recipe


def test_the_command_line_reads_recipe_name_host_and_extra_arguments() -> None:
    parsed = parse_login(["-q", "recipe", "databricks", "box", "--", "--host", "https://a.b"])
    assert parsed is not None
    name, options, extra = parsed
    assert (name, options["recipe"], options["host"], options["quiet"]) == (
        "recipe",
        "databricks",
        "box",
        True,
    )
    assert extra == ["--host", "https://a.b"]
    assert parse_login(["recipe"]) is None  # typer explains the missing NAME


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["recipe", "nosuch", "box"], "unknown recipe 'nosuch'"),
        (["recipe", "wrangler", "box", "--verify"], "--verify belongs to hermes providers"),
        (["recipe", "wrangler", "box", "--replace"], "--replace belongs to hermes providers"),
        (
            ["recipe", "databricks", "box", "--profile", "p"],
            "--profile belongs to hermes providers",
        ),
        (["recipe", "codex", "box"], "unknown recipe 'codex'"),  # codex is a hermes provider
    ],
)
def test_misuse_is_a_usage_error(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.pop("TUNNELAUTH_HOST", None)
    assert main(argv) == ExitStatus.USAGE
    assert said in capsys.readouterr().err


def test_providers_lists_the_recipes_marked_as_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    head, _, tail = out.partition("recipes (other CLIs: tunnelauth recipe NAME HOST")
    assert tail, out
    assert "wrangler login --browser=false" in tail and "wrangler" not in head
    assert "BROWSER=none databricks auth login" in tail
    assert "codex" not in tail and "hermes auth add openai-codex" in head
    assert main(["providers", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    recipes = {r["name"]: r for r in doc["recipes"]}
    assert set(recipes) == set(EXPECTED)
    assert recipes["databricks"]["env"] == {"BROWSER": "none"}
    assert recipes["databricks"]["command"] == "BROWSER=none databricks auth login"
    assert recipes["wrangler"]["run"] == "tunnelauth recipe wrangler HOST"
    assert "codex" in {p["name"] for p in doc["providers"]}  # the hermes provider stays


def test_the_docs_show_what_each_recipe_runs() -> None:
    root = Path(__file__).resolve().parents[2]
    recipes_doc = (root / "docs" / "recipes.md").read_text()
    readme = (root / "README.md").read_text()
    assert "docs/recipes.md" in readme
    for recipe in RECIPES.values():
        assert f"| `{recipe.name}` | `{display(recipe)}` |" in recipes_doc, recipe.name
        assert f"recipe `{recipe.name}`" in readme, recipe.name


@pytest.mark.parametrize("shell", SHELLS)
def test_with_as_the_variables_survive_sudo_i(shell: str, home: Path, tmp_path: Path) -> None:
    # sudo -i resets the environment and quotes the command for the target's login shell:
    # the variable must come from the decoded command itself, as the user's value.
    standin = tmp_path / "sbin"
    standin.mkdir()
    (standin / "sudo").write_text(SUDO_I)
    (standin / "sudo").chmod(0o755)
    settings = build_settings(
        "recipe",
        _options(recipe="databricks", host="box", run_as="svc"),
        run_command=HOSTILE,
        environment=ENV,
    )
    command = settings_command(settings, settings.args)
    assert command.startswith("exec sudo -n -u svc -i -- env ")
    env = {
        "HOME": str(home),
        "PATH": f"{standin}:/usr/bin:/bin",
        "ARGV_OUT": str(tmp_path / "argv.json"),
        "LOGIN_SHELL": shutil.which(shell) or shell,
    }
    done = subprocess.run(
        [shell, "-c", command], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done
    seen = json.loads((tmp_path / "argv.json").read_text())
    assert seen["argv"] == ["auth", "login", *HOSTILE]
    assert seen["browser"] == "none"


def test_hermes_settings_do_not_reach_a_recipe() -> None:
    settings = build_settings(
        "recipe",
        _options(recipe="wrangler", host="box", hermes_home="~/.h", hermes="/opt/h"),
        environment=ENV,
    )
    assert settings.hermes_home is None and settings.program == "wrangler"
    assert "HERMES_HOME" not in settings_command(settings, settings.args)


def test_a_recipe_that_sets_browser_keeps_it_on_a_terminal() -> None:
    # The login runs on a PTY, where `run` installs the BROWSER helper: a recipe that chose
    # BROWSER itself (databricks: BROWSER=none) must keep its own value.
    def login_line(name: str) -> str:
        settings = build_settings("recipe", _options(recipe=name, host="box"), environment=ENV)
        return settings_command(settings, settings.args, pty=True)

    assert "tunnelauth-browser" not in login_line("databricks")
    assert "exec env BROWSER=none sh -c " in login_line("databricks")
    assert "tunnelauth-browser" in login_line("wrangler")
