"""Unknown host keys for the library backends: policy, the question, known_hosts."""

from __future__ import annotations

import os
import pty
import select
import signal
import threading
from pathlib import Path

import pytest

from tunnelauth import hostkeys
from tunnelauth.transports import sshargs

FP = "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


@pytest.mark.parametrize(
    ("value", "flag", "policy"),
    [
        (None, False, "ask"),
        ("ask", False, "ask"),
        ("yes", False, "yes"),
        ("Yes", True, "accept-new"),
        ("accept-new", False, "accept-new"),
        ("no", False, "accept-new"),  # never looser than accept-new: a changed key is refused
        ("bogus", False, "ask"),
    ],
)
def test_policy(value: str | None, flag: bool, policy: str) -> None:
    assert hostkeys.normalize_policy(value, accept_new=flag) == policy


def test_option_value_first_wins() -> None:
    options = ["User=x", "StrictHostKeyChecking=accept-new", "stricthostkeychecking=yes"]
    assert hostkeys.option_value(options, "StrictHostKeyChecking") == "accept-new"
    assert hostkeys.option_value(["A B"], "a") == "B"
    assert hostkeys.option_value([], "a") is None


def test_config_policy_reads_the_users_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host box\n  StrictHostKeyChecking yes\nHost *\n  User u\n")
    assert hostkeys.config_policy([str(config)], "box") == "yes"
    assert hostkeys.config_policy([str(config)], "other") is None
    assert hostkeys.config_policy([str(tmp_path / "missing")], "box") is None


def test_decide_follows_the_policy_and_never_asks_in_batch() -> None:
    asked: list[str] = []

    def ask(text: str, fingerprint: str) -> bool:
        asked.append(text)
        return True

    common = {"host": "box", "key_type": "ssh-ed25519", "fingerprint": FP, "ask": ask}
    assert hostkeys.decide("accept-new", batch=True, **common)  # type: ignore[arg-type]
    assert not hostkeys.decide("yes", batch=False, **common)  # type: ignore[arg-type]
    assert not hostkeys.decide("ask", batch=True, **common)  # type: ignore[arg-type]
    assert asked == []
    assert hostkeys.decide("ask", batch=False, **common)  # type: ignore[arg-type]
    assert FP in asked[0] and "(yes/no/[fingerprint])?" in asked[0]


@pytest.mark.parametrize(
    ("answer", "verdict"), [("yes", True), ("YES\n", True), (FP, True), ("no", False), ("y", None)]
)
def test_answers(answer: str, verdict: bool | None) -> None:
    assert hostkeys.answer_accepts(answer, FP) is verdict


def test_the_question_is_asked_on_the_terminal_until_answered() -> None:
    # If this pty becomes the test's controlling terminal, closing it would send SIGHUP.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        _ask_on_a_pty()
    finally:
        signal.signal(signal.SIGHUP, previous)


def _ask_on_a_pty() -> None:
    main, follower = pty.openpty()
    tty = os.ttyname(follower)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(hostkeys.ask_terminal("Q? ", FP, tty)))
    thread.start()
    try:
        os.write(main, b"maybe\n")
        os.write(main, FP.encode() + b"\n")
        thread.join(10)
        shown = b""
        while select.select([main], [], [], 0.5)[0]:
            shown += os.read(main, 4096)
    finally:
        os.close(main)
        os.close(follower)
    assert result == [True]
    assert b"Q? " in shown and b"Please type 'yes', 'no' or the fingerprint: " in shown


def test_without_a_terminal_the_answer_is_no(tmp_path: Path) -> None:
    assert hostkeys.ask_terminal("Q? ", FP, str(tmp_path / "no-tty")) is False


def test_add_known_host_appends_private_file(tmp_path: Path) -> None:
    path = tmp_path / "ssh" / "known_hosts"
    hostkeys.add_known_host(str(path), ["[box]:2222"], "ssh-ed25519 AAAAC3 comment\n")
    hostkeys.add_known_host(str(path), ["box"], "ssh-ed25519 AAAAC4")
    assert path.read_text() == "[box]:2222 ssh-ed25519 AAAAC3 comment\nbox ssh-ed25519 AAAAC4\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_server_host_key_is_read_from_ssh_v() -> None:
    log = (
        "debug1: Server host key: ssh-ed25519 SHA256:jumpjumpjump\n"
        "debug1: Server host key: ssh-ed25519 SHA256:targettarget+/=\n"
        "No ED25519 host key is known for remote and you have requested strict checking.\n"
    )
    assert sshargs.server_host_key(log) == "ssh-ed25519 SHA256:targettarget+/="
    assert sshargs.server_host_key("nothing") is None


@pytest.mark.parametrize(
    ("config", "ours"),
    [
        ({}, True),
        ({"serveraliveinterval": "0"}, True),
        ({"serveraliveinterval": "300", "batchmode": "yes"}, True),  # Debian's batch default
        ({"serveraliveinterval": "300", "batchmode": "no"}, False),
        ({"serveraliveinterval": "30"}, False),
    ],
)
def test_keepalive_only_when_the_user_chose_none(config: dict[str, str], ours: bool) -> None:
    assert sshargs.keepalive_unset(config) is ours


def test_batchmode_in_the_config_means_never_ask(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host *\n  BatchMode yes\n")
    assert hostkeys.never_asks(hostkeys.config_value([str(config)], "box", "BatchMode"))
    assert not hostkeys.never_asks(None)
