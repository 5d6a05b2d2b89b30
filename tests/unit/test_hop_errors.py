"""Errors at a jump host name that hop, keep ssh's own reason, and read alike on every backend.

The stderr texts are what OpenSSH 9.2 prints (captured on the test bed) for a failing hop.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tunnelauth.errors import HostKeyError, SSHError, at_hop
from tunnelauth.transports.hops import os_error_reason
from tunnelauth.transports.openssh_log import connect_error

GONE = "kex_exchange_identification: Connection closed by remote host\r\n" + (
    "Connection closed by UNKNOWN port 65535\r\n"
)
RESOLVE = "ssh: Could not resolve hostname nosuchjump.invalid: Name or service not known\r\n"


def test_an_unresolvable_jump_host_is_named_with_ssh_s_reason() -> None:
    error = connect_error("remote", RESOLVE + GONE, chain=["nosuchjump.invalid"])
    assert error.message == (
        "cannot connect to jump host nosuchjump.invalid (for remote): "
        "Could not resolve hostname nosuchjump.invalid: Name or service not known"
    )
    assert error.hop == "nosuchjump.invalid" and not isinstance(error, HostKeyError)


def test_the_count_of_dead_proxies_picks_the_hop_in_a_chain() -> None:
    error = connect_error("remote", RESOLVE + GONE + GONE, chain=["nosuchjump.invalid", "b"])
    assert error.message.startswith("cannot connect to jump host nosuchjump.invalid (for remote)")
    onward = "channel 0: open failed: connect failed: Temporary failure in name resolution\r\n"
    error = connect_error(
        "remote", onward + "stdio forwarding failed\r\n" + GONE + GONE, chain=["b", "x.invalid"]
    )
    assert error.message == (
        "cannot connect to jump host x.invalid (for remote): jump host b could not reach it "
        "(connect failed: Temporary failure in name resolution)"
    )


def test_a_jump_host_that_cannot_reach_the_target() -> None:
    onward = (
        "channel 0: open failed: connect failed: Connection refused\r\nstdio forwarding failed\r\n"
    )
    error = connect_error("remote", onward + GONE, chain=["bastion"])
    assert error.message == (
        "cannot connect to remote: jump host bastion could not reach it "
        "(connect failed: Connection refused)"
    )
    assert error.hop is None


def test_unknown_jump_host_key_and_refused_key_name_the_hop() -> None:
    unknown = (
        "No ED25519 host key is known for 10.0.0.2 and you have requested strict checking.\r\n"
        "Host key verification failed.\r\n"
    )
    error = connect_error("remote", unknown + GONE, chain=["bastion"])
    assert isinstance(error, HostKeyError) and error.hop == "bastion"
    assert error.message.startswith("host key for jump host bastion (for remote) could not")
    denied = "me@10.0.0.2: Permission denied (publickey).\r\n"
    error = connect_error("remote", denied + GONE, chain=["bastion"])
    assert not isinstance(error, HostKeyError)
    assert error.message == "SSH authentication to jump host bastion (for remote) failed"
    assert error.hint is not None and "`ssh bastion true`" in error.hint


def test_the_target_s_own_failure_is_unchanged_and_debug_lines_are_ignored() -> None:
    text = "debug1: Reading configuration data /etc/ssh/ssh_config\r\n"
    text += 'Authenticated to 10.0.0.2 ([10.0.0.2]:22) using "publickey".\r\n'
    text += "me@remote: Permission denied (publickey).\r\n"
    error = connect_error("remote", text, chain=["bastion"])
    assert error.message == "SSH authentication to remote failed" and error.hop is None


def test_server_text_in_the_reason_loses_its_control_sequences() -> None:
    error = connect_error("remote", "ssh: connect to host \x1b]0;pwned\x07h port 22: refused\n")
    assert "\x1b" not in error.message and "\x07" not in error.message


def test_library_errors_are_relabelled_once() -> None:
    error = SSHError("cannot connect to bastion: Connection refused", host="bastion")
    at_hop(error, "me@bastion:2222", "remote")
    assert error.message == (
        "cannot connect to jump host me@bastion:2222 (for remote): Connection refused"
    )
    at_hop(error, "outer", "remote")  # a deeper hop already named itself
    assert error.hop == "me@bastion:2222" and error.args == (error.message,)
    # A host name inside another word is not replaced.
    error = SSHError("SSH authentication to b failed", host="b")
    assert at_hop(error, "b", "r").message == "SSH authentication to jump host b (for r) failed"


def test_socket_errors_are_worded_like_openssh() -> None:
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert os_error_reason(gai, "x.invalid", 22) == (
        "Could not resolve hostname x.invalid: Name or service not known"
    )
    refused = ConnectionRefusedError(111, "Connect call failed ('10.0.0.2', 2)")
    assert os_error_reason(refused, "10.0.0.2", 2) == (
        "connect to host 10.0.0.2 port 2: Connection refused"
    )


def test_the_master_log_is_passed_on_line_by_line_as_it_is_written(tmp_path: Path) -> None:
    from tunnelauth.transports.openssh_log import LogFollower

    connect, master = tmp_path / "connect.log", tmp_path / "master.log"
    connect.write_bytes(b"ssh: Could not resolve hostname j.invalid\r\n")
    seen: list[str] = []
    follower = LogFollower([str(connect), str(master)], seen.append)
    follower.drain()
    assert seen == ["ssh: Could not resolve hostname j.invalid"]
    master.write_bytes(b"debug1: one\ndebug1: tw")  # the master is mid-line
    follower.drain()
    assert seen[1:] == ["debug1: one"]
    with master.open("ab") as fh:
        fh.write(b"o\nConnection closed")
    follower.stop()  # the rest, even without its newline
    assert seen[2:] == ["debug1: two", "Connection closed"]
