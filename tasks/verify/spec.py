"""Load a goss-format spec and validate all of it before anything connects.

A spec file may be a Go template (rendered with ``--vars`` and the environment, see
:mod:`tasks.verify.template`) and may include others (``gossfile:``, globs relative to the including
file). Every problem of every file is collected and reported at once, each naming the file, the line
and the path to the field, with a hint, e.g.::

    packer/test/image_spec.yaml:7: service.nginx.enabeld: unknown attribute (expected one of ...); did you mean enabled?

``load_spec`` raises one :class:`UsageError` (exit 2) listing them all; ``check_spec`` returns them.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import UsageError
from tasks.verify import matchers, template
from tasks.verify.matchers import SpecError
from tasks.verify.model import Resource
from tasks.verify.resources import TYPES, UNSUPPORTED
from tasks.verify.resources.base import ResourceType

COMMON = ("skip", "title", "meta")
INCLUDE = "gossfile"
INCLUDE_ATTRIBUTES = ("file", "skip", "vars", "vars-inline", "title", "meta")
MAX_INCLUDE_DEPTH = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (file, line, path to the field) and what, with its hint."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(frozen=True)
class Spec:
    """A validated spec: its resources in file order (includes first, as goss renders them)."""

    path: str
    resources: tuple[Resource, ...]
    sources: tuple[str, ...] = ()

    @property
    def check_count(self) -> int:
        return sum(len(r.checks) for r in self.resources)


class SpecProblems(UsageError):
    """Every problem of a spec (exit 2); ``problems`` keeps them one by one."""

    def __init__(self, problems: list[Problem]) -> None:
        problems = sorted(problems, key=lambda p: (p.source, p.line or 0))
        self.problems = problems
        if len(problems) == 1:
            super().__init__(str(problems[0]))
        else:
            super().__init__(f"{len(problems)} problems in the spec:\n" + "\n".join(f"  {p}" for p in problems))


# ------------------------------------------------------------------------------------------------ YAML


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based) and of itself."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


class _Loader(yaml.SafeLoader):
    """SafeLoader that records lines, accepts merge keys (``<<: *default`` then an override), refuses
    duplicate keys (goss would silently keep only the last one) and explains stray ``!`` tags — all as
    problems collected in ``self.issues`` so one pass finds every one."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.issues: list[tuple[int, str]] = []


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    own: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, list | dict | set):
            loader.issues.append((line, "a key must be a scalar (quote it)"))
            continue
        if key in own:
            loader.issues.append(
                (line, f"duplicate key {key!r} (also on line {own[key]}; the later one would replace the earlier)")
            )
        own[key] = line
    loader.flatten_mapping(node)  # merged keys first, then this mapping's own: the override wins
    result = LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _unknown_tag(loader: _Loader, node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        written = f"{node.tag} {node.value}".strip()
        loader.issues.append(
            (
                line,
                f"YAML read {node.tag!r} as a tag (an unquoted value starting with '!'): quote it, e.g. "
                f"{json.dumps(written)}",
            )
        )
        return written
    loader.issues.append((line, f"YAML tag {node.tag!r} is not supported: remove it or quote the value"))
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return _mapping(loader, node)  # type: ignore[arg-type]


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(None, _unknown_tag)


def _yaml(text: str, source: str, problems: list[Problem]) -> Any:
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        problems.append(
            Problem(
                source, mark.line + 1 if mark else None, "", f"YAML syntax error: {problem}{_yaml_hint(text, mark)}"
            )
        )
        return None
    except yaml.YAMLError as exc:
        problems.append(Problem(source, None, "", f"YAML syntax error: {exc}"))
        return None
    except (ValueError, TypeError) as exc:  # an explicit tag on a value it cannot take: `!!int abc`
        problems.append(Problem(source, None, "", f"YAML value error: {exc}"))
        return None
    finally:
        loader.dispose()
    problems.extend(Problem(source, line, "", message) for line, message in loader.issues)
    return data


def _yaml_hint(text: str, mark: Any) -> str:
    if mark is None:
        return ""
    lines = text.split("\n")
    line = lines[mark.line] if mark.line < len(lines) else ""
    if "{{" in line or "{%" in line:
        return " (a template expression here: is it quoted, or was the file rendered?)"
    if re.search(r"(^|[\s\[,-])/[^'\"]*: ", line):
        return " (an unquoted /regex/ holding ': ' reads as a mapping: quote it)"
    if re.search(r":\s*\*|- \*", line):
        return " (a value starting with '*' reads as an alias: quote it)"
    return ""


# ------------------------------------------------------------------------------------------- loading


def segment(name: str) -> str:
    """A path segment, quoted when it holds a dot or space (file paths, sysctl keys)."""
    return name if re.fullmatch(r"[A-Za-z0-9_@:/+~-]+", name) else json.dumps(name)


@dataclass
class _Entry:
    type: str
    id: str
    attributes: Any
    source: str
    line: int | None
    order: int = 0


@dataclass
class _Document:
    """Every resource entry of a spec after templates and includes, and the problems found so far."""

    root: str
    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    types: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in sorted(self.entries.values(), key=lambda e: e.order):
            out.setdefault(entry.type, {})[entry.id] = entry.attributes
        return out


def _read(source: str, what: str = "spec") -> str | None:
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"{source}: cannot read {what}: {reason}") from None


def _spec_file(path: str) -> str:
    """A directory means its goss.yaml (as goss's default), else its only *.yaml/*.yml file."""
    if not os.path.isdir(path):
        return path
    for name in ("goss.yaml", "goss.yml", "gossfile.yaml"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    found = sorted(glob.glob(os.path.join(path, "*.yaml")) + glob.glob(os.path.join(path, "*.yml")))
    if len(found) == 1:
        return found[0]
    raise UsageError(
        f"{path}: a spec directory needs a goss.yaml (or exactly one .yaml file), found {len(found)} .yaml files"
    )


def _document(
    text: str, source: str, variables: Mapping[str, Any], into: _Document, depth: int = 0, chain: tuple[str, ...] = ()
) -> None:
    into.sources.append(source)
    if template.is_template(text):
        try:
            text = template.render(text, variables, source)
        except template.TemplateError as exc:
            into.problems.append(Problem(source, exc.line, "", str(exc.message)))
            return
    data = _yaml(text, source, into.problems)
    if data is None:
        if depth == 0 and (not into.problems or into.problems[-1].source != source):
            into.problems.append(Problem(source, None, "(top level)", "the spec is empty"))
        return
    if not isinstance(data, dict):
        into.problems.append(
            Problem(source, 1, "(top level)", f"expected a mapping of resource types, got {type(data).__name__}")
        )
        return
    lines = getattr(data, "lines", {})
    includes = data.get(INCLUDE)
    if includes is not None:
        _includes(includes, source, variables, into, depth, chain, lines.get(INCLUDE))
    for type_name, entries in data.items():
        if type_name == INCLUDE:
            continue
        line = lines.get(type_name)
        where = segment(str(type_name))
        if type_name in UNSUPPORTED:
            into.problems.append(Problem(source, line, where, f"unsupported resource type ({UNSUPPORTED[type_name]})"))
            continue
        if type_name not in TYPES:
            into.problems.append(
                Problem(
                    source,
                    line,
                    where,
                    f"unknown resource type{_did_you_mean(type_name, [*TYPES, INCLUDE])} "
                    f"(expected one of {', '.join(TYPES)}, {INCLUDE})",
                )
            )
            continue
        if entries is None:
            continue
        if not isinstance(entries, dict):
            into.problems.append(Problem(source, line, where, f"expected a mapping of {type_name} names to attributes"))
            continue
        entry_lines = getattr(entries, "lines", {})
        for name, attributes in entries.items():
            entry_line = entry_lines.get(name, line)
            if not isinstance(name, str) or not name.strip():
                into.problems.append(
                    Problem(
                        source,
                        entry_line,
                        f"{where}.{segment(str(name))}",
                        f"a {type_name} name must be a non-empty string (YAML read {name!r}; quote it)",
                    )
                )
                continue
            key = (type_name, name)
            into.entries.pop(key, None)  # goss: the later definition (the including file's) wins
            into.entries[key] = _Entry(type_name, name, attributes, source, entry_line, len(into.entries))


def _includes(
    includes: Any,
    source: str,
    variables: Mapping[str, Any],
    into: _Document,
    depth: int,
    chain: tuple[str, ...],
    line: int | None,
) -> None:
    if not isinstance(includes, dict):
        into.problems.append(
            Problem(source, line, INCLUDE, "expected a mapping of file names (or globs) to attributes")
        )
        return
    base = os.path.dirname(os.path.abspath(source))
    lines = getattr(includes, "lines", {})
    for name, attributes in includes.items():
        where = f"{INCLUDE}.{segment(str(name))}"
        at = lines.get(name, line)
        attributes = {} if attributes is None else attributes
        if not isinstance(attributes, dict):
            into.problems.append(Problem(source, at, where, "expected a mapping (file, skip, vars, vars-inline) or {}"))
            continue
        unknown = [a for a in attributes if a not in INCLUDE_ATTRIBUTES]
        for attribute in unknown:
            into.problems.append(
                Problem(
                    source,
                    getattr(attributes, "lines", {}).get(attribute, at),
                    f"{where}.{segment(str(attribute))}",
                    f"unknown attribute (expected one of {', '.join(INCLUDE_ATTRIBUTES)})"
                    + _did_you_mean_suffix(attribute, INCLUDE_ATTRIBUTES),
                )
            )
        if unknown or attributes.get("skip") is True:
            continue
        pattern = str(attributes.get("file") or name)
        child_vars = dict(variables)
        if attributes.get("vars") is not None:
            vars_path = os.path.join(base, str(attributes["vars"]))
            try:
                child_vars.update(read_vars(vars_path))
            except UsageError as exc:
                into.problems.append(Problem(source, at, f"{where}.vars", str(exc)))
                continue
        inline = attributes.get("vars-inline")
        if inline is not None:
            if not isinstance(inline, dict):
                into.problems.append(Problem(source, at, f"{where}.vars-inline", "expected a mapping of variables"))
                continue
            child_vars.update(_plain(inline))
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not matches:
            continue  # goss: a glob matching nothing includes nothing
        for path in matches:
            real = os.path.realpath(path)
            if real in chain or real == os.path.realpath(source):
                into.problems.append(Problem(source, at, where, f"includes itself ({path}): an include loop"))
                continue
            if depth >= MAX_INCLUDE_DEPTH:
                into.problems.append(Problem(source, at, where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}"))
                continue
            try:
                text = _read(path)
            except UsageError as exc:
                into.problems.append(Problem(source, at, where, str(exc)))
                continue
            assert text is not None
            _document(text, path, child_vars, into, depth + 1, (*chain, os.path.realpath(source)))


def _plain(value: Any) -> Any:
    """YAML data as plain JSON-able values (dates and the like become strings)."""
    return json.loads(json.dumps(value, default=str))


def read_vars(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``--vars`` file: a YAML or JSON mapping."""
    source = os.fspath(path)
    text = _read(source, "vars file")
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise UsageError(f"{where}: vars file: YAML syntax error: {getattr(exc, 'problem', exc)}") from None
    except (ValueError, TypeError) as exc:  # an explicit tag on a value it cannot take: `!!int abc`
        raise UsageError(f"{source}: vars file: YAML value error: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{source}: vars file: expected a mapping of variables, got {type(data).__name__}")
    return data


def spec_variables(
    vars_file: str | os.PathLike[str] | None = None, assignments: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """``--vars FILE`` then ``--var K=V`` (``--spec-var``) on top; a dotted K sets a nested value."""
    variables: dict[str, Any] = read_vars(vars_file) if vars_file else {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"spec variable {assignment!r} (--spec-var, --var of bake spec): expected NAME=VALUE")
        target = variables
        *parents, leaf = name.strip().split(".")
        for parent in parents:
            nested = target.get(parent)
            if not isinstance(nested, dict):
                nested = target[parent] = {}
            target = nested
        target[leaf] = value
    return variables


def _collect(path: str | os.PathLike[str], variables: Mapping[str, Any] | None) -> _Document:
    source = _spec_file(os.fspath(path))
    text = _read(source)
    assert text is not None
    document = _Document(source)
    _document(text, source, variables or {}, document)
    return document


def included_sources(path: str | os.PathLike[str], variables: Mapping[str, Any] | None = None) -> list[Path]:
    """The files a spec includes from outside itself (outside its directory, for a spec directory), as far as
    they can be found; a spec with problems still names what it could read."""
    root = Path(os.fspath(path)).resolve()
    try:
        document = _collect(root, variables)
    except UsageError:
        return []
    found: list[Path] = []
    for source in document.sources:
        resolved = Path(source).resolve()
        inside = resolved == root or (root.is_dir() and root in resolved.parents)
        if not inside and resolved not in found and resolved.is_file():
            found.append(resolved)
    return found


def render_spec(path: str | os.PathLike[str], variables: Mapping[str, Any] | None = None) -> str:
    """The one document after templates and includes (like ``goss render``), as YAML."""
    document = _collect(path, variables)
    if document.problems:
        raise SpecProblems(document.problems)
    return yaml.safe_dump(_plain(document.as_dict()), sort_keys=False, default_flow_style=False, allow_unicode=True)


def check_spec(path: str | os.PathLike[str], variables: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem of the spec at ``path`` (empty when it is valid)."""
    document = _collect(path, variables)  # an unreadable top-level file is a UsageError of its own
    _resources(document)
    return SpecProblems(document.problems).problems if document.problems else []


def load_spec(path: str | os.PathLike[str], variables: Mapping[str, Any] | None = None) -> Spec:
    """Read, render, include and validate a spec; any problem is a UsageError listing them all."""
    document = _collect(path, variables)
    return _finish(document)


def parse_spec(text: str, source: str = "<spec>", variables: Mapping[str, Any] | None = None) -> Spec:
    """Validate spec text; ``source`` names it in error messages (includes are relative to it)."""
    document = _Document(source)
    _document(text, source, variables or {}, document)
    return _finish(document)


def _finish(document: _Document) -> Spec:
    resources = _resources(document)
    if document.problems:
        raise SpecProblems(document.problems)
    if not resources and not document.entries:
        raise SpecProblems([Problem(document.root, None, "(top level)", "the spec is empty")])
    return Spec(document.root, tuple(resources), tuple(document.sources))


def _resources(document: _Document) -> list[Resource]:
    resources: list[Resource] = []
    for entry in sorted(document.entries.values(), key=lambda e: e.order):
        path = f"{segment(entry.type)}.{segment(entry.id)}"
        resource = _resource(TYPES[entry.type], entry, path, document.problems)
        if resource is not None:
            resources.append(resource)
    return resources


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" {word!r}; did you mean {close[0]!r}?" if close else ""


def _did_you_mean_suffix(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _unset(value: Any) -> bool:
    """goss: an empty list (``contents: []``) or no value is "not set": no check."""
    return value is None or (isinstance(value, list) and not value)


def _resource(kind: ResourceType, entry: _Entry, path: str, problems: list[Problem]) -> Resource | None:
    attributes = entry.attributes

    def problem(where: str, message: str, line: int | None = entry.line) -> None:
        problems.append(Problem(entry.source, line, where, message))

    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        problem(path, f"expected a mapping of attributes, got {type(attributes).__name__}")
        return None
    lines = getattr(attributes, "lines", {})
    before = len(problems)
    checks: dict[str, matchers.Matcher] = {}
    options: dict[str, Any] = {}
    skip = False
    title = ""
    meta: Any = None
    given = False
    allowed = [*kind.checks, *COMMON]
    for raw_attribute, value in attributes.items():
        attribute = kind.aliases.get(raw_attribute, raw_attribute)
        where = f"{path}.{segment(str(raw_attribute))}"
        line = lines.get(raw_attribute, entry.line)
        try:
            if attribute in kind.checks:
                given = True
                if attribute in checks:
                    raise SpecError(where, f"{attribute} is given twice (once as {raw_attribute})")
                if _unset(value):
                    continue
                checks[attribute] = matchers.build(kind.checks[attribute], value, where)
            elif attribute == "skip":
                if not isinstance(value, bool):
                    raise SpecError(where, f"expected true or false, got {matchers.show(value)!r}")
                skip = value
            elif attribute == "title":
                if value is not None and not isinstance(value, str | int | float):
                    raise SpecError(where, "expected a string")
                title = "" if value is None else str(value)
            elif attribute == "meta":
                meta = _plain(value)
            elif attribute in kind.options or (attribute in kind.unsupported and value in ("", None, [], False)):
                if value is None or value == "" or attribute in kind.unsupported:
                    continue  # goss: an empty value is an unset one
                options[attribute] = _option(kind, attribute, value, where)
            elif attribute in kind.unsupported:
                raise SpecError(where, f"unsupported attribute ({kind.unsupported[attribute]})")
            else:
                hint = _did_you_mean_suffix(raw_attribute, [*allowed, *kind.options])
                raise SpecError(where, f"unknown attribute (expected one of {', '.join(allowed)}){hint}")
        except SpecError as exc:
            problem(exc.path, exc.message, line)
    if not checks and not skip and not given and len(problems) == before:
        problem(path, f"nothing to check (expected one of {', '.join(kind.checks)})")
    target = options.get(kind.target_option, entry.id) if kind.target_option else entry.id
    message = kind.check_target(target)
    if message:
        problem(path, message)
    if kind.validate and len(problems) == before:
        for where, message in kind.validate(target, options, path):
            problem(where, message)
    if len(problems) != before:
        return None
    return Resource(kind.name, entry.id, target, checks, options, skip, title, meta, entry.source)


def _option(kind: ResourceType, attribute: str, value: Any, where: str) -> Any:
    expected = kind.options[attribute]
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(where, f"expected a positive integer, got {matchers.show(value)!r}")
        return value
    if expected in ("ms", "count"):  # ms: 0 means goss's default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(where, f"expected a whole number >= 0, got {matchers.show(value)!r}")
        return value
    if expected == "delay":  # milliseconds, or a Go duration like 500ms, 2s, 1m
        return _delay(value, where)
    if expected == "bool":
        if not isinstance(value, bool):
            raise SpecError(where, f"expected true or false, got {matchers.show(value)!r}")
        return value
    if expected == "strlist":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(where, f"expected a list of strings, got {matchers.show(value)!r}")
        return list(value)
    if expected == "any":
        return _plain(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and expected == "str":
        value = str(value)
    if not isinstance(value, str) or not value:
        raise SpecError(where, f"expected a non-empty string, got {matchers.show(value)!r}")
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _delay(value: Any, where: str) -> float:
    """Milliseconds from goss's ``retry_delay``: a number of ms or a Go duration string."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        if text and re.fullmatch(rf"(?:{_DURATION.pattern})+", text):
            return sum(float(n) * _UNIT_MS[u] for n, u in _DURATION.findall(text))
    raise SpecError(where, f"expected milliseconds or a duration like 500ms or 2s, got {matchers.show(value)!r}")
