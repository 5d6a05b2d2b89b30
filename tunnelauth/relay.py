"""Fallbacks for servers that refuse forwarding channels (``AllowTcpForwarding no``).

The browser's callback request is already held by tunnelauth's laptop listener, so a refusal
loses nothing: the same bytes are replayed to the remote's 127.0.0.1:P by a tiny program run
in an exec session on the same SSH connection (session channels stay allowed where forwarding
is not), and the remote listener's real response goes back to the browser. The request
travels on that session's stdin, never on its command line.
"""

from __future__ import annotations

from types import MappingProxyType

from tunnelauth import httpreq
from tunnelauth.httpreq import LocalAnswer, Request
from tunnelauth.listener import RESPONSE_DEADLINE
from tunnelauth.remote import join, lookup_snippet
from tunnelauth.sanitize import untrusted

STDERR_SHOWN = 300  # characters of a failed relay's stderr shown (its last ones)
RESPONSE_LIMIT = 4 * 1024 * 1024  # bytes of a relayed response kept (a callback page is tiny)
PROBE_PORT = 1  # a remote port nothing listens on: probing it never touches a login listener

# Deadlines of one relayed callback. Some CLIs answer the callback only after their token
# exchange, seconds later, so the relay waits nearly as long as the listener waits for any
# carried exchange (``listener.RESPONSE_DEADLINE``, 120 s): that one constant sets all three.
# Each inner wait ends before the outer one, so the browser always gets the relay's outcome
# (the remote's page, or a page saying why there is none), never a cut connection.
SESSION_DEADLINE = RESPONSE_DEADLINE - 10.0  # the exec session, start to exit (110 s)
ANSWER_DEADLINE = SESSION_DEADLINE - 5.0  # the remote program's wait for the whole answer (105 s)
CONNECT_DEADLINE = 10.0  # the remote program's connection to the login's listener

# Runs on the remote: one connection, the request from stdin, the response to stdout, the whole
# answer within the deadline (argv[4]), else exit LATE_STATUS. A listener that closes without a
# byte: exit 0, no output.
_RELAY_PY = (
    "import socket,sys,time\n"
    "h,p,n,w=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4])\n"
    "d=sys.stdin.buffer.read()\n"
    "e=time.monotonic()+w\n"
    f"s=socket.create_connection((h,p),{CONNECT_DEADLINE:g})\n"
    "s.sendall(d)\n"
    "o=sys.stdout.buffer\n"
    "while n>0:\n"
    " s.settimeout(max(e-time.monotonic(),0.01))\n"
    " try:c=s.recv(65536)\n"
    " except socket.timeout:print('tunnelauth-relay: no answer within %gs'%w,file=sys.stderr);"
    "sys.exit(124)\n"
    " if not c:break\n"
    " o.write(c[:n]);o.flush();n-=len(c)\n"
)

# The request arrives on stdin behind a curl config block (its lines, then an empty line), so
# no part of it is ever on a command line (``ps``, execve audit, ssh's debug log): the block is
# read into a variable, what follows is the raw request for python or bash, and curl reads the
# block itself (``-K -``) from a here-document, never from an argument. bash's /dev/tcp has no
# deadline of its own: ``timeout`` gives it one where it exists (the session's deadline ends it
# otherwise).
_SCRIPT = """\
host=$1; port=$2; limit=$3; wait=$4; want=$5
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
    exec $py -c "$RELAY_PY" "$host" "$port" "$limit" "$wait"
  fi
done
if command -v bash >/dev/null 2>&1; then
  set -- bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 3; cat >&3; cat <&3' "$host" "$port"
  if command -v timeout >/dev/null 2>&1; then set -- timeout "$wait" "$@"; fi
  exec "$@"
fi
if [ -n "$conf" ] && command -v curl >/dev/null 2>&1; then
  exec curl -sS -i --connect-timeout {connect} --max-time "$wait" -K - <<TUNNELAUTH_CONF
$conf
TUNNELAUTH_CONF
fi
echo 'tunnelauth: the relay needs python, bash or curl on the remote' >&2
exit 127
"""

# curl's exit status for a connection the server closed without a byte of answer.
CURL_EMPTY_REPLY = 52
# The answer deadline passed: the python route's and timeout(1)'s status, and curl's.
LATE_STATUS = 124
CURL_TIMED_OUT = 28

# curl config quoting: inside double quotes curl reads these escapes and every other byte as is.
_CONF_ESCAPES = MappingProxyType(
    {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
)


def _conf_value(text: str) -> str:
    """``text`` as a double-quoted curl config value (one line, read back byte for byte)."""
    return '"' + "".join(_CONF_ESCAPES.get(c, c) for c in text) + '"'


def curl_config(request: Request, host: str, port: int) -> str:
    """A curl config (``-K``) that replays ``request``; empty if curl cannot carry it.

    The body goes in ``data-raw``, which never gives a leading ``@`` a meaning (``@file`` in
    ``--data-binary`` would send a remote file instead of the body). ``Expect:`` is sent empty:
    curl would otherwise ask a large POST's listener for ``100 Continue`` first, and ``-i``
    would pass that interim answer to the browser ahead of the real one. A NUL byte cannot
    pass through a config line or a shell variable, so such a request has no curl route.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    fields = request.fields()
    parts = [request.method, request.target, *(n + v for n, v in fields)]
    if any("\0" in p for p in parts) or b"\0" in request.body:
        return ""
    lines = [
        "globoff",  # [ ] { } in a query are data, not a URL pattern
        "path-as-is",  # /../ in the target reaches the listener unchanged
        f"request = {_conf_value(request.method)}",
        f"url = {_conf_value(f'http://{authority}{request.target}')}",
    ]
    for name, value in fields:
        if name.lower() not in ("host", "content-length", "connection", "expect"):
            # "Name;" is curl's way to send a header with an empty value.
            header = f"{name}: {value}" if value else f"{name};"
            lines.append(f"header = {_conf_value(header)}")
    if request.body or request.method == "POST":
        lines.append(f"header = {_conf_value('Expect:')}")  # "Name:" removes curl's own
        lines.append(f"data-raw = {_conf_value(request.body.decode('latin-1'))}")
    return "".join(f"{line}\n" for line in lines)


def relay_command(
    program: str, host: str, port: int, *, answer_deadline: float = ANSWER_DEADLINE
) -> str:
    """The remote command that replays a request from stdin (``relay_input``) to ``host:port``.

    It holds no part of the request. ``program`` is the login's own binary: the relay prefers
    the Python it runs on (its shebang), which is certain to exist on the host. The whole
    answer must come within ``answer_deadline`` seconds.
    """
    script = _SCRIPT.format(lookup=lookup_snippet(), connect=f"{CONNECT_DEADLINE:g}")
    words = ["env", f"RELAY_PY={_RELAY_PY}", "sh", "-c", script, "tunnelauth-relay"]
    words += [host, str(port), str(RESPONSE_LIMIT), f"{answer_deadline:g}", program]
    return join(words)


def relay_input(request: bytes, host: str, port: int) -> bytes:
    """What the relay command reads on stdin: the curl config block, then the raw request."""
    try:
        conf = curl_config(httpreq.parse_request(request), host, port)
    except LocalAnswer:
        conf = ""  # the listener forwards only requests it parsed: never expected here
    return conf.encode("latin-1") + b"\n" + request


def relay_outcome(exit_status: int | None, stdout: bytes) -> str:
    """What a finished relay session means: ``answered``, ``no_answer``, ``late`` or ``failed``.

    ``no_answer``: the login's listener took the request and closed without a byte (its CLI
    exited, or dropped the connection); ``late``: it took the request and gave no whole answer
    within the answer deadline. Either way the callback reached it, so nothing else is tried.
    """
    if stdout and exit_status == 0:
        return "answered"
    if not stdout and exit_status in (0, CURL_EMPTY_REPLY):
        return "no_answer"
    if exit_status in (LATE_STATUS, CURL_TIMED_OUT):
        return "late"
    return "failed"


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
