"""The sweep flow: remove what crashed runs left behind (past ``expires-at``, or older than ``max_age``).

A dry run unless ``apply`` is set. ``target`` picks the Docker engine or the configured AWS region; the
per-run key directories below the private keys root are swept either way. Scheduled hourly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from flows.blocks import block_credentials
from tasks import sweep
from tasks.housekeeping import find_leftovers, remove_leftovers, report_sweep
from tasks.inputs import TargetName, check_target, parse_duration


@flow(name="sweep")
def sweep_leftovers(
    target: TargetName = "docker",
    max_age: str | None = None,
    apply: bool = False,
    aws_credentials: str | None = None,
    packer_leftovers: bool = False,
) -> dict[str, Any]:
    """Find bakery-labelled leftovers past their time; remove them with ``apply``.

    ``packer_leftovers``: AWS, also Packer's untagged temporary builders, key pairs and security groups
    (by age), which may be another tool's: only when asked.

    ``aws_credentials``: AWS only, a Prefect AwsCredentials block name (empty: the standard chain).
    """
    check_target(target)
    rules = sweep.Rules(now=datetime.now(UTC), max_age=parse_duration(max_age, "--max-age") if max_age else None)
    with block_credentials(target, aws_credentials):
        sources = sweep.open_sources(target, include_packer=packer_leftovers)
        plan = find_leftovers(sources, rules)
        if not apply:
            return report_sweep(plan, target, None)
        results = remove_leftovers(plan, sources)
    doc = report_sweep(plan, target, results)
    if doc["failures"]:
        raise sweep.SweepFailed(f"{len(doc['failures'])} removals failed: {'; '.join(doc['failures'][:3])}", doc)
    return doc
