"""Errors name the right thing: the jump host that failed, ssh's own reason, the hop's key.

Each test runs the real CLI on the bed (for every backend where the failure is the backend's
to describe) and checks the exit code and the first line the user sees.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.bed.netbed import Bed
from tests.e2e.helpers import Result, derived_ssh_config, tunnelauth
from tunnelauth.status import ExitStatus


def first_line(result: Result) -> str:
    """The first line tunnelauth printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert lines, result
    return lines[0]


def test_an_unresolvable_jump_host_is_named_with_ssh_s_reason(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result = tunnelauth(
        fresh, "-J", "nosuchjump.invalid", "spotify", "remote-direct", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.SSH_FAILED, result
    line = first_line(result)
    assert line.startswith(
        "✗ cannot connect to jump host nosuchjump.invalid (for remote-direct): "
        "Could not resolve hostname nosuchjump.invalid"
    ), result
    assert "UNKNOWN port 65535" not in result.stderr


def test_a_jump_host_refusing_the_connection_is_named(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    hop = f"{fresh.bastion_ip}:2"  # nothing listens on port 2 of the bastion
    result = tunnelauth(fresh, "-J", hop, "spotify", "remote-direct", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.SSH_FAILED, result
    assert first_line(result) == (
        f"✗ cannot connect to jump host {hop} (for remote-direct): "
        f"connect to host {fresh.bastion_ip} port 2: Connection refused"
    ), result


def test_a_jump_host_refusing_the_key_is_named(fresh: Bed, tmp_path: Path, backend: str) -> None:
    config = _refused_key_config(fresh, tmp_path)
    result = tunnelauth(
        fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.SSH_FAILED, result
    assert first_line(result).startswith(
        "✗ SSH authentication to jump host bastion (for remote) failed"
    ), result
    assert "check that `ssh bastion true` works" in result.stderr, result


def test_a_jump_host_that_cannot_reach_the_target_is_named(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    result = tunnelauth(
        fresh, "-J", "bastion", "-p", "2", "spotify", "remote-direct", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.SSH_FAILED, result
    assert first_line(result).startswith(
        "✗ cannot connect to remote-direct: jump host bastion could not reach it (connect failed"
    ), result


def _without_bastion_key(bed: Bed, tmp: Path) -> tuple[Path, str]:
    """A config whose known_hosts lacks the bastion's key, and that key's fingerprint."""
    lines = bed.known_hosts.read_text().splitlines()
    bastion = [line for line in lines if line.split()[0] == bed.bastion_ip]
    assert bastion, "the bed lists the bastion's key"
    listed = tmp / "bastion_key"
    listed.write_text("\n".join(bastion) + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(listed)], capture_output=True, text=True, timeout=20
    )
    fingerprint = out.stdout.split()[1]
    known = tmp / "known_hosts"
    known.write_text("\n".join(line for line in lines if line not in bastion) + "\n")
    config = derived_ssh_config(bed, tmp / "cfg", [f"UserKnownHostsFile {known}"])
    return config, fingerprint


def test_an_unknown_jump_host_key_names_the_hop_and_its_fingerprint(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    config, fingerprint = _without_bastion_key(fresh, tmp_path)
    before = fresh.auth_counts()
    result = tunnelauth(
        fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    line = first_line(result)
    assert line.startswith("✗ host key for jump host bastion (for remote) could not be verified")
    assert fingerprint in line, result
    assert fresh.auth_counts() == before, "nothing authenticated anywhere"


def test_doctor_names_the_jump_host_whose_key_is_unknown(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    config, fingerprint = _without_bastion_key(fresh, tmp_path)
    result = tunnelauth(
        fresh, "doctor", "remote", "--json", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    detail = checks["host key"]["detail"]
    assert checks["host key"]["status"] == "fail"
    assert detail.startswith("host key for jump host bastion (for remote)"), detail
    assert fingerprint in detail, detail


# What each backend's own debug output says about the server's version.
SERVER_VERSION_LINE = {
    "openssh": "debug1: Remote protocol version 2.0, remote software version OpenSSH_",
    "asyncssh": "asyncssh: [conn=0] Received version SSH-2.0-OpenSSH_",
    "paramiko": "paramiko.transport: Remote version/idstring: SSH-2.0-OpenSSH_",
}


def _refused_key_config(bed: Bed, tmp: Path) -> Path:
    key = tmp / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=20
    )
    config = tmp / "cfg"
    config.write_text(bed.ssh_config.read_text().replace(str(bed.identity), str(key)))
    return config


def test_vv_shows_ssh_s_own_debug_output_and_v_does_not(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    config = _refused_key_config(fresh, tmp_path)
    verdict = "✗ SSH authentication to jump host bastion (for remote) failed"
    once = tunnelauth(
        fresh, "-v", "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert once.code == ExitStatus.SSH_FAILED, once
    assert SERVER_VERSION_LINE[backend] not in once.stderr, once
    assert "debug1:" not in once.stderr
    twice = tunnelauth(
        fresh, "-vv", "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert twice.code == ExitStatus.SSH_FAILED, twice
    assert SERVER_VERSION_LINE[backend] in twice.stderr, twice
    if backend == "openssh":  # the jump host's ssh (a child of the master) speaks too
        assert "Permission denied (publickey)" in twice.stderr
    failed = [line for line in twice.stderr.splitlines() if line.startswith("✗")]
    assert failed and failed[0].startswith(verdict), twice


def test_vv_on_a_login_that_works_shows_the_debug_output(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    # A device-code login: no laptop port shared with other runs on this machine.
    result = tunnelauth(fresh, "-vv", "xai", "remote", tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    assert "Device approved" in result.dom
    assert SERVER_VERSION_LINE[backend] in result.stderr, result


def _with_user_master(bed: Bed, tmp: Path, host: str) -> Path:
    """A config with a ControlPath for ``host``, and the user's master running for it."""
    config = derived_ssh_config(bed, tmp / "cfg", [f"Host {host}", f"  ControlPath {tmp}/cm"])
    master = ["ssh", "-F", str(config), "-o", "ControlMaster=yes", "-o", "ControlPersist=60"]
    subprocess.run([*master, "-fN", host], check=True, timeout=30)
    return config


def _end_user_master(config: Path, host: str) -> None:
    subprocess.run(
        ["ssh", "-F", str(config), "-O", "exit", host], capture_output=True, timeout=10, check=False
    )


def test_doctor_judges_forwarding_through_a_live_user_master(fresh: Bed, tmp_path: Path) -> None:
    config = _with_user_master(fresh, tmp_path, "remote")
    try:
        before = fresh.auth_counts()
        result = tunnelauth(fresh, "doctor", "remote", "--json", tmp=tmp_path, ssh_config=config)
        assert fresh.auth_counts() == before, "the live master was used: no new login"
    finally:
        _end_user_master(config, "remote")
    assert result.code == ExitStatus.OK, result
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert "reusing your live master" in checks["controlmaster"]["detail"]
    assert checks["forwarding"]["status"] == "ok", checks["forwarding"]


def test_doctor_shows_the_fix_when_forwarding_through_a_user_master_is_refused(
    fresh: Bed, tmp_path: Path
) -> None:
    config = _with_user_master(fresh, tmp_path, "remote-nofwd")
    try:
        result = tunnelauth(
            fresh, "doctor", "remote-nofwd", "--json", tmp=tmp_path, ssh_config=config
        )
    finally:
        _end_user_master(config, "remote-nofwd")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert "reusing your live master" in checks["controlmaster"]["detail"]
    forwarding = checks["forwarding"]
    assert forwarding["status"] == "warn" and "refused" in forwarding["detail"], forwarding
    assert "AllowTcpForwarding" in forwarding["fix"]
    assert result.code == ExitStatus.OK, "the callback is relayed: a login can still work"
