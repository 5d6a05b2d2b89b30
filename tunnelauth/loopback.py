"""The one definition of a loopback host: where a callback may point and where we listen.

Every module that asks "is this host the laptop itself?" (the watcher's URL checks, the
browser's safety check, the orchestrator's listener decisions, the listener's Host check)
uses these names, so they can never disagree.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Host names as ``urlsplit(...).hostname`` gives them (IPv6 without brackets, lower case).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (bare, as a URL's hostname) names the loopback interface."""
    return host.lower().removeprefix("[").removesuffix("]") in LOOPBACK_HOSTS


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at a loopback host (its port is then the laptop port)."""
    try:
        return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS
    except ValueError:
        return False


def loopback_port(url: str) -> int | None:
    """The port of a loopback ``url`` (None for any other URL or a bad port)."""
    try:
        return urlsplit(url).port if is_loopback_url(url) else None
    except ValueError:
        return None


def host_headers(port: int) -> frozenset[str]:
    """The Host header values a request to the laptop's callback port ``port`` may carry."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})
