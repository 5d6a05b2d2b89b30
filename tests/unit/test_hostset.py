"""Which hosts a fleet command names: plain hosts, Host patterns, config groups."""

from __future__ import annotations

import pytest

from tunnelauth.errors import UsageError
from tunnelauth.hostset import FleetHost, expand, groups_of

ALIASES = ["web-1", "web-2", "db-1", "bastion"]


def names(hosts: list[FleetHost]) -> list[str]:
    return [h.name for h in hosts]


def test_plain_hosts_keep_their_order_and_appear_once() -> None:
    hosts = expand(["b", "a", "b", "u@c"], aliases=ALIASES, groups={})
    assert names(hosts) == ["b", "a", "u@c"]
    assert hosts[2].host == "u@c" and hosts[2].origin == "argument"


def test_a_pattern_names_the_matching_aliases_in_config_order() -> None:
    hosts = expand(["web-*", "db-?"], aliases=ALIASES, groups={})
    assert names(hosts) == ["web-1", "web-2", "db-1"]
    assert hosts[0].origin == "pattern web-*"


def test_a_pattern_keeps_the_user_part() -> None:
    assert names(expand(["agent@web-*"], aliases=ALIASES, groups={})) == [
        "agent@web-1",
        "agent@web-2",
    ]


def test_a_pattern_that_matches_nothing_is_an_error_not_a_smaller_fleet() -> None:
    with pytest.raises(UsageError, match="no Host alias matches 'wbe-\\*'"):
        expand(["web-1", "wbe-*"], aliases=ALIASES, groups={})


def test_a_group_names_its_members_patterns_included() -> None:
    groups = {"prod": ["db-1", "web-*"]}
    hosts = expand(["@prod", "web-1"], aliases=ALIASES, groups=groups)
    assert names(hosts) == ["db-1", "web-1", "web-2"]
    assert hosts[0].origin == "group prod"


def test_an_unknown_group_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as caught:
        expand(["@prdo"], aliases=ALIASES, groups={"prod": ["a"], "dev": ["b"]})
    assert caught.value.hint == "groups: dev, prod"


def test_a_host_that_looks_like_an_option_is_refused() -> None:
    with pytest.raises(UsageError, match="invalid host"):
        expand(["-oProxyCommand=touch x"], aliases=ALIASES, groups={})
    with pytest.raises(UsageError, match="invalid host"):
        expand(["@g"], aliases=ALIASES, groups={"g": ["-oProxyCommand=x"]})


def test_groups_table_is_checked() -> None:
    assert groups_of({"groups": {"prod": ["a", "b*"]}}, "cfg") == {"prod": ["a", "b*"]}
    with pytest.raises(UsageError, match="must be a list of hosts"):
        groups_of({"groups": {"prod": "a"}}, "cfg")
    with pytest.raises(UsageError, match="holds '@dev'") as caught:
        groups_of({"groups": {"prod": ["@dev"]}}, "cfg")
    assert "not other groups" in (caught.value.hint or "")
    with pytest.raises(UsageError, match="must be a table"):
        groups_of({"groups": ["a"]}, "cfg")


def test_inventory_values_become_options() -> None:
    host = FleetHost("web1", "10.0.0.5", "agent", 2222, ("bastion",), "inventory x")
    assert host.options() == {
        "host": "10.0.0.5",
        "login": "agent",
        "port": 2222,
        "jump": ["bastion"],
    }
    assert FleetHost("a", "a").options() == {"host": "a"}
