"""What crashed runs leave behind, found by bakery's own labels, and removed. Plain Python, no Prefect.

A run labels everything it creates (``bakery.run-id``/``bakery.expires-at`` on Docker containers,
``bakery:run-id``/``bakery:expires-at``/``ManagedBy=bakery`` on AWS resources). After a SIGKILL no hook
runs, so the sweep finds those past their ``expires-at`` (or older than ``--max-age`` when one is given)
and removes them. Packer's own temporary AWS resources (``packer_<time-ordered uuid>`` key pairs and
security groups, builder instances) are removed when older than the max age (default 24 h). Per-run key
directories under the private keys root (``tasks.request.keys_root``) past their ``expires-at`` (or, without one,
older than the max age) go too, unless their run still has
live resources. Nothing without these marks is ever listed, let alone removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tasks.errors import JobFailed, UsageError
from tasks.request import keys_root, private_dir
from tasks.targets.base import Leftover, Source, iso, key, parse_time, short_id

DEFAULT_MAX_AGE = timedelta(hours=24)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    now: datetime
    max_age: timedelta | None = None
    default_max_age: timedelta = DEFAULT_MAX_AGE

    @property
    def age_limit(self) -> timedelta:
        return self.default_max_age if self.max_age is None else self.max_age


class SweepFailed(JobFailed):
    """Some removals failed (exit 1); ``result`` is the full report."""


def _age(delta: timedelta) -> str:
    """``2d3h``, ``1h20m``, ``5m12s``, ``42s``."""
    seconds = int(abs(delta.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d", True), (hours, "h", True), (minutes, "m", not days), (seconds, "s", not (days or hours))]
    return "".join(f"{n}{unit}" for n, unit, shown in parts if n and shown) or "0s"


def decide(item: Leftover, rules: Rules) -> Leftover:
    """Mark ``item`` for removal or not, with the reason either way."""
    now = rules.now
    age = now - item.created if item.created else None
    if item.labelled:
        if item.expires_at and item.expires_at <= now:
            return replace(item, remove=True, reason=f"expired {_age(now - item.expires_at)} ago")
        if rules.max_age is not None and age is not None and age > rules.max_age:
            return replace(item, remove=True, reason=f"older than --max-age {_age(rules.max_age)} ({_age(age)})")
        if item.expires_at:
            return replace(item, remove=False, reason=f"expires in {_age(item.expires_at - now)}")
        if age is not None and age > rules.default_max_age:
            return replace(item, remove=True, reason=f"no expiry label; older than {_age(rules.default_max_age)}")
        if age is None:
            return replace(item, remove=False, reason="no expiry label and no creation time")
        return replace(item, remove=False, reason=f"no expiry label; only {_age(age)} old")
    if age is None:
        return replace(item, remove=False, reason="creation time unknown")
    if age > rules.age_limit:
        return replace(item, remove=True, reason=f"{_age(age)} old, older than {_age(rules.age_limit)}")
    return replace(item, remove=False, reason=f"only {_age(age)} old (limit {_age(rules.age_limit)})")


def live_runs(leftovers: Iterable[Leftover]) -> set[str]:
    """Runs that still have resources the sweep keeps: their key directories stay too."""
    return {i.run_id for i in leftovers if i.run_id and not i.remove}


# --- per-run key directories -----------------------------------------------------------------------------


def find_key_dirs(rules: Rules, keep_runs: set[str], root: Path | None = None) -> list[Leftover]:
    """Per-run key directories below the private keys root (ours, never symlinks) and whether they are
    stale: past the ``expires-at`` their run wrote (a key kept with a kept instance), else by age. A root
    that fails the private-directory check is not looked into at all (logged)."""
    root = root or keys_root()
    if not root.exists():
        return []
    try:
        private_dir(root, create=False)
    except UsageError as exc:
        log.warning("sweep: not looking into %s: %s", root, exc)
        return []
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(root.iterdir()):
            info = entry.lstat()
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            created = datetime.fromtimestamp(info.st_mtime, UTC)
            expires = _key_dir_expiry(entry)
            item = Leftover(
                "local", "key-dir", str(entry), entry.name, entry.name, created, expires, labelled=expires is not None
            )
            item = decide(item, rules)
            if item.remove and entry.name in keep_runs:
                item = replace(item, remove=False, reason="its run still has live resources")
            found.append(item)
    return found


def _key_dir_expiry(directory: Path) -> datetime | None:
    """The ``expires-at`` a run wrote into its key directory (a regular file, never followed as a link)."""
    path = directory / "expires-at"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as handle:
        return parse_time(handle.read(100))


def remove_key_dirs(leftovers: Sequence[Leftover]) -> dict[str, str]:
    results = {}
    for item in leftovers:
        path = Path(item.id)
        if not path.exists():
            results[key(item)] = "already gone"
            continue
        try:
            if path.is_symlink():  # replaced by a link since it was found: never followed
                raise OSError(f"{path} is now a symlink; left alone")
            shutil.rmtree(path)
        except OSError as exc:
            results[key(item)] = f"failed: {exc}"
        else:
            results[key(item)] = "removed"
    return results


# --- the whole sweep -----------------------------------------------------------------------------------------


@dataclass
class SweepPlan:
    rules: Rules
    leftovers: list[Leftover]

    @property
    def doomed(self) -> list[Leftover]:
        return [i for i in self.leftovers if i.remove]


def plan_sweep(sources: Sequence[Source], rules: Rules, key_root: Path | None = None) -> SweepPlan:
    found: list[Leftover] = []
    for source in sources:
        found += source.protect([decide(item, rules) for item in source.find()])
    found += find_key_dirs(rules, live_runs(found), key_root)
    return SweepPlan(rules, found)


def execute_sweep(plan: SweepPlan, sources: Sequence[Source]) -> dict[str, str]:
    results: dict[str, str] = {}
    for source in sources:
        mine = [i for i in plan.doomed if i.provider == source.provider]
        if mine:
            results.update(source.remove(mine))
    results.update(remove_key_dirs([i for i in plan.doomed if i.provider == "local"]))
    return results


def rows(plan: SweepPlan, results: dict[str, str] | None = None) -> list[dict[str, str]]:
    table = []
    for item in plan.leftovers:
        row = {
            "provider": item.provider,
            "kind": item.kind,
            "id": item.id,
            "name": item.name,
            "run_id": item.run_id,
            "created": iso(item.created),
            "expires_at": iso(item.expires_at),
            "decision": "remove" if item.remove else "keep",
            "reason": item.reason,
        }
        if results is not None:
            row["result"] = results.get(key(item), "")
        table.append(row)
    return table


def document(plan: SweepPlan, target: str, results: dict[str, str] | None = None) -> dict[str, Any]:
    failures = [f"{k}: {v}" for k, v in (results or {}).items() if v.startswith("failed")]
    removed = sum(v in ("removed", "already gone") for v in (results or {}).values())
    doomed = len(plan.doomed)
    if results is None:
        line = f"sweep {target}: {len(plan.leftovers)} labelled, would remove {doomed}"
    else:
        line = f"sweep {target}: {len(plan.leftovers)} labelled, removed {removed}/{doomed}"
        line += f", {len(failures)} FAILED" if failures else ""
    return {
        "target": target,
        "applied": results is not None,
        "max_age": str(plan.rules.max_age) if plan.rules.max_age else None,
        "summary": line,
        "resources": rows(plan, results),
        "failures": failures,
    }


def render(doc: dict[str, Any]) -> str:
    from tasks.retention import format_table

    columns = ["provider", "kind", "id", "name", "run_id", "expires_at", "decision", "reason"]
    if doc["applied"]:
        columns.insert(-1, "result")
    head = "Sweep" if doc["applied"] else "Sweep plan (dry run; --apply removes)"
    shown = [{**r, "id": short_id(r["id"])} for r in doc["resources"]]
    table = format_table(shown, columns) or "(nothing labelled by bakery)"
    notes = "".join(f"\n{note}" for note in doc.get("notes") or [])
    return f"{head}: target {doc['target']}\n\n{table}\n\n{doc['summary']}{notes}"
