"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.bed import leftovers
from tests.bed.netbed import Bed

BACKENDS = ("openssh", "asyncssh", "paramiko")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each SSH transport in turn: the conformance tests must pass for all of them."""
    return str(request.param)


@pytest.fixture
def fresh(bed: Bed, no_leftovers: leftovers.Snapshot) -> Iterator[Bed]:
    """A clean fake hermes (normal mode, no records) and the nothing-left-behind check.

    After the test, no login process of the test user may survive inside the remote
    namespace either.
    """
    shutil.rmtree(bed.home / ".hermes" / "fake-record", ignore_errors=True)
    bed.reset_fake()
    bed.set_fake(spotify_client_id="tunnelauth-test-client")
    yield bed
    assert bed.remote_login_processes() == [], "a remote login process survived the run"
