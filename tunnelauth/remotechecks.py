"""Short questions to the remote over a connection: which ports listen, whether the server
opens direct-tcpip channels, where hermes is and its home. ``doctor`` asks them all; a login
asks ``remote_port_state`` before it opens a loopback callback's page.

The forwarding probe never touches a real listener: it first makes sure nothing listens on
the probed port, then opens a channel to it, and reads the server's refusal ("connect failed"
= allowed, "administratively prohibited" = refused).
"""

from __future__ import annotations

import asyncio
import random

from tunnelauth.doctorreport import FAIL, OK, WARN, Check
from tunnelauth.laptopchecks import WELL_KNOWN_PORTS
from tunnelauth.remote import lookup_snippet, settings_command
from tunnelauth.sanitize import untrusted
from tunnelauth.settings import Settings
from tunnelauth.status import ExitStatus
from tunnelauth.transports.base import Transport

EXEC_DEADLINE = 20.0  # one short remote question
OUTPUT_LIMIT = 64 * 1024  # bytes of a remote answer kept (a real one is a few lines)
PROBE_DEADLINE = 5.0  # the server's answer to the probe channel
PROBE_PORTS = (20000, 27000)  # below Linux's ephemeral range and clear of hermes' pinned ports

# $1 = a port: is anything listening on it (any address)? Prints busy, free or unknown.
_PORT_STATE = r"""
p=$1; hex=$(printf '%04X' "$p")
if [ -r /proc/net/tcp ]; then
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" \
     '{ split($2, a, ":"); if (a[2] == h && $4 == "0A") f = 1 } END { exit !f }'
  then echo busy; else echo free; fi
elif command -v ss >/dev/null 2>&1; then
  if ss -Hltn 2>/dev/null | awk -v p="$p" \
     '{ n = split($4, a, ":"); if (a[n] == p) f = 1 } END { exit !f }'
  then echo busy; else echo free; fi
elif command -v netstat >/dev/null 2>&1; then
  if netstat -an 2>/dev/null | grep -i listen | grep -Eq "[.:]$p[[:space:]]"
  then echo busy; else echo free; fi
else echo unknown; fi
"""

# The port sshd accepted this session on ($SSH_CONNECTION), and whether sshd listens on it on
# the remote's loopback (127.0.0.1, any IPv4 address, or any IPv6 address in dual stack).
_SSHD_PORT = r"""
set -- ${SSH_CONNECTION:-}; p=${4:-}
case $p in ''|*[!0-9]*) echo unknown; exit 0;; esac
hex=$(printf '%04X' "$p")
if [ -r /proc/net/tcp ] && cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" '
  { split($2, a, ":"); if (a[2] == h && $4 == "0A" &&
    (a[1] == "0100007F" || a[1] ~ /^0+$/)) f = 1 } END { exit !f }'
then echo "listening $p"; else echo "unknown $p"; fi
"""

# $1 = the program; the rest = its arguments. Finds it like a login does, says where, runs it.
_LOCATE = """\
want=$1; shift
{lookup}
if [ -z "$bin" ]; then echo "tunnelauth-doctor: missing $want"; exit 127; fi
printf 'tunnelauth-doctor: found %s\\n' "$bin"
exec "$bin" "$@"
"""

# $1 = the profile ("" for none): the hermes home in use and whether it exists.
_HOME = """\
h=${HERMES_HOME:-$HOME/.hermes}; src=default
[ -n "${HERMES_HOME:-}" ] && src=HERMES_HOME
[ -n "$1" ] && h=$h/profiles/$1
if [ -d "$h" ]; then echo "exists $src $h"; else echo "absent $src $h"; fi
"""


async def _sh(settings: Settings, transport: Transport, script: str, *args: str) -> tuple[int, str]:
    """Run a small sh script on the remote (as the login would run); (exit, stdout)."""
    command = settings_command(settings, ["-c", script, "tunnelauth", *args], program="sh")
    result = await transport.exec(command, timeout=EXEC_DEADLINE, limit=OUTPUT_LIMIT)
    code = result.exit_status if result.exit_status is not None else -1
    return code, untrusted(result.stdout, limit=OUTPUT_LIMIT, multiline=True)


async def remote_port_state(
    settings: Settings, transport: Transport, port: int, *, timeout: float = EXEC_DEADLINE
) -> str:
    """Whether anything listens on ``port`` on the remote: ``busy``, ``free`` or ``unknown``.

    It reads the remote's socket table and never connects to the port (a login's listener may
    answer exactly one request).
    """
    command = settings_command(settings, ["-c", _PORT_STATE, "tunnelauth", str(port)], program="sh")
    result = await transport.exec(command, timeout=timeout, limit=OUTPUT_LIMIT)
    state = untrusted(result.stdout, limit=OUTPUT_LIMIT, multiline=True).strip()
    return state if state in ("busy", "free") else "unknown"


async def check_forwarding(settings: Settings, transport: Transport) -> Check:
    """Whether the server opens direct-tcpip channels, probed on a port nothing listens on."""
    name = "forwarding"
    for _ in range(3):
        port = random.randrange(*PROBE_PORTS)
        if port in WELL_KNOWN_PORTS:
            continue
        _, state = await _sh(settings, transport, _PORT_STATE, str(port))
        state = state.strip()
        if state == "free":
            break
        if state != "busy":
            return Check(
                name,
                WARN,
                "not probed: cannot tell which remote ports are in use "
                "(no /proc/net/tcp, ss or netstat)",
            )
    else:
        return Check(name, WARN, "not probed: every port tried was in use on the remote")
    channel = await transport.open_channel("127.0.0.1", port)
    try:
        data = await asyncio.wait_for(channel.reader.read(1), PROBE_DEADLINE)
        refusal = None if data else await channel.refusal()
    except asyncio.TimeoutError:
        data, refusal = b"?", None  # the channel opened: something started listening meanwhile
    finally:
        await channel.close()
    said = (refusal or "").lower()
    if "administratively prohibited" in said:
        return _forwarding_refused(refusal or "")
    if data or "connect failed" in said or "connection refused" in said:
        return Check(name, OK, f"allowed (probe to closed remote port {port}: connect failed)")
    if "refused by peer" in said:
        # Through a master that is not ours (the user's live ControlMaster), ssh reports every
        # refusal alike; only a channel to a port known to listen can tell the two apart.
        return await _probe_sshd(settings, transport, refusal or "")
    return Check(name, WARN, f"inconclusive ({refusal or 'no answer'})", _INCONCLUSIVE_FIX)


_INCONCLUSIVE_FIX = (
    "see the server's own answer without your ControlMaster: "
    "tunnelauth doctor HOST -o ControlPath=none"
)


def _forwarding_refused(refusal: str) -> Check:
    """The server forbids direct-tcpip channels: the callback is relayed instead."""
    return Check(
        "forwarding",
        WARN,
        f"refused ({refusal}): the server forbids port forwarding; a loopback callback "
        "cannot use a direct channel and is relayed through an SSH session instead",
        "allow it in the server's sshd_config: AllowTcpForwarding local (or yes)",
    )


async def _probe_sshd(settings: Settings, transport: Transport, refusal: str) -> Check:
    """Open a channel to the remote's own sshd on loopback: its banner proves forwarding works.

    sshd answers a connection that sends nothing with its version line and nothing else
    happens; no other listener is touched (a one-shot login listener must not be).
    """
    _, out = await _sh(settings, transport, _SSHD_PORT)
    state, _, port = out.strip().partition(" ")
    if state != "listening" or not port.isdigit():
        return Check("forwarding", WARN, f"inconclusive ({refusal})", _INCONCLUSIVE_FIX)
    channel = await transport.open_channel("127.0.0.1", int(port))
    try:
        banner = await asyncio.wait_for(channel.reader.read(64), PROBE_DEADLINE)
    except asyncio.TimeoutError:
        banner = b"?"
    finally:
        await channel.close()
    if banner.startswith(b"SSH-"):
        return Check(
            "forwarding",
            OK,
            f"allowed (through your live master: a channel to the remote's sshd on "
            f"127.0.0.1:{port} opened)",
        )
    if not banner:
        return _forwarding_refused(
            f"{refusal}; a channel to the remote's sshd on 127.0.0.1:{port}, which listens, "
            "was refused too"
        )
    return Check("forwarding", WARN, f"inconclusive ({refusal})", _INCONCLUSIVE_FIX)


async def check_hermes(settings: Settings, transport: Transport) -> Check:
    """The remote program: found where a login would look, and its version."""
    script = _LOCATE.format(lookup=lookup_snippet())
    code, out = await _sh(settings, transport, script, settings.program, "--version")
    where, version = "", ""
    for line in out.splitlines():
        if line.startswith("tunnelauth-doctor: found "):
            where = line.removeprefix("tunnelauth-doctor: found ").strip()
        elif line.strip() and not version:
            version = line.strip()
    if not where:
        return Check(
            "hermes",
            FAIL,
            f"{settings.program!r} not found (PATH, ~/.local/bin and the usual install places)",
            "install hermes there, or name it: --hermes PATH (or hermes = … in the config)",
            ExitStatus.COMMAND_NOT_FOUND,
        )
    if code != 0:
        return Check(
            "hermes",
            FAIL,
            f"{where} exists but `--version` exited {code}: {version or 'no output'}",
            "check the install on the remote (run it there by hand)",
            ExitStatus.LOGIN_FAILED,
        )
    return Check("hermes", OK, f"{where}: {version or 'version not printed'}")


async def check_home(settings: Settings, transport: Transport) -> Check:
    """The hermes home (HERMES_HOME or ~/.hermes, plus the profile) on the remote."""
    profile = settings.args[1] if settings.args[:1] == ("-p",) else ""
    _, out = await _sh(settings, transport, _HOME, profile)
    state, _, rest = out.strip().partition(" ")
    source, _, path = rest.partition(" ")
    label = "hermes home" + (f" (profile {profile})" if profile else "")
    if state == "exists":
        return Check(label, OK, f"{path} (from {source})")
    if state == "absent":
        return Check(
            label,
            WARN,
            f"{path} does not exist yet (from {source})",
            "fine for a first login; otherwise check --profile / --hermes-home",
        )
    return Check(label, WARN, f"could not read it: {out.strip()[:200] or 'no output'}")
