"""Recipes end to end: real sshd, the real CLI, Chromium, and fakes of the CLIs they run.

The generic fake (``loopback-cli``) is installed on the remote under the CLI's name, where it
prints what that CLI prints (tests/fakes/README.md), so each test shows that the recipe's flag
or variable reached the CLI and that its loopback login came through the tunnel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus


@contextmanager
def installed_as(bed: Bed, name: str) -> Iterator[None]:
    """The generic fake (``~/bin/loopback-cli``) installed on the remote as ``~/bin/NAME``."""
    link = bed.home / "bin" / name
    link.symlink_to(bed.home / "bin" / "loopback-cli")
    os.chown(link, bed.uid, bed.gid, follow_symlinks=False)
    try:
        yield
    finally:
        link.unlink()


@pytest.mark.parametrize(
    ("recipe", "extra", "switched", "unswitched", "success"),
    [
        (
            "databricks",
            ["--host", "https://adb.test", "--profile", "work"],
            # Only BROWSER=none (set by the recipe) makes the CLI print this line.
            "Please complete authentication by opening this link in your browser:",
            "in the browser to continue authentication",
            "Profile work was successfully saved",
        ),
        (
            "wrangler",
            [],
            "Visit this link to authenticate: ",
            "Opening a link in your default browser",
            "Successfully logged in.",
        ),
        (
            "aws",
            ["--profile", "dev"],
            "Browser will not be automatically opened.",
            "Attempting to automatically open",
            "Successfully logged into Start URL: https://start.idp.test/start",
        ),
    ],
)
def test_a_recipe_runs_its_cli_with_its_switch_and_logs_in(
    fresh: Bed,
    tmp_path: Path,
    recipe: str,
    extra: list[str],
    switched: str,
    unswitched: str,
    success: str,
) -> None:
    before = len(fresh.provider_issued())
    with installed_as(fresh, recipe):
        result = tunnelauth(fresh, "recipe", recipe, "remote", "--", *extra, tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    shown = result.stdout + result.stderr
    assert switched in shown and unswitched not in shown, result
    assert success in shown, result  # the extra arguments reached the CLI too (databricks)
    issued = fresh.provider_issued()[before:]
    assert len(issued) == 1, "the browser never reached the authorize page (once)"
    client = {"databricks": "databricks-cli", "wrangler": "wrangler", "aws": "aws-cli"}[recipe]
    assert issued[0]["client_id"] == client, issued  # the login was the recipe's CLI's
