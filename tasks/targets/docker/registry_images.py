"""Images in a registry for retention (``bake retention --registry``): version tags, deleted by digest.

One record per ``<family>:<version>`` tag of the family's repository; its stage comes from the family's
stage record and the ``production`` tag (``tasks.targets.docker.registry_stages``). Only digests bakery pushed (in
the family's stage record) are managed: anything else in the repository is never touched. Deleting is
``DELETE /v2/<repository>/manifests/<digest>``, which removes every tag naming that digest, so a
deletion is refused while any other tag (another version, a stage tag, ``latest``) points at the same
digest. The registry frees the blobs only when its garbage collection runs (Distribution:
``registry garbage-collect <config>``); the deletion says so. The registry needs deletes enabled
(``storage: delete: enabled: true``); without, a deletion fails with that line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.targets.base import ImageRecord, parse_time, recheck_each
from tasks.targets.docker.image_registry import Registry, RegistryClient, RegistryError
from tasks.targets.docker.registry_stages import NOT_VERSIONS, RegistryStages, stage_in_registry

GARBAGE_COLLECTION_NOTE = "blob space comes back when the registry's garbage collection runs"
EPOCH = datetime.fromtimestamp(0, UTC)
NO_SUCH_DIGEST = "sha256:" + "0" * 64


class RegistryImages:
    """The version tags of bakery's families in one registry, as an ``ImageStore``."""

    target = "docker"

    def __init__(self, registry: Registry, families: list[str] | None = None, locks: Path | None = None) -> None:
        """``locks``: as for ``RegistryStages`` (tests without a Prefect server)."""
        self.registry = registry
        self.client = RegistryClient(registry)
        self.stages = RegistryStages(registry, self.client, locks=locks)
        self.families = families

    def family_names(self) -> list[str]:
        """The named families, else every repository ``[PREFIX/]<family>`` of the registry's catalog."""
        if self.families:
            return list(self.families)
        return self.client.families()

    def _tags_by_digest(self, family: str) -> dict[str, list[str]]:
        repository = self.registry.repository(family)
        found: dict[str, list[str]] = {}
        for tag in self.client.tags(repository):
            digest = self.client.digest_of(repository, tag)
            if digest:
                found.setdefault(digest, []).append(tag)
        return found

    def family_records(self, family: str) -> list[ImageRecord]:
        record = self.stages.read_record(family)
        by_digest = self._tags_by_digest(family)
        pointers = {
            tag: d for d, tags in by_digest.items() for tag in tags if tag in ("production", "staging", "superseded")
        }
        images = []
        for digest, tags in by_digest.items():
            entry: dict[str, Any] = record["images"].get(digest) or {}
            stage = stage_in_registry(digest, pointers, entry.get("stage"))
            since = entry.get("superseded_at") if stage == "superseded" else entry.get("staged_at")
            pins = ("tagged latest",) if "latest" in tags and stage != "production" else ()
            for version in sorted(set(tags) - NOT_VERSIONS):
                images.append(
                    ImageRecord(
                        ref=f"{family}:{version}",
                        image_id=digest,
                        name=f"{family}:{version}",
                        family=family,
                        version=version,
                        created=parse_time(entry.get("pushed_at")) or EPOCH,
                        stage=stage,
                        managed=bool(entry),
                        pins=pins,
                        stage_since=parse_time(since),
                    )
                )
        return images

    def inventory(self) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        images = [image for family in self.family_names() for image in self.family_records(family)]
        return images, {}  # a registry knows no containers: what runs from an image is the engines' business

    def recheck(self, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
        """Read again just before deleting: each image's stage now, and every other tag naming its digest."""
        return recheck_each(self._recheck_one, images)

    def _recheck_one(self, image: ImageRecord) -> list[str]:
        family = str(image.family)
        repository = self.registry.repository(family)
        if self.client.digest_of(repository, image.version) != image.image_id:
            return [] if self.client.digest_of(repository, image.version) is None else ["retagged since the plan"]
        others = sorted(
            tag
            for tag in self.client.tags(repository)
            if tag != image.version and self.client.digest_of(repository, tag) == image.image_id
        )
        reasons = (
            [f"digest also tagged {', '.join(others)} (deleting it would remove those tags too)"] if others else []
        )
        stage = self.stages.stage_of(image.image_id, family)
        if stage != (image.stage or "testing"):
            reasons.append(f"stage changed since the plan: now {stage}")
        return reasons

    def before_deletes(self, family: str) -> None:
        """Before the first deletion: the registry takes deletes at all. A ``DELETE`` of a digest nobody
        has answers 404 when deletes are enabled and 405 when not; then one line, nothing deleted."""
        repository = self.registry.repository(family)
        try:
            path = f"/v2/{repository}/manifests/{NO_SUCH_DIGEST}"
            self.client.request("DELETE", path, f"deleting from {repository}", ok=(404,))
        except RegistryError as exc:
            raise RegistryError(f"{exc}; nothing was deleted") from None

    def delete_image(self, image: ImageRecord) -> str:
        family = str(image.family)
        repository = self.registry.repository(family)
        if self.client.digest_of(repository, image.version) is None:
            return "already gone"
        self.client.delete_manifest(repository, image.image_id)
        try:
            with self.stages.update(family) as data:
                entry = data["images"].get(image.image_id)
                if isinstance(entry, dict):
                    entry["stage"] = "deleted"
        except RegistryError:
            pass  # the manifest is gone; the record only says so
        return "deleted"

    def delete_snapshot(self, snapshot_id: str) -> str:
        raise NotImplementedError("registry images have no snapshots")
