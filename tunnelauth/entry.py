"""Console entry point: answers ``--version`` without importing anything heavy, then hands on."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run tunnelauth; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"] or args == ["-V"]:
        from tunnelauth import __version__

        sys.stdout.write(f"tunnelauth {__version__}\n")
        return 0
    from tunnelauth.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
