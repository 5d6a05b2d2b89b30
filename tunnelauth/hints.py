"""Hides hermes's manual-tunnel instructions from the display: tunnelauth is doing that work.

hermes prints, in a remote session, how to open an ``ssh -N -L`` forward in a second terminal.
Shown under tunnelauth, that advice would only confuse. The block is hidden from the normal
display (``-v`` shows everything, and a failure still lists the remote's last lines).
"""

from __future__ import annotations

START_MARKERS = ("Remote session detected",)
END_MARKERS = ("Headless environment detected", "Then open the authorize URL above")
MAX_HIDDEN = 16  # a block never hides more than this many lines, whatever follows


def _is_rule(line: str) -> bool:
    """A horizontal rule made of dashes (how hermes closes its hint block)."""
    text = line.strip()
    return len(text) >= 10 and set(text) == {"-"}


def step(left: int, line: str) -> tuple[bool, int]:
    """Whether ``line`` is shown, and how many more lines the hint block may hide after it.

    ``left`` is the count carried from the previous line (0: no block is being hidden).
    """
    if left == 0:
        if any(marker in line for marker in START_MARKERS):
            return False, MAX_HIDDEN
        return True, 0
    left -= 1
    if (_is_rule(line) and left < MAX_HIDDEN - 2) or any(m in line for m in END_MARKERS):
        left = 0
    return False, left


class HintFilter:
    """Decides, line by line, whether a remote line belongs on the display."""

    def __init__(self) -> None:
        self._left = 0

    def shows(self, line: str) -> bool:
        """False for the lines of hermes's manual-tunnel hint block; True otherwise."""
        shown, self._left = step(self._left, line)
        return shown

    @property
    def hiding(self) -> bool:
        """Whether a hint block is being hidden right now."""
        return self._left > 0
