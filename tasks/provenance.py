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
whether a family needs a new image. AMIs carry the record as tags (``bakery:base``, ``bakery:inputs``,
``bakery:spec``), so every worker reads the same; a local Docker engine's images are immutable, so their
record is a small JSON file per image under ``$BAKERY_STATE_DIR/provenance/docker/``, on the machine
whose engine holds the image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import hcl, inputs
from tasks.request import PipelineRequest, state_dir

if TYPE_CHECKING:
    from tasks.lint import TemplateSet

log = logging.getLogger(__name__)

TAG_BASE = "bakery:base"
TAG_INPUTS = "bakery:inputs"
TAG_SPEC = "bakery:spec"
# Variables that differ on every build by design: never part of the inputs hash.
PER_BUILD_VARIABLES = frozenset({"image_version", "run_id", "expires_at", "manifest_path", "source_commit"})
# What a template directory holds that is not an input (Packer's caches and manifests, editor droppings).
_IGNORED_PARTS = frozenset({"packer_cache", ".git", "__pycache__", ".terraform"})
_IGNORED_NAMES = re.compile(r"(^build-manifest\.json$|^manifest\.json$|~$|\.swp$|^\.DS_Store$)")
_VAR_REF = re.compile(r"\$\{var\.([A-Za-z0-9_-]+)\}")


class BaseLookupError(Exception):
    """The base the template names cannot be told (unresolvable filter, API or engine error)."""


@dataclass(frozen=True)
class BuildInputs:
    """What one image was built from (any field may be unknown: empty)."""

    base: str = ""
    inputs: str = ""
    spec: str = ""

    def to_tags(self) -> dict[str, str]:
        found = {TAG_BASE: self.base, TAG_INPUTS: self.inputs, TAG_SPEC: self.spec}
        return {k: v for k, v in found.items() if v}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> BuildInputs | None:
        """The record in an image's tags; ``None`` for an image built before bakery recorded inputs."""
        if TAG_INPUTS not in tags:
            return None
        return cls(
            base=tags.get(TAG_BASE, "") or tags.get("BaseAMI", ""), inputs=tags[TAG_INPUTS], spec=tags.get(TAG_SPEC, "")
        )


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


def _unquote(text: Any) -> Any:
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def variable_values(template_dir: Path, given: Mapping[str, str]) -> dict[str, str]:
    """Every variable's value as a build would see it: given (``-var``) over the template's defaults."""
    values: dict[str, str] = {}
    for path in sorted(template_dir.glob("*.pkr.hcl")):
        document = hcl.load_document(path)
        for entry in document.get("variable", []):
            for raw_name, block in entry.items():
                default = _unquote(block.get("default"))
                if isinstance(default, str):
                    values[_unquote(raw_name)] = default
    return {**values, **{k: v for k, v in given.items()}}


def _evaluate(text: Any, variables: Mapping[str, str], where: str) -> str:
    """A string attribute as python-hcl2 gives it: quoted literal, ``${var.x}`` or a mix of both."""
    if not isinstance(text, str):
        return str(text).lower() if isinstance(text, bool) else str(text)
    value = _unquote(text)

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
                    if _unquote(raw_kind) == kind and _unquote(raw_label) == label:
                        return dict(block)
    raise BaseLookupError(f"{template_dir}: no source {source}")


def docker_base_reference(template_dir: Path, source: str, variables: Mapping[str, str]) -> str:
    """The image a docker source builds from (its ``image``, variables resolved)."""
    block = _source_block(template_dir, source)
    return _evaluate(block.get("image"), variable_values(template_dir, variables), f"{source}.image")


def ami_filter(template_dir: Path, source: str, variables: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    """An amazon-ebs source's ``source_ami_filter`` as DescribeImages ``Filters`` and ``Owners``."""
    block = _source_block(template_dir, source)
    values = variable_values(template_dir, variables)
    if "source_ami" in block and "source_ami_filter" not in block:
        return [{"Name": "image-id", "Values": [_evaluate(block["source_ami"], values, f"{source}.source_ami")]}], []
    filters_block = block.get("source_ami_filter")
    if isinstance(filters_block, list):
        filters_block = filters_block[0] if filters_block else None
    if not isinstance(filters_block, dict):
        raise BaseLookupError(f"{source}: no source_ami_filter or source_ami")
    raw_filters = filters_block.get("filters") or {}
    if isinstance(raw_filters, list):
        raw_filters = raw_filters[0] if raw_filters else {}
    filters = [
        {"Name": _unquote(name), "Values": [_evaluate(value, values, f"{source}.source_ami_filter.filters.{name}")]}
        for name, value in raw_filters.items()
        if not str(name).startswith("__")
    ]
    owners = [_evaluate(o, values, f"{source}.source_ami_filter.owners") for o in filters_block.get("owners") or []]
    return filters, owners


def newest_ami(ec2: Any, filters: list[dict[str, Any]], owners: list[str]) -> str:
    """The AMI Packer's ``most_recent = true`` would pick: the newest ``CreationDate`` among the matches."""
    paginator = ec2.get_paginator("describe_images")
    images = [
        image
        for page in paginator.paginate(Filters=filters, **({"Owners": owners} if owners else {}))
        for image in page.get("Images", [])
    ]
    if not images:
        raise BaseLookupError(f"no AMI matches the template's source_ami_filter {filters} (owners {owners or 'any'})")
    return str(max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"])


def current_base(target: str, template_dir: Path, source: str, variables: Mapping[str, str]) -> str:
    """What the template would build on now: a local image id (docker) or an AMI id (aws).

    Raises:
        BaseLookupError: the base cannot be told (nothing matches, an expression, the engine or API fails).
    """
    try:
        if target == "docker":
            from tasks.targets.docker.images import local_image_id

            reference = docker_base_reference(template_dir, source, variables)
            found = local_image_id(reference)
            if found is None:
                raise BaseLookupError(f"base image {reference} is not in the local engine")
            return found
        if target == "aws":
            from tasks.targets.aws.instances import ec2_client

            filters, owners = ami_filter(template_dir, source, variables)
            return newest_ami(ec2_client(quick=True), filters, owners)
    except BaseLookupError:
        raise
    except Exception as exc:
        raise BaseLookupError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    raise BaseLookupError(f"target {target!r}: no base lookup")


# ------------------------------------------------------------------------------------------ storage


def record_path(image_id: str, root: Path | None = None) -> Path:
    safe = image_id.replace(":", "_").replace("/", "_")
    return (root or state_dir()) / "provenance" / "docker" / f"{safe}.json"


def record(target: str, image_id: str, built_from: BuildInputs, ec2: Any = None) -> None:
    """Keep ``built_from`` with the image: tags on an AMI and its snapshots (the seed's ``BaseAMI`` tag,
    when the template wrote one, names the base), a record file for a local Docker image."""
    if target == "aws":
        from tasks.targets.aws.client import tag_list, tags_of
        from tasks.targets.aws.instances import describe_image, ec2_client, snapshot_ids

        client = ec2 or ec2_client()
        image = describe_image(client, image_id)
        base = tags_of(image).get("BaseAMI") or built_from.base
        tags = BuildInputs(base=base, inputs=built_from.inputs, spec=built_from.spec).to_tags()
        client.create_tags(Resources=[image_id, *snapshot_ids(image)], Tags=tag_list(tags))
        return
    path = record_path(image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".provenance-")
    with os.fdopen(handle, "w") as out:
        json.dump({"image": image_id, **asdict(built_from)}, out)
    os.replace(temporary, path)


def recorded(target: str, image_id: str, ec2: Any = None) -> BuildInputs | None:
    """The inputs recorded for an image; ``None`` when it has none (built by an older bakery)."""
    if target == "aws":
        from tasks.targets.aws.client import tags_of
        from tasks.targets.aws.instances import describe_image, ec2_client

        return BuildInputs.from_tags(tags_of(describe_image(ec2 or ec2_client(quick=True), image_id)))
    try:
        data = json.loads(record_path(image_id).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not data.get("inputs"):
        return None
    return BuildInputs(base=str(data.get("base", "")), inputs=str(data["inputs"]), spec=str(data.get("spec", "")))


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
