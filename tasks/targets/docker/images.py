"""Docker images for retention: ``<family>:<version>`` tags, stage tags, and the containers that use them.

One record per version tag. The stage is read from the tags on the same image id (``<family>:staging``,
``<family>:production``, ``<family>:superseded`` as ``stages.py`` moves them; ``latest``
follows production and is protected as well). Only images carrying
the ``managed-by`` label Packer's ``changes`` put on them (``packer`` or ``bakery``) are ever removed, and
removal is by tag (``docker rmi <family>:<version>``, never forced): the engine refuses while a container
uses the image, and an image id with other tags left is only untagged. Layers are the engine's business.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors

from tasks.errors import JobFailed
from tasks.targets.base import ImageRecord, is_managed, recheck_each
from tasks.targets.docker.client import STAGE_TAGS, client, container_name, pointer_stage
from tasks.targets.docker.instances import FAMILY_LABEL, MANAGED_LABEL


def parse_created(value: str | int | None) -> datetime:
    """Docker's ``Created``: RFC 3339 UTC with nanoseconds (inspect) or Unix seconds (list)."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC)
    if not value:
        return datetime.fromtimestamp(0, UTC)
    head, _, fraction = value.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(f"{head}.{fraction[:6].ljust(6, '0')}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def records_from_images(images: list[dict[str, Any]], created: dict[str, datetime] | None = None) -> list[ImageRecord]:
    """``engine.api.images()`` entries → one record per ``repository:version`` tag."""
    records = []
    for image in images:
        tags = [t for t in image.get("RepoTags") or [] if t and t != "<none>:<none>"]
        by_repo: dict[str, set[str]] = defaultdict(set)
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            if repo:
                by_repo[repo].add(name)
        labels = image.get("Labels") or {}
        for repo, names in by_repo.items():
            stage = pointer_stage(names)
            pins = ("tagged latest",) if "latest" in names and stage != "production" else ()
            foreign = built_as(labels, repo)
            for version in sorted(names - STAGE_TAGS):
                records.append(
                    ImageRecord(
                        ref=f"{repo}:{version}",
                        image_id=image["Id"],
                        name=f"{repo}:{version}",
                        family=repo,
                        version=version,
                        created=(created or {}).get(image["Id"]) or parse_created(image.get("Created")),
                        stage=stage,
                        managed=is_managed(labels.get(MANAGED_LABEL)),
                        pins=pins,
                        foreign=foreign,
                    )
                )
    return records


def built_as(labels: dict[str, str], repository: str) -> str:
    """Why an image is not bakery's own build of ``repository`` (empty when it is). bakery labels what it
    builds ``name=<family>`` (packer/docker.pkr.hcl, ``DockerTarget.adopt_build``); an image built ``FROM``
    it inherits that label under another repository name, so the two must agree."""
    name = labels.get(FAMILY_LABEL)
    if name == repository:
        return ""
    if not name:
        return f"no {FAMILY_LABEL} label"
    return f"label {FAMILY_LABEL}={name} but repository {repository}: built from a bakery image, not by bakery"


class DockerImages:
    """The local engine's tagged images, as an ``ImageStore``."""

    target = "docker"

    def __init__(self, engine: docker.DockerClient | None = None) -> None:
        self.engine = engine or client()

    def list_images(self) -> list[ImageRecord]:
        images = self.engine.api.images()
        # The list gives whole seconds; managed images get their exact creation time, so order is exact.
        created = {}
        for image in images:
            if is_managed((image.get("Labels") or {}).get(MANAGED_LABEL)) and image.get("RepoTags"):
                with contextlib.suppress(docker.errors.NotFound):
                    created[image["Id"]] = parse_created(self.engine.api.inspect_image(image["Id"])["Created"])
        return records_from_images(images, created)

    def usage(self) -> dict[str, list[str]]:
        """Image id → the containers (running or not) made from it."""
        used: dict[str, list[str]] = defaultdict(list)
        for container in self.engine.api.containers(all=True):
            used[container.get("ImageID", "")].append(
                f"container {container_name(container)} ({container.get('State', '?')})"
            )
        return dict(used)

    def inventory(self) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        try:
            return self.list_images(), self.usage()
        except docker.errors.DockerException as exc:
            raise JobFailed(f"docker: listing images and containers failed: {exc}") from exc

    def delete_image(self, image: ImageRecord) -> str:
        try:
            self.engine.api.remove_image(image.ref)
        except docker.errors.ImageNotFound:
            return "already gone"
        return "deleted"

    def delete_snapshot(self, snapshot_id: str) -> str:
        raise NotImplementedError("Docker images have no snapshots")

    def before_deletes(self, family: str) -> None:
        """Deletes always work here: nothing to check."""

    def recheck(self, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
        """Each image's stage tags and its containers, read again: what changed since the plan (the
        containers listed once for the batch)."""
        if not images:
            return {}
        containers = self.engine.api.containers(all=True)

        def one(image: ImageRecord) -> list[str]:
            try:
                found = self.engine.api.inspect_image(image.ref)
            except docker.errors.ImageNotFound:
                return []  # gone already: the deletion says so
            repo = image.ref.rpartition(":")[0]
            names = {t.rpartition(":")[2] for t in found.get("RepoTags") or [] if t.rpartition(":")[0] == repo}
            stage = pointer_stage(names)
            reasons = []
            if stage != image.stage:
                reasons.append(f"stage changed since the plan: now {stage or 'none'}")
            if "latest" in names and "tagged latest" not in image.pins:
                reasons.append("tagged latest since the plan")
            users = [
                f"container {container_name(c)} ({c.get('State', '?')})"
                for c in containers
                if c.get("ImageID") == found["Id"]
            ]
            reasons.extend(f"in use since the plan: {use}" for use in users)
            return reasons

        return recheck_each(one, images)


def local_image_id(reference: str) -> str | None:
    """The id of the image ``reference`` in the local engine; ``None`` when the engine has no such image
    (an engine that does not answer raises)."""
    try:
        return str(docker.from_env().images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None
