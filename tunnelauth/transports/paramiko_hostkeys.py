"""The paramiko transport's host-key check: known_hosts judged as ssh judges it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunnelauth import hostkeys, knownhosts
from tunnelauth.errors import HostKeyError
from tunnelauth.transports.paramiko_config import Effective


class KnownHosts:
    """The user's known_hosts for one host, judged as ssh judges it (tunnelauth.knownhosts)."""

    def __init__(self, eff: Effective, system_config: bool) -> None:
        self.alias = eff.alias
        self.system_config = system_config  # ssh reads /etc/ssh/ssh_config unless -F
        self.user = eff.files("userknownhostsfile", knownhosts.DEFAULT_USER_FILES)
        system = eff.files("globalknownhostsfile", knownhosts.DEFAULT_GLOBAL_FILES)
        entries = knownhosts.read([*self.user, *system])
        self.host = knownhosts.for_host(entries, eff.hostname, eff.port, eff.key_alias)

    def prefer(self, conn: Any) -> None:
        """Ask for a host key type known_hosts has, as ssh does, so a known host is not 'new'."""
        listed = {knownhosts.blob_type(blob) for blob in self.host.trusted}
        if "ssh-rsa" in listed:
            listed |= {"rsa-sha2-512", "rsa-sha2-256"}
        options = conn.get_security_options()
        known = [t for t in options.key_types if t in listed]
        options.key_types = known + [t for t in options.key_types if t not in known]

    def check(
        self,
        key: Any,
        eff: Effective,
        *,
        batch: bool,
        ask: Callable[[str, str], bool] = hostkeys.ask_terminal,
    ) -> None:
        """Accept a known key, or a new one the user's policy accepts; else raise."""
        verdict = self.host.judge(key.asbytes())
        if verdict is knownhosts.Verdict.KNOWN:
            return
        hint = ""
        if verdict is knownhosts.Verdict.UNKNOWN:
            policy = hostkeys.normalize_policy(
                eff.looked.get("stricthostkeychecking"), accept_new=False
            )
            if policy == "ask" and hostkeys.never_asks(eff.looked.get("batchmode")):
                policy = "yes"  # the user's BatchMode: ssh would refuse rather than ask
            if not self.user:
                policy = "yes"  # `UserKnownHostsFile none`: ssh cannot record it, so refuses
            fingerprint = key.fingerprint
            if hostkeys.decide(
                policy,
                batch=batch,
                host=self.host.name,
                key_type=key.get_name(),
                fingerprint=fingerprint,
                ask=ask,
            ):
                hashed = knownhosts.wants_hashing(
                    eff.looked.get("hashknownhosts"), eff.alias, system=self.system_config
                )
                line = f"{key.get_name()} {key.get_base64()}"
                knownhosts.record(self.user, self.host.name, line, hashed=hashed)
                return
            if batch and policy == "ask":
                hint = "; a batch run cannot ask (--accept-new adds a new key)"
            if self.host.authorities:
                hint += "; the paramiko backend does not check @cert-authority host certificates"
        raise HostKeyError(
            knownhosts.refusal(verdict, self.alias, self.host.name, key.fingerprint) + hint,
            host=self.alias,
            hint="check the key with the host's owner, then add it to known_hosts "
            "(tunnelauth never turns host-key checking off)",
        )
