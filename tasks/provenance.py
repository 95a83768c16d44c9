"""What an image was built from, recorded at build time, and what the same template would use now.

A build records three things beside the image (``BuildInputs``):

- ``base``: the image it was built on. Docker: the local image id the docker source's ``image`` names;
  AWS: the source AMI (the seed's ``BaseAMI`` tag when the template writes one, else the AMI the
  template's ``source_ami_filter`` selected just before the build).
- ``inputs``: a SHA-256 over the template set (every file under the template directory), the var files and
  the variables. The image's version and bakery's own per-run variables are left out (they change every
  build); a secret's value enters only as its own SHA-256, and nothing but the final digest is stored.
- ``spec``: a SHA-256 of the verification spec (every file, for a spec directory).

The weekly rebuild (``tasks/rebuild.py``) compares them with what the template would use now to decide
whether a family needs a new image. Where the record is kept and how the base is looked up is each
platform's (``Platform.record_build_inputs``, ``Platform.current_base``, ``tasks/targets/<name>/provenance.py``):
AMIs carry the record as tags (``bakery:base``, ``bakery:inputs``, ``bakery:spec``), so every worker reads
the same; a local Docker engine's images are immutable, so their record is a small JSON file per image
under ``$BAKERY_STATE_DIR/provenance/docker/``, on the machine whose engine holds the image.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import hcl, inputs
from tasks.request import PipelineRequest
from tasks.targets.base import BaseLookupError as BaseLookupError
from tasks.targets.base import BuildInputs as BuildInputs
from tasks.targets.registry import platform

if TYPE_CHECKING:
    from tasks.lint import TemplateSet

log = logging.getLogger(__name__)

# Variables that differ on every build by design: never part of the inputs hash.
PER_BUILD_VARIABLES = frozenset({"image_version", "run_id", "expires_at", "manifest_path", "source_commit"})
# What a template directory holds that is not an input (Packer's caches and manifests, editor droppings).
_IGNORED_PARTS = frozenset({"packer_cache", ".git", "__pycache__", ".terraform"})
_IGNORED_NAMES = re.compile(r"(^build-manifest\.json$|^manifest\.json$|~$|\.swp$|^\.DS_Store$)")
_VAR_REF = re.compile(r"\$\{var\.([A-Za-z0-9_-]+)\}")


def _digest(chunks: Iterable[bytes]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(len(chunk).to_bytes(8, "big"))  # length-prefixed: no two inputs collide by concatenation
        sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and not _IGNORED_PARTS.intersection(relative.parts) and not _IGNORED_NAMES.search(path.name):
            found.append(path)
    return sorted(found)


def tree_chunks(root: Path) -> Iterable[bytes]:
    """Each file's path (relative to ``root``) and content, in a stable order."""
    for path in _files(root):
        yield str(path.relative_to(root) if root.is_dir() else path.name).encode()
        yield path.read_bytes()


def inputs_hash(
    template_dir: Path,
    var_files: Iterable[Path] = (),
    variables: Mapping[str, str] | None = None,
    secret_names: Iterable[str] = (),
) -> str:
    """The SHA-256 of everything a build reads from the user, less what changes on every build.

    Args:
        template_dir: the Packer template directory (every file below it counts).
        var_files: Packer variable files, by content (their paths may differ between workers).
        variables: Packer variables; a per-build one (``image_version``, ``run_id``, ...) is left out.
        secret_names: variables whose value is a secret: it enters only as its own SHA-256.
    """
    secrets = set(secret_names)

    def chunks() -> Iterable[bytes]:
        yield b"templates"
        yield from tree_chunks(template_dir)
        for var_file in var_files:
            yield b"var-file"
            yield Path(var_file).read_bytes()
        for name, value in sorted((variables or {}).items()):
            if name in PER_BUILD_VARIABLES:
                continue
            secret = name in secrets or inputs.is_secret_name(name)
            yield f"var {name}".encode()
            yield hashlib.sha256(value.encode()).hexdigest().encode() if secret else value.encode()

    return _digest(chunks())


def spec_hash(spec: Path, vars_file: Path | None = None, spec_vars: Mapping[str, str] | None = None) -> str:
    """The SHA-256 of a verification spec: the file, or every file of a spec directory, and what else decides
    what it checks: files it includes from elsewhere (``gossfile:``), its ``--vars`` file and ``--spec-var``s.
    A spec with none of these hashes as it always did (only its own files)."""
    from tasks.verify.spec import included_sources

    def chunks() -> Iterable[bytes]:
        yield from tree_chunks(spec)
        variables = {}
        if vars_file is not None or spec_vars:
            from tasks.verify.spec import spec_variables

            variables = spec_variables(vars_file, [f"{k}={v}" for k, v in sorted((spec_vars or {}).items())])
        for source in included_sources(spec, variables):
            yield b"include"
            yield str(source).encode()
            yield source.read_bytes()
        if vars_file is not None:
            yield b"vars-file"
            yield Path(vars_file).read_bytes()
        for name, value in sorted((spec_vars or {}).items()):
            yield f"spec-var {name}={value}".encode()

    return _digest(chunks())


# ------------------------------------------------------------------------------- the template's base


def variable_values(template_dir: Path, given: Mapping[str, str]) -> dict[str, str]:
    """Every variable's value as a build would see it: given (``-var``) over the template's defaults."""
    values: dict[str, str] = {}
    for path in sorted(template_dir.glob("*.pkr.hcl")):
        document = hcl.load_document(path)
        for entry in document.get("variable", []):
            for raw_name, block in entry.items():
                default = hcl.unquote(block.get("default"))
                if isinstance(default, str):
                    values[hcl.unquote(raw_name)] = default
    return {**values, **{k: v for k, v in given.items()}}


def _evaluate(text: Any, variables: Mapping[str, str], where: str) -> str:
    """A string attribute as python-hcl2 gives it: quoted literal, ``${var.x}`` or a mix of both."""
    if not isinstance(text, str):
        return str(text).lower() if isinstance(text, bool) else str(text)
    value = hcl.unquote(text)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise BaseLookupError(f"{where}: variable {name!r} has no value")
        return variables[name]

    value = _VAR_REF.sub(substitute, value)
    if "${" in value:
        raise BaseLookupError(f"{where}: {value!r} is an expression bakery cannot evaluate")
    return value


def _source_block(template_dir: Path, source: str) -> dict[str, Any]:
    kind, _, label = source.removeprefix("source.").partition(".")
    for path in sorted(template_dir.glob("*.pkr.hcl")):
        document = hcl.load_document(path)
        for entry in document.get("source", []):
            for raw_kind, named in entry.items():
                for raw_label, block in named.items():
                    if hcl.unquote(raw_kind) == kind and hcl.unquote(raw_label) == label:
                        return dict(block)
    raise BaseLookupError(f"{template_dir}: no source {source}")


@dataclass(frozen=True)
class ResolvedSource:
    """A source block and the variable values a build would see (the ``TemplateSource`` platforms read)."""

    name: str
    block: dict[str, Any]
    values: dict[str, str]

    def evaluate(self, text: Any, where: str) -> str:
        return _evaluate(text, self.values, where)


def template_source(template_dir: Path, source: str, variables: Mapping[str, str]) -> ResolvedSource:
    """The source ``source`` (``docker.base``) of the templates in ``template_dir``, with ``variables``
    over the templates' defaults; a ``BaseLookupError`` when there is no such source."""
    return ResolvedSource(source, _source_block(template_dir, source), variable_values(template_dir, variables))


def current_base(target: str, template_dir: Path, source: str, variables: Mapping[str, str]) -> str:
    """What the template would build on now (``Platform.current_base``: a local image id, an AMI id).

    Raises:
        BaseLookupError: the base cannot be told (nothing matches, an expression, the engine or API fails).
    """
    try:
        return platform(target).current_base(template_source(template_dir, source, variables))
    except BaseLookupError:
        raise
    except Exception as exc:
        raise BaseLookupError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


# ------------------------------------------------------------------------------------------ storage


def record(target: str, image_id: str, built_from: BuildInputs) -> None:
    """Keep ``built_from`` with the image (``Platform.record_build_inputs``: tags on an AMI and its
    snapshots, a record file for a local Docker image)."""
    platform(target).record_build_inputs(image_id, built_from)


def recorded(target: str, image_id: str) -> BuildInputs | None:
    """The inputs recorded for an image; ``None`` when it has none (built by an older bakery)."""
    return platform(target).recorded_build_inputs(image_id)


# ------------------------------------------------------------------------------- one request, both ends


def secret_variable_names(templates: TemplateSet) -> set[str]:
    """Variables the template marks ``sensitive``."""
    return {
        name
        for name, block in templates.variables.items()
        if "sensitive" in block.attrs and block.attrs["sensitive"].text == "true"
    }


def template_values(request: PipelineRequest) -> dict[str, str]:
    """The variable values that shape a build: the user's, and the family as ``image_name`` (the version
    and the run's own values are left out: they change every build)."""
    return {**request.variables, "image_name": request.family}


def build_source(request: PipelineRequest, templates: TemplateSet) -> str:
    """The source the request builds: its first ``--only``, else the one the target would pick."""
    from tasks.build import select_sources

    return request.only[0] if request.only else select_sources(templates, request)[0]


def request_inputs(request: PipelineRequest, templates: TemplateSet | None = None) -> BuildInputs:
    """The inputs and spec hashes of a request: what a build records and what a rebuild compares."""
    from tasks import lint

    parsed = templates or lint.load_template_set(request.template_dir)
    return BuildInputs(
        inputs=inputs_hash(
            request.template_dir, request.var_files, template_values(request), secret_variable_names(parsed)
        ),
        spec=spec_hash(request.spec, request.spec_vars_file, request.spec_vars),
    )


def build_inputs(request: PipelineRequest, templates: TemplateSet | None = None) -> tuple[BuildInputs, str]:
    """What a build is about to use, with a note when its base cannot be told (recorded empty then)."""
    from tasks import lint

    parsed = templates or lint.load_template_set(request.template_dir)
    hashes = request_inputs(request, parsed)
    try:
        base = current_base(
            request.target, request.template_dir, build_source(request, parsed), template_values(request)
        )
    except BaseLookupError as exc:
        return hashes, str(exc)
    return BuildInputs(base=base, inputs=hashes.inputs, spec=hashes.spec), ""
