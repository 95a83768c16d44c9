"""The one table of targets: a target name to its platform. Adding a target is one line here (and its folder).

The pipeline, promotion, retention, the sweep and the verify engine's production lookup all ask this
table; none of them names a platform module.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from tasks.errors import UsageError
from tasks.inputs import check_target
from tasks.targets.aws.platform import AwsPlatform
from tasks.targets.base import ImageStore, Platform, Production, Source, StageStore, Target
from tasks.targets.docker.platform import DockerPlatform

if TYPE_CHECKING:
    from tasks.request import AwsOptions
    from tasks.targets.docker.image_registry import Registry

PLATFORMS: dict[str, Platform] = {platform.name: platform for platform in (DockerPlatform(), AwsPlatform())}


def platform(name: str) -> Platform:
    """The platform called ``name``; an unknown name is a ``UsageError`` naming the ones there are."""
    found = PLATFORMS.get(name)
    if found is None:
        raise UsageError(f"--target {name!r}: not available (available: {', '.join(PLATFORMS)})")
    return found


def get_target(name: str, aws: AwsOptions | None = None, registry: Registry | None = None) -> Target:
    """The target called ``name``; ``aws`` configures how AWS test instances are launched, ``registry``
    where Docker images are pushed and staged (none: the local engine only)."""
    return platform(name).test_target(aws, registry)


def store_for(target: str, *, publish_ssm: bool = False, registry: str = "") -> StageStore:
    """The stage store of a target name; with a ``registry`` (docker only) its tags."""
    found = PLATFORMS.get(target)
    if found is None:
        raise UsageError(f"--target {target!r}: unknown target (expected one of {', '.join(PLATFORMS)})")
    return found.stage_store(publish_ssm=publish_ssm, registry=registry)


def open_store(target: str, registry: str = "", family: str | None = None) -> ImageStore:
    """The image store of ``target``; with a ``registry`` (docker only) the registry's repositories
    (``family``'s alone when given)."""
    return platform(check_target(target)).image_store(registry=registry, family=family)


def open_sources(target: str, include_packer: bool = False) -> list[Source]:
    """Where ``target``'s leftovers live: the Docker engine, or the configured AWS region (never both).
    ``include_packer``: AWS, also Packer's untagged temporary resources (maybe another tool's)."""
    return platform(check_target(target)).leftover_sources(include_packer=include_packer)


def platform_errors(target: str, doing: str) -> AbstractContextManager[None]:
    """The platform's client errors while ``doing`` as one clear line (nothing for an unknown name)."""
    found = PLATFORMS.get(target)
    return found.errors(doing) if found else nullcontext()


def production_image(target: str, family: str) -> Production:
    """The family's current production image on ``target`` (Docker: ``<family>:production``; AWS: the
    seed's lookup, ``tag:Name=<family>-*``, ``tag:status=production``, newest); never raises."""
    found = PLATFORMS.get(target)
    if found is None:
        return Production(reason=f"no production lookup for target {target!r}")
    try:
        return found.production(family)
    except Exception as exc:  # an informational diff must never fail a verification
        return Production(reason=f"production lookup failed ({type(exc).__name__}: {exc})")
