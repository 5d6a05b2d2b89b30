"""``tunnelauth status`` across hosts on the bed: one row per host, failures in their row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bed import SAFETY_NET
from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus

# Inside the bed's safety net but given to no namespace: the `unreachable` route refuses it.
DEAD_IP = str(SAFETY_NET.broadcast_address - 1)


def config_with_dead_host(bed: Bed, tmp: Path) -> Path:
    path = tmp / "ssh_config"
    path.write_text(f"Host dead\n  HostName {DEAD_IP}\n\n" + bed.ssh_config.read_text())
    return path


def lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.parametrize("backend", ["openssh", "asyncssh", "paramiko"])
def test_a_dead_host_is_its_own_row_and_the_others_answer(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    config = config_with_dead_host(fresh, tmp_path)
    result = tunnelauth(
        fresh,
        *("status", "remote", "dead", "bastion", "--json"),
        tmp=tmp_path,
        backend=backend,
        ssh_config=config,
        browser=False,
    )
    assert result.code == ExitStatus.SSH_FAILED, result  # the first failed host's status
    docs = lines(result.stdout)
    assert [d["host"] for d in docs] == ["remote", "dead", "bastion"], docs
    for doc in (docs[0], docs[2]):
        assert "providers" in doc, docs
        assert {p["name"] for p in doc["providers"]} >= {"spotify", "xai"}, doc  # type: ignore[union-attr]
    assert docs[1]["exit_status"] == ExitStatus.SSH_FAILED and docs[1]["error"], docs[1]
    assert "providers" not in docs[1]


def test_a_host_pattern_gives_one_table_row_per_alias(fresh: Bed, tmp_path: Path) -> None:
    # remote-direct skips the bastion, and the laptop has no route to the remote's network.
    result = tunnelauth(fresh, "status", "remote*", tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.SSH_FAILED, result
    table = result.stdout
    for alias in ("remote", "remote-nofwd", "remote-direct"):
        assert f" {alias} " in table, table
    assert "No route to host" in table
    assert "spotify" in table and "2 of 3 hosts answered" in table


def test_a_missing_hermes_fails_every_row_with_its_reason(fresh: Bed, tmp_path: Path) -> None:
    args = ("status", "remote", "bastion", "--hermes", "/nonexistent/hermes")
    result = tunnelauth(fresh, *args, tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.COMMAND_NOT_FOUND, result
    assert result.stdout.count("was not found on") == 2, result.stdout
    assert "0 of 2 hosts answered" in result.stdout


def test_hosts_from_an_inventory_with_limit(fresh: Bed, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"[web]\nremote\n\n[db]\nbastion\n\n[down]\nunreachable ansible_host={DEAD_IP}\n"
    )
    args = ("status", "--inventory", str(inventory), "--limit", "web:down", "--json")
    result = tunnelauth(fresh, *args, tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.SSH_FAILED, result
    docs = lines(result.stdout)
    assert [d["host"] for d in docs] == ["remote", "unreachable"], docs
    assert "providers" in docs[0] and "error" in docs[1]


def test_a_group_from_the_config_file(fresh: Bed, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[groups]\nagents = ["remote", "b*"]\n')
    result = tunnelauth(
        fresh,
        *("status", "@agents", "--json"),
        tmp=tmp_path,
        browser=False,
        env={"TUNNELAUTH_CONFIG": str(config)},
    )
    assert result.code == ExitStatus.OK, result
    assert [d["host"] for d in lines(result.stdout)] == ["remote", "bastion"]


def test_limit_without_inventory_is_a_usage_error(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "status", "remote", "--limit", "web", tmp=tmp_path, browser=False)
    assert result.code == ExitStatus.USAGE, result
    assert "--limit narrows --inventory" in result.stderr
