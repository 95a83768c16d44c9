"""``promote`` and ``rollback`` flows: stage changes with soak, recorded as tags and a Prefect artifact.

The algorithm and its write order live in ``tasks.promotion``; these flows check the request, run it
as one task, and leave a "promotion record" artifact a person reads in the UI.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.blocks import block_credentials
from tasks import inputs, promotion
from tasks.errors import UsageError
from tasks.promotion import PromoteTo
from tasks.request import (
    Duration,
    Family,
    OptionalBlockName,
    TargetName,
    check_registry_credentials,
    check_registry_for,
)
from tasks.steps.pipeline import artifact_key
from tasks.targets.base import ProblemAfterPromotion, PromotionRecord
from tasks.targets.registry import platform_errors, store_for


def _run_id() -> str:
    return str(current_flow_run.id or uuid4())


def _publish(record: PromotionRecord) -> None:
    logger = get_run_logger()
    for change in record.changes:
        logger.info("%s: %s → %s", change.name or change.image, change.before or "-", change.after)
    for note in record.notes:
        logger.warning("%s", note)
    create_markdown_artifact(
        record.to_markdown(),
        key=artifact_key(record.family, record.target, "promotion"),
        description=f"{record.action} of {record.family} on {record.target}: {record.name} → {record.to}",
    )


@task(name="promote", cache_policy=NO_CACHE)
def promote_image(
    target: str,
    family: str | None,
    image: str | None,
    to: PromoteTo,
    min_soak: str,
    force: bool,
    publish_ssm: bool,
    run_id: str,
    registry: str = "",
) -> dict[str, Any]:
    try:
        with platform_errors(target, "promoting"):
            store = store_for(target, publish_ssm=publish_ssm, registry=registry)
            record = promotion.promote(
                store,
                to=to,
                run_id=run_id,
                family=family,
                image=image,
                min_soak=inputs.parse_duration(min_soak, "--min-soak"),
                force=force,
            )
    except ProblemAfterPromotion as exc:
        _publish(exc.record)  # the stages did change: the record says how
        raise
    _publish(record)
    return record.to_dict()


@task(name="rollback", cache_policy=NO_CACHE)
def rollback_family(target: str, family: str, publish_ssm: bool, run_id: str, registry: str = "") -> dict[str, Any]:
    try:
        with platform_errors(target, "rolling back"):
            store = store_for(target, publish_ssm=publish_ssm, registry=registry)
            record = promotion.rollback(store, family=family, run_id=run_id)
    except ProblemAfterPromotion as exc:
        _publish(exc.record)  # the stages did change: the record says how
        raise
    _publish(record)
    return record.to_dict()


def check_promote_request(
    target: str, family: str | None, image: str | None, to: str, min_soak: str
) -> tuple[TargetName, str | None, str | None]:
    """Every check that needs no engine (exit 2 on a bad request)."""
    checked = inputs.check_target(target)
    if bool(family) == bool(image):
        raise UsageError("promote: give exactly one of --image ID or --family NAME")
    if family:
        inputs.check_family(family)
    if to not in ("staging", "production"):
        raise UsageError(f"--to {to!r}: expected staging or production")
    inputs.parse_duration(min_soak, "--min-soak")
    return checked, family or None, image or None


@flow(name="promote")
def promote(
    target: TargetName = "docker",
    family: Family | None = "app-base",
    image: str | None = None,
    to: PromoteTo = "production",
    min_soak: Duration = "24h",
    force: bool = False,
    publish_ssm: bool = False,
    aws_credentials: str | None = None,
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Promote an image: testing → staging, or staging → production after the soak.

    Args:
        target: where the image lives.
        family: promote the family's newest image at the previous stage (leave empty when giving an image).
        image: an image id (AMI id, Docker image id or family:version) instead of a family.
        to: the stage to promote to.
        min_soak: how long an image must have been staging before production (90s, 15m, 2h, 7d).
        force: promote to production before the soak is over (recorded on the image and in the record).
        publish_ssm: AWS only: also write the production AMI id to SSM /bakery/<family>/production.
        aws_credentials: AWS only: a Prefect AwsCredentials block name (empty: the standard chain).
        registry: Docker only: ``HOST[:PORT][/PREFIX]`` whose tags hold the stages (empty:
            ``$BAKERY_REGISTRY``, else the local engine); works from any machine that reaches it.
        registry_credentials: with a registry: a Prefect DockerRegistryCredentials block to log in with
            (empty: ``docker login`` / ``$DOCKER_CONFIG``).
    """
    if image:
        family = None
    checked, family, image = check_promote_request(target, family, image, to, min_soak)
    checked_registry = check_registry_for(checked, registry)
    check_registry_credentials(checked_registry, registry_credentials)
    with block_credentials(checked, aws_credentials, None, checked_registry, registry_credentials):
        return promote_image(
            checked, family, image, to, min_soak, force, publish_ssm, _run_id(), str(checked_registry or "")
        )


@flow(name="rollback")
def rollback(
    target: TargetName = "docker",
    family: Family = "app-base",
    publish_ssm: bool = False,
    aws_credentials: str | None = None,
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Make the most recently superseded image production again; the current one becomes superseded.

    Args:
        target: where the family's images live.
        family: the image family to roll back.
        publish_ssm: AWS only: also write the production AMI id to SSM /bakery/<family>/production.
        aws_credentials: AWS only: a Prefect AwsCredentials block name (empty: the standard chain).
        registry: Docker only: ``HOST[:PORT][/PREFIX]`` whose tags hold the stages (empty:
            ``$BAKERY_REGISTRY``, else the local engine).
        registry_credentials: with a registry: a Prefect DockerRegistryCredentials block to log in with
            (empty: ``docker login`` / ``$DOCKER_CONFIG``).
    """
    checked = inputs.check_target(target)
    inputs.check_family(family)
    checked_registry = check_registry_for(checked, registry)
    check_registry_credentials(checked_registry, registry_credentials)
    with block_credentials(checked, aws_credentials, None, checked_registry, registry_credentials):
        return rollback_family(checked, family, publish_ssm, _run_id(), str(checked_registry or ""))
