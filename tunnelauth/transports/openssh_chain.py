"""The OpenSSH transport's failure path: which hops ssh went through, and what a repeat of the
failed connect says, read for the error wording.

Only the failure path reads them (``ssh -G`` per hop, one repeat), so a working connection pays
nothing.
"""

from __future__ import annotations

import asyncio
import subprocess

from tunnelauth.errors import UsageError
from tunnelauth.settings import SSHTarget
from tunnelauth.transports import master, sshargs
from tunnelauth.transports.hops import jump_chain, split_hop
from tunnelauth.transports.openssh_log import STDERR_LIMIT
from tunnelauth.transports.openssh_sessions import run_ssh

MAX_HOPS = 10  # a longer ProxyJump chain is taken for a loop


def through_proxy(target: SSHTarget, config: dict[str, str]) -> bool:
    """Whether the connection goes through a jump host or proxy command."""
    jump = config.get("proxyjump", "none")
    proxy = config.get("proxycommand", "none")
    return bool(target.jump) or jump.lower() != "none" or proxy.lower() != "none"


async def jump_hosts(ssh: str, target: SSHTarget, config: dict[str, str]) -> list[str]:
    """The jump hosts in order, the first hop's own ProxyJump included (failure path only).

    ssh applies the config's ProxyJump of the first hop alone (later hops are reached
    through the earlier ones), so only that one is followed.
    """
    hops = list(target.jump) or list(jump_chain(config.get("proxyjump")))
    while hops and len(hops) < MAX_HOPS:
        try:
            first = SSHTarget(host=split_hop(hops[0])[1], ssh_config=target.ssh_config)
            found = await asyncio.to_thread(master.query_config, ssh, first, timeout=5.0)
        except (UsageError, subprocess.TimeoutExpired, OSError):
            break
        before = [h for h in jump_chain(found.get("proxyjump")) if h not in hops]
        if not before:
            break
        hops = before + hops
    return hops


async def diagnose(ssh: str, target: SSHTarget, timeout: float, *, verbose: bool = False) -> str:
    """Repeat a failed connect without ControlPersist to read the jump host's own error.

    With ControlPersist, ssh sends its proxy's stderr to /dev/null, so a jump host's
    "Host key verification failed" is lost. The repeat never prompts (BatchMode) and runs
    only on this failure path; ``verbose`` (``-v``) logs the key the server offers.
    """
    argv = sshargs.diagnose_argv(ssh, target, verbose=verbose)
    try:
        result = await run_ssh(argv, timeout=timeout)
    except asyncio.TimeoutError:
        return ""
    text = result.stderr.decode("utf-8", "replace")
    return text if verbose else text[-STDERR_LIMIT:]
