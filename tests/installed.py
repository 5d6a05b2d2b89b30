"""tunnelauth as a user installs it: the wheel built from this checkout, in fresh environments.

A session fixture builds the wheel once and installs it non-editable, with ``pip`` into a new
venv and with ``pipx``, in a directory every user may read, from an interpreter every user may
run (so the same install serves the run as ``nobody``). Nothing of the checkout is on their path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_DEADLINE = 600.0


class Installed(NamedTuple):
    """The wheel and the two environments it was installed into."""

    root: Path
    wheel: Path
    venv_python: Path
    venv_bin: Path
    pipx_bin: Path
    base_python: Path


def _world_runnable(path: Path) -> bool:
    """Whether any user may run ``path``: every parent searchable, the file executable."""
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & 0o001:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in real.parents)


def base_interpreter() -> Path:
    """An interpreter (>= 3.10, with venv) that other users may run, or fail saying why."""
    candidates = [Path(sys._base_executable), Path("/usr/bin/python3")]  # type: ignore[attr-defined]
    tried = []
    for candidate in candidates:
        if not candidate.exists():
            continue
        tried.append(str(candidate))
        if not _world_runnable(candidate):
            continue
        probe = subprocess.run(
            [
                str(candidate),
                "-c",
                "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0:
            return candidate.resolve()
    pytest.fail(
        "no Python >= 3.10 with venv that other users may run (tried: "
        + ", ".join(tried)
        + "); scripts/test installs python3-venv as root",
        pytrace=False,
    )


def _run(argv: list[str | Path], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        timeout=INSTALL_DEADLINE,
        check=False,
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"


def build(root: Path) -> Installed:
    """Build the wheel from a clean copy of the checkout and install it twice under ``root``."""
    base = base_interpreter()
    # A copy of the tracked files only: what a fresh clone would build.
    source = root / "source"
    tracked = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, source])
    (wheel,) = dist.glob("tunnelauth-*.whl")

    venv = root / "venv"
    _run([base, "-m", "venv", venv])
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel])

    pipx_env = {
        **os.environ,
        "PIPX_HOME": str(root / "pipx"),
        "PIPX_BIN_DIR": str(root / "pipx-bin"),
        "PIPX_MAN_DIR": str(root / "pipx-man"),
        "PIPX_DEFAULT_PYTHON": str(base),
    }
    # The README's own command: `pipx install .` in a fresh clone.
    done = subprocess.run(
        [sys.executable, "-m", "pipx", "install", "--python", str(base), "."],
        capture_output=True,
        text=True,
        env=pipx_env,
        cwd=source,
        stdin=subprocess.DEVNULL,
        timeout=INSTALL_DEADLINE,
        check=False,
    )
    assert done.returncode == 0, f"pipx install . failed:\n{done.stdout}\n{done.stderr}"
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o755)
    return Installed(
        root=root,
        wheel=wheel,
        venv_python=venv / "bin" / "python",
        venv_bin=venv / "bin",
        pipx_bin=root / "pipx-bin",
        base_python=base,
    )


def wheel_names(wheel: Path) -> set[str]:
    """The file names in a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """The wheel installed with pip and with pipx, in a directory every user may read."""
    root = Path(tempfile.mkdtemp(prefix="wheeltest-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield build(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
