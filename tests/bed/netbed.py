"""The network-namespace SSH test bed: laptop (default namespace) → bastion → remote.

``build()`` creates it and returns a ``Bed``; ``Bed.close()`` removes every trace.
Everything is named after the owner's pid so that ``reaper.py`` can remove beds left by
killed runs without touching live ones.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.bed import (
    ETC_NETNS,
    PREFIX,
    SAFETY_NET,
    SSHD,
    BedError,
    argv,
    listening_ports,
    netns_pids,
    run,
    wait_for,
)
from tests.bed.reaper import (
    ROUTE_MARKER,
    BedRecord,
    destroy,
    registry_lock,
    safety_route_present,
    used_subnets,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAKES = REPO / "tests" / "fakes"
WRAPPER = HERE / "chromium-browser"


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

    def ssh_argv(self, host: str, *command: str, options: Sequence[str] = ()) -> list[str]:
        """``ssh -F <bed config> [options] host [command...]`` as an argv list."""
        return ["ssh", "-F", str(self.ssh_config), *options, host, *command]

    def ssh(
        self,
        host: str,
        *command: str,
        options: Sequence[str] = (),
        timeout: float = 15.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ssh -F cfg [options] host command`` to completion (no raise on failure)."""
        argv = self.ssh_argv(host, *command, options=options)
        return run(argv, timeout=timeout, check=False, input=input)

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

# `{user}?`: the bed's extra users (its name and one letter) may log in with a key too.
SSHD_CONFIG = """\
Port {port}
ListenAddress 0.0.0.0
HostKey {hostdir}/ssh_host_ed25519_key
PidFile {hostdir}/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PermitRootLogin no
AllowUsers {user} {user}?
AllowTcpForwarding {forwarding}
AllowAgentForwarding no
X11Forwarding no
UseDNS no
PrintMotd no
LogLevel VERBOSE
MaxStartups 200:30:400
MaxSessions 100
Subsystem sftp internal-sftp
"""

CLIENT_CONFIG = """\
Host bastion
  HostName {bastion_ip}
  Port 22
Host remote
  HostName {remote_ip}
  Port 22
  ProxyJump bastion
Host remote-nofwd
  HostName {remote_ip}
  Port 2222
  ProxyJump bastion
  HostKeyAlias remote-nofwd
Host remote-direct
  HostName {remote_ip}
  Port 22
Host *
  User {user}
  IdentityFile {identity}
  IdentitiesOnly yes
  UserKnownHostsFile {known_hosts}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  BatchMode yes
  ConnectTimeout 5
  ControlMaster no
  ControlPath none
"""

# host alias → (namespace role, port, AllowTcpForwarding)
SSHD_HOSTS = {
    "bastion": ("bastion", 22, True),
    "remote": ("remote", 22, True),
    "remote-nofwd": ("remote", 2222, False),
}
KEYGEN = "ssh-keygen -q -t ed25519 -N {empty} -C {comment} -f {path}"
CA_REQ = (
    "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    " -keyout {key} -out {cert}"
)


def _popen(command: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
    """Start a helper command whose output is collected by ``_finish``."""
    return subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """Wait for a helper command; return its stdout or raise BedError."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise BedError(f"timed out: {proc.args!r}") from exc
    if proc.returncode != 0:
        raise BedError(f"{proc.args!r} exited {proc.returncode}: {err.strip()}")
    return out


def _new_record() -> BedRecord:
    """Pick names and a free /24 for a new bed, register it, ensure the safety route."""
    me = psutil.Process()
    hexid = secrets.token_hex(3)
    bed_id = f"{PREFIX}-{me.pid}-{hexid}"
    with registry_lock():
        used = used_subnets()
        free = [n for n in range(1, 255) if n not in used]
        if not free:
            raise BedError(f"no free /24 left in {SAFETY_NET}")
        record = BedRecord(
            id=bed_id,
            owner_pid=me.pid,
            owner_ctime=me.create_time(),
            subnet=random.choice(free),
            tmp=tempfile.mkdtemp(prefix=f"{bed_id}-", dir="/tmp"),
            user=f"{PREFIX}{hexid}",
            netns={"bastion": f"{bed_id}-b", "remote": f"{bed_id}-r"},
            veth=f"tb{hexid}l",
        )
        record.save()
        if not safety_route_present():
            run(["ip", "route", "add", "unreachable", str(SAFETY_NET)])
            ROUTE_MARKER.touch()
    return record


def _start_daemon(
    name: str, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Daemon:
    """Start a long-running process in its own session, output appended to ``log``."""
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    return Daemon(name, popen, log)


def _wait_listening(daemon: Daemon, port: int, timeout: float = 5.0) -> None:
    """Wait until ``daemon`` listens on ``port`` (read from its namespace's /proc view)."""

    def probe() -> bool:
        if daemon.popen.poll() is not None:
            tail = daemon.log.read_text(errors="replace")[-2000:]
            raise BedError(f"{daemon.name} exited {daemon.popen.returncode}: {tail}")
        return port in listening_ports(daemon.pid)

    wait_for(probe, timeout=timeout, what=f"{daemon.name} to listen on {port}")


def _make_network(record: BedRecord) -> tuple[str, str, str, str]:
    """Namespaces, veths, addresses, per-namespace hosts/resolv.conf; returns the 4 IPs."""
    net = f"10.231.{record.subnet}"
    laptop, bastion, bastion_inner, remote = f"{net}.1", f"{net}.2", f"{net}.5", f"{net}.6"
    b_ns, r_ns = record.netns["bastion"], record.netns["remote"]
    hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n{} idp.test\n"
    for ns, idp in ((b_ns, bastion), (r_ns, bastion_inner)):
        run(["ip", "netns", "add", ns])
        (ETC_NETNS / ns).mkdir(parents=True, exist_ok=True)
        (ETC_NETNS / ns / "resolv.conf").write_text("")
        (ETC_NETNS / ns / "hosts").write_text(hosts.format(idp))
    v = record.veth
    for command in (
        argv("ip link add {v} type veth peer name eth0 netns {b}", v=v, b=b_ns),
        argv("ip -n {b} link add eth1 type veth peer name eth0 netns {r}", b=b_ns, r=r_ns),
        argv("ip addr add {ip}/30 dev {v}", ip=laptop, v=v),
        argv("ip link set {v} up", v=v),
        argv("ip -n {b} addr add {ip}/30 dev eth0", b=b_ns, ip=bastion),
        argv("ip -n {b} addr add {ip}/30 dev eth1", b=b_ns, ip=bastion_inner),
        argv("ip -n {r} addr add {ip}/30 dev eth0", r=r_ns, ip=remote),
        *(argv("ip -n {b} link set {d} up", b=b_ns, d=d) for d in ("lo", "eth0", "eth1")),
        *(argv("ip -n {r} link set {d} up", r=r_ns, d=d) for d in ("lo", "eth0")),
        argv("ip netns exec {b} sysctl -q -w net.ipv4.ip_forward=0", b=b_ns),
    ):
        run(command)
    forwarding = run(argv("ip netns exec {b} cat /proc/sys/net/ipv4/ip_forward", b=b_ns))
    if forwarding.stdout.strip() != "0":
        raise BedError("could not turn forwarding off in the bastion")
    return laptop, bastion, bastion_inner, remote


def _install_user(record: BedRecord, fakes: Path, ca_pem: Path) -> tuple[pwd.struct_passwd, Path]:
    """Key-only login for the test user, the fakes and the CA in its home; returns (pw, CA)."""
    pw = pwd.getpwnam(record.user)
    home = Path(pw.pw_dir)
    run(["usermod", "-p", "*", record.user])
    for sub in (".ssh", ".local", ".local/bin", "bin", ".hermes"):
        (home / sub).mkdir(exist_ok=True)
    (home / ".ssh").chmod(0o700)
    client_pub = Path(record.tmp, "client", "id_ed25519.pub").read_text()
    (home / ".ssh" / "authorized_keys").write_text(client_pub)
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    copies = [(fakes / "hermes", home / ".local" / "bin" / "hermes", 0o755)]
    if (fakes / "loopback-cli").is_file():
        copies.append((fakes / "loopback-cli", home / "bin" / "loopback-cli", 0o755))
    remote_ca = home / ".hermes" / "ca.pem"
    copies.append((ca_pem, remote_ca, 0o644))
    for src, dst, mode in copies:
        shutil.copyfile(src, dst)
        dst.chmod(mode)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    return pw, remote_ca


def _start_daemons(bed: Bed, fakes: Path) -> None:
    """Three sshds and the provider, each through ``ip netns exec``; wait until they listen."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for host, (role, port, fwd) in SSHD_HOSTS.items():
        hostdir = bed.tmp / host
        cfg = hostdir / "sshd_config"
        cfg.write_text(
            SSHD_CONFIG.format(
                port=port, hostdir=hostdir, user=bed.user, forwarding="yes" if fwd else "no"
            )
        )
        command = [SSHD, "-D", "-f", str(cfg), "-E", str(bed.sshd_logs[host])]
        bed.daemons.append(
            _start_daemon(f"sshd[{host}]", bed.netns_argv(role, command), hostdir / "stderr.log")
        )
    ca = bed.tmp / "ca"
    provider_cmd = ["python3", str(fakes / "provider.py"), "--bind", "0.0.0.0", "--port", "0"]
    provider_cmd += ["--certfile", str(ca / "idp.pem"), "--keyfile", str(ca / "idp.key")]
    provider_cmd += ["--state-dir", str(bed.provider_state_dir)]
    provider = _start_daemon(
        "provider",
        bed.netns_argv("bastion", provider_cmd),
        bed.tmp / "provider.log",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    bed.daemons.append(provider)
    for daemon, (_role, port, _fwd) in zip(bed.daemons, SSHD_HOSTS.values(), strict=False):
        _wait_listening(daemon, port)

    def ready_port() -> int | None:
        if provider.popen.poll() is not None:
            raise BedError(f"provider exited: {provider.log.read_text(errors='replace')[-2000:]}")
        found = re.search(r"^READY (\d+)$", provider.log.read_text(errors="replace"), re.M)
        return int(found.group(1)) if found else None

    bed.idp_port = wait_for(ready_port, timeout=10, what="the provider's READY line")
    _wait_listening(provider, bed.idp_port)


def _fill_known_hosts(bed: Bed) -> None:
    """ssh-keyscan every sshd (the remote from inside the bastion), check against our keys."""
    scan = "ssh-keyscan -T 5 -t ed25519 -p {port} {ip}"
    scans = {
        "bastion": _popen(argv(scan, port=22, ip=bed.bastion_ip)),
        "remote": _popen(bed.netns_argv("bastion", argv(scan, port=22, ip=bed.remote_ip))),
        "remote-nofwd": _popen(bed.netns_argv("bastion", argv(scan, port=2222, ip=bed.remote_ip))),
    }
    names = {"bastion": bed.bastion_ip, "remote": bed.remote_ip, "remote-nofwd": "remote-nofwd"}
    lines = []
    for host, proc in scans.items():
        out = _finish(proc).splitlines()
        scanned = [ln.split()[1:3] for ln in out if ln.strip() and not ln.startswith("#")]
        expected = (bed.tmp / host / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        if scanned != [expected]:
            raise BedError(f"ssh-keyscan of {host} gave {scanned}, expected {expected}")
        lines.append(f"{names[host]} {expected[0]} {expected[1]}\n")
    bed.known_hosts.write_text("".join(lines))


def build(fakes: Path = FAKES) -> Bed:
    """Build a bed; on any failure remove whatever was already created and re-raise."""
    for tool in ("ip", SSHD, "ssh", "ssh-keygen", "ssh-keyscan", "openssl", "useradd"):
        if shutil.which(tool) is None:
            raise BedError(f"missing prerequisite: {tool}")
    for fake in ("provider.py", "hermes"):
        if not (fakes / fake).is_file():
            raise BedError(f"missing fake: {fakes / fake}")
    t0 = time.monotonic()
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
    for sub in (*SSHD_HOSTS, "client", "ca", "idp-state", "browser"):
        (tmp / sub).mkdir(mode=0o700)
    ca = tmp / "ca"
    # Independent slow-ish steps run concurrently with the network setup.
    keygens = [
        _popen(
            argv(
                KEYGEN, empty="", comment=f"{record.id}-{h}", path=tmp / h / "ssh_host_ed25519_key"
            )
        )
        for h in SSHD_HOSTS
    ]
    keygens.append(
        _popen(argv(KEYGEN, empty="", comment=record.id, path=tmp / "client" / "id_ed25519"))
    )
    ca_gen = _popen(
        [
            *argv(CA_REQ, key=ca / "ca.key", cert=ca / "ca.pem"),
            *("-subj", f"/CN={record.id} throwaway CA"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ]
    )
    useradd = _popen(
        [
            *argv("useradd --create-home --home-dir /home/{u} --shell /bin/bash", u=record.user),
            *("--comment", f"tunnelauth-bed owner={record.owner_pid} id={record.id}"),
            record.user,
        ]
    )
    laptop_ip, bastion_ip, bastion_inner_ip, remote_ip = _make_network(record)
    _finish(ca_gen)
    run(
        [
            *argv(CA_REQ, key=ca / "idp.key", cert=ca / "idp.pem"),
            *argv("-subj /CN=idp.test -CA {c} -CAkey {k}", c=ca / "ca.pem", k=ca / "ca.key"),
            *("-addext", f"subjectAltName=DNS:idp.test,IP:{bastion_ip},IP:{bastion_inner_ip}"),
            *("-addext", "basicConstraints=critical,CA:FALSE"),
            *("-addext", "keyUsage=critical,digitalSignature"),
            *("-addext", "extendedKeyUsage=serverAuth"),
        ]
    )
    for proc in [*keygens, useradd]:
        _finish(proc)
    pw, remote_ca = _install_user(record, fakes, ca / "ca.pem")
    t_base = time.monotonic()

    bed = Bed(
        record=record,
        tmp=tmp,
        user=record.user,
        uid=pw.pw_uid,
        gid=pw.pw_gid,
        home=Path(pw.pw_dir),
        netns=dict(record.netns),
        laptop_ip=laptop_ip,
        bastion_ip=bastion_ip,
        bastion_inner_ip=bastion_inner_ip,
        remote_ip=remote_ip,
        ssh_config=tmp / "ssh_config",
        known_hosts=tmp / "known_hosts",
        identity=tmp / "client" / "id_ed25519",
        ca_file=ca / "ca.pem",
        remote_ca_file=remote_ca,
        provider_state_dir=tmp / "idp-state",
        bed_json=tmp / "bed.json",
        sshd_logs={h: tmp / h / "sshd.log" for h in SSHD_HOSTS},
        daemons=daemons,
    )
    _start_daemons(bed, fakes)
    t_daemons = time.monotonic()
    _fill_known_hosts(bed)
    bed.ssh_config.write_text(
        CLIENT_CONFIG.format(
            bastion_ip=bed.bastion_ip,
            remote_ip=bed.remote_ip,
            user=bed.user,
            identity=bed.identity,
            known_hosts=bed.known_hosts,
        )
    )
    bed.ssh_config.chmod(0o600)
    bed.reset_fake()
    info = {"id": record.id, "idp_ip": bed.idp_ip, "idp_port": bed.idp_port}
    info |= {"idp_url": bed.idp_url, "ca_file": str(bed.ca_file)}
    info |= {"browser_workdir": str(bed.browser_workdir)}
    bed.bed_json.write_text(json.dumps(info, indent=2))
    t_end = time.monotonic()
    bed.timings.update(
        base=t_base - t0, daemons=t_daemons - t_base, keyscan=t_end - t_daemons, up=t_end - t0
    )
    return bed
