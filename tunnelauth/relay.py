"""Fallbacks for servers that refuse forwarding channels (``AllowTcpForwarding no``).

The browser's callback request is already held by tunnelauth's laptop listener, so a refusal
loses nothing: the same bytes are replayed to the remote's 127.0.0.1:P by a tiny program run
in an exec session on the same SSH connection (session channels stay allowed where forwarding
is not), and the remote listener's real response goes back to the browser. The request
travels on that session's stdin, never on its command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from tunnelauth.remote import join, lookup_snippet
from tunnelauth.sanitize import untrusted

STDERR_SHOWN = 300  # characters of a failed relay's stderr shown (its last ones)
RESPONSE_LIMIT = 4 * 1024 * 1024  # bytes of a relayed response kept (a callback page is tiny)
PROBE_PORT = 1  # a remote port nothing listens on: probing it never touches a login listener

# Runs on the remote: one connection, the request from stdin, the response to stdout.
_RELAY_PY = (
    "import socket,sys\n"
    "h,p,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])\n"
    "d=sys.stdin.buffer.read()\n"
    "s=socket.create_connection((h,p),10)\n"
    "s.settimeout(60)\n"
    "s.sendall(d)\n"
    "o=sys.stdout.buffer\n"
    "while n>0:\n"
    " c=s.recv(65536)\n"
    " if not c:break\n"
    " o.write(c[:n]);o.flush();n-=len(c)\n"
)

# The request arrives on stdin behind a curl config block (its lines, then an empty line), so
# no part of it is ever on a command line (``ps``, execve audit, ssh's debug log): the block is
# read into a variable, what follows is the raw request for python or bash, and curl reads the
# block itself (``-K -``) from a here-document, never from an argument.
_SCRIPT = """\
host=$1; port=$2; limit=$3; want=$4
conf=
while IFS= read -r line && [ -n "$line" ]; do
  conf="$conf$line
"
done
{lookup}
interp=
if [ -n "$bin" ] && [ -r "$bin" ]; then
  IFS= read -r first < "$bin" || true
  case $first in '#!'*python*) interp=${{first#??}} ;; esac
fi
for py in "$interp" python3 python; do
  [ -n "$py" ] || continue
  if $py -c 'import socket' >/dev/null 2>&1; then
    exec $py -c "$RELAY_PY" "$host" "$port" "$limit"
  fi
done
if command -v bash >/dev/null 2>&1; then
  exec bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 3; cat >&3; cat <&3' "$host" "$port"
fi
if [ -n "$conf" ] && command -v curl >/dev/null 2>&1; then
  exec curl -sS -i --max-time 60 -K - <<TUNNELAUTH_CONF
$conf
TUNNELAUTH_CONF
fi
echo 'tunnelauth: the relay needs python, bash or curl on the remote' >&2
exit 127
"""


@dataclass(frozen=True)
class ParsedRequest:
    """The parts of an HTTP request the curl fallback needs."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def parse_request(data: bytes) -> ParsedRequest:
    """Split a raw HTTP/1.x request (as the laptop listener forwards it) into its parts."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" "), "", ""][:3]
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return ParsedRequest(method, target, tuple(headers), body)


# curl config quoting: inside double quotes curl reads these escapes and every other byte as is.
_CONF_ESCAPES = MappingProxyType(
    {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
)


def _conf_value(text: str) -> str:
    """``text`` as a double-quoted curl config value (one line, read back byte for byte)."""
    return '"' + "".join(_CONF_ESCAPES.get(c, c) for c in text) + '"'


def curl_config(request: ParsedRequest, host: str, port: int) -> str:
    """A curl config (``-K``) that replays ``request``; empty if curl cannot carry it.

    The body goes in ``data-raw``, which never gives a leading ``@`` a meaning (``@file`` in
    ``--data-binary`` would send a remote file instead of the body). A NUL byte cannot pass
    through a config line or a shell variable, so such a request has no curl route.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    parts = [request.method, request.target, *(n + v for n, v in request.headers)]
    if any("\0" in p for p in parts) or b"\0" in request.body:
        return ""
    lines = [
        "globoff",  # [ ] { } in a query are data, not a URL pattern
        "path-as-is",  # /../ in the target reaches the listener unchanged
        f"request = {_conf_value(request.method)}",
        f"url = {_conf_value(f'http://{authority}{request.target}')}",
    ]
    for name, value in request.headers:
        if name.lower() not in ("host", "content-length", "connection"):
            # "Name;" is curl's way to send a header with an empty value.
            header = f"{name}: {value}" if value else f"{name};"
            lines.append(f"header = {_conf_value(header)}")
    if request.body:
        lines.append(f"data-raw = {_conf_value(request.body.decode('latin-1'))}")
    return "".join(f"{line}\n" for line in lines)


def relay_command(program: str, host: str, port: int) -> str:
    """The remote command that replays a request from stdin (``relay_input``) to ``host:port``.

    It holds no part of the request. ``program`` is the login's own binary: the relay prefers
    the Python it runs on (its shebang), which is certain to exist on the host.
    """
    script = _SCRIPT.format(lookup=lookup_snippet())
    words = ["env", f"RELAY_PY={_RELAY_PY}", "sh", "-c", script, "tunnelauth-relay"]
    words += [host, str(port), str(RESPONSE_LIMIT), program]
    return join(words)


def relay_input(request: bytes, host: str, port: int) -> bytes:
    """What the relay command reads on stdin: the curl config block, then the raw request."""
    conf = curl_config(parse_request(request), host, port)
    return conf.encode("latin-1") + b"\n" + request


def stderr_detail(stderr: bytes) -> str:
    """The end of a failed relay's stderr as plain text (it is the remote's, so untrusted)."""
    return untrusted(stderr[-STDERR_SHOWN * 4 :], limit=STDERR_SHOWN * 4)[-STDERR_SHOWN:]


def probe_verdict(refusal: str | None, got_data: bool) -> str:
    """Read a probe of a closed remote port: ``allowed``, ``refused`` or ``unknown``."""
    if got_data:
        return "allowed"
    if refusal is None:
        return "unknown"
    text = refusal.lower()
    if "administratively prohibited" in text or "prohibited" in text:
        return "refused"
    if "connect failed" in text or "connection refused" in text:
        return "allowed"
    return "unknown"
