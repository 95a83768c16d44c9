"""The records of a verification: a parsed resource, one checked attribute, the whole result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.verify.inventory import Inventory
from tasks.verify.matchers import Matcher


@dataclass(frozen=True)
class Resource:
    """One entry of a spec, e.g. ``service: {nginx: {enabled: true}}``; ``target`` is what is looked up
    on the host (the key, or goss's ``name``/``path``/``exec``/... override)."""

    type: str
    id: str
    target: str
    checks: dict[str, Matcher]
    options: dict[str, Any] = field(default_factory=dict)
    skip: bool = False
    title: str = ""
    meta: Any = None
    source: str = ""


@dataclass(frozen=True)
class Unavailable:
    """A fact the host could not give (no such file, permission denied, timed out, ...)."""

    reason: str

    def __str__(self) -> str:
        return f"<{self.reason}>"


@dataclass(frozen=True)
class Fact:
    """A found value with a word of context for the report, e.g. ``False`` with ``"masked"``;
    ``shown`` replaces the value in reports (file contents are summarised, never copied into them)."""

    value: Any
    note: str = ""
    shown: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """One checked attribute: the unit of the report and of a JUnit ``<testcase>``."""

    resource_type: str
    resource_id: str
    attribute: str
    expected: str
    found: str
    ok: bool
    skipped: bool = False
    message: str = ""
    duration: float = 0.0
    title: str = ""
    meta: Any = None

    @property
    def name(self) -> str:
        return f"{self.resource_id} {self.attribute}"

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.ok else "FAIL"


@dataclass(frozen=True)
class VerifyResult:
    """Every checked attribute of a spec on one host, and the host's installed packages
    (``inventory``: ``None`` when the host has no dpkg, rpm or apk, or the facts could not be gathered)."""

    spec: str
    host: str
    checks: tuple[CheckResult, ...]
    duration: float
    remote_user: str = ""
    notes: tuple[str, ...] = ()
    inventory: Inventory | None = None

    @property
    def passed(self) -> bool:
        return all(c.ok or c.skipped for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok and not c.skipped]

    @property
    def counts(self) -> dict[str, int]:
        skipped = sum(c.skipped for c in self.checks)
        failed = len(self.failures)
        return {
            "total": len(self.checks),
            "passed": len(self.checks) - failed - skipped,
            "failed": failed,
            "skipped": skipped,
        }
