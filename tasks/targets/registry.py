"""Target names to implementations."""

from __future__ import annotations

from tasks.errors import UsageError
from tasks.request import AwsOptions
from tasks.targets.base import Target
from tasks.targets.docker.image_registry import Registry


def get_target(name: str, aws: AwsOptions | None = None, registry: Registry | None = None) -> Target:
    """The target called ``name``; ``aws`` configures how AWS test instances are launched, ``registry``
    where Docker images are pushed and staged (none: the local engine only)."""
    if name == "docker":
        from tasks.targets.docker.instances import DockerTarget

        return DockerTarget(registry=registry)
    if name == "aws":
        from tasks.targets.aws.instances import AwsTarget

        return AwsTarget(aws)
    raise UsageError(f"--target {name!r}: not available (available: docker, aws)")
