"""Builds the command line that runs on the remote host (pure: no I/O).

The remote user's login shell may be bash, zsh, dash or fish, so the command is a single
``exec sh -c SCRIPT`` with every argument passed as a separate positional parameter, quoted
the one way all four read alike (``quote``): nothing the user typed is ever interpreted by a
shell, and the script finds the
binary in the usual install places because ``~/.local/bin`` is not on the PATH of a
non-interactive SSH command.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunnelauth.recipes import env_assignments

if TYPE_CHECKING:
    from tunnelauth.settings import Settings

# Columns of the remote PTY: wide enough that no URL is ever wrapped by a remote formatter.
PTY_COLUMNS = 1000

NOT_FOUND_MARKER = "tunnelauth: remote command not found:"

# What the login's wrapper prints, and its exit status, when the session has no terminal
# (the server refused the PTY): the login is then never started, as it would outlive us.
NO_TTY_MARKER = "tunnelauth: no terminal on the remote"
NO_TTY_STATUS = 126

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

# Sets $bin to the program named by $want: a path (a leading ~/ expands here, on the remote),
# else the PATH, else the usual user install places.
_LOOKUP = """\
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
esac"""

_SCRIPT = """\
{tty_check}stty -echo cols {cols} 2>/dev/null
export PYTHONUNBUFFERED=1 COLUMNS={cols}
want=$1; shift
{lookup}
if [ -z "$bin" ]; then
  printf '%s %s\\n' '{marker}' "$want"
  exit 127
fi
{launch}"""

# The remote CLI may try to open a browser instead of printing its URL: $BROWSER names a helper
# that prints BROWSER_MARKER and the URL on the terminal, where the watcher reads it like any
# printed URL, and exits 0 (Python's webbrowser and xdg-open then take the browser as opened).
# Python's webbrowser runs $BROWSER as one path (split only at ':'), xdg-open splits it at
# ':' and blanks: a directory with none of these (or '%', xdg-open's placeholder) is required.
# The wrapper stays the CLI's parent to remove the directory at exit, also when the session's
# hangup or Ctrl-C ends the CLI (sh runs the trap once its child is gone).
_LAUNCH_WITH_HELPER = """\
d=$(umask 077 && mktemp -d "${{TMPDIR:-/tmp}}/tunnelauth-browser.XXXXXXXX" 2>/dev/null) || d=
case $d in ''|[!/]*|*[!A-Za-z0-9_./-]*) [ -n "$d" ] && rm -rf "$d"; d= ;; esac
if [ -n "$d" ] && printf '%s\\n' '#!/bin/sh' \\
    'for u do {{ printf "\\n{browser_marker} %s\\n" "$u" >/dev/tty; }} 2>/dev/null ||' \\
    '  printf "\\n{browser_marker} %s\\n" "$u" >&2; done' 'exit 0' >"$d/browser" \\
  && chmod 700 "$d/browser"; then
  trap 'rm -rf "$d"' EXIT
  trap 'rm -rf "$d"; exit 129' HUP
  trap 'rm -rf "$d"; exit 130' INT
  trap 'rm -rf "$d"; exit 143' TERM
  BROWSER=$d/browser; export BROWSER
  "$bin" "$@"
  exit
fi
[ -n "$d" ] && rm -rf "$d"
exec "$bin" "$@"
"""
_LAUNCH = 'exec "$bin" "$@"\n'

# The line the browser helper prints before the URL the remote CLI asked to open.
BROWSER_MARKER = "tunnelauth-browser:"


# Words every login shell reads as themselves: no glob, expansion or escape character, and no
# leading `=` or `~` (zsh's `=cmd` and everyone's home expansion).
_BARE = re.compile(r"[A-Za-z0-9_./-][A-Za-z0-9_./=:,+@-]*")


def quote(word: str) -> str:
    r"""``word`` quoted so that bash, zsh, dash and fish all read it back unchanged.

    ``shlex.quote`` is not enough: inside single quotes fish reads ``\'`` and ``\\`` as escapes,
    so a backslash would change the word or end the quote early. Here single quotes never hold
    a backslash or a quote: those travel as ``"\\"`` and ``"'"``, read alike by all four.
    """
    if _BARE.fullmatch(word):
        return word
    parts = re.split(r"([\\'])", word)
    out = []
    for part in parts:
        if part == "\\":
            out.append('"\\\\"')
        elif part == "'":
            out.append('"\'"')
        elif part:
            out.append(f"'{part}'")
    return "".join(out) or "''"


def join(words: Sequence[str]) -> str:
    """``words`` as one command line every login shell splits back into exactly these words."""
    return " ".join(quote(w) for w in words)


def lookup_snippet() -> str:
    """POSIX sh lines that set ``$bin`` to the program named by ``$want`` (empty if missing)."""
    return _LOOKUP.format(dirs=" ".join(f'"{d}"' for d in SEARCH_DIRS))


_TTY_CHECK = "[ -t 0 ] || {{ printf '%s\\n' '{marker}'; exit {status}; }}\n"


def wrapper_script(*, need_tty: bool = False, browser_helper: bool = False) -> str:
    """The POSIX sh script that locates the binary and execs it with the given arguments.

    With ``need_tty`` it first checks that it runs on a terminal, and else prints
    ``NO_TTY_MARKER`` and exits ``NO_TTY_STATUS`` without starting anything.
    With ``browser_helper`` it runs the binary with ``$BROWSER`` set to a helper in a private
    directory that it removes when the binary ends (see ``_LAUNCH_WITH_HELPER``).
    """
    check = _TTY_CHECK.format(marker=NO_TTY_MARKER, status=NO_TTY_STATUS) if need_tty else ""
    launch = (
        _LAUNCH_WITH_HELPER.format(browser_marker=BROWSER_MARKER) if browser_helper else _LAUNCH
    )
    return _SCRIPT.format(
        tty_check=check,
        cols=PTY_COLUMNS,
        lookup=lookup_snippet(),
        marker=NOT_FOUND_MARKER,
        launch=launch,
    )


def remote_command(
    program: str,
    args: Sequence[str],
    *,
    hermes_home: str | None = None,
    run_as: str | None = None,
    interactive: bool = False,
    need_tty: bool = False,
    env: Sequence[tuple[str, str]] = (),
    browser_helper: bool = False,
) -> str:
    """The command line given to ssh: ``exec sh -c SCRIPT tunnelauth PROGRAM ARGS...``, quoted.

    ``env`` runs the wrapper under ``env NAME=VALUE...`` (each assignment one quoted word, so
    no shell reads the value). ``hermes_home`` sets ``HERMES_HOME`` first. ``run_as`` runs all
    of it as that user with ``sudo -u USER -i`` (``-n`` unless ``interactive``: only a PTY can
    answer a password prompt), so it gets the user's login environment (PATH from the profile,
    HOME, the home directory as working directory) and its tokens land in that user's
    ``~/.hermes``.
    ``need_tty``: start nothing unless the session has a terminal (see ``wrapper_script``).
    ``browser_helper``: ``$BROWSER`` hands the URLs the program opens to tunnelauth.
    """
    if not program or "\0" in program or any("\0" in a for a in args):
        raise ValueError("empty program or NUL byte in the remote command")
    script = wrapper_script(need_tty=need_tty, browser_helper=browser_helper)
    words = ["sh", "-c", script, "tunnelauth", program, *args]
    if env:
        words = ["env", *env_assignments(env), *words]
    if hermes_home is not None:
        if not hermes_home or "\0" in hermes_home:
            raise ValueError("empty hermes home or NUL byte in it")
        words = ["sh", "-c", _HOME_SETTER, "tunnelauth-home", hermes_home, *words]
    command = "exec " + join(words)
    if run_as is None:
        return command
    if not run_as or run_as.startswith("-") or "\0" in run_as:
        raise ValueError(f"invalid run-as user {run_as!r}")
    sudo = ["exec", "sudo", *([] if interactive else ["-n"]), "-u", run_as, "-i", "--", "env"]
    carried = [f'"{name}=${name}"' for name in SESSION_VARIABLES]  # expanded before sudo
    return " ".join([join(sudo), *carried, join(["sh", "-c", _for_login_shell(command)])])


def _for_login_shell(command: str) -> str:
    """``command`` as a ``sh -c`` script that survives ``sudo -i``.

    ``sudo -i`` joins the command's words for the target's login shell, putting a backslash
    before every character but letters, digits, ``_``, ``-`` and ``$``: a newline becomes a line
    continuation and every ``$`` is expanded by that shell. So the command travels base64
    encoded (letters, digits, ``+/=``) and is decoded by a script without a ``$`` in it.

    The decoded command starts with ``exec``, so the script goes on after ``eval`` only when
    nothing was run: base64 is missing (``NO_BASE64_MARKER``, exit 127), or it decoded
    nothing usable (``NOT_DECODED_MARKER``, exit ``NOT_DECODED_STATUS``). Without these
    checks ``eval ""`` would exit 0 as if the login had run.
    """
    if not command.startswith("exec "):
        raise ValueError("the command for sudo must start with exec")
    blob = base64.b64encode(command.encode()).decode("ascii")
    return (
        f"command -v base64 >/dev/null || {{ echo {NO_BASE64_MARKER}; exit 127; }}; "
        f'eval "`printf %s {blob} | base64 -d`"; '
        f"echo {NOT_DECODED_MARKER}; exit {NOT_DECODED_STATUS}"
    )


# What the --as wrapper prints when the remote cannot decode the login command (plain words:
# they pass sudo -i and any login shell unquoted). The login never started in either case.
NO_BASE64_MARKER = "tunnelauth - base64 was not found on the remote"
NOT_DECODED_MARKER = "tunnelauth - base64 did not decode the login command"
NOT_DECODED_STATUS = 125


# sudo's env_reset drops these, yet they tell hermes the session is remote (so it prints the
# SSH hints and never tries to open a browser on the host): carry them across explicitly.
SESSION_VARIABLES = ("SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY")


# Sets HERMES_HOME from $1 (a leading ~/ expands for the user it runs as), then runs the rest.
_HOME_SETTER = (
    'h=$1; shift; case $h in "~/"*) h=$HOME/${h#"~/"} ;; esac; '
    'HERMES_HOME=$h; export HERMES_HOME; exec "$@"'
)


def settings_command(
    settings: Settings, args: Sequence[str], *, program: str | None = None, pty: bool = False
) -> str:
    """``remote_command`` for ``program`` (default: the settings') as the settings' user/home.

    ``pty``: the command runs on a PTY, so sudo may ask there, and nothing starts without one.
    A login of ``run`` (no provider) on a PTY gets the browser helper; hermes is left as it
    is: it knows it runs over SSH and prints its URLs itself.
    """
    return remote_command(
        program or settings.program,
        args,
        hermes_home=settings.hermes_home,
        run_as=settings.run_as,
        interactive=pty and not settings.batch,
        need_tty=pty,
        env=settings.env if program is None else (),
        # A recipe that chose BROWSER itself (databricks: BROWSER=none) keeps its choice.
        browser_helper=pty
        and settings.provider is None
        and program is None
        and all(name != "BROWSER" for name, _ in settings.env),
    )
