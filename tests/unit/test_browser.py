"""Opening URLs: argv building proven with real processes, URL checks, console-browser avoidance."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest

from tunnelauth.browser import (
    BrowserLauncher,
    UnsafeUrlError,
    build_browser_argv,
    is_safe_browser_url,
    system_browser_possible,
)
from tunnelauth.errors import UsageError
from tunnelauth.status import ExitStatus

DEADLINE = 30.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run a test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def recorder(tmp_path: Path, name: str = "record") -> tuple[Path, Path]:
    """An executable that writes its argv (after argv[0]) as JSON to a file; (script, file)."""
    out = tmp_path / f"{name}.json"
    script = tmp_path / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    script.chmod(0o755)
    return script, out


async def wait_for_file(path: Path) -> None:
    """Poll (bounded) until a file another process writes exists and is non-empty."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not (path.exists() and path.stat().st_size):
        assert loop.time() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)


def hostile_url(canary: Path) -> str:
    """A URL that would create ``canary`` if any shell ever interpreted it."""
    c = str(canary)
    return (
        f"https://idp.example.com/authorize?a=$(touch${{IFS}}{c})&b=;touch${{IFS}}{c};"
        f"&c=`touch${{IFS}}{c}`&d='\"&e=|touch${{IFS}}{c}&f=%20{{url}}"
    )


def test_argv_template_splitting_and_placement() -> None:
    url = "https://idp.example.com/a?x=1&y=2"
    assert build_browser_argv("firefox", url) == ["firefox", url]
    assert build_browser_argv("open -a 'Google Chrome'", url) == [
        "open",
        "-a",
        "Google Chrome",
        url,
    ]
    assert build_browser_argv('b --new-window "--url={url}" --x', url) == [
        "b",
        "--new-window",
        f"--url={url}",
        "--x",
    ]
    spaced = "https://a b/c d;e $(f)"
    assert build_browser_argv("cmd --u={url} {url}", spaced) == ["cmd", f"--u={spaced}", spaced]


@pytest.mark.parametrize("template", ["", "   ", "'unbalanced", "{url}", "{url}x --y"])
def test_bad_templates_are_usage_errors(template: str) -> None:
    with pytest.raises(UsageError):
        build_browser_argv(template, "https://example.com/")


def test_built_argv_keeps_a_spaced_hostile_url_in_one_real_argument(tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    canary = tmp_path / "canary"
    url = hostile_url(canary) + " and spaces ; touch " + str(canary)
    argv = build_browser_argv(f"{shlex.quote(str(script))} --first {{url}}", url)
    subprocess.run(argv, check=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert json.loads(out.read_text()) == ["--first", url]
    assert not canary.exists()


def test_launcher_runs_the_command_with_the_url_verbatim(tmp_path: Path) -> None:
    script, out = recorder(tmp_path, "my browser")
    canary = tmp_path / "canary"
    url = hostile_url(canary)
    assert is_safe_browser_url(url)

    async def main() -> None:
        launcher = BrowserLauncher(env=base_env(), command=f"'{script}' \"--url={{url}}\" --tail")
        assert await launcher.open(url) == "command"
        await launcher.close(grace=DEADLINE)

    run(main())
    assert json.loads(out.read_text()) == [f"--url={url}", "--tail"]
    assert not canary.exists()


@pytest.mark.parametrize(
    "url",
    [
        "https://accounts.spotify.com/authorize?client_id=x&redirect_uri=http%3A%2F%2F127.0.0.1",
        "http://127.0.0.1:43827/spotify/callback",
        "http://localhost:1455/auth/callback",
        "http://[::1]:8080/callback?code=1",
        "HTTPS://Auth.Example.COM/x",
        "https://[2001:db8::1]/authorize",
        "https://auth.example.com:8443/device?user_code=ABCD-EFGH",
    ],
)
def test_safe_urls(url: str) -> None:
    assert is_safe_browser_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com:80/",
        "http://127.0.0.1/callback",
        "http://127.0.0.2:80/",
        "http://127.0.0.1:0/",
        "https://user:pw@example.com/",
        "https://user@example.com/",
        "https://example.com/a b",
        "https://example.com/\x1b[2J",
        "https://example.com/\u202etxt.exe",
        "https://example.com/\n",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/html,hi",
        "ftp://example.com/",
        "https://",
        "https:///path",
        "https://exa_mple.com/",
        "https://example.com:99999/",
        "https://evil.example\\@good.example/",
        "http://127.0.0.1:80\\.evil.example/",
        "https://example.com/" + "a" * 9000,
        "-https://example.com/",
    ],
)
def test_unsafe_urls(url: str) -> None:
    assert not is_safe_browser_url(url)


def test_launcher_refuses_unsafe_urls_and_runs_nothing(tmp_path: Path) -> None:
    script, out = recorder(tmp_path)

    async def main() -> None:
        launcher = BrowserLauncher(env=base_env(), command=shlex.quote(str(script)))
        with pytest.raises(UnsafeUrlError) as caught:
            await launcher.open("http://evil.example:80/phish")
        assert caught.value.status == ExitStatus.LOGIN_FAILED
        await launcher.close(grace=1)

    run(main())
    assert not out.exists()


def test_no_browser_prints() -> None:
    async def main() -> str:
        launcher = BrowserLauncher(env=base_env(), no_browser=True, command="never-run")
        try:
            how: str = await launcher.open("https://example.com/")
            return how
        finally:
            await launcher.close(grace=1)

    assert run(main()) == "printed"


def test_system_browser_possible_rules() -> None:
    assert not system_browser_possible({}, "linux", wsl=False)
    assert not system_browser_possible({"TERM": "xterm"}, "freebsd14", wsl=False)
    assert system_browser_possible({"DISPLAY": ":0"}, "linux", wsl=False)
    assert system_browser_possible({"WAYLAND_DISPLAY": "wayland-0"}, "linux", wsl=False)
    assert system_browser_possible({}, "linux", wsl=True)
    assert system_browser_possible({}, "darwin", wsl=False)


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment with no display unless given."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env.update(extra)
    return env


def test_without_a_display_nothing_is_started_and_the_url_is_printed(tmp_path: Path) -> None:
    script, out = recorder(tmp_path, "lynx")

    async def main() -> str:
        launcher = BrowserLauncher(
            env=base_env(BROWSER=str(script), TERM="xterm"), platform="linux"
        )
        try:
            how: str = await launcher.open("https://example.com/")
            return how
        finally:
            await launcher.close(grace=DEADLINE)

    assert run(main()) == "printed"
    assert not out.exists()


def test_a_console_browser_is_never_used_even_with_a_display(tmp_path: Path) -> None:
    script, out = recorder(tmp_path, "lynx")

    async def main() -> str:
        env = base_env(DISPLAY=":99", BROWSER=str(script), TERM="xterm")
        launcher = BrowserLauncher(env=env, platform="linux")
        try:
            how: str = await launcher.open("https://example.com/")
            return how
        finally:
            await launcher.close(grace=DEADLINE)

    assert run(main()) == "printed"
    assert not out.exists()


def test_the_system_browser_gets_the_url_with_a_display(tmp_path: Path) -> None:
    script, out = recorder(tmp_path, "graphical-browser")
    url = "https://example.com/authorize?x=1&y=$(id)"

    async def main() -> str:
        env = base_env(DISPLAY=":99", BROWSER=str(script))
        launcher = BrowserLauncher(env=env, platform="linux")
        try:
            how: str = await launcher.open(url)
            await wait_for_file(out)
            return how
        finally:
            await launcher.close(grace=DEADLINE)

    assert run(main()) == "system"
    assert json.loads(out.read_text()) == [url]


def test_command_output_goes_to_the_named_file_not_our_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "browser.log"

    async def main() -> None:
        launcher = BrowserLauncher(
            command="sh -c 'echo to-stdout; echo to-stderr >&2' sh", output=log, env=base_env()
        )
        assert await launcher.open("https://example.com/") == "command"
        await launcher.close(grace=DEADLINE)

    run(main())
    captured = capfd.readouterr()
    assert "to-std" not in captured.out + captured.err
    assert log.read_text().split() == ["to-stdout", "to-stderr"]


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    async def main() -> None:
        launcher = BrowserLauncher(env=base_env(), command=str(tmp_path / "no-such-browser"))
        with pytest.raises(UsageError):
            await launcher.open("https://example.com/")
        await launcher.close(grace=1)

    run(main())


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for an unrelated reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_close_ends_a_long_running_command_and_its_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    command = (
        f"sh -c 'sleep 60 & echo \"$! $$\" > {shlex.quote(str(pidfile))}; exec sleep 61' browser"
    )

    async def main() -> list[int]:
        launcher = BrowserLauncher(env=base_env(), command=command)
        assert await launcher.open("https://example.com/") == "command"
        await wait_for_file(pidfile)
        pids = [int(p) for p in pidfile.read_text().split()]
        assert not any(gone(pid) for pid in pids)
        await launcher.close(grace=0.1)
        return pids

    pids = run(main())
    loop_deadline = time.monotonic() + DEADLINE  # the orphan is reaped by init
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < loop_deadline, "a process of the group survived"
        time.sleep(0.01)


def test_close_leaves_what_an_exited_opener_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    # Like xdg-open: starts something in the background and exits at once.
    command = f"sh -c 'sleep 60 & echo \"$!\" > {shlex.quote(str(pidfile))}' opener"

    async def main() -> int:
        launcher = BrowserLauncher(env=base_env(), command=command)
        await launcher.open("https://example.com/")
        await wait_for_file(pidfile)
        await launcher.close(grace=DEADLINE)
        return int(pidfile.read_text())

    pid = run(main())
    try:
        assert not gone(pid)
    finally:
        psutil.Process(pid).kill()


def env_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that records its argv (after argv[0]) and $TUNNELAUTH_URL; (script, file)."""
    out = tmp_path / "argv-env.json"
    script = tmp_path / "record-env"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps("
        "{'argv': sys.argv[1:], 'env': os.environ.get('TUNNELAUTH_URL')}))\n"
    )
    script.chmod(0o755)
    return script, out


@pytest.mark.parametrize(
    "template",
    [
        "{script} --first",  # the URL goes last, as one argument
        "{script} --url {{url}}",
        # A template that needs a shell takes the URL from the environment (docs/ci.md) ...
        """sh -c '{script} "$TUNNELAUTH_URL"'""",
        # ... or as a positional parameter, outside the script.
        """sh -c '{script} "$1"' sh {{url}}""",
        # The forms docs/ci.md and the README show, as written there.
        'sh -c "{script} \\"$TUNNELAUTH_URL\\""',
        'sh -c "{script} \\"$1\\"" sh {{url}}',
    ],
)
def test_the_browser_command_gets_the_url_as_one_argument_and_in_its_environment(
    tmp_path: Path, template: str
) -> None:
    script, out = env_recorder(tmp_path)
    canary = tmp_path / "canary"
    url = hostile_url(canary)

    async def main() -> None:
        launcher = BrowserLauncher(
            env=base_env(), command=template.format(script=shlex.quote(str(script)))
        )
        assert await launcher.open(url) == "command"
        await launcher.close(grace=DEADLINE)

    run(main())
    recorded = json.loads(out.read_text())
    assert recorded["env"] == url
    assert recorded["argv"].count(url) == 1 and recorded["argv"][-1] == url
    assert not canary.exists(), "a shell interpreted the URL"


@pytest.mark.parametrize(
    "template",
    [
        "sh -c 'echo {url} > /dev/null'",
        "bash -lc 'xdg-open \"{url}\"'",
        "/bin/dash -e -c 'x={url}'",
        "env A=1 zsh -c 'open {url}'",
        "sh -o errexit -c -- ': {url}'",
    ],
)
def test_url_inside_a_shells_script_is_refused_and_nothing_runs(
    tmp_path: Path, template: str
) -> None:
    canary = tmp_path / "canary"
    # Valid shell code in each script (the full hostile URL would be a syntax error there).
    url = f"https://idp.example.com/a?x=$(touch${{IFS}}{canary})"
    assert is_safe_browser_url(url)

    async def main() -> None:
        launcher = BrowserLauncher(env=base_env(), command=template)
        try:
            with pytest.raises(UsageError) as caught:
                await launcher.open(url)
        finally:
            await launcher.close(grace=DEADLINE)
        assert "TUNNELAUTH_URL" in (caught.value.hint or "")

    try:
        run(main())
    finally:
        assert not canary.exists(), "a shell interpreted the URL"
