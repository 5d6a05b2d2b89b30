"""Bed extras for what a person types: a password sshd, a one-time-code server, sudo users.

Added to a built ``Bed`` (``build(bed)``) and removed by ``Interactive.close()`` (the reaper
removes them too if the run is killed: ``reaper.remove_extras``). Only bed-made users are
touched: the test user gets a real password (``chpasswd``), two more users are created, and
one sudoers drop-in ``/etc/sudoers.d/<bed id>`` says who may become whom. The machine's PAM
stack, root's password and the global sudoers file are never changed.

```
 remote netns   sshd :2200        password only (PubkeyAuthentication no, UsePAM no)
                otp_server :2201  asyncssh: keyboard-interactive password, then a one-time code
 users          <user>n           the test user may sudo to it without a password
                <user>p           the test user may sudo to it with the test user's password
```
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.bed import SSHD, BedError, run, wait_for
from tests.bed.netbed import FAKES, Bed, Daemon, _start_daemon, _wait_listening
from tests.bed.reaper import SUDOERS_D, remove_extras

PASSWORD_PORT = 2200
OTP_PORT = 2201

PASSWORD_SSHD = """\
Port {port}
ListenAddress 0.0.0.0
HostKey {hostdir}/ssh_host_ed25519_key
PidFile {hostdir}/sshd.pid
PubkeyAuthentication no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes yes
PermitRootLogin no
AllowUsers {user}
AllowTcpForwarding yes
X11Forwarding no
UseDNS no
PrintMotd no
LogLevel VERBOSE
"""

# Host blocks first: in ssh the first value of an option wins over the bed's `Host *`.
CLIENT_BLOCKS = """\
Host remote-pw
  HostName {remote_ip}
  Port {pw_port}
  ProxyJump bastion
  HostKeyAlias remote-pw
  UserKnownHostsFile {known_hosts}
  PubkeyAuthentication no
  PasswordAuthentication yes
  KbdInteractiveAuthentication no
  NumberOfPasswordPrompts 1
  BatchMode no
Host remote-key
  HostName {remote_ip}
  Port 22
  ProxyJump bastion
  IdentityFile {passphrase_key}
  BatchMode no
Host remote-nopty
  HostName {remote_ip}
  Port 22
  ProxyJump bastion
  IdentityFile {nopty_key}
  IdentitiesOnly yes
Host remote-otp
  HostName {remote_ip}
  Port {otp_port}
  ProxyJump bastion
  HostKeyAlias remote-otp
  UserKnownHostsFile {known_hosts}
  PubkeyAuthentication no
  PasswordAuthentication no
  KbdInteractiveAuthentication yes
  NumberOfPasswordPrompts 1
  BatchMode no
"""

KEY_COMMENT = "tunnelauth-bed-remote-key"  # marks the key's line in authorized_keys

SUDOERS = """\
# tunnelauth test bed {bed_id}: removed with the bed
Defaults:{user} !lecture, timestamp_timeout=0, passwd_tries=1
{user} ALL=({nopasswd}) NOPASSWD: ALL
{user} ALL=({passwd}) ALL
"""


@dataclass
class Interactive:
    """The extras of one bed and how to reach them."""

    bed: Bed
    password: str  # the test user's password (password sshd, sudo)
    otp_password: str  # the one-time-code server's first question
    otp_code: str  # ... and its second
    passphrase: str  # the passphrase of the key remote-key is reached with
    ssh_config: Path  # the bed's config with remote-pw and remote-otp in front
    sudo_nopasswd: str  # a user the test user becomes without a password
    sudo_passwd: str  # a user the test user becomes with its password
    sudoers: Path
    daemons: list[Daemon] = field(default_factory=list)

    def home_of(self, user: str) -> Path:
        """A bed user's home directory."""
        return Path(pwd.getpwnam(user).pw_dir)

    def auth_json(self, user: str) -> dict[str, object] | None:
        """That user's ``~/.hermes/auth.json`` (where the fake hermes saves tokens), or None."""
        path = self.home_of(user) / ".hermes" / "auth.json"
        return json.loads(path.read_text()) if path.exists() else None

    def reset_other(self, user: str) -> None:
        """Forget what an earlier test left in the other user's hermes home."""
        home = self.home_of(user) / ".hermes"
        for name in ("auth.json", "fake-record"):
            target = home / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the servers, remove the drop-in and the users, lock the test user again."""
        for daemon in reversed(self.daemons):
            daemon.stop()
        authorized = self.bed.home / ".ssh" / "authorized_keys"
        with contextlib.suppress(OSError):
            lines = authorized.read_text().splitlines(keepends=True)
            authorized.write_text("".join(ln for ln in lines if KEY_COMMENT not in ln))
        remove_extras(self.bed.record.id)
        run(["usermod", "-p", "*", self.bed.user], check=False)


def add_user(bed: Bed, name: str, shell: str = "/bin/bash") -> None:
    """A bed-owned user with the fake hermes and the bed's CA, able to reach the provider."""
    # "extra" keeps remove_extras away from the bed's own user (same owner and id).
    gecos = f"tunnelauth-bed-extra owner={bed.record.owner_pid} id={bed.record.id}"
    run(["useradd", "--create-home", "--shell", shell, "--comment", gecos, name])
    pw = pwd.getpwnam(name)
    home = Path(pw.pw_dir)
    for sub in (".local", ".local/bin", ".hermes"):
        (home / sub).mkdir(exist_ok=True)
    shutil.copyfile(FAKES / "hermes", home / ".local" / "bin" / "hermes")
    (home / ".local" / "bin" / "hermes").chmod(0o755)
    shutil.copyfile(bed.ca_file, home / ".hermes" / "ca.pem")
    fake = {"provider": bed.idp_url, "ca_file": str(home / ".hermes" / "ca.pem")}
    (home / ".hermes" / "fake.json").write_text(json.dumps(fake) + "\n")
    for dirpath, dirnames, filenames in os.walk(home):
        for entry in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(entry, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def build(bed: Bed) -> Interactive:
    """Add the extras to ``bed``; on failure remove what was made and re-raise."""
    extra = Interactive(
        bed=bed,
        password=secrets.token_urlsafe(12),
        otp_password=secrets.token_urlsafe(12),
        otp_code=f"{secrets.randbelow(10**6):06d}",
        passphrase=secrets.token_urlsafe(12),
        ssh_config=bed.tmp / "ssh_config_interactive",
        sudo_nopasswd=f"{bed.user}n",
        sudo_passwd=f"{bed.user}p",
        sudoers=SUDOERS_D / bed.record.id,
    )
    try:
        _build(extra)
    except BaseException:
        extra.close()
        raise
    return extra


def _build(extra: Interactive) -> None:
    bed = extra.bed
    if shutil.which("sudo") is None or shutil.which("visudo") is None:
        raise BedError("missing prerequisite: sudo (apt-get install -y sudo)")
    run(["chpasswd"], input=f"{bed.user}:{extra.password}\n")
    for user in (extra.sudo_nopasswd, extra.sudo_passwd):
        add_user(bed, user)
    rules = SUDOERS.format(
        bed_id=bed.record.id,
        user=bed.user,
        nopasswd=extra.sudo_nopasswd,
        passwd=extra.sudo_passwd,
    )
    staged = bed.tmp / "sudoers"
    staged.write_text(rules)
    run(["visudo", "-c", "-q", "-f", str(staged)])
    SUDOERS_D.mkdir(mode=0o750, exist_ok=True)
    shutil.copyfile(staged, extra.sudoers)
    extra.sudoers.chmod(0o440)

    keys = {}
    for host in ("remote-pw", "remote-otp"):
        hostdir = bed.tmp / host
        hostdir.mkdir(mode=0o700, exist_ok=True)
        key = hostdir / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host, "-f", str(key)])
        keys[host] = key
    pw_dir = bed.tmp / "remote-pw"
    (pw_dir / "sshd_config").write_text(
        PASSWORD_SSHD.format(port=PASSWORD_PORT, hostdir=pw_dir, user=bed.user)
    )
    sshd = [SSHD, "-D", "-f", str(pw_dir / "sshd_config"), "-E", str(pw_dir / "sshd.log")]
    extra.daemons.append(
        _start_daemon("sshd[remote-pw]", bed.netns_argv("remote", sshd), pw_dir / "stderr.log")
    )
    otp_log = bed.tmp / "remote-otp" / "server.log"
    otp = [sys.executable, str(Path(__file__).with_name("otp_server.py"))]
    otp += ["--port", str(OTP_PORT), "--host-key", str(keys["remote-otp"]), "--user", bed.user]
    # Values joined to their option: a token may start with "-", which argparse reads as an option.
    otp += [f"--password={extra.otp_password}", f"--code={extra.otp_code}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    extra.daemons.append(
        _start_daemon("otp server", bed.netns_argv("remote", otp), otp_log, env=env)
    )
    _wait_listening(extra.daemons[0], PASSWORD_PORT)
    wait_for(
        lambda: (
            "READY" in otp_log.read_text(errors="replace")
            or extra.daemons[1].popen.poll() is not None
        ),
        timeout=15,
        what="the one-time-code server",
    )
    _wait_listening(extra.daemons[1], OTP_PORT)
    # remote-key: the main remote sshd, reached with a key that has a passphrase (tried first).
    key_dir = bed.tmp / "remote-key"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    passphrase_key = key_dir / "id_ed25519"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-C", KEY_COMMENT, "-N", extra.passphrase]
    run([*keygen, "-f", str(passphrase_key)])
    # remote-nopty: the main remote sshd, reached with a key that may not have a terminal.
    nopty_key = key_dir / "id_ed25519_nopty"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-C", KEY_COMMENT, "-N", "", "-f", str(nopty_key)])
    authorized = bed.home / ".ssh" / "authorized_keys"
    with authorized.open("a") as out:
        out.write(Path(f"{passphrase_key}.pub").read_text())
        out.write("no-pty " + Path(f"{nopty_key}.pub").read_text())
    known = bed.tmp / "known_hosts_interactive"
    lines = []
    for host, key in keys.items():
        kind, blob = Path(f"{key}.pub").read_text().split()[:2]
        lines.append(f"{host} {kind} {blob}\n")
    known.write_text("".join(lines))
    blocks = CLIENT_BLOCKS.format(
        remote_ip=bed.remote_ip,
        pw_port=PASSWORD_PORT,
        otp_port=OTP_PORT,
        known_hosts=known,
        passphrase_key=passphrase_key,
        nopty_key=nopty_key,
    )
    extra.ssh_config.write_text(blocks + bed.ssh_config.read_text())
    extra.ssh_config.chmod(0o600)
