"""asyncssh's library lookups, made on a thread ahead of its import."""

from __future__ import annotations

import ctypes.util
import os

from fresh_python import THREAD_IMPORTS, run_json

from tunnelauth.cmdline import build_settings, parse_login
from tunnelauth.environment import Environment
from tunnelauth.transports import native_libs
from tunnelauth.transports.choice import choose
from tunnelauth.transports.headstart import plan


def test_the_answers_are_the_real_functions_and_other_names_still_reach_it() -> None:
    real = ctypes.util.find_library
    lookups = native_libs.prewarm()
    assert lookups.done.wait(60)
    assert lookups.found, "nothing was looked up"
    for name, answer in lookups.found.items():
        assert answer == real(name), name
    with native_libs.answered(lookups):
        assert ctypes.util.find_library is not real
        for name, answer in lookups.found.items():
            assert ctypes.util.find_library(name) == answer
        assert ctypes.util.find_library("c") == real("c")  # not looked up ahead
    assert ctypes.util.find_library is real


def test_without_lookups_ahead_nothing_is_replaced() -> None:
    real = ctypes.util.find_library
    with native_libs.answered(None):
        assert ctypes.util.find_library is real


def test_asyncssh_imports_without_a_lookup_and_with_the_same_algorithms() -> None:
    """The import spawns no ldconfig/gcc; its key exchange and MAC lists are as without."""
    report = (
        "import json\n"
        "from asyncssh.kex import get_default_kex_algs\n"
        "from asyncssh.mac import get_default_mac_algs\n"
        "print(json.dumps({'kex': [a.decode() for a in get_default_kex_algs()],\n"
        "                  'mac': [a.decode() for a in get_default_mac_algs()],\n"
        "                  'spawned': spawned}))\n"
    )
    ahead = run_json(
        "import subprocess\n"
        "from tunnelauth.transports import native_libs\n"
        "lookups = native_libs.prewarm()\n"
        "assert lookups.done.wait(60)\n"
        "spawned = []\n"
        "real_init = subprocess.Popen.__init__\n"
        "def init(self, args, *a, **k):\n"
        "    spawned.append(str(args))\n"
        "    real_init(self, args, *a, **k)\n"
        "subprocess.Popen.__init__ = init\n"
        "with native_libs.answered(lookups):\n"
        "    import asyncssh\n" + report
    )
    plain = run_json("spawned = []\nimport asyncssh\n" + report)
    assert ahead["spawned"] == []
    assert ahead["kex"] == plain["kex"] and ahead["mac"] == plain["mac"]
    assert any("umac" in name for name in plain["mac"]), "libnettle was not found at all"


def test_the_thread_imports_nothing() -> None:
    """Two threads importing at once can deadlock: the worker must find everything loaded."""
    found = run_json(
        THREAD_IMPORTS + "from tunnelauth.transports import native_libs\n"
        "assert native_libs.prewarm().done.wait(60)\n"
        "print(json.dumps({'imported': seen}))\n"
    )
    assert found == {"imported": []}


def test_a_login_on_asyncssh_starts_the_lookups_ahead() -> None:
    """Interactive or batch, an asyncssh login starts them; an OpenSSH one does not."""
    # Interactive (a terminal, no CI): no master is started for openssh.
    env = Environment(variables={"TUNNELAUTH_CONFIG": os.devnull}, stdin_tty=True)
    for backend, wanted in (("openssh", False), ("asyncssh", True)):
        for batch in ((), ("--batch",)):
            parsed = parse_login(["spotify", "user@host", "--backend", backend, *batch])
            assert parsed is not None
            name, options, run_command = parsed
            settings = build_settings(name, options, run_command=run_command, environment=env)
            assert plan(choose(settings), settings).lookups is wanted, (backend, batch)
