"""Shell completion comes from typer and completes commands and options."""

from __future__ import annotations

import os
import subprocess
import sys


def complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_TUNNELAUTH_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    code = "import sys; from tunnelauth.cli import main; sys.exit(main([]))"
    argv = [sys.executable, "-c", code]
    # click names the completion variable after the program name main() passes.
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


def test_commands_and_options_complete() -> None:
    assert "doctor" in complete("tunnelauth doc")
    assert "--verify" in complete("tunnelauth spotify --ver")


def test_completion_script_is_printed() -> None:
    code = "import sys; from tunnelauth.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0 and "_tunnelauth_completion" in out.stdout
