"""The paste-the-code flow (anthropic): the browser shows a code, the user types it in.

No tunnel is needed: the provider's page shows ``code#state`` and hermes reads it from its
``Authorization code:`` prompt. tunnelauth opens the page and relays the typed line only while
the prompt shows, without echoing it, and opens no listener on the laptop.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pexpect

from tests.bed.netbed import Bed
from tests.e2e.test_noforward import ListenSampler
from tunnelauth.status import ExitStatus


def test_anthropic_code_typed_by_the_user(fresh: Bed, tmp_path: Path) -> None:
    dom = tmp_path / "dom.html"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNNELAUTH_HOST")}
    env["TUNNELAUTH_CONFIG"] = os.devnull
    args = ["anthropic", "remote", "-F", str(fresh.ssh_config)]
    args += ["--browser-cmd", fresh.browser_cmd(dom)]
    with ListenSampler() as sampler:
        run = pexpect.spawn(
            "tunnelauth", args, env=env, encoding="utf-8", timeout=60, dimensions=(50, 200)
        )
        sampler.pid = run.pid
        run.expect("Authorization code")
        # The user reads the code off the provider's page (the bed's Chromium saved it).
        code_tag = re.compile(r"<code id=['\"]code['\"]>([^<]+)</code>")
        for _ in range(600):  # at most 60 s: the page is usually there within 2 s
            found = code_tag.search(dom.read_text() if dom.exists() else "")
            if found:
                break
            run.expect([pexpect.TIMEOUT], timeout=0.1)
        assert found is not None, "the browser never showed the code page"
        typed = found.group(1)
        run.sendline(typed)
        run.expect(pexpect.EOF)
        run.close()
    shown = run.before or ""
    assert run.exitstatus == ExitStatus.OK, shown
    assert "Added anthropic OAuth credential" in shown
    assert typed not in shown and typed.split("#")[0] not in shown, "the code was echoed"
    assert sampler.seen == set(), f"a paste-the-code flow needs no listener: {sampler.seen}"
    record = fresh.fake_record("anthropic")
    assert record is not None and record["outcome"] == "ok" and record["state_ok"]
