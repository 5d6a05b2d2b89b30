"""Device codes go to the clipboard through the platform's tool, fed on stdin."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tunnelauth.clipboard import clipboard_command, copy


def _tool(bindir: Path, name: str, out: Path) -> None:
    """A stand-in clipboard tool: records its stdin and its arguments."""
    script = bindir / name
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" > {out}.args\ncat > {out}\n')
    script.chmod(0o755)


def test_x11_tool_gets_the_code_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "clip"
    _tool(tmp_path, "xclip", out)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "DISPLAY": ":99"}
    assert asyncio.run(copy("ABCD-EFGH", env)) is True
    assert out.read_text() == "ABCD-EFGH"
    assert out.with_suffix(".args").read_text().strip() == "-selection clipboard"


def test_wayland_is_preferred_when_both_are_set(tmp_path: Path) -> None:
    for name in ("wl-copy", "xclip"):
        _tool(tmp_path, name, tmp_path / name)
    env = {"PATH": str(tmp_path), "DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}
    command = clipboard_command(env, platform="linux")
    assert command is not None and Path(command[0]).name == "wl-copy"


def test_no_display_means_no_clipboard(tmp_path: Path) -> None:
    _tool(tmp_path, "xclip", tmp_path / "clip")
    env = {"PATH": str(tmp_path)}
    assert clipboard_command(env, platform="linux") is None
    assert asyncio.run(copy("ABCD-EFGH", env)) is False
    assert not (tmp_path / "clip").exists()


def test_macos_uses_pbcopy(tmp_path: Path) -> None:
    _tool(tmp_path, "pbcopy", tmp_path / "clip")
    command = clipboard_command({"PATH": str(tmp_path)}, platform="darwin")
    assert command is not None and Path(command[0]).name == "pbcopy"
