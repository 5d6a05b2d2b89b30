"""Backend choice (auto and by name), lazy imports, and the helpers both library backends share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunnelauth.errors import UsageError
from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.transports import hops, resolve
from tunnelauth.transports.choice import Choice, choose, openssh_usable
from tunnelauth.transports.headstart import HeadStart

TARGET = SSHTarget(host="example")


def _settings(backend: str, target: SSHTarget = TARGET) -> Settings:
    return Settings(target=target, program="hermes", args=(), backend=backend)


def test_names_are_honoured() -> None:
    assert choose(_settings("openssh")).name == "openssh"
    assert choose(_settings("asyncssh")).name == "asyncssh"
    assert choose(_settings("paramiko")).name == "paramiko"
    with pytest.raises(UsageError):
        choose(_settings("putty"))


def test_missing_library_gives_an_install_hint() -> None:
    with pytest.raises(UsageError) as info:
        choose(_settings("asyncssh"), installed=lambda module: False)
    assert "pip install asyncssh" in (info.value.hint or "")


def test_auto_prefers_openssh_then_asyncssh_then_paramiko() -> None:
    auto = _settings("auto")
    assert choose(auto, which=lambda name: "/usr/bin/ssh").name == "openssh"
    name, reason = choose(auto, which=lambda name: None)
    assert name == "asyncssh" and "no ssh client" in reason
    only_paramiko = choose(auto, which=lambda name: None, installed=lambda m: m == "paramiko")
    assert only_paramiko.name == "paramiko"
    with pytest.raises(UsageError):
        choose(auto, which=lambda name: None, installed=lambda module: False)


def test_openssh_probe_on_this_machine() -> None:
    _usable, why = openssh_usable()
    assert why  # either way it says why


def test_make_builds_the_chosen_transport_with_its_reason() -> None:
    for backend in ("openssh", "asyncssh", "paramiko"):
        transport = resolve.make(_settings(backend))
        assert transport.name == backend
        assert transport.choice == Choice(backend, "asked for by name")


def test_make_uses_the_choice_of_a_head_start_made_for_its_target() -> None:
    """The head start's choice is the run's; one made for another target is not adopted."""
    chosen = Choice("paramiko", "auto: no ssh client on PATH; paramiko is installed")
    with HeadStart(chosen, target=TARGET) as head:
        transport = resolve.make(_settings("auto"), head)
        assert transport.choice == chosen and transport.name == "paramiko"
        other = resolve.make(_settings("auto", SSHTarget(host="other")), head)
        assert other.choice == choose(_settings("auto")), "another target chooses afresh"


def test_startup_imports_no_ssh_library() -> None:
    """tunnelauth's CLI and the resolver must not import asyncssh or paramiko until chosen."""
    code = (
        "import sys, tunnelauth.cli, tunnelauth.flow, tunnelauth.transports.resolve;"
        "from tunnelauth.settings import Settings, SSHTarget;"
        "from tunnelauth.transports.choice import choose;"
        "choose(Settings(target=SSHTarget('h'), program='hermes', args=()));"
        "print(sorted(m for m in ('asyncssh', 'paramiko') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("bastion", (None, "bastion", None)),
        ("me@bastion:2222", ("me", "bastion", 2222)),
        ("ssh://me@bastion:2200", ("me", "bastion", 2200)),
        ("[::1]:22", (None, "::1", 22)),
        ("a@b@c", ("a@b", "c", None)),
    ],
)
def test_split_hop(spec: str, parts: tuple[str | None, str, int | None]) -> None:
    assert hops.split_hop(spec) == parts


def test_split_hop_rejects_bad_ports() -> None:
    for spec in ("host:0", "host:http", "host:70000", ""):
        with pytest.raises(UsageError):
            hops.split_hop(spec)


def test_jump_chain_and_refusal_wording() -> None:
    assert hops.jump_chain("a, b,c") == ("a", "b", "c")
    assert hops.jump_chain("none") == () and hops.jump_chain(None) == ()
    assert hops.refusal_message(1, "open failed") == "administratively prohibited: open failed"
    assert hops.refusal_message(2, "Connection refused") == "connect failed: Connection refused"
    assert hops.refusal_message(9, "") == "open failed (code 9)"


def test_flow_uses_the_resolver(tmp_path: Path) -> None:
    from tunnelauth.flow import make_transport

    assert make_transport(_settings("paramiko")).name == "paramiko"
