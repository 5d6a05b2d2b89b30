"""``tunnelauth PROVIDER HOST HOST…`` on the bed: each host logged in, failures in their row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tests.e2e.test_fleet_status import config_with_dead_host
from tunnelauth.jsonout import validate
from tunnelauth.status import ExitStatus


def events(stdout: str) -> list[dict[str, object]]:
    found = [json.loads(line) for line in stdout.splitlines()]
    for event in found:
        assert validate(event) == [], event
    return found


def summary(found: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    (done,) = [e for e in found if e["event"] == "fleet_done"]
    hosts = done["hosts"]
    assert isinstance(hosts, list)
    return {str(h["host"]): h for h in hosts}


@pytest.mark.parametrize("backend", ["openssh", "asyncssh", "paramiko"])
def test_device_code_logins_on_several_hosts_with_one_dead(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    config = config_with_dead_host(fresh, tmp_path)
    result = tunnelauth(
        fresh,
        *("xai", "remote", "dead", "bastion", "--json"),
        tmp=tmp_path,
        backend=backend,
        ssh_config=config,
    )
    assert result.code == ExitStatus.SSH_FAILED, result  # the first failed host's status
    found = events(result.stdout)
    rows = summary(found)
    assert list(rows) == ["remote", "dead", "bastion"]
    assert rows["remote"]["exit_status"] == 0 and rows["remote"]["login"] == "device", rows
    assert rows["bastion"]["exit_status"] == 0 and rows["bastion"]["login"] == "device", rows
    assert rows["dead"]["exit_status"] == ExitStatus.SSH_FAILED, rows
    # Every event of a host's login names the host it belongs to.
    for event in found:
        if event["event"] != "fleet_done":
            assert event.get("target") in rows, event
    codes = [e for e in found if e["event"] == "device_code"]
    assert {e["target"] for e in codes} == {"remote", "bastion"}
    assert "2 of 3 hosts logged in" in result.stderr


def test_loopback_logins_run_one_after_another_on_the_same_port(fresh: Bed, tmp_path: Path) -> None:
    result = tunnelauth(fresh, "spotify", "remote", "bastion", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    found = events(result.stdout)
    rows = summary(found)
    assert [r["login"] for r in rows.values()] == ["callback", "callback"], rows
    # One at a time: the second host connects only after the first one's login ended.
    wanted = ("connecting", "succeeded")
    order = [(e["event"], e["target"]) for e in found if e["event"] in wanted]
    assert order == [
        ("connecting", "remote"),
        ("succeeded", "remote"),
        ("connecting", "bastion"),
        ("succeeded", "bastion"),
    ], order


def test_the_human_table_names_every_host_and_its_result(fresh: Bed, tmp_path: Path) -> None:
    config = config_with_dead_host(fresh, tmp_path)
    result = tunnelauth(fresh, "xai", "remote", "dead", tmp=tmp_path, ssh_config=config)
    assert result.code == ExitStatus.SSH_FAILED, result
    err = result.stderr
    assert "tunnelauth: remote: enter the code" in err, err
    assert "tunnelauth: dead: ✗" in err and "No route to host" in err, err
    assert "1 of 2 hosts logged in" in err
