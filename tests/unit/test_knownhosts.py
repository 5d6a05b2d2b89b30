"""The known_hosts judgement without a server (the comparison with ssh is in
test_knownhosts_vs_openssh.py, which needs root)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tunnelauth import knownhosts
from tunnelauth.knownhosts import Verdict


def _key(seed: int) -> str:
    blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


A, B = _key(1), _key(2)


def _blob(key: str) -> bytes:
    return base64.b64decode(key.split()[1])


@pytest.mark.parametrize(
    ("hosts", "name", "applies"),
    [
        ("web.example.test", "web.example.test", True),
        ("WEB.example.TEST", "web.example.test", True),
        ("*.example.test", "web.example.test", True),
        ("web.example.tes?", "web.example.test", True),
        ("*.example.test,!web.example.test", "web.example.test", False),
        ("!web.example.test,*", "web.example.test", False),
        ("[web.example.test]:2222", "[web.example.test]:2222", True),
        ("[web.example.test]:2222", "web.example.test", False),
        ("[*]:2222", "[web.example.test]:2222", True),
        ("[ab]", "a", False),  # brackets are not a character class
        ("10.0.0.0/8", "10.1.2.3", False),  # nor is a slash an address range
        ("", "web.example.test", False),
    ],
)
def test_host_fields_match_as_in_ssh(hosts: str, name: str, applies: bool) -> None:
    assert knownhosts.host_matches(hosts, name) is applies


def test_a_hashed_name_matches_only_that_name() -> None:
    hashed = knownhosts.hashed_name("[web.example.test]:2222")
    assert hashed.startswith("|1|")
    assert knownhosts.host_matches(hashed, "[web.example.test]:2222")
    assert not knownhosts.host_matches(hashed, "web.example.test")
    assert not knownhosts.host_matches("|1|garbage|x", "web.example.test")


@pytest.mark.parametrize(
    ("hostname", "port", "alias", "name"),
    [
        ("Web.Example.Test", 22, None, "web.example.test"),
        ("web", 2222, None, "[web]:2222"),
        ("web", 2222, "MyAlias", "myalias"),
    ],
)
def test_lookup_name(hostname: str, port: int, alias: str | None, name: str) -> None:
    assert knownhosts.lookup_name(hostname, port, alias) == name


def test_unreadable_lines_are_skipped() -> None:
    text = "\n".join(
        [
            "# web " + B,
            "@bogus web " + B,
            "web ssh-ed25519",
            "web ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",  # the type alone: no key
            "web ssh-rsa " + B.split()[1],  # the key says it is another type
            "\tweb\t" + A.replace(" ", "\t"),
        ]
    )
    known = knownhosts.for_host(knownhosts.parse(text), "web", 22)
    assert known.keys == (_blob(A),)


@pytest.mark.parametrize(
    ("lines", "port", "offered", "verdict"),
    [
        ([f"web {A}"], 22, A, Verdict.KNOWN),
        ([f"*.test,web {A}"], 22, B, Verdict.CHANGED),
        ([f"web {A}", f"@revoked * {A}"], 22, A, Verdict.REVOKED),
        ([f"@cert-authority web {A}"], 22, A, Verdict.UNKNOWN),
        ([f"web {A}"], 2222, A, Verdict.KNOWN),  # ssh's fallback to the bare name
        ([f"web {A}"], 2222, B, Verdict.UNKNOWN),  # ... which never makes a change
        ([f"web {A}", f"@revoked web {A}"], 2222, A, Verdict.UNKNOWN),
        ([f"[web]:2222 {A}", f"web {B}"], 2222, B, Verdict.CHANGED),
    ],
)
def test_verdicts(lines: list[str], port: int, offered: str, verdict: Verdict) -> None:
    known = knownhosts.for_host(knownhosts.parse("\n".join(lines)), "web", port)
    assert known.judge(_blob(offered)) is verdict
    # what a library may accept unasked is exactly what the judgement calls known
    unasked = _blob(offered) in known.trusted and _blob(offered) not in known.revoked
    assert unasked is (verdict is Verdict.KNOWN)


def test_hashknownhosts_falls_back_to_the_system_config_unless_f(tmp_path: Path) -> None:
    """Debian's /etc/ssh/ssh_config says HashKnownHosts yes; ssh -F skips that file."""
    system_file = tmp_path / "ssh_config"
    system_file.write_text("Host *\n    HashKnownHosts yes\n")
    assert knownhosts.SYSTEM_CONFIG == "/etc/ssh/ssh_config"  # where ssh reads it by default

    def hashing(value: str | None, *, system: bool) -> bool:
        return knownhosts.wants_hashing(value, "web", system=system, system_config=str(system_file))

    assert hashing(None, system=True)
    assert not hashing(None, system=False)
    assert not hashing("no", system=True)  # the user's value wins
    assert hashing("yes", system=False)


def test_record_writes_the_first_user_file_only(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    knownhosts.record([str(first), str(second)], "[web]:2222", A, hashed=False)
    knownhosts.record([str(first), str(second)], "[web]:2222", B, hashed=True)
    plain, hashed = first.read_text().splitlines()
    assert plain == f"[web]:2222 {A}"
    assert hashed.endswith(B) and knownhosts.host_matches(hashed.split()[0], "[web]:2222")
    assert not second.exists()
    knownhosts.record([], "web", A, hashed=False)  # `UserKnownHostsFile none`: nowhere
