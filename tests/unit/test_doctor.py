"""doctor's laptop checks and verdict (the remote checks run on the bed: test_scripting.py)."""

from __future__ import annotations

from tunnelauth.doctorreport import FAIL, OK, WARN, Check, Report
from tunnelauth.laptopchecks import check_browser, check_ports
from tunnelauth.settings import Settings, SSHTarget
from tunnelauth.status import ExitStatus


def settings(**kwargs: object) -> Settings:
    return Settings(target=SSHTarget("h"), program="hermes", args=(), **kwargs)  # type: ignore[arg-type]


def test_exit_status_is_the_first_failure_and_warnings_do_not_count() -> None:
    report = Report("h", [Check("a", WARN, "w"), Check("b", OK, "o")])
    assert report.exit_status == ExitStatus.OK and report.to_json()["ok"]
    report.checks += [
        Check("ssh", FAIL, "x", "fix", ExitStatus.SSH_FAILED),
        Check("hermes", FAIL, "y", "fix", ExitStatus.COMMAND_NOT_FOUND),
    ]
    assert report.exit_status == ExitStatus.SSH_FAILED
    assert report.to_json()["exit_status"] == 3


def test_taken_well_known_port_is_a_warning_naming_it() -> None:
    check = check_ports(lambda host, port: port != 43827)
    assert check.status == WARN and "43827 (spotify)" in check.detail and check.fix
    assert check_ports(lambda host, port: True).status == OK


PATH = {"PATH": "/usr/bin:/bin"}


def test_browser_command_must_exist() -> None:
    assert check_browser(settings(browser_cmd="sh -c 'x' {url}"), PATH).status == OK
    missing = check_browser(settings(browser_cmd="/no/such/browser {url}"), PATH)
    assert missing.status == FAIL and missing.code == ExitStatus.USAGE
    not_on_path = check_browser(settings(browser_cmd="sh -c 'x' {url}"), {"PATH": "/nowhere"})
    assert not_on_path.status == FAIL, "looked up on the PATH the browser would run with"
    assert check_browser(settings(no_browser=True), PATH).status == "skip"
