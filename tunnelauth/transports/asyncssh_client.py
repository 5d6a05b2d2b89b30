"""The asyncssh transport's client: host-key judgement and the questions asyncssh asks it.

It records what the server asked for (for the error wording) and asks the user through the
flow's Prompter, unless the run is a batch run. ``connect_with_deadline`` connects with it
(the deadline pauses while it asks) and words a refused host key, a failed authentication
or an unreachable host as ssh does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import asyncssh

from tunnelauth import hostkeys, knownhosts
from tunnelauth.errors import HostKeyError, SSHError
from tunnelauth.transports.hops import os_error_reason, refusal_message, unreachable_from
from tunnelauth.transports.prompts import CONFIRM, SECRET, Prompter
from tunnelauth.transports.sshargs import PROMPTING_METHODS, batch_prompt_refusal


class Client(asyncssh.SSHClient):  # type: ignore[misc]
    """Records what the server asked for, and asks the user (through the flow) unless batch."""

    def __init__(
        self,
        batch: bool,
        lookup: Callable[[str], str | None] = lambda option: None,
        known: knownhosts.HostKeys | None = None,
        add_to: Sequence[str] = (),
        *,
        prompter: Prompter | None = None,
        label: str = "",
        accepted_key: Any = None,
    ) -> None:
        self.batch = batch
        self.lookup = lookup  # an option's value in the user's ssh config for this host
        self.known = known or knownhosts.HostKeys("")  # what known_hosts lists for this host
        self.add_to = add_to  # the user's known_hosts files (a new key goes to the first)
        self.system_config = False  # whether ssh would read /etc/ssh/ssh_config too
        self.prompter = prompter or Prompter()
        self.label = label  # user@host, as ssh names it in its password question
        self.accepted_key = accepted_key  # a new key the user accepted on the first attempt
        self.offered_key: Any = None
        self.ask_about_key = False  # the question is asked once asyncssh has given up
        self.verdict: knownhosts.Verdict | None = None
        self.methods: list[str] = []
        self.confirming = False  # a host-key question on the terminal (no flow)

    @property
    def prompting(self) -> bool:
        """The connect deadline pauses while the user types."""
        return self.confirming or self.prompter.prompting

    # Read from the config only when needed (an unknown key, a password): asyncssh does not
    # parse these options, and the reader used for them costs ~60 ms of imports.
    @functools.cached_property
    def policy(self) -> str:
        """StrictHostKeyChecking for an unknown key (hostkeys.POLICIES)."""
        policy = hostkeys.normalize_policy(self.lookup("StrictHostKeyChecking"), accept_new=False)
        if policy == "ask" and hostkeys.never_asks(self.lookup("BatchMode")):
            policy = "yes"  # the user's BatchMode: ssh would refuse rather than ask
        # `UserKnownHostsFile none`: ssh has nowhere to record a new key and refuses it.
        return policy if self.add_to else "yes"

    @functools.cached_property
    def password_tries(self) -> int:
        """NumberOfPasswordPrompts, as ssh reads it (default 3)."""
        return password_tries_from(self.lookup("NumberOfPasswordPrompts"))

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        # asyncssh calls this only for a plain key outside the trusted keys trust gave it:
        # the verdict is then a changed, revoked or unknown key. Keep the key for the message.
        self.offered_key = key
        self.verdict = self.known.judge(key.public_data)
        if self.verdict is knownhosts.Verdict.KNOWN:
            return True
        if self.verdict is not knownhosts.Verdict.UNKNOWN:
            return False  # a changed key is never accepted
        if self.accepted_key is not None:
            return bool(key == self.accepted_key)
        if self.policy == "ask" and not self.batch and self.prompter.bound:
            # Synchronous in asyncssh: refuse now, ask once the attempt has ended (the live
            # display pauses for it), and connect again if the user accepts.
            self.ask_about_key = True
            return False
        self.confirming = True
        try:
            accepted = hostkeys.decide(
                self.policy,
                batch=self.batch,
                host=host,
                key_type=key.get_algorithm(),
                fingerprint=key.get_fingerprint("sha256"),
            )
        finally:
            self.confirming = False
        if accepted:
            self.remember(key)
        return accepted

    def remember(self, key: Any) -> None:
        """Add an accepted new key to the user's known_hosts, as ssh does."""
        hashed = knownhosts.wants_hashing(
            self.lookup("HashKnownHosts"), self.known.name, system=self.system_config
        )
        line = knownhosts.openssh(key.public_data)
        knownhosts.record(self.add_to, self.known.name, line, hashed=hashed)

    async def password_auth_requested(self) -> str | None:
        self.methods.append("password")
        if self.batch or self.methods.count("password") > self.password_tries:
            return None
        return await self.prompter.ask(f"{self.label}'s password: ")

    def kbdint_auth_requested(self) -> str | None:
        self.methods.append("keyboard-interactive")
        return None if self.batch else ""

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        if self.batch:
            return None
        answers = []
        intro = "\n".join(part for part in (name, instructions) if part)
        for prompt, echo in prompts:
            text = f"{intro}\n{prompt}" if intro else prompt
            intro = ""
            answer = await self.prompter.ask(text, CONFIRM if echo else SECRET)
            if answer is None:
                return None
            answers.append(answer)
        return answers


def password_tries_from(value: str | None) -> int:
    """NumberOfPasswordPrompts from the config (ssh's default is 3)."""
    try:
        return max(0, int(value)) if value else 3
    except ValueError:
        return 3


def auth_error(host: str, exc: Exception, client: Client, batch: bool) -> SSHError:
    """Authentication failed; name the method the server wanted when batch mode skipped it."""
    wanted = [m for m in PROMPTING_METHODS if m in client.methods]
    if batch and wanted:
        message, hint = batch_prompt_refusal(host, wanted)
        return SSHError(message, host=host, hint=hint)
    return SSHError(
        f"SSH authentication to {host} failed: {exc}",
        host=host,
        hint="check `ssh HOST true` works with the same options",
    )


def host_key_error(host: str, exc: Exception, client: Client) -> HostKeyError:
    """An unknown or changed host key, with the server key's fingerprint when seen."""
    key, verdict = client.offered_key, client.verdict
    if key is not None and verdict is not None:
        fingerprint = key.get_fingerprint("sha256")
        message = knownhosts.refusal(verdict, host, client.known.name, fingerprint)
        if verdict is knownhosts.Verdict.UNKNOWN and client.batch and client.policy == "ask":
            message += "; a batch run cannot ask (--accept-new adds a new key)"
    elif "revoked" in str(exc):  # a CA's host: asyncssh refuses a revoked key before Client
        message = f"host key for {host} could not be verified: the server offers a key that "
        message += "known_hosts marks @revoked"
    else:
        message = f"host key for {host} could not be verified: {exc}"
    return HostKeyError(
        message,
        host=host,
        hint="check the key with the host's owner, then add it to known_hosts "
        "(tunnelauth never turns host-key checking off)",
    )


async def connect_with_deadline(
    host: str, kwargs: dict[str, Any], client: Client, deadline: float, via: str | None
) -> Any:
    """``asyncssh.connect`` with ``client`` under ``deadline`` seconds, not counting time spent
    at a prompt; a failure worded as ssh words it (``via``: the jump host the tunnel leads to)."""
    kwargs = dict(kwargs)
    task = asyncio.ensure_future(asyncssh.connect(kwargs.pop("host"), **kwargs))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=deadline)
            if done:
                return task.result()
            if not client.prompting:
                raise SSHError(f"connecting to {host} timed out after {deadline:g} s", host=host)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise host_key_error(host, exc, client) from None
    except asyncssh.PermissionDenied as exc:
        raise auth_error(host, exc, client, client.batch) from None
    except asyncssh.ChannelOpenError as exc:
        reason = refusal_message(exc.code, exc.reason)
        message = f"cannot connect to {host}: {unreachable_from(via, reason)}"
        raise SSHError(message, host=host) from None
    except (asyncssh.Error, OSError) as exc:
        reason = os_error_reason(exc, host, kwargs.get("port") or None)
        raise SSHError(f"cannot connect to {host}: {reason}", host=host) from None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
