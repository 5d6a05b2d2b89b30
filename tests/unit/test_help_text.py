"""What --help and `providers` show: usage as people write it, no stray defaults or brackets."""

from __future__ import annotations

import json

import pytest

from tunnelauth.cli import main
from tunnelauth.providers import PROVIDERS


def help_of(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main([*args, "--help"]) == 0
    return capsys.readouterr().out


def test_mcp_usage_names_its_arguments_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    usage = help_of(capsys, "mcp").splitlines()[0]
    assert usage == "Usage: tunnelauth mcp [OPTIONS] NAME [HOST...]"


def test_verbose_shows_no_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "spotify")
    (line,) = [ln for ln in text.splitlines() if "--verbose" in ln]
    assert "default" not in line


@pytest.mark.parametrize("name", [n for n in PROVIDERS if n != "mcp"])
def test_provider_help_has_no_nested_parentheses(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    text = " ".join(help_of(capsys, name).split())
    assert f"Usual flow: {PROVIDERS[name].flow}." in text
    assert "((" not in text and "))" not in text


def test_providers_json_lists_every_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["v"] == 1 and doc["kind"] == "providers"
    assert [p["name"] for p in doc["providers"]] == list(PROVIDERS)
    spotify = next(p for p in doc["providers"] if p["name"] == "spotify")
    assert spotify["command"] == "hermes auth spotify login --no-browser"
    assert spotify["usual_flow"] == PROVIDERS["spotify"].flow
