"""Promotion with soak, and rollback: the seed's stage model with at most one ``production`` per family.

    staging ──(soak ≥ --min-soak, or --force)──► production ──(next promotion)──► superseded
                                                      ▲                               │
                                                      └──────────(bake rollback)──────┘

The algorithm is the same for every target; a ``StageStore`` (Docker: ``tasks.targets.docker.stages``,
AWS: ``tasks.targets.aws.stages``) reads a family's images, writes one image's stage, and provides a lock
that holds across processes (and, for AWS, across machines).

Ordering, so nobody who reads the tags ever sees two production images of one family:

1. take the family's promotion lock (waits for a racing promotion to finish);
2. read the family fresh, inside the lock; check stage and soak — a refusal changes nothing;
3. demote the current production image(s) to ``superseded`` — one write per image, which finishes
   before the next starts;
4. promote the new image to ``production`` (the ``status`` write is the commit point);
5. re-check: read the family again; any other ``production`` image (a hand edit, a writer that
   ignored the lock, a lock whose lease ran out) is demoted, and if ours is no longer ``production``
   the promotion fails.

**All or nothing.** Before step 3 an *intent* (this run, the new image and the stage it had, the old
production(s)) is written where every promoter reads (``StageStore.write_intent``: the family's record
on Docker, a ``bakery:promotion-intent`` tag on the new AMI); it is cleared after step 4. A failure in
between is undone on the spot (the new image back to its stage, the old production(s) restored, with
their own times). A kill in between leaves the intent: the next promote, rollback or sweep of the
family finds it inside the lock (``resume_unfinished``), completes the switch when the new image had
become production, else undoes it, and says which.

Between 3 and 4 an observer can see *no* production image for a moment (milliseconds): a Terraform plan
at that instant fails with "no results" instead of silently picking a wrong image. The other order
(promote first) would show two, and with ``most_recent`` a rollback would then resolve to the newer,
rolled-back image: exactly the wrong one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal

from tasks.errors import JobFailed
from tasks.targets.base import TAG_FORCED as TAG_FORCED
from tasks.targets.base import TAG_INTENT as TAG_INTENT
from tasks.targets.base import TAG_PROMOTED_AT as TAG_PROMOTED_AT
from tasks.targets.base import TAG_RUN_ID as TAG_RUN_ID
from tasks.targets.base import TAG_STAGED_AT as TAG_STAGED_AT
from tasks.targets.base import TAG_STATUS as TAG_STATUS
from tasks.targets.base import TAG_SUPERSEDED_AT as TAG_SUPERSEDED_AT
from tasks.targets.base import Change as Change
from tasks.targets.base import Intent as Intent
from tasks.targets.base import PromotionRecord as PromotionRecord
from tasks.targets.base import StagedImage as StagedImage
from tasks.targets.base import StageStore as StageStore
from tasks.targets.base import human as human
from tasks.targets.base import iso as iso
from tasks.targets.base import one_line
from tasks.targets.base import parse_time as parse_time
from tasks.targets.base import utcnow as utcnow

log = logging.getLogger(__name__)
PromoteTo = Literal["staging", "production"]

DEFAULT_MIN_SOAK = timedelta(hours=24)


def _newest(images: list[StagedImage], key: str) -> StagedImage:
    epoch = datetime.min.replace(tzinfo=UTC)
    return max(images, key=lambda i: (getattr(i, key) or epoch, i.created or epoch, i.version))


def productions(store: StageStore, family: str) -> list[StagedImage]:
    return [i for i in store.family_images(family) if i.stage == "production"]


def _resolve(store: StageStore, family: str | None, image: str | None, wanted: str) -> StagedImage:
    """The image named by ``--image``, or the family's newest image in stage ``wanted``."""
    if image:
        return store.find(image)
    assert family
    candidates = [i for i in store.family_images(family) if i.stage == wanted]
    if not candidates:
        raise JobFailed(f"{store.target}: family {family} has no image at {wanted} to promote")
    return _newest(candidates, "staged_at" if wanted == "staging" else "created")


def promote(
    store: StageStore,
    *,
    to: PromoteTo,
    run_id: str,
    family: str | None = None,
    image: str | None = None,
    min_soak: timedelta = DEFAULT_MIN_SOAK,
    force: bool = False,
    now: datetime | None = None,
) -> PromotionRecord:
    """``testing → staging`` or ``staging → production`` (after the soak); see the module doc."""
    if bool(family) == bool(image):
        raise ValueError("promote needs exactly one of family or image")
    wanted = "staging" if to == "production" else "testing"
    chosen_family = family or store.find(image or "").family
    with store.lock(chosen_family, run_id):
        found = resume_unfinished(store, chosen_family, run_id)
        moment = now or utcnow()
        try:
            candidate = _resolve(store, family, image, wanted)
        except JobFailed as exc:
            if not found:
                raise
            raise JobFailed(f"{exc}{_first(found)}") from exc
        record = PromotionRecord(
            action="promote",
            target=store.target,
            family=candidate.family,
            image=candidate.id,
            name=candidate.name,
            to=to,
            at=moment,
            run_id=run_id,
        )
        record.notes.extend(found)
        if to == "staging":
            _to_staging(store, candidate, record, force)
            return record
        record.min_soak = min_soak
        if candidate.stage == "production":
            record.production = candidate.id
            record.notes.append(f"{candidate.label} is already production; nothing changed")
            return record
        if candidate.stage != "staging":
            raise JobFailed(
                f"{candidate.label} is {candidate.stage or 'untagged'}, not staging: only an image that "
                "passed its tests (staging) goes to production"
                + ("; to go back to an earlier production image use `bake rollback`" if candidate.stage else "")
            )
        record.soaked = moment - candidate.staged_at if candidate.staged_at else None
        if min_soak > timedelta(0) and (record.soaked is None or record.soaked < min_soak):
            if not force:
                if record.soaked is None:
                    raise JobFailed(
                        f"soak unknown for {candidate.label}: it has no {TAG_STAGED_AT}; nothing changed "
                        "(stage it again with `bake promote --to staging`, or --force)"
                    )
                ready = iso(candidate.staged_at + min_soak) if candidate.staged_at else "?"
                raise JobFailed(
                    f"soak not met for {candidate.label}: staged {human(record.soaked)} ago, needs "
                    f"{human(min_soak)} (promotable after {ready}); nothing changed (--force overrides)"
                )
            record.forced = True
            record.notes.append(
                f"--force: promoted after a soak of {human(record.soaked) if record.soaked else 'unknown'}"
                f" (minimum {human(min_soak)})"
            )
        _switch_production(store, candidate, record, {TAG_FORCED: "true"} if record.forced else {})
        return record


def _to_staging(store: StageStore, candidate: StagedImage, record: PromotionRecord, force: bool) -> None:
    if candidate.stage == "staging":
        record.notes.append(f"{candidate.label} is already staging; nothing changed")
        return
    if candidate.stage == "failed" and force:
        record.forced = True
        record.notes.append("--force: staged an image whose verification failed")
    elif candidate.stage not in ("testing", None):
        raise JobFailed(
            f"{candidate.label} is {candidate.stage}: only a testing image goes to staging"
            + (" (--force stages a failed one)" if candidate.stage == "failed" else "")
        )
    tags = {TAG_STAGED_AT: iso(record.at), TAG_RUN_ID: record.run_id}
    if record.forced:
        tags[TAG_FORCED] = "true"
    store.write(candidate, "staging", record.run_id, tags)
    record.changes.append(Change(candidate.id, candidate.name, candidate.stage, "staging"))


def rollback(store: StageStore, *, family: str, run_id: str, now: datetime | None = None) -> PromotionRecord:
    """The most recently superseded image becomes production again; the current one, superseded."""
    with store.lock(family, run_id):
        found = resume_unfinished(store, family, run_id)
        moment = now or utcnow()
        images = store.family_images(family)
        superseded = [i for i in images if i.stage == "superseded"]
        if not superseded:
            raise JobFailed(f"{store.target}: family {family} has no superseded image to roll back to{_first(found)}")
        back = _newest(superseded, "superseded_at")
        record = PromotionRecord(
            action="rollback",
            target=store.target,
            family=family,
            image=back.id,
            name=back.name,
            to="production",
            at=moment,
            run_id=run_id,
        )
        record.notes.extend(found)
        _switch_production(store, back, record, {})
        return record


def _switch_production(
    store: StageStore, new: StagedImage, record: PromotionRecord, extra_tags: dict[str, str]
) -> None:
    """Demote every current production, then promote ``new``, then re-check (module doc, steps 3-5); the
    two writes are bracketed by an intent, and a failure between them is undone at once."""
    current = [i for i in store.family_images(new.family) if i.stage == "production" and i.id != new.id]
    record.previous_production = ", ".join(i.name or i.id for i in current) or None
    intent = Intent(
        run_id=record.run_id,
        action=record.action,
        family=new.family,
        new=new.id,
        was=new.stage or "staging",
        old=tuple(i.id for i in current),
        at=iso(record.at),
    )
    store.write_intent(new.family, intent)
    demote = {TAG_SUPERSEDED_AT: iso(record.at), TAG_RUN_ID: record.run_id}
    promote_tags = {TAG_PROMOTED_AT: iso(record.at), TAG_RUN_ID: record.run_id, **extra_tags}
    try:
        for old in current:
            store.write(old, "superseded", record.run_id, demote)
            record.changes.append(Change(old.id, old.name, "production", "superseded"))
        store.write(new, "production", record.run_id, promote_tags)
    except Exception as exc:
        _undo_switch(store, new, current, intent, record, exc)
        raise  # _undo_switch raises; this keeps type checkers sure
    record.changes.append(Change(new.id, new.name, new.stage, "production"))
    store.clear_intent(new.family, intent)
    _recheck(store, new, record)
    store.after_change(new.family, new, record)


def _restore_tags(image: StagedImage, stage: str, run_id: str) -> dict[str, str]:
    """The times an image had at ``stage``, so an undo gives it back exactly (the soak included)."""
    moment = {"staging": image.staged_at, "production": image.promoted_at, "superseded": image.superseded_at}.get(stage)
    key = {"staging": TAG_STAGED_AT, "production": TAG_PROMOTED_AT, "superseded": TAG_SUPERSEDED_AT}.get(stage)
    tags = {TAG_RUN_ID: run_id}
    if moment is not None and key is not None:
        tags[key] = iso(moment)
    return tags


def _undo_switch(
    store: StageStore,
    new: StagedImage,
    current: list[StagedImage],
    intent: Intent,
    record: PromotionRecord,
    error: Exception,
) -> None:
    """Put back what the switch wrote: ``new`` to its stage first (never two productions), then every old
    production. Raises a ``JobFailed`` saying what failed and what the family looks like now."""
    olds = ", ".join(i.label for i in current) or "no image"
    try:
        store.write(new, intent.was, record.run_id, _restore_tags(new, intent.was, record.run_id))
        for old in current:
            store.write(old, "production", record.run_id, _restore_tags(old, "production", record.run_id))
        store.clear_intent(new.family, intent)
    except Exception as undo_error:
        raise JobFailed(
            f"{record.action} of {new.label} failed ({error}) and undoing it failed too ({undo_error}); "
            f"the next promote, rollback or sweep of {new.family} finishes the undo"
        ) from error
    record.changes.clear()
    raise JobFailed(
        f"{record.action} of {new.label} failed ({error}); undone: {olds} production again, "
        f"{new.label} back at {intent.was}"
    ) from error


def _first(found: list[str]) -> str:
    """What resuming a killed switch did, for the error of a command that then failed: its last line must
    say it too (the warning logged at once is not shown everywhere)."""
    return f" (first {'; '.join(found)})" if found else ""


def resume_unfinished(store: StageStore, family: str, run_id: str) -> list[str]:
    """With the family's lock held: an intent left by a killed switch is completed when its new image had
    become production (the old ones superseded), else undone (the new image back to its stage, the old
    production(s) restored). Returns what was found and done, one line each (empty: nothing was left)."""
    notes = _resume(store, family, run_id)
    for note in notes:
        log.warning("%s", note)  # said at once: the command that found it may still fail after
    return notes


def _resume(store: StageStore, family: str, run_id: str) -> list[str]:
    intent = store.read_intent(family)
    if intent is None:
        return []
    images = {i.id: i for i in store.family_images(family)}
    new = images.get(intent.new)
    olds = [images[i] for i in intent.old if i in images]
    found = intent.describe()
    if new is not None and new.stage == "production":
        for old in olds:
            if old.stage == "production":
                store.write(old, "superseded", run_id, {TAG_SUPERSEDED_AT: iso(utcnow()), TAG_RUN_ID: run_id})
        store.clear_intent(family, intent)
        return [f"found {found}: {new.label} was already production; completed (the old production superseded)"]
    if new is not None:
        store.write(new, intent.was, run_id, _restore_tags(new, intent.was, run_id))
    others = [i for i in images.values() if i.stage == "production" and i.id not in intent.old]
    restored = []
    if not others:  # nobody became production since: the old production(s) come back, every record of it
        for old in olds:
            store.write(old, "production", run_id, _restore_tags(old, "production", run_id))
            restored.append(old.label)
    store.clear_intent(family, intent)
    label = new.label if new is not None else intent.new
    now = ", ".join(restored) or "none restored"
    return [f"found {found}: {label} was not production yet; undone: production {now}, {label} at {intent.was}"]


def resume_all(store: StageStore, run_id: str, apply: bool = True) -> tuple[list[str], list[str]]:
    """``resume_unfinished`` for every family with an intent (the sweep); without ``apply`` what it would
    resume. ``(notes, failures)``, a line each: one family that fails (a record that cannot be read, its
    lock held by a live promotion) is a failure of its own, and the other families are still resumed."""
    notes: list[str] = []
    failures: list[str] = []
    for family in store.families_with_intent():
        try:
            if not apply:
                intent = store.read_intent(family)
                notes += [f"would resume {intent.describe()}"] if intent is not None else []
                continue
            with store.lock(family, run_id):
                notes += resume_unfinished(store, family, run_id)
        except Exception as exc:  # named in the sweep's report; the next family goes on
            failures.append(f"{family}: {one_line(exc)}")
    return notes, failures


def _recheck(store: StageStore, new: StagedImage, record: PromotionRecord) -> None:
    """Step 5. With the lock held this finds exactly ``new``. Anything else came from a writer that did
    not take the lock (a hand edit, a lease that ran out): every checker resolves it the same way, the
    latest ``promoted-at`` (then the greater id) stays production, so racing checkers never demote
    each other's choice into zero production images."""
    found = productions(store, new.family)
    if not any(i.id == new.id for i in found):
        now_production = ", ".join(i.label for i in found) or "none"
        raise JobFailed(
            f"re-check after promoting {new.label}: it is no longer production (production now: "
            f"{now_production}); another promotion of {new.family} ran at the same time"
        )
    epoch = datetime.min.replace(tzinfo=UTC)
    winner = max(found, key=lambda i: (i.promoted_at or epoch, i.id))
    for other in found:
        if other.id == winner.id:
            continue
        back = "staging" if other.id == new.id else "superseded"
        record.notes.append(f"re-check: {other.label} and {winner.label} were both production; {other.label} → {back}")
        store.write(other, back, record.run_id, {} if back == "staging" else {TAG_SUPERSEDED_AT: iso(record.at)})
        record.changes.append(Change(other.id, other.name, "production", back))
    if winner.id != new.id:
        raise JobFailed(
            f"{new.label} lost a race with another promotion of {new.family}: {winner.label} is production; "
            f"{new.label} is back at staging"
        )
    record.production = new.id
