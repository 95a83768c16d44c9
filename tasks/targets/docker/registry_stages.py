"""Stages of Docker images in a registry (``--registry``): tags written by digest, the record beside them.

In the family's repository ``[PREFIX/]<family>``:

- ``<version>`` — what the build pushed (one per build);
- ``production`` and ``latest``, ``staging``, ``superseded`` — pointer tags, each written by digest
  (the manifest read by digest, stored under the tag: ``RegistryClient.tag``);
- ``bakery-stages`` — the family's stage record: an OCI manifest whose config blob
  (``application/vnd.bakery.stages.v1+json``) is the same JSON document ``tasks.targets.docker.stages``
  keeps on disk (per image digest: version, stage, staged/promoted/superseded times, last test; the
  history; a promotion's intent). Every worker reads the same record from the registry.

The registry API removes a tag only with its manifest, so a pointer tag keeps naming its last image
until another takes it (``staging`` may still name the image that became production). So the
``production`` tag decides production (at most one image), and the record decides every other stage.

Every change of a family's stages (a promotion or rollback as a whole, and each read-change-write of its
record) holds the family's *promotion slot*: a Prefect global concurrency limit on the server every
worker talks to (``tasks.steps.locks.promotion_lock``, the machinery of the family build slot: a lease, a
holder record, a dead holder's slot given back). So two machines promoting one family, or a promotion
and a pipeline recording its test, take turns, and none loses the other's record write. Within one
thread the slot is taken once (a promotion's own record writes run inside it).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from tasks.errors import JobFailed, UsageError
from tasks.targets.base import (
    Intent,
    PromotionRecord,
    StagedImage,
    families_holding_intent,
    iso,
    parse_time,
    utcnow,
)
from tasks.targets.docker.client import FAMILY_LABEL, MANAGED_LABEL
from tasks.targets.docker.image_registry import DIGEST_RE, Manifest, Registry, RegistryClient, sha256_digest
from tasks.targets.docker.stages import _flock, checked_record, record_stage

RECORD_TAG = "bakery-stages"
RECORD_MEDIA_TYPE = "application/vnd.bakery.stages.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG_TYPES = ("application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json")
POINTER_TAGS = {"production": ("production", "latest"), "staging": ("staging",), "superseded": ("superseded",)}
NOT_VERSIONS = frozenset({"production", "latest", "staging", "superseded", RECORD_TAG})
_held = threading.local()  # the families whose promotion slot this thread holds


def _shared_slot(family: str) -> contextlib.AbstractContextManager[None]:
    from tasks.steps.locks import promotion_lock

    return promotion_lock(family)


class RegistryStages:
    """The ``StageStore`` of a registry: any machine that reaches it reads and moves the same stages."""

    target = "docker"

    def __init__(self, registry: Registry, client: RegistryClient | None = None, locks: Path | None = None) -> None:
        """``locks``: a directory of ``flock`` files instead of the shared promotion slot; holds on one
        machine only (tests of the stage logic without a Prefect server)."""
        self.registry = registry
        self.client = client or RegistryClient(registry)
        self._families: dict[str, str | None] = {}  # digest -> the family its image says it is of
        self._slot: Callable[[str], contextlib.AbstractContextManager[None]] = (
            (lambda family: _flock(locks / f"registry-{family}.lock", timeout=120)) if locks else _shared_slot
        )

    # -- the record -------------------------------------------------------------------------------

    def read_record(self, family: str) -> dict[str, Any]:
        repository = self.registry.repository(family)
        if self.client.digest_of(repository, RECORD_TAG) is None:
            return checked_record({}, family)
        manifest = self.client.manifest(repository, RECORD_TAG).json()
        config = manifest.get("config") or {}
        if config.get("mediaType") != RECORD_MEDIA_TYPE:
            raise JobFailed(f"registry {self.registry}: {repository}:{RECORD_TAG} is not a bakery stage record")
        try:
            return checked_record(json.loads(self.client.blob(repository, str(config.get("digest")))), family)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise JobFailed(f"registry {self.registry}: {repository}:{RECORD_TAG}: unreadable ({exc})") from None

    def write_record(self, family: str, data: dict[str, Any]) -> None:
        repository = self.registry.repository(family)
        content = json.dumps(data, indent=2, sort_keys=True).encode()
        config_digest = self.client.upload_blob(repository, content)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": RECORD_MEDIA_TYPE, "digest": config_digest, "size": len(content)},
                "layers": [],
            }
        ).encode()
        self.client.put_manifest(repository, RECORD_TAG, Manifest(body, OCI_MANIFEST, sha256_digest(body)))

    @contextlib.contextmanager
    def update(self, family: str) -> Iterator[dict[str, Any]]:
        with self.lock(family, ""):
            data = self.read_record(family)
            yield data
            self.write_record(family, data)

    # -- images -----------------------------------------------------------------------------------

    def _pointers(self, family: str) -> dict[str, str]:
        """Pointer tag → digest, for the ones that exist."""
        repository = self.registry.repository(family)
        found = {}
        for tag in ("production", "staging", "superseded"):
            digest = self.client.digest_of(repository, tag)
            if digest:
                found[tag] = digest
        return found

    def _staged(
        self, digest: str, family: str, version: str, data: dict[str, Any], pointers: dict[str, str]
    ) -> StagedImage:
        entry = data["images"].get(digest, {})
        version = version or str(entry.get("version") or "")
        return StagedImage(
            id=digest,
            family=family,
            version=version,
            name=f"{family}:{version}" if version else digest[:19],
            stage=stage_in_registry(digest, pointers, entry.get("stage")),
            created=parse_time(entry.get("pushed_at")),
            staged_at=parse_time(entry.get("staged_at")),
            promoted_at=parse_time(entry.get("promoted_at")),
            superseded_at=parse_time(entry.get("superseded_at")),
        )

    def image_family(self, repository: str, digest: str) -> str | None:
        """The family a bakery-built image at ``digest`` belongs to (its config's ``name`` label, set with
        ``managed-by`` when bakery adopted the build); ``None`` for anything else (not an image config, not
        bakery's). Read once per digest: a digest's content never changes."""
        if digest not in self._families:
            found: str | None = None
            config = self.client.manifest(repository, digest).json().get("config") or {}
            if config.get("mediaType") in IMAGE_CONFIG_TYPES:
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    labels = json.loads(self.client.blob(repository, str(config["digest"]))).get("config", {})
                    labels = (labels or {}).get("Labels") or {}
                    if labels.get(MANAGED_LABEL) and labels.get(FAMILY_LABEL):
                        found = str(labels[FAMILY_LABEL])
            self._families[digest] = found
        return self._families[digest]

    def check_family(self, family: str, digest: str, tag: str) -> None:
        """A tag of ``family``'s repository must not name another family's image: stages would move the
        wrong image (one line, exit 1; checked before anything is written)."""
        repository = self.registry.repository(family)
        owner = self.image_family(repository, digest)
        if owner is not None and owner != family:
            raise JobFailed(
                f"registry {self.registry}: {repository}:{tag} points at {digest[:19]}, an image of family {owner} "
                f"(its label name={owner}), not {family}: nothing changed (retag or delete {repository}:{tag})"
            )

    def find(self, reference: str) -> StagedImage:
        """``<family>:<version>`` or ``<family>@sha256:…`` in the registry."""
        family, version, digest = split_reference(reference)
        repository = self.registry.repository(family)
        if not digest:
            digest = self.client.digest_of(repository, version) or ""
            if not digest:
                raise UsageError(f"--image {reference!r}: no such tag in registry {self.registry}")
        self.check_family(family, digest, version or digest)
        data = self.read_record(family)
        if not version:
            version = str(data["images"].get(digest, {}).get("version") or "")
        return self._staged(digest, family, version, data, self._pointers(family))

    def family_images(self, family: str) -> list[StagedImage]:
        repository = self.registry.repository(family)
        data = self.read_record(family)
        pointers = self._pointers(family)
        images: dict[str, StagedImage] = {}
        for tag in sorted(self.client.tags(repository)):
            if tag in NOT_VERSIONS:
                continue
            digest = self.client.digest_of(repository, tag)
            if digest and digest not in images:
                self.check_family(family, digest, tag)
                images[digest] = self._staged(digest, family, tag, data, pointers)
        return list(images.values())

    def stage_of(self, digest: str, family: str) -> str:
        data = self.read_record(family)
        return stage_in_registry(digest, self._pointers(family), data["images"].get(digest, {}).get("stage"))

    def record_push(self, digest: str, family: str, version: str, run_id: str) -> None:
        with self.update(family) as data:
            entry = data["images"].setdefault(digest, {})
            entry.update({"version": version, "pushed_at": iso(utcnow()), "pushed_by_run": run_id})

    def record_test(self, digest: str, family: str, version: str, result: str, run_id: str) -> None:
        with self.update(family) as data:
            entry = data["images"].setdefault(digest, {})
            if version:
                entry.setdefault("version", version)
            entry.update({"last_tested": iso(utcnow()), "last_result": result, "last_test_run": run_id})

    @contextlib.contextmanager
    def lock(self, family: str, run_id: str) -> Iterator[None]:
        """The family's promotion slot, shared by every machine (module doc); taken once per thread."""
        held: set[str] = _held.__dict__.setdefault("families", set())
        if family in held:
            yield
            return
        with self._slot(family):
            held.add(family)
            try:
                yield
            finally:
                held.discard(family)

    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None:
        self.write_stage(image.id, image.family, image.version, stage, run_id, tags)

    def write_stage(
        self, digest: str, family: str, version: str, stage: str, run_id: str, tags: dict[str, str] | None = None
    ) -> None:
        """Move the pointer tags for ``stage`` (by digest), then record the stage and its time."""
        if not DIGEST_RE.fullmatch(digest):
            raise JobFailed(f"registry {self.registry}: {digest!r} is not a sha256 digest")
        repository = self.registry.repository(family)
        self.check_family(family, digest, version or digest)
        for tag in POINTER_TAGS.get(stage, ()):
            self.client.tag(repository, digest, tag)
        with self.update(family) as data:
            record_stage(data, digest, version, stage, run_id, tags)

    def write_intent(self, family: str, intent: Intent) -> None:
        with self.update(family) as data:
            data["intent"] = {**asdict(intent), "old": list(intent.old)}

    def read_intent(self, family: str) -> Intent | None:
        found = self.read_record(family).get("intent")
        if not isinstance(found, dict) or not found.get("run_id"):
            return None
        return Intent(**{**found, "family": family, "old": tuple(found.get("old") or ())})

    def clear_intent(self, family: str, intent: Intent) -> None:
        with self.update(family) as data:
            if (data.get("intent") or {}).get("run_id") == intent.run_id:
                del data["intent"]

    def families_with_intent(self) -> list[str]:
        """Of the registry's catalog (``StageStore.families_with_intent``)."""
        return families_holding_intent(self.client.families(), self.read_intent)

    def left_at_testing(self, runs: set[str], pushed_before: datetime) -> list[str]:
        """Images still at ``testing`` that a run left: one of ``runs`` (whose leftovers the sweep found),
        or pushed before ``pushed_before`` and never tested. One line each, for the sweep's report: no
        stage moves (a later test moves it; retention deletes it)."""
        lines = []
        for family in self.client.families():
            data = self.read_record(family)
            if not data["images"]:
                continue
            pointers = self._pointers(family)
            for digest, entry in data["images"].items():
                if not isinstance(entry, dict) or stage_in_registry(digest, pointers, entry.get("stage")) != "testing":
                    continue
                run, pushed = str(entry.get("pushed_by_run") or ""), parse_time(entry.get("pushed_at"))
                stale = pushed is not None and pushed < pushed_before and not entry.get("last_tested")
                if run in runs or stale:
                    lines.append(
                        f"registry {self.registry}: {family}:{entry.get('version') or '?'} ({digest[:19]}) is still at "
                        f"testing, left by run {run or '?'} (pushed {entry.get('pushed_at') or '?'}): test it again "
                        f"(bake test --image {family}:{entry.get('version')} --registry {self.registry}) or let "
                        "retention delete it"
                    )
        return lines

    def after_change(self, family: str, production: StagedImage, record: PromotionRecord) -> None:
        repository = self.registry.repository(family)
        found = self.client.digest_of(repository, "production")
        if found != production.id:
            raise JobFailed(
                f"registry {self.registry}: {repository}:production is {found}, expected {production.id[:19]}"
            )
        record.published[f"{self.registry.image(family)}:production"] = production.id
        record.published[f"{self.registry.image(family)}:latest"] = production.id


def stage_in_registry(digest: str, pointers: dict[str, str], recorded: str | None) -> str:
    """The ``production`` tag decides production; the record every other stage (a pointer tag may lag),
    the other pointer tags only what the record does not know."""
    if pointers.get("production") == digest:
        return "production"
    if recorded == "production":
        return "superseded"  # the production tag moved elsewhere
    if recorded:
        return recorded
    for stage in ("staging", "superseded"):
        if pointers.get(stage) == digest:
            return stage
    return "testing"


def split_reference(reference: str) -> tuple[str, str, str]:
    """``family:version`` → (family, version, ""); ``family@sha256:…`` → (family, "", digest)."""
    from tasks.inputs import check_family

    family, at, digest = reference.partition("@")
    version = ""
    if at:
        if not DIGEST_RE.fullmatch(digest):
            raise UsageError(f"--image {reference!r}: expected <family>@sha256:<64 hex digits>")
    else:
        family, colon, version = reference.rpartition(":")
        if not colon or not version:
            raise UsageError(f"--image {reference!r}: with --registry, give <family>:<version> or <family>@sha256:…")
    check_family(family)
    return family, version, digest
