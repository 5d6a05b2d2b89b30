"""The asyncssh transport's known_hosts: what asyncssh may trust unasked, as ssh reads it.

The judgement itself is tunnelauth.knownhosts, shared with the paramiko backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncssh

from tunnelauth import knownhosts


def known_hosts(options: Any) -> tuple[list[str], knownhosts.HostKeys]:
    """(the user's known_hosts files, what the files list for this host), as ssh reads them."""
    users, entries = knownhosts.load(
        file_names(options.config.get("UserKnownHostsFile", None)),
        file_names(options.config.get("GlobalKnownHostsFile", None)),
    )
    alias = options.host_key_alias or None
    return users, knownhosts.for_host(entries, options.host, options.port, alias)


def host_key_algs(trusted: Sequence[Any]) -> list[str]:
    """ssh's order: the known key types first, then every other.

    asyncssh alone would offer only the known types (or only certificates, given a CA line),
    so a server with a key of another type would fail the handshake instead of being judged.
    """
    from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs

    known = [alg for key in trusted for alg in key.sig_algorithms]
    others = [*get_default_certificate_algs(), *get_default_public_key_algs()]
    return list(dict.fromkeys(alg.decode("ascii") for alg in [*known, *others]))


def file_names(value: Any) -> list[str] | None:
    """A config file list as strings (None when the config does not set it)."""
    return None if value is None else [str(v) for v in value]


def trusted_keys(known: knownhosts.HostKeys) -> tuple[list[Any], list[Any], list[Any]]:
    """known_hosts for asyncssh: the keys it may accept unasked, the CAs, the revoked keys.

    Never ``None`` (that would turn checking off); any other key reaches Client's judgement.
    The revoked keys are asyncssh's only where a CA makes certificates acceptable (it checks
    a certificate's key and signer against them); a revoked plain key reaches Client, which
    refuses it with its fingerprint.
    """
    revoked = set(known.revoked)
    trusted = [b for b in known.trusted if b not in revoked]

    def keys(blobs: Sequence[bytes]) -> list[Any]:
        return [asyncssh.import_public_key(knownhosts.openssh(b)) for b in blobs]

    certified = keys(known.revoked) if known.authorities else []
    return keys(trusted), keys(known.authorities), certified
