"""The install a user makes: the wheel, with pip and with pipx, runs the demo on its own.

The wheel is built from the tracked files of the checkout and installed non-editable in fresh
environments (see ``tests/installed.py``); every command runs from ``/`` so nothing of the
checkout can be imported by accident.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.installed import REPO, Installed, wheel_names

DEADLINE = 120.0


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", "CI": "1", **env}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=clean,
        cwd="/",
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )


def test_every_runtime_file_is_in_the_wheel(installed: Installed) -> None:
    names = wheel_names(installed.wheel)
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "tunnelauth"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert len(tracked) > 30
    missing = [name for name in tracked if name not in names]
    assert missing == [], f"tracked files missing from the wheel: {missing}"
    assert "tunnelauth/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")], "tests leaked into the wheel"


def test_pip_install_imports_from_its_own_environment(installed: Installed) -> None:
    out = run([str(installed.venv_python), "-c", "import tunnelauth; print(tunnelauth.__file__)"])
    assert out.returncode == 0, out.stderr
    where = Path(out.stdout.strip())
    assert installed.root in where.parents, where
    assert REPO not in where.parents


def test_pip_install_runs_the_demo(installed: Installed) -> None:
    # No DISPLAY and no --no-browser: the demo's built-in browser completes the login.
    out = run([str(installed.venv_bin / "tunnelauth"), "demo"])
    assert out.returncode == 0, out.stderr
    assert "Demo login successful!" in out.stderr
    assert "logged in" in out.stderr


def test_pip_install_version_and_completion(installed: Installed) -> None:
    exe = str(installed.venv_bin / "tunnelauth")
    version = run([exe, "--version"])
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().endswith("0.1.0")
    words = "tunnelauth doc"
    completion = run([exe], _TUNNELAUTH_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD="1")
    assert "doctor" in completion.stdout.split(), completion.stderr
    script = run([exe, "--show-completion", "bash"], SHELL="/bin/bash")
    assert script.returncode == 0 and "_tunnelauth_completion" in script.stdout, script.stderr


def test_pipx_install_runs_the_demo(installed: Installed) -> None:
    exe = installed.pipx_bin / "tunnelauth"
    assert exe.exists(), os.listdir(installed.pipx_bin)
    version = run([str(exe), "--version"])
    assert version.returncode == 0 and "0.1.0" in version.stdout, version.stderr
    out = run([str(exe), "demo", "--no-browser"])
    assert out.returncode == 0, out.stderr
    assert "Demo login successful!" in out.stderr
