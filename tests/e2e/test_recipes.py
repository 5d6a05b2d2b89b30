"""A recipe end to end: real sshd, the real CLI, Chromium, and a databricks-like fake CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def test_databricks_recipe_prints_its_link_on_browser_none_and_logs_in(
    fresh: Bed, tmp_path: Path
) -> None:
    with installed_as(fresh, "databricks"):
        result = tunnelauth(
            fresh,
            "recipe",
            "databricks",
            "remote",
            "--",
            "--host",
            "https://adb.test",
            "--profile",
            "work",
            tmp=tmp_path,
        )
    assert result.code == ExitStatus.OK, result
    # Only BROWSER=none (set by the recipe on the remote) makes the CLI print this line.
    assert "Please complete authentication by opening this link in your browser:" in result.stderr
    assert "in the browser to continue authentication" not in result.stderr + result.stdout
    # The extra arguments reached the CLI, and the callback came back through the tunnel.
    assert "Profile work was successfully saved" in result.stderr
    (issued,) = fresh.provider_issued()
    assert issued, "the browser never reached the authorize page"
