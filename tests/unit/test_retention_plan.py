"""The retention planner as a pure function: the seed's failure cases, and properties over random families."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.errors import UsageError
from tasks.retention import (
    DELETABLE_STATES,
    Outcome,
    check_keep,
    confirm,
    document,
    execute,
    plan_retention,
    render,
    settled,
)
from tasks.targets.base import ImageRecord, family_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ami(
    n: int,
    family: str | None = "app-base",
    stage: str | None = "testing",
    managed: bool = True,
    snapshots: Sequence[str] | None = None,
    state: str = "available",
) -> ImageRecord:
    ref = f"ami-{n:04d}"
    return ImageRecord(
        ref=ref,
        image_id=ref,
        name=f"{family}-1.0.{n}",
        family=family,
        version=f"1.0.{n}",
        created=T0 + timedelta(days=n),
        stage=stage,
        managed=managed,
        snapshots=tuple(snapshots if snapshots is not None else [f"snap-{n:04d}"]),
        state=state,
    )


def decisions(plan: object) -> dict[str, str]:
    return {d.image.ref: d.action for d in plan.decisions}  # type: ignore[attr-defined]


def test_family_rule_of_the_contract() -> None:
    assert family_of("app-base-1.2.0", "1.2.0", None) == "app-base"
    assert family_of("app-base-web-1.2.0", "1.2.0", None) == "app-base-web"
    assert family_of("app-base-1.2.0", "1.2.0", "web") == "web"  # a Family tag wins
    assert family_of("app-base-1.2.0", None, None) is None
    assert family_of("app-base", "1.2.0", None) is None
    assert family_of("1.2.0", "1.2.0", None) is None


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_keep_must_be_a_positive_whole_number(value: str) -> None:
    with pytest.raises(UsageError, match="--keep"):
        check_keep(value)
    assert check_keep("3") == 3


def test_seed_failure_production_older_than_the_newest_n_is_kept() -> None:
    """The seed's script deletes the production AMI here; the plan keeps it and says why."""
    images = [ami(1, stage="production"), *(ami(n) for n in range(2, 9))]
    plan = plan_retention(images, {}, keep=5)
    assert decisions(plan) == {
        "ami-0008": "keep",
        "ami-0007": "keep",
        "ami-0006": "keep",
        "ami-0005": "keep",
        "ami-0004": "keep",
        "ami-0003": "delete",
        "ami-0002": "delete",
        "ami-0001": "keep",
    }
    production = next(d for d in plan.decisions if d.image.ref == "ami-0001")
    assert production.reasons == ("status production",)


def test_every_reason_is_reported_and_other_families_are_untouched() -> None:
    images = [
        ami(1, stage="superseded"),
        ami(2, stage="staging"),
        ami(3),
        ami(4),
        ami(5, stage="staging"),
        ami(6),
        ami(7, state="pending"),
        ami(8, family="app-base-web"),
        ami(9, family=None),
        ami(10, managed=False),
    ]
    usage = {"ami-0003": ["instance i-1 (stopped)", "launch template lt (lt-1) version 2"]}
    plan = plan_retention(images, usage, keep=1, families=["app-base"])
    reasons = {d.image.ref: d.reason for d in plan.decisions}
    assert decisions(plan) == {
        "ami-0007": "keep",
        "ami-0006": "delete",
        "ami-0005": "keep",
        "ami-0004": "delete",
        "ami-0003": "keep",
        "ami-0002": "delete",
        "ami-0001": "keep",
        "ami-0010": "skip",
    }
    assert reasons["ami-0007"] == "newest 1 (#1); state pending"
    assert reasons["ami-0005"] == "current staging image"
    assert reasons["ami-0003"] == "in use: instance i-1 (stopped); in use: launch template lt (lt-1) version 2"
    assert reasons["ami-0001"] == "rollback target (newest superseded)"
    assert reasons["ami-0010"] == "not managed by bakery (no ManagedBy)"


def test_snapshots_shared_with_a_remaining_image_stay() -> None:
    images = [
        ami(1, snapshots=["snap-a"]),
        ami(2, snapshots=["snap-b", "snap-c"]),
        ami(3, snapshots=["snap-b"]),
        ami(4, snapshots=["snap-a"], family="other"),  # another family still uses snap-a
        ami(5, snapshots=["snap-d"]),
        ami(6, snapshots=["snap-e"]),
    ]
    plan = plan_retention(images, {}, keep=2, families=["app-base"])
    assert [d.image.ref for d in plan.deletions] == ["ami-0003", "ami-0002", "ami-0001"]
    snaps = {s.snapshot_id: (s.delete, s.images) for s in plan.snapshots}
    assert snaps == {
        "snap-a": (False, ("ami-0001",)),
        "snap-b": (True, ("ami-0002", "ami-0003")),
        "snap-c": (True, ("ami-0002",)),
    }
    text = render(document(plan))
    assert "still used by ami-0004" in text
    assert "app-base: 5 images, keep 2 (newest 2), delete 3 with 2 snapshots (1 shared snapshot kept)" in text


class FakeStore:
    """An in-memory account: deregistering fails for ``broken`` images; deleting a snapshot an image still
    references fails as AWS does (InvalidSnapshot.InUse)."""

    target = "fake"

    def __init__(self, images: Sequence[ImageRecord], broken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.images = {i.ref: i for i in images}
        self.snapshots = {s for i in images for s in i.snapshots}
        self.broken = broken
        self.snapshot_calls: list[str] = []
        self.changed: dict[str, list[str]] = {}  # ref -> what a re-read finds changed since the plan
        self.rechecks: list[list[str]] = []  # the batches read again, in order
        self.recheck_error = ""  # a re-read of any batch fails with this
        self.unanswered: set[str] = set()  # refs a re-read leaves out of its answer
        self.refuse_deletes = ""  # before_deletes raises this: the store takes no deletes at all
        self.events: list[str] = []  # "recheck <refs>" and "delete <ref>", in order

    def before_deletes(self, family: str) -> None:
        self.events.append(f"before deletes {family}")
        if self.refuse_deletes:
            raise RuntimeError(self.refuse_deletes)

    def recheck(self, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
        self.rechecks.append([i.ref for i in images])
        self.events.append("recheck " + " ".join(i.ref for i in images))
        if self.recheck_error:
            raise RuntimeError(self.recheck_error)
        return {i.ref: self.changed.get(i.ref, []) for i in images if i.ref not in self.unanswered}

    def inventory(self) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        return list(self.images.values()), {}

    def delete_image(self, image: ImageRecord) -> str:
        if image.ref in self.broken:
            raise RuntimeError(f"AccessDenied for {image.ref}")
        del self.images[image.ref]
        self.events.append(f"delete {image.ref}")
        return "deleted"

    def delete_snapshot(self, snapshot_id: str) -> str:
        self.snapshot_calls.append(snapshot_id)
        users = [i.ref for i in self.images.values() if snapshot_id in i.snapshots]
        if users:
            raise RuntimeError(f"InvalidSnapshot.InUse: {snapshot_id} is used by {users}")
        self.snapshots.remove(snapshot_id)
        return "deleted"


def test_execute_deletes_each_snapshot_once_and_keeps_those_of_failed_images() -> None:
    images = [
        ami(1, snapshots=["snap-a"]),
        ami(2, snapshots=["snap-a", "snap-x"]),
        ami(3, snapshots=["snap-b"]),
        ami(4, snapshots=["snap-c"]),
        ami(5),
    ]
    store = FakeStore(images, broken={"ami-0003"})
    plan = plan_retention(images, {}, keep=1)
    outcome = execute(plan, store)
    assert outcome.images == {
        "ami-0004": "deleted",
        "ami-0003": "failed: AccessDenied for ami-0003",
        "ami-0002": "deleted",
        "ami-0001": "deleted",
    }
    assert outcome.snapshots == {
        "snap-a": "deleted",
        "snap-b": "kept: ami-0003 was not deregistered",
        "snap-c": "deleted",
        "snap-x": "deleted",
    }
    assert sorted(store.snapshot_calls) == ["snap-a", "snap-c", "snap-x"]
    assert outcome.failures == ["ami-0003: failed: AccessDenied for ami-0003"]


# --- properties ------------------------------------------------------------------------------------------

FAMILIES = ["app", "app-base", "app-base-web", "db"]
STAGES = [None, "testing", "staging", "production", "superseded", "failed"]
STATES = ["available", "available", "available", "disabled", "pending", "failed"]


@st.composite
def accounts(draw: st.DrawFn) -> tuple[list[ImageRecord], dict[str, list[str]], int, list[str] | None, set[str]]:
    count = draw(st.integers(0, 30))
    snapshot_pool = [f"snap-{i}" for i in range(draw(st.integers(1, 40)))]
    images = []
    for n in range(count):
        family = draw(st.sampled_from([*FAMILIES, None]))
        images.append(
            ImageRecord(
                ref=f"ami-{n:04d}",
                image_id=f"ami-{n:04d}",
                name=f"{family}-{n}" if family else f"manual-{n}",
                family=family,
                version=str(n),
                # duplicates on purpose: equal creation times must not break anything
                created=T0 + timedelta(hours=draw(st.integers(0, 20))),
                stage=draw(st.sampled_from(STAGES)),
                managed=draw(st.booleans()) or draw(st.booleans()),
                snapshots=tuple(draw(st.lists(st.sampled_from(snapshot_pool), max_size=3, unique=True))),
                state=draw(st.sampled_from(STATES)),
                stage_since=draw(st.none() | st.just(T0 + timedelta(hours=draw(st.integers(0, 20))))),
            )
        )
    refs = [i.ref for i in images]
    used = draw(st.lists(st.sampled_from(refs), unique=True)) if refs else []
    usage = {ref: [f"instance i-{ref} (running)"] for ref in used}
    keep = draw(st.integers(1, 6))
    scope = draw(st.none() | st.lists(st.sampled_from(FAMILIES), min_size=1, max_size=3, unique=True))
    broken = set(draw(st.lists(st.sampled_from(refs), unique=True, max_size=3))) if refs else set()
    return images, usage, keep, scope, broken


def protected(images: list[ImageRecord], usage: dict[str, list[str]], keep: int, scope: list[str] | None) -> set[str]:
    """An independent statement of what must never be deleted."""
    safe = set()
    by_family: dict[str | None, list[ImageRecord]] = defaultdict(list)
    for image in images:
        by_family[image.family].append(image)
        if not image.managed or image.family is None or (scope is not None and image.family not in scope):
            safe.add(image.ref)
        if image.stage == "production" or image.image_id in usage or image.state not in DELETABLE_STATES:
            safe.add(image.ref)
    epoch = datetime.min.replace(tzinfo=UTC)
    for family, members in by_family.items():
        managed = [i for i in members if i.managed and family is not None]
        newest = sorted(managed, key=lambda i: (i.created, i.version, i.ref), reverse=True)[:keep]
        safe.update(i.ref for i in newest)
        for stage in ("staging", "superseded"):
            staged = [i for i in managed if i.stage == stage]
            if staged:
                safe.add(max(staged, key=lambda i: (i.stage_since or epoch, i.created, i.version)).ref)
    return safe


@settings(max_examples=60, deadline=None)
@given(accounts())
def test_never_deletes_a_protected_image(
    account: tuple[list[ImageRecord], dict[str, list[str]], int, list[str] | None, set[str]],
) -> None:
    images, usage, keep, scope, _ = account
    plan = plan_retention(images, usage, keep=keep, families=scope)
    doomed = {d.image.ref for d in plan.deletions}
    assert not doomed & protected(images, usage, keep, scope)
    # and every image in scope that is not protected does go (retention is not a no-op)
    in_scope = {i.ref for i in images if i.managed and i.family and (scope is None or i.family in scope)}
    assert doomed == in_scope - protected(images, usage, keep, scope)
    # each image is decided at most once
    refs = [d.image.ref for d in plan.decisions]
    assert len(refs) == len(set(refs))


@settings(max_examples=40, deadline=None)
@given(accounts())
def test_never_leaves_a_snapshot_of_a_deleted_image_unless_still_referenced(
    account: tuple[list[ImageRecord], dict[str, list[str]], int, list[str] | None, set[str]],
) -> None:
    images, usage, keep, scope, broken = account
    plan = plan_retention(images, usage, keep=keep, families=scope)
    store = FakeStore(images, broken=broken)
    outcome: Outcome = execute(plan, store)
    remaining_refs = {s for i in store.images.values() for s in i.snapshots}
    deleted = [i for i in images if i.ref not in store.images]
    for image in deleted:
        for snapshot in image.snapshots:
            # a deleted image's snapshot is gone, or still referenced by an image that remains
            assert snapshot not in store.snapshots or snapshot in remaining_refs
    # nothing still referenced was ever attempted (the store would have raised InUse)
    assert not [f for f in outcome.failures if "InUse" in f]
    # images whose deregistration failed are still there, with their snapshots
    for ref in broken & {d.image.ref for d in plan.deletions}:
        assert ref in store.images
        assert set(store.images[ref].snapshots) <= store.snapshots


def img(ref: str, family: str, version: str, day: int) -> ImageRecord:
    return ImageRecord(ref, ref, ref, family, version, T0 + timedelta(days=day), stage="testing")


# --- ownership, sharing, re-reading before deletion (issue 11, item 4) ---------------------------------------


def owned_and_child(n: int = 3) -> list[ImageRecord]:
    """app-base built by bakery; myapp built FROM it by someone else (its labels say name=app-base)."""
    base = [img(f"app-base:{i}", "app-base", f"{i}", day=i) for i in range(1, n + 1)]
    child = [
        replace(img(f"myapp:{i}", "myapp", f"{i}", day=i), foreign="label name=app-base but repository myapp")
        for i in range(1, n + 1)
    ]
    return base + child


def test_without_family_only_bakery_built_families() -> None:
    plan = plan_retention(owned_and_child(), {}, keep=1)
    assert plan.families == ("app-base",)
    assert {d.image.ref for d in plan.deletions} == {"app-base:1", "app-base:2"}
    skipped = {d.image.ref: d.reason for d in plan.decisions if d.action == "skip"}
    assert set(skipped) == {"myapp:1", "myapp:2", "myapp:3"}
    assert "only with --family myapp" in skipped["myapp:1"]


def test_listed_or_named_family_is_covered() -> None:
    listed = plan_retention(owned_and_child(), {}, keep=1, listed=["myapp"])
    assert {d.image.ref for d in listed.deletions} == {"app-base:1", "app-base:2", "myapp:1", "myapp:2"}
    named = plan_retention(owned_and_child(), {}, keep=1, families=["myapp"])
    assert {d.image.ref for d in named.deletions} == {"myapp:1", "myapp:2"}


def test_confirm_keeps_what_changed_and_its_snapshots() -> None:
    images = [replace(img(f"ami-{i}", "app-base", f"{i}", day=i), snapshots=(f"snap-{i}",)) for i in range(1, 5)]
    plan = plan_retention(images, {}, keep=1)
    changes = {"ami-1": ["shared: public"], "ami-2": ["stage changed since the plan: now production"]}
    confirmed = confirm(plan, lambda images: {i.ref: changes.get(i.ref, []) for i in images})
    decided = {d.image.ref: (d.action, d.reason) for d in confirmed.decisions}
    assert decided["ami-1"] == ("keep", "shared: public")
    assert decided["ami-2"] == ("keep", "stage changed since the plan: now production")
    assert decided["ami-3"][0] == "delete"
    assert {s.snapshot_id: s.delete for s in confirmed.snapshots} == {"snap-1": False, "snap-2": False, "snap-3": True}


def test_execute_rereads_each_image_just_before_deleting_it() -> None:
    images = [replace(img(f"ami-{i}", "app-base", f"{i}", day=i), snapshots=(f"snap-{i}",)) for i in range(1, 4)]
    store = FakeStore(images)
    plan = plan_retention(images, {}, keep=1)
    store.changed["ami-1"] = ["in use since the plan: instance i-1 (running)"]
    outcome = execute(plan, store)
    assert outcome.images == {"ami-1": "kept: in use since the plan: instance i-1 (running)", "ami-2": "deleted"}
    assert "ami-1" in store.images
    assert outcome.snapshots["snap-1"].startswith("kept")
    assert outcome.failures == []


def test_a_store_that_takes_no_deletes_stops_the_run_before_any_is_tried() -> None:
    images = [replace(img(f"ami-{i}", "app-base", f"{i}", day=i), snapshots=(f"snap-{i}",)) for i in range(1, 4)]
    store = FakeStore(images)
    store.refuse_deletes = "registry 127.0.0.1:5000 does not allow deletes (405); nothing was deleted"
    with pytest.raises(RuntimeError, match="nothing was deleted"):
        execute(plan_retention(images, {}, keep=1), store)
    assert store.events == ["before deletes app-base"]
    assert set(store.images) == {"ami-1", "ami-2", "ami-3"}


def test_nothing_to_delete_asks_the_store_nothing() -> None:
    images = [img("ami-1", "app-base", "1", day=1)]
    store = FakeStore(images)
    store.refuse_deletes = "would fail"
    assert execute(plan_retention(images, {}, keep=1), store).images == {}
    assert store.events == []


def test_execute_reads_each_batch_again_right_before_deleting_it() -> None:
    """Batched re-reads (one store call per batch, AWS: one DescribeImages and one DescribeInstances): each
    batch is read again after the previous batch's deletions and before its own; a veto in any batch holds."""
    images = [replace(img(f"ami-{i}", "app-base", f"{i}", day=i), snapshots=(f"snap-{i}",)) for i in range(1, 7)]
    store = FakeStore(images)
    plan = plan_retention(images, {}, keep=1)  # deletes ami-5 .. ami-1, newest first
    store.changed = {
        "ami-4": ["shared: launch permission for 111122223333"],
        "ami-3": ["stage changed since the plan: now production"],
        "ami-1": ["in use since the plan: instance i-1 (running)"],
    }
    outcome = execute(plan, store, workers=1, batch=2)
    assert store.rechecks == [["ami-5", "ami-4"], ["ami-3", "ami-2"], ["ami-1"]]
    assert store.events == [
        "before deletes app-base",
        "recheck ami-5 ami-4",
        "delete ami-5",
        "recheck ami-3 ami-2",
        "delete ami-2",
        "recheck ami-1",
    ]
    assert outcome.images == {
        "ami-5": "deleted",
        "ami-4": "kept: shared: launch permission for 111122223333",
        "ami-3": "kept: stage changed since the plan: now production",
        "ami-2": "deleted",
        "ami-1": "kept: in use since the plan: instance i-1 (running)",
    }
    assert outcome.snapshots == {
        "snap-1": "kept: ami-1 was not deregistered",
        "snap-2": "deleted",
        "snap-3": "kept: ami-3 was not deregistered",
        "snap-4": "kept: ami-4 was not deregistered",
        "snap-5": "deleted",
    }
    assert outcome.failures == []

    done = settled(plan, outcome)  # the report of an applied run: the vetoed ones are keeps, with the reason
    decided = {d.image.ref: (d.action, d.reason) for d in done.decisions}
    assert decided["ami-4"] == ("keep", "shared: launch permission for 111122223333")
    assert decided["ami-3"] == ("keep", "stage changed since the plan: now production")
    assert decided["ami-1"] == ("keep", "in use since the plan: instance i-1 (running)")
    assert [d.image.ref for d in done.deletions] == ["ami-5", "ami-2"]
    assert {s.snapshot_id: s.delete for s in done.snapshots} == {f"snap-{i}": i in (2, 5) for i in range(1, 6)}
    summary_line = document(done, outcome, applied=True)["families"]["app-base"]
    assert "deleted 2/2 images and 2 snapshots" in summary_line


def test_a_batch_that_cannot_be_read_again_stays_whole() -> None:
    images = [replace(img(f"ami-{i}", "app-base", f"{i}", day=i), snapshots=(f"snap-{i}",)) for i in range(1, 5)]
    store = FakeStore(images)
    plan = plan_retention(images, {}, keep=1)
    store.recheck_error = "RequestLimitExceeded: slow down"
    outcome = execute(plan, store, batch=2)
    assert set(outcome.images.values()) == {
        "kept: could not be read again before deletion: RequestLimitExceeded: slow down"
    }
    assert len(store.images) == 4 and store.snapshot_calls == []
    assert all(v.startswith("kept") for v in outcome.snapshots.values())


def test_an_image_the_re_read_says_nothing_about_stays() -> None:
    images = [replace(img(f"ami-{i}", "app-base", f"{i}", day=i), snapshots=(f"snap-{i}",)) for i in range(1, 4)]
    store = FakeStore(images)
    plan = plan_retention(images, {}, keep=1)
    store.unanswered = {"ami-2"}
    outcome = execute(plan, store)
    assert outcome.images == {
        "ami-2": "kept: could not be read again before deletion: no answer for it",
        "ami-1": "deleted",
    }
    confirmed = confirm(plan, store.recheck)
    assert [d.image.ref for d in confirmed.deletions] == ["ami-1"]
