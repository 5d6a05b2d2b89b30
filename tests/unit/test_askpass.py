"""ssh's questions reach the user through tunnelauth: the askpass program and the prompter.

The askpass script is run as ssh runs it (a program with the prompt as its argument and
``SSH_ASKPASS_PROMPT`` in its environment); the prompter is driven from a worker thread, as
paramiko's authentication and asyncssh's key loading drive it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tunnelauth.askpass import AskpassServer
from tunnelauth.environment import Environment
from tunnelauth.flow import _ssh_asker
from tunnelauth.transports.prompts import CONFIRM, RETRY, Prompter

FIDO_NOTICE = "Confirm user presence for key ED25519-SK SHA256:2Yh1mGPXJx7Mbjq0h2YbuHn3OMjlKr"


class Said:
    """A reporter that keeps what it was told (only what the asker uses)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def warn(self, message: str) -> None:
        self.lines.append(f"warn: {message}")

    def prompt(self, text: str, secret: bool, *, origin: str = "remote") -> None:
        self.lines.append(f"prompt({origin}, secret={secret}): {text}")

    def prompt_done(self) -> None:
        self.lines.append("prompt done")


class Typed:
    """A terminal where the user types ``answers`` in turn."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.reads: list[bool] = []

    async def read_line(
        self, *, secret: bool, timeout: float, prompt: Callable[[], None] | None = None
    ) -> str | None:
        self.reads.append(secret)
        if prompt is not None:
            prompt()
        return self.answers.pop(0) if self.answers else None


async def _askpass(
    env: dict[str, str], prompt: str, hint: str | None, *, cwd: Path | None = None
) -> tuple[int, bytes]:
    """Run the askpass script as ssh would; returns its exit status and what it printed."""
    child_env = {**os.environ, **env}
    child_env.pop("SSH_ASKPASS_PROMPT", None)
    if hint is not None:
        child_env["SSH_ASKPASS_PROMPT"] = hint
    proc = await asyncio.create_subprocess_exec(
        env["SSH_ASKPASS"],
        prompt,
        env=child_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out


def test_askpass_carries_questions_and_answers(tmp_path: Path) -> None:
    said, typed = Said(), Typed("the-passphrase", "yes")

    async def main() -> list[tuple[int, bytes]]:
        server = AskpassServer(str(tmp_path), _ssh_asker(said, typed))  # type: ignore[arg-type]
        env = await server.start({})
        try:
            return [
                await _askpass(env, "Enter passphrase for key '/home/u/.ssh/id_ed25519': ", ""),
                await _askpass(env, "Allow use of key? (yes/no) ", "confirm"),
                await _askpass(env, FIDO_NOTICE, "none"),
                await _askpass(env, "user@host's password: ", ""),  # nothing more is typed
            ]
        finally:
            await server.close()

    results = asyncio.run(main())
    assert results == [(0, b"the-passphrase\n"), (0, b"yes\n"), (0, b"\n"), (1, b"")]
    assert typed.reads == [True, False, True], "secrets are read without echo, the notice not read"
    assert said.lines == [
        "prompt(ssh, secret=True): Enter passphrase for key '/home/u/.ssh/id_ed25519':",
        "prompt done",
        "prompt(ssh, secret=False): Allow use of key? (yes/no)",
        "prompt done",
        f"warn: ssh: {FIDO_NOTICE}",
        "prompt(ssh, secret=True): user@host's password:",
        "prompt done",
    ]
    assert list(tmp_path.iterdir()) == [], "the socket and the script are removed"


def test_askpass_without_tunnelauth_listening_refuses(tmp_path: Path) -> None:
    async def main() -> tuple[int, bytes]:
        server = AskpassServer(str(tmp_path), _ssh_asker(Said(), Typed("x")))  # type: ignore[arg-type]
        env = await server.start({})
        script = Path(env["SSH_ASKPASS"]).read_text()
        await server.close()
        kept = tmp_path / "askpass"
        kept.write_text(script)
        kept.chmod(0o700)
        return await _askpass(env, "Password: ", "")

    assert asyncio.run(main()) == (1, b"")


def _hostile_tree(root: Path, marker: Path) -> None:
    """Python files that write ``marker`` if imported: a package and stdlib look-alikes."""
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (root / "tunnelauth").mkdir(parents=True)
    for name in ("tunnelauth/__init__.py", "tunnelauth/askpass.py", "json.py", "socket.py"):
        (root / name).write_text(code)
    (root / "sitecustomize.py").write_text(code)
    (root / "usercustomize.py").write_text(code)


def test_askpass_runs_no_code_from_the_current_directory_or_python_variables(
    tmp_path: Path,
) -> None:
    # ssh starts askpass in the user's current directory with the user's environment: a
    # tunnelauth/ folder there, or PYTHONPATH/PYTHONSTARTUP/PYTHONHOME, must not receive the
    # password.
    marker = tmp_path / "marker"
    cwd, elsewhere = tmp_path / "cwd", tmp_path / "pythonpath"
    _hostile_tree(cwd, marker)
    _hostile_tree(elsewhere, marker)
    sockdir = tmp_path / "run"
    sockdir.mkdir()
    said, typed = Said(), Typed("the-password")
    hostile_env = {
        "PYTHONPATH": str(elsewhere),
        "PYTHONSTARTUP": str(elsewhere / "json.py"),
        "PYTHONUSERBASE": str(elsewhere),
        "PYTHONINSPECT": "1",
    }

    async def main() -> tuple[int, bytes]:
        server = AskpassServer(str(sockdir), _ssh_asker(said, typed))  # type: ignore[arg-type]
        env = await server.start({})
        try:
            return await _askpass({**env, **hostile_env}, "user@host's password: ", "", cwd=cwd)
        finally:
            await server.close()

    assert asyncio.run(main()) == (0, b"the-password\n")
    assert not marker.exists(), f"imported from the hostile tree: {marker.read_text()!r}"


def _in_a_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``fn`` on a worker thread; its result (or exception) lands in the list."""
    out: list[Any] = []

    def work() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


def test_a_worker_thread_asks_through_the_flow() -> None:
    asked: list[tuple[str, str]] = []

    async def ask(prompt: str, hint: str) -> str | None:
        asked.append((prompt, hint))
        return {"": "hunter2", "confirm": "maybe" if len(asked) < 3 else "yes"}[hint]

    async def main() -> list[Any]:
        prompter = Prompter()
        prompter.bind(ask, Environment())
        thread, out = _in_a_thread(
            lambda: (
                prompter.ask_blocking("Enter passphrase for key '/k': "),
                prompter.confirm_key_blocking("Are you sure (yes/no/[fingerprint])? ", "SHA256:x"),
            )
        )
        await asyncio.to_thread(thread.join, 30)
        assert not prompter.prompting
        return out

    assert asyncio.run(main()) == [("hunter2", True)]
    assert asked == [
        ("Enter passphrase for key '/k': ", ""),
        ("Are you sure (yes/no/[fingerprint])? ", "confirm"),
        (RETRY, "confirm"),
    ]


def test_closing_ends_a_question_a_thread_waits_for() -> None:
    async def main() -> list[Any]:
        started = asyncio.Event()

        async def ask(prompt: str, hint: str) -> str | None:
            started.set()
            await asyncio.Event().wait()  # the user never answers
            return None

        prompter = Prompter()
        prompter.bind(ask, Environment())
        thread, out = _in_a_thread(lambda: prompter.ask_blocking("Password: "))
        await asyncio.wait_for(started.wait(), 30)
        assert prompter.prompting, "the connect deadline must pause while the user types"
        prompter.cancel()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive()
        return out

    (outcome,) = asyncio.run(main())
    assert isinstance(outcome, BaseException), outcome


def test_on_the_loop_thread_the_terminal_is_asked_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting on the loop from its own thread would hang forever: ask the terminal instead."""
    monkeypatch.setattr("getpass.getpass", lambda prompt: f"typed for {prompt}")

    async def never(prompt: str, hint: str) -> str | None:
        raise AssertionError("the flow's asker cannot answer from its own loop thread")

    async def main() -> str | None:
        prompter = Prompter()
        prompter.bind(never, Environment())
        return prompter.ask_blocking("Password: ")

    assert asyncio.run(main()) == "typed for Password: "


def test_ssh_runs_with_the_commands_variables_and_the_askpass_ones(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, str], dict[str, str]]:
        server = AskpassServer(str(tmp_path), _ssh_asker(Said(), Typed()))  # type: ignore[arg-type]
        try:
            with_display = await server.start({"PATH": "/opt/bin", "DISPLAY": ":7"})
        finally:
            await server.close()
        try:
            without = await server.start({"PATH": "/opt/bin"})
        finally:
            await server.close()
        return with_display, without

    with_display, without = asyncio.run(main())
    assert with_display["PATH"] == without["PATH"] == "/opt/bin"
    assert with_display["SSH_ASKPASS_REQUIRE"] == "force"
    assert with_display["SSH_ASKPASS"] == str(tmp_path / "askpass")
    assert with_display["DISPLAY"] == ":7", "the user's display is kept"
    assert without["DISPLAY"] == ":tunnelauth", "older ssh wants a display to use askpass"


def test_without_a_flow_a_shown_answer_is_read_from_the_stdin_the_command_found() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, "yés\nthe next line\n".encode())

        async def main() -> tuple[str | None, str | None]:
            prompter = Prompter()
            prompter.bind(None, Environment(stdin_tty=True, stdin_fd=read_end))
            first = await prompter.ask("Verification code (shown): ", CONFIRM)
            return first, prompter.ask_blocking("Again: ", CONFIRM)

        assert asyncio.run(main()) == ("yés", "the next line")
        os.close(write_end)
        write_end = -1
        ended = Prompter()
        ended.bind(None, Environment(stdin_fd=read_end))
        assert ended.ask_blocking("At the end: ", CONFIRM) is None, "end of input: no answer"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
