"""The image pipeline: validate → build → launch → verify over SSH → teardown (always) → stage tag.

``image_test`` is the test half on its own (``bake test``); ``image_pipeline`` runs it as a subflow.
Teardown runs in ``finally``; the crash and cancellation hooks remove whatever carries the run's id,
and ``bake sweep`` covers a SIGKILL, after which no hook runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.blocks import block_credentials
from flows.checkout import check_commit
from tasks import keys, provenance
from tasks.errors import JobFailed, UsageError
from tasks.request import (
    DEFAULT_SPEC,
    AwsOptions,
    Duration,
    Family,
    OptionalBlockName,
    OptionalVariableName,
    OptionalVersion,
    PathText,
    PipelineRequest,
    TargetName,
    expires_at,
    pipeline_fields,
    prepare,
    run_workdir,
)
from tasks.steps.locks import family_lock
from tasks.steps.pipeline import (
    adopt_image,
    artifact_key,
    build_image,
    instance_endpoint,
    launch_instance,
    record_test_result,
    set_stage,
    teardown_instance,
    validate_templates,
    verify_instance,
)
from tasks.targets.base import (
    TAG_LAST_RESULT,
    TAG_LAST_TESTED,
    TESTABLE_STAGES,
    Image,
    Instance,
    NotConfigured,
    Run,
    SshEndpoint,
    Target,
    one_line,
)
from tasks.targets.registry import PLATFORMS, get_target, platform
from tasks.verify import VerifyResult

log = logging.getLogger(__name__)


def _run_id() -> str:
    return str(current_flow_run.id or uuid4())


def remove_run_resources(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Crash/cancellation hook: remove every instance and key the run created."""
    run_id = str(flow_run.id)
    try:
        parameters = flow_run.parameters or {}
        _remove_target_run_resources(
            str(parameters.get("target") or "docker"), run_id, parameters.get("aws_credentials")
        )
    finally:
        keys.remove_run_keys(run_id)


def _remove_target_run_resources(target: str, run_id: str, block_name: str | None = None, timeout: float = 120) -> None:
    """Test instances (AWS: Packer's builder, security groups and key pairs too) tagged with the run id.

    Only when the target is configured here (AWS: a region is set); short client timeouts and a bounded
    wait, and a failure is logged, never raised: ``bake sweep --target <target>`` finds whatever is left.
    """
    title = PLATFORMS[target].title if target in PLATFORMS else target
    try:
        with block_credentials(target, block_name):
            removed = platform(target).teardown_run(run_id, timeout=timeout)
    except NotConfigured as exc:
        log.warning("run %s: %s; bake sweep --target %s cleans up", run_id, exc, target)
        return
    except Exception as exc:
        log.error(
            "could not remove the %s resources of run %s (%s); bake sweep --target %s will", title, run_id, exc, target
        )
        return
    if removed:
        log.warning("removed %s resources of run %s: %s", title, run_id, ", ".join(removed))


def test_stage(target: Target, image: Image, request: PipelineRequest, run_id: str) -> dict[str, Any]:
    """Launch, verify and tear down. A ``testing`` (or stage-less) image becomes ``staging`` or ``failed``;
    an image at any other stage keeps it, and the result is recorded beside it (``record_test_result``)."""
    logger = get_run_logger()
    workdir = run_workdir(run_id)
    earned = _earned_stage(target, image)
    expiry = expires_at(request.ttl)
    with keys.run_keypair(run_id, expiry) as key:
        run = Run(run_id, image.family, workdir, expiry, key.private_key, key.public_key)
        instance: Instance | None = None
        endpoint: SshEndpoint | None = None
        failure: BaseException | None = None
        keep = False
        marked = False
        try:
            instance = launch_instance(target, image, run)
            endpoint = instance_endpoint(target, instance, run)
            result = verify_instance(endpoint, request, image, workdir)
            if not result.passed:
                keep = request.keep_on_failure
                marked = True
                _conclude(target, image, earned, "failed", run_id)
                raise JobFailed(f"verification of {image.name} failed: {failure_summary(result)}")
        except BaseException as exc:
            failure = exc
            if not marked and isinstance(exc, Exception) and not isinstance(exc, UsageError):
                _mark_failed(target, image, earned, run_id)  # launch, wait or SSH failed: the image did not pass
            raise
        finally:
            if instance is not None and keep:
                key.keep = True  # the key stays with the instance; the sweep removes both after expires-at
                logger.warning(
                    "keeping failed test instance %s (--keep-on-failure) and its key; bake sweep removes both "
                    "after %s%s",
                    instance.label,
                    run.expires_at.isoformat(timespec="seconds"),
                    f"; connect with: {ssh_command(endpoint)}" if endpoint else "",
                )
            elif instance is not None:
                _teardown(target, instance, failure)
    _conclude(target, image, earned, "passed", run_id)
    return {
        "image": image.name,
        "image_id": image.id,
        "stage": earned or "staging",
        "result": "passed",
        "checks": result.counts,
        "junit": str(workdir / "junit.xml"),
    }


def _earned_stage(target: Target, image: Image) -> str | None:
    """The image's stage when a test must leave it alone (anything but ``testing`` or none), else ``None``."""
    stage = target.current_stage(image)
    if stage in TESTABLE_STAGES:
        return None
    get_run_logger().info(
        "%s is %s: the test result is recorded beside it (%s, %s); its stage stays %s",
        image.name or image.id,
        stage,
        TAG_LAST_TESTED,
        TAG_LAST_RESULT,
        stage,
    )
    return stage


def _conclude(target: Target, image: Image, earned: str | None, result: str, run_id: str) -> None:
    """``staging``/``failed`` for a testing image; the recorded result for an image with an earned stage."""
    if earned is None:
        set_stage(target, image, "staging" if result == "passed" else "failed", run_id)
        return
    record_test_result(target, image, result, run_id)


def ssh_command(endpoint: SshEndpoint) -> str:
    """The command that reaches a kept instance with the run's key, its host key pinned as verified."""
    import shlex

    known = (
        f"{endpoint.host} {endpoint.host_key}"
        if endpoint.port == 22
        else f"[{endpoint.host}]:{endpoint.port} {endpoint.host_key}"
    )
    known_hosts = endpoint.key_path.parent / "known_hosts"
    with contextlib.suppress(OSError):
        known_hosts.write_text(known + "\n")
    return shlex.join(
        [
            "ssh",
            "-i",
            str(endpoint.key_path),
            "-p",
            str(endpoint.port),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            f"{endpoint.user}@{endpoint.host}",
        ]
    )


def _preflight(target: Target) -> None:
    """Checks that need the target's API (AWS: the subnet and its VPC exist; Docker with a registry: it
    answers and takes the credentials)."""
    check = getattr(target, "preflight", None)
    if check is not None:
        check()


def _mark_failed(target: Target, image: Image, earned: str | None, run_id: str) -> None:
    """Stage ``failed`` (or the recorded result ``failed``, for an earned stage); an error here is logged
    and never hides the failure that led here."""
    try:
        _conclude(target, image, earned, "failed", run_id)
    except Exception as exc:
        get_run_logger().error("could not mark %s failed: %s", image.name or image.id, exc)


def failure_summary(result: VerifyResult, limit: int = 5) -> str:
    """``2 of 9 checks failed: package no-such-package installed (expected true, found false); ...``"""
    failures = result.failures
    shown = "; ".join(f"{c.resource_type} {c.name} (expected {c.expected}, found {c.found})" for c in failures[:limit])
    more = f"; and {len(failures) - limit} more" if len(failures) > limit else ""
    return f"{len(failures)} of {result.counts['total']} checks failed: {shown}{more}"


@contextlib.contextmanager
def releasing(target: Target, image: Image) -> Iterator[None]:
    """``release_copies`` once the block is done with ``image``, however it ends."""
    try:
        yield
    finally:
        release_copies(target, image)


@contextlib.contextmanager
def releasing_on_failure(target: Target, image: Image) -> Iterator[None]:
    """``release_copies`` when the block fails (then its error goes on)."""
    try:
        yield
    except BaseException:
        release_copies(target, image)
        raise


def release_copies(target: Target, image: Image) -> None:
    """The machine's copies of ``image`` held for this run (``Target.release``): removed, and said."""
    try:
        released = target.release(image)
    except Exception as exc:  # a copy left behind is disk, never a reason to fail the run or hide its error
        get_run_logger().warning("could not remove this machine's copy of %s: %s", image.name, one_line(exc))
        return
    if released:
        get_run_logger().info(
            "removed this machine's copy of %s (the registry keeps it): %s", image.name, ", ".join(released)
        )


def _teardown(target: Target, instance: Instance, failure: BaseException | None) -> None:
    """Tear down; a teardown error is reported but never hides the original failure.

    When the task machinery itself fails (a crash or cancellation in progress), the target's own
    teardown is called directly as a last resort.
    """
    try:
        teardown_instance(target, instance)
        return
    except BaseException as exc:
        task_error = exc
    try:
        target.teardown(instance)
    except Exception as exc:
        if failure is None:
            raise exc from task_error
        log.error("teardown of %s failed as well: %s", instance.label, exc)
        return
    if failure is None and not isinstance(task_error, Exception):
        raise task_error


@flow(name="image-test", on_cancellation=[remove_run_resources], on_crashed=[remove_run_resources])
def image_test(
    image: str,
    target: TargetName = "docker",
    spec: PathText = DEFAULT_SPEC,
    ssh_timeout: Duration = "2m",
    ttl: Duration = "2h",
    keep_on_failure: bool = False,
    aws: AwsOptions | None = None,
    aws_credentials: str | None = None,
    spec_vars_file: str = "",
    spec_vars: dict[str, str] | None = None,
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Test an existing image: launch a test instance, verify it over SSH, tear it down.

    ``aws``: how an AWS test instance is launched and reached (subnet, instance type, SSH user, address
    and CIDR, instance profile, host key source); ignored by other targets. ``aws_credentials``: the name
    of a Prefect AwsCredentials block (empty: the standard credential chain). ``registry``: Docker only,
    ``HOST[:PORT][/PREFIX]`` the image is read from (by tag or digest) and staged in (empty:
    ``$BAKERY_REGISTRY``, else the local engine). ``registry_credentials``: with a registry, the name of a
    Prefect DockerRegistryCredentials block to log in with (empty: ``docker login`` / ``$DOCKER_CONFIG``).
    """
    request = prepare(**pipeline_fields(locals()))
    with block_credentials(request.target, aws_credentials, None, request.registry, request.registry_credentials):
        chosen = get_target(target, request.aws, request.registry)
        found = chosen.image(image)  # type: ignore[attr-defined]
        with releasing(chosen, found):
            return test_stage(chosen, found, request, _run_id())


@flow(name="image-pipeline", on_cancellation=[remove_run_resources], on_crashed=[remove_run_resources])
def image_pipeline(
    target: TargetName = "docker",
    family: Family = "app-base",
    version: OptionalVersion = "",
    template_dir: PathText = "packer",
    spec: PathText = DEFAULT_SPEC,
    variables: dict[str, str] | None = None,
    var_files: list[str] | None = None,
    only: str = "",
    keep_on_failure: bool = False,
    ttl: Duration = "2h",
    ssh_timeout: Duration = "2m",
    build_timeout: Duration = "1h",
    aws: AwsOptions | None = None,
    version_var: OptionalVariableName = "",
    lint_ignore: list[str] | None = None,
    strict: bool = False,
    aws_credentials: str | None = None,
    secret_vars: dict[str, str] | None = None,
    spec_vars_file: str = "",
    spec_vars: dict[str, str] | None = None,
    commit: str = "",
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Validate the templates, build the image, test it, and tag it ``staging`` when it passes.

    Args:
        target: where the image is built and tested (docker: the local engine; aws: an AMI).
        family: the image family, the template's image_name (lowercase letters, digits and -, from a letter).
        version: the image version; empty for a UTC timestamp such as 20260101.040000.
        template_dir: the Packer template directory, relative to the checkout.
        spec: the goss-format verification spec the test instance must pass: a file (it may include
            others with gossfile:) or a directory holding goss.yaml.
        variables: extra Packer variables (NAME: value).
        var_files: Packer variable files, relative to the checkout.
        only: the template source(s) to build; empty for the one source of the target's builder type
            (docker.* for docker, amazon-ebs.* for aws).
        keep_on_failure: leave a failed test instance for debugging (a sweep removes it after ttl).
        ttl: when a kept or leaked test instance expires (90s, 15m, 2h, 7d).
        ssh_timeout: how long to wait for the test instance's SSH.
        build_timeout: the packer build time limit.
        aws: how an AWS test instance is launched and reached (subnet, instance type, SSH user, address
            and CIDR, instance profile, host key source); ignored by other targets.
        version_var: the template variable that gets the version; empty for image_version when declared.
        lint_ignore: lint rules (warnings) to waive for this run, e.g. encrypt-boot.
        strict: treat lint warnings as errors.
        aws_credentials: the name of a Prefect AwsCredentials block for the AWS target (empty: the
            standard credential chain of the worker).
        secret_vars: Packer variables read from Prefect Secret blocks ({variable: block name}); they reach
            packer through its environment only, masked in its output.
        spec_vars_file: a YAML/JSON file of variables for a templated spec (.Vars), relative to the checkout.
        spec_vars: spec variables over the file's ({name: value}, a dotted name sets a nested value).
        commit: the git commit this build is for (a CI pipeline sets it); the checkout the run starts in
            must be at it. Empty: whatever the checkout holds.
        registry: Docker only: ``HOST[:PORT][/PREFIX]`` to push the image to, test it from (by digest)
            and keep its stages in (empty: ``$BAKERY_REGISTRY``, else the local engine only).
        registry_credentials: with a registry: the name of a Prefect DockerRegistryCredentials block whose
            login the registry client and the engine's push and pull use (empty: ``docker login`` /
            ``$DOCKER_CONFIG`` of the worker).
    """
    request = prepare(**pipeline_fields(locals()))
    built_commit = check_commit(commit)
    run_id = _run_id()
    with block_credentials(
        request.target, aws_credentials, secret_vars, request.registry, request.registry_credentials
    ):
        chosen = get_target(request.target, request.aws, request.registry)
        _preflight(chosen)  # a bad --subnet (exit 2), an unreachable registry (exit 1): before anything is built
        with family_lock(request.family):  # one build of a family at a time (tasks/locks.py)
            image = build_stage(chosen, request, run_id)
            with releasing(chosen, image):
                tested = test_stage(chosen, image, request, run_id)
    result = {"version": request.version, "workdir": str(run_workdir(run_id)), **tested}
    result = {**result, "commit": built_commit} if built_commit else result
    publish_pipeline_result(request.family, result)
    return result


PIPELINE_RESULT_FIELDS = ("version", "image", "image_id", "stage", "result", "commit")


def publish_pipeline_result(family: str, result: dict[str, Any]) -> None:
    """The pipeline's result as a one-row table artifact ``<family>-pipeline-result``, so a run that
    started this one as a deployment run on another machine (the fanned-out weekly rebuild) reads it
    from the server: flow results are not shared between workers."""
    row = {k: str(result[k]) for k in PIPELINE_RESULT_FIELDS if k in result}
    create_table_artifact([row], key=artifact_key(family, "pipeline-result"), description="the pipeline's result")


@flow(name="image-build", on_cancellation=[remove_run_resources], on_crashed=[remove_run_resources])
def image_build(
    target: TargetName = "docker",
    family: Family = "app-base",
    version: OptionalVersion = "",
    template_dir: PathText = "packer",
    variables: dict[str, str] | None = None,
    var_files: list[str] | None = None,
    only: str = "",
    build_timeout: Duration = "1h",
    version_var: OptionalVariableName = "",
    lint_ignore: list[str] | None = None,
    strict: bool = False,
    aws_credentials: str | None = None,
    secret_vars: dict[str, str] | None = None,
    spec_vars_file: str = "",
    spec_vars: dict[str, str] | None = None,
    registry: str = "",
    registry_credentials: OptionalBlockName = "",
) -> dict[str, Any]:
    """Validate the templates and build the image; it is left at ``testing``.

    ``aws_credentials`` names a Prefect AwsCredentials block, ``secret_vars`` Packer variables read from
    Prefect Secret blocks ({variable: block name}), ``registry`` where a Docker image is pushed and
    ``registry_credentials`` the DockerRegistryCredentials block to log in there with, as for ``image_pipeline``.
    """
    request = prepare(**pipeline_fields(locals()))
    run_id = _run_id()
    with block_credentials(
        request.target, aws_credentials, secret_vars, request.registry, request.registry_credentials
    ):
        chosen = get_target(request.target, registry=request.registry)
        _preflight(chosen)  # an unreachable registry or refused credentials: before anything is built
        with family_lock(request.family):
            image = build_stage(chosen, request, run_id)
            release_copies(chosen, image)
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
    checked = validate_templates(request)
    platform(request.target).before_build(target)
    workdir = run_workdir(run_id)
    built_from, base_note = provenance.build_inputs(checked.request, checked.templates)
    if base_note:
        get_run_logger().warning("the base of this build cannot be told (%s): a rebuild will not skip it", base_note)
    built = build_image(checked.request, checked.templates, workdir, run_id)
    image = adopt_image(target, built.artifact_id, checked.request, run_id)
    with releasing_on_failure(target, image):  # the image was never staged: no run will release its copy
        set_stage(target, image, "testing", run_id)
    _record_inputs(request, image, built_from)
    return image


def _record_inputs(request: PipelineRequest, image: Image, built_from: provenance.BuildInputs) -> None:
    """What the image was built from, for the weekly rebuild; without it a rebuild builds (never skips)."""
    try:
        provenance.record(request.target, image.id, built_from)
    except Exception as exc:
        get_run_logger().warning("could not record the build inputs of %s: %s", image.name or image.id, exc)
