"""Run code in a fresh interpreter: what a process imports shows only there."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# Code that starts with this keeps, in ``seen``, every module a thread other than the main one
# imported (two threads importing at once can deadlock, so helper threads must import nothing).
THREAD_IMPORTS = (
    "import json, sys, threading\n"
    "seen = []\n"
    "class Spy:\n"
    "    @staticmethod\n"
    "    def find_spec(name, path=None, target=None):\n"
    "        if threading.current_thread() is not threading.main_thread():\n"
    "            seen.append(name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Spy)\n"
)


def run_json(code: str, timeout: float = 120.0) -> Any:
    """Run ``code`` with this interpreter; it must succeed and print JSON on its last line."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])
