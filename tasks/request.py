"""A pipeline request, checked in full before anything starts: a bad one is one UsageError (exit 2)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from tasks import inputs
from tasks.errors import UsageError
from tasks.targets.docker.image_registry import Registry, resolve_registry

DEFAULT_SPEC = "packer/test/image_spec.yaml"


@dataclass(frozen=True)
class AwsOptions:
    """How an AWS test instance is launched and reached (``bake run/test --target aws``).

    Attributes:
        subnet: the subnet of the test instance; empty for the default VPC's default subnet.
        instance_type: the test instance's type.
        ssh_user: the login user of the image (cloud-init's default user: ubuntu on Ubuntu AMIs).
        ssh_address: which address bakery connects to: private (the runner sits in the VPC) or public.
        ssh_cidr: who may reach port 22 of the test instance; empty for the subnet's VPC CIDR.
        instance_profile: an IAM instance profile (name or ARN) for the test instance; empty for none.
        host_key: user-data (a per-run host key injected through cloud-init, pinned) or console (the
            host key block cloud-init prints to the console).
        trust_on_first_use: accept the host key the instance offers when neither way yields one.
    """

    subnet: str | None = None
    instance_type: str = "t3.micro"
    ssh_user: str = "ubuntu"
    ssh_address: Literal["private", "public"] = "private"
    ssh_cidr: str | None = None
    instance_profile: str | None = None
    host_key: Literal["user-data", "console"] = "user-data"
    trust_on_first_use: bool = False


_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
_SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PROFILE_RE = re.compile(r"^([\w+=,.@-]{1,128}|arn:aws[a-z-]*:iam::\d{12}:instance-profile/[\w+=,.@/-]{1,128})$")


def check_aws_options(options: AwsOptions | dict[str, Any] | None) -> AwsOptions:
    """Every AWS option checked, and ``--ssh-cidr`` normalised; a bad one is a UsageError naming it."""
    if options is None:
        return AwsOptions()
    if isinstance(options, dict):
        unknown = sorted(set(options) - set(AwsOptions.__dataclass_fields__))
        if unknown:
            raise UsageError(f"aws options: unknown option(s) {', '.join(unknown)}")
        options = AwsOptions(**options)
    if options.subnet and not _SUBNET_RE.fullmatch(options.subnet):
        raise UsageError(f"--subnet {options.subnet!r}: not a subnet id (expected subnet-0123456789abcdef0)")
    if not _INSTANCE_TYPE_RE.fullmatch(options.instance_type):
        raise UsageError(f"--instance-type {options.instance_type!r}: not an instance type (expected e.g. t3.micro)")
    if not _SSH_USER_RE.fullmatch(options.ssh_user):
        raise UsageError(f"--ssh-user {options.ssh_user!r}: not a user name (expected ^[a-z_][a-z0-9_-]{{0,31}}$)")
    if options.ssh_address not in ("private", "public"):
        raise UsageError(f"--ssh-address {options.ssh_address!r}: expected private or public")
    if options.host_key not in ("user-data", "console"):
        raise UsageError(f"--host-key-source {options.host_key!r}: expected user-data or console")
    if options.instance_profile and not _PROFILE_RE.fullmatch(options.instance_profile):
        raise UsageError(
            f"--instance-profile {options.instance_profile!r}: expected an instance profile name or its ARN"
        )
    cidr = options.ssh_cidr
    if cidr:
        try:
            cidr = str(ipaddress.ip_network(cidr.strip(), strict=True))
        except ValueError as exc:
            raise UsageError(f"--ssh-cidr {options.ssh_cidr!r}: not a CIDR block ({exc})") from None
    return AwsOptions(**{**options.__dict__, "ssh_cidr": cidr or None, "subnet": options.subnet or None})


@dataclass(frozen=True)
class PipelineRequest:
    target: inputs.TargetName
    family: str
    version: str
    template_dir: Path
    spec: Path  # a goss file, or a directory holding goss.yaml
    only: tuple[str, ...]  # empty: the one source of the target's builder type (tasks/build.py)
    variables: dict[str, str] = field(default_factory=dict)
    var_files: tuple[Path, ...] = ()
    ttl: timedelta = timedelta(hours=2)
    ssh_timeout: timedelta = timedelta(minutes=2)
    build_timeout: timedelta = timedelta(hours=1)
    keep_on_failure: bool = False
    aws: AwsOptions = field(default_factory=AwsOptions)
    version_var: str | None = None  # None: image_version, when the templates declare it
    lint_ignore: tuple[str, ...] = ()
    strict: bool = False
    spec_vars_file: Path | None = None  # --vars: the .Vars of a templated spec
    spec_vars: dict[str, str] = field(default_factory=dict)  # --spec-var K=V, over the file's
    registry: Registry | None = None  # --registry / BAKERY_REGISTRY: push and stage there (docker only)

    def spec_variables(self) -> dict[str, Any]:
        from tasks.verify.spec import spec_variables

        return spec_variables(self.spec_vars_file, [f"{k}={v}" for k, v in self.spec_vars.items()])


SUPPORTED_WAYS = (
    "give it as PKR_VAR_{name} in the worker's environment, from a Prefect Secret block "
    "(bake --secret-var {name}=BLOCK; flow parameter secret_vars), or in a --var-file"
)


def check_no_secrets(variables: Mapping[str, str], where: str, sensitive: Collection[str] = ()) -> None:
    """Refuse secret-named (or template-``sensitive``) variables among values that travel as flow parameters
    or on packer's command line: the one place every path (CLI, UI, deployment, rebuild) goes through.

    Args:
        variables: the plain variables of a request.
        where: what names them in the message (``variables``, ``deployments/families.yaml: families[0].variables``).
        sensitive: names the templates mark ``sensitive = true``.
    """
    for name in variables:
        if inputs.is_secret_name(name) or name in sensitive:
            why = "marked sensitive in the templates" if name in sensitive else "a secret by its name"
            raise UsageError(
                f"{where} {name}: {why}; never a flow parameter or packer command-line value: "
                + SUPPORTED_WAYS.format(name=name)
            )


def check_no_secret_spec_vars(spec_vars: Mapping[str, str], where: str) -> None:
    """Spec variables travel as flow parameters: a secret-named one is refused; a spec reads a secret from
    bake's environment instead (``{{ .Env.NAME }}``) where it is rendered."""
    for name in spec_vars:
        if inputs.is_secret_name(name.split(".")[-1]):
            env = name.split(".")[-1].upper().replace("-", "_")
            raise UsageError(
                f"{where} {name}: a secret by its name; never a flow parameter: "
                f"read it in the spec as {{{{ .Env.{env} }}}} from bake's environment"
            )


def split_secrets(
    variables: Mapping[str, str], sensitive: Collection[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """``(plain, secret_environment)``: the secret ones as ``PKR_VAR_<name>`` for packer's own environment
    (``tasks.packer.subprocess_environment``), the rest as they were. For ``bake``'s ``--var``."""
    plain = {k: v for k, v in variables.items() if not (inputs.is_secret_name(k) or k in sensitive)}
    secret = {f"PKR_VAR_{k}": v for k, v in variables.items() if k not in plain}
    return plain, secret


def prepare(
    *,
    target: str = "docker",
    family: str = "app-base",
    version: str | None = None,
    template_dir: str | Path = "packer",
    spec: str | Path = DEFAULT_SPEC,
    spec_vars_file: str | Path | None = None,
    spec_vars: list[str] | dict[str, str] | None = None,
    only: str | None = None,
    variables: list[str] | dict[str, str] | None = None,
    var_files: list[str] | None = None,
    ttl: str = "2h",
    ssh_timeout: str = "2m",
    build_timeout: str = "1h",
    keep_on_failure: bool = False,
    aws: AwsOptions | dict[str, Any] | None = None,
    version_var: str | None = None,
    lint_ignore: list[str] | tuple[str, ...] | None = None,
    strict: bool = False,
    registry: str | None = None,
) -> PipelineRequest:
    """Every check that needs no engine: names, values, durations, files that must exist."""
    from tasks import lint  # the HCL parser: only for requests that build

    checked_target = inputs.check_target(target)
    checked_registry = check_registry_for(checked_target, registry)
    inputs.check_family(family)
    version = inputs.check_version(version) if version else inputs.default_version()
    directory = Path(template_dir)
    if not directory.is_dir():
        raise UsageError(f"--template-dir {directory}: not a directory")
    spec_path = Path(spec)
    if not spec_path.exists():
        raise UsageError(f"--spec {spec_path}: no such file or directory")
    vars_path = Path(spec_vars_file) if spec_vars_file else None
    if vars_path is not None and (not vars_path.is_file() or not os.access(vars_path, os.R_OK)):
        raise UsageError(f"--vars {vars_path}: no such readable file")
    spec_pairs: dict[str, str] = {}
    for assignment in spec_vars if isinstance(spec_vars, list) else [f"{k}={v}" for k, v in (spec_vars or {}).items()]:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--spec-var {assignment!r}: expected NAME=VALUE")
        spec_pairs[name.strip()] = value
    check_no_secret_spec_vars(spec_pairs, "--spec-var")
    pairs = dict(inputs.parse_var(v) for v in variables) if isinstance(variables, list) else dict(variables or {})
    for name in pairs:
        inputs.parse_var(f"{name}=")
    check_no_secrets(pairs, "--var" if isinstance(variables, list) else "variables:")
    files = tuple(Path(f) for f in var_files or [])
    for var_file in files:
        if not var_file.is_file() or not os.access(var_file, os.R_OK):
            raise UsageError(f"--var-file {var_file}: no such readable file")
    sources = tuple(s.strip() for s in only.split(",") if s.strip()) if only else ()
    if version_var and version_var in pairs:
        raise UsageError(f"--var {version_var}: set by bakery from --version (--version-var {version_var})")
    if version_var is not None and not _VARIABLE_RE.fullmatch(version_var):
        raise UsageError(
            f"--version-var {version_var!r}: not a Packer variable name (expected ^[A-Za-z_][A-Za-z0-9_-]*$)"
        )
    return PipelineRequest(
        target=checked_target,
        family=family,
        version=version,
        template_dir=directory.resolve(),
        spec=spec_path.resolve(),
        spec_vars_file=vars_path.resolve() if vars_path else None,
        spec_vars=spec_pairs,
        only=sources,
        variables=pairs,
        var_files=tuple(f.resolve() for f in files),
        ttl=inputs.parse_duration(ttl, "--ttl"),
        ssh_timeout=inputs.parse_duration(ssh_timeout, "--ssh-timeout"),
        build_timeout=inputs.parse_duration(build_timeout, "--build-timeout"),
        keep_on_failure=keep_on_failure,
        aws=check_aws_options(aws),
        version_var=version_var or None,
        lint_ignore=lint.check_rule_names(list(lint_ignore or [])),
        strict=strict,
        registry=checked_registry,
    )


def check_registry_for(target: str, registry: str | None, where: str = "--registry") -> Registry | None:
    """The registry of a request (``registry``, else ``$BAKERY_REGISTRY``), checked; only the Docker
    target has one (an AWS request ignores ``$BAKERY_REGISTRY`` and refuses ``--registry``)."""
    if target != "docker":
        if registry:
            raise UsageError(f"{where} {registry!r}: only the docker target pushes to a registry")
        return None
    return resolve_registry(registry, where)


def state_dir() -> Path:
    """Where run records (manifest, build log, reports) are kept: ``$BAKERY_STATE_DIR``."""
    return Path(os.environ.get("BAKERY_STATE_DIR", "~/.local/state/bakery")).expanduser()


def run_workdir(run_id: str) -> Path:
    path = state_dir() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def keys_root() -> Path:
    """Per-run private keys live below here (never in the work dir, never a predictable shared ``/tmp``
    path): ``$BAKERY_KEYS_DIR``, else ``$XDG_RUNTIME_DIR/bakery-keys`` (the user's own tmpfs), else
    ``<state dir>/keys``. Use it through :func:`private_dir`, which checks it."""
    explicit = os.environ.get("BAKERY_KEYS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute() and Path(runtime).is_dir():
        return Path(runtime) / "bakery-keys"
    return state_dir() / "keys"


def private_dir(path: Path, create: bool = True) -> Path:
    """``path`` as a private directory, checked, not assumed: no symlink anywhere on the path, owned by
    this user, mode 0700 (created so, with any missing parents, when ``create``). Anything else is a
    UsageError naming the path and what is wrong."""
    path = Path(os.path.abspath(path))
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            if not create:
                raise UsageError(f"private key directory {path}: {current} does not exist") from None
            os.mkdir(current, 0o700)
            info = current.lstat()
        if stat.S_ISLNK(info.st_mode):
            raise UsageError(f"private key directory {path}: {current} is a symlink (refused anywhere on the path)")
        if not stat.S_ISDIR(info.st_mode):
            raise UsageError(f"private key directory {path}: {current} is not a directory")
    info = path.lstat()
    if info.st_uid != os.getuid():
        raise UsageError(f"private key directory {path}: owned by uid {info.st_uid}, not by you ({os.getuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        mode = oct(stat.S_IMODE(info.st_mode))
        raise UsageError(f"private key directory {path}: mode {mode}, expected 0o700 (only you may read it)")
    return path


def expires_at(ttl: timedelta, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + ttl
