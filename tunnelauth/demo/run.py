"""Wires the demo: provider, simulated remote, private ssh files, then the real tunnelauth flow."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from tunnelauth import flow
from tunnelauth.demo.browser import DemoBrowser
from tunnelauth.demo.provider import DemoProvider
from tunnelauth.demo.server import DEMO_ARGV, LOGIN_TIMEOUT, USER, DemoServer, free_port
from tunnelauth.environment import Environment
from tunnelauth.errors import TunnelauthError
from tunnelauth.exits import Shown
from tunnelauth.report import Reporter
from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.signals import run_with_signals
from tunnelauth.transports import resolve

DEMO_HOST = "tunnelauth-demo"
FAIL_ENV = "TUNNELAUTH_DEMO_FAIL"  # an environment variable that makes the simulated login fail
INTRO = (
    "tunnelauth demo: an SSH server inside this process plays the remote host (a hermes-like "
    "login and its callback listener on a simulated remote loopback), and a page on this "
    "machine plays the OAuth provider. The real tunnelauth flow runs against them; nothing "
    "leaves this machine."
)
OUTRO = (
    "That was the real flow against a simulated host. On a real one: "
    "tunnelauth spotify user@host  (tunnelauth providers lists the others)"
)


@dataclass(frozen=True)
class SSHFiles:
    """The demo's private client files: a config naming everything, so nothing else is read."""

    config: Path
    identity: Path
    known_hosts: Path


def write_ssh_files(directory: Path, port: int, host_key: Any, client_key: Any) -> SSHFiles:
    """Write the client key (0600), a known_hosts pinning the host key and the ssh config."""
    identity = directory / "id_ed25519"
    fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(client_key.export_private_key())
    known_hosts = directory / "known_hosts"
    public = host_key.export_public_key().decode("ascii").split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n", encoding="ascii")
    config = directory / "ssh_config"
    config.write_text(
        f"Host {DEMO_HOST}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        f"  User {USER}\n"
        f"  IdentityFile {_quoted(identity)}\n"
        "  IdentitiesOnly yes\n"
        # The user's agent must not offer its keys (or be asked to sign) for a demo.
        "  IdentityAgent none\n"
        f"  UserKnownHostsFile {_quoted(known_hosts)}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  ForwardAgent no\n"
        "  ForwardX11 no\n",
        encoding="utf-8",
    )
    return SSHFiles(config, identity, known_hosts)


def _quoted(path: Path) -> str:
    """A path as an ssh config argument (quoted for spaces; ``%`` is a token there)."""
    return '"' + str(path).replace("%", "%%") + '"'


def demo_settings(config: Path, *, no_browser: bool, verbosity: int) -> Settings:
    """Settings for the demo host: the asyncssh backend and only the demo's ssh config."""
    return Settings(
        target=SSHTarget(host=DEMO_HOST, ssh_config=config),
        program=DEMO_ARGV[0],
        args=DEMO_ARGV[1:],
        timeout=LOGIN_TIMEOUT + 30.0,
        no_browser=no_browser,
        verbosity=verbosity,
        backend="asyncssh",  # pure Python: works where no ssh client is installed
        connect_timeout=15.0,
        batch=True,  # the demo never needs typed input, and must never prompt for any
    )


async def run_demo(
    *, no_browser: bool, verbosity: int, reporter: Reporter, env: Environment
) -> None:
    """Start the provider and the simulated remote, run one login against them, tear down.

    ``env``: the process's, as ``main`` read it (``FAIL_ENV``; what the browser runs with).
    """
    fail = env.variables.get(FAIL_ENV, "").strip().lower() not in ("", "0", "false", "no")
    async with AsyncExitStack() as stack:
        directory = Path(tempfile.mkdtemp(prefix="tunnelauth-demo-"))  # mode 0700
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        provider = await DemoProvider.start()
        stack.push_async_callback(provider.close)
        callback_port = free_port()  # the remote's listener is virtual: the laptop binds it
        server = DemoServer(
            host_key=asyncssh.generate_private_key("ssh-ed25519"),
            client_key=asyncssh.generate_private_key("ssh-ed25519"),
            callback_port=callback_port,
            authorize_url=lambda uri, state, challenge: provider.authorize_url(
                redirect_uri=uri, state=state, challenge=challenge
            ),
            redeem=provider.redeem,
            fail=fail,
        )
        stack.push_async_callback(server.close)
        await server.start()
        files = write_ssh_files(directory, server.port, server.host_key, server.client_key)
        reporter.debug(
            f"simulated remote: SSH on 127.0.0.1:{server.port}, callback port {callback_port}; "
            f"demo provider on 127.0.0.1:{provider.port}; ssh config {files.config}"
        )
        allowed = {("127.0.0.1", callback_port), ("127.0.0.1", provider.port)}
        settings = demo_settings(files.config, no_browser=no_browser, verbosity=verbosity)
        await flow.login(
            settings,
            reporter,
            env=env,
            transport_factory=resolve.make,
            browser_factory=lambda s, e: DemoBrowser(
                no_browser=s.no_browser, allowed=allowed, say=reporter.info, env=e.variables
            ),
        )


def main(*, no_browser: bool, verbosity: int) -> None:
    """``tunnelauth demo``: say what is simulated, run it with the live status, say what's next."""
    from tunnelauth.render import ConsoleReporter

    env = Environment.current()  # the demo command's edge: read once, passed down
    reporter = ConsoleReporter(verbosity=verbosity)
    reporter.info(INTRO)
    try:
        run_with_signals(
            lambda _teardown_started: run_demo(
                no_browser=no_browser, verbosity=verbosity, reporter=reporter, env=env
            )
        )
    except TunnelauthError as exc:
        reporter.finish(False, exc.message, exc.hint, list(exc.last_lines))
        raise Shown(exc) from exc
    finally:
        reporter.close()
    reporter.finish(True, "logged in (on the simulated host)", None, [])
    reporter.info(OUTRO)
