"""The template half of the pipeline: static checks, packer validate/fmt, and the build itself."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks import inputs, lint, packer
from tasks.errors import JobFailed, UsageError
from tasks.request import PipelineRequest, expires_at

_NO = lint.Attr(0, "false", (), ())

log = logging.getLogger(__name__)
# How packer announces each provisioner (the file provisioner says "Uploading").
_STEP_START = re.compile(r"^==> [^:]+: (Provisioning with |Uploading )")


@dataclass(frozen=True)
class Progress:
    """Where a build stands: ``step`` of ``steps`` provisioners started, and the latest message."""

    step: int
    steps: int
    message: str

    @property
    def fraction(self) -> float:
        return min(self.step / self.steps, 1.0) if self.steps else 0.0


def static_checks(request: PipelineRequest) -> lint.TemplateSet:
    """Parse and lint the template set for the selected sources; no subprocess, no engine."""
    templates = lint.load_template_set(request.template_dir)
    for source in request.only:
        if templates.source(source) is None:
            known = ", ".join(".".join(b.labels) for b in templates.of_type("source")) or "none"
            raise UsageError(f"--only {source}: no such source in {request.template_dir} (sources: {known})")
    findings = lint.lint(templates, request.only)
    if findings:
        raise UsageError("template checks failed:\n" + "\n".join(f"  {f}" for f in findings))
    return templates


def validate(request: PipelineRequest) -> lint.TemplateSet:
    """``bake validate``: static checks, then ``packer init`` (>=1.7), ``validate`` and ``fmt -check``."""
    templates = static_checks(request)
    _check_block_variables(templates, request)
    _check_required_variables(templates, request)
    packer.init(request.template_dir)
    variables = {**environment_variables(templates, request), **request.packer_variables}
    packer.validate(request.template_dir, request.only, variables, request.var_files)
    packer.fmt_check(request.template_dir)
    return templates


def environment_variables(templates: lint.TemplateSet, request: PipelineRequest) -> dict[str, str]:
    """For AWS builds: the EC2 region and endpoint from the standard AWS variables, as ``aws_region`` and
    ``aws_endpoint`` (``custom_endpoint_ec2``) for templates that declare them. Packer reads neither
    variable itself, and without this a build could land in another region than bakery looks in."""
    if request.target != "aws":
        return {}
    from tasks import aws

    found = {"aws_region": aws.region() or "", "aws_endpoint": aws.endpoint_url("ec2") or ""}
    return {name: value for name, value in found.items() if value and name in templates.variables}


def _check_block_variables(templates: lint.TemplateSet, request: PipelineRequest) -> None:
    """A secret variable from a Prefect block that the templates do not declare: packer would ignore it."""
    for key in packer.subprocess_variables():
        name = key.removeprefix("PKR_VAR_")
        if key.startswith("PKR_VAR_") and name not in templates.variables:
            where = request.template_dir
            raise UsageError(f"--secret-var {name}: the templates in {where} declare no variable {name!r}")


def _check_required_variables(templates: lint.TemplateSet, request: PipelineRequest) -> None:
    """A variable with no default that nobody sets: name it before packer says something vaguer."""
    given = set(request.packer_variables) | {"manifest_path"}
    if request.var_files:
        return  # var files may set anything; packer validate names what is still missing
    missing = [
        name
        for name, block in templates.variables.items()
        if "default" not in block.attrs and name not in given and f"PKR_VAR_{name}" not in packer.packer_env()
    ]
    if missing:
        block = templates.variables[missing[0]]
        raise UsageError(f"{block.where}: variable {missing[0]!r} is required and not set (use --var {missing[0]}=...)")


def sensitive_values(templates: lint.TemplateSet, request: PipelineRequest) -> list[str]:
    """Values to mask in Packer's output: variables marked ``sensitive`` or named like a secret, whether
    given as variables or as ``PKR_VAR_<name>`` in the environment."""
    marked = {name for name, block in templates.variables.items() if block.attrs.get("sensitive", _NO).text == "true"}
    given = {
        **{k.removeprefix("PKR_VAR_"): v for k, v in os.environ.items() if k.startswith("PKR_VAR_")},
        **request.packer_variables,
    }
    from_blocks = list(packer.subprocess_variables().values())  # block secrets and credentials: always masked
    return [v for k, v in given.items() if k in marked or inputs.is_secret_name(k)] + from_blocks


def build(
    request: PipelineRequest,
    templates: lint.TemplateSet,
    workdir: Path,
    run_id: str,
    on_progress: Callable[[Progress], None] = lambda p: None,
) -> list[packer.ManifestBuild]:
    """``packer build`` of the selected sources into ``workdir``; returns this run's manifest records.

    When the template declares ``run_id`` and ``expires_at``, they are set so that Packer's temporary
    builder carries the run's labels and a sweep can find it after a crash.
    """
    run_vars = {"run_id": run_id, "expires_at": expires_at(request.ttl).isoformat(timespec="seconds")}
    variables = {
        **{k: v for k, v in run_vars.items() if k in templates.variables},
        **environment_variables(templates, request),
        **request.packer_variables,
    }
    steps = sum(lint.provisioner_count(templates, s) for s in request.only)
    step = 0

    def on_line(line: packer.MachineLine) -> None:
        nonlocal step
        if line.type != "ui" or len(line.data) < 2:
            return
        for text in line.data[1].splitlines():
            if _STEP_START.match(text):
                step += 1
            if text.strip():
                on_progress(Progress(step, steps, text.rstrip()))

    result = packer.build(
        request.template_dir,
        only=request.only,
        variables=variables,
        var_files=request.var_files,
        manifest_path=workdir / "manifest.json",
        log_path=workdir / "build.log",
        timeout=request.build_timeout.total_seconds(),
        on_line=on_line,
        secrets=sensitive_values(templates, request),
    )
    if not result.manifest:
        raise JobFailed(f"packer build recorded no artifact in {workdir / 'manifest.json'}")
    log.info("packer build finished in %.1f s", result.seconds)
    return result.manifest
