"""Backend choice (auto and by name), lazy imports, and the helpers both library backends share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunnelauth.errors import UsageError
from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.transports import hops, resolve

TARGET = SSHTarget(host="example")


def test_names_are_honoured() -> None:
    assert resolve.choose_backend("openssh", TARGET)[0] == "openssh"
    assert resolve.choose_backend("asyncssh", TARGET)[0] == "asyncssh"
    assert resolve.choose_backend("paramiko", TARGET)[0] == "paramiko"
    with pytest.raises(UsageError):
        resolve.choose_backend("putty", TARGET)


def test_missing_library_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "_installed", lambda module: False)
    with pytest.raises(UsageError) as info:
        resolve.choose_backend("asyncssh", TARGET)
    assert "pip install asyncssh" in (info.value.hint or "")


def test_auto_prefers_openssh_then_asyncssh_then_paramiko(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "_openssh_usable", lambda: (True, "ssh supports ControlMaster"))
    assert resolve.choose_backend("auto", TARGET)[0] == "openssh"
    monkeypatch.setattr(resolve, "_openssh_usable", lambda: (False, "no ssh client on PATH"))
    name, reason = resolve.choose_backend("auto", TARGET)
    assert name == "asyncssh" and "no ssh client" in reason
    monkeypatch.setattr(resolve, "_installed", lambda module: module == "paramiko")
    assert resolve.choose_backend("auto", TARGET)[0] == "paramiko"
    monkeypatch.setattr(resolve, "_installed", lambda module: False)
    with pytest.raises(UsageError):
        resolve.choose_backend("auto", TARGET)


def test_openssh_probe_on_this_machine() -> None:
    _usable, why = resolve._openssh_usable()
    assert why  # either way it says why


def test_make_builds_the_chosen_transport_with_its_reason() -> None:
    for backend in ("openssh", "asyncssh", "paramiko"):
        settings = Settings(target=TARGET, program="hermes", args=(), backend=backend)
        transport = resolve.make(settings)
        assert transport.name == backend
        assert getattr(transport, "choice_reason", "") == "asked for by name"


def test_startup_imports_no_ssh_library() -> None:
    """tunnelauth's CLI and the resolver must not import asyncssh or paramiko until chosen."""
    code = (
        "import sys, tunnelauth.cli, tunnelauth.flow, tunnelauth.transports.resolve as r;"
        "r.choose_backend('auto', r.SSHTarget('h'));"
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

    settings = Settings(target=TARGET, program="hermes", args=(), backend="paramiko")
    assert make_transport(settings).name == "paramiko"
