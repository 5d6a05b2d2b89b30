"""``--json``: one JSON object per line on stdout, a versioned event stream (docs/ci.md).

The JsonReporter implements the Reporter protocol and hands every call on to an optional
inner reporter (the human one, on stderr), so stdout carries nothing but events. Every string
passes through ``redact`` whatever ``--show-secrets`` says: events are meant to be stored.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TextIO

from tunnelauth.report import Reporter, Stage
from tunnelauth.sanitize import redact, strip

SCHEMA_VERSION = 1

# Event name → the fields it always carries (besides ``v``, ``event``, ``time``).
EVENTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "connecting": frozenset({"host"}),
        "connected": frozenset({"host", "backend"}),
        "remote_started": frozenset({"command"}),
        "listening": frozenset({"port", "detail"}),
        "authorize_url": frozenset({"url", "host", "unusual_host"}),
        "browser_opened": frozenset({"url", "how"}),
        "device_code": frozenset({"url", "code"}),
        "remote_line": frozenset({"text"}),
        "prompt": frozenset({"text", "secret"}),
        "stage": frozenset({"stage", "detail"}),
        "warning": frozenset({"message"}),
        "replaced": frozenset({"ok", "removed", "kept", "detail"}),
        "verified": frozenset({"ok", "detail"}),
        "succeeded": frozenset({"exit_status", "message", "login"}),
        "failed": frozenset({"exit_status", "reason", "hint", "last_lines"}),
        "fleet_done": frozenset({"exit_status", "hosts"}),
    }
)
ENVELOPE = frozenset({"v", "event", "time"})

_STAGE_EVENTS = MappingProxyType(
    {
        Stage.CONNECTING: "connecting",
        Stage.RUNNING: "remote_started",
        Stage.LISTENING: "listening",
    }
)
_PORT = re.compile(r":(\d{1,5})\b")


def _clean(value: Any) -> Any:
    """Redact every string inside ``value`` (lists and dicts included), without controls.

    Remote text passed ``sanitize.untrusted`` already; stripping again here keeps any other
    string (a local port holder's command line, say) from carrying an 8-bit control, which
    JSON does not escape, to a terminal that shows the stream.
    """
    if isinstance(value, str):
        return redact(strip(value, keep_newlines=True))
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def validate(obj: Mapping[str, Any]) -> list[str]:
    """Problems with one decoded event against the schema (empty when it conforms)."""
    problems = [f"missing {name}" for name in ENVELOPE if name not in obj]
    if obj.get("v") != SCHEMA_VERSION:
        problems.append(f"v is {obj.get('v')!r}, expected {SCHEMA_VERSION}")
    name = obj.get("event")
    required = EVENTS.get(str(name))
    if required is None:
        return [*problems, f"unknown event {name!r}"]
    problems += [f"{name}: missing {field}" for field in sorted(required - obj.keys())]
    return problems


class JsonReporter:
    """Writes events as JSON lines and passes each call on to ``inner`` (human output)."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        inner: Reporter | None = None,
        host: str = "",
        fleet: bool = False,
    ) -> None:
        self.stream = stream or sys.stdout
        self.inner = inner
        self.host = host
        self.fleet = fleet  # one of several hosts: every event names it in "target"
        self.finished = False

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line now (flushed: a consumer reads it while the run goes on)."""
        obj = {"v": SCHEMA_VERSION, "event": event, "time": round(time.time(), 3)}
        if self.fleet:
            obj["target"] = self.host  # "host" is taken: authorize_url names the page's host
        obj.update(_clean(fields))
        self.stream.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.stream.flush()

    # -- Reporter ------------------------------------------------------------------------

    def stage(self, stage: Stage, detail: str = "") -> None:
        """Stages with their own event name become that event; the rest a ``stage`` event."""
        if stage is Stage.CONNECTING:
            self.host = self.host if self.fleet else (detail or self.host)
            self.emit("connecting", host=self.host)
        elif stage is Stage.CONNECTED:
            self.emit("connected", host=self.host, backend=detail)
        elif stage is Stage.RUNNING:
            self.emit("remote_started", command=detail)
        elif stage is Stage.LISTENING:
            found = _PORT.search(detail)
            self.emit("listening", port=int(found.group(1)) if found else None, detail=detail)
        else:
            self.emit("stage", stage=stage.name.lower(), detail=detail)
        if self.inner is not None:
            self.inner.stage(stage, detail)

    def remote_line(self, text: str) -> None:
        """Every remote line (already sanitized by the watcher; redacted again here)."""
        self.emit("remote_line", text=text)
        if self.inner is not None:
            self.inner.remote_line(text)

    def info(self, message: str) -> None:
        """Human-only detail."""
        if self.inner is not None:
            self.inner.info(message)

    def debug(self, message: str) -> None:
        """Human-only detail."""
        if self.inner is not None:
            self.inner.debug(message)

    def warn(self, message: str) -> None:
        """A ``warning`` event."""
        self.emit("warning", message=message)
        if self.inner is not None:
            self.inner.warn(message)

    def open_url(self, url: str, host: str, how: str, *, unusual_host: bool) -> None:
        """``authorize_url``, then ``browser_opened`` unless the URL was only printed."""
        self.emit("authorize_url", url=url, host=host, unusual_host=unusual_host, how=how)
        if how != "printed":
            self.emit("browser_opened", url=url, how=how)
        if self.inner is not None:
            self.inner.open_url(url, host, how, unusual_host=unusual_host)

    def device_code(self, url: str, code: str | None) -> None:
        """The user code is meant to be shown to a person, so it is part of the event."""
        self.emit("device_code", url=url, code=code)
        if self.inner is not None:
            self.inner.device_code(url, code)

    def prompt(self, text: str, secret: bool, *, origin: str = "remote") -> None:
        """The remote (or ssh) waits for a line (interactive runs only: batch runs fail)."""
        self.emit("prompt", text=text, secret=secret)
        if self.inner is not None:
            self.inner.prompt(text, secret, origin=origin)

    def prompt_done(self) -> None:
        """Human-only."""
        if self.inner is not None:
            self.inner.prompt_done()

    def verified(self, ok: bool, detail: str) -> None:
        """The result of ``--verify``."""
        self.emit("verified", ok=ok, detail=detail)
        if self.inner is not None:
            self.inner.verified(ok, detail)

    def replaced(self, ok: bool, removed: int, kept: int, detail: str) -> None:
        """The result of ``--replace``."""
        self.emit("replaced", ok=ok, removed=removed, kept=kept, detail=detail)
        if self.inner is not None:
            self.inner.replaced(ok, removed, kept, detail)

    def finish(
        self,
        ok: bool,
        message: str,
        hint: str | None,
        last_lines: list[str],
        *,
        exit_status: int = 0,
        login: str | None = None,
    ) -> None:
        """The last event: ``succeeded`` (with the login flow seen) or ``failed``."""
        if not self.finished:
            self.finished = True
            if ok:
                self.emit(
                    "succeeded", exit_status=exit_status, message=message, login=login or "none"
                )
            else:
                self.emit(
                    "failed",
                    exit_status=exit_status,
                    reason=message,
                    hint=hint,
                    last_lines=list(last_lines),
                )
        if self.inner is not None:
            self.inner.finish(ok, message, hint, last_lines, exit_status=exit_status, login=login)

    def close(self) -> None:
        """Close the inner reporter."""
        if self.inner is not None:
            self.inner.close()
