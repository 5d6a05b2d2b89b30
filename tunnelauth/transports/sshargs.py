"""Pure helpers for the OpenSSH transport: argv building and reading ssh's answers."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from tunnelauth.sanitize import untrusted
from tunnelauth.settings import SSHTarget

# Options tunnelauth forces on its own master whatever the user's config says: no agent or X11
# forwarding to a host that may be compromised, no forwards from the config (tunnelauth owns the
# laptop end), no RemoteCommand replacing ours, no escape character, and a short ControlPersist
# so a killed tunnelauth cannot leave the master running for long.
MASTER_OVERRIDES: tuple[str, ...] = (
    "ForwardAgent=no",
    "ForwardX11=no",
    "ClearAllForwardings=yes",
    "RemoteCommand=none",
    "RequestTTY=no",
    "PermitLocalCommand=no",
    "ControlMaster=yes",
    "ControlPersist=15",
    "ExitOnForwardFailure=yes",
)

# Options for every client that must go through the master and never open a connection of its
# own: if the control socket is gone, ProxyCommand=false makes the fallback fail at once instead
# of silently authenticating a second time.
MUX_ONLY: tuple[str, ...] = (
    "ControlMaster=no",
    "ProxyJump=none",
    "ProxyCommand=false",
    "BatchMode=yes",
    "ForwardAgent=no",
    "ForwardX11=no",
    "ClearAllForwardings=yes",
    "RemoteCommand=none",
    "PermitLocalCommand=no",
)


def target_args(target: SSHTarget) -> list[str]:
    """The ssh flags that describe the connection (config, jumps, key, port, login, -o)."""
    args: list[str] = []
    if target.ssh_config is not None:
        args += ["-F", str(target.ssh_config)]
    if target.jump:
        args += ["-J", ",".join(target.jump)]
    for identity in target.identity:
        args += ["-i", str(identity)]
    if target.port is not None:
        args += ["-p", str(target.port)]
    if target.login is not None:
        args += ["-l", target.login]
    for option in target.options:
        args += ["-o", option]
    return args


def _o(options: Sequence[str]) -> list[str]:
    """``-o`` flags for each option."""
    out: list[str] = []
    for option in options:
        out += ["-o", option]
    return out


def config_query_argv(ssh: str, target: SSHTarget) -> list[str]:
    """``ssh -G``: ask ssh for the effective configuration of the target."""
    return [ssh, "-G", *target_args(target), "--", target.host]


def master_argv(
    ssh: str,
    target: SSHTarget,
    socket: str,
    *,
    batch: bool,
    keepalive: bool,
    log: str | None = None,
    verbose: bool = False,
) -> list[str]:
    """Start a private ControlMaster that backgrounds itself once authenticated.

    ``log`` (``-E``) keeps the master's messages: a multiplexing client only hears "Session
    open refused by peer", while the master logs why (forwarding prohibited or nothing
    listening). ``verbose`` adds ``-v`` (tunnelauth's ``-vv``); ssh passes it on to the jump
    hosts' ssh, and then keeps their stderr instead of sending it to /dev/null.
    """
    extra = [*MASTER_OVERRIDES, f"ControlPath={socket}"]
    if batch:
        extra.append("BatchMode=yes")
    if keepalive:
        extra += ["ServerAliveInterval=5", "ServerAliveCountMax=3"]
    logging = ["-E", log] if log else []
    loud = ["-v"] if verbose else []
    return [
        ssh,
        *target_args(target),
        *_o(extra),
        *logging,
        *loud,
        "-e",
        "none",
        "-f",
        "-N",
        "--",
        target.host,
    ]


def keepalive_unset(config: Mapping[str, str]) -> bool:
    """Whether the user chose no ServerAliveInterval (``ssh -G`` output), so ours applies.

    Debian's ssh turns BatchMode's "no keepalive" into an implicit 300 s: that is not the
    user's choice, and a dead link would go unnoticed for 15 minutes.
    """
    interval = config.get("serveraliveinterval", "0")
    debian_batch = interval == "300" and config.get("batchmode", "no") == "yes"
    return interval in ("0", "") or debian_batch


def diagnose_argv(ssh: str, target: SSHTarget, *, verbose: bool = False) -> list[str]:
    """A plain, prompt-free connection that runs ``true`` (used to read a hidden error).

    ``verbose`` adds ``-v`` so ssh logs the ``Server host key:`` it was offered.
    """
    extra = ["BatchMode=yes", "ControlMaster=no", "ControlPath=none", "ControlPersist=no"]
    extra += ["ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes", "RemoteCommand=none"]
    loud = ["-v"] if verbose else []
    return [ssh, *target_args(target), *_o(extra), *loud, "-T", "--", target.host, "true"]


_SERVER_KEY = re.compile(r"Server host key: (?P<type>\S+) (?P<fp>SHA256:[A-Za-z0-9+/=]+)")


def server_host_key(stderr: str) -> str | None:
    """``TYPE SHA256:…`` from the last ``Server host key:`` line of ``ssh -v`` (the target's)."""
    found = list(_SERVER_KEY.finditer(stderr))
    return f"{found[-1]['type']} {found[-1]['fp']}" if found else None


def proxy_failure_hidden(stderr: str) -> bool:
    """Whether ssh only saw its proxy close (the proxy's own message went to /dev/null)."""
    return "kex_exchange_identification" in stderr or "UNKNOWN port 65535" in stderr


# Lines that only say a jump host's connection closed; the reason is on an earlier line.
_PROXY_CLOSED = ("kex_exchange_identification", "UNKNOWN port 65535", "stdio forwarding failed")


def mux_argv(ssh: str, target: SSHTarget, socket: str, *rest: str) -> list[str]:
    """A client that only talks through the control socket (``rest`` = mode flags)."""
    config = ["-F", str(target.ssh_config)] if target.ssh_config is not None else []
    return [ssh, *config, "-S", socket, *_o(MUX_ONLY), "-e", "none", *rest]


def shared_hop_proxy(ssh: str, hop: SSHTarget, socket: str) -> str:
    """The ProxyCommand that carries a target's connection through a fleet's hop master.

    A multiplexing client of the hop's master asks it for a direct-tcpip channel to the
    target (``-W``): the hop authenticates once for every host. ssh runs the command through
    the user's shell after expanding ``%h``/``%p``, so every word is quoted for the shell and
    its own ``%`` doubled.
    """
    argv = mux_argv(ssh, hop, socket, "-W", "[%h]:%p", "--", hop.host)
    words = []
    for word in argv:
        quoted = shlex.quote(word)
        words.append(quoted if word == "[%h]:%p" else quoted.replace("%", "%%"))
    return " ".join(words)


def session_argv(ssh: str, target: SSHTarget, socket: str, command: str) -> list[str]:
    """Run ``command`` over the master with a forced PTY."""
    return mux_argv(ssh, target, socket, "-tt", "--", target.host, command)


def exec_argv(ssh: str, target: SSHTarget, socket: str, command: str) -> list[str]:
    """Run a short ``command`` over the master without a PTY."""
    return mux_argv(ssh, target, socket, "-T", "--", target.host, command)


def stdio_forward_argv(ssh: str, target: SSHTarget, socket: str, host: str, port: int) -> list[str]:
    """Open a direct-tcpip channel to ``host:port`` over the master, carried on stdin/stdout."""
    dest = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return mux_argv(ssh, target, socket, "-W", dest, "--", target.host)


def control_argv(ssh: str, target: SSHTarget, socket: str, command: str) -> list[str]:
    """``ssh -O check|exit`` against a control socket."""
    return mux_argv(ssh, target, socket, "-O", command, "--", target.host)


def parse_config_dump(text: str) -> dict[str, str]:
    """Parse ``ssh -G`` output into ``{keyword: value}`` (keywords lower-case, first one wins)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key.lower() not in result:
            result[key.lower()] = value.strip()
    return result


def existing_control_path(config: Mapping[str, str]) -> str | None:
    """The user's ControlPath from ``ssh -G`` if one is configured, else ``None``."""
    path = config.get("controlpath", "none")
    if not path or path.lower() == "none":
        return None
    return path


REASON_LIMIT = 500  # characters of a server's channel-open failure reason kept
_REFUSED = re.compile(r"open failed: (?P<why>.+)$", re.MULTILINE)


def last_open_failure(master_log: str) -> str | None:
    """The reason of the most recent channel open failure in a master's log."""
    found = _REFUSED.findall(master_log)
    return untrusted(found[-1], limit=REASON_LIMIT) if found else None


def channel_refusal(stderr: str) -> str | None:
    """The server's refusal message in an ``ssh -W`` client's stderr, if it refused (plain)."""
    match = _REFUSED.search(stderr)
    if match:
        return untrusted(match.group("why"), limit=REASON_LIMIT)
    lowered = stderr.lower()
    if "administratively prohibited" in lowered:
        return "administratively prohibited"
    if "session open refused" in lowered or "stdio forwarding failed" in lowered:
        return untrusted(stderr.strip().splitlines()[-1], limit=REASON_LIMIT)
    return None


# Authentication methods that ask the user something (a password, a one-time code).
PROMPTING_METHODS = ("password", "keyboard-interactive")
_DENIED = re.compile(r"Permission denied \(([\w,-]+)\)")


def auth_methods_offered(stderr: str) -> list[str]:
    """The methods a server still offered when ssh gave up (``Permission denied (a,b).``)."""
    found = _DENIED.findall(stderr)
    return found[-1].split(",") if found else []


def method_prompt(methods: Sequence[str]) -> str:
    """What a person would have been asked for these methods, for messages."""
    names = {"password": "password prompt", "keyboard-interactive": "keyboard-interactive prompt"}
    said = [names.get(m, m) for m in methods]
    return " or ".join(said) + " (e.g. a password or one-time code)" * (
        "keyboard-interactive" in methods
    )


def batch_prompt_refusal(host: str, methods: Sequence[str]) -> tuple[str, str]:
    """(message, hint) when a batch run meets a server that wants a prompt answered."""
    return (
        f"SSH authentication to {host} needs a {method_prompt(methods)}, "
        "and a batch run never prompts",
        "use a key (agent or IdentityFile) for this host, or run from a terminal",
    )


_FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/=]+)")


def classify_connect_failure(stderr: str) -> tuple[str, str | None]:
    """Classify ssh's stderr after a failed connect: (``hostkey``|``auth``|``connect``, detail)."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        found = _FINGERPRINT.search(stderr)
        detail = "the host key changed"
        if found:
            detail += f" (the server now offers {found.group(1)})"
        return "hostkey", detail
    if "Host key verification failed" in stderr or "No ED25519 host key is known" in stderr:
        found = _FINGERPRINT.search(stderr)
        detail = "the host key is not known"
        if found:
            detail += f" (server offers {found.group(1)})"
        return "hostkey", detail
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return "auth", "authentication failed"
    return "connect", None


# What an ssh process prints when its proxy (a jump host's ``ssh -W``) went away: one fatal
# line per process (older ssh: ``ssh_exchange_identification: …`` alone), so their count says
# how many ssh processes stood between the failing one and the master.
_PROXY_GONE = re.compile(
    r"^(?:Connection closed by UNKNOWN port 65535"
    r"|banner exchange: Connection to UNKNOWN port 65535"
    r"|ssh_exchange_identification: )"
)
_PROXY_GONE_NOTE = re.compile(r"^kex_exchange_identification: ")
# ssh's chatter that is never the reason (-v lines, a successful hop's notes).
_NOISE = re.compile(
    r"^(?:debug\d|Authenticated to |Transferred: |Bytes per second|Warning: Permanently added"
    r"|Pseudo-terminal will not|OpenSSH_)"
)
_REASON = re.compile(
    r"Could not resolve hostname|connect to host|open failed|Permission denied"
    r"|Host key verification failed|host key is known|HOST IDENTIFICATION|Too many authentication"
    r"|timed out|Connection refused|No route to host|Network is unreachable",
)


def meaningful_lines(stderr: str) -> list[str]:
    """ssh's stderr lines without -v debug lines and notes (carriage returns dropped)."""
    lines = (line.replace("\r", "").strip() for line in stderr.splitlines())
    return [line for line in lines if line and not _NOISE.match(line)]


def proxied_failure(stderr: str) -> tuple[int, list[str]]:
    """Which ssh process of a jump chain failed, and what it said.

    The jump hosts' ``ssh -W`` processes are the master's proxy (and each other's), and their
    stderr comes first; every process whose proxy died then adds one fatal "UNKNOWN port 65535"
    line. Returns (n, lines): n = 0 when the master itself failed (lines = all of them);
    otherwise the failing process is n proxies away from the master and ``lines`` are its own.
    """
    lines = meaningful_lines(stderr)
    first = next(
        (
            i
            for i, line in enumerate(lines)
            if _PROXY_GONE.match(line) or _PROXY_GONE_NOTE.match(line)
        ),
        None,
    )
    if first is None or first == 0:
        return 0, lines  # no proxy died first, or it died silently: read it as the target's
    depth = sum(1 for line in lines[first:] if _PROXY_GONE.match(line))
    return depth, lines[:first]


def reason_line(lines: Sequence[str]) -> str:
    """The line that says why (the first that looks like an ssh error, else the last)."""
    found = next((line for line in lines if _REASON.search(line)), None)
    line = found or (lines[-1] if lines else "ssh exited with an error")
    return line.removeprefix("ssh: ")


def failed_hop(chain: Sequence[str], depth: int) -> str | None:
    """The jump host the ssh process ``depth`` proxies away from the master connects to."""
    if depth < 1 or not chain:
        return None
    return chain[max(len(chain) - depth, 0)]


def next_after(chain: Sequence[str], hop: str, target: str) -> str:
    """What comes after ``hop`` in the chain (another hop, or the target)."""
    index = list(chain).index(hop) if hop in chain else len(chain) - 1
    return chain[index + 1] if index + 1 < len(chain) else target


def channel_failed(lines: Sequence[str]) -> bool:
    """Whether a jump host's ``ssh -W`` failed to reach the next host (not its own connect)."""
    return any(
        "open failed" in line or ("stdio forwarding" in line.lower() and "failed" in line)
        for line in lines
    )


_MUX_REFUSED = re.compile(r"^Stdio forwarding request failed: .*$", re.MULTILINE)


def shared_hop_refusal(stderr: str, reason: str | None) -> str:
    """ssh's stderr after a target behind a fleet's hop master could not be reached.

    The multiplexing client that is the target's ProxyCommand only hears "Stdio forwarding
    request failed: Session open refused by peer"; the hop's master logged why (``reason``,
    e.g. ``connect failed: Connection refused``). The line is put as a jump host's ssh would
    print it, so the message names the target and the reason, as with ProxyJump.
    """
    if not reason:
        return stderr
    line = f"channel 0: open failed: {reason}\nstdio forwarding failed"
    return _MUX_REFUSED.sub(lambda _: line, stderr, count=1)
