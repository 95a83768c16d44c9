"""The template half of the pipeline: static checks, packer validate/fmt, and the build itself.

bakery adapts to the template set, not the reverse: it passes the variables it owns (the version,
``image_name``, ``manifest_path``, ``run_id``, ``expires_at``, the platform's own such as the AWS region) only to
templates that declare them, picks the one source of the target's builder type when ``--only`` is not
given, and reads the artifact from Packer's output when no manifest is written where it asked.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tasks import hcl, inputs, lint, packer
from tasks.errors import JobFailed, UsageError
from tasks.request import PipelineRequest, check_no_secrets, expires_at
from tasks.targets.registry import platform

_NO = lint.Attr(0, "false", (), ())
DEFAULT_VERSION_VAR = "image_version"
# What ``required_plugins`` needs: Packer 1.6 rejects the block ("Unsupported block type").
PLUGINS_SINCE = ">= 1.7.0"

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


@dataclass(frozen=True)
class Checked:
    """A template set that passed the checks: the request with its sources chosen (``only``), the parsed
    set, and every lint finding (warnings, waived ones marked)."""

    request: PipelineRequest
    templates: lint.TemplateSet
    findings: tuple[lint.Finding, ...] = ()

    @property
    def warnings(self) -> list[lint.Finding]:
        return [f for f in self.findings if f.severity == "warning" and not f.waived]

    def report(self) -> dict[str, Any]:
        """The ``bake validate --json`` document (also the validate artifact's content)."""
        return {
            "template_dir": str(self.request.template_dir),
            "sources": list(self.request.only),
            "valid": True,
            "warnings": len(self.warnings),
            "waived": sum(1 for f in self.findings if f.waived),
            "findings": [f.as_dict() for f in self.findings],
        }


def select_sources(templates: lint.TemplateSet, request: PipelineRequest) -> tuple[str, ...]:
    """The one ``-only`` source to build: ``--only`` as given (it must exist and name one source: a run
    builds and tests one image), else the one source of the target's builder type. None or several is a
    UsageError listing what there is."""
    sources = lint.all_build_sources(templates)
    if request.only:
        chosen = []
        for name in request.only:
            found = [s for s in sources if lint.matches(s, (name,))]
            if not found and templates.source(name) is None:
                known = ", ".join(".".join(b.labels) for b in templates.of_type("source")) or "none"
                raise UsageError(f"--only {name}: no such source in {request.template_dir} (sources: {known})")
            chosen += [s.qualified for s in found] or [name]
        unique = tuple(dict.fromkeys(chosen))
        if len(unique) > 1:
            raise UsageError(
                f"--only {','.join(request.only)}: selects {len(unique)} sources ({', '.join(unique)}); "
                "a run builds and tests one image: name one source"
            )
        return unique
    builder = platform(request.target).packer_builder
    candidates = list(dict.fromkeys(s.qualified for s in sources if s.type == builder))
    if len(candidates) == 1:
        return (candidates[0],)
    every = ", ".join(dict.fromkeys(s.qualified for s in sources)) or "none"
    if not candidates:
        raise UsageError(
            f"--template-dir {request.template_dir}: no {builder} source in any build for --target "
            f"{request.target} (builds: {every})"
        )
    raise UsageError(
        f"--template-dir {request.template_dir}: {len(candidates)} {builder} sources for --target {request.target} "
        f"({', '.join(candidates)}); choose one with --only"
    )


def version_variable(templates: lint.TemplateSet, request: PipelineRequest) -> str | None:
    """The variable that gets ``--version``: ``--version-var`` (which must be declared), else
    ``image_version`` when declared; None when the template takes no version (bakery's tags carry it)."""
    if request.version_var is not None:
        if request.version_var not in templates.variables:
            declared = ", ".join(sorted(templates.variables)) or "none"
            raise UsageError(
                f"--version-var {request.version_var}: {request.template_dir} declares no such variable "
                f"(variables: {declared})"
            )
        return request.version_var
    return DEFAULT_VERSION_VAR if DEFAULT_VERSION_VAR in templates.variables else None


def enforce(findings: Sequence[lint.Finding], request: PipelineRequest) -> list[lint.Finding]:
    """Waive what the run or a comment waives; errors (and with ``--strict`` warnings) stop the run."""
    marked = lint.waive(findings, request.lint_ignore)
    stopping = lint.blocking(marked, request.strict)
    if stopping:
        why = (
            " (--strict: warnings are errors)"
            if request.strict and any(f.severity == "warning" for f in stopping)
            else ""
        )
        raise UsageError(
            f"template checks failed{why}:\n" + "\n".join(f"  {f}" for f in stopping),
            result={"valid": False, "findings": [f.as_dict() for f in marked]},
        )
    return marked


def static_checks(request: PipelineRequest) -> Checked:
    """Parse and lint the template set for the selected sources; no subprocess, no engine."""
    templates = lint.load_template_set(request.template_dir)
    chosen = replace(request, only=select_sources(templates, request))
    version_variable(templates, chosen)
    check_no_secrets(chosen.variables, "variables:", sensitive_names(templates))
    findings = enforce(lint.lint(templates, chosen.only), chosen)
    return Checked(chosen, templates, tuple(findings))


def packer_requirements(templates: lint.TemplateSet) -> list[tuple[str, str, str]]:
    """What the ``packer {}`` blocks ask of Packer: ``(constraint, why, where)``."""
    needs = []
    for block in templates.of_type("packer"):
        version = block.attrs.get("required_version")
        if version is not None and version.strings:
            needs.append((version.strings[0], "required_version", f"{block.file}:{version.line}"))
        for plugins in block.children("required_plugins"):
            needs.append((PLUGINS_SINCE, "required_plugins, installed by packer init", f"{plugins.where}"))
    return needs


def check_packer_version(templates: lint.TemplateSet) -> None:
    """One line when the installed Packer is older than the templates need, instead of Packer's own
    HCL error (1.6 says "Unsupported block type" for ``required_plugins``)."""
    needs = packer_requirements(templates)
    if not needs:
        return
    binary = packer.find_packer()
    found = packer.packer_version(binary)
    shown = ".".join(map(str, found))
    for constraint, why, where in needs:
        try:
            ok = packer.satisfies(found, constraint)
        except ValueError as exc:
            raise UsageError(f"{where}: required_version {constraint!r}: {exc}") from None
        if not ok:
            raise UsageError(
                f"{where}: the templates need Packer {constraint} ({why}); found Packer {shown} ({binary}): "
                "install a newer Packer or set PACKER to one"
            )


def validate(request: PipelineRequest) -> Checked:
    """``bake validate``: static checks, the Packer version the set needs, ``packer init`` (>=1.7),
    ``validate``, and ``fmt -check`` (a warning)."""
    checked = static_checks(request)
    request, templates = checked.request, checked.templates
    check_packer_version(templates)
    variables = template_variables(templates, request)
    _check_required_variables(templates, request, variables)
    _check_block_variables(templates, request)
    secrets = sensitive_values(templates, request)
    packer.init(request.template_dir, secrets)
    packer.validate(request.template_dir, request.only, variables, request.var_files, secrets)
    unformatted = [
        lint.Finding(path, 0, "fmt", f"not in canonical format (run: packer fmt {request.template_dir})")
        for path in packer.fmt_check(request.template_dir)
    ]
    return replace(checked, findings=(*checked.findings, *enforce(unformatted, request)))


def template_variables(
    templates: lint.TemplateSet,
    request: PipelineRequest,
    bakery: dict[str, str] | None = None,
) -> dict[str, str]:
    """What packer gets as ``-var``: bakery's own values (the family as ``image_name``, the version, and
    ``bakery``'s run values) for the variables the templates declare, then the user's ``--var``s.
    Packer refuses a ``-var`` for an undeclared variable, so nothing undeclared is passed."""
    owned = {"image_name": request.family, **(bakery or {})}
    version_var = version_variable(templates, request)
    if version_var:
        owned[version_var] = request.version
    declared = templates.variables
    return {
        **{name: value for name, value in owned.items() if name in declared},
        **environment_variables(templates, request),
        **request.variables,
    }


def environment_variables(templates: lint.TemplateSet, request: PipelineRequest) -> dict[str, str]:
    """The target platform's values from this environment (AWS: the EC2 region and endpoint, as
    ``aws_region`` and ``aws_endpoint``), for the variables the templates declare."""
    found = platform(request.target).packer_variables()
    return {name: value for name, value in found.items() if value and name in templates.variables}


def _check_block_variables(templates: lint.TemplateSet, request: PipelineRequest) -> None:
    """A secret variable from a Prefect block that the templates do not declare: packer would ignore it."""
    for key in packer.subprocess_variables():
        name = key.removeprefix("PKR_VAR_")
        if key.startswith("PKR_VAR_") and name not in templates.variables:
            where = request.template_dir
            raise UsageError(f"--var/--secret-var {name}: the templates in {where} declare no variable {name!r}")


def _check_required_variables(templates: lint.TemplateSet, request: PipelineRequest, given: dict[str, str]) -> None:
    """A variable with no default that nobody sets: name it before packer says something vaguer."""
    if request.var_files:
        return  # var files may set anything; packer validate names what is still missing
    run_owned = {"manifest_path", "run_id", "expires_at"}  # set by bakery at build time
    missing = [
        name
        for name, block in templates.variables.items()
        if "default" not in block.attrs
        and name not in given
        and name not in run_owned
        and f"PKR_VAR_{name}" not in packer.packer_env()
    ]
    if missing:
        block = templates.variables[missing[0]]
        raise UsageError(f"{block.where}: variable {missing[0]!r} is required and not set (use --var {missing[0]}=...)")


def sensitive_names(templates: lint.TemplateSet) -> set[str]:
    """Variables the templates mark ``sensitive = true``."""
    return {name for name, block in templates.variables.items() if block.attrs.get("sensitive", _NO).text == "true"}


def sensitive_values(templates: lint.TemplateSet, request: PipelineRequest) -> list[str]:
    """Values to mask in Packer's output: variables marked ``sensitive`` or named like a secret, whether
    in the worker's environment (``PKR_VAR_<name>``), in a var file, or from ``subprocess_environment``
    (Prefect Secret blocks, ``bake --var``'s secrets; ``packer.redactor`` adds those itself)."""
    marked = sensitive_names(templates)
    given: dict[str, str] = {}
    for var_file in request.var_files:
        given.update(var_file_values(var_file))
    given.update({k.removeprefix("PKR_VAR_"): v for k, v in os.environ.items() if k.startswith("PKR_VAR_")})
    given.update(request.variables)
    return [v for k, v in given.items() if k in marked or inputs.is_secret_name(k)]


def var_file_values(path: Path) -> dict[str, str]:
    """The string values a ``.pkrvars.hcl`` / ``.json`` var file sets (empty when packer would refuse it
    anyway: ``packer validate`` names that problem)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = json.loads(text) if str(path).endswith(".json") else hcl.loads_document(text)
    except Exception:  # unreadable or not HCL/JSON: packer validate reports it
        return {}
    values = {}
    for name, value in (document if isinstance(document, dict) else {}).items():
        if isinstance(value, str):
            text_value = value[1:-1] if value.startswith('"<<') and value.endswith('"') else value
            if text_value.startswith("<<"):  # a heredoc, as python-hcl2 returns it: <<EOT\n...\nEOT
                lines = text_value.splitlines()[1:-1]
                text_value = "\n".join(line.strip() if text_value.startswith("<<-") else line for line in lines) + "\n"
            elif len(text_value) >= 2 and text_value[0] == text_value[-1] == '"':  # python-hcl2 keeps the quotes
                text_value = json.loads(text_value) if _is_json_string(text_value) else text_value[1:-1]
            values[name.strip('"')] = text_value
    return values


def _is_json_string(text: str) -> bool:
    try:
        return isinstance(json.loads(text), str)
    except ValueError:
        return False


def build(
    request: PipelineRequest,
    templates: lint.TemplateSet,
    workdir: Path,
    run_id: str,
    on_progress: Callable[[Progress], None] = lambda p: None,
) -> packer.ManifestBuild:
    """``packer build`` of the selected source into ``workdir``; returns the record of its one artifact
    (a build that records none or several is a failure: a run tests the image it built, not a guess).

    When the template declares ``run_id`` and ``expires_at``, they are set so that Packer's temporary
    builder carries the run's labels and a sweep can find it after a crash; ``manifest_path`` (when
    declared) points its manifest post-processor at the run's own file.
    """
    manifest_path = workdir / "manifest.json"
    run_values = {
        "manifest_path": str(manifest_path),
        "run_id": run_id,
        # Packer's builder lives as long as the build may: the time limit, then the TTL like anything else.
        "expires_at": expires_at(request.build_timeout + request.ttl).isoformat(timespec="seconds"),
    }
    variables = template_variables(templates, request, run_values)
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
        manifest_path=manifest_path if "manifest_path" in templates.variables else None,
        log_path=workdir / "build.log",
        timeout=request.build_timeout.total_seconds(),
        on_line=on_line,
        secrets=sensitive_values(templates, request),
    )
    if len(result.manifest) != 1:
        found = ", ".join(f"{m.source}: {m.artifact_id}" for m in result.manifest) or "none"
        raise JobFailed(
            f"packer build of {', '.join(request.only)} recorded {len(result.manifest)} artifacts, expected one "
            f"({found}; log: {workdir / 'build.log'})"
        )
    log.info("packer build finished in %.1f s", result.seconds)
    return result.manifest[0]
