"""The network-namespace SSH test bed: laptop (default namespace) → bastion → remote.

Everything a bed creates is named after its owner's pid so that the reaper can
remove beds left by killed runs without touching live ones (see ``reaper.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

PREFIX = "tabed"
REGISTRY = Path("/run/tabed")
ROUTE_MARKER = REGISTRY / "route-added"
SAFETY_NET = ipaddress.ip_network("10.231.0.0/16")
SSHD = "/usr/sbin/sshd"
ETC_NETNS = Path("/etc/netns")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAKES = REPO / "tests" / "fakes"
WRAPPER = HERE / "chromium-browser"
GECOS_RE = re.compile(r"tunnelauth-bed owner=(\d+) id=(\S+)")

T = TypeVar("T")


class BedError(RuntimeError):
    """The bed could not be built or torn down."""


# -- small helpers --------------------------------------------------------------------------


def run(argv: Sequence[str], *, timeout: float = 10.0, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; raise BedError with its stderr when it fails."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BedError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise BedError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BedError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (from /proc)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def netns_pids(ns: str) -> list[int]:
    """Pids of the processes inside network namespace ``ns`` (empty if it is gone)."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def kill_pids(pids: Sequence[int], *, timeout: float = 3.0) -> None:
    """SIGTERM the given pids, SIGKILL what is left at the deadline, wait until gone."""
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


def owner_alive(pid: int, ctime: float | None = None) -> bool:
    """Whether the process that owns a bed is still running (pid reuse checked by ctime)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return ctime is None or abs(proc.create_time() - ctime) < 0.5
    except psutil.Error:
        return False


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialise bed creation/removal across processes (subnet choice, safety route)."""
    REGISTRY.mkdir(mode=0o700, exist_ok=True)
    with (REGISTRY / "lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def safety_route_present() -> bool:
    """Whether the ``unreachable 10.231.0.0/16`` route is in the default namespace."""
    out = run(["ip", "-4", "route", "show", "type", "unreachable", str(SAFETY_NET)]).stdout
    return bool(out.strip())


# -- the persistent description of one bed (what the reaper needs) ---------------------------


@dataclass
class BedRecord:
    """Names of everything one bed creates; written to the registry before creating it."""

    id: str
    owner_pid: int
    owner_ctime: float | None
    subnet: int
    tmp: str
    user: str
    netns: dict[str, str]
    veth: str

    @property
    def path(self) -> Path:
        """Where this record lives in the registry."""
        return REGISTRY / f"{self.id}.json"

    def save(self) -> None:
        """Write the record atomically."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> BedRecord | None:
        """Read a record, or None if it is unreadable."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def alive(self) -> bool:
        """Whether the owning process still runs."""
        return owner_alive(self.owner_pid, self.owner_ctime)


def records() -> list[BedRecord]:
    """Every bed record in the registry."""
    if not REGISTRY.is_dir():
        return []
    found = (BedRecord.load(p) for p in sorted(REGISTRY.glob(f"{PREFIX}-*.json")))
    return [r for r in found if r is not None]


def used_subnets() -> set[int]:
    """Third octets of 10.231.N.0/24 taken by live beds or by addresses on this host."""
    used = {r.subnet for r in records() if r.alive()}
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(addr.address)
                if ip in SAFETY_NET:
                    used.add(int(str(ip).split(".")[2]))
    return used


def netns_inode(ns: str) -> int | None:
    """Inode of a named network namespace, or None if the name is gone."""
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def namespace_held(inode: int) -> bool:
    """Whether any process still sits in the network namespace with this inode."""
    target = f"net:[{inode}]"
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry.name}/ns/net") == target:
                    return True
    return False


def destroy(record: BedRecord) -> list[str]:
    """Remove everything a bed record names, in reverse order of creation; idempotent."""
    done: list[str] = []
    for ns in record.netns.values():
        pids = netns_pids(ns)
        if pids:
            kill_pids(pids)
            done.append(f"killed {len(pids)} process(es) in {ns}")
    try:
        pw = pwd.getpwnam(record.user)
        # Only a user this bed created (its GECOS names the bed) is ever removed.
        uid: int | None = pw.pw_uid if f"id={record.id}" in pw.pw_gecos else None
    except KeyError:
        uid = None
    if uid is not None:
        # Zombies are already dead (this machine's init reaps them about once a second).
        strays = [p.pid for p in psutil.process_iter(["uids", "status"])
                  if p.info["uids"] is not None and p.info["uids"].real == uid
                  and p.info["status"] != psutil.STATUS_ZOMBIE]
        if strays:
            kill_pids(strays)
            done.append(f"killed {len(strays)} process(es) of {record.user}")
    if Path(f"/sys/class/net/{record.veth}").exists():
        run(["ip", "link", "del", record.veth], check=False)
        done.append(f"deleted veth {record.veth}")
    for ns in record.netns.values():
        inode = netns_inode(ns)
        if inode is None:
            continue
        run(["ip", "netns", "del", ns], check=False)
        wait_for(lambda ns=ns: netns_inode(ns) is None, timeout=5, what=f"{ns} to unmount")
        wait_for(lambda inode=inode: not namespace_held(inode), timeout=5,
                 what=f"namespace {ns} to be released")
        done.append(f"deleted netns {ns}")
    wait_for(lambda: not Path(f"/sys/class/net/{record.veth}").exists(), timeout=5,
             what=f"veth {record.veth} to disappear")
    if uid is not None:
        run(["userdel", "-r", record.user], check=False)
        if _user_exists(record.user):
            raise BedError(f"userdel {record.user} failed")
        done.append(f"deleted user {record.user}")
    for ns in record.netns.values():
        if (ETC_NETNS / ns).exists():
            shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
            done.append(f"removed {ETC_NETNS / ns}")
    if Path(record.tmp).name.startswith(f"{record.id}-") and Path(record.tmp).exists():
        shutil.rmtree(record.tmp, ignore_errors=True)
        done.append(f"removed {record.tmp}")
    with registry_lock():
        record.path.unlink(missing_ok=True)
        if ROUTE_MARKER.exists() and not any(r.alive() for r in records()):
            run(["ip", "route", "del", "unreachable", str(SAFETY_NET)], check=False)
            ROUTE_MARKER.unlink(missing_ok=True)
            done.append(f"removed safety route {SAFETY_NET}")
    return done


def _user_exists(name: str) -> bool:
    """Whether a local user of that name exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# -- the live bed ----------------------------------------------------------------------------


@dataclass
class Daemon:
    """A process the bed started inside a namespace (sshd or the provider)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The daemon's pid (``ip netns exec`` execs, so it is the Popen pid)."""
        return self.popen.pid

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM by PID, SIGKILL at the deadline, and reap."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)


@dataclass
class Bed:
    """A built bed: names, addresses, files, and helpers for tests."""

    record: BedRecord
    tmp: Path
    user: str
    uid: int
    gid: int
    home: Path
    netns: dict[str, str]
    laptop_ip: str
    bastion_ip: str
    bastion_inner_ip: str
    remote_ip: str
    ssh_config: Path
    known_hosts: Path
    identity: Path
    ca_file: Path
    remote_ca_file: Path
    provider_state_dir: Path
    bed_json: Path
    sshd_logs: dict[str, Path]
    daemons: list[Daemon] = field(default_factory=list)
    idp_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    # names and addresses

    @property
    def idp_ip(self) -> str:
        """The provider's address as seen from the laptop (bastion, laptop side)."""
        return self.bastion_ip

    @property
    def idp_url(self) -> str:
        """Base URL of the fake OAuth provider (``https://idp.test:PORT``)."""
        return f"https://idp.test:{self.idp_port}"

    @property
    def hermes_path(self) -> str:
        """Where the fake hermes sits on the remote (not on a non-interactive PATH)."""
        return f"{self.home}/.local/bin/hermes"

    @property
    def browser_workdir(self) -> Path:
        """Where the Chromium wrapper puts its throw-away profiles."""
        return self.tmp / "browser"

    # commands

    def ssh_argv(self, host: str, *args: str) -> list[str]:
        """``ssh -F <bed config> host args...`` as an argv list."""
        return ["ssh", "-F", str(self.ssh_config), host, *args]

    def ssh(self, host: str, *args: str, timeout: float = 15.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``ssh -F cfg host args`` to completion (never raises on a non-zero exit)."""
        return run(self.ssh_argv(host, *args), timeout=timeout, check=False, input=input)

    def netns_argv(self, role: str, argv: Sequence[str]) -> list[str]:
        """Prefix ``argv`` so that it runs inside the bastion or remote namespace."""
        return ["ip", "netns", "exec", self.netns[role], *argv]

    def browser_env(self, dom_file: Path | str) -> dict[str, str]:
        """Environment the Chromium wrapper reads (bed description and DOM output file)."""
        return {"TA_BED_JSON": str(self.bed_json), "TA_BROWSER_DOM": str(dom_file)}

    def browser_cmd(self, dom_file: Path | str) -> str:
        """A ``--browser-cmd`` template that dumps the page's DOM into ``dom_file``."""
        env = " ".join(f"{k}={v}" for k, v in self.browser_env(dom_file).items())
        return f"env {env} {WRAPPER} {{url}}"

    # observations

    def auth_count(self, host: str) -> int:
        """Public-key authentications accepted so far by the sshd behind a host alias."""
        try:
            text = self.sshd_logs[host].read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(f"Accepted publickey for {self.user} ")

    def auth_counts(self) -> dict[str, int]:
        """``auth_count`` for every sshd of the bed."""
        return {host: self.auth_count(host) for host in self.sshd_logs}

    def remote_login_processes(self) -> list[int]:
        """Pids of the test user's processes in the remote namespace, sshd sessions excluded."""
        pids = []
        for pid in netns_pids(self.netns["remote"]):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.uids().real == self.uid and proc.name() != "sshd":
                    pids.append(pid)
        return pids

    def provider_issued(self) -> list[dict[str, Any]]:
        """Authorization codes the provider issued (its ``issued.jsonl``)."""
        path = self.provider_state_dir / "issued.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # the fake hermes

    @property
    def fake_json(self) -> Path:
        """The fake hermes' configuration file on the remote."""
        return self.home / ".hermes" / "fake.json"

    def set_fake(self, **settings: Any) -> dict[str, Any]:
        """Merge settings (mode=, version=, timeout=, ...) into fake.json; None removes a key."""
        current = json.loads(self.fake_json.read_text()) if self.fake_json.exists() else {}
        for key, value in settings.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        self.write_user_file(self.fake_json, json.dumps(current, indent=2) + "\n")
        return current

    def reset_fake(self) -> dict[str, Any]:
        """Rewrite fake.json with only the provider URL and CA file."""
        self.fake_json.unlink(missing_ok=True)
        return self.set_fake(provider=self.idp_url, ca_file=str(self.remote_ca_file))

    def fake_record(self, flow: str) -> dict[str, Any] | None:
        """The fake hermes' record of one flow (parsed JSON), or None if absent."""
        path = self.home / ".hermes" / "fake-record" / f"{flow}.json"
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def write_user_file(self, path: Path, text: str, mode: int = 0o644) -> None:
        """Write a file in the test user's home atomically, owned by the user."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.chown(tmp, self.uid, self.gid)
        tmp.chmod(mode)
        tmp.replace(path)

    # teardown

    def close(self) -> list[str]:
        """Tear the bed down in reverse order; returns what was removed."""
        start = time.monotonic()
        for daemon in reversed(self.daemons):
            daemon.stop()
        done = destroy(self.record)
        self.timings["down"] = time.monotonic() - start
        return done


# -- building ------------------------------------------------------------------------------


def _popen(argv: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
    """Start a helper command whose output is collected by ``_finish``."""
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _finish(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """Wait for a helper command; return its stdout or raise BedError."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise BedError(f"timed out: {proc.args}") from exc
    if proc.returncode != 0:
        raise BedError(f"{proc.args} exited {proc.returncode}: {err.strip()}")
    return out


def _sshd_config(*, hostdir: Path, port: int, user: str, forwarding: bool) -> str:
    """sshd_config for one bed host: key-only, no PAM, verbose log, per-host files."""
    return "\n".join([
        f"Port {port}",
        "ListenAddress 0.0.0.0",
        f"HostKey {hostdir / 'ssh_host_ed25519_key'}",
        f"PidFile {hostdir / 'sshd.pid'}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes yes",
        "PermitRootLogin no",
        f"AllowUsers {user}",
        f"AllowTcpForwarding {'yes' if forwarding else 'no'}",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "UseDNS no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        "MaxStartups 200:30:400",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "",
    ])


def _client_config(bed: Bed) -> str:
    """The private ssh_config: host aliases first, shared defaults in ``Host *``."""
    return "\n".join([
        "Host bastion",
        f"  HostName {bed.bastion_ip}",
        "  Port 22",
        "Host remote",
        f"  HostName {bed.remote_ip}",
        "  Port 22",
        "  ProxyJump bastion",
        "Host remote-nofwd",
        f"  HostName {bed.remote_ip}",
        "  Port 2222",
        "  ProxyJump bastion",
        "  HostKeyAlias remote-nofwd",
        "Host remote-direct",
        f"  HostName {bed.remote_ip}",
        "  Port 22",
        "Host *",
        f"  User {bed.user}",
        f"  IdentityFile {bed.identity}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {bed.known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  BatchMode yes",
        "  ConnectTimeout 5",
        "  ControlMaster no",
        "  ControlPath none",
        "",
    ])


def _new_record() -> BedRecord:
    """Pick names and a free /24 for a new bed and register it (under the registry lock)."""
    me = psutil.Process()
    hexid = secrets.token_hex(3)
    bed_id = f"{PREFIX}-{me.pid}-{hexid}"
    used = used_subnets()
    free = [n for n in range(1, 255) if n not in used]
    if not free:
        raise BedError("no free /24 left in 10.231.0.0/16")
    tmp = tempfile.mkdtemp(prefix=f"{bed_id}-", dir="/tmp")
    record = BedRecord(
        id=bed_id, owner_pid=me.pid, owner_ctime=me.create_time(), subnet=random.choice(free),
        tmp=tmp, user=f"{PREFIX}{hexid}",
        netns={"bastion": f"{bed_id}-b", "remote": f"{bed_id}-r"}, veth=f"tb{hexid}l",
    )
    record.save()
    if not safety_route_present():
        run(["ip", "route", "add", "unreachable", str(SAFETY_NET)])
        ROUTE_MARKER.touch()
    return record


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """chown a directory tree to the test user."""
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _start_daemon(name: str, argv: Sequence[str], log: Path,
                  env: Mapping[str, str] | None = None) -> Daemon:
    """Start a long-running process in its own session, output appended to ``log``."""
    with log.open("ab") as out:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env=dict(env) if env is not None else None)
    return Daemon(name, popen, log)


def _wait_listening(daemon: Daemon, port: int, timeout: float = 5.0) -> None:
    """Wait until ``daemon`` listens on ``port`` (read from its namespace's /proc view)."""
    def probe() -> bool:
        if daemon.popen.poll() is not None:
            tail = daemon.log.read_text(errors="replace")[-2000:]
            raise BedError(f"{daemon.name} exited {daemon.popen.returncode}: {tail}")
        return port in listening_ports(daemon.pid)
    wait_for(probe, timeout=timeout, what=f"{daemon.name} to listen on {port}")


def build(fakes: Path = FAKES) -> Bed:
    """Build a bed; on any failure remove whatever was already created and re-raise."""
    t0 = time.monotonic()
    for tool in ("ip", SSHD, "ssh", "ssh-keygen", "ssh-keyscan", "openssl", "useradd"):
        if shutil.which(tool) is None:
            raise BedError(f"missing prerequisite: {tool}")
    for fake in ("provider.py", "hermes"):
        if not (fakes / fake).is_file():
            raise BedError(f"missing fake: {fakes / fake}")
    with registry_lock():
        record = _new_record()
    daemons: list[Daemon] = []
    try:
        return _build(record, fakes, t0, daemons)
    except BaseException:
        for daemon in reversed(daemons):
            daemon.stop()
        destroy(record)
        raise


def _build(record: BedRecord, fakes: Path, t0: float, daemons: list[Daemon]) -> Bed:
    """The body of ``build`` once names are registered."""
    tmp = Path(record.tmp)
    net = f"10.231.{record.subnet}"
    bastion_ns, remote_ns = record.netns["bastion"], record.netns["remote"]
    hosts = {"bastion": tmp / "bastion", "remote": tmp / "remote",
             "remote-nofwd": tmp / "remote-nofwd"}
    for d in [*hosts.values(), tmp / "client", tmp / "ca", tmp / "idp-state", tmp / "browser"]:
        d.mkdir(mode=0o700)

    # Independent slow-ish steps run concurrently: key generation, the CA, the user.
    keygens = [_popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{record.id}-{h}",
                       "-f", str(d / "ssh_host_ed25519_key")]) for h, d in hosts.items()]
    keygens.append(_popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", record.id,
                           "-f", str(tmp / "client" / "id_ed25519")]))
    ca = tmp / "ca"
    ca_gen = _popen(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                     "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                     "-subj", f"/CN={record.id} throwaway CA", "-keyout", str(ca / "ca.key"),
                     "-out", str(ca / "ca.pem"),
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    useradd = _popen(["useradd", "--create-home", "--home-dir", f"/home/{record.user}",
                      "--shell", "/bin/bash", "--comment",
                      f"tunnelauth-bed owner={record.owner_pid} id={record.id}", record.user])

    # Namespaces, veths and addresses. Safety route is already in place.
    for ns in (bastion_ns, remote_ns):
        run(["ip", "netns", "add", ns])
        (ETC_NETNS / ns).mkdir(parents=True, exist_ok=True)
        (ETC_NETNS / ns / "resolv.conf").write_text("")
    laptop_ip, bastion_ip, bastion_inner_ip, remote_ip = (
        f"{net}.1", f"{net}.2", f"{net}.5", f"{net}.6")
    hosts_common = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
    (ETC_NETNS / bastion_ns / "hosts").write_text(hosts_common + f"{bastion_ip} idp.test\n")
    (ETC_NETNS / remote_ns / "hosts").write_text(hosts_common + f"{bastion_inner_ip} idp.test\n")
    run(["ip", "link", "add", record.veth, "type", "veth", "peer", "name", "eth0",
         "netns", bastion_ns])
    run(["ip", "-n", bastion_ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
         "netns", remote_ns])
    run(["ip", "addr", "add", f"{laptop_ip}/30", "dev", record.veth])
    run(["ip", "link", "set", record.veth, "up"])
    run(["ip", "-n", bastion_ns, "addr", "add", f"{bastion_ip}/30", "dev", "eth0"])
    run(["ip", "-n", bastion_ns, "addr", "add", f"{bastion_inner_ip}/30", "dev", "eth1"])
    run(["ip", "-n", remote_ns, "addr", "add", f"{remote_ip}/30", "dev", "eth0"])
    for ns, devs in ((bastion_ns, ("lo", "eth0", "eth1")), (remote_ns, ("lo", "eth0"))):
        for dev in devs:
            run(["ip", "-n", ns, "link", "set", dev, "up"])
    run(["ip", "netns", "exec", bastion_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    if run(["ip", "netns", "exec", bastion_ns, "cat", "/proc/sys/net/ipv4/ip_forward"]
           ).stdout.strip() != "0":
        raise BedError("could not turn forwarding off in the bastion")

    # Server certificate for idp.test, signed by the throwaway CA.
    _finish(ca_gen)
    run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=idp.test",
         "-CA", str(ca / "ca.pem"), "-CAkey", str(ca / "ca.key"),
         "-keyout", str(ca / "idp.key"), "-out", str(ca / "idp.pem"),
         "-addext", f"subjectAltName=DNS:idp.test,IP:{bastion_ip},IP:{bastion_inner_ip}",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "keyUsage=critical,digitalSignature",
         "-addext", "extendedKeyUsage=serverAuth"])
    for proc in keygens:
        _finish(proc)
    _finish(useradd)
    t_base = time.monotonic()

    # The test user: key-only login, fakes installed, fake.json pointing at the provider.
    pw = pwd.getpwnam(record.user)
    home = Path(pw.pw_dir)
    run(["usermod", "-p", "*", record.user])
    for sub in (".ssh", ".local", ".local/bin", "bin", ".hermes"):
        (home / sub).mkdir(exist_ok=True)
    (home / ".ssh").chmod(0o700)
    client_pub = (tmp / "client" / "id_ed25519.pub").read_text()
    (home / ".ssh" / "authorized_keys").write_text(client_pub)
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    shutil.copyfile(fakes / "hermes", home / ".local" / "bin" / "hermes")
    (home / ".local" / "bin" / "hermes").chmod(0o755)
    if (fakes / "loopback-cli").is_file():
        shutil.copyfile(fakes / "loopback-cli", home / "bin" / "loopback-cli")
        (home / "bin" / "loopback-cli").chmod(0o755)
    remote_ca = home / ".hermes" / "ca.pem"
    shutil.copyfile(ca / "ca.pem", remote_ca)
    remote_ca.chmod(0o644)
    _chown_tree(home, pw.pw_uid, pw.pw_gid)

    bed = Bed(
        record=record, tmp=tmp, user=record.user, uid=pw.pw_uid, gid=pw.pw_gid, home=home,
        netns=dict(record.netns), laptop_ip=laptop_ip, bastion_ip=bastion_ip,
        bastion_inner_ip=bastion_inner_ip, remote_ip=remote_ip,
        ssh_config=tmp / "ssh_config", known_hosts=tmp / "known_hosts",
        identity=tmp / "client" / "id_ed25519", ca_file=ca / "ca.pem", remote_ca_file=remote_ca,
        provider_state_dir=tmp / "idp-state", bed_json=tmp / "bed.json",
        sshd_logs={h: d / "sshd.log" for h, d in hosts.items()}, daemons=daemons,
    )

    # Daemons: three sshds and the provider, each started through `ip netns exec`.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    specs = (("bastion", bastion_ns, 22, True), ("remote", remote_ns, 22, True),
             ("remote-nofwd", remote_ns, 2222, False))
    for host, ns, port, fwd in specs:
        cfg = hosts[host] / "sshd_config"
        cfg.write_text(_sshd_config(hostdir=hosts[host], port=port, user=record.user,
                                    forwarding=fwd))
        bed.daemons.append(_start_daemon(
            f"sshd[{host}]", ["ip", "netns", "exec", ns, SSHD, "-D", "-f", str(cfg),
                              "-E", str(bed.sshd_logs[host])], hosts[host] / "stderr.log"))
    provider = _start_daemon(
        "provider", ["ip", "netns", "exec", bastion_ns, "python3", str(fakes / "provider.py"),
                     "--bind", "0.0.0.0", "--port", "0", "--certfile", str(ca / "idp.pem"),
                     "--keyfile", str(ca / "idp.key"), "--state-dir", str(bed.provider_state_dir)],
        tmp / "provider.log", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    bed.daemons.append(provider)
    for (_host, _ns, port, _fwd), daemon in zip(specs, bed.daemons, strict=False):
        _wait_listening(daemon, port)

    def ready_port() -> int | None:
        if provider.popen.poll() is not None:
            raise BedError(f"provider exited: {provider.log.read_text(errors='replace')[-2000:]}")
        found = re.search(r"^READY (\d+)$", provider.log.read_text(errors="replace"), re.M)
        return int(found.group(1)) if found else None
    bed.idp_port = wait_for(ready_port, timeout=10, what="the provider's READY line")
    _wait_listening(provider, bed.idp_port)
    t_daemons = time.monotonic()

    # known_hosts from ssh-keyscan (the remote scanned from inside the bastion), checked
    # against the host keys generated above, then the client config.
    scans = {
        "bastion": _popen(["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", "22", bastion_ip]),
        "remote": _popen(["ip", "netns", "exec", bastion_ns, "ssh-keyscan", "-T", "5", "-t",
                          "ed25519", "-p", "22", remote_ip]),
        "remote-nofwd": _popen(["ip", "netns", "exec", bastion_ns, "ssh-keyscan", "-T", "5",
                                "-t", "ed25519", "-p", "2222", remote_ip]),
    }
    names = {"bastion": bastion_ip, "remote": remote_ip, "remote-nofwd": "remote-nofwd"}
    lines = []
    for host, proc in scans.items():
        scanned = [ln.split() for ln in _finish(proc).splitlines()
                   if ln.strip() and not ln.startswith("#")]
        expected = (hosts[host] / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        if [s[1:3] for s in scanned] != [expected]:
            raise BedError(f"ssh-keyscan of {host} gave {scanned}, expected {expected}")
        lines.append(f"{names[host]} {expected[0]} {expected[1]}\n")
    bed.known_hosts.write_text("".join(lines))
    bed.ssh_config.write_text(_client_config(bed))
    bed.ssh_config.chmod(0o600)
    bed.reset_fake()
    bed.bed_json.write_text(json.dumps({
        "id": record.id, "idp_ip": bed.idp_ip, "idp_port": bed.idp_port,
        "idp_url": bed.idp_url, "ca_file": str(bed.ca_file),
        "browser_workdir": str(bed.browser_workdir),
    }, indent=2))
    t_end = time.monotonic()
    bed.timings.update(base=t_base - t0, daemons=t_daemons - t_base, keyscan=t_end - t_daemons,
                       up=t_end - t0)
    return bed
