"""Copies a device code to the laptop's clipboard, where a clipboard tool is available.

Best effort: the code is shown big in any case. The text goes to the tool's stdin (never
through a shell, never in its arguments), and the copy has a short deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import Mapping, Sequence

DEADLINE = 2.0  # seconds a clipboard tool may take


def clipboard_command(env: Mapping[str, str], platform: str = sys.platform) -> Sequence[str] | None:
    """The argv of a clipboard tool usable with the variables ``env``, or None (no display, no
    tool)."""
    path = env.get("PATH")
    candidates: list[list[str]] = []
    if platform == "darwin":
        candidates.append(["pbcopy"])
    elif platform.startswith("win") or platform == "cygwin":
        candidates.append(["clip"])
    else:
        if env.get("WAYLAND_DISPLAY"):
            candidates.append(["wl-copy"])
        if env.get("DISPLAY"):
            candidates += [["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"]]
    for argv in candidates:
        found = shutil.which(argv[0], path=path)
        if found:
            return [found, *argv[1:]]
    return None


async def copy(text: str, env: Mapping[str, str]) -> bool:
    """Put ``text`` on the clipboard (the tool runs with the variables ``env``); True if a tool
    took it."""
    argv = clipboard_command(env)
    if argv is None:
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=dict(env),
        )
    except OSError:
        return False
    try:
        await asyncio.wait_for(proc.communicate(text.encode()), DEADLINE)
    except asyncio.TimeoutError:
        # xclip stays to serve the selection; it has the text by now, so leave it be.
        return True
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return proc.returncode == 0
