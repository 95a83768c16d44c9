"""Stages of local Docker images: pointer tags on the engine, times in a small JSON record.

Tags (on the same image id as ``<family>:<version>``):

- ``<family>:production`` and ``<family>:latest`` — the production image (``latest`` follows it);
- ``<family>:staging`` — the newest image that passed its tests;
- ``<family>:superseded`` — the most recently superseded image (what ``bake rollback`` goes back to).

A tag names exactly one image, so the engine itself can never show two production images of a family.
Images are immutable and carry no writable metadata, so the times and older stages live in
``$BAKERY_STATE_DIR/docker/<family>.json``::

    {"family": "app-base",
     "images": {"sha256:…": {"version": "1.2.0", "stage": "production", "staged_at": "…",
                             "promoted_at": "…", "superseded_at": null, "run_id": "…", "forced": false}},
     "history": [{"at": "…", "image": "sha256:…", "version": "1.2.0", "stage": "production", "run_id": "…"}]}

Its shape is ``StageRecord`` below; the registry's record (``registry_stages.py``) is checked against the
same model on every read. The record is rewritten atomically (temp file + rename) under an ``flock``; the
tags stay the truth for ``production``/``staging``/``superseded`` where the two disagree (a tag moved by
hand wins). The record is per machine, like the engine it describes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.errors import JobFailed, UsageError
from tasks.request import state_dir
from tasks.targets.base import (
    TAG_FORCED,
    TAG_PROMOTED_AT,
    TAG_RUN_ID,
    TAG_STAGED_AT,
    TAG_SUPERSEDED_AT,
    Intent,
    PromotionRecord,
    StagedImage,
    families_holding_intent,
    iso,
    parse_time,
    utcnow,
)
from tasks.targets.docker.client import POINTER_STAGES, STAGE_TAGS, images_named

_FIELDS = {
    TAG_STAGED_AT: "staged_at",
    TAG_PROMOTED_AT: "promoted_at",
    TAG_SUPERSEDED_AT: "superseded_at",
    TAG_RUN_ID: "run_id",
}
HISTORY_LIMIT = 500


# --- the family's stage record: one definition for the local file and the registry's ``bakery-stages`` ------


class ImageEntry(BaseModel):
    """One image of the record (times as ``iso`` writes them; any field may be missing)."""

    model_config = ConfigDict(extra="allow")  # a newer bakery may add fields: kept, not refused

    version: str | None = None
    stage: str | None = None  # a stage, or ``deleted`` for a registry image retention removed
    run_id: str | None = None
    staged_at: str | None = None
    promoted_at: str | None = None
    superseded_at: str | None = None
    forced: bool | None = None
    pushed_at: str | None = None  # registry: when the pipeline pushed it, and which run
    pushed_by_run: str | None = None
    last_tested: str | None = None  # a test of an image whose stage it must not move (Target.record_test_result)
    last_result: str | None = None
    last_test_run: str | None = None


class HistoryEntry(BaseModel):
    """One stage change, newest last (at most ``HISTORY_LIMIT``)."""

    model_config = ConfigDict(extra="allow")

    at: str
    image: str
    version: str = ""
    stage: str
    run_id: str = ""


class IntentEntry(BaseModel):
    """A production switch in progress (``base.Intent``, its ``old`` a list)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    action: str
    new: str
    was: str
    old: list[str] = []
    at: str = ""


class StageRecord(BaseModel):
    """A family's stage record: ``$BAKERY_STATE_DIR/docker/<family>.json``, or the registry's ``bakery-stages``."""

    model_config = ConfigDict(extra="allow")

    family: str
    images: dict[str, ImageEntry] = {}
    history: list[HistoryEntry] = []
    intent: IntentEntry | None = None


def checked_record(raw: object, family: str) -> dict[str, Any]:
    """A record as read, checked against ``StageRecord``, with ``family``, ``images`` and ``history`` filled
    in when missing; the record stays a plain mapping (what is written back is what was read, plus the
    change). A record of another shape is a ``ValueError`` naming the first field that is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    data: dict[str, Any] = {"family": family, "images": {}, "history": [], **raw}
    try:
        StageRecord.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise ValueError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    return data


def record_stage(
    data: dict[str, Any], image_id: str, version: str, stage: str, run_id: str, tags: dict[str, str] | None
) -> None:
    """One stage change in a family's record (``images`` and ``history``), kept locally or in a registry."""
    times = dict(tags or {})
    if stage == "staging":
        times.setdefault(TAG_STAGED_AT, iso(utcnow()))
    entry = data["images"].setdefault(image_id, {})
    if version:
        entry["version"] = version
    entry["stage"] = stage
    entry["run_id"] = run_id
    for key, value in times.items():
        if key in _FIELDS:
            entry[_FIELDS[key]] = value
    if stage in ("staging", "production"):
        entry["forced"] = times.get(TAG_FORCED) == "true"
    data["history"].append(
        {"at": iso(utcnow()), "image": image_id, "version": version, "stage": stage, "run_id": run_id}
    )
    del data["history"][:-HISTORY_LIMIT]


def records_dir() -> Path:
    return state_dir() / "docker"


@contextlib.contextmanager
def _flock(path: Path, timeout: float | None = None) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise JobFailed(f"another promotion holds {path} (waited {timeout:.0f} s)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FamilyRecord:
    """``$BAKERY_STATE_DIR/docker/<family>.json``: read, change, write atomically under a lock."""

    def __init__(self, family: str, directory: Path | None = None) -> None:
        self.family = family
        self.directory = directory or records_dir()
        self.path = self.directory / f"{family}.json"

    def read(self) -> dict[str, Any]:
        try:
            return checked_record(json.loads(self.path.read_text()), self.family)
        except FileNotFoundError:
            return checked_record({}, self.family)
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise JobFailed(f"{self.path}: unreadable promotion record ({exc})") from exc

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        with _flock(self.directory / f"{self.family}.record.lock", timeout=30):
            data = self.read()
            yield data
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.family}.", suffix=".json")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(data, out, indent=2, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise


def _created(attrs: dict[str, Any]) -> datetime | None:
    text = str(attrs.get("Created") or "")
    return parse_time(text[:19] + "+00:00") if len(text) >= 19 else None


def _names(tags: list[str], family: str) -> tuple[set[str], list[str]]:
    """(stage pointers on this image for ``family``, its version tags for ``family``)."""
    mine = [t.rpartition(":")[2] for t in tags if t.rpartition(":")[0] == family]
    return {t for t in mine if t in STAGE_TAGS}, sorted(t for t in mine if t not in STAGE_TAGS)


def stage_from(pointers: set[str], recorded: str | None) -> str:
    """The stage of one image: its pointer tags first, the record for what tags cannot say."""
    for stage in POINTER_STAGES:
        if stage in pointers:
            return stage
    if recorded == "production":
        return "superseded"  # the production tag was moved elsewhere outside bakery
    return recorded or "testing"


class DockerStages:
    """The ``StageStore`` of the local Docker engine."""

    target = "docker"

    def __init__(self, engine: docker.DockerClient | None = None, records: Path | None = None) -> None:
        if engine is None:
            from tasks.targets.docker.client import client

            engine = client()
        self.engine = engine
        self.records = records

    def record(self, family: str) -> FamilyRecord:
        return FamilyRecord(family, self.records)

    def _staged(self, found: Any, family: str, data: dict[str, Any]) -> StagedImage:
        pointers, versions = _names(found.tags, family)
        entry = data["images"].get(found.id, {})
        version = versions[0] if versions else str(entry.get("version") or "")
        return StagedImage(
            id=found.id,
            family=family,
            version=version,
            name=f"{family}:{version}" if version else found.id[:19],
            stage=stage_from(pointers, entry.get("stage")),
            created=_created(found.attrs),
            staged_at=parse_time(entry.get("staged_at")),
            promoted_at=parse_time(entry.get("promoted_at")),
            superseded_at=parse_time(entry.get("superseded_at")),
        )

    def find(self, reference: str) -> StagedImage:
        try:
            found = self.engine.images.get(reference)
        except docker.errors.ImageNotFound:
            raise UsageError(f"--image {reference!r}: no such image in the Docker engine") from None
        except docker.errors.APIError as exc:
            raise JobFailed(f"docker: cannot read image {reference!r}: {exc.explanation or exc}") from exc
        family = reference.rpartition(":")[0] if ":" in reference and not reference.startswith("sha256:") else ""
        if not family:
            repos = [t.rpartition(":")[0] for t in found.tags]
            if not repos:
                raise JobFailed(f"docker: image {reference!r} has no <family>:<version> tag")
            family = repos[0]
        return self._staged(found, family, self.record(family).read())

    def family_images(self, family: str) -> list[StagedImage]:
        data = self.record(family).read()
        images = images_named(self.engine, family)
        return [self._staged(found, family, data) for found in images]

    def stage_of(self, image_id: str, family: str) -> str:
        """The stage of one image of ``family``, read now (tags, then the record)."""
        return self._staged(self.engine.images.get(image_id), family, self.record(family).read()).stage or "testing"

    def record_test(self, image_id: str, family: str, version: str, result: str, run_id: str) -> None:
        """A test's result beside an image whose stage stays (``last_tested``, ``last_result``, ``last_test_run``)."""
        with self.record(family).update() as data:
            entry = data["images"].setdefault(image_id, {})
            if version:
                entry.setdefault("version", version)
            entry["last_tested"] = iso(utcnow())
            entry["last_result"] = result
            entry["last_test_run"] = run_id

    @contextlib.contextmanager
    def lock(self, family: str, run_id: str) -> Iterator[None]:
        """One promotion of a family at a time on this engine's machine (``flock``)."""
        with _flock(self.record(family).directory / f"{family}.promote.lock", timeout=120):
            yield

    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None:
        self.write_stage(image.id, image.family, image.version, stage, run_id, tags)

    def write_stage(
        self,
        image_id: str,
        family: str,
        version: str,
        stage: str,
        run_id: str,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Move the pointer tags for ``stage``, then record the stage and its time."""
        found = self.engine.images.get(image_id)
        if stage == "staging":
            found.tag(family, "staging")
        elif stage == "production":
            found.tag(family, "production")
            found.tag(family, "latest")
            self._untag_if_here(found, family, "staging")
            self._untag_if_here(found, family, "superseded")
        elif stage == "superseded":
            found.tag(family, "superseded")
        with self.record(family).update() as data:
            record_stage(data, image_id, version, stage, run_id, tags)

    def _untag_if_here(self, found: Any, family: str, tag: str) -> None:
        """Remove ``family:tag`` when it names this image (never the image's last tag)."""
        reference = f"{family}:{tag}"
        if reference in found.tags and len(found.tags) > 1:
            with contextlib.suppress(docker.errors.NotFound):
                self.engine.api.remove_image(reference, noprune=True)

    def write_intent(self, family: str, intent: Intent) -> None:
        with self.record(family).update() as data:
            data["intent"] = {**asdict(intent), "old": list(intent.old)}

    def read_intent(self, family: str) -> Intent | None:
        found = self.record(family).read().get("intent")
        if not isinstance(found, dict) or not found.get("run_id"):
            return None
        return Intent(**{**found, "family": family, "old": tuple(found.get("old") or ())})

    def clear_intent(self, family: str, intent: Intent) -> None:
        with self.record(family).update() as data:
            if (data.get("intent") or {}).get("run_id") == intent.run_id:
                del data["intent"]

    def families(self) -> list[str]:
        """The families with a record on this machine (an interrupted write's ``.<family>.*.json`` left out)."""
        directory = self.records or records_dir()
        paths = directory.glob("*.json") if directory.is_dir() else []
        return sorted(path.stem for path in paths if not path.name.startswith("."))

    def families_with_intent(self) -> list[str]:
        return families_holding_intent(self.families(), self.read_intent)

    def after_change(self, family: str, production: StagedImage, record: PromotionRecord) -> None:
        found = self.engine.images.get(f"{family}:production")
        if found.id != production.id:
            raise JobFailed(f"docker: {family}:production is {found.id[:19]}, expected {production.id[:19]}")
        record.published[f"{family}:production"] = production.id
        record.published[f"{family}:latest"] = production.id
