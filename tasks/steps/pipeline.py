"""Prefect tasks for each pipeline step: names, retries, logging and artifacts over plain functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks import build as build_lib
from tasks import lint
from tasks.errors import UsageError
from tasks.packer import ManifestBuild
from tasks.request import PipelineRequest, state_dir
from tasks.targets.base import Image, Instance, Run, SshEndpoint, Target

if TYPE_CHECKING:
    from tasks.verify import VerifyResult


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


@task(name="validate", cache_policy=NO_CACHE)
def validate_templates(request: PipelineRequest) -> build_lib.Checked:
    """The template checks; every lint finding (warnings, waived ones marked) is logged and kept in a
    table artifact beside the run."""
    checked = build_lib.validate(request)
    logger = get_run_logger()
    for finding in checked.findings:
        if finding.waived:
            logger.info("%s", finding)
        else:
            logger.warning("%s", finding)
    logger.info(
        "templates in %s are valid for %s (%d warning(s), %d waived)",
        checked.request.template_dir,
        ", ".join(checked.request.only),
        len(checked.warnings),
        len(checked.findings) - len(checked.warnings),
    )
    create_table_artifact(
        [{k: ("" if v is None else v) for k, v in f.as_dict().items()} for f in checked.findings]
        or [{"rule": "", "severity": "", "message": "no findings"}],
        key=artifact_key(request.family, "validate"),
        description=f"lint of {checked.request.template_dir} for {', '.join(checked.request.only)}",
    )
    return checked


@task(name="build", cache_policy=NO_CACHE)
def build_image(request: PipelineRequest, templates: lint.TemplateSet, workdir: Path, run_id: str) -> ManifestBuild:
    logger = get_run_logger()
    progress_id: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call in a sync task
        0.0,
        key=artifact_key(request.family, "build-progress"),
        description=f"packer build of {request.family}:{request.version}",
    )
    last_step = -1

    def on_progress(progress: build_lib.Progress) -> None:
        nonlocal last_step
        logger.info("[build %d/%d] %s", progress.step, progress.steps, progress.message)
        if progress.step != last_step:
            last_step = progress.step
            update_progress_artifact(progress_id, 100 * progress.fraction)

    built = build_lib.build(request, templates, workdir, run_id, on_progress)
    update_progress_artifact(progress_id, 100.0)
    create_table_artifact(
        [
            {
                "source": built.source,
                "artifact_id": built.artifact_id,
                "build_time": built.build_time,
                "version": request.version,
                "packer_run_uuid": built.packer_run_uuid,
            }
        ],
        key=artifact_key(request.family, "manifest"),
        description=f"Packer manifest of {request.family}:{request.version} ({workdir / 'manifest.json'})",
    )
    return built


def _worth_another_attempt(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a launch unless another attempt cannot help: a bad request (``UsageError``) or an error
    that says so (``retryable = False``: a waiter that timed out, a request EC2 refused)."""
    error = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(error, UsageError) and bool(getattr(error, "retryable", True))


@task(
    name="launch",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_worth_another_attempt,
)
def launch_instance(target: Target, image: Image, run: Run) -> Instance:
    instance = target.launch(image, run)
    get_run_logger().info("launched test instance %s from %s", instance.label, image.name or image.id)
    return instance


@task(name="connect", cache_policy=NO_CACHE)
def instance_endpoint(target: Target, instance: Instance, run: Run) -> SshEndpoint:
    endpoint = target.endpoint(instance, run)
    get_run_logger().info(
        "instance reachable at %s@%s:%d, host key %s",
        endpoint.user,
        endpoint.host,
        endpoint.port,
        endpoint.host_key.split()[0],
    )
    return endpoint


@task(name="verify", cache_policy=NO_CACHE)
def verify_instance(endpoint: SshEndpoint, request: PipelineRequest, image: Image, workdir: Path) -> VerifyResult:
    from tasks.verify import report, verify_endpoint

    result = verify_endpoint(
        endpoint,
        request.spec,
        ssh_timeout=request.ssh_timeout.total_seconds(),
        variables=request.spec_variables(),
    )
    (workdir / "junit.xml").write_text(report.to_junit(result, suite=f"{image.family}:{image.version}"))
    logger = get_run_logger()
    for line in report.summary_lines(result):
        logger.info("%s", line)
    create_markdown_artifact(
        report.to_markdown(result, title=f"Verification of {image.name}"),
        key=artifact_key(image.family, "verification"),
        description=f"{request.spec} against {image.name}",
    )
    _package_inventory(result, image, workdir)
    return result


def _package_inventory(result: VerifyResult, image: Image, workdir: Path) -> None:
    """``inventory.json`` beside ``junit.xml``, a copy kept per image for later diffs, and the diff against
    the family's production image as a markdown artifact. Informational: never fails the verification."""
    from tasks.targets.registry import production_image
    from tasks.verify import inventory

    logger = get_run_logger()
    if result.inventory is None:
        logger.warning("no package inventory of %s (no dpkg, rpm or apk, or no facts)", image.name or image.id)
        return
    where = {"target": image.target, "image_id": image.id, "image": image.name}
    (workdir / "inventory.json").write_text(inventory.to_json(result.inventory, **where))
    try:
        comparison = inventory.compare_with_production(
            result.inventory,
            target=image.target,
            family=image.family,
            image_id=image.id,
            image=image.name,
            root=state_dir(),
            lookup=production_image,
        )
        inventory.store(result.inventory, target=image.target, image_id=image.id, image=image.name, root=state_dir())
    except Exception as exc:  # a diff that cannot be made is reported, not fatal
        logger.warning("package inventory of %s: not compared or kept (%s)", image.name or image.id, exc)
        return
    logger.info("%s", comparison.headline)
    create_markdown_artifact(
        comparison.to_markdown(),
        key=artifact_key(image.family, "packages"),
        description=f"packages of {image.name} vs the production image ({len(result.inventory.packages)} installed)",
    )


@task(name="teardown", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def teardown_instance(target: Target, instance: Instance) -> None:
    target.teardown(instance)
    get_run_logger().info("removed test instance %s", instance.label)


@task(name="adopt-image", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def adopt_image(target: Target, artifact_id: str, request: PipelineRequest, run_id: str) -> Image:
    image = target.adopt_build(artifact_id, request.family, request.version, run_id)
    get_run_logger().info("built %s (%s)", image.name or image.id, image.id)
    return image


@task(name="record-test-result", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def record_test_result(target: Target, image: Image, result: str, run_id: str) -> dict[str, Any]:
    """The result of testing an image whose stage was earned (production, superseded, ...): kept beside it,
    the stage left as it was, and a markdown artifact saying so."""
    target.record_test_result(image, result, run_id)
    stage = target.current_stage(image)
    get_run_logger().info("%s: test %s recorded; its stage stays %s", image.name or image.id, result, stage)
    create_markdown_artifact(
        f"# Test of {image.name or image.id}: {result}\n\n"
        f"- **image**: `{image.id}`\n- **stage**: {stage} (unchanged: only a testing image moves)\n"
        f"- **run**: `{run_id}`\n",
        key=artifact_key(image.family, "test-result"),
        description=f"test of {image.name or image.id}: {result}, stage {stage} kept",
    )
    return {"image": image.id, "result": result, "stage": stage}


@task(name="set-stage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def set_stage(target: Target, image: Image, stage: str, run_id: str) -> dict[str, Any]:
    target.set_stage(image, stage, run_id)
    get_run_logger().info("%s is now %s", image.name or image.id, stage)
    return {"image": image.id, "stage": stage}
