"""known_hosts verdicts: the real ssh against a real sshd, and each library backend, agree.

Every row is a set of known_hosts files, a host (name, port, HostKeyAlias) and the key a real
``sshd -i`` offers. ``ssh`` reaches that sshd through ``ProxyCommand`` and says what it thinks
(its stderr); the asyncssh and paramiko transports reach the same sshd through a loopback TCP
connection handed to them as their early socket (only the name lookup is skipped) and say it
with their exit-4 error, or get past the host key to the authentication the server refuses.
Hashed lines are hashed by ``ssh-keygen -H``. Needs root (sshd -i) and openssh-server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bed import SSHD
from tunnelauth.environment import Environment
from tunnelauth.errors import HostKeyError, SSHError
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import early_dial
from tunnelauth.transports.asyncssh_transport import AsyncSSHTransport
from tunnelauth.transports.headstart import HeadStart
from tunnelauth.transports.paramiko_transport import ParamikoTransport

DEADLINE = 20.0
HOST = "web.example.test"

if os.geteuid() != 0 or not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
    reason = "the known_hosts comparison runs sshd -i: it needs root and openssh-server"
    if os.environ.get("CI"):
        raise RuntimeError(reason + " (CI is set, so this fails instead of skipping)")
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.usefixtures("_no_agent")


@pytest.fixture
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncssh finds the agent in the process's environment itself: none here."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@dataclass(frozen=True)
class Row:
    """One known_hosts situation; ``H `` before a line means ssh-keygen -H hashes it."""

    offered: str  # "A", "B" (ed25519) or "E" (ecdsa): the key sshd offers
    verdict: str  # what ssh says: a knownhosts.Verdict value
    user: tuple[str, ...] = ()  # the first UserKnownHostsFile
    user2: tuple[str, ...] = ()  # the second one
    system: tuple[str, ...] = ()  # GlobalKnownHostsFile
    hostname: str = HOST
    port: int = 22
    alias: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


KNOWN, UNKNOWN, CHANGED, REVOKED = "known", "unknown-host", "changed-key", "revoked"
ROWS = {
    "exact-known": Row("A", KNOWN, user=(f"{HOST} A",)),
    "exact-changed": Row("B", CHANGED, user=(f"{HOST} A",)),
    "wildcard-changed": Row("B", CHANGED, user=("*.example.test A",)),
    "wildcard-known": Row("A", KNOWN, user=("*.example.test A",)),
    "question-mark-changed": Row("B", CHANGED, user=("web.example.tes? A",)),
    "negated-name-is-not-listed": Row("B", UNKNOWN, user=(f"*.example.test,!{HOST} A",)),
    "negation-first-wins": Row("A", UNKNOWN, user=(f"!{HOST},*.example.test A",)),
    "star-but-another-changed": Row("B", CHANGED, user=("*,!other.example.test A",)),
    "address-wildcard-changed": Row("B", CHANGED, user=("10.0.0.* A",), hostname="10.0.0.7"),
    # The backends' connection comes from 127.0.0.1: neither an address range nor the peer's
    # address is a name ssh looks up.
    "no-address-ranges": Row("A", UNKNOWN, user=("127.0.0.0/8,!x A",), hostname="127.0.0.7"),
    "peer-address-is-not-a-name": Row("A", UNKNOWN, user=("127.0.0.1 A",)),
    "names-ignore-case": Row("B", CHANGED, user=("WEB.Example.TEST A",)),
    "hashed-changed": Row("B", CHANGED, user=(f"H {HOST} A",)),
    "hashed-known": Row("A", KNOWN, user=(f"H {HOST} A",)),
    "hashed-other-name": Row("B", UNKNOWN, user=("H other.example.test A",)),
    "port-known": Row("A", KNOWN, user=(f"[{HOST}]:2222 A",), port=2222),
    "port-changed": Row("B", CHANGED, user=(f"[{HOST}]:2222 A",), port=2222),
    "port-line-not-for-22": Row("B", UNKNOWN, user=(f"[{HOST}]:2222 A",)),
    "port-pattern-changed": Row("B", CHANGED, user=("[*.example.test]:2222 A",), port=2222),
    "hashed-port-changed": Row("B", CHANGED, user=(f"H [{HOST}]:2222 A",), port=2222),
    "hashed-port-known": Row("A", KNOWN, user=(f"H [{HOST}]:2222 A",), port=2222),
    "bare-name-key-known-on-2222": Row("A", KNOWN, user=(f"{HOST} A",), port=2222),
    "bare-name-other-key-is-new-on-2222": Row("B", UNKNOWN, user=(f"{HOST} A",), port=2222),
    "port-line-beats-bare-name": Row(
        "B", CHANGED, user=(f"[{HOST}]:2222 A", f"{HOST} B"), port=2222
    ),
    "revoked-listed": Row("A", REVOKED, user=(f"{HOST} A", "@revoked * A")),
    "revoked-alone": Row("A", REVOKED, user=("@revoked *.example.test A",)),
    "revoked-for-another-host": Row(
        "A", KNOWN, user=("@revoked other.example.test A", f"{HOST} A")
    ),
    "revoked-another-key": Row("A", KNOWN, user=("@revoked * B", f"{HOST} A")),
    "revoked-on-2222": Row("A", REVOKED, user=(f"[{HOST}]:2222 A", "@revoked * A"), port=2222),
    "revoked-where-a-ca-applies": Row(
        "A", REVOKED, user=("@cert-authority * B", f"{HOST} A", "@revoked * A")
    ),
    "ca-line-does-not-make-known": Row("A", UNKNOWN, user=("@cert-authority *.example.test A",)),
    "ca-line-is-not-a-change": Row("A", UNKNOWN, user=("@cert-authority *.example.test B",)),
    "second-user-file-changed": Row(
        "B", CHANGED, user=("other.example.test B",), user2=("*.example.test A",)
    ),
    "second-user-file-known": Row("A", KNOWN, user2=(f"{HOST} A",)),
    "global-file-changed": Row("B", CHANGED, system=(f"{HOST} A",)),
    "global-file-known": Row("A", KNOWN, system=(f"{HOST} A",)),
    "global-revokes-user-key": Row("A", REVOKED, user=(f"{HOST} A",), system=("@revoked * A",)),
    "alias-known": Row("A", KNOWN, user=("myalias A", f"{HOST} B"), alias="myalias"),
    "alias-changed": Row("B", CHANGED, user=("myalias A", f"{HOST} B"), alias="myalias"),
    "alias-not-the-hostname": Row("A", UNKNOWN, user=(f"{HOST} A",), alias="myalias"),
    "alias-has-no-port": Row("A", KNOWN, user=("myalias A",), alias="myalias", port=2222),
    "alias-pattern-changed": Row("B", CHANGED, user=("my* A",), alias="myalias"),
    "another-type-listed-changed": Row("A", CHANGED, user=(f"{HOST} E",)),
    "both-types-listed-known": Row("A", KNOWN, user=(f"{HOST} E", f"{HOST} A")),
    "broken-lines-skipped": Row(
        "A",
        UNKNOWN,
        user=(
            f"@bogus {HOST} B",
            f"{HOST} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
            f"# {HOST} B",
            f"{HOST} ssh-ed25519",
        ),
    ),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Host keys A, B, E and an sshd config that authenticates nobody."""
    made = Lab(tmp_path_factory.mktemp("knownhosts"))
    yield made
    made.stop()


class Lab:
    """The keys, the sshd -i command and the sshd processes started for the backends."""

    def __init__(self, root: Path) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.root = root
        self.keys: dict[str, Path] = {}
        for name, kind in (("A", "ed25519"), ("B", "ed25519"), ("E", "ecdsa")):
            path = root / f"host_{name}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(path)],
                check=True,
            )
            self.keys[name] = path
        self.sshd_config = root / "sshd_config"
        self.sshd_config.write_text(
            "AuthorizedKeysFile none\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nLogLevel QUIET\n"
        )
        self.servers: list[subprocess.Popen[bytes]] = []

    def public(self, name: str) -> str:
        return " ".join((self.keys[name].with_suffix(".pub")).read_text().split()[:2])

    def sshd(self, offered: str) -> list[str]:
        """``sshd -i`` offering only key ``offered``, speaking SSH on stdin and stdout."""
        key = self.keys[offered]
        return [SSHD, "-i", "-f", str(self.sshd_config), "-h", str(key), "-E", "/dev/null"]

    def serve(self, offered: str) -> socket.socket:
        """A loopback TCP connection whose far end is a fresh ``sshd -i``."""
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname(), DEADLINE)
            server, _ = listener.accept()
        with server:
            proc = subprocess.Popen(self.sshd(offered), stdin=server, stdout=server)
        self.servers.append(proc)
        return client

    def stop(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(DEADLINE)

    def write(self, name: str, lines: tuple[str, ...]) -> Path:
        """A known_hosts file; ``H `` lines hashed by the real ssh-keygen -H."""
        plain = [self._line(line) for line in lines if not line.startswith("H ")]
        hashed = [self._line(line[2:]) for line in lines if line.startswith("H ")]
        path = self.root / name
        if hashed:
            path.write_text("\n".join(hashed) + "\n")
            subprocess.run(
                ["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True
            )
            assert "|1|" in path.read_text()
        else:
            path.write_text("")
        with path.open("a") as out:
            out.write("".join(f"{line}\n" for line in plain))
        return path

    def _line(self, line: str) -> str:
        fields = line.split(" ")
        if fields[-1] in self.keys:
            fields[-1] = self.public(fields[-1])
        return " ".join(fields)

    def config(self, row: Row, case: str, *, proxy: bool) -> Path:
        """The ssh config both sides read (ssh's has the ProxyCommand to sshd -i)."""
        files = [
            self.write(f"{case}.{n}", lines)
            for n, lines in (("user", row.user), ("user2", row.user2), ("system", row.system))
        ]
        lines = [
            f"Host {HOST}",
            *(f"  {key} {value}" for key, value in row.extra.items()),  # the first value wins
            f"  HostName {row.hostname}",
            f"  Port {row.port}",
            "  User nobody",
            f"  UserKnownHostsFile {files[0]} {files[1]}",
            f"  GlobalKnownHostsFile {files[2]}",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  PubkeyAuthentication no",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            "  ConnectTimeout 10",
        ]
        if row.alias:
            lines.append(f"  HostKeyAlias {row.alias}")
        if proxy:
            lines.append("  ProxyCommand " + " ".join(self.sshd(row.offered)))
        path = self.root / f"{case}.{'ssh' if proxy else 'lib'}.config"
        path.write_text("\n".join(lines) + "\n")
        return path


def ssh_verdict(lab: Lab, row: Row, case: str) -> str:
    """What the real ssh says, read from its stderr."""
    config = lab.config(row, case, proxy=True)
    err = run_ssh(config)
    found = [
        verdict
        for verdict, sign in (
            (CHANGED, "REMOTE HOST IDENTIFICATION HAS CHANGED"),
            (REVOKED, "REVOKED HOST KEY DETECTED"),
            (UNKNOWN, re.compile(r"No \S+ host key is known for")),
            (KNOWN, "Permission denied"),
        )
        if (sign.search(err) if isinstance(sign, re.Pattern) else sign in err)
    ]
    assert len(found) == 1, err
    return found[0]


def run_ssh(config: Path) -> str:
    """Run the real ssh with ``config``; its stderr."""
    done = subprocess.run(
        ["ssh", "-F", str(config), HOST, "true"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    return done.stderr


def backend_verdict(lab: Lab, row: Row, case: str, backend: str) -> tuple[str, str]:
    """(verdict, message) of a library transport connecting to the same sshd."""
    config = lab.config(row, case, proxy=False)
    target = SSHTarget(host=HOST, ssh_config=config)
    kind: Any = AsyncSSHTransport if backend == "asyncssh" else ParamikoTransport
    # The lab's server, handed over as the first hop's early connection to where the
    # transport would connect (a socket to another address would be closed unused).
    dial = early_dial.Dial()
    dial.address, dial.sock = (row.hostname, row.port), lab.serve(row.offered)
    dial.done.set()
    head = HeadStart(target=target, dial=dial)
    transport = kind(target, connect_timeout=DEADLINE, batch=True, head_start=head)

    async def connect() -> str:
        try:
            with head:
                await asyncio.wait_for(transport.connect(env=Environment()), DEADLINE)
        except HostKeyError as exc:
            return exc.message
        except SSHError as exc:
            assert "authentication" in exc.message, exc.message
            return ""
        finally:
            await transport.close()
        raise AssertionError("the server authenticates nobody")

    message = asyncio.run(connect())
    if not message:
        return KNOWN, message
    signs = {
        CHANGED: "the host key changed",
        REVOKED: "@revoked|is revoked",
        UNKNOWN: "known_hosts does not list|is not in known_hosts",  # (and the older wording)
    }
    found = [verdict for verdict, sign in signs.items() if re.search(sign, message)]
    assert len(found) == 1, message
    return found[0], message


@pytest.mark.parametrize("case", ROWS)
def test_every_backend_judges_known_hosts_like_ssh(lab: Lab, case: str) -> None:
    row = ROWS[case]
    assert ssh_verdict(lab, row, case) == row.verdict, "ssh itself disagrees with the table"
    for backend in ("asyncssh", "paramiko"):
        verdict, message = backend_verdict(lab, row, case, backend)
        assert verdict == row.verdict, f"{backend}: {message}"
        # asyncssh itself refuses a revoked key where a CA line applies, before tunnelauth
        # sees which key it was.
        if verdict != KNOWN and not (
            backend == "asyncssh" and case == "revoked-where-a-ca-applies"
        ):
            offered = fingerprint(lab.keys[row.offered].with_suffix(".pub"))
            assert offered in message, f"{backend} names the offered key: {message}"


def fingerprint(path: Path) -> str:
    """The SHA256 fingerprint ssh-keygen gives a public key file."""
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()[1]


@pytest.mark.parametrize("backend", ["asyncssh", "paramiko"])
@pytest.mark.parametrize(
    ("port", "hashing", "alias"),
    [(2222, "no", None), (2222, "yes", None), (22, "yes", None), (2222, "no", "myalias")],
)
def test_an_accepted_key_is_recorded_as_ssh_records_it(
    lab: Lab, backend: str, port: int, hashing: str, alias: str | None
) -> None:
    """accept-new: the first UserKnownHostsFile gets the line ssh writes ([host]:port, hashed
    under HashKnownHosts yes), the other files are untouched, and ssh then knows the host."""
    case = f"record-{backend}-{port}-{hashing}-{alias}"
    settings = {"StrictHostKeyChecking": "accept-new", "HashKnownHosts": hashing}
    row = Row("A", KNOWN, user2=("other.example.test B",), port=port, alias=alias, extra=settings)
    assert run_ssh(lab.config(row, f"{case}-ssh", proxy=True)).count("Permanently added") == 1
    ours, _ = backend_verdict(lab, row, case, backend)
    assert ours == KNOWN
    theirs = (lab.root / f"{case}-ssh.user").read_text().splitlines()
    written = (lab.root / f"{case}.user").read_text().splitlines()
    assert len(written) == len(theirs) == 1
    assert (lab.root / f"{case}.user2").read_text() == (lab.root / f"{case}-ssh.user2").read_text()
    assert written[0].split()[1:] == theirs[0].split()[1:] == lab.public("A").split()
    name = alias or (f"[{HOST}]:{port}" if port != 22 else HOST)
    if hashing == "yes":
        assert written[0].startswith("|1|") and theirs[0].startswith("|1|")
    else:
        assert written == theirs and written[0].startswith(f"{name} ")
    found = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(lab.root / f"{case}.user")],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0 and lab.public("A").split()[1] in found.stdout
    again = Row("A", KNOWN, user=tuple(written), port=port, alias=alias)
    assert ssh_verdict(lab, again, f"{case}-again") == KNOWN
