"""Host keys on the bed: the user's StrictHostKeyChecking is followed, never weakened.

Only the target's key is taken out of known_hosts (the jump host stays known), so each test is
about the target alone. An unknown key is refused in a batch run with its fingerprint shown and
nothing run on the remote; ``--accept-new`` adds it like ``StrictHostKeyChecking=accept-new``;
``ask`` at a terminal asks like ssh and a "yes" adds it. A key known_hosts lists for the target
only through a wildcard or negated pattern is a changed key when the server offers another.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pexpect
import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import derived_ssh_config, tunnelauth
from tunnelauth.status import ExitStatus


def _without_target(bed: Bed, tmp: Path, *extra: str) -> tuple[Path, Path]:
    """A known_hosts without the target's keys, and a config that uses it."""
    known = tmp / "known_hosts"
    kept = [
        line
        for line in bed.known_hosts.read_text().splitlines()
        if line.split()[:1] != [bed.remote_ip]
    ]
    known.write_text("\n".join(kept) + "\n")
    config = derived_ssh_config(bed, tmp / "cfg", [*extra, f"UserKnownHostsFile {known}"])
    return known, config


def test_unknown_key_is_refused_in_batch_with_its_fingerprint(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    _, config = _without_target(fresh, tmp_path)
    before = fresh.auth_count("remote")
    result = tunnelauth(
        fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    assert "SHA256:" in result.stderr, "the offered key's fingerprint is shown"
    assert fresh.auth_count("remote") == before, "nothing authenticated, nothing ran"
    assert fresh.fake_record("spotify") is None


def test_accept_new_adds_the_key_and_the_next_run_trusts_it(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    known, config = _without_target(fresh, tmp_path)
    lines = len(known.read_text().splitlines())
    result = tunnelauth(
        fresh,
        "spotify",
        "remote",
        "--accept-new",
        tmp=tmp_path,
        backend=backend,
        ssh_config=config,
    )
    assert result.code == ExitStatus.OK, result
    assert len(known.read_text().splitlines()) > lines, "the new key was added"
    again = tunnelauth(fresh, "spotify", "remote", tmp=tmp_path, backend=backend, ssh_config=config)
    assert again.code == ExitStatus.OK, again


def _at_terminal(config: Path, backend: str, tmp_path: Path) -> pexpect.spawn:
    """A login to ``remote`` at a terminal (no CI variable), with the given ssh config."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    return pexpect.spawn(
        "tunnelauth",
        ["spotify", "remote", "-F", str(config), "--backend", backend, "--no-browser"],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )


def test_ask_at_a_terminal_asks_like_ssh(fresh: Bed, tmp_path: Path, backend: str) -> None:
    known, config = _without_target(fresh, tmp_path, "StrictHostKeyChecking ask", "BatchMode no")
    lines = len(known.read_text().splitlines())
    shell = _at_terminal(config, backend, tmp_path)
    try:
        shell.expect(r"continue connecting \(yes/no/\[fingerprint\]\)\?")
        assert "SHA256:" in (shell.before or "")
        shell.sendline("yes")
        shell.expect("open this page in a browser")
        shell.sendintr()
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
    assert shell.exitstatus == ExitStatus.INTERRUPTED, shell.before
    assert len(known.read_text().splitlines()) > lines, "the accepted key was added"


def test_ask_with_the_users_batchmode_refuses_even_at_a_terminal(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    # The bed's config says BatchMode yes: ssh never asks then, and neither may tunnelauth.
    _, config = _without_target(fresh, tmp_path, "StrictHostKeyChecking ask")
    shell = _at_terminal(config, backend, tmp_path)
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == ExitStatus.HOST_KEY, shell.before
    assert "continue connecting" not in (shell.before or "")
    assert fresh.fake_record("spotify") is None


def _fingerprint(public_key: Path) -> str:
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key)],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    return listed.stdout.split()[1]


@pytest.mark.parametrize("form", ["wildcard", "negated"])
@pytest.mark.parametrize("accept_new", [False, True], ids=["policy-yes", "accept-new"])
def test_a_pattern_line_with_another_key_is_a_changed_key(
    fresh: Bed, tmp_path: Path, backend: str, form: str, accept_new: bool
) -> None:
    """The man in the middle case: known_hosts lists the target through a pattern with the
    real key, the target offers another one. ssh refuses it as changed; so does every backend,
    with --accept-new too, and known_hosts is left as it was."""
    # The bed's real key plays the man in the middle; the "real" key is a fresh one.
    listed = tmp_path / "listed_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(listed)], check=True, timeout=20
    )
    prefix = fresh.remote_ip.rsplit(".", 1)[0]
    pattern = {"wildcard": f"{prefix}.*", "negated": f"*,!{fresh.bastion_ip}"}[form]
    known, config = _without_target(fresh, tmp_path)
    key = " ".join(Path(f"{listed}.pub").read_text().split()[:2])
    known.write_text(known.read_text() + f"{pattern} {key}\n")
    before = known.read_bytes()
    flags = ["--accept-new"] if accept_new else []
    result = tunnelauth(
        fresh, "spotify", "remote", *flags, tmp=tmp_path, backend=backend, ssh_config=config
    )
    assert result.code == ExitStatus.HOST_KEY, result
    offered = _fingerprint(fresh.tmp / "remote" / "ssh_host_ed25519_key.pub")
    assert offered in result.stderr, "the fingerprint the server now offers is named"
    assert "changed" in result.stderr.lower(), result.stderr
    assert known.read_bytes() == before, "known_hosts is unchanged"
    assert fresh.fake_record("spotify") is None
