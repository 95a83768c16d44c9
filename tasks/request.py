"""A pipeline request, checked in full before anything starts: a bad one is one UsageError (exit 2)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from tasks import inputs
from tasks.errors import UsageError
from tasks.targets.docker.image_registry import ENV_VAR as ENV_REGISTRY
from tasks.targets.docker.image_registry import Registry, resolve_registry

DEFAULT_SPEC = "packer/test/image_spec.yaml"
REGISTRY_CREDENTIALS_FLAG = "--registry-credentials-block"


# --- the request model: each value's rule once, for the CLI, the flows' parameters (the Prefect UI form
# renders the patterns and choices of their JSON schema), families.yaml and the AWS options -----------


def _rule(check: Callable[[Any], str | None]) -> BeforeValidator:
    """A validator that says what is wrong in bakery's words (``check`` returns the problem, or None)."""

    def validate(value: Any) -> Any:
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return BeforeValidator(validate)


def _matching(pattern: str, problem: str, empty: bool = False) -> BeforeValidator:
    regex = re.compile(pattern)
    return _rule(
        lambda v: None if (empty and v in ("", None)) or (isinstance(v, str) and regex.fullmatch(v)) else problem
    )


def _option(flag: str, help: str, metavar: str | None = None, **schema: Any) -> Any:
    """A field's CLI flag, help and metavar (``flows/cli.py`` builds its options from them); the help is
    also the field's description in the Prefect UI form."""
    extra: dict[str, Any] = {"flag": flag, **({"metavar": metavar} if metavar else {})}
    return Field(description=help, json_schema_extra=extra, **schema)


# Prefect block document names: lowercase letters, digits and dashes (flows/blocks.py checks every name by it)
BLOCK_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,127}$"
BLOCK_NAME_PROBLEM = "not a Prefect block name (expected lowercase letters, digits and '-')"
_BLOCK_NAME_RE = re.compile(BLOCK_NAME_PATTERN)


def _block_name_problem(value: Any) -> str | None:
    """A Prefect block name, or empty."""
    if value in ("", None) or (isinstance(value, str) and _BLOCK_NAME_RE.fullmatch(value)):
        return None
    return BLOCK_NAME_PROBLEM


def _target_problem(value: Any) -> str | None:
    return None if value in inputs.TARGETS else f"unknown target (expected one of {', '.join(inputs.TARGETS)})"


TargetName = Annotated[inputs.TargetName, _rule(_target_problem)]
Family = Annotated[str, Field(pattern=inputs.FAMILY_PATTERN), _matching(inputs.FAMILY_PATTERN, inputs.FAMILY_PROBLEM)]
# "" means a UTC timestamp version (inputs.default_version)
OptionalVersion = Annotated[
    str,
    Field(pattern=f"^$|{inputs.VERSION_PATTERN}"),
    _matching(inputs.VERSION_PATTERN, inputs.VERSION_PROBLEM, empty=True),
]
# a file or directory named by its path (relative to the checkout a run starts in)
PathText = Annotated[str, Field(min_length=1)]
Duration = Annotated[str, Field(pattern=inputs.DURATION_PATTERN), _rule(inputs.duration_problem)]
# a Prefect block's name ("": none)
OptionalBlockName = Annotated[str, Field(pattern=f"^$|{BLOCK_NAME_PATTERN}"), _rule(_block_name_problem)]
VARIABLE_PATTERN = "^[A-Za-z_][A-Za-z0-9_-]*$"
OptionalVariableName = Annotated[
    str,
    Field(pattern=f"^$|{VARIABLE_PATTERN}"),
    _matching(VARIABLE_PATTERN, f"not a Packer variable name (expected {VARIABLE_PATTERN})", empty=True),
]


def _cidr_problem(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as exc:
        return f"not a CIDR block ({exc})"
    return None


SUBNET_PATTERN = r"^subnet-[0-9a-f]{8,17}$"
INSTANCE_TYPE_PATTERN = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$"
SSH_USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
INSTANCE_PROFILE_PATTERN = (
    r"^([A-Za-z0-9_+=,.@-]{1,128}|arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[A-Za-z0-9_+=,.@/-]{1,128})$"
)


class AwsOptions(BaseModel):
    """How an AWS test instance is launched and reached (``bake run/test --target aws``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subnet: Annotated[
        str | None,
        _option("--subnet", "the subnet of the test instance (default: the default VPC's)", "ID"),
        Field(pattern=SUBNET_PATTERN),
        _matching(SUBNET_PATTERN, "not a subnet id (expected subnet-0123456789abcdef0)", empty=True),
    ] = None
    instance_type: Annotated[
        str,
        _option("--instance-type", "the test instance's type (default: t3.micro)", "T"),
        Field(pattern=INSTANCE_TYPE_PATTERN),
        _matching(INSTANCE_TYPE_PATTERN, "not an instance type (expected e.g. t3.micro)"),
    ] = "t3.micro"
    ssh_user: Annotated[
        str,
        _option("--ssh-user", "the login user of the image (default: ubuntu)", "U"),
        Field(pattern=SSH_USER_PATTERN),
        _matching(SSH_USER_PATTERN, f"not a user name (expected {SSH_USER_PATTERN})"),
    ] = "ubuntu"
    ssh_address: Annotated[
        Literal["private", "public"],
        _option(
            "--ssh-address",
            "the address bakery connects to (default: private: the runner sits in the VPC)",
            "private|public",
        ),
        _rule(lambda v: None if v in ("private", "public") else "expected private or public"),
    ] = "private"
    ssh_cidr: Annotated[
        str | None,
        _option("--ssh-cidr", "who may reach port 22 (default: the subnet's VPC CIDR)", "CIDR"),
        _rule(_cidr_problem),
    ] = None
    instance_profile: Annotated[
        str | None,
        _option("--instance-profile", "an IAM instance profile (name or ARN) for the test instance", "NAME"),
        Field(pattern=INSTANCE_PROFILE_PATTERN),
        _matching(INSTANCE_PROFILE_PATTERN, "expected an instance profile name or its ARN", empty=True),
    ] = None
    host_key: Annotated[
        Literal["user-data", "console"],
        _option(
            "--host-key-source",
            "user-data: a per-run host key injected through cloud-init (default); console: the console output",
            "user-data|console",
        ),
        _rule(lambda v: None if v in ("user-data", "console") else "expected user-data or console"),
    ] = "user-data"
    trust_on_first_use: Annotated[
        bool,
        _option("--trust-on-first-use", "accept the first host key offered when no other way yields one"),
    ] = False

    @field_validator("ssh_cidr", "subnet", "instance_profile")
    @classmethod
    def _normalised(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        return str(ipaddress.ip_network(value.strip(), strict=True)) if info.field_name == "ssh_cidr" else value


def field_flag(model: type[BaseModel], name: str) -> str:
    """The CLI flag of a model field (``--ssh-cidr``), the name bakery's messages give a value."""
    info = model.model_fields.get(name)
    extra = info.json_schema_extra if info is not None else None
    return str(extra["flag"]) if isinstance(extra, dict) and "flag" in extra else name


def usage_error(exc: ValidationError, label: Callable[[tuple[str | int, ...]], str]) -> UsageError:
    """pydantic's verdict as bakery's one line: ``<label> <value>: <what was expected>``, for the first
    problem (``label`` names a field where the user gave it: a CLI flag, ``families.yaml: families[0].family``)."""
    error = exc.errors(include_url=False)[0]
    where = label(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return UsageError(f"{where}: unknown option")
    if kind == "missing":
        return UsageError(f"{where}: required")
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("bool_parsing", "int_parsing"):
        return UsageError(
            f"{where} {error['input']!r}: expected {'true or false' if kind == 'bool_parsing' else 'a number'}"
        )
    if kind in ("dict_type", "list_type", "tuple_type", "string_type", "bool_type", "int_type"):
        expected = {"dict_type": "a mapping of NAME: VALUE", "string_type": "text", "bool_type": "true or false"}
        message = "expected " + expected.get(kind, "a list" if kind in ("list_type", "tuple_type") else "a number")
        return UsageError(f"{where}: {message}, got {type(error['input']).__name__}")
    if kind == "literal_error":
        message = "expected " + str(error.get("ctx", {}).get("expected", "")).replace("'", "")
    return UsageError(f"{where} {error['input']!r}: {message}")


def _flag_label(model: type[BaseModel]) -> Callable[[tuple[str | int, ...]], str]:
    def label(loc: tuple[str | int, ...]) -> str:
        owner: type[BaseModel] = model
        for part in loc[:-1]:
            annotation = owner.model_fields[str(part)].annotation if str(part) in owner.model_fields else None
            choices = get_args(annotation) or (annotation,)
            nested = [a for a in choices if isinstance(a, type) and issubclass(a, BaseModel)]
            if not nested:
                return ".".join(map(str, loc))
            owner = nested[0]
        return field_flag(owner, str(loc[-1])) if loc else model.__name__

    return label


def check_aws_options(options: AwsOptions | dict[str, Any] | None) -> AwsOptions:
    """Every AWS option checked, and ``--ssh-cidr`` normalised; a bad one is a UsageError naming its flag."""
    if options is None:
        return AwsOptions()
    if isinstance(options, AwsOptions):
        return options
    try:
        return AwsOptions.model_validate(options)
    except ValidationError as exc:
        unknown = sorted(set(options) - set(AwsOptions.model_fields))
        if unknown:
            raise UsageError(f"aws options: unknown option(s) {', '.join(unknown)}") from None
        raise usage_error(exc, _flag_label(AwsOptions)) from None


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
    registry_credentials: str = ""  # a Prefect DockerRegistryCredentials block name (never its values)

    def as_parameters(self) -> dict[str, Any]:
        """The request as ``PipelineParameters`` values (what a flow takes): the checked values, so a flow
        run gets what was checked (the sources chosen, the version fixed, the registry resolved)."""
        return {
            "target": self.target,
            "family": self.family,
            "version": self.version,
            "template_dir": str(self.template_dir),
            "variables": dict(self.variables),
            "var_files": [str(f) for f in self.var_files],
            "only": ",".join(self.only),
            "build_timeout": f"{int(self.build_timeout.total_seconds())}s",
            "version_var": self.version_var or "",
            "lint_ignore": list(self.lint_ignore),
            "strict": self.strict,
            "registry": str(self.registry or ""),
            "registry_credentials": self.registry_credentials,
            "spec": str(self.spec),
            "spec_vars_file": str(self.spec_vars_file or ""),
            "spec_vars": dict(self.spec_vars),
            "keep_on_failure": self.keep_on_failure,
            "ttl": f"{int(self.ttl.total_seconds())}s",
            "ssh_timeout": f"{int(self.ssh_timeout.total_seconds())}s",
            "aws": self.aws if self.target == "aws" else None,  # platform-specific: AWS's test instances only
        }

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


class PipelineParameters(BaseModel):
    """Every parameter of a pipeline run, once: its type and rule, default, CLI flag and help. ``bake``'s
    options (flows/cli.py), the flows' parameters (flows/pipeline.py: the same names, types and defaults,
    held equal by tests/unit/test_request_model.py) and ``prepare`` all read it. Secrets are never among
    them: secret-named variables are refused (``check_no_secrets``); they travel as Prefect Secret block
    names (``secret_vars``) or in packer's own environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Annotated[TargetName, _option("--target", inputs.TARGET_HELP)] = inputs.DEFAULT_TARGET
    family: Annotated[Family, _option("--family", "image family, the template's image_name (default: app-base)")] = (
        "app-base"
    )
    version: Annotated[OptionalVersion, _option("--version", "image version (default: a UTC timestamp)")] = ""
    template_dir: Annotated[
        PathText, _option("--template-dir", "Packer template directory (default: packer)", "DIR")
    ] = "packer"
    variables: Annotated[dict[str, str], _option("--var", "a Packer variable (repeatable)", "K=V")] = {}
    var_files: Annotated[list[str], _option("--var-file", "a Packer variable file (repeatable)", "F")] = []
    only: Annotated[str, _option("--only", "the one template source to build, e.g. docker.base", "SOURCE")] = ""
    build_timeout: Annotated[Duration, _option("--build-timeout", "packer build time limit (default: 1h)", "D")] = "1h"
    version_var: Annotated[
        OptionalVariableName,
        _option(
            "--version-var",
            "template variable that gets --version (default: image_version, when the templates declare it)",
            "NAME",
        ),
    ] = ""
    lint_ignore: Annotated[
        list[str], _option("--lint-ignore", "waive a lint warning for this run (repeatable), e.g. encrypt-boot", "RULE")
    ] = []
    strict: Annotated[bool, _option("--strict", "lint warnings are errors")] = False
    registry: Annotated[
        str,
        _option(
            "--registry",
            "docker: push images to this registry and keep their stages there as tags (default: "
            "$BAKERY_REGISTRY; unset: the local engine only). Credentials: --registry-credentials-block, "
            "else docker login / $DOCKER_CONFIG",
            "HOST[:PORT][/PREFIX]",
        ),
    ] = ""
    registry_credentials: Annotated[
        OptionalBlockName,
        _option(
            REGISTRY_CREDENTIALS_FLAG,
            "with a registry: log in to it with this Prefect DockerRegistryCredentials block (default: docker "
            "login / $DOCKER_CONFIG; none: anonymous)",
            "NAME",
        ),
    ] = ""
    spec: Annotated[PathText, _option("--spec", "goss-format verification spec (file or directory)", "FILE|DIR")] = (
        DEFAULT_SPEC
    )
    spec_vars_file: Annotated[str, _option("--vars", "YAML/JSON variables for the spec", "FILE")] = ""
    spec_vars: Annotated[
        dict[str, str],
        _option("--spec-var", "a spec variable (repeatable; a dotted K sets a nested value); overrides --vars", "K=V"),
    ] = {}
    keep_on_failure: Annotated[bool, _option("--keep-on-failure", "leave a failed test instance for debugging")] = False
    ttl: Annotated[Duration, _option("--ttl", "when a kept/leaked instance expires (default: 2h)", "D")] = "2h"
    ssh_timeout: Annotated[Duration, _option("--ssh-timeout", "how long to wait for SSH (default: 2m)", "D")] = "2m"
    aws: Annotated[AwsOptions | None, Field(description="how an AWS test instance is launched and reached")] = None

    def request(self) -> PipelineRequest:
        """The checks that need the file system (files exist, lint rule names, the registry) and the values
        parsed: the request the pipeline runs."""
        return _request_of(self)


def pipeline_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PipelineParameters`` among a flow's arguments (``pipeline_fields(locals())`` first thing in
    the flow): a flow hands its parameters to ``prepare`` without naming each again."""
    return {name: value for name, value in values.items() if name in PipelineParameters.model_fields}


def _pairs(values: Any, parse: Callable[[str], tuple[str, str]]) -> Any:
    """``--var``/``--spec-var`` ``K=V`` strings (the CLI) or a mapping (a flow parameter) as a mapping."""
    if isinstance(values, list):
        return dict(parse(v) for v in values)
    return values or {}


def _spec_var(assignment: str) -> tuple[str, str]:
    name, sep, value = assignment.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--spec-var {assignment!r}: expected NAME=VALUE")
    return name.strip(), value


def parameters(**given: Any) -> PipelineParameters:
    """The model from keyword values (the CLI's, a flow's), ``None`` meaning the default; a bad value is
    one UsageError naming its flag, the value and what was expected."""
    values = {k: v for k, v in given.items() if v is not None}
    if "variables" in values:
        listed = isinstance(values["variables"], list)
        values["variables"] = _pairs(values["variables"], inputs.parse_var)
        if isinstance(values["variables"], dict):  # names first: a secret's value is never echoed
            check_no_secrets({str(k): "" for k in values["variables"]}, "--var" if listed else "variables:")
    if "spec_vars" in values:
        values["spec_vars"] = _pairs(values["spec_vars"], _spec_var)
        if isinstance(values["spec_vars"], dict):
            check_no_secret_spec_vars({str(k): "" for k in values["spec_vars"]}, "--spec-var")
    for name in ("template_dir", "spec", "spec_vars_file"):
        if name in values and isinstance(values[name], os.PathLike):
            values[name] = os.fspath(values[name])
    if isinstance(values.get("var_files"), list | tuple):
        values["var_files"] = [os.fspath(f) if isinstance(f, os.PathLike) else f for f in values["var_files"]]
    if isinstance(values.get("lint_ignore"), tuple):
        values["lint_ignore"] = list(values["lint_ignore"])
    try:
        return PipelineParameters.model_validate(values)
    except ValidationError as exc:
        raise usage_error(exc, _flag_label(PipelineParameters)) from None


def prepare(**given: Any) -> PipelineRequest:
    """Every check that needs no engine: names, values, durations, files that must exist. Takes the
    fields of ``PipelineParameters`` (``variables``/``spec_vars`` as a mapping or as ``K=V`` strings)."""
    return parameters(**given).request()


def _request_of(given: PipelineParameters) -> PipelineRequest:
    from tasks import lint  # the HCL parser: only for requests that build

    checked_registry = check_registry_for(given.target, given.registry or None)
    check_registry_credentials(checked_registry, given.registry_credentials)
    directory = Path(given.template_dir)
    if not directory.is_dir():
        raise UsageError(f"--template-dir {directory}: not a directory")
    spec_path = Path(given.spec)
    if not spec_path.exists():
        raise UsageError(f"--spec {spec_path}: no such file or directory")
    vars_path = Path(given.spec_vars_file) if given.spec_vars_file else None
    if vars_path is not None and (not vars_path.is_file() or not os.access(vars_path, os.R_OK)):
        raise UsageError(f"--vars {vars_path}: no such readable file")
    check_no_secret_spec_vars(given.spec_vars, "--spec-var")
    for name in given.variables:
        inputs.parse_var(f"{name}=")
    check_no_secrets(given.variables, "variables:")
    files = tuple(Path(f) for f in given.var_files)
    for var_file in files:
        if not var_file.is_file() or not os.access(var_file, os.R_OK):
            raise UsageError(f"--var-file {var_file}: no such readable file")
    if given.version_var and given.version_var in given.variables:
        raise UsageError(f"--var {given.version_var}: set by bakery from --version (--version-var {given.version_var})")
    return PipelineRequest(
        target=given.target,
        family=given.family,
        version=given.version or inputs.default_version(),
        template_dir=directory.resolve(),
        spec=spec_path.resolve(),
        spec_vars_file=vars_path.resolve() if vars_path else None,
        spec_vars=dict(given.spec_vars),
        only=tuple(s.strip() for s in given.only.split(",") if s.strip()),
        variables=dict(given.variables),
        var_files=tuple(f.resolve() for f in files),
        ttl=inputs.parse_duration(given.ttl, "--ttl"),
        ssh_timeout=inputs.parse_duration(given.ssh_timeout, "--ssh-timeout"),
        build_timeout=inputs.parse_duration(given.build_timeout, "--build-timeout"),
        keep_on_failure=given.keep_on_failure,
        aws=given.aws or AwsOptions(),
        version_var=given.version_var or None,
        lint_ignore=lint.check_rule_names(given.lint_ignore),
        strict=given.strict,
        registry=checked_registry,
        registry_credentials=given.registry_credentials,
    )


def _path(loc: tuple[str | int, ...]) -> str:
    """``.variables.port``, ``.targets[0]``: where in an entry a problem is."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _text_values(value: Any) -> Any:
    """YAML reads ``port: 80`` as a number; a variable's value is text."""
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


def _listed(value: Any) -> Any:
    """One value where a list is expected (``targets: aws``) is that list of one."""
    return [value] if isinstance(value, str) else value


TextMapping = Annotated[dict[str, str], BeforeValidator(_text_values)]


class FamilySpec(BaseModel):
    """One entry of ``deployments/families.yaml``: the same fields and rules as a pipeline run's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family
    template_dir: PathText = "packer"
    var_files: Annotated[tuple[str, ...], BeforeValidator(_listed)] = ()
    variables: TextMapping = {}
    spec: PathText = DEFAULT_SPEC
    targets: Annotated[tuple[TargetName, ...], BeforeValidator(_listed)] = ("docker",)
    only: str | None = None
    spec_vars_file: str = ""
    spec_vars: TextMapping = {}
    registry: str = ""  # HOST[:PORT][/PREFIX]: the docker target pushes and stages there
    # a Prefect DockerRegistryCredentials block name for that registry (default: the rebuild's, else docker login)
    registry_credentials: OptionalBlockName = ""

    def pipeline_arguments(self) -> dict[str, Any]:
        """The ``PipelineParameters`` this entry sets (every field but ``targets``, ``registry`` and
        ``registry_credentials``, which the rebuild resolves per target)."""
        given = self.model_dump(exclude={"targets", "registry", "registry_credentials"})
        given["var_files"] = list(self.var_files)
        given["only"] = self.only or ""
        return given

    @classmethod
    def read(cls, entry: Any, where: str) -> FamilySpec:
        """An entry checked; a problem is one UsageError naming ``where`` (file and index), field, value."""
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected a mapping with at least 'family'")
        unknown = sorted(set(map(str, entry)) - set(cls.model_fields))
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(cls.model_fields))})")
        # names before values: a secret-named variable is refused without its value being echoed
        if isinstance(entry.get("variables"), dict):
            check_no_secrets({str(k): "" for k in entry["variables"]}, f"{where}.variables:")
        if isinstance(entry.get("spec_vars"), dict):
            check_no_secret_spec_vars({str(k): "" for k in entry["spec_vars"]}, f"{where}.spec_vars:")
        values = {k: v for k, v in entry.items() if v is not None}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise usage_error(exc, lambda loc: where + _path(loc)) from None


def check_registry_for(target: str, registry: str | None, where: str = "--registry") -> Registry | None:
    """The registry of a request (``registry``, else ``$BAKERY_REGISTRY``), checked; only the Docker
    target has one (an AWS request ignores ``$BAKERY_REGISTRY`` and refuses ``--registry``)."""
    # platform-specific: --registry is the docker target's option (the table cannot be asked here: the
    # platforms' modules build on this one).
    if target != "docker":
        if registry:
            raise UsageError(f"{where} {registry!r}: only the docker target pushes to a registry")
        return None
    return resolve_registry(registry, where)


def check_registry_credentials(
    registry: Registry | str | None, block: str | None, where: str = REGISTRY_CREDENTIALS_FLAG
) -> str:
    """A registry credentials block name (``--registry-credentials-block``), checked: a block name, and
    given only with a registry (the checked one of the request; none for AWS). Returns it ("" for none)."""
    if not block:
        return ""
    problem = _block_name_problem(block)
    if problem:
        raise UsageError(f"{where} {block!r}: {problem}")
    if not registry:
        raise UsageError(f"{where} {block}: only with a registry (docker target, --registry or ${ENV_REGISTRY})")
    return block


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
