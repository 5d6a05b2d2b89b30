"""The docs stay true to the code: every option and exit code, no stale claims, no local paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunnelauth.cmdline import OPTION_SPECS
from tunnelauth.status import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, ROOT / "tests" / "fakes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A path that exists only on the machine a doc was written on.
LOCAL_PATH = re.compile(r"(?<![\w.~-])/(?:work|root)(?:/|\b)|/tmp/pytest")


def table_after(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row is ``header``."""
    lines = text.splitlines()
    start = lines.index(header) + 2  # skip the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_readme_options_table_lists_every_option() -> None:
    cells = " ".join(row[0] for row in table_after(README.read_text(), "| option | meaning |"))
    listed = set(re.findall(r"--[a-z][a-z-]*", cells))
    wanted = {flag for _, flags, _, _, _ in OPTION_SPECS for flag in flags if flag.startswith("--")}
    assert sorted(wanted - listed) == []


def test_readme_lists_every_exit_status() -> None:
    rows = table_after(README.read_text(), "| code | meaning |")
    assert [int(row[0]) for row in rows] == [int(status) for status in ExitStatus]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_names_no_machine_specific_path(doc: Path) -> None:
    found = [
        f"{doc.name}:{number}: {line.strip()}"
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        if LOCAL_PATH.search(line)
    ]
    assert found == []


def test_performance_doc_is_a_short_reference() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    # The blocks scripts/bench writes (single-host rows, fleet rows) are most of it.
    prose = re.sub(r"<!-- bench(-fleet)?:begin.*?<!-- bench(-fleet)?:end -->", "", text, flags=re.S)
    assert len(prose.split()) < 450
    assert len(text.split()) < 1500


@pytest.mark.parametrize(
    "doc", [*DOCS, ROOT / "scripts" / "ci-reauth"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_doc_denies_the_port_lock(doc: Path) -> None:
    text = " ".join(doc.read_text().split()).lower()
    assert "no per-port lock" not in text


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(unit|e2e)/(test_\w+\.py)", text))
    assert len(named) > 15
    for folder, module in named:
        assert (ROOT / "tests" / folder / module).is_file(), f"{folder}/{module}"
    sources = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = [n for n in set(re.findall(r"::(test_\w+)", text)) if f"def {n}(" not in sources]
    assert missing == []
