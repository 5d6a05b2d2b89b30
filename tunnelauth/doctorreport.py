"""``doctor``'s report: one row per check (verdict, what was found, the fix) and the verdict.

Every row's text is plain (``sanitize.untrusted``) before the table or ``--json`` sees it: the
details quote the remote and ssh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunnelauth.sanitize import untrusted
from tunnelauth.status import ExitStatus

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
DETAIL_LIMIT = 1000  # characters of one cell (found / fix) shown


@dataclass(frozen=True)
class Check:
    """One row: what was checked, the verdict, what was found, and how to fix a problem."""

    name: str
    status: str
    detail: str
    fix: str = ""
    code: ExitStatus = ExitStatus.OK  # the exit status a failure of this check maps to

    def __post_init__(self) -> None:
        # Details quote the remote (hermes' version line, the server's refusal, errors):
        # every row is plain text before the table or --json sees it.
        for name in ("name", "detail", "fix"):
            text = untrusted(getattr(self, name), limit=DETAIL_LIMIT)
            object.__setattr__(self, name, text)


@dataclass
class Report:
    """Every check for one host, in order."""

    host: str
    checks: list[Check] = field(default_factory=list)

    @property
    def exit_status(self) -> ExitStatus:
        """The status of the first failing check (a login could not work), else OK."""
        return next((c.code for c in self.checks if c.status == FAIL), ExitStatus.OK)

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``doctor --json`` prints."""
        return {
            "v": 1,
            "kind": "doctor",
            "host": self.host,
            "ok": self.exit_status == ExitStatus.OK,
            "exit_status": int(self.exit_status),
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix}
                for c in self.checks
            ],
        }
