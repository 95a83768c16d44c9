"""The sweep flow: remove what crashed runs left behind (past ``expires-at``, or older than ``max_age``).

A dry run unless ``apply`` is set. ``target`` picks the Docker engine or the configured AWS region; the
per-run key directories below the private keys root are swept either way. Scheduled hourly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.blocks import block_credentials
from tasks import sweep
from tasks.inputs import TargetName, check_target, parse_duration
from tasks.request import Duration, OptionalBlockName, check_registry_credentials
from tasks.steps.housekeeping import find_leftovers, remove_leftovers, report_sweep
from tasks.targets.base import one_line
from tasks.targets.registry import open_sources, store_for


@task(name="resume-promotions", cache_policy=NO_CACHE)
def resume_promotions(target: str, apply: bool, registry: str = "") -> tuple[list[str], list[str]]:
    """A promotion or rollback killed between its two writes left an intent: complete or undo it (with
    ``apply``; a dry run says what it would find). ``(notes, failures)``, one line per family, also
    logged. With a ``registry`` the intents in its families' stage records (every worker's promotions)."""
    from tasks import promotion

    store = store_for(target, registry=registry)
    logger = get_run_logger()
    notes, failures = promotion.resume_all(store, str(current_flow_run.id or uuid4()), apply)
    for note in notes:
        logger.warning("%s", note)
    for failure in failures:
        logger.error("resuming a killed promotion of %s", failure)
    return notes, failures


@task(name="registry-leftovers", cache_policy=NO_CACHE)
def registry_leftovers(registry: str, runs: set[str], pushed_before: datetime) -> list[str]:
    """Images a killed run left at ``testing`` in the registry (``RegistryStages.left_at_testing``): said,
    not moved."""
    from tasks.targets.docker.image_registry import parse_registry
    from tasks.targets.docker.registry_stages import RegistryStages

    notes = RegistryStages(parse_registry(registry)).left_at_testing(runs, pushed_before)
    for note in notes:
        get_run_logger().warning("%s", note)
    return notes


@task(name="release-family-slots", cache_policy=NO_CACHE)
def release_family_slots(apply: bool, max_age: str | None) -> list[str]:
    """Build and promotion slots (``bakery-family-*``) whose holder is no longer running: given back with
    ``apply``."""
    from tasks.steps.locks import sweep_family_slots

    logger = get_run_logger()
    rows = sweep_family_slots(apply, parse_duration(max_age, "--max-age") if max_age else None)
    notes = [f"{r['slot']}: {r['decision']} ({r['reason']}); held by {r['holder']}" for r in rows]
    for row, note in zip(rows, notes, strict=True):
        (logger.info if row["decision"] == "keep" else logger.warning)("%s", note)
    return notes


@flow(name="sweep")
def sweep_leftovers(
    target: TargetName = "docker",
    max_age: Duration | None = None,
    apply: bool = False,
    aws_credentials: str | None = None,
    packer_leftovers: bool = False,
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Find bakery-labelled leftovers past their time; remove them with ``apply``.

    ``packer_leftovers``: AWS, also Packer's untagged temporary builders, key pairs and security groups
    (by age), which may be another tool's: only when asked.

    ``aws_credentials``: AWS only, a Prefect AwsCredentials block name (empty: the standard chain).

    ``registry``: Docker only, ``HOST[:PORT][/PREFIX]`` (empty: ``$BAKERY_REGISTRY``, else none): killed
    promotions of its families are resumed, and images killed runs left at ``testing`` there are named.
    ``registry_credentials``: with a registry, a Prefect DockerRegistryCredentials block to log in with
    (empty: ``docker login`` / ``$DOCKER_CONFIG``).
    """
    from tasks.request import check_registry_for

    check_target(target)
    found_registry = check_registry_for(target, registry or None, "registry")
    registry = str(found_registry or "")
    check_registry_credentials(registry, registry_credentials)
    rules = sweep.Rules(now=datetime.now(UTC), max_age=parse_duration(max_age, "--max-age") if max_age else None)
    with block_credentials(target, aws_credentials, None, registry, registry_credentials):
        sources = open_sources(target, include_packer=packer_leftovers)
        plan = find_leftovers(sources, rules)
        results = remove_leftovers(plan, sources) if apply else None
        # After the removal, and each on its own: a promotion that cannot be resumed or a Prefect API blip
        # must not stop the sweep from removing what it found.
        notes: list[str] = []
        side_failures: list[str] = []
        runs = {item.run_id for item in plan.doomed if item.run_id}

        def resume() -> list[str]:
            resumed, failed = resume_promotions(target, apply, registry)
            side_failures.extend(f"resuming killed promotions: {failure}" for failure in failed)
            return resumed

        jobs = [
            ("resuming killed promotions", resume),
            ("giving back build and promotion slots", lambda: release_family_slots(apply, max_age)),
        ]
        if registry:
            stale = rules.now - rules.age_limit
            jobs.append(("listing the registry's leftovers", lambda: registry_leftovers(registry, runs, stale)))
        for what, job in jobs:
            try:
                notes += job()
            except Exception as exc:
                side_failures.append(f"{what}: {one_line(exc)}")
    doc = {**report_sweep(plan, target, results), "notes": notes + side_failures}
    if not apply:
        return doc
    doc["failures"] = [*doc["failures"], *side_failures]
    if doc["failures"]:
        raise sweep.SweepFailed(f"{len(doc['failures'])} removals failed: {'; '.join(doc['failures'][:3])}", doc)
    return doc
