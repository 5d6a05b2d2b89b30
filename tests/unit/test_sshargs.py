"""argv building for the OpenSSH transport, and reading ssh's answers."""

from __future__ import annotations

from pathlib import Path

from tunnelauth.settings import SSHTarget
from tunnelauth.transports import sshargs


def _opts(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


def test_target_args_pass_jump_chain_config_and_identity() -> None:
    target = SSHTarget(
        host="remote",
        jump=("a", "user@b:2222"),
        ssh_config=Path("/cfg"),
        identity=(Path("/k1"),),
        port=2200,
        login="me",
        options=("ServerAliveInterval=7",),
    )
    assert sshargs.target_args(target) == [
        "-F", "/cfg", "-J", "a,user@b:2222", "-i", "/k1", "-p", "2200", "-l", "me",
        "-o", "ServerAliveInterval=7",
    ]  # fmt: skip


def test_master_forces_safe_overrides_and_backgrounds() -> None:
    argv = sshargs.master_argv("ssh", SSHTarget("h"), "/tmp/x/m", batch=True, keepalive=True)
    opts = _opts(argv)
    for must in (
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "RemoteCommand=none",
        "ControlMaster=yes",
        "ControlPath=/tmp/x/m",
        "BatchMode=yes",
        "ServerAliveInterval=5",
    ):
        assert must in opts
    assert any(o.startswith("ControlPersist=") for o in opts)
    assert argv[-2:] == ["--", "h"]
    assert "-f" in argv and "-N" in argv
    assert argv[argv.index("-e") + 1] == "none"


def test_user_options_come_first_so_they_win_over_keepalive_default() -> None:
    target = SSHTarget("h", options=("ServerAliveInterval=60",))
    argv = sshargs.master_argv("ssh", target, "/s", batch=False, keepalive=False)
    assert "ServerAliveInterval=5" not in _opts(argv)


def test_mux_clients_can_never_open_a_connection_of_their_own() -> None:
    target = SSHTarget("h", ssh_config=Path("/cfg"), jump=("j",))
    for argv in (
        sshargs.session_argv("ssh", target, "/s", "cmd"),
        sshargs.stdio_forward_argv("ssh", target, "/s", "127.0.0.1", 43827),
        sshargs.exec_argv("ssh", target, "/s", "true"),
        sshargs.control_argv("ssh", target, "/s", "check"),
    ):
        opts = _opts(argv)
        assert "ProxyCommand=false" in opts and "ControlMaster=no" in opts
        assert argv[argv.index("-S") + 1] == "/s"
        assert "-J" not in argv  # the jump chain belongs to the master only
        assert argv[argv.index("-F") + 1] == "/cfg"


def test_session_has_forced_pty_and_channel_targets_the_port() -> None:
    target = SSHTarget("h")
    assert "-tt" in sshargs.session_argv("ssh", target, "/s", "cmd")
    argv = sshargs.stdio_forward_argv("ssh", target, "/s", "127.0.0.1", 5555)
    assert argv[argv.index("-W") + 1] == "127.0.0.1:5555"
    argv6 = sshargs.stdio_forward_argv("ssh", target, "/s", "::1", 5555)
    assert argv6[argv6.index("-W") + 1] == "[::1]:5555"


def test_parse_config_dump_and_control_path() -> None:
    dump = "user me\nhostname 10.0.0.1\ncontrolpath /home/me/.ssh/cm-abc\ncontrolmaster auto\n"
    cfg = sshargs.parse_config_dump(dump)
    assert cfg["hostname"] == "10.0.0.1"
    assert sshargs.existing_control_path(cfg) == "/home/me/.ssh/cm-abc"
    assert sshargs.existing_control_path({"controlpath": "none"}) is None
    assert sshargs.existing_control_path({}) is None


def test_channel_refusals_are_recognised() -> None:
    assert (
        sshargs.channel_refusal(
            "channel 0: open failed: administratively prohibited: open failed\n"
        )
        == "administratively prohibited: open failed"
    )
    assert "connect failed" in (
        sshargs.channel_refusal("channel 1: open failed: connect failed: Connection refused") or ""
    )
    assert sshargs.channel_refusal("") is None


def test_connect_failures_are_classified() -> None:
    assert sshargs.classify_connect_failure("Host key verification failed.\n")[0] == "hostkey"
    changed = (
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
        "The fingerprint for the ED25519 key sent by the remote host is\n"
        "SHA256:abcDEF123+/=.\n"
    )
    kind, detail = sshargs.classify_connect_failure(changed)
    assert kind == "hostkey" and detail is not None and "SHA256:abcDEF123+/=" in detail
    assert sshargs.classify_connect_failure("me@h: Permission denied (publickey).")[0] == "auth"
    assert sshargs.classify_connect_failure("ssh: connect to host h port 22: No route")[0] == (
        "connect"
    )


def test_only_vv_makes_the_master_verbose() -> None:
    plain = sshargs.master_argv("ssh", SSHTarget("h"), "/s", batch=True, keepalive=False)
    loud = sshargs.master_argv(
        "ssh", SSHTarget("h"), "/s", batch=True, keepalive=False, verbose=True
    )
    assert "-v" not in plain
    at = plain.index("-e")
    assert loud == [*plain[:at], "-v", *plain[at:]]
