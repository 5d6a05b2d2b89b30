"""One mapping from errors to exit statuses, one loopback host set, one read of the environment."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tunnelauth import browser, exits, loopback, urlcheck, watchscan
from tunnelauth.environment import Environment
from tunnelauth.errors import SSHError, UsageError
from tunnelauth.status import ExitStatus


def test_an_error_not_shown_yet_is_printed_once_with_its_status() -> None:
    out = io.StringIO()
    status = exits.status_of(UsageError("bad flag", hint="try --help"), out)
    assert status == int(ExitStatus.USAGE)
    assert out.getvalue() == "tunnelauth: bad flag\n  try --help\n"


def test_a_shown_error_only_gives_its_status() -> None:
    out = io.StringIO()
    assert exits.status_of(exits.Shown(SSHError("no route")), out) == int(ExitStatus.SSH_FAILED)
    assert out.getvalue() == ""


def test_interrupt_and_unexpected_errors() -> None:
    assert exits.status_of(KeyboardInterrupt()) == int(ExitStatus.INTERRUPTED)
    with pytest.raises(RuntimeError):
        exits.status_of(RuntimeError("a bug"))


def test_no_mutable_reported_flag_is_left() -> None:
    package = Path(loopback.__file__).parent
    assert not [p for p in package.rglob("*.py") if ".reported" in p.read_text()]


def test_every_module_uses_the_one_loopback_set() -> None:
    assert browser.LOOPBACK_HOSTS is loopback.LOOPBACK_HOSTS
    assert urlcheck.LOOPBACK_HOSTS is loopback.LOOPBACK_HOSTS
    assert watchscan.LOOPBACK_HOSTS is loopback.LOOPBACK_HOSTS
    assert loopback.loopback_port("http://[::1]:8080/cb") == 8080
    assert loopback.loopback_port("https://example.com:8080/") is None
    assert loopback.is_loopback_host("[::1]") and not loopback.is_loopback_host("localhost.")


def test_the_environment_is_what_the_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunnelauth.cmdline import build_settings

    variables = {
        "TUNNELAUTH_CONFIG": os.devnull,
        "TUNNELAUTH_HOST": "fromobject",
        "TUNNELAUTH_VIA": "relay",
    }
    env = Environment(variables=variables, stdin_tty=False)
    monkeypatch.setenv("TUNNELAUTH_HOST", "fromprocess")  # never read: the object says
    monkeypatch.setenv("TUNNELAUTH_CONFIG", "/no/such/dir/config.toml")
    settings = build_settings("spotify", {"config": None}, environment=env)
    assert settings.via == "relay"
