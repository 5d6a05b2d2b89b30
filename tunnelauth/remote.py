"""Builds the command line that runs on the remote host (pure: no I/O).

The remote user's login shell may be bash, zsh, dash or fish, so the command is a single
``exec sh -c SCRIPT`` with every argument passed as a separate, shell-quoted positional
parameter: nothing the user typed is ever interpreted by a shell, and the script finds the
binary in the usual install places because ``~/.local/bin`` is not on the PATH of a
non-interactive SSH command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# Columns of the remote PTY: wide enough that no URL is ever wrapped by a remote formatter.
PTY_COLUMNS = 1000

NOT_FOUND_MARKER = "tunnelauth: remote command not found:"

# Where hermes (and other user-installed CLIs) usually live when they are not on the PATH.
SEARCH_DIRS: tuple[str, ...] = (
    "$HOME/.local/bin",
    "$HOME/.hermes/hermes-agent/venv/bin",
    "$HOME/.hermes/hermes-agent/.venv/bin",
    "$HOME/.local/share/pipx/venvs/hermes-agent/bin",
    "$HOME/bin",
    "/usr/local/bin",
    "/opt/hermes/bin",
)

_SCRIPT = """\
stty -echo cols {cols} 2>/dev/null
export PYTHONUNBUFFERED=1 COLUMNS={cols}
want=$1; shift
case $want in "~/"*) want=$HOME/${{want#"~/"}} ;; esac
bin=
case $want in
  */*) [ -x "$want" ] && bin=$want ;;
  *) bin=$(command -v -- "$want" 2>/dev/null)
     if [ -z "$bin" ]; then
       for d in {dirs}; do
         if [ -x "$d/$want" ]; then bin=$d/$want; break; fi
       done
     fi ;;
esac
if [ -z "$bin" ]; then
  printf '%s %s\\n' '{marker}' "$want"
  exit 127
fi
exec "$bin" "$@"
"""


def wrapper_script() -> str:
    """The POSIX sh script that locates the binary and execs it with the given arguments."""
    dirs = " ".join(f'"{d}"' for d in SEARCH_DIRS)
    return _SCRIPT.format(cols=PTY_COLUMNS, dirs=dirs, marker=NOT_FOUND_MARKER)


def remote_command(program: str, args: Sequence[str]) -> str:
    """The command line given to ssh: ``exec sh -c SCRIPT tunnelauth PROGRAM ARGS...``, quoted."""
    if not program or "\0" in program or any("\0" in a for a in args):
        raise ValueError("empty program or NUL byte in the remote command")
    words = ["exec", "sh", "-c", wrapper_script(), "tunnelauth", program, *args]
    return " ".join(shlex.quote(w) for w in words)
