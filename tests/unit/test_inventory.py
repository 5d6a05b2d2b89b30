"""Hosts from an Ansible inventory, read by ansible-core itself (INI and YAML, groups, --limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnelauth import inventory
from tunnelauth.errors import UsageError
from tunnelauth.hostset import FleetHost

INI = """\
[web]
web1 ansible_host=10.9.0.11 ansible_user=agent
web2 ansible_port=2222

[db]
db1

[prod:children]
web
db

[web:vars]
ansible_ssh_common_args='-o ProxyJump=admin@bastion:2201'
"""

YAML = """\
all:
  children:
    web:
      hosts:
        web1: {ansible_host: 10.9.0.11, ansible_user: agent}
        web2: {ansible_port: 2222}
      vars:
        ansible_ssh_common_args: "-J admin@bastion:2201"
    db:
      hosts:
        db1:
"""


@pytest.fixture(params=["ini", "yml"])
def inventory_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"hosts.{request.param}"
    path.write_text(INI if request.param == "ini" else YAML)
    return path


def test_every_host_with_its_address_user_port_and_jump(inventory_file: Path) -> None:
    hosts = {h.name: h for h in inventory.read(inventory_file)}
    assert set(hosts) == {"web1", "web2", "db1"}
    origin = f"inventory {inventory_file}"
    assert hosts["web1"] == FleetHost(
        "web1", "10.9.0.11", "agent", None, ("admin@bastion:2201",), origin
    )
    assert hosts["web2"] == FleetHost("web2", "web2", None, 2222, ("admin@bastion:2201",), origin)
    assert hosts["db1"] == FleetHost("db1", "db1", None, None, (), origin)


def test_limit_narrows_by_group_and_by_name(inventory_file: Path) -> None:
    assert [h.name for h in inventory.read(inventory_file, "db")] == ["db1"]
    assert sorted(h.name for h in inventory.read(inventory_file, "web:!web2")) == ["web1"]


def test_a_limit_that_matches_nothing_is_an_error(inventory_file: Path) -> None:
    with pytest.raises(UsageError, match=r"no hosts in inventory .* with --limit nope"):
        inventory.read(inventory_file, "nope")


def test_an_unreadable_inventory_is_an_error_not_an_empty_fleet(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("all:\n  hosts: [unclosed\n")
    with pytest.raises(UsageError, match="cannot read inventory"):
        inventory.read(path)
    with pytest.raises(UsageError, match="does not exist"):
        inventory.read(tmp_path / "missing.ini")


def test_reading_leaves_no_scratch_files_in_home(
    inventory_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    inventory.read(inventory_file)
    assert list(home.iterdir()) == []


def test_templates_and_proxy_commands_are_refused_with_the_host_named() -> None:
    with pytest.raises(UsageError, match="'web1': ansible_host is a template"):
        inventory.host_from_vars("web1", {"ansible_host": "{{ lookup('pipe', 'id') }}"}, "inv")
    args = {"ansible_ssh_common_args": "-o ProxyCommand='ssh -W %h:%p bastion'"}
    with pytest.raises(UsageError, match="ProxyCommand is not followed"):
        inventory.host_from_vars("web1", args, "inv")
    with pytest.raises(UsageError, match="not a port"):
        inventory.host_from_vars("web1", {"ansible_port": "22; rm"}, "inv")
    with pytest.raises(UsageError, match="invalid host"):
        inventory.host_from_vars("web1", {"ansible_host": "-oProxyCommand=x"}, "inv")


@pytest.mark.parametrize(
    ("args", "hops"),
    [
        ("-J a,b", ["a", "b"]),
        ("-Ja", ["a"]),
        ("-o ProxyJump=u@a:2", ["u@a:2"]),
        ("-oProxyJump=a", ["a"]),
        ("-o 'ProxyJump a'", ["a"]),
        ("-o ProxyJump=none", []),
        ("-o StrictHostKeyChecking=no -C", []),
    ],
)
def test_jump_hops_from_ssh_args(args: str, hops: list[str]) -> None:
    assert inventory.jump_hops(args, "x") == hops
