"""The Docker engine client bakery uses everywhere, and the names bakery gives what it runs on the engine."""

from __future__ import annotations

import docker
import docker.errors

from tasks.errors import JobFailed

# packer/docker.pkr.hcl names Packer's build container after the run, and DockerTarget.adopt_build the
# container it commits an image's labels from.
PACKER_BUILDER_PREFIX = "bakery-build-"


def client() -> docker.DockerClient:
    """A client for the engine named by the usual DOCKER_* variables; a clear error when none answers."""
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise JobFailed(f"docker: no engine answers ({exc}); is dockerd running?") from exc
