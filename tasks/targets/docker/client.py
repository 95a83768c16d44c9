"""The Docker engine client bakery uses everywhere, and the names bakery gives what it runs on the engine."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import docker
import docker.errors
from docker.models.images import Image as EngineImage

from tasks.errors import JobFailed

# Image labels (the seed's, as packer/docker.pkr.hcl sets them): retention acts only on managed-by.
MANAGED_LABEL = "managed-by"
# The family an image was built as; retention counts an image as bakery's own build only when this equals
# its repository (a child image inherits the label under another name).
FAMILY_LABEL = "name"

# packer/docker.pkr.hcl names Packer's build container after the run, and DockerTarget.adopt_build the
# container it commits an image's labels from.
PACKER_BUILDER_PREFIX = "bakery-build-"
# The pointer tags that name a stage (``<family>:production`` …), in the order a stage is read from them,
# and every tag that is not a version (``latest`` follows production).
POINTER_STAGES = ("production", "staging", "superseded")
STAGE_TAGS = frozenset({*POINTER_STAGES, "latest"})


def pointer_stage(names: Collection[str]) -> str | None:
    """The stage the pointer tags among ``names`` (tag names of one repository) say; None when none does."""
    return next((stage for stage in POINTER_STAGES if stage in names), None)


def client() -> docker.DockerClient:
    """A client for the engine named by the usual DOCKER_* variables; a clear error when none answers."""
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise JobFailed(f"docker: no engine answers ({exc}); is dockerd running?") from exc


# The engine is shared: another worker's retention, a sweep or a person may remove an image or a container
# between a listing and the inspect that follows it. docker-py's ``images.list`` (and ``containers.list``
# without ``ignore_removed``) then raises NotFound for something bakery never needed; these list what is
# still there.


def images_named(engine: docker.DockerClient, repository: str) -> list[EngineImage]:
    """The images with a tag in ``repository``, each inspected; one removed meanwhile is left out."""
    found = []
    for listed in engine.api.images(name=repository):
        try:
            found.append(engine.images.get(listed["Id"]))
        except docker.errors.NotFound:
            continue
    return found


def container_name(listed: dict[str, Any]) -> str:
    """The name of a container as the engine's container list gives it (its short id when it has none)."""
    return str((listed.get("Names") or [listed["Id"][:12]])[0]).lstrip("/")


def container_names(engine: docker.DockerClient, **filters: str | list[str]) -> dict[str, str]:
    """Container id → name of every container (running or not) matching ``filters``, without inspecting
    any of them (a container removed meanwhile never fails the listing)."""
    return {c["Id"]: container_name(c) for c in engine.api.containers(all=True, filters=filters)}
