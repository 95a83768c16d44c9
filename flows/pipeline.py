"""The image pipeline: validate → build → launch → verify over SSH → teardown (always) → stage tag.

``image_test`` is the test half on its own (``bake test``); ``image_pipeline`` runs it as a subflow.
Teardown runs in ``finally``; the crash and cancellation hooks remove whatever carries the run's id,
and ``bake sweep`` covers a SIGKILL, after which no hook runs.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import uuid4

from prefect import flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as current_flow_run

from tasks import keys
from tasks.errors import JobFailed
from tasks.inputs import TargetName
from tasks.request import DEFAULT_SPEC, PipelineRequest, expires_at, prepare, run_workdir
from tasks.steps import (
    build_image,
    instance_endpoint,
    launch_instance,
    set_stage,
    teardown_instance,
    validate_templates,
    verify_instance,
)
from tasks.targets.base import Image, Instance, Run, Target
from tasks.targets.registry import get_target
from tasks.verify import VerifyResult

log = logging.getLogger(__name__)


def _run_id() -> str:
    return str(current_flow_run.id or uuid4())


def remove_run_resources(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Crash/cancellation hook: remove every instance and key the run created."""
    run_id = str(flow_run.id)
    try:
        from tasks.targets.docker import DockerTarget

        removed = DockerTarget().teardown_run(run_id)
        if removed:
            log.warning("removed test containers of run %s: %s", run_id, ", ".join(removed))
    finally:
        keys.remove_run_keys(run_id)


def test_stage(target: Target, image: Image, request: PipelineRequest, run_id: str) -> dict[str, Any]:
    """Launch, verify and tear down; the image becomes ``staging`` or ``failed``."""
    logger = get_run_logger()
    workdir = run_workdir(run_id)
    with keys.run_keypair(run_id) as (private_key, public_key):
        run = Run(run_id, image.family, workdir, expires_at(request.ttl), private_key, public_key)
        instance: Instance | None = None
        failure: BaseException | None = None
        keep = False
        try:
            instance = launch_instance(target, image, run)
            endpoint = instance_endpoint(target, instance, run)
            result = verify_instance(endpoint, request, image, workdir)
            if not result.passed:
                keep = request.keep_on_failure
                set_stage(target, image, "failed", run_id)
                raise JobFailed(f"verification of {image.name} failed: {failure_summary(result)}")
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if instance is not None and keep:
                logger.warning(
                    "keeping failed test instance %s (--keep-on-failure); bake sweep removes it after %s",
                    instance.id[:12],
                    run.expires_at.isoformat(timespec="seconds"),
                )
            elif instance is not None:
                _teardown(target, instance, failure)
    set_stage(target, image, "staging", run_id)
    return {
        "image": image.name,
        "image_id": image.id,
        "stage": "staging",
        "checks": result.counts,
        "junit": str(workdir / "junit.xml"),
    }


def failure_summary(result: VerifyResult, limit: int = 5) -> str:
    """``2 of 9 checks failed: package no-such-package installed (expected true, found false); ...``"""
    failures = result.failures
    shown = "; ".join(f"{c.resource_type} {c.name} (expected {c.expected}, found {c.found})" for c in failures[:limit])
    more = f"; and {len(failures) - limit} more" if len(failures) > limit else ""
    return f"{len(failures)} of {result.counts['total']} checks failed: {shown}{more}"


def _teardown(target: Target, instance: Instance, failure: BaseException | None) -> None:
    """Tear down; a teardown error is reported but never hides the original failure."""
    try:
        teardown_instance(target, instance)
    except Exception as exc:
        if failure is None:
            raise
        get_run_logger().error("teardown of %s failed as well: %s", instance.id[:12], exc)


@flow(name="image-test", on_cancellation=[remove_run_resources], on_crashed=[remove_run_resources])
def image_test(
    image: str,
    target: TargetName = "docker",
    spec: str = DEFAULT_SPEC,
    ssh_timeout: str = "2m",
    ttl: str = "2h",
    keep_on_failure: bool = False,
) -> dict[str, Any]:
    """Test an existing image: launch a test instance, verify it over SSH, tear it down."""
    request = prepare(target=target, spec=spec, ssh_timeout=ssh_timeout, ttl=ttl, keep_on_failure=keep_on_failure)
    chosen = get_target(target)
    found = chosen.image(image)  # type: ignore[attr-defined]
    return test_stage(chosen, found, request, _run_id())


@flow(name="image-pipeline", on_cancellation=[remove_run_resources], on_crashed=[remove_run_resources])
def image_pipeline(
    target: TargetName = "docker",
    family: str = "app-base",
    version: str | None = None,
    template_dir: str = "packer",
    spec: str = DEFAULT_SPEC,
    variables: dict[str, str] | None = None,
    var_files: list[str] | None = None,
    only: str | None = None,
    keep_on_failure: bool = False,
    ttl: str = "2h",
    ssh_timeout: str = "2m",
    build_timeout: str = "1h",
) -> dict[str, Any]:
    """Validate the templates, build the image, test it, and tag it ``staging`` when it passes."""
    request = prepare(
        target=target,
        family=family,
        version=version,
        template_dir=template_dir,
        spec=spec,
        variables=variables,
        var_files=var_files,
        only=only,
        keep_on_failure=keep_on_failure,
        ttl=ttl,
        ssh_timeout=ssh_timeout,
        build_timeout=build_timeout,
    )
    run_id = _run_id()
    chosen = get_target(request.target)
    image = build_stage(chosen, request, run_id)
    return {
        "version": request.version,
        "workdir": str(run_workdir(run_id)),
        **test_stage(chosen, image, request, run_id),
    }


@flow(name="image-build", on_cancellation=[remove_run_resources], on_crashed=[remove_run_resources])
def image_build(
    target: TargetName = "docker",
    family: str = "app-base",
    version: str | None = None,
    template_dir: str = "packer",
    variables: dict[str, str] | None = None,
    var_files: list[str] | None = None,
    only: str | None = None,
    build_timeout: str = "1h",
) -> dict[str, Any]:
    """Validate the templates and build the image; it is left at ``testing``."""
    request = prepare(
        target=target,
        family=family,
        version=version,
        template_dir=template_dir,
        variables=variables,
        var_files=var_files,
        only=only,
        build_timeout=build_timeout,
    )
    run_id = _run_id()
    image = build_stage(get_target(request.target), request, run_id)
    return {
        "version": request.version,
        "image": image.name,
        "image_id": image.id,
        "stage": "testing",
        "workdir": str(run_workdir(run_id)),
    }


def build_stage(target: Target, request: PipelineRequest, run_id: str) -> Image:
    """Validate and build; the new image is tagged ``testing``."""
    get_run_logger().info(
        "run %s: %s %s:%s from %s", run_id, request.target, request.family, request.version, request.template_dir
    )
    templates = validate_templates(request)
    if request.target == "docker":
        _ensure_docker_base(target)
    workdir = run_workdir(run_id)
    manifest = build_image(request, templates, workdir, run_id)
    image = target.image_from_artifact(manifest[-1].artifact_id, request.family, request.version)
    set_stage(target, image, "testing", run_id)
    return image


def _ensure_docker_base(target: Target) -> None:
    from tasks.baseimage import ensure_base_image
    from tasks.targets.docker import DockerTarget

    if isinstance(target, DockerTarget):
        ensure_base_image(target.engine)
