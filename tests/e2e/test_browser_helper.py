"""Remote CLIs that open a browser instead of printing their URL, or name the wrong port."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus

# Where the remote wrapper makes the helper's directory (the bed's remote user has no TMPDIR).
HELPER_DIRS = "tunnelauth-browser.*"


def _helper_dirs() -> set[Path]:
    return set(Path("/tmp").glob(HELPER_DIRS))


@pytest.mark.parametrize("how", ["webbrowser", "browser-env", "xdg-open"])
def test_cli_that_only_opens_a_browser_logs_in(
    fresh: Bed, tmp_path: Path, backend: str, how: str
) -> None:
    # The CLI never prints its URL: it calls webbrowser.open(), runs $BROWSER itself, or
    # runs the real xdg-open, and fails if no browser says it opened.
    if how == "xdg-open" and shutil.which("xdg-open") is None:
        pytest.skip("xdg-open is not installed on this machine")
    issued_before = len(fresh.provider_issued())
    dirs_before = _helper_dirs()
    args = ["run", "remote", "--via", "channel", "--", "loopback-cli", "--open", how]
    result = tunnelauth(fresh, *args, tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.OK, result
    assert "the remote CLI asked to open a browser" in result.stderr
    assert "tunnelauth-browser" not in result.stderr + result.stdout  # the marker is no noise
    assert "over a direct SSH channel" in result.stderr
    assert "Login successful!" in result.stderr
    issued = fresh.provider_issued()
    assert len(issued) == issued_before + 1, "the browser never reached the authorize page"
    record = fresh.fake_record("loopback-cli")
    assert record is not None and record["code"] == issued[-1]["code"], record
    assert _helper_dirs() == dirs_before, "the helper's directory was left on the remote"


def test_printed_port_where_nothing_listens_is_named_and_not_opened(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    # The CLI listens on 8976 but names 8977 in its redirect URI and its waiting line.
    issued_before = len(fresh.provider_issued())
    args = ["run", "remote", "--via", "channel", "--", "loopback-cli"]
    args += ["--port", "8976", "--announce-port", "8977", "--timeout", "10"]
    result = tunnelauth(fresh, *args, tmp=tmp_path, backend=backend)
    assert result.code == ExitStatus.TIMED_OUT, result
    warning = "nothing listens on port 8977 on remote: the CLI may have moved to another port"
    assert warning in result.stderr, result
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "open this page in a browser" in line)
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8977%2Fcallback" in lines[at + 1], result
    # The browser was never sent, and the check itself never connected to the CLI's port.
    assert result.dom == ""
    assert len(fresh.provider_issued()) == issued_before
    record = fresh.fake_record("loopback-cli")
    assert record == {"code": None, "port": 8976, "connections": 0, "requests": [], "hosts": []}
