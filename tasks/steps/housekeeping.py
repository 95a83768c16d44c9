"""Prefect tasks of the retention and sweep flows: names, retries, logs and table artifacts, nothing else.

The decisions live in ``tasks/retention.py`` and ``tasks/sweep.py``; the cloud and engine calls in
each platform's folder (``tasks/targets/<name>/images.py``, ``leftovers.py``), opened through
``tasks/targets/registry.py``.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks import retention, sweep
from tasks.retention import Outcome, Plan
from tasks.steps.pipeline import artifact_key
from tasks.targets.base import ImageRecord, ImageStore


@task(name="inventory", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def take_inventory(store: ImageStore) -> tuple[list[ImageRecord], dict[str, list[str]]]:
    images, usage = store.inventory()
    get_run_logger().info(
        "%s: %d images, %d of them managed; %d in use",
        store.target,
        len(images),
        sum(i.managed for i in images),
        len(usage),
    )
    return images, usage


@task(name="apply-retention", cache_policy=NO_CACHE)
def apply_retention(store: ImageStore, plan: Plan) -> Outcome:
    """Deletions with at most 8 at once; throttling is retried by the client (adaptive mode)."""
    logger = get_run_logger()
    logger.info("deleting %d images and their unshared snapshots", len(plan.deletions))
    outcome = retention.execute(plan, store)
    for failure in outcome.failures:
        logger.error("%s", failure)
    return outcome


@task(name="retention-report", cache_policy=NO_CACHE)
def report_retention(plan: Plan, outcome: Outcome | None, applied: bool, family: str | None) -> dict[str, Any]:
    """The plan (or result) as a table artifact, and one log line per family."""
    logger = get_run_logger()
    doc = retention.document(plan, outcome, applied)
    for line in doc["families"].values():
        logger.info("%s", line)
    scope = family or "all"
    what = "result" if applied else "plan (dry run)"
    create_table_artifact(
        doc["images"] or [{"image": "", "decision": "", "reason": "no managed images"}],
        key=artifact_key("retention", plan.target, scope),
        description=f"Retention {what} on {plan.target}, keep {plan.keep}: {'; '.join(doc['families'].values())}",
    )
    if doc["snapshots"]:
        create_table_artifact(
            doc["snapshots"],
            key=artifact_key("retention", plan.target, scope, "snapshots"),
            description=f"Snapshots of the images retention deletes ({what})",
        )
    return doc


@task(name="find-leftovers", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def find_leftovers(sources: list[sweep.Source], rules: sweep.Rules) -> sweep.SweepPlan:
    plan = sweep.plan_sweep(sources, rules)
    get_run_logger().info("%d labelled resources, %d past their time", len(plan.leftovers), len(plan.doomed))
    return plan


@task(name="remove-leftovers", cache_policy=NO_CACHE)
def remove_leftovers(plan: sweep.SweepPlan, sources: list[sweep.Source]) -> dict[str, str]:
    logger = get_run_logger()
    results = sweep.execute_sweep(plan, sources)
    for what, result in results.items():
        (logger.error if result.startswith("failed") else logger.info)("%s: %s", what, result)
    return results


@task(name="sweep-report", cache_policy=NO_CACHE)
def report_sweep(plan: sweep.SweepPlan, target: str, results: dict[str, str] | None) -> dict[str, Any]:
    doc = sweep.document(plan, target, results)
    get_run_logger().info("%s", doc["summary"])
    create_table_artifact(
        doc["resources"] or [{"kind": "", "decision": "", "reason": "nothing labelled by bakery"}],
        key=artifact_key("sweep", target),
        description=doc["summary"],
    )
    return doc
