"""``doctor``'s checks of this machine (no connection needed): the well-known callback ports
are free, and a browser (or ``--browser-cmd``) can open the login page.
"""

from __future__ import annotations

import os
import shutil
import sys
import webbrowser
from collections.abc import Callable, Mapping
from types import MappingProxyType

from tunnelauth import ports
from tunnelauth.browser import (
    CONSOLE_BROWSERS,
    build_browser_argv,
    running_in_wsl,
    system_browser_possible,
)
from tunnelauth.doctorreport import FAIL, OK, SKIP, WARN, Check
from tunnelauth.errors import UsageError
from tunnelauth.settings import Settings
from tunnelauth.status import ExitStatus

# Callback ports some logins always use: checked free on this machine; the remote forwarding
# probe stays clear of them.
WELL_KNOWN_PORTS: Mapping[int, str] = MappingProxyType(
    {
        43827: "spotify",
        56121: "xai (older hermes)",
        1455: "codex browser mode",
        **{p: "MCP pinned port" for p in range(27890, 27895)},
    }
)


def check_ports(is_free: Callable[[str, int], bool] = ports.is_free) -> Check:
    """The well-known callback ports must be free on this machine."""
    taken = []
    for port, what in WELL_KNOWN_PORTS.items():
        if not is_free("127.0.0.1", port):
            holder = ports.who_holds(port) or "an unknown process"
            taken.append(f"{port} ({what}) held by {holder}")
    if not taken:
        listed = ", ".join(str(p) for p in sorted(WELL_KNOWN_PORTS))
        return Check("laptop ports", OK, f"free: {listed}")
    return Check(
        "laptop ports",
        WARN,
        "taken: " + "; ".join(taken),
        "stop the holder (or let its login finish); a login needing that port exits 5",
    )


def check_browser(settings: Settings, variables: Mapping[str, str]) -> Check:
    """A browser (or --browser-cmd) that can open the login page (``variables``: the
    environment a login's browser would start in)."""
    if settings.no_browser:
        return Check("browser", SKIP, "--no-browser: URLs are printed for you to open")
    if settings.browser_cmd:
        try:
            program = build_browser_argv(settings.browser_cmd, "https://example.invalid/")[0]
        except UsageError as exc:
            return Check("browser", FAIL, exc.message, "fix --browser-cmd", ExitStatus.USAGE)
        found = shutil.which(program, path=variables.get("PATH"))
        if found is None:
            return Check(
                "browser",
                FAIL,
                f"--browser-cmd program {program!r} not found",
                "install it or give its full path",
                ExitStatus.USAGE,
            )
        return Check("browser", OK, f"--browser-cmd runs {found}")
    if not system_browser_possible(variables, sys.platform, wsl=running_in_wsl(variables)):
        return Check(
            "browser",
            WARN,
            "no graphical session (DISPLAY/WAYLAND_DISPLAY unset): URLs will be printed",
            "open them yourself, or pass --browser-cmd 'CMD {url}'",
        )
    try:
        controller = webbrowser.get()
    except webbrowser.Error:
        return Check("browser", WARN, "no browser found: URLs will be printed", "--browser-cmd")
    name = os.path.basename(str(getattr(controller, "name", "") or "")).lower()
    if name in CONSOLE_BROWSERS:
        return Check(
            "browser",
            WARN,
            f"only a console browser ({name}): URLs will be printed",
            "--browser-cmd",
        )
    return Check("browser", OK, f"system browser {name or type(controller).__name__}")
