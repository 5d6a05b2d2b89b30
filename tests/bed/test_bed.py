"""The bed is honest: isolation holds, forwarding works where allowed, helpers tell the truth."""

from __future__ import annotations

import json
import os
import selectors
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed import ETC_NETNS, background_job, chromium, leftovers, netbed, reaper, wait_for
from tests.bed.netbed import Bed

pytestmark = [pytest.mark.bed, pytest.mark.usefixtures("no_leftovers")]

GREETER = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen()
print("READY", flush=True)
while True:
    conn, _ = srv.accept()
    conn.sendall(b"hello-from-remote\n")
    conn.close()
"""


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of a child's stdout, or fail at the deadline."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output from {proc.args!r} within {timeout}s")
    return proc.stdout.readline()


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a child by PID and reap it (with a deadline)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stdout:
        proc.stdout.close()


def free_laptop_port() -> int:
    """A port nothing listens on in the default namespace right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def greet(port: int) -> bytes | None:
    """Connect to 127.0.0.1:port on the laptop and read the greeting (None if refused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.makefile("rb").readline()
    except ConnectionRefusedError:
        return None


@pytest.fixture
def remote_greeter(bed: Bed) -> Iterator[int]:
    """A TCP greeter on 127.0.0.1:P inside the remote namespace; yields P."""
    port = free_laptop_port()
    proc = subprocess.Popen(
        bed.netns_argv("remote", [sys.executable, "-c", GREETER, str(port)]),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert read_line(proc, 5).strip() == "READY"
        yield port
    finally:
        stop(proc)


def test_jump_reaches_remote_through_the_bastion(bed: Bed) -> None:
    res = bed.ssh("remote", "echo $SSH_CONNECTION")
    assert res.returncode == 0, res.stderr
    client_ip, _, server_ip, server_port = res.stdout.split()
    assert (client_ip, server_ip, server_port) == (bed.bastion_inner_ip, bed.remote_ip, "22")


def test_laptop_cannot_reach_remote_directly(bed: Bed) -> None:
    res = bed.ssh("remote-direct", "true", options=["-o", "ConnectTimeout=2"])
    assert res.returncode == 255
    assert "No route to host" in res.stderr or "timed out" in res.stderr, res.stderr


def test_remote_loopback_needs_the_tunnel(bed: Bed, remote_greeter: int) -> None:
    port = remote_greeter
    assert greet(port) is None, "the remote's loopback must not be the laptop's"
    spec = f"127.0.0.1:{port}:127.0.0.1:{port}"
    opts = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", spec]
    fwd = subprocess.Popen(bed.ssh_argv("remote", options=opts), stdin=subprocess.DEVNULL)
    try:
        got = wait_for(lambda: fwd.poll() is None and greet(port), timeout=5, what="the -L")
        assert got == b"hello-from-remote\n"
    finally:
        fwd.terminate()
        fwd.wait(5)
    assert greet(port) is None


def test_hardened_remote_refuses_forwarding_but_runs_commands(bed: Bed) -> None:
    res = bed.ssh("remote-nofwd", options=["-W", "127.0.0.1:22"], input="")
    assert res.returncode != 0
    assert "administratively prohibited" in res.stderr, res.stderr
    assert bed.ssh("remote-nofwd", "true").returncode == 0


def test_hosts_have_their_own_host_keys(bed: Bed) -> None:
    res = bed.ssh("remote", "true", options=["-o", "HostKeyAlias=remote-nofwd"])
    assert res.returncode == 255
    assert "Host key verification failed" in res.stderr, res.stderr


def test_fake_hermes_is_installed_off_the_noninteractive_path(bed: Bed) -> None:
    res = bed.ssh("remote", "hermes", "--version")
    assert res.returncode == 127
    assert "not found" in res.stderr
    res = bed.ssh("remote", "~/.local/bin/hermes", "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()
    st = os.stat(bed.hermes_path)
    assert (st.st_uid, st.st_mode & 0o777) == (bed.uid, 0o755)


def test_fake_helpers(bed: Bed) -> None:
    try:
        cfg = bed.set_fake(mode="timeout", version="0.18.0", timeout=3)
        assert cfg["provider"] == bed.idp_url
        assert cfg["ca_file"] == str(bed.remote_ca_file)
        res = bed.ssh("remote", "cat", "~/.hermes/fake.json")
        assert json.loads(res.stdout) == cfg
        assert bed.fake_json.stat().st_uid == bed.uid
        assert bed.fake_record("no-such-flow") is None
        assert bed.remote_login_processes() == []
        assert isinstance(bed.provider_issued(), list)
    finally:
        cfg = bed.reset_fake()
    assert set(cfg) == {"provider", "ca_file"}


def test_provider_reachable_from_the_remote(bed: Bed) -> None:
    script = (
        "import socket, ssl, sys, urllib.request as u;"
        "ctx = ssl.create_default_context(cafile=sys.argv[2]);"
        "r = u.urlopen(sys.argv[1], context=ctx, timeout=5);"
        "print(socket.gethostbyname('idp.test'), r.status)"
    )
    url = f"{bed.idp_url}/device"
    res = bed.ssh("remote", "python3", "-c", shlex.quote(script), url, str(bed.remote_ca_file))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [bed.bastion_inner_ip, "200"]


def test_provider_reachable_from_laptop_chromium(bed: Bed, tmp_path: Path) -> None:
    dom = tmp_path / "dom.html"
    argv = [a.replace("{url}", f"{bed.idp_url}/device") for a in shlex.split(bed.browser_cmd(dom))]
    start = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    assert "</html>" in dom.read_text()
    access = (bed.provider_state_dir / "access.log").read_text()
    assert "/device" in access, "the page must come from the bed's provider"
    assert elapsed < 30
    assert not list(bed.browser_workdir.iterdir()), "profile dir must be deleted"


def test_chromium_flags_keep_it_on_this_machine() -> None:
    argv = chromium.chromium_argv("https://idp.test:1/", idp_ip="10.231.1.2", profile_dir="/p")
    rules = (
        "--host-resolver-rules=MAP idp.test 10.231.1.2 , MAP * ~NOTFOUND , "
        "EXCLUDE 127.0.0.1, EXCLUDE localhost, EXCLUDE ::1"
    )
    assert rules in argv
    assert {"--headless", "--disable-quic", "--ignore-certificate-errors"} <= set(argv)
    assert argv[-2:] == ["--dump-dom", "https://idp.test:1/"]


def test_authentications_are_counted_per_sshd(bed: Bed) -> None:
    before = bed.auth_counts()
    assert bed.ssh("remote", "true").returncode == 0
    assert bed.ssh("remote-nofwd", "true").returncode == 0
    expected = {"bastion": 2, "remote": 1, "remote-nofwd": 1}

    def counted() -> bool:
        now = bed.auth_counts()
        return all(now[h] - before[h] == n for h, n in expected.items())

    wait_for(counted, timeout=3, what=f"auth counts {expected} over {before}")


def test_leftover_check_sees_masters_listeners_and_remote_processes(bed: Bed) -> None:
    before = leftovers.snapshot(bed)
    sock = bed.tmp / "ctl.sock"
    master = subprocess.run(
        bed.ssh_argv("remote", options=["-M", "-S", str(sock), "-f", "-N"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a pipe would stay open in the backgrounded master
        timeout=15,
    )
    assert master.returncode == 0
    held = socket.socket()
    try:  # what the test leaves on purpose goes in every case, as the job does
        held.bind(("127.0.0.1", 0))
        held.listen()
        with background_job(
            lambda command: bed.ssh("remote", command), bed.remote_login_processes
        ) as pids:
            left = leftovers.new_since(before)
            assert any(f"-S {sock}" in i.desc for i in left["processes"]), left
            assert any(str(sock) in i.desc for i in left["paths"]), left
            assert any("this test process" in i.desc for i in left["listeners"]), left
            assert [i.key[1] for i in left["bed user processes"]] == pids
    finally:
        held.close()
        ended = bed.ssh("remote", options=["-S", str(sock), "-O", "exit"])
    assert ended.returncode == 0
    leftovers.assert_nothing_left(before)


def test_reaper_removes_a_killed_runs_bed_only(bed: Bed) -> None:
    code = (
        "import sys; from tests.bed import netbed; b = netbed.build();"
        "print(json.dumps(b.record.__dict__), flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", "import json;" + code],
        cwd=netbed.REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        record = reaper.BedRecord(**json.loads(read_line(child, 15)))
    finally:
        child.kill()
        child.wait(5)
        assert child.stdout is not None and child.stdin is not None
        child.stdout.close()
        child.stdin.close()
    record.path.unlink()  # the reaper must also find beds by name alone
    assert reaper.netns_inode(record.netns["remote"]) is not None
    removed = reaper.reap()
    assert any(f"deleted netns {record.netns['remote']}" in line for line in removed), removed
    assert all(reaper.netns_inode(ns) is None for ns in record.netns.values())
    assert not Path(record.tmp).exists()
    assert not Path(f"/home/{record.user}").exists()
    assert not (ETC_NETNS / record.netns["bastion"]).exists()
    assert reaper.safety_route_present()
    assert bed.record.path.exists()
    assert bed.ssh("remote", "true").returncode == 0
