"""A pipeline request, checked in full before anything starts: a bad one is one UsageError (exit 2)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks import inputs
from tasks.errors import UsageError

# The template source each target builds unless --only says otherwise.
DEFAULT_SOURCES: dict[str, str] = {"docker": "docker.base", "aws": "amazon-ebs.base"}
DEFAULT_SPEC = "packer/test/image_spec.yaml"


@dataclass(frozen=True)
class PipelineRequest:
    target: inputs.TargetName
    family: str
    version: str
    template_dir: Path
    spec: Path
    only: tuple[str, ...]
    variables: dict[str, str] = field(default_factory=dict)
    var_files: tuple[Path, ...] = ()
    ttl: timedelta = timedelta(hours=2)
    ssh_timeout: timedelta = timedelta(minutes=2)
    build_timeout: timedelta = timedelta(hours=1)
    keep_on_failure: bool = False

    @property
    def packer_variables(self) -> dict[str, str]:
        """What packer gets as ``-var``: the user's, plus the family and version bakery owns."""
        return {**self.variables, "image_name": self.family, "image_version": self.version}


def prepare(
    *,
    target: str = "docker",
    family: str = "app-base",
    version: str | None = None,
    template_dir: str | Path = "packer",
    spec: str | Path = DEFAULT_SPEC,
    only: str | None = None,
    variables: list[str] | dict[str, str] | None = None,
    var_files: list[str] | None = None,
    ttl: str = "2h",
    ssh_timeout: str = "2m",
    build_timeout: str = "1h",
    keep_on_failure: bool = False,
) -> PipelineRequest:
    """Every check that needs no engine: names, values, durations, files that must exist."""
    checked_target = inputs.check_target(target)
    inputs.check_family(family)
    version = inputs.check_version(version) if version is not None else inputs.default_version()
    directory = Path(template_dir)
    if not directory.is_dir():
        raise UsageError(f"--template-dir {directory}: not a directory")
    spec_path = Path(spec)
    if not spec_path.is_file():
        raise UsageError(f"--spec {spec_path}: no such file")
    pairs = dict(inputs.parse_var(v) for v in variables) if isinstance(variables, list) else dict(variables or {})
    for name in pairs:
        inputs.parse_var(f"{name}=")
    files = tuple(Path(f) for f in var_files or [])
    for var_file in files:
        if not var_file.is_file() or not os.access(var_file, os.R_OK):
            raise UsageError(f"--var-file {var_file}: no such readable file")
    sources = tuple(s.strip() for s in only.split(",")) if only else (DEFAULT_SOURCES[target],)
    return PipelineRequest(
        target=checked_target,
        family=family,
        version=version,
        template_dir=directory.resolve(),
        spec=spec_path.resolve(),
        only=sources,
        variables=pairs,
        var_files=tuple(f.resolve() for f in files),
        ttl=inputs.parse_duration(ttl, "--ttl"),
        ssh_timeout=inputs.parse_duration(ssh_timeout, "--ssh-timeout"),
        build_timeout=inputs.parse_duration(build_timeout, "--build-timeout"),
        keep_on_failure=keep_on_failure,
    )


def state_dir() -> Path:
    """Where run records (manifest, build log, reports) are kept: ``$BAKERY_STATE_DIR``."""
    return Path(os.environ.get("BAKERY_STATE_DIR", "~/.local/state/bakery")).expanduser()


def run_workdir(run_id: str) -> Path:
    path = state_dir() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def keys_root() -> Path:
    """Per-run private keys live below here (never in the work dir) so a sweep can find stale ones."""
    return Path(tempfile.gettempdir()) / "bakery-keys"


def expires_at(ttl: timedelta, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + ttl
