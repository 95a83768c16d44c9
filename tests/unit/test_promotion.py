"""The promotion algorithm on an in-memory stage store: soak, force, write order, re-check, rollback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks import promotion
from tasks.errors import JobFailed
from tasks.targets.base import PromotionRecord, StagedImage

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class MemoryStore:
    """A StageStore whose every write is logged, with a hook to play a racing writer."""

    target = "memory"

    def __init__(self, *images: StagedImage) -> None:
        self.images = {i.id: i for i in images}
        self.writes: list[tuple[str, str]] = []
        self.productions_seen: list[int] = []
        self.on_write: list[tuple[str, str, str]] = []  # (image id, stage) → then force another write

    def find(self, reference: str) -> StagedImage:
        return self.images[reference]

    def family_images(self, family: str) -> list[StagedImage]:
        return [i for i in self.images.values() if i.family == family]

    @contextlib.contextmanager
    def lock(self, family: str, run_id: str) -> Iterator[None]:
        yield

    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None:
        times: dict[str, Any] = {
            "staged_at": promotion.parse_time(tags.get(promotion.TAG_STAGED_AT)),
            "promoted_at": promotion.parse_time(tags.get(promotion.TAG_PROMOTED_AT)),
            "superseded_at": promotion.parse_time(tags.get(promotion.TAG_SUPERSEDED_AT)),
        }
        current = self.images[image.id]
        self.images[image.id] = replace(current, stage=stage, **{k: v for k, v in times.items() if v})
        self.writes.append((image.id, stage))
        self.productions_seen.append(sum(i.stage == "production" for i in self.images.values()))
        for trigger_id, trigger_stage, other in list(self.on_write):
            if (trigger_id, trigger_stage) == (image.id, stage):
                self.on_write.remove((trigger_id, trigger_stage, other))
                self.images[other] = replace(self.images[other], stage="production", promoted_at=NOW)

    def after_change(self, family: str, production: StagedImage, record: PromotionRecord) -> None:
        record.published["memory"] = production.id

    intent: promotion.Intent | None = None
    fail_on: tuple[str, str] | None = None  # (image id, stage): that write raises, as a lost API call would

    def write_intent(self, family: str, intent: promotion.Intent) -> None:
        self.intent = intent

    def read_intent(self, family: str) -> promotion.Intent | None:
        return self.intent

    def clear_intent(self, family: str, intent: promotion.Intent) -> None:
        if self.intent is not None and self.intent.run_id == intent.run_id:
            self.intent = None

    def families_with_intent(self) -> list[str]:
        return [self.intent.family] if self.intent else []


class FailingStore(MemoryStore):
    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None:
        if self.fail_on == (image.id, stage):
            self.fail_on = None
            raise RuntimeError(f"injected: writing {stage} on {image.id}")
        super().write(image, stage, run_id, tags)


class Killed(BaseException):
    """SIGKILL: nothing after it runs, no except clause catches it."""


class KilledStore(MemoryStore):
    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None:
        if self.fail_on == (image.id, stage):
            self.fail_on = None
            raise Killed
        super().write(image, stage, run_id, tags)


def image(ident: str, stage: str, staged_ago: timedelta | None = None, **extra: object) -> StagedImage:
    return StagedImage(
        id=ident,
        family="app",
        version=ident,
        name=f"app-{ident}",
        stage=stage,
        created=NOW - timedelta(days=10),
        staged_at=NOW - staged_ago if staged_ago is not None else None,
        **extra,  # type: ignore[arg-type]
    )


def test_soak_not_met_raises_and_writes_nothing() -> None:
    store = MemoryStore(image("p", "production"), image("s", "staging", timedelta(hours=23)))
    with pytest.raises(JobFailed, match=r"soak not met for app-s \(s\): staged 23h 0m ago, needs 1d 0h 0m"):
        promotion.promote(store, to="production", run_id="r", family="app", now=NOW)
    assert store.writes == []


def test_unknown_soak_needs_force_and_force_is_recorded() -> None:
    store = MemoryStore(image("s", "staging"))
    with pytest.raises(JobFailed, match="soak unknown"):
        promotion.promote(store, to="production", run_id="r", image="s", now=NOW)
    record = promotion.promote(store, to="production", run_id="r", image="s", now=NOW, force=True)
    assert record.forced and "--force" in record.to_markdown()
    assert store.images["s"].stage == "production"


def test_zero_min_soak_needs_no_staged_at() -> None:
    store = MemoryStore(image("s", "staging"))
    promotion.promote(store, to="production", run_id="r", image="s", min_soak=timedelta(0), now=NOW)
    assert store.images["s"].stage == "production"


def test_old_production_is_demoted_before_the_new_one_is_promoted() -> None:
    store = MemoryStore(
        image("p", "production"), image("s1", "staging", timedelta(days=3)), image("s2", "staging", timedelta(days=2))
    )
    record = promotion.promote(store, to="production", run_id="r", family="app", now=NOW)
    assert record.image == "s2"  # the newest staged
    assert store.writes == [("p", "superseded"), ("s2", "production")]
    assert max(store.productions_seen) == 1
    assert record.previous_production == "app-p" and record.production == "s2"
    assert store.images["p"].superseded_at == NOW
    assert record.to_dict()["changes"][0] == {
        "image": "p",
        "name": "app-p",
        "before": "production",
        "after": "superseded",
    }


def test_only_staging_goes_to_production() -> None:
    store = MemoryStore(image("t", "testing"), image("f", "failed"), image("x", "superseded"))
    for ident in ("t", "f"):
        with pytest.raises(JobFailed, match="not staging"):
            promotion.promote(store, to="production", run_id="r", image=ident, force=True, now=NOW)
    with pytest.raises(JobFailed, match="bake rollback"):
        promotion.promote(store, to="production", run_id="r", image="x", now=NOW)
    assert store.writes == []


def test_to_staging_from_testing_and_failed_only_with_force() -> None:
    store = MemoryStore(image("t", "testing"), image("f", "failed"))
    record = promotion.promote(store, to="staging", run_id="r", image="t", now=NOW)
    assert store.images["t"].stage == "staging" and store.images["t"].staged_at == NOW and record.changed
    with pytest.raises(JobFailed, match="--force stages a failed one"):
        promotion.promote(store, to="staging", run_id="r", image="f", now=NOW)
    assert promotion.promote(store, to="staging", run_id="r", image="f", force=True, now=NOW).forced


def test_recheck_demotes_a_production_written_outside_the_lock() -> None:
    store = MemoryStore(image("p", "production"), image("s", "staging", timedelta(days=2)), image("h", "superseded"))
    store.on_write.append(("p", "superseded", "h"))  # someone tags h production by hand mid-promotion
    record = promotion.promote(store, to="production", run_id="r", image="s", now=NOW + timedelta(seconds=1))
    assert store.images["s"].stage == "production" and store.images["h"].stage == "superseded"
    assert any("re-check" in note for note in record.notes)


def test_recheck_loser_goes_back_to_staging() -> None:
    store = MemoryStore(image("p", "production"), image("s", "staging", timedelta(days=2)), image("z", "staging"))
    store.on_write.append(("s", "production", "z"))  # a racing promotion; the greater id wins a promoted-at tie
    with pytest.raises(JobFailed, match="lost a race"):
        promotion.promote(store, to="production", run_id="r", image="s", now=NOW)
    assert store.images["s"].stage == "staging" and store.images["z"].stage == "production"


def test_rollback_restores_the_most_recently_superseded() -> None:
    store = MemoryStore(
        image("v3", "production"),
        image("v2", "superseded", superseded_at=NOW - timedelta(days=1)),
        image("v1", "superseded", superseded_at=NOW - timedelta(days=9)),
    )
    record = promotion.rollback(store, family="app", run_id="r", now=NOW)
    assert record.image == "v2" and store.writes == [("v3", "superseded"), ("v2", "production")]
    again = promotion.rollback(store, family="app", run_id="r2", now=NOW + timedelta(minutes=1))
    assert again.image == "v3"  # the one just superseded is the most recent


def test_rollback_without_superseded_fails() -> None:
    with pytest.raises(JobFailed, match="no superseded image"):
        promotion.rollback(MemoryStore(image("p", "production")), family="app", run_id="r", now=NOW)


@pytest.mark.parametrize(
    ("delta", "text"), [(timedelta(0), "0m"), (timedelta(hours=25, minutes=3), "1d 1h 3m"), (timedelta(-5), "0m")]
)
def test_human_durations(delta: timedelta, text: str) -> None:
    assert promotion.human(delta) == text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["promote", "--family", "app", "--to", "prod"], "--to 'prod': expected staging or production"),
        (["promote", "--family", "App X", "--to", "production"], "--family 'App X': not a valid image family"),
        (["promote", "--family", "app", "--to", "production", "--min-soak", "1 day"], "--min-soak '1 day'"),
        (["promote", "--target", "gcp", "--family", "app", "--to", "staging"], "--target 'gcp': unknown target"),
        (["rollback", "--family", "Bad_"], "--family 'Bad_': not a valid image family"),
        (["rebuild", "--families", "/nonexistent.yaml"], "--families /nonexistent.yaml: cannot read"),
    ],
)
def test_bad_promotion_requests_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    from flows.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def _family() -> list[StagedImage]:
    old = image("p", "production", promoted_at=NOW - timedelta(days=9))
    return [old, image("s", "staging", timedelta(days=2))]


def test_a_failure_at_the_production_write_is_undone_at_once() -> None:
    """Item 3 of issue 11: the old production is restored (with its own promoted-at), the new image is
    back at staging with its soak, no intent is left, and the error says so."""
    store = FailingStore(*_family())
    store.fail_on = ("s", "production")
    with pytest.raises(JobFailed, match=r"injected: writing production on s\); undone: app-p \(p\) production"):
        promotion.promote(store, to="production", run_id="r", family="app", now=NOW)
    assert store.images["p"].stage == "production"
    assert store.images["p"].promoted_at == NOW - timedelta(days=9)
    assert (store.images["s"].stage, store.images["s"].staged_at) == ("staging", NOW - timedelta(days=2))
    assert store.intent is None
    assert max(store.productions_seen) == 1


@pytest.mark.parametrize("command", ["promote", "rollback", "sweep"])
def test_a_kill_between_the_writes_is_undone_by_the_next_command(command: str) -> None:
    store = KilledStore(*_family(), image("o", "superseded", superseded_at=NOW - timedelta(days=20)))
    store.fail_on = ("s", "production")
    with pytest.raises(Killed):
        promotion.promote(store, to="production", run_id="killed", family="app", now=NOW)
    assert [i.id for i in store.images.values() if i.stage == "production"] == [], "the kill left no production"
    assert store.intent is not None and store.intent.run_id == "killed"

    if command == "promote":
        record = promotion.promote(store, to="production", run_id="next", family="app", now=NOW)
        assert store.images["s"].stage == "production" and store.images["p"].stage == "superseded"
        notes = record.notes
    elif command == "rollback":
        record = promotion.rollback(store, family="app", run_id="next", now=NOW)
        assert store.images["o"].stage == "production"  # rolled back from the restored production p
        assert store.images["p"].stage == "superseded"
        notes = record.notes
    else:
        notes, failures = promotion.resume_all(store, "sweep")
        assert failures == []
        assert store.images["p"].stage == "production" and store.images["s"].stage == "staging"
    assert any("found an unfinished promote of app (run killed" in n and "undone" in n for n in notes), notes
    assert store.intent is None


def test_a_kill_after_the_commit_point_is_completed() -> None:
    store = MemoryStore(*_family())
    store.intent = promotion.Intent("killed", "promote", "app", "s", "staging", ("p",), "2026-06-01T12:00:00+00:00")
    store.images["s"] = replace(store.images["s"], stage="production")  # the production write went through
    store.images["p"] = replace(store.images["p"], stage="production")  # its demotion was lost
    notes, failures = promotion.resume_all(store, "sweep")
    assert (store.images["s"].stage, store.images["p"].stage) == ("production", "superseded")
    assert "completed" in notes[0] and store.intent is None and failures == []


class WithAnUnreadableFamily(MemoryStore):
    """Two families with an intent listed; ``broken``'s record cannot be read."""

    def families_with_intent(self) -> list[str]:
        return ["broken", "app"]

    def read_intent(self, family: str) -> promotion.Intent | None:
        if family == "broken":
            raise JobFailed("/state/docker/broken.json: unreadable promotion record (Expecting value)")
        return self.intent


@pytest.mark.parametrize("apply", [True, False])
def test_one_unreadable_family_does_not_stop_the_others_being_resumed(apply: bool) -> None:
    store = WithAnUnreadableFamily(*_family())
    store.intent = promotion.Intent("killed", "promote", "app", "s", "staging", ("p",), "2026-06-01T12:00:00+00:00")
    notes, failures = promotion.resume_all(store, "sweep", apply=apply)
    assert failures == ["broken: /state/docker/broken.json: unreadable promotion record (Expecting value)"]
    if apply:
        assert len(notes) == 1 and "found an unfinished promote of app (run killed" in notes[0]
        assert store.intent is None
    else:
        assert notes == ["would resume an unfinished promote of app (run killed, started 2026-06-01T12:00:00+00:00)"]
        assert store.intent is not None


def test_intent_fits_an_ec2_tag_and_reads_back() -> None:
    intent = promotion.Intent(
        "0b6f4c1e-6a55-4f0e-9a57-2f4a9a0c1d2e",
        "rollback",
        "app",
        "ami-1",
        "superseded",
        ("ami-0123456789abcdef0",),
        "2026-06-01T12:00:00+00:00",
    )
    text = intent.to_text()
    assert len(text) <= 256
    assert promotion.Intent.from_text("app", "ami-1", text) == intent
