"""``tunnelauth demo``: the real flow against a simulated remote host, all inside this process.

An asyncssh server on a random loopback port plays the remote: it runs a hermes-like login
program and serves its callback listener on a *virtual* remote loopback. A tiny local page
plays the OAuth provider. Nothing leaves this machine.
"""

from __future__ import annotations

import importlib.util

from tunnelauth.errors import UsageError


def main(*, no_browser: bool, verbosity: int) -> None:
    """``tunnelauth demo``; asyncssh (an optional extra) plays the SSH server, so check it first."""
    if importlib.util.find_spec("asyncssh") is None:
        raise UsageError(
            "the demo needs the asyncssh library (it plays the SSH server), which is not installed",
            hint="pip install asyncssh",
        )
    from tunnelauth.demo.run import main as run_main

    run_main(no_browser=no_browser, verbosity=verbosity)
