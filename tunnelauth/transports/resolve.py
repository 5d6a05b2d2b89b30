"""Build the transport ``choice.choose`` names, importing only that backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunnelauth.transports.choice import choose

if TYPE_CHECKING:
    from tunnelauth.hoppool import HopPool
    from tunnelauth.settings import Settings
    from tunnelauth.transports.base import Transport
    from tunnelauth.transports.headstart import HeadStart


def make(
    settings: Settings, head_start: HeadStart | None = None, *, hops: HopPool | None = None
) -> Transport:
    """Build the chosen transport; the choice and its reason are left in ``transport.choice``.

    ``head_start``: what a login started before the heavy imports, for the transport to adopt
    (its choice, if made for this target, is the one used). ``hops``: a fleet's shared jump
    chains (one login alone opens its own).
    """
    ahead = (
        head_start if head_start is not None and head_start.for_target(settings.target) else None
    )
    choice = ahead.choice if ahead is not None and ahead.choice is not None else choose(settings)
    timeout, batch = settings.connect_timeout, settings.batch
    transport: Transport
    if choice.name == "asyncssh":
        from tunnelauth.transports import native_libs

        with native_libs.answered(ahead.lookups if ahead is not None else None):
            from tunnelauth.transports.asyncssh_transport import AsyncSSHTransport

        transport = AsyncSSHTransport(
            settings.target, connect_timeout=timeout, batch=batch, hops=hops, head_start=ahead
        )
    elif choice.name == "paramiko":
        from tunnelauth.transports.paramiko_transport import ParamikoTransport

        transport = ParamikoTransport(
            settings.target, connect_timeout=timeout, batch=batch, hops=hops, head_start=ahead
        )
    else:
        from tunnelauth.transports.openssh import OpenSSHTransport

        transport = OpenSSHTransport(
            settings.target, connect_timeout=timeout, batch=batch, hops=hops, head_start=ahead
        )
    transport.choice = choice
    return transport
