"""Bed extras: one remote user per login shell (bash, dash, zsh, fish), reached with the bed's key.

sshd runs every remote command through the user's login shell (``SHELL -c COMMAND``), so each
of these users proves that tunnelauth's command lines read the same under that shell. Each
may become every other one with sudo and no password (``/etc/sudoers.d/<bed id>-shells``),
which puts ``--as`` through each shell as the login shell of the target too. Removed by
``LoginShells.close()``, or by the reaper (``reaper.remove_extras``) if the run is killed.
"""

from __future__ import annotations

import contextlib
import json
import pwd
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.bed import BedError, kill_pids, netns_pids, run
from tests.bed.interactive import add_user
from tests.bed.netbed import Bed
from tests.bed.reaper import SUDOERS_D

# login shell → the letter its user's name ends with (`n` and `p` are the interactive extras').
SHELL_LETTERS = {"bash": "b", "dash": "d", "zsh": "z", "fish": "f"}


@dataclass
class ShellUser:
    """A remote user whose login shell is ``shell``."""

    name: str
    shell: str
    uid: int
    home: Path

    def set_fake(self, **settings: Any) -> None:
        """Replace this user's fake.json by the bed's defaults plus ``settings``."""
        path = self.home / ".hermes" / "fake.json"
        data = {**json.loads(path.read_text()), **settings}
        path.write_text(json.dumps(data) + "\n")

    def fake_record(self, flow: str) -> dict[str, Any] | None:
        """The fake hermes' record of one flow for this user, or None."""
        path = self.home / ".hermes" / "fake-record" / f"{flow}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def reset(self) -> None:
        """Forget the records and tokens of an earlier run."""
        shutil.rmtree(self.home / ".hermes" / "fake-record", ignore_errors=True)
        (self.home / ".hermes" / "auth.json").unlink(missing_ok=True)


@dataclass
class LoginShells:
    """The shell users of one bed."""

    bed: Bed
    users: dict[str, ShellUser] = field(default_factory=dict)
    sudoers: Path | None = None

    def processes(self, user: ShellUser) -> list[int]:
        """Pids of ``user``'s processes in the remote namespace, sshd sessions excluded."""
        pids = []
        for pid in netns_pids(self.bed.netns["remote"]):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.uids().real == user.uid and proc.name() != "sshd":
                    pids.append(pid)
        return pids

    def close(self) -> None:
        """Remove the sudoers drop-in and the users (ending what they still run)."""
        if self.sudoers is not None:
            self.sudoers.unlink(missing_ok=True)
        for user in self.users.values():
            strays = [
                p.pid
                for p in psutil.process_iter(["uids"])
                if p.info["uids"] and p.info["uids"].real == user.uid
            ]
            kill_pids(strays)
            run(["userdel", "-r", user.name], check=False)
        self.users.clear()


def build(bed: Bed) -> LoginShells:
    """Add one user per login shell to ``bed``; on failure remove what was made and re-raise."""
    shells = LoginShells(bed)
    try:
        _build(shells)
    except BaseException:
        shells.close()
        raise
    return shells


def _build(shells: LoginShells) -> None:
    bed = shells.bed
    key = Path(f"{bed.identity}.pub").read_text()
    for shell, letter in SHELL_LETTERS.items():
        path = shutil.which(shell, path="/usr/bin:/bin")
        if path is None:
            raise BedError(f"missing prerequisite: {shell} (apt-get install -y {shell})")
        name = f"{bed.user}{letter}"
        add_user(bed, name, shell=path)
        # useradd leaves the account locked (`!`), which sshd refuses even for keys.
        run(["usermod", "-p", "*", name])
        pw = pwd.getpwnam(name)
        home = Path(pw.pw_dir)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(key)
        (ssh_dir / "authorized_keys").chmod(0o600)
        for entry in (ssh_dir, ssh_dir / "authorized_keys"):
            shutil.chown(entry, pw.pw_uid, pw.pw_gid)
        shells.users[shell] = ShellUser(name, shell, pw.pw_uid, home)
    names = ", ".join(u.name for u in shells.users.values())
    rules = [f"# tunnelauth test bed {bed.record.id}: removed with the bed"]
    rules += [f"{u.name} ALL=({names}) NOPASSWD: ALL" for u in shells.users.values()]
    staged = bed.tmp / "sudoers-shells"
    staged.write_text("\n".join(rules) + "\n")
    run(["visudo", "-c", "-q", "-f", str(staged)])
    SUDOERS_D.mkdir(mode=0o750, exist_ok=True)
    shells.sudoers = SUDOERS_D / f"{bed.record.id}-shells"
    shutil.copyfile(staged, shells.sudoers)
    shells.sudoers.chmod(0o440)
