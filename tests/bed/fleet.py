"""Bed extra: a fleet of target hosts behind the bed's bastion, and a one-time-code bastion.

``build(bed, count=N)`` adds N (1-10) targets to a built ``Bed`` and returns a ``Fleet``;
``Fleet.close()`` removes them. The fleet's namespaces are written into the bed's registry
record before they exist, so the reaper (and ``Bed.close()``) removes them if the run is
killed, and ``leftovers`` watches the test user's processes in them like in the remote.

```
 laptop ── bastion netns ─┬─ veth f<S>t1 ── fleet1 netns   sshd :22 (like the remote)
           sshd :22       ├─ ...
           otp :2300+S    └─ veth f<S>tN ── fleetN netns
           (asyncssh: keyboard-interactive one-time code, forwards to the targets)
```

Each target is a real OpenSSH sshd configured like the bed's remote (same test user and
key), with its own log and host key (added to the bed's known_hosts), and its own hermes
home: ``SetEnv HERMES_HOME=~/.hermes-fleet<S>/<name>`` in its sshd_config, so every command
a login runs there sees it without tunnelauth's help. ``idp.test`` resolves, inside each
target, to the bastion's end of that target's link, where the fake provider listens.

Use:
    fleet = build(bed, count=5)
    fleet.names                        # ["fleet1", ..., "fleet5"]
    fleet.ssh_config                   # ssh -F it: fleet1..N (ProxyJump bastion),
                                       # otp-fleet1..N (ProxyJump bastion-otp), bastion-otp,
                                       # fleet-dark (an address nothing answers), the bed's hosts
    fleet.ssh("fleet3", "true")        # run ssh with that config (env= for the OTP askpass)
    fleet.auth_count("fleet3")         # publickey logins accepted by fleet3's sshd
    fleet.set_fake("fleet3", mode="deny"); fleet.fake_record("fleet3", "xai-oauth")
    fleet.reset()                      # every target: no records, no tokens, default fake.json
    with fleet.stopped("fleet2"): ...  # its sshd is down (connection refused), then back
    fleet.otp_env()                    # SSH_ASKPASS env that answers the one-time code
    fleet.otp_prompts(), fleet.otp_accepted()   # codes the OTP bastion asked for / accepted
    with fleet.delayed(50) as path: ...         # +50 ms RTT per hop: ssh -F path.ssh_config
    fleet.login_processes()            # the test user's non-sshd processes on any target
    fleet.close()

Fixtures (tests/conftest.py): ``fleet`` (session, 5 targets), ``fleet10`` (session, 10, a
fleet of its own on the same bed) and ``fleet_fresh`` (per test: all up, state reset, nothing
left). Several fleets share a bed: each takes a slot S (1-5) with its own addresses, ports,
namespaces and homes; their aliases are the same (``fleet1``...), in their own ssh_config.
``otp_env()`` serves OpenSSH's ssh: in a batch run (CI set) tunnelauth's asyncssh and paramiko
backends refuse the keyboard-interactive jump (exit 3) instead of running SSH_ASKPASS.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.bed import ETC_NETNS, SSHD, BedError, kill_pids, netns_pids, run, wait_for
from tests.bed import argv as split_argv
from tests.bed.netbed import (
    KEYGEN,
    SSHD_CONFIG,
    Bed,
    Daemon,
    _finish,
    _popen,
    _start_daemon,
    _wait_listening,
)
from tests.bed.reaper import _wait_released, netns_inode

HERE = Path(__file__).resolve().parent
RELAY = HERE.parent / "bench" / "relay.py"
OTP_SERVER = HERE / "otp_server.py"

MAX_TARGETS = 10
MAX_FLEETS = 5  # per bed: each takes a 48-address block of the bed's /24
FIRST_HOST = 8  # the bed itself uses .0/30 and .4/30
BLOCK = 48  # 10 targets × /30, plus the dark /30, rounded up
DARK = "fleet-dark"
OTP_BASE_PORT = 2300  # the OTP bastion of fleet S listens on 2300+S in the bastion
RELAY_BASE_PORT = 2260  # delay relays of fleet S: 2260+2S (sshd), 2261+2S (OTP bastion)

FLEET_BLOCKS = """\
Host bastion-otp
  HostName {bastion_ip}
  Port {otp_port}
  PubkeyAuthentication no
  PasswordAuthentication no
  KbdInteractiveAuthentication yes
  NumberOfPasswordPrompts 1
  BatchMode no
{targets}Host {dark}
  HostName {dark_ip}
  ProxyJump bastion
"""

TARGET_BLOCKS = """\
Host {name}
  HostName {ip}
  ProxyJump bastion
Host otp-{name}
  HostName {ip}
  ProxyJump bastion-otp
"""

ASKPASS = """\
#!/bin/sh
# Answers the fleet's OTP bastion (ssh runs this with the prompt as its argument).
exec cat {code_file}
"""


@dataclass
class Target:
    """One fleet host: its namespace, address, sshd and hermes home."""

    name: str  # host alias: fleet1 ... fleetN
    role: str  # key in bed.netns / the registry record: f<S>t<i>
    netns: str
    ip: str
    gateway_ip: str  # the bastion's end of this target's link (idp.test from here)
    dir: Path  # host key, sshd_config, sshd.log
    hermes_home: Path
    daemon: Daemon | None = None

    @property
    def sshd_log(self) -> Path:
        """The log of this target's sshd."""
        return self.dir / "sshd.log"

    @property
    def fake_json(self) -> Path:
        """The fake hermes' configuration file on this target."""
        return self.hermes_home / "fake.json"


@dataclass
class DelayedPath:
    """The fleet behind delay relays: an ssh config, and the relays' connection counts."""

    rtt_ms: int
    ssh_config: Path
    relay_logs: dict[str, Path] = field(default_factory=dict)

    def relay_counts(self) -> dict[str, int]:
        """TCP connections each relay accepted so far (by host alias)."""
        counts = {}
        for host, log in self.relay_logs.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            counts[host] = sum(1 for line in text.splitlines() if line.startswith("ACCEPT "))
        return counts


@dataclass
class Fleet:
    """A built fleet: its targets, the OTP bastion, the client config, and helpers."""

    bed: Bed
    slot: int
    tmp: Path
    targets: dict[str, Target]
    ssh_config: Path
    otp_port: int
    otp_code: str
    otp_log: Path
    askpass: Path
    dark_ip: str
    known_hosts_lines: list[str] = field(default_factory=list)
    otp_daemon: Daemon | None = None
    dark_veth: str = ""

    # names

    @property
    def names(self) -> list[str]:
        """The targets' host aliases, in order: fleet1 ... fleetN."""
        return list(self.targets)

    @property
    def otp_names(self) -> list[str]:
        """The same hosts reached through the OTP bastion: otp-fleet1 ... otp-fleetN."""
        return [f"otp-{name}" for name in self.targets]

    def ip(self, name: str) -> str:
        """A target's address (on the bastion's inner side)."""
        return self.targets[name].ip

    def netns_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        """Prefix ``argv`` so that it runs inside a target's namespace."""
        return ["ip", "netns", "exec", self.targets[name].netns, *argv]

    # ssh

    def ssh_argv(self, host: str, *command: str, options: Sequence[str] = ()) -> list[str]:
        """``ssh -F <fleet config> [options] host [command...]``."""
        return ["ssh", "-F", str(self.ssh_config), *options, host, *command]

    def ssh(
        self,
        host: str,
        *command: str,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 20.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ssh with the fleet's config to completion (no raise on failure)."""
        return subprocess.run(
            self.ssh_argv(host, *command, options=options),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env} if env is not None else None,
            check=False,
        )

    def otp_env(self) -> dict[str, str]:
        """Environment in which ssh answers the OTP bastion's prompt itself (SSH_ASKPASS)."""
        return {"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force"}

    # observations

    def auth_count(self, name: str) -> int:
        """Public-key authentications accepted so far by a target's sshd."""
        log = self.targets[name].sshd_log
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.count(f"Accepted publickey for {self.bed.user} ")

    def auth_counts(self) -> dict[str, int]:
        """``auth_count`` of every target."""
        return {name: self.auth_count(name) for name in self.targets}

    def _otp_lines(self, prefix: str) -> int:
        text = self.otp_log.read_text(errors="replace") if self.otp_log.exists() else ""
        return sum(1 for line in text.splitlines() if line.startswith(prefix))

    def otp_prompts(self) -> int:
        """One-time codes the OTP bastion has asked for so far."""
        return self._otp_lines("Asked one-time code for ")

    def otp_accepted(self) -> int:
        """One-time codes the OTP bastion has accepted so far."""
        return self._otp_lines("Accepted keyboard-interactive/otp for ")

    def login_processes(self, name: str | None = None) -> list[int]:
        """The test user's processes on one target (or all), sshd sessions excluded."""
        pids = []
        for target in [self.targets[name]] if name else self.targets.values():
            for pid in netns_pids(target.netns):
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
                    if proc.uids().real == self.bed.uid and proc.name() != "sshd":
                        pids.append(pid)
        return pids

    # the fake hermes, per target

    def hermes_home(self, name: str) -> Path:
        """A target's HERMES_HOME (what its sshd sets for every session)."""
        return self.targets[name].hermes_home

    def set_fake(self, name: str, **settings: Any) -> dict[str, Any]:
        """Merge settings into one target's fake.json; None removes a key."""
        path = self.targets[name].fake_json
        current = json.loads(path.read_text()) if path.exists() else {}
        for key, value in settings.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        self.bed.write_user_file(path, json.dumps(current, indent=2) + "\n")
        return current

    def fake_record(self, name: str, flow: str) -> dict[str, Any] | None:
        """The fake hermes' record of one flow on one target, or None if absent."""
        path = self.targets[name].hermes_home / "fake-record" / f"{flow}.json"
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def reset(self, name: str | None = None) -> None:
        """Forget records and tokens; fake.json back to the provider URL and CA only."""
        for target in [self.targets[name]] if name else self.targets.values():
            shutil.rmtree(target.hermes_home / "fake-record", ignore_errors=True)
            (target.hermes_home / "auth.json").unlink(missing_ok=True)
            target.fake_json.unlink(missing_ok=True)
            self.set_fake(
                target.name, provider=self.bed.idp_url, ca_file=str(self.bed.remote_ca_file)
            )

    # a target down

    def running(self, name: str) -> bool:
        """Whether a target's sshd is up."""
        daemon = self.targets[name].daemon
        return daemon is not None and daemon.popen.poll() is None

    def stop(self, name: str) -> None:
        """Stop a target's sshd: new connections are refused (sessions already open go on)."""
        target = self.targets[name]
        if target.daemon is not None:
            target.daemon.stop()
            with contextlib.suppress(ValueError):
                self.bed.daemons.remove(target.daemon)
            target.daemon = None

    def start(self, name: str) -> None:
        """Start a stopped target's sshd again and wait until it listens."""
        if not self.running(name):
            self.stop(name)
            self._start_sshd(self.targets[name])
            _wait_listening(self._daemon(name), 22)

    @contextlib.contextmanager
    def stopped(self, name: str) -> Iterator[Target]:
        """A target whose sshd is down for the ``with`` block."""
        self.stop(name)
        try:
            yield self.targets[name]
        finally:
            self.start(name)

    def restore(self) -> None:
        """Every target's sshd up (after a test stopped one)."""
        for name in self.targets:
            self.start(name)

    def _daemon(self, name: str) -> Daemon:
        daemon = self.targets[name].daemon
        if daemon is None:
            raise BedError(f"{name} has no sshd")
        return daemon

    def _start_sshd(self, target: Target) -> None:
        cfg = target.dir / "sshd_config"
        command = [SSHD, "-D", "-f", str(cfg), "-E", str(target.sshd_log)]
        target.daemon = _start_daemon(
            f"sshd[{target.name}]", self.netns_argv(target.name, command), target.dir / "stderr.log"
        )
        self.bed.daemons.append(target.daemon)

    # latency

    @contextlib.contextmanager
    def delayed(self, rtt_ms: int) -> Iterator[DelayedPath]:
        """The bastion, the OTP bastion and every target behind a relay adding ``rtt_ms``.

        As ``scripts/bench`` does for the remote (the kernel has no netem): each relay delays
        each direction by rtt_ms/2, so every hop's round trip grows by ``rtt_ms``.
        """
        delay = rtt_ms / 2000.0
        port = RELAY_BASE_PORT + 2 * self.slot
        bed = self.bed
        hops = [("bastion", bed.netns["bastion"], bed.bastion_ip, port, 22)]
        hops.append(("bastion-otp", bed.netns["bastion"], bed.bastion_ip, port + 1, self.otp_port))
        hops += [(t.name, t.netns, t.ip, port, 22) for t in self.targets.values()]
        relays: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        path = DelayedPath(rtt_ms, self.tmp / f"ssh_config-{rtt_ms}ms")
        try:
            for host, ns, ip, listen, to in hops:
                log = self.tmp / f"relay-{host}-{rtt_ms}ms.log"
                log.unlink(missing_ok=True)
                command = [sys.executable, "-I", str(RELAY), "--listen", f"{ip}:{listen}"]
                command += ["--to", f"127.0.0.1:{to}", "--delay", f"{delay:.4f}"]
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        ["ip", "netns", "exec", ns, *command],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                relays.append((host, proc, log))
                path.relay_logs[host] = log
            for host, proc, log in relays:

                def ready(proc: subprocess.Popen[bytes] = proc, log: Path = log) -> bool:
                    if proc.poll() is not None:
                        raise BedError(f"relay exited: {log.read_text(errors='replace')[-500:]}")
                    return "READY" in log.read_text(errors="replace")

                wait_for(ready, timeout=15, what=f"the {host} relay")
            blocks = [
                f"Host bastion\n  Port {port}\n  HostKeyAlias {bed.bastion_ip}\n",
                f"Host bastion-otp\n  Port {port + 1}\n  HostKeyAlias {self._otp_key_name}\n",
                *(
                    f"Host {t.name} otp-{t.name}\n  Port {port}\n  HostKeyAlias {t.ip}\n"
                    for t in self.targets.values()
                ),
            ]
            path.ssh_config.write_text("".join(blocks) + self.ssh_config.read_text())
            path.ssh_config.chmod(0o600)
            yield path
        finally:
            for _host, proc, _log in relays:
                if proc.poll() is None:
                    proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    @property
    def _otp_key_name(self) -> str:
        """How known_hosts names the OTP bastion."""
        return f"[{self.bed.bastion_ip}]:{self.otp_port}"

    # teardown

    def close(self) -> None:
        """Stop the daemons, delete the namespaces, forget the fleet in the bed's record."""
        bed = self.bed
        for target in self.targets.values():
            self.stop(target.name)
        if self.otp_daemon is not None:
            self.otp_daemon.stop()
            with contextlib.suppress(ValueError):
                bed.daemons.remove(self.otp_daemon)
        for target in self.targets.values():
            pids = netns_pids(target.netns)
            if pids:
                kill_pids(pids)
        if self.dark_veth:
            run(["ip", "-n", bed.netns["bastion"], "link", "del", self.dark_veth], check=False)
        inodes = {}
        for target in self.targets.values():
            inode = netns_inode(target.netns)
            if inode is not None:
                run(["ip", "netns", "del", target.netns], check=False)
                inodes[target.netns] = inode
        for ns, inode in inodes.items():
            _wait_released(ns, inode)
        for target in self.targets.values():
            shutil.rmtree(ETC_NETNS / target.netns, ignore_errors=True)
            bed.netns.pop(target.role, None)
            bed.record.netns.pop(target.role, None)
        bed.record.save()
        if bed.known_hosts.exists():
            drop = set(self.known_hosts_lines)
            kept = [ln for ln in bed.known_hosts.read_text().splitlines(True) if ln not in drop]
            _write_atomically(bed.known_hosts, "".join(kept))
        shutil.rmtree(bed.home / f".hermes-fleet{self.slot}", ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- building ------------------------------------------------------------------------------


def _free_slot(bed: Bed) -> int:
    """The lowest fleet number not used on this bed."""
    used = {int(role[1:].split("t")[0]) for role in bed.record.netns if role.startswith("f")}
    for slot in range(1, MAX_FLEETS + 1):
        if slot not in used:
            return slot
    raise BedError(f"a bed holds at most {MAX_FLEETS} fleets")


def build(bed: Bed, count: int = 5) -> Fleet:
    """Add ``count`` targets and the OTP bastion to ``bed``; on failure remove them, re-raise."""
    if not 1 <= count <= MAX_TARGETS:
        raise BedError(f"a fleet has 1 to {MAX_TARGETS} targets, not {count}")
    slot = _free_slot(bed)
    net = f"10.231.{bed.record.subnet}"
    base = FIRST_HOST + (slot - 1) * BLOCK
    tmp = bed.tmp / f"fleet{slot}"
    homes = bed.home / f".hermes-fleet{slot}"
    targets = {}
    for i in range(1, count + 1):
        name = f"fleet{i}"
        role = f"f{slot}t{i}"
        first = base + 4 * (i - 1)
        targets[name] = Target(
            name=name,
            role=role,
            netns=f"{bed.record.id}-{role}",
            ip=f"{net}.{first + 2}",
            gateway_ip=f"{net}.{first + 1}",
            dir=tmp / name,
            hermes_home=homes / name,
        )
    fleet = Fleet(
        bed=bed,
        slot=slot,
        tmp=tmp,
        targets=targets,
        ssh_config=tmp / "ssh_config",
        otp_port=OTP_BASE_PORT + slot,
        otp_code=f"{secrets.randbelow(10**6):06d}",
        otp_log=tmp / "otp-bastion.log",
        askpass=tmp / "otp-askpass",
        dark_ip=f"{net}.{base + BLOCK - 2}",
    )
    # Registered before anything exists, so a killed run's fleet is reaped with its bed.
    for target in targets.values():
        bed.netns[target.role] = target.netns
        bed.record.netns[target.role] = target.netns
    bed.record.save()
    try:
        _build(fleet, base)
    except BaseException:
        fleet.close()
        raise
    return fleet


def _build(fleet: Fleet, base: int) -> None:
    bed = fleet.bed
    net = f"10.231.{bed.record.subnet}"
    fleet.tmp.mkdir(mode=0o700)
    keygens = []
    for target in fleet.targets.values():
        target.dir.mkdir(mode=0o700)
        key = target.dir / "ssh_host_ed25519_key"
        keygens.append(_popen(split_argv(KEYGEN, empty="", comment=target.netns, path=key)))
    otp_key = fleet.tmp / "otp_host_ed25519_key"
    otp_keygen = _popen(
        split_argv(KEYGEN, empty="", comment=f"{bed.record.id}-otp{fleet.slot}", path=otp_key)
    )
    code_file = fleet.tmp / "otp-code"
    code_file.write_text(fleet.otp_code + "\n")
    code_file.chmod(0o600)
    fleet.askpass.write_text(ASKPASS.format(code_file=code_file))
    fleet.askpass.chmod(0o700)

    # The OTP bastion first: importing asyncssh is the slowest step of the build.
    _finish(otp_keygen)
    otp = [sys.executable, str(OTP_SERVER), "--port", str(fleet.otp_port)]
    otp += ["--host-key", str(otp_key), "--user", bed.user, f"--code={fleet.otp_code}"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    fleet.otp_daemon = _start_daemon(
        f"otp bastion {fleet.slot}", bed.netns_argv("bastion", otp), fleet.otp_log, env=env
    )
    bed.daemons.append(fleet.otp_daemon)

    _make_network(fleet, net, base)
    homes = bed.home / f".hermes-fleet{fleet.slot}"
    homes.mkdir(exist_ok=True)
    os.chown(homes, bed.uid, bed.gid)
    # The remote's defaults, not whatever an earlier test left in its fake.json.
    template = {"provider": bed.idp_url, "ca_file": str(bed.remote_ca_file)}
    for proc in keygens:
        _finish(proc)
    for target in fleet.targets.values():
        target.hermes_home.mkdir()
        os.chown(target.hermes_home, bed.uid, bed.gid)
        bed.write_user_file(target.fake_json, json.dumps(template, indent=2) + "\n")
        config = SSHD_CONFIG.format(port=22, hostdir=target.dir, user=bed.user, forwarding="yes")
        config += f"SetEnv HERMES_HOME={target.hermes_home}\n"
        (target.dir / "sshd_config").write_text(config)
        fleet._start_sshd(target)
    for target in fleet.targets.values():
        _wait_listening(fleet._daemon(target.name), 22)

    lines = []
    for target in fleet.targets.values():
        kind, blob = (target.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        lines.append(f"{target.ip} {kind} {blob}\n")
    kind, blob = Path(f"{otp_key}.pub").read_text().split()[:2]
    lines.append(f"{fleet._otp_key_name} {kind} {blob}\n")
    fleet.known_hosts_lines = lines
    _write_atomically(bed.known_hosts, bed.known_hosts.read_text() + "".join(lines))
    blocks = FLEET_BLOCKS.format(
        bastion_ip=bed.bastion_ip,
        otp_port=fleet.otp_port,
        targets="".join(TARGET_BLOCKS.format(name=t.name, ip=t.ip) for t in fleet.targets.values()),
        dark=DARK,
        dark_ip=fleet.dark_ip,
    )
    fleet.ssh_config.write_text(blocks + bed.ssh_config.read_text())
    fleet.ssh_config.chmod(0o600)

    otp_daemon = fleet.otp_daemon

    def otp_ready() -> bool:
        if otp_daemon.popen.poll() is not None:
            tail = fleet.otp_log.read_text(errors="replace")[-2000:]
            raise BedError(f"the OTP bastion exited: {tail}")
        return "READY" in fleet.otp_log.read_text(errors="replace")

    wait_for(otp_ready, timeout=20, what="the OTP bastion")
    _wait_listening(otp_daemon, fleet.otp_port)


def _make_network(fleet: Fleet, net: str, base: int) -> None:
    """Namespaces, one veth per target from the bastion, hosts files; the dark link."""
    bed = fleet.bed
    hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n{} idp.test\n"
    for target in fleet.targets.values():
        (ETC_NETNS / target.netns).mkdir(parents=True, exist_ok=True)
        (ETC_NETNS / target.netns / "resolv.conf").write_text("")
        (ETC_NETNS / target.netns / "hosts").write_text(hosts.format(target.gateway_ip))
    _batch(fleet.tmp / "netns.ip", [], [f"netns add {t.netns}" for t in fleet.targets.values()])
    in_bastion = []
    for target in fleet.targets.values():
        veth = target.role
        in_bastion += [
            f"link add {veth} type veth peer name eth0 netns {target.netns}",
            f"addr add {target.gateway_ip}/30 dev {veth}",
            f"link set {veth} up",
        ]
    # The dark address: on a link whose other end has no address, so nothing answers ARP
    # for it and a connection to it fails as to a host that is off.
    fleet.dark_veth = f"fd{fleet.slot}a"
    in_bastion += [
        f"link add {fleet.dark_veth} type veth peer name fd{fleet.slot}b",
        f"addr add {net}.{base + BLOCK - 3}/30 dev {fleet.dark_veth}",
        f"link set {fleet.dark_veth} up",
        f"link set fd{fleet.slot}b up",
    ]
    _batch(fleet.tmp / "bastion.ip", ["-n", bed.netns["bastion"]], in_bastion)
    procs = []
    for target in fleet.targets.values():
        batch = target.dir / "netns.ip"
        batch.write_text(f"link set lo up\naddr add {target.ip}/30 dev eth0\nlink set eth0 up\n")
        procs.append(_popen(["ip", "-n", target.netns, "-batch", str(batch)]))
    for proc in procs:
        _finish(proc)


def _batch(file: Path, options: list[str], commands: list[str]) -> None:
    """Run ``ip [options] -batch FILE`` (one process for many changes)."""
    file.write_text("\n".join(commands) + "\n")
    _finish(_popen(["ip", *options, "-batch", str(file)]))
