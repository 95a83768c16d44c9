"""The weekly rebuild: every family in ``deployments/families.yaml`` that changed, through the whole pipeline.

Each (family, target) is first checked against its current staging/production image (base, templates
and variables, spec, pending package updates, age: ``tasks/rebuild.py``) and skipped when nothing
changed; the rest run ``image_pipeline`` as a subflow, at most ``max_parallel`` at once (the
pipeline itself holds the family's build slot, so a rebuild never overlaps another build of the same
family, scheduled or pressed by hand). Each family gets a summary artifact: the result, the new
version, whether the base image changed, package changes against the current production, and that
production's age — flagged loudly past 90 days (the seed: a stale image likely lacks patches).
A failed family does not stop the others; the flow fails at the end if any did.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.blocks import block_credentials, check_block_name, check_secret_vars
from flows.pipeline import image_pipeline
from tasks import rebuild as lib
from tasks.errors import JobFailed, UsageError
from tasks.inputs import check_target, parse_duration
from tasks.request import Duration, OptionalBlockName, PipelineParameters, TargetName, prepare
from tasks.steps.pipeline import artifact_key
from tasks.targets.base import StagedImage, human, utcnow
from tasks.targets.registry import platform, store_for

MAX_WORKERS = 8  # threads of the task runner; max_parallel (<= this) bounds the builds
PIPELINE_DEPLOYMENT = "image-pipeline/image-pipeline"  # prefect.yaml: flow name / deployment name
# How long a fanned-out rebuild waits for one family's pipeline run: twice the pipeline's build time
# limit (the build, then the test and stage, and a wait for a free worker).
PIPELINE_WAIT = 2 * parse_duration(PipelineParameters.model_fields["build_timeout"].default, "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def rebuild_family(
    spec: lib.FamilySpec,
    target: str,
    run_id: str,
    force: bool = False,
    max_age: timedelta = lib.DEFAULT_MAX_AGE,
    blocks: dict[str, Any] | None = None,
    pipeline_run_name: str = "",
) -> lib.FamilySummary:
    """One family on one target: note the production, decide, run the pipeline, compare, summarise.

    Args:
        spec: the family's entry of the families file.
        target: the target to rebuild on.
        run_id: the rebuild's flow run id.
        force: build even when nothing changed.
        max_age: build when the current image is older than this.
        blocks: ``aws_credentials`` and ``secret_vars`` for the pipeline (Prefect block names), and
            ``registry_credentials``: the login block of families with a registry that name none.
        pipeline_run_name: run the pipeline as this ``image-pipeline`` deployment run (any worker takes
            it) and wait for it; empty: run it here, in-process.
    """
    logger = get_run_logger()
    now = utcnow()
    summary = lib.FamilySummary(family=spec.family, target=target, result="failed", now=now)
    store: Any = None
    images: list[StagedImage] = []
    before: StagedImage | None = None
    try:
        from tasks.request import check_registry_for

        registry = check_registry_for(target, spec.registry or None, f"{spec.family}: registry")
        login = str(pipeline_parameters(spec, target, blocks).get("registry_credentials") or "")
        with block_credentials(target, registry=registry, registry_credentials=login):  # the store's client
            store = store_for(target, registry=str(registry or ""))
            images = store.family_images(spec.family)
        before = lib.production_of(images)
    except Exception as exc:
        summary.base_note = f"could not read the current production: {_first_line(exc)}"
    if before is not None:
        summary.production = before.name or before.id
        summary.production_built = before.created
        summary.production_age_days = lib.age_days(before, now)
    if summary.stale:
        logger.error(
            "STALE PRODUCTION: %s of %s on %s was built %.0f days ago (over %d): promote a rebuilt image",
            summary.production,
            spec.family,
            target,
            summary.production_age_days,
            lib.STALE_AFTER.days,
        )
        emit_stale_production(summary)
    decision = _decide(spec, target, images, run_id, store, force, max_age, now)
    summary.decision = decision
    logger.info("%s on %s: %s", spec.family, target, decision.text)
    if not decision.build:
        summary.result = "skipped"
        summary.version = decision.compared_version
        return summary
    parameters = pipeline_parameters(spec, target, blocks)
    try:
        if pipeline_run_name:
            result = run_pipeline_deployment(parameters, pipeline_run_name, summary)
        else:
            result = image_pipeline(**parameters)
    except Exception as exc:
        summary.message = _first_line(exc)
        logger.error("rebuild of %s on %s failed: %s", spec.family, target, summary.message)
        return summary
    summary.result = "staged"
    summary.version = str(result.get("version", ""))
    summary.image = str(result.get("image_id", ""))
    _compare(summary, store, before, result, run_id)
    return summary


def pipeline_parameters(spec: lib.FamilySpec, target: str, blocks: dict[str, Any] | None) -> dict[str, Any]:
    """The image_pipeline parameters of one family, the same in-process and as a deployment run (block
    names only: secret-named Packer variables are refused as parameters by tasks/request.py). The registry
    is resolved here, ``$BAKERY_REGISTRY`` included: a child run on another worker must build into the
    registry this rebuild read the stages from, not into its own worker's default. Its login block: the
    family's ``registry_credentials``, else the rebuild's (``blocks``), for a registry only."""
    from tasks.request import check_registry_credentials, check_registry_for

    shared = dict(blocks or {})
    default_login = str(shared.pop("registry_credentials", None) or "")
    # platform-specific: a family's registry is the docker target's option; its other targets ignore it.
    registry = (
        check_registry_for(target, spec.registry or None, f"{spec.family}: registry") if target == "docker" else None
    )
    login = ""
    if target == "docker":  # platform-specific: so is the registry's login block
        login = spec.registry_credentials or (default_login if registry else "")
        check_registry_credentials(registry, login, f"{spec.family}: registry_credentials")
    return {
        "target": check_target(target),
        **spec.pipeline_arguments(),
        **({"registry": str(registry)} if registry else {}),
        **({"registry_credentials": login} if login else {}),
        **shared,
    }


def run_pipeline_deployment(parameters: dict[str, Any], name: str, summary: lib.FamilySummary) -> dict[str, Any]:
    """Run the ``image-pipeline`` deployment as a child of this run, wait for it and return its result
    (read from its ``<family>-pipeline-result`` artifact: flow results stay on the worker that ran it)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    child: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call in a sync task
        PIPELINE_DEPLOYMENT, parameters=parameters, flow_run_name=name, timeout=PIPELINE_WAIT.total_seconds()
    )
    summary.pipeline_run, summary.pipeline_run_id = child.name, str(child.id)
    state = child.state
    if state is None or not state.is_final():
        raise JobFailed(
            f"the {PIPELINE_DEPLOYMENT} run {child.name} did not end within {human(PIPELINE_WAIT)} "
            f"(state {state.type.value if state else 'unknown'}); it goes on without the rebuild"
        )
    if not state.is_completed():
        raise JobFailed(f"the {PIPELINE_DEPLOYMENT} run {child.name} ended {state.type.value}: {state.message or ''}")
    return pipeline_result(child.id, parameters["family"])


def pipeline_result(run_id: UUID, family: str) -> dict[str, Any]:
    """The result row a completed ``image-pipeline`` run published (flows/pipeline.py publish_pipeline_result)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    key = artifact_key(family, "pipeline-result")
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[key])
            )
        )
    if not found or not isinstance(found[0].data, str):
        raise JobFailed(f"the {PIPELINE_DEPLOYMENT} run {run_id} completed without its {key} artifact")
    rows = json.loads(found[0].data)
    return dict(rows[0]) if rows else {}


def _decide(
    spec: lib.FamilySpec,
    target: str,
    images: list[StagedImage],
    run_id: str,
    store: Any,
    force: bool,
    max_age: timedelta,
    now: datetime,
) -> lib.Decision:
    """Gather what changed since the family's current image (the checks are plain code in tasks/)."""
    if force:
        return lib.decide(lib.Observation(lib.current_image(images), None, "", ""), force=True, now=now)
    try:
        request = prepare(target=target, **spec.pipeline_arguments())
    except UsageError as exc:  # the pipeline reports it properly
        return lib.Decision(True, (f"the request cannot be checked ({_first_line(exc)})",))
    observed = lib.observe(request, images, run_id, platform(target).image_checks(store))
    return lib.decide(observed, max_age=max_age, now=now)


def _compare(
    summary: lib.FamilySummary, store: Any, before: StagedImage | None, result: dict[str, Any], run_id: str
) -> None:
    """Base image and packages of the new image against the current production (best effort)."""
    checks = platform(summary.target).image_checks(store)
    new_packages = lib.recorded_inventory(result.get("workdir")) or lib.stored_inventory(summary.target, summary.image)
    new_packages = new_packages or checks.packages(summary.image, run_id, summary.family)
    if before is None:
        summary.base_note = "no production to compare with"
        summary.packages_note = "no production to compare with"
        return
    old_packages = lib.stored_inventory(summary.target, before.id)
    new_base, old_base = checks.base_of(summary.image), checks.base_of(before.id)
    old_packages = old_packages or checks.packages(before.id, run_id, summary.family)
    if new_base and old_base:
        summary.base_changed = new_base != old_base
        summary.base_note = f"{old_base[:19]} → {new_base[:19]}" if summary.base_changed else new_base[:19]
    else:
        summary.base_note = "base of the new or the production image unknown"
    if new_packages is not None and old_packages is not None:
        summary.packages = lib.package_changes(old_packages, new_packages)
    else:
        summary.packages_note = "no package inventory of " + (
            "the production image" if new_packages else "the new image"
        )


def emit_stale_production(summary: lib.FamilySummary) -> None:
    """The Prefect event ``bakery.production.stale`` for a production over the age limit, which the
    automations in ``deployments/automations.yaml`` turn into a notification. Never fails the rebuild."""
    from prefect.events import emit_event

    try:
        emit_event(
            event=lib.STALE_EVENT,
            resource={
                "prefect.resource.id": f"bakery.family.{summary.family}.{summary.target}",
                "prefect.resource.name": summary.family,
                "bakery.family": summary.family,
                "bakery.target": summary.target,
            },
            payload={
                "family": summary.family,
                "target": summary.target,
                "production": summary.production,
                "age_days": round(summary.production_age_days or 0.0, 1),
                "max_age_days": lib.STALE_AFTER.days,
            },
        )
    except Exception as exc:  # the ERROR log line and the artifact still say it
        logging.getLogger(__name__).warning("could not emit %s for %s: %s", lib.STALE_EVENT, summary.family, exc)


@task(name="rebuild-family", cache_policy=NO_CACHE, task_run_name="rebuild-{spec.family}-{target}")
def rebuild_one(
    spec: lib.FamilySpec,
    target: str,
    slots: threading.BoundedSemaphore,
    run_id: str,
    force: bool = False,
    max_age: timedelta = lib.DEFAULT_MAX_AGE,
    blocks: dict[str, Any] | None = None,
    pipeline_run_name: str = "",
) -> dict[str, Any]:
    with slots:
        summary = rebuild_family(spec, target, run_id, force, max_age, blocks, pipeline_run_name)
    create_markdown_artifact(
        summary.to_markdown(),
        key=artifact_key(spec.family, target, "rebuild"),
        description=summary.headline(),
    )
    return summary.to_dict() | {"row": summary.row()}


@flow(name="weekly-rebuild", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))  # type: ignore[arg-type]
def rebuild(
    families_file: str = lib.DEFAULT_FAMILIES,
    target: TargetName | None = None,
    max_parallel: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 2,
    force: bool = False,
    max_age: Duration = "7d",
    aws_credentials: str | None = None,
    secret_vars: dict[str, str] | None = None,
    fan_out: bool | None = None,
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Rebuild every family that changed (cron 0 4 * * 1 UTC): build, test and stage a fresh image of each.

    A family is built when its base image, templates, variables, spec or packages changed since its
    current staging/production image, when that image is older than max_age, or when forced; else it is
    skipped, and the summary says why either way.

    Args:
        families_file: the families file (family, template dir, var files, targets).
        target: rebuild only this target's images (empty: every target a family lists).
        max_parallel: how many family builds run at once.
        force: build every family, changed or not.
        max_age: build a family whose current image is older than this (90s, 15m, 2h, 7d), changed or not.
        aws_credentials: a Prefect AwsCredentials block for the AWS builds (empty: the standard chain).
        secret_vars: Packer variables from Prefect Secret blocks ({variable: block name}) for every build.
        fan_out: run each family's pipeline as an image-pipeline deployment run, which any free worker
            takes, and wait for them (empty: when this rebuild runs from a deployment); false: in-process.
        registry_credentials: a Prefect DockerRegistryCredentials block for the Docker families with a
            registry whose entry names none (``registry_credentials:`` in the families file); empty:
            ``docker login`` / ``$DOCKER_CONFIG``.
    """
    from prefect.runtime import deployment, flow_run

    families = lib.load_families(families_file)
    if target is not None:
        check_target(target)
    if not 1 <= max_parallel <= MAX_WORKERS:
        raise UsageError(f"max_parallel {max_parallel}: expected 1 to {MAX_WORKERS}")
    oldest = parse_duration(max_age, "--max-age")
    jobs = [(f, t) for f in families for t in f.targets if target in (None, t)]
    if not jobs:
        raise UsageError(f"{families_file}: no family lists target {target!r}")
    run_id = str(flow_run.id or "local")
    slots = threading.BoundedSemaphore(max_parallel)
    fanned = lib.fans_out(fan_out, deployment.id)
    rebuild_name = str(flow_run.name or run_id)

    def child_name(spec: lib.FamilySpec, target: str) -> str:
        return f"{spec.family}-{target}-of-rebuild-{rebuild_name}" if fanned else ""

    blocks = {"aws_credentials": aws_credentials, "secret_vars": check_secret_vars(secret_vars)}
    if registry_credentials:
        blocks["registry_credentials"] = check_block_name(registry_credentials, "registry_credentials")
    # platform-specific: the AwsCredentials block is AWS's option, loaded only when a family is rebuilt there.
    uses_aws = "aws" if any(t == "aws" for _, t in jobs) else None
    with block_credentials(uses_aws, aws_credentials):  # the productions are read with the block's session
        futures = [
            rebuild_one.submit(spec, t, slots, run_id, force, oldest, blocks, child_name(spec, t)) for spec, t in jobs
        ]
        results = [future.result() for future in futures]
    rows = [r.pop("row") for r in results]
    create_table_artifact(rows, key="rebuild-summary", description=f"weekly rebuild of {len(rows)} image(s)")
    logger = get_run_logger()
    for r in results:
        logger.info("%s on %s: %s", r["family"], r["target"], r["decision"]["text"] if r["decision"] else r["result"])
    stale = [f"{r['family']} ({r['target']})" for r in results if r["stale"]]
    if stale:
        logger.error("STALE PRODUCTION (over %d days): %s", lib.STALE_AFTER.days, ", ".join(stale))
    failed = [f"{r['family']} on {r['target']}: {r['message']}" for r in results if r["result"] == "failed"]
    document = {"families": results, "stale": stale}
    if failed:
        raise JobFailed(f"rebuild: {len(failed)} of {len(results)} failed: " + "; ".join(failed), document)
    return document
