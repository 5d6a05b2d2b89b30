"""Remote text outside the login's PTY stream, on the bed: --verify/--replace output, doctor,
the relay's stderr; and the short commands' bounds (a 50 MB listing, a hanging one).

The fake hermes' ``evil_aux`` mode puts OSC 52, OSC 8, CSI, an 8-bit CSI, rich link markup
and a bidi override into ``--version``, ``auth status``, ``auth list`` and ``auth remove``.
What the user sees must hold none of it raw, yet still show the plain words (and the markup
as the literal text it is).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.bed import leftovers
from tests.bed.netbed import Bed
from tests.e2e.helpers import tunnelauth
from tunnelauth.status import ExitStatus

# ESC, C1 (0x80-0x9f, 8-bit CSI/OSC/ST among them), other C0 controls, bidi controls.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MARKUP = "[link=https://evil.test]markup[/link]"


@pytest.fixture
def fresh(bed: Bed, no_leftovers: leftovers.Snapshot) -> Iterator[Bed]:
    """A clean fake hermes (empty store) and the nothing-left-behind check, remote included."""
    hermes_home = bed.home / ".hermes"
    shutil.rmtree(hermes_home / "fake-record", ignore_errors=True)
    (hermes_home / "auth.json").unlink(missing_ok=True)
    bed.reset_fake()
    bed.set_fake(spotify_client_id="tunnelauth-test-client")
    yield bed
    assert bed.remote_login_processes() == [], "a remote process survived the run"


def assert_plain(shown: str, *words: str) -> None:
    """No control, C1, OSC or hyperlink in what the user saw; ``words`` still visible."""
    assert not RAW.search(shown.replace("\n", "")), f"raw control in: {shown!r}"
    assert "\\u001b" not in shown and "\\u009b" not in shown, "an escape inside JSON"
    assert "cm0gLXJmIH4K" not in shown, "the OSC 52 clipboard payload was shown"
    assert "https://evil.test/" not in shown, "the OSC 8 target was shown"
    for word in words:
        assert word in shown, f"{word!r} is not visible in: {shown!r}"


def seed_pool(bed: Bed, provider: str, count: int) -> None:
    """Put ``count`` older credentials into the fake hermes' store (as earlier logins would)."""
    entries = [
        {"id": f"old{n}", "label": f"{provider}-old-{n}", "auth_type": "oauth"}
        for n in range(1, count + 1)
    ]
    store = {"version": 1, "providers": {}, "credential_pool": {provider: entries}}
    bed.write_user_file(bed.home / ".hermes" / "auth.json", json.dumps(store), mode=0o600)


def test_verify_and_replace_show_hostile_output_as_plain_text(
    fresh: Bed, tmp_path: Path, backend: str
) -> None:
    seed_pool(fresh, "xai-oauth", 1)
    fresh.set_fake(mode="evil_aux")
    result = tunnelauth(
        fresh, "xai", "remote", "--replace", "--verify", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.OK, result
    shown = result.stdout + result.stderr
    # `auth remove` failed with the hostile text; `auth status` said logged in with it.
    assert "replace incomplete: removing xai-oauth #1: Cannot remove: evil-start" in shown
    assert "verified: `hermes auth status xai-oauth`: xai-oauth: logged in evil-start" in shown
    assert_plain(shown, "osc52", "osc8", "csi", "c1", MARKUP, "bidi evil-end")


def test_json_events_carry_hostile_output_as_plain_text(fresh: Bed, tmp_path: Path) -> None:
    seed_pool(fresh, "xai-oauth", 1)
    fresh.set_fake(mode="evil_aux")
    result = tunnelauth(fresh, "xai", "remote", "--replace", "--verify", "--json", tmp=tmp_path)
    assert result.code == ExitStatus.OK, result
    events = [json.loads(line) for line in result.stdout.splitlines()]
    detail = next(e["detail"] for e in events if e["event"] == "verified")
    assert "evil-start" in detail and MARKUP in detail
    assert_plain(result.stdout + result.stderr, "evil-end")


def test_doctor_shows_a_hostile_version_line_as_plain_text(fresh: Bed, tmp_path: Path) -> None:
    fresh.set_fake(mode="evil_aux")
    table = tunnelauth(fresh, "doctor", "remote", tmp=tmp_path, env={"COLUMNS": "400"})
    assert table.code == ExitStatus.OK, table
    # Markup in a table cell is shown as written, not turned into a (hidden) link.
    assert_plain(table.stdout + table.stderr, "Hermes Agent v0.19.0 evil-start", MARKUP)
    report = tunnelauth(fresh, "doctor", "remote", "--json", tmp=tmp_path)
    assert report.code == ExitStatus.OK, report
    checks = {c["name"]: c for c in json.loads(report.stdout)["checks"]}
    assert "evil-start" in checks["hermes"]["detail"]
    assert_plain(report.stdout + report.stderr, MARKUP)


# Stands in for the remote's python: a relay run (its program mentions create_connection)
# fails with hostile stderr; everything else (hermes itself, the relay's probe) runs as usual.
EVIL_PYTHON = r"""#!/bin/sh
case "$2" in
  *create_connection*)
    printf 'relay-start \033]52;c;cm0gLXJmIH4K\007osc52 ' >&2
    printf '\033]8;;https://evil.test/\033\\osc8\033]8;;\033\\ \033[2Jcsi ' >&2
    printf '\2331mc1 [link=https://evil.test]markup[/link] relay-end\n' >&2
    exit 3 ;;
esac
exec /usr/bin/python3 "$@"
"""


@pytest.fixture
def evil_hermes(fresh: Bed) -> Iterator[str]:
    """A hermes whose shebang names a python that fails the relay with hostile stderr."""
    where = fresh.home / "evil-python"
    where.mkdir(exist_ok=True)
    shutil.chown(where, fresh.uid, fresh.gid)
    fresh.write_user_file(where / "python", EVIL_PYTHON, mode=0o755)
    hermes = Path(fresh.hermes_path).read_text().split("\n", 1)[1]
    fresh.write_user_file(where / "hermes", f"#!{where}/python\n{hermes}", mode=0o755)
    yield str(where / "hermes")
    shutil.rmtree(where, ignore_errors=True)


def test_relay_stderr_is_shown_as_plain_text(fresh: Bed, evil_hermes: str, tmp_path: Path) -> None:
    fresh.set_fake(timeout=5)
    result = tunnelauth(
        fresh, "spotify", "remote-nofwd", "--via", "relay", "--hermes", evil_hermes, tmp=tmp_path
    )
    assert result.code != ExitStatus.OK, result
    shown = result.stdout + result.stderr
    assert "the relay failed (exit 3): relay-start" in shown, shown
    assert_plain(shown, "osc52", "osc8", "csi", "c1", MARKUP, "relay-end")


def _peak_rss_of_run(run: threading.Event, peak: list[int]) -> None:
    """Sample the tunnelauth child of this test process until ``run`` is set."""
    me = psutil.Process()
    while not run.wait(0.05):
        for child in me.children():
            try:
                if "tunnelauth" in " ".join(child.cmdline()):
                    peak[0] = max(peak[0], child.memory_info().rss)
            except psutil.Error:
                continue


def test_a_50_mb_listing_is_cut_and_nothing_is_removed(fresh: Bed, tmp_path: Path) -> None:
    seed_pool(fresh, "xai-oauth", 1)
    fresh.set_fake(mode="huge_list")
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_peak_rss_of_run, args=(stop, peak), daemon=True)
    sampler.start()
    try:
        result = tunnelauth(fresh, "xai", "remote", "--replace", "--verify", tmp=tmp_path)
    finally:
        stop.set()
        sampler.join(10)
    assert result.code == ExitStatus.OK, result
    assert "`hermes auth list xai-oauth`: output cut after 64 KiB; nothing removed" in (
        result.stderr
    )
    assert len(result.stderr) < 64 * 1024, "the listing was echoed"
    assert 0 < peak[0] < 200 * 1024 * 1024, f"peak RSS {peak[0] / 2**20:.0f} MiB"
    labels = [e["label"] for e in _pool(fresh, "xai-oauth")]
    assert labels == ["xai-oauth-old-1", "xai-oauth-oauth-2"], "a cut listing removes nothing"


def test_a_hanging_listing_ends_at_the_deadline(fresh: Bed, tmp_path: Path, backend: str) -> None:
    fresh.set_fake(mode="hang_list")
    result = tunnelauth(
        fresh, "xai", "remote", "--replace", "--timeout", "25", tmp=tmp_path, backend=backend
    )
    assert result.code == ExitStatus.TIMED_OUT, result
    assert "did not finish within 25 s" in result.stderr
    record = fresh.fake_record("xai-oauth")
    assert record is not None and record["outcome"] == "ok", "the login itself had succeeded"


def _pool(bed: Bed, provider: str) -> list[dict[str, object]]:
    store = json.loads((bed.home / ".hermes" / "auth.json").read_text())
    return list(store["credential_pool"].get(provider, []))
