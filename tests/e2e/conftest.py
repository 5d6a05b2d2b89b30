"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest

BACKENDS = ("openssh", "asyncssh", "paramiko")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each SSH transport in turn: the conformance tests must pass for all of them."""
    return str(request.param)
