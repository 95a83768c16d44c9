"""Image retention as a pure function: what exists and what uses it in, a plan that explains itself out.

Nothing here talks to a cloud or imports Prefect. A *store* (``tasks/targets/aws/images.py`` for AMIs,
``tasks/targets/docker/images.py`` for Docker images) lists image records and their usage, and carries
out deletions; :func:`plan_retention` decides, :func:`execute` deletes with a bounded number of workers.

Per family, an image is kept when any of these holds (every reason that holds is reported):

* it is among the newest ``keep`` images of its family (by creation time);
* its ``status`` is ``production``;
* it is the family's current ``staging`` image (the newest with that status) or its rollback target
  (the newest ``superseded`` image), so a soak and ``bake rollback`` keep working;
* something uses it: an instance in any state but terminated, any version of any launch template, an
  Auto Scaling group or launch configuration (AWS), a container in any state (Docker);
* the store says so (deregistration protection on an AMI, the ``latest`` tag on a Docker image);
* it is not in a state that may be deleted (``pending``, ``transient``).

Images whose ``ManagedBy`` is missing (or names another tool) are never touched, nor are images whose
family cannot be told, nor images of other families. Without a family named, only families bakery itself
built are covered (an image whose own name equals the family marker bakery set at build time, which a
child image cannot inherit by accident: ``ImageRecord.foreign``) or that ``deployments/families.yaml``
lists; ``ManagedBy=packer`` alone is what any Packer pipeline may set, so it is not enough.

Public or shared images (launch permissions for other accounts) are kept (reason ``shared``). Just before
the deletions the store reads the images again, a batch at a time (:meth:`ImageStore.recheck`, batches of
``RECHECK_BATCH``, each read right before its own deletions): one promoted, launched or shared since the plan
was made is skipped with that reason, and so is one that could not be read again. A snapshot of a deleted
image is deleted only when no remaining image, in this family or any other, managed or not, still references it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from tasks.errors import JobFailed, UsageError
from tasks.targets.base import (
    DELETE_WORKERS,
    NOT_REREAD,
    ImageRecord,
    ImageStore,
    Usage,
    bounded_map,
    iso,
    one_line,
)
from tasks.targets.base import MANAGED_BY_VALUES as MANAGED_BY_VALUES
from tasks.targets.base import family_of as family_of
from tasks.targets.base import is_managed as is_managed
from tasks.targets.registry import open_store as open_store  # flows/retention.py and the CLI open stores here

DEFAULT_KEEP = 5
# AMI states an image may be deleted in; ``pending`` and ``transient`` images are still being made.
DELETABLE_STATES = frozenset({"available", "disabled", "failed", "error", "invalid"})

Action = Literal["keep", "delete", "skip"]


@dataclass(frozen=True)
class Decision:
    image: ImageRecord
    action: Action
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class SnapshotDecision:
    snapshot_id: str
    delete: bool
    images: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Plan:
    target: str
    keep: int
    families: tuple[str, ...]
    decisions: tuple[Decision, ...]
    snapshots: tuple[SnapshotDecision, ...]

    @property
    def deletions(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "delete"]

    def of_family(self, family: str) -> list[Decision]:
        return [d for d in self.decisions if d.image.family == family]

    def snapshots_of(self, decisions: Iterable[Decision]) -> list[SnapshotDecision]:
        refs = {d.image.ref for d in decisions}
        return [s for s in self.snapshots if refs.intersection(s.images)]


@dataclass
class Outcome:
    """What happened to each planned deletion: ``deleted``, ``already gone``, ``failed: ...``, ``kept: ...``."""

    images: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, str] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)  # ref → why its re-read kept it (``settled``)

    @property
    def failures(self) -> list[str]:
        return [f"{ref}: {r}" for ref, r in {**self.images, **self.snapshots}.items() if r.startswith("failed")]


class RetentionFailed(JobFailed):
    """Some deletions failed (exit 1); ``result`` is the full report, printed with ``--json``."""


# --- inputs ----------------------------------------------------------------------------------------------


def check_keep(value: int | str) -> int:
    """``--keep`` is a whole number of at least 1: keeping none would delete production's neighbours too."""
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise UsageError(f"--keep {value!r}: expected a whole number of images to keep per family, at least 1")
    return int(text)


# --- planning ----------------------------------------------------------------------------------------------


def plan_retention(
    images: Sequence[ImageRecord],
    usage: Usage,
    keep: int = DEFAULT_KEEP,
    families: Sequence[str] | None = None,
    target: str = "",
    listed: Collection[str] = (),
) -> Plan:
    """Decide, per family in scope, which images stay and which go, and what happens to their snapshots.

    ``images`` must be every image the store has (not only the families in scope): a snapshot is only
    deleted when none of them still references it.

    Args:
        families: the families named (``--family``): every managed image of theirs is covered.
        listed: families ``deployments/families.yaml`` lists; without ``families``, the scope is these and
            the families bakery built itself (an image without ``foreign``).
    """
    keep = check_keep(keep)
    managed = [i for i in images if i.managed and i.family is not None]
    named = set(families or ())
    if named:
        scope = sorted(named)
        covered = set(scope)
    else:
        built = {i.family for i in managed if not i.foreign and i.family is not None}
        present = {i.family for i in managed if i.family is not None}
        scope = sorted(built | (set(listed) & present))
        covered = set(listed)  # listed families: every managed image; built ones: only bakery's own builds
    decisions: list[Decision] = []
    for family in scope:
        members = [i for i in managed if i.family == family and (family in covered or not i.foreign)]
        members.sort(key=lambda i: (i.created, i.version, i.ref), reverse=True)
        decisions.extend(_decide_family(members, usage, keep))
        decisions.extend(_lookalikes(images, family, scope))
        decisions.extend(
            Decision(i, "skip", (f"not built by bakery ({i.foreign}); only with --family {family}",))
            for i in managed
            if i.family == family and i not in members
        )
    if not named:
        decisions.extend(
            Decision(i, "skip", (f"not built by bakery ({i.foreign}); only with --family {i.family}",))
            for i in managed
            if i.family not in scope
        )
    deleted = {d.image.ref for d in decisions if d.action == "delete"}
    return Plan(
        target=target,
        keep=keep,
        families=tuple(scope),
        decisions=tuple(decisions),
        snapshots=tuple(_decide_snapshots(images, deleted)),
    )


Recheck = Callable[[Sequence[ImageRecord]], Mapping[str, Sequence[str]]]
"""``ImageStore.recheck``: a batch of images read again, ref → the reasons each must stay after all."""

# Images read again at once (``ImageStore.recheck``): one DescribeImages and one DescribeInstances per batch
# on AWS; each batch is read right before its own deletions, so the window between read and delete stays short.
RECHECK_BATCH = 50


def confirm(plan: Plan, recheck: Recheck) -> Plan:
    """The plan with each deletion read again (``ImageStore.recheck``): one that must stay after all (shared,
    promoted or launched meanwhile) becomes a ``keep`` with those reasons, and its snapshots stay.

    For the dry run: ``execute`` reads every image again anyway, just before deleting it, and
    :func:`settled` puts what it kept into the plan, so an applied run need not (and does not) confirm too.
    """
    doomed = [d.image for d in plan.deletions]
    return _kept_after_all(plan, recheck_all(recheck, doomed))


def settled(plan: Plan, outcome: Outcome) -> Plan:
    """The plan as carried out: each deletion ``execute`` skipped because its re-read found a reason to keep
    it (``Outcome.changed``) is a ``keep`` with those reasons, as :func:`confirm` would have made it."""
    return _kept_after_all(plan, outcome.changed)


def _kept_after_all(plan: Plan, vetoes: Mapping[str, Sequence[str]]) -> Plan:
    doomed = {d.image.ref for d in plan.deletions}
    kept = {ref for ref, reasons in vetoes.items() if reasons and ref in doomed}
    decisions = tuple(
        Decision(d.image, "keep", tuple(vetoes[d.image.ref])) if d.image.ref in kept and d.action == "delete" else d
        for d in plan.decisions
    )
    snapshots = tuple(
        SnapshotDecision(s.snapshot_id, False, s.images, f"still used by {', '.join(sorted(kept & set(s.images)))}")
        if s.delete and kept & set(s.images)
        else s
        for s in plan.snapshots
    )
    return replace(plan, decisions=decisions, snapshots=snapshots)


def recheck_all(recheck: Recheck, images: Sequence[ImageRecord], batch: int = RECHECK_BATCH) -> dict[str, list[str]]:
    """``recheck`` over ``images`` in batches of ``batch``: ref → reasons to keep it after all. A batch that
    cannot be read again stays whole, and an image the store gave no answer for stays (that reason)."""
    reasons: dict[str, list[str]] = {}
    for start in range(0, len(images), batch):
        reasons.update(recheck_batch(recheck, images[start : start + batch]))
    return reasons


def recheck_batch(recheck: Recheck, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
    """One ``recheck`` call, made safe: any error keeps every image of the batch, with that reason."""
    if not images:
        return {}
    try:
        found = recheck(images)
    except Exception as exc:
        return {image.ref: [f"{NOT_REREAD}: {one_line(exc)}"] for image in images}
    return {image.ref: list(found.get(image.ref, [f"{NOT_REREAD}: no answer for it"])) for image in images}


def _decide_family(members: list[ImageRecord], usage: Usage, keep: int) -> list[Decision]:
    current_staging = _newest_in_stage(members, "staging")
    rollback_target = _newest_in_stage(members, "superseded")
    decisions = []
    for rank, image in enumerate(members, start=1):
        reasons: list[str] = []
        if rank <= keep:
            reasons.append(f"newest {keep} (#{rank})")
        if image.stage == "production":
            reasons.append("status production")
        if image.ref == current_staging:
            reasons.append("current staging image")
        if image.ref == rollback_target:
            reasons.append("rollback target (newest superseded)")
        reasons.extend(f"in use: {use}" for use in usage.get(image.image_id, ()))
        reasons.extend(image.pins)
        if image.state not in DELETABLE_STATES:
            reasons.append(f"state {image.state}")
        if reasons:
            decisions.append(Decision(image, "keep", tuple(reasons)))
        else:
            why = f"older than the newest {keep}; not production, current staging or rollback target; not in use"
            decisions.append(Decision(image, "delete", (why,)))
    return decisions


def _newest_in_stage(members: list[ImageRecord], stage: str) -> str | None:
    """The image promotion would pick: newest ``stage_since``, then newest creation (``tasks/promotion``)."""
    epoch = datetime.min.replace(tzinfo=UTC)
    candidates = [i for i in members if i.stage == stage]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (i.stage_since or epoch, i.created, i.version)).ref


def _lookalikes(images: Sequence[ImageRecord], family: str, scope: Sequence[str]) -> list[Decision]:
    """Unmanaged images that look like they belong to ``family``: listed so the plan says why they stay."""
    found = []
    for image in images:
        if image.managed and image.family is not None:
            continue
        guess = image.family or max((f for f in scope if image.name.startswith(f"{f}-")), key=len, default=None)
        if guess != family:
            continue
        why = "family unknown (no Version or Family tag)" if image.managed else "not managed by bakery (no ManagedBy)"
        found.append(Decision(image, "skip", (why,)))
    return sorted(found, key=lambda d: (d.image.created, d.image.ref), reverse=True)


def _decide_snapshots(images: Sequence[ImageRecord], deleted: set[str]) -> list[SnapshotDecision]:
    users: dict[str, list[str]] = defaultdict(list)
    for image in images:
        for snapshot in image.snapshots:
            users[snapshot].append(image.ref)
    decisions = []
    for snapshot in sorted({s for i in images if i.ref in deleted for s in i.snapshots}):
        going = tuple(sorted(r for r in users[snapshot] if r in deleted))
        staying = sorted(r for r in users[snapshot] if r not in deleted)
        if staying:
            decisions.append(SnapshotDecision(snapshot, False, going, f"still used by {', '.join(staying)}"))
        else:
            decisions.append(SnapshotDecision(snapshot, True, going, f"only used by deleted {', '.join(going)}"))
    return decisions


# --- execution ---------------------------------------------------------------------------------------------


def execute(plan: Plan, store: ImageStore, workers: int = DELETE_WORKERS, batch: int = RECHECK_BATCH) -> Outcome:
    """Deregister every image the plan deletes, then delete the snapshots whose images are all gone.

    The images go in batches of ``batch``: each batch is read again (``ImageStore.recheck``, one batched
    read) right before its deletions; an image that changed since the plan, or could not be read again,
    is kept (``kept: <reasons>``, and in ``Outcome.changed``)."""
    outcome = Outcome()
    doomed = [d.image for d in plan.deletions]
    if doomed:
        store.before_deletes(str(doomed[0].family))  # a registry without deletes: one line, none tried

    for start in range(0, len(doomed), batch):
        chunk = doomed[start : start + batch]
        # read again just before this batch's deletions: promoted, launched or shared since the plan
        vetoes = recheck_batch(store.recheck, chunk)
        going = []
        for image in chunk:
            if vetoes[image.ref]:
                outcome.changed[image.ref] = vetoes[image.ref]
                outcome.images[image.ref] = f"kept: {'; '.join(vetoes[image.ref])}"
            else:
                going.append(image)
        for image, result in zip(going, bounded_map(store.delete_image, going, workers), strict=True):
            outcome.images[image.ref] = result
    outcome.images = {image.ref: outcome.images[image.ref] for image in doomed}  # in the plan's order
    snapshots = []
    for snapshot in plan.snapshots:
        if not snapshot.delete:
            continue
        blocking = [r for r in snapshot.images if not _ok(outcome.images.get(r, ""))]
        if blocking:
            outcome.snapshots[snapshot.snapshot_id] = f"kept: {', '.join(blocking)} was not deregistered"
        else:
            snapshots.append(snapshot.snapshot_id)
    for snapshot_id, result in zip(snapshots, bounded_map(store.delete_snapshot, snapshots, workers), strict=True):
        outcome.snapshots[snapshot_id] = result
    return outcome


# --- reporting ---------------------------------------------------------------------------------------------


def rows(plan: Plan, outcome: Outcome | None = None) -> list[dict[str, str]]:
    """The plan as table rows: image, family, version, created, status, decision, reason (+ result)."""
    table = []
    for d in plan.decisions:
        row = {
            "image": d.image.ref,
            "name": d.image.name,
            "family": d.image.family or "",
            "version": d.image.version,
            "created": iso(d.image.created),
            "status": " ".join(
                filter(None, (d.image.stage, "" if d.image.state == "available" else f"({d.image.state})"))
            ),
            "decision": d.action,
            "reason": d.reason,
        }
        if outcome is not None:
            row["result"] = outcome.images.get(d.image.ref, "")
        table.append(row)
    return table


def snapshot_rows(plan: Plan, outcome: Outcome | None = None) -> list[dict[str, str]]:
    table = []
    for s in plan.snapshots:
        row = {
            "snapshot": s.snapshot_id,
            "images": ", ".join(s.images),
            "decision": "delete" if s.delete else "keep",
            "reason": s.reason,
        }
        if outcome is not None:
            row["result"] = outcome.snapshots.get(s.snapshot_id, "")
        table.append(row)
    return table


def summary(plan: Plan, family: str, outcome: Outcome | None = None) -> str:
    """One line per family: what stays (and why, counted), what goes, and how it went."""
    decisions = plan.of_family(family)
    kept = [d for d in decisions if d.action == "keep"]
    gone = [d for d in decisions if d.action == "delete"]
    skipped = [d for d in decisions if d.action == "skip"]
    snaps = plan.snapshots_of(gone)
    why: dict[str, int] = defaultdict(int)
    for d in kept:
        for kind in {_reason_kind(reason) for reason in d.reasons}:
            why[kind] += 1
    counted = ", ".join(f"{kind} {why[kind]}" for kind in REASON_KINDS if why[kind])
    kept_text = f"keep {len(kept)}" + (f" ({counted})" if counted else "")
    line = f"{family}: {len(decisions) - len(skipped)} images, {kept_text}, delete {len(gone)}"
    if snaps:  # Docker images have none
        count = sum(s.delete for s in snaps)
        line += f" with {count} snapshot{'' if count == 1 else 's'}"
    shared = sum(not s.delete for s in snaps)
    if shared:
        line += f" ({shared} shared snapshot{'s' if shared > 1 else ''} kept)"
    if skipped:
        line += f"; {len(skipped)} unmanaged image{'s' if len(skipped) > 1 else ''} left alone"
    if outcome is not None:
        done = sum(_ok(outcome.images.get(d.image.ref, "")) for d in gone)
        changed = sum(outcome.images.get(d.image.ref, "").startswith("kept") for d in gone)
        failed = len(gone) - done - changed
        snaps_done = sum(outcome.snapshots.get(s.snapshot_id, "") in ("deleted", "already gone") for s in snaps)
        line += f"; deleted {done}/{len(gone)} images" + (f" and {snaps_done} snapshots" if snaps else "")
        if changed:
            line += f", {changed} kept (changed since the plan)"
        if failed:
            line += f", {failed} FAILED"
    return line


REASON_KINDS = ("newest", "production", "staging", "rollback", "in use", "shared", "changed", "pinned", "state")
_PREFIXES = {
    "shared": "shared",
    "stage changed": "changed",
    "newest": "newest",
    "status production": "production",
    "current staging": "staging",
    "rollback": "rollback",
    "in use": "in use",
    "state": "state",
}


def _reason_kind(reason: str) -> str:
    return next((kind for prefix, kind in _PREFIXES.items() if reason.startswith(prefix)), "pinned")


def document(plan: Plan, outcome: Outcome | None = None, applied: bool = False) -> dict[str, Any]:
    """The plan (and result) as one JSON-able document."""
    return {
        "target": plan.target,
        "keep": plan.keep,
        "applied": applied,
        "families": {f: summary(plan, f, outcome) for f in plan.families},
        "images": rows(plan, outcome),
        "snapshots": snapshot_rows(plan, outcome),
        "deleted_images": sorted(r for r, v in (outcome.images if outcome else {}).items() if _ok(v)),
        "failures": outcome.failures if outcome else [],
    }


def _ok(result: str) -> bool:
    return result in ("deleted", "already gone")


def format_table(table: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    """Plain fixed-width text, one row per line; the last column is not padded."""
    if not table:
        return ""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in table)) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in table:
        cells = [str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render(doc: Mapping[str, Any]) -> str:
    """The human form of :func:`document`: the image table, the snapshot table, one summary per family."""
    columns = ["image", "family", "version", "created", "status", "decision", "reason"]
    if any("result" in r for r in doc["images"]):
        columns.insert(-1, "result")
    parts = []
    verb = "Retention" if doc["applied"] else "Retention plan (dry run; --apply deletes)"
    parts.append(f"{verb}: target {doc['target']}, keep {doc['keep']} per family")
    parts.append(format_table(doc["images"], columns) or "(no managed images)")
    if doc["snapshots"]:
        snap_columns = ["snapshot", "images", "decision", "reason"]
        if any("result" in r for r in doc["snapshots"]):
            snap_columns.insert(-1, "result")
        parts.append(format_table(doc["snapshots"], snap_columns))
    text = "\n\n".join(parts)
    if doc["families"]:
        text += "\n\n" + "\n".join(doc["families"].values())
    return text
