"""The head start: adopted once by its transport; discarded (master ended, socket closed) if not."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from fresh_python import run_json

from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.transports import early_dial, master
from tunnelauth.transports.choice import Choice
from tunnelauth.transports.headstart import HeadStart, prepare

DEADLINE = 30.0
TARGET = SSHTarget(host="box")


@pytest.fixture
def fake_ssh(tmp_path: Path) -> tuple[str, Path]:
    """An ssh stand-in: ``-G`` prints a config; a master keeps authenticating (it never ends by
    itself) and listens on its socket; ``-O exit`` is written down in the second path."""
    said = tmp_path / "said"
    ssh = tmp_path / "ssh"
    ssh.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -O exit "*) echo "$*" >> {said}; exit 0 ;;\n'
        '  *" -G "*) printf "hostname box\\nport 22\\ncontrolpath none\\n"; exit 0 ;; esac\n'
        'for arg; do case "$arg" in ControlPath=*) : > "${arg#ControlPath=}" ;; esac; done\n'
        "exec sleep 600\n"
    )
    ssh.chmod(0o755)
    return str(ssh), said


def _spawn(ssh: str) -> master.Master:
    """A master that listens on its socket (and would run until ended)."""
    started = master.spawn(ssh, TARGET, {}, master.make_dir(), batch=True)
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(started.socket):
        assert time.monotonic() < deadline, "the stand-in never made its socket"
        assert started.proc.poll() is None
        time.sleep(0.01)
    return started


def _ahead(ssh: str, started: master.Master | None) -> master.Ahead:
    return master.Ahead(ssh, TARGET, {"hostname": "box"}, started)


def test_discard_ends_a_master_nobody_adopted(fake_ssh: tuple[str, Path]) -> None:
    ssh, said = fake_ssh
    started = _spawn(ssh)
    try:
        with HeadStart(Choice("openssh", "test"), target=TARGET, ahead=_ahead(ssh, started)):
            assert started.proc.poll() is None
        assert started.proc.poll() is not None, "the master still runs"
        assert not os.path.exists(started.tempdir), "its temp dir was left behind"
        assert f"-S {started.socket}" in said.read_text(), "the listening master was not told"
    finally:
        master.end(started, ssh, TARGET)


def test_an_adopted_master_is_handed_over_once_and_left_alone(fake_ssh: tuple[str, Path]) -> None:
    ssh, _ = fake_ssh
    started = _spawn(ssh)
    try:
        with HeadStart(target=TARGET, ahead=_ahead(ssh, started)) as head:
            assert head.take_openssh(SSHTarget(host="other")) is None, "made for another target"
            adopted = head.take_openssh(TARGET)
            assert adopted is not None and adopted.master is started
            assert head.take_openssh(TARGET) is None, "handed over twice"
        assert started.proc.poll() is None, "the head start ended what its transport adopted"
        assert os.path.isdir(started.tempdir)
    finally:
        master.end(started, ssh, TARGET)
    assert started.proc.poll() is not None and not os.path.exists(started.tempdir)


def test_discard_ends_the_master_even_when_the_login_fails(fake_ssh: tuple[str, Path]) -> None:
    ssh, _ = fake_ssh
    started = _spawn(ssh)
    try:
        with pytest.raises(RuntimeError), HeadStart(ahead=_ahead(ssh, started)):
            raise RuntimeError("the run failed before connecting")
        assert started.proc.poll() is not None
    finally:
        master.end(started, ssh, TARGET)


def test_discard_closes_a_dial_nobody_claimed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        dial = early_dial.Dial()
        dial.address = listener.getsockname()
        dial.sock = socket.create_connection(listener.getsockname(), DEADLINE)
        dial.done.set()
        accepted, _ = listener.accept()
        with accepted:
            accepted.settimeout(DEADLINE)
            with HeadStart(dial=dial) as head:
                pass
            assert accepted.recv(64) == b"", "the early connection is still open"
            assert head.take_socket(*listener.getsockname(), DEADLINE) is None


def test_a_claimed_socket_is_the_transports_and_asked_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        host, port = listener.getsockname()
        dial = early_dial.Dial()
        dial.address, dial.sock = (host, port), socket.create_connection((host, port), DEADLINE)
        dial.done.set()
        accepted, _ = listener.accept()
        with accepted, HeadStart(dial=dial) as head:
            sock = head.take_socket(host, port, DEADLINE)
            assert sock is not None
            with sock:
                assert head.take_socket(host, port, DEADLINE) is None
                head.discard()
                sock.sendall(b"still open")
                accepted.settimeout(DEADLINE)
                assert accepted.recv(64) == b"still open"


def test_prepare_starts_the_master_of_a_batch_openssh_run(fake_ssh: tuple[str, Path]) -> None:
    """The master starts with the head start, before anything heavy is imported; interactive
    runs and other backends start none; leaving the block ends it."""
    ssh, said = fake_ssh
    found = run_json(
        "import json, os, sys, time\n"
        f"os.environ['PATH'] = {str(Path(ssh).parent)!r} + ':' + os.environ['PATH']\n"
        "from tunnelauth.settings import Settings, SSHTarget\n"
        "from tunnelauth.transports.choice import Choice\n"
        "from tunnelauth.transports.headstart import prepare\n"
        "heavy = ('asyncio', 'rich', 'typer', 'tunnelauth.flow', 'asyncssh', 'paramiko',\n"
        "         'dataclasses', 'inspect')\n"
        "target = SSHTarget(host='box')\n"
        "out = {}\n"
        "for name, batch in (('openssh', True), ('openssh', False), ('paramiko', True)):\n"
        "    settings = Settings(target=target, program='hermes', args=(), backend=name,\n"
        "                        batch=batch)\n"
        "    with prepare(Choice(name, 'test'), settings) as head:\n"
        "        out['heavy ' + name] = [m for m in heavy if m in sys.modules]\n"
        "        started = head.master\n"
        "        out[f'{name} {batch}'] = started is not None\n"
        "        if started is not None:\n"
        "            deadline = time.monotonic() + 30\n"
        "            while not os.path.exists(started.socket) and time.monotonic() < deadline:\n"
        "                time.sleep(0.01)\n"
        "            out['running'] = started.proc.poll() is None\n"
        "            out['tempdir'] = started.tempdir\n"
        "print(json.dumps(out))\n"
    )
    assert found.pop("heavy openssh") == [] and found.pop("heavy paramiko") == []
    tempdir = found.pop("tempdir")
    assert found == {
        "openssh True": True,
        "running": True,
        "openssh False": False,
        "paramiko True": False,
    }
    assert not os.path.exists(tempdir), "the master nobody adopted was not ended"
    assert said.read_text().count("-O exit") == 1


def test_prepare_imports_nothing_heavy_on_any_backend() -> None:
    """Every part starts before asyncio, rich, the flow or an SSH library is imported."""
    found = run_json(
        "import json, sys\n"
        "from tunnelauth.settings import Settings, SSHTarget\n"
        "from tunnelauth.transports.choice import Choice\n"
        "from tunnelauth.transports.headstart import prepare\n"
        "heavy = ('asyncio', 'rich', 'typer', 'tunnelauth.flow', 'asyncssh', 'paramiko',\n"
        "         'dataclasses', 'inspect')\n"
        "target = SSHTarget(host='127.0.0.1', port=1)\n"
        "for name in ('asyncssh', 'paramiko'):\n"
        "    settings = Settings(target=target, program='hermes', args=(), backend=name)\n"
        "    with prepare(Choice(name, 'test'), settings) as head:\n"
        "        if head.lookups is not None:\n"
        "            assert head.lookups.done.wait(60)\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    assert found == []


def test_prepare_without_a_batch_master_leaves_nothing_to_discard() -> None:
    settings = Settings(target=TARGET, program="hermes", args=(), backend="openssh")
    with prepare(Choice("openssh", "test"), settings) as head:
        assert head.take_openssh(TARGET) is None
        assert head.take_socket("box", 22, DEADLINE) is None
        assert head.lookups is None
