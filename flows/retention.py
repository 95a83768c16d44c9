"""The retention flow: keep N images per family plus everything protected, delete the rest with their
unshared snapshots. A dry run unless ``apply`` is set; either way the plan is a table artifact.

Scheduled daily (``prefect.yaml``), pressed from the UI, or run by ``bake retention``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.blocks import block_credentials
from tasks import retention
from tasks.inputs import TargetName, check_family, check_target
from tasks.rebuild import DEFAULT_FAMILIES, load_families
from tasks.request import Family, OptionalBlockName, check_registry_credentials, check_registry_for
from tasks.steps.housekeeping import apply_retention, report_retention, take_inventory


@flow(name="retention")
def image_retention(
    target: TargetName = "docker",
    family: Family | None = None,
    keep: int = retention.DEFAULT_KEEP,
    apply: bool = False,
    aws_credentials: str | None = None,
    families_file: str = DEFAULT_FAMILIES,
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Plan (and with ``apply``, carry out) retention for one family, or for every family when none is given.

    Without ``family``: the families bakery built itself, and those ``families_file`` lists (when it
    exists); another tool's images are touched only when their family is named. Every deletion is read
    again just before it is made.

    ``aws_credentials``: AWS only, a Prefect AwsCredentials block name (empty: the standard chain).
    ``registry``: Docker only, ``HOST[:PORT][/PREFIX]``: the registry's version tags instead of the local
    engine's (empty: ``$BAKERY_REGISTRY``, else the engine); deleted by digest through the registry API,
    never a digest another tag names; blob space comes back with the registry's garbage collection.
    ``registry_credentials``: with a registry, a Prefect DockerRegistryCredentials block to log in with
    (empty: ``docker login`` / ``$DOCKER_CONFIG``).
    """
    check_target(target)
    if family:
        check_family(family)
    keep = retention.check_keep(keep)
    checked_registry = str(check_registry_for(target, registry) or "")
    check_registry_credentials(checked_registry, registry_credentials)
    with block_credentials(target, aws_credentials, None, checked_registry, registry_credentials):
        store = retention.open_store(target, checked_registry, family)
        images, usage = take_inventory(store)
        listed = [f.family for f in load_families(families_file)] if Path(families_file).is_file() else []
        plan = retention.plan_retention(
            images, usage, keep=keep, families=[family] if family else None, target=target, listed=listed
        )
        if not apply:  # shared, promoted or launched since the inventory: kept, with that reason
            return report_retention(retention.confirm(plan, store.recheck), None, False, family)
        outcome = apply_retention(store, plan)  # reads each batch again right before deleting it
        plan = retention.settled(plan, outcome)  # what that re-read kept: a keep, with the reason
    doc = report_retention(plan, outcome, True, family)
    if checked_registry and plan.deletions:
        from tasks.targets.docker.registry_images import GARBAGE_COLLECTION_NOTE

        doc["note"] = f"registry {checked_registry}: {GARBAGE_COLLECTION_NOTE} (registry garbage-collect)"
        get_run_logger().info("%s", doc["note"])
    if outcome.failures:
        raise retention.RetentionFailed(
            f"{len(outcome.failures)} deletions failed: {'; '.join(outcome.failures[:3])}", doc
        )
    return doc
