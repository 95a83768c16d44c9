"""The Docker engine client bakery uses everywhere, and the names bakery gives what it runs on the engine."""

from __future__ import annotations

from collections.abc import Collection

import docker
import docker.errors

from tasks.errors import JobFailed

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
