"""Console entry point: answers ``--version`` without importing anything heavy, then hands on.

Run as the program (no ``argv`` given), it ends the process as soon as the run is over: every
connection, child and temp dir is closed by then, and the interpreter's own teardown of the
modules a login loads (asyncio, typer, rich, an SSH library) would add 80-140 ms to every exit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def main(argv: list[str] | None = None) -> int:
    """Run tunnelauth and return the exit status; without ``argv`` (the program) exit at once."""
    code = _run(sys.argv[1:] if argv is None else argv)
    if argv is None:
        leave(code)
    return code


def _run(args: list[str]) -> int:
    """Dispatch: the version here, a plain login line straight to the login, the rest to typer.

    A login read without typer (``cmdline.parse_login``: only lines typer would read the same
    way) never imports it, and its head start (in a batch run, the SSH master) begins before
    the heavy imports, so ssh authenticates while they load.
    """
    if args == ["--version"] or args == ["-V"]:
        from tunnelauth import __version__

        sys.stdout.write(f"tunnelauth {__version__}\n")
        return 0
    from tunnelauth.cmdline import parse_login

    # Shell completion asks typer through the environment: leave those runs to it.
    completing = any(name.startswith("_TUNNELAUTH_COMPLETE") for name in os.environ)
    parsed = None if completing else parse_login(args)
    if parsed is not None:
        from tunnelauth import login

        return login.run(*parsed)
    from tunnelauth.cli import main as cli_main

    return cli_main(args)


def leave(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing more can be said there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
