"""Target names to implementations."""

from __future__ import annotations

from tasks.errors import UsageError
from tasks.targets.base import Target


def get_target(name: str) -> Target:
    if name == "docker":
        from tasks.targets.docker import DockerTarget

        return DockerTarget()
    raise UsageError(f"--target {name!r}: not available yet (available: docker)")
