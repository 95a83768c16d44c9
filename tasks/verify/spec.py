"""Load a goss-format spec and validate all of it before anything connects.

Every problem is a :class:`UsageError` (exit 2) naming the file and the path to the field, e.g.
``packer/test/image_spec.yaml: service.nginx.enabeld: unknown attribute (expected one of enabled, running, skip)``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tasks.errors import UsageError
from tasks.verify import matchers
from tasks.verify.matchers import SpecError
from tasks.verify.model import Resource
from tasks.verify.resources import TYPES, UNSUPPORTED
from tasks.verify.resources.base import ResourceType

COMMON = ("skip", "title", "meta")


@dataclass(frozen=True)
class Spec:
    """A validated spec: its resources in file order."""

    path: str
    resources: tuple[Resource, ...]

    @property
    def check_count(self) -> int:
        return sum(len(r.checks) for r in self.resources)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (goss would silently keep only the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            raise yaml.constructor.ConstructorError(None, None, "a key must be a scalar", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (the later one would replace the earlier)", key_node.start_mark
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def segment(name: str) -> str:
    """A path segment, quoted when it holds a dot or space (file paths, sysctl keys)."""
    return name if re.fullmatch(r"[A-Za-z0-9_@:/+~-]+", name) else json.dumps(name)


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file; any problem is a UsageError naming the file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"{source}: cannot read spec: {reason}") from None
    return parse_spec(text, source)


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Validate spec text; ``source`` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise UsageError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: YAML syntax error: {exc}") from None
    try:
        return Spec(source, tuple(_resources(data)))
    except SpecError as exc:
        raise UsageError(f"{source}: {exc}") from None


def _resources(data: Any) -> list[Resource]:
    if data is None:
        raise SpecError("(top level)", "the spec is empty")
    if not isinstance(data, dict):
        raise SpecError("(top level)", f"expected a mapping of resource types, got {type(data).__name__}")
    resources: list[Resource] = []
    for type_name, entries in data.items():
        where = segment(str(type_name))
        if type_name in UNSUPPORTED:
            raise SpecError(
                where, f"unsupported resource type ({UNSUPPORTED[type_name]}; bakery checks {', '.join(TYPES)})"
            )
        if type_name not in TYPES:
            raise SpecError(
                where, f"unknown resource type{_did_you_mean(type_name, TYPES)} (expected one of {', '.join(TYPES)})"
            )
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise SpecError(where, f"expected a mapping of {type_name} names to attributes")
        for name, attributes in entries.items():
            if not isinstance(name, str) or not name.strip():
                raise SpecError(
                    f"{where}.{segment(str(name))}",
                    f"a {type_name} name must be a non-empty string (YAML read {name!r}; quote it)",
                )
            resources.append(_resource(TYPES[type_name], name, attributes, f"{where}.{segment(name)}"))
    return resources


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" {word!r}; did you mean {close[0]!r}?" if close else ""


def _resource(kind: ResourceType, name: str, attributes: Any, path: str) -> Resource:
    if not isinstance(attributes, dict):
        raise SpecError(path, f"expected a mapping of attributes, got {type(attributes).__name__}")
    checks: dict[str, matchers.Matcher] = {}
    options: dict[str, Any] = {}
    skip = False
    allowed = [*kind.checks, "skip"]
    for raw_attribute, value in attributes.items():
        attribute = kind.aliases.get(raw_attribute, raw_attribute)
        where = f"{path}.{segment(str(raw_attribute))}"
        if attribute in kind.checks:
            if attribute in checks:
                raise SpecError(where, f"{attribute} is given twice (once as {raw_attribute})")
            checks[attribute] = matchers.build(kind.checks[attribute], value, where)
        elif attribute == "skip":
            if not isinstance(value, bool):
                raise SpecError(where, f"expected true or false, got {matchers.show(value)!r}")
            skip = value
        elif attribute in ("title", "meta"):
            if attribute == "title" and not isinstance(value, str):
                raise SpecError(where, "expected a string")
        elif attribute in kind.options:
            options[attribute] = _option(kind, attribute, value, where)
        elif attribute in kind.unsupported:
            raise SpecError(where, f"unsupported attribute ({kind.unsupported[attribute]})")
        else:
            hint = difflib.get_close_matches(str(raw_attribute), [*allowed, *kind.options], n=1)
            suggestion = f"; did you mean {hint[0]}?" if hint else ""
            raise SpecError(where, f"unknown attribute (expected one of {', '.join(allowed)}){suggestion}")
    if not checks and not skip:
        raise SpecError(path, f"nothing to check (expected one of {', '.join(kind.checks)})")
    target = options.get(kind.target_option, name) if kind.target_option else name
    problem = kind.check_target(target)
    if problem:
        raise SpecError(path, problem)
    return Resource(kind.name, name, target, checks, options, skip)


def _option(kind: ResourceType, attribute: str, value: Any, where: str) -> Any:
    expected = kind.options[attribute]
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(where, f"expected a positive integer, got {matchers.show(value)!r}")
        return value
    if not isinstance(value, str) or not value:
        raise SpecError(where, f"expected a non-empty string, got {matchers.show(value)!r}")
    return value
