"""``tunnelauth status HOST`` on the bed: what the remote is logged in to, before and after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus


def status(bed: Bed, tmp: Path, backend: str, *args: str) -> dict[str, object]:
    result = tunnelauth(bed, "status", "remote", "--json", *args, tmp=tmp, backend=backend)
    assert result.code == ExitStatus.OK, result
    doc = json.loads(result.stdout)
    assert doc["v"] == 1 and doc["kind"] == "status" and doc["host"] == "remote"
    return doc


def states(doc: dict[str, object]) -> dict[str, str]:
    rows = doc["providers"]
    assert isinstance(rows, list)
    return {row["name"]: row["state"] for row in rows}


@pytest.mark.parametrize("backend", ["openssh", "asyncssh", "paramiko"])
def test_status_shows_logins_before_and_after(fresh: Bed, tmp_path: Path, backend: str) -> None:
    # Earlier tests logged in: start from a remote with no login at all.
    (fresh.home / ".hermes" / "auth.json").unlink(missing_ok=True)
    shutil.rmtree(fresh.home / ".hermes" / "mcp-tokens", ignore_errors=True)
    before = status(fresh, tmp_path, backend)
    assert states(before)["spotify"] == "logged out"
    assert before["mcp_servers"] == []
    assert tunnelauth(fresh, "spotify", "remote", tmp=tmp_path).code == ExitStatus.OK
    assert tunnelauth(fresh, "mcp", "linear", "remote", tmp=tmp_path).code == ExitStatus.OK
    after = status(fresh, tmp_path, backend)
    assert states(after)["spotify"] == "logged in"
    assert states(after)["xai"] == "logged out"
    assert after["mcp_servers"] == ["linear"]


def test_status_table_for_people(fresh: Bed, tmp_path: Path) -> None:
    shutil.rmtree(fresh.home / ".hermes" / "mcp-tokens", ignore_errors=True)
    result = tunnelauth(fresh, "status", "remote", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    assert "spotify" in result.stdout and "logged out" in result.stdout
    assert "MCP servers with a token: none" in result.stdout


def test_status_names_a_missing_hermes(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "status", "remote", "--hermes", "/nonexistent/hermes", tmp=tmp_path)
    assert result.code == ExitStatus.COMMAND_NOT_FOUND, result
    assert "was not found on remote" in result.stderr
