"""Shared fixtures: the session-wide network-namespace SSH test bed and the leftovers check.

Policy: the bed needs root, ``ip`` and ``/usr/sbin/sshd``. With ``CI`` set, a missing
prerequisite or a failed build fails the tests that need the bed; outside CI a missing
prerequisite skips them with the reason, and a failed build is an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # ``tests.bed`` must import the same way under any runner
    sys.path.insert(0, str(REPO))

from tests.bed import SSHD, leftovers, netbed, reaper  # noqa: E402
from tests.bed import fleet as fleet_bed  # noqa: E402
from tests.installed import installed  # noqa: E402, F401  (a session fixture)

IN_CI = bool(os.environ.get("CI"))

# Tests type `tunnelauth` as a user would: the command of the environment running the tests.
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def missing_prerequisites() -> list[str]:
    """What this machine lacks for building the bed (empty when it can be built)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("ip") is None:
        missing.append("ip (iproute2)")
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    return missing


def announce(config: pytest.Config, text: str) -> None:
    """Show one line on the terminal even while output is captured."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        warnings.warn(text, stacklevel=2)
        return
    suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with suspended:
        reporter.write_line(text)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove beds left by killed runs (only those whose owner pid is dead)."""
    if missing_prerequisites():
        return
    for line in reaper.reap():
        announce(session.config, f"bed reaper: {line}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the bed with ``bed`` (so ``-m 'not bed'`` deselects them)."""
    for item in items:
        if "bed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.bed)


@pytest.fixture(scope="session")
def bed(request: pytest.FixtureRequest) -> Iterator[netbed.Bed]:
    """The laptop → bastion → remote bed, built once per session and always torn down."""
    missing = missing_prerequisites()
    if missing:
        reason = "the network-namespace SSH bed needs " + ", ".join(missing)
        if IN_CI:
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(reason)
    announce(
        request.config,
        "tunnelauth: building the root network-namespace SSH test bed "
        "(namespaces, veths, sshd, a test user; removed afterwards)",
    )
    try:
        built = netbed.build()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"building the bed failed (CI is set): {exc}", pytrace=True)
        raise
    announce(
        request.config,
        f"tunnelauth: bed {built.record.id} up in "
        f"{built.timings['up']:.2f}s (idp {built.idp_url} at {built.idp_ip})",
    )
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def no_leftovers(bed: netbed.Bed) -> Iterator[leftovers.Snapshot]:
    """Snapshot before the test; after it, fail if processes, listeners or files remain."""
    before = leftovers.snapshot(bed)
    yield before
    leftovers.assert_nothing_left(before)


def _fleet(
    request: pytest.FixtureRequest, bed: netbed.Bed, count: int
) -> Iterator[fleet_bed.Fleet]:
    """Build a fleet of ``count`` targets on the session's bed; always removed afterwards."""
    built = fleet_bed.build(bed, count=count)
    announce(
        request.config, f"tunnelauth: fleet {built.slot} of {count} targets on {bed.record.id}"
    )
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest, bed: netbed.Bed) -> Iterator[fleet_bed.Fleet]:
    """Five targets behind the bed's bastion (``tests/bed/fleet.py``), once per session."""
    yield from _fleet(request, bed, 5)


@pytest.fixture(scope="session")
def fleet10(request: pytest.FixtureRequest, bed: netbed.Bed) -> Iterator[fleet_bed.Fleet]:
    """Ten targets (the most a fleet has), for benchmarks; a fleet of its own beside ``fleet``."""
    yield from _fleet(request, bed, 10)


@pytest.fixture
def fleet_fresh(
    fleet: fleet_bed.Fleet, no_leftovers: leftovers.Snapshot
) -> Iterator[fleet_bed.Fleet]:
    """Every target up and clean (as ``fresh`` makes the remote); nothing left on any target."""
    fleet.restore()
    fleet.reset()
    for name in fleet.names:
        fleet.set_fake(name, spotify_client_id="tunnelauth-test-client")
    yield fleet
    assert fleet.login_processes() == [], "a login process survived on a fleet target"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Runs under test keep their cache (remembered MCP server names) out of the real home."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before
