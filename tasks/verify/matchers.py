"""goss matchers: plain values, lists (must contain all), ``/regex/``, ``!`` negation, and the common
advanced matchers (``{have-prefix: ...}``, ``{contain-element: ...}``, ``{gt: 3}``, ...).

Each checked attribute has a *kind* that says what the host returns and how a plain YAML value reads:

    bool   exists, installed, running ...   true/false only
    int    uid, gid, size, exit-status      1000, "/^10/", "!0", {gt: 999}
    str    owner, home, value, md5 ...      "root", "/^ro/", "!root", {have-prefix: r}
    mode   file mode                        "0644" (quoted: YAML reads 0644 as the number 420)
    list   groups, versions, ip             [a, b] must all be there; "/re/" any element matches; "!x" none
    text   contents, stdout, stderr         [pattern, ...] checked line by line as goss does; a string
                                            must equal the whole text (trailing newlines ignored)
    any    matching.content                 goss's generic form: value, [contain-elements], {matcher}

Every kind also takes an advanced ``{matcher: argument}`` (booleans too: ``running: {or: [true, false]}``).
Regular expressions are Go's RE2 (:mod:`tasks.verify.regex`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.verify import regex as regex_engine

KINDS = ("bool", "int", "str", "mode", "list", "text", "any")


class SpecError(Exception):
    """A problem at ``path`` inside a spec; the loader adds the file name."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def show(value: Any) -> str:
    """A value as a spec author would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def _lines(found: Any) -> list[str]:
    if isinstance(found, list):
        return [str(v) for v in found]
    text = str(found)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Matcher:
    """Tests a value found on the host; ``describe`` is the expected side of a report line."""

    def test(self, found: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def explain(self, found: Any) -> str:
        """Why ``found`` failed, when there is more to say than expected vs found."""
        return ""


@dataclass(frozen=True)
class Equal(Matcher):
    value: Any

    def test(self, found: Any) -> bool:
        if isinstance(found, bool) or isinstance(self.value, bool):
            return found is self.value
        if isinstance(found, list) or isinstance(self.value, list):
            return (
                isinstance(found, list)
                and isinstance(self.value, list)
                and [str(v) for v in found] == [str(v) for v in self.value]
            )
        if isinstance(found, int) and not isinstance(self.value, str):
            number = _number(self.value)
            return number is not None and found == number
        return str(found) == str(self.value)

    def describe(self) -> str:
        return show(self.value)


@dataclass(frozen=True)
class Regex(Matcher):
    pattern: Any  # a compiled RE2 (or translated re) pattern

    def test(self, found: Any) -> bool:
        return self.pattern.search(show(found)) is not None

    def describe(self) -> str:
        return f"/{self.pattern.pattern}/"


@dataclass(frozen=True)
class Not(Matcher):
    inner: Matcher

    def test(self, found: Any) -> bool:
        return not self.inner.test(found)

    def describe(self) -> str:
        return f"!{self.inner.describe()}"


@dataclass(frozen=True)
class AllOf(Matcher):
    parts: tuple[Matcher, ...]
    label: str = ""

    def test(self, found: Any) -> bool:
        return all(p.test(found) for p in self.parts)

    def describe(self) -> str:
        return self.label or "all of [" + ", ".join(p.describe() for p in self.parts) + "]"

    def explain(self, found: Any) -> str:
        failed = [p for p in self.parts if not p.test(found)]
        return "; ".join(p.explain(found) or f"not {p.describe()}" for p in failed)


@dataclass(frozen=True)
class AnyOf(Matcher):
    parts: tuple[Matcher, ...]

    def test(self, found: Any) -> bool:
        return any(p.test(found) for p in self.parts)

    def describe(self) -> str:
        return "any of [" + ", ".join(p.describe() for p in self.parts) + "]"


@dataclass(frozen=True)
class StringTest(Matcher):
    name: str
    value: str
    func: Callable[[str, str], bool]

    def test(self, found: Any) -> bool:
        return self.func(show(found), self.value)

    def describe(self) -> str:
        return f"{self.name} {self.value}"


@dataclass(frozen=True)
class Compare(Matcher):
    op: str
    value: float

    def test(self, found: Any) -> bool:
        number = _number(found)
        if number is None:
            return False
        if self.op == "gt":
            return number > self.value
        if self.op == "ge":
            return number >= self.value
        if self.op == "lt":
            return number < self.value
        return number <= self.value

    def describe(self) -> str:
        symbol = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[self.op]
        return f"{symbol} {self.value:g}"


@dataclass(frozen=True)
class HaveLen(Matcher):
    length: int

    def test(self, found: Any) -> bool:
        return len(found if isinstance(found, list | str) else show(found)) == self.length

    def describe(self) -> str:
        return f"length {self.length}"


@dataclass(frozen=True)
class ContainElement(Matcher):
    """Some element of the found list (or line of the found text) passes ``inner``."""

    inner: Matcher

    def test(self, found: Any) -> bool:
        return any(self.inner.test(item) for item in _lines(found))

    def describe(self) -> str:
        return f"contains {self.inner.describe()}"

    def explain(self, found: Any) -> str:
        return f"missing {self.inner.describe()}"


@dataclass(frozen=True)
class NoElement(Matcher):
    """No element of the found list passes ``inner`` (a ``"!x"`` entry in a list)."""

    inner: Matcher

    def test(self, found: Any) -> bool:
        return not any(self.inner.test(item) for item in _lines(found))

    def describe(self) -> str:
        return f"!{self.inner.describe()}"

    def explain(self, found: Any) -> str:
        hits = [item for item in _lines(found) if self.inner.test(item)]
        return f"unexpected {self.inner.describe()} (found {show(hits[:3])})"


@dataclass(frozen=True)
class ConsistOf(Matcher):
    """Each element passes exactly one of the matchers, in any order, nothing left over."""

    parts: tuple[Matcher, ...]

    def test(self, found: Any) -> bool:
        items = _lines(found)
        if len(items) != len(self.parts):
            return False

        def assign(i: int, used: frozenset[int]) -> bool:
            if i == len(self.parts):
                return True
            return any(
                j not in used and self.parts[i].test(items[j]) and assign(i + 1, used | {j}) for j in range(len(items))
            )

        return assign(0, frozenset())

    def describe(self) -> str:
        return "consist of [" + ", ".join(p.describe() for p in self.parts) + "]"


@dataclass(frozen=True)
class Pattern(Matcher):
    """goss's line pattern for file contents and command output: substring or ``/regex/``, maybe negated."""

    text: str
    regex: Any  # compiled pattern, or None for a substring
    negate: bool

    def _hit(self, line: str) -> bool:
        return self.regex.search(line) is not None if self.regex else self.text in line

    def test(self, found: Any) -> bool:
        hit = any(self._hit(line) for line in _lines(found))
        return hit != self.negate

    def describe(self) -> str:
        body = f"/{self.regex.pattern}/" if self.regex else self.text
        return f"!{body}" if self.negate else body

    def explain(self, found: Any) -> str:
        if not self.negate:
            return f"not found: {self.describe()}"
        number = next(n for n, line in enumerate(_lines(found), 1) if self._hit(line))
        return f"found {self.describe()[1:]} at line {number}"  # the line itself may hold a secret


@dataclass(frozen=True)
class TextEqual(Matcher):
    text: str

    def test(self, found: Any) -> bool:
        return str(found).rstrip("\n") == self.text.rstrip("\n")

    def describe(self) -> str:
        return repr(self.text)


@dataclass(frozen=True)
class Mode(Matcher):
    value: int

    def test(self, found: Any) -> bool:
        try:
            return int(str(found), 8) == self.value
        except ValueError:
            return False

    def describe(self) -> str:
        return f"{self.value:04o}"


@dataclass(frozen=True)
class HaveKey(Matcher):
    """goss's have-key (``inner`` None) and have-key-with-value: a map with the key (and its value passing)."""

    key: Any
    inner: Matcher | None

    def test(self, found: Any) -> bool:
        found = _decoded(found)
        if not isinstance(found, dict):
            return False
        for candidate in (self.key, str(self.key)):
            if candidate in found:
                return self.inner is None or self.inner.test(found[candidate])
        return False

    def describe(self) -> str:
        return f"have key {show(self.key)}" + (f" with {self.inner.describe()}" if self.inner else "")


def _decoded(found: Any) -> Any:
    """A JSON text (command output, a body) as data; anything else as it is."""
    if isinstance(found, str):
        try:
            return json.loads(found)
        except ValueError:
            return found
    return found


_MISSING = object()


def gjson_get(data: Any, path: str) -> Any:
    """The subset of gjson paths goss files use: ``a.b``, ``a.0``, ``a.#``, ``a.#.b``, ``@this``, ``a\\.b``."""
    parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", path)] if path != "@this" else []
    value = data
    for index, part in enumerate(parts):
        if part == "@this":
            continue
        if part == "#":
            if not isinstance(value, list):
                return _MISSING
            rest = ".".join(parts[index + 1 :])
            if not rest:
                return len(value)
            picked = [gjson_get(item, rest) for item in value]
            return [p for p in picked if p is not _MISSING]
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


@dataclass(frozen=True)
class Gjson(Matcher):
    path: str
    inner: Matcher

    def test(self, found: Any) -> bool:
        value = gjson_get(_decoded(found), self.path)
        return value is not _MISSING and self.inner.test(value)

    def describe(self) -> str:
        return f"gjson {self.path} {self.inner.describe()}"

    def explain(self, found: Any) -> str:
        value = gjson_get(_decoded(found), self.path)
        return f"{self.path} not found" if value is _MISSING else f"{self.path} = {show(value)}"


# blang/semver's range syntax, as goss's semver-constraint: ">1.0.0 <2.0.0 !=1.5.0 || >=3.0.0"
Version = tuple[int, int, int, tuple[Any, ...]]
_VERSION = re.compile(r"v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def parse_version(text: str, wildcards: bool = False) -> tuple[Version, int]:
    """(version, how many leading parts were given before a wildcard); an epoch ``N:`` is dropped."""
    text = re.sub(r"^\d+:", "", str(text).strip())
    match = _VERSION.fullmatch(text)
    if not match:
        raise ValueError(f"not a version: {text!r}")
    numbers: list[int] = []
    given = 0
    for part in match.groups()[:3]:
        if part is None or part in "xX*":
            if part is not None and not wildcards:
                raise ValueError(f"not a version: {text!r}")
            numbers.append(0)
            continue
        if len(numbers) != given:
            raise ValueError(f"not a version: {text!r}")
        numbers.append(int(part))
        given += 1
    pre = match.group(4)
    prerelease: tuple[Any, ...] = (
        tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    )
    return (numbers[0], numbers[1], numbers[2], prerelease), given


def _version_key(version: Version) -> tuple[Any, ...]:
    major, minor, patch, pre = version
    return (major, minor, patch, 0 if pre else 1, pre)


Condition = tuple[str, Version]
_CONDITION = re.compile(r"(>=|<=|!=|==|=|>|<)?\s*([^\s<>=!]\S*)")


def parse_constraint(text: str) -> tuple[tuple[Condition, ...], ...]:
    alternatives: list[tuple[Condition, ...]] = []
    for alternative in text.split("||"):
        leftover = re.sub(r"[\s,]", "", _CONDITION.sub("", alternative))
        if leftover:  # a dangling operator would otherwise weaken the check silently
            raise ValueError(f"cannot read {leftover!r} in {alternative.strip()!r}")
        conditions: list[Condition] = []
        for op, version_text in _CONDITION.findall(alternative.strip()):
            version, given = parse_version(version_text, wildcards=True)
            op = op or "="
            if given < 3 and op in ("=", "=="):  # 1.x means >=1.0.0 <2.0.0
                conditions.append((">=", version))
                upper = [version[0], version[1], version[2]]
                upper[max(given - 1, 0)] += 1
                conditions.append(("<", (upper[0], upper[1] if given > 1 else 0, 0, ())))
            else:
                conditions.append((op, version))
        if not conditions:
            raise ValueError("an empty range")
        alternatives.append(tuple(conditions))
    return tuple(alternatives)


def _satisfies(version: Version, conditions: tuple[Condition, ...]) -> bool:
    key = _version_key(version)
    for op, bound in conditions:
        other = _version_key(bound)
        ok = {
            ">": key > other,
            ">=": key >= other,
            "<": key < other,
            "<=": key <= other,
            "!=": key != other,
            "=": key == other,
            "==": key == other,
        }[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class SemverConstraint(Matcher):
    """Every found version (a list, or one string) satisfies the range; an unparsable one fails."""

    text: str
    alternatives: tuple[tuple[Condition, ...], ...]

    def test(self, found: Any) -> bool:
        versions = found if isinstance(found, list) else [found]
        if not versions:
            return False
        for item in versions:
            try:
                version, _ = parse_version(str(item))
            except ValueError:
                return False
            if not any(_satisfies(version, alternative) for alternative in self.alternatives):
                return False
        return True

    def describe(self) -> str:
        return f"semver {self.text}"


# --------------------------------------------------------------------------------------------- build


def compile_regex(source: str, path: str) -> Any:
    try:
        return regex_engine.compile(source)
    except regex_engine.error as exc:
        raise SpecError(path, f"bad regex /{source}/ (Go RE2 syntax): {regex_engine.reason(exc)}") from None


def _slashed(value: str) -> bool:
    return len(value) >= 2 and value.startswith("/") and value.endswith("/")


def _scalar(value: Any, path: str) -> Matcher:
    """A plain value, ``/regex/``, or ``!`` followed by either (str, int and mode kinds)."""
    if isinstance(value, str):
        if value.startswith("\\!"):
            return Equal(value[1:])
        if value.startswith("!") and len(value) > 1:
            return Not(_scalar(value[1:], path))
        if _slashed(value):
            return Regex(compile_regex(value[1:-1], path))
    return Equal(value)


ADVANCED = (
    "equal",
    "not",
    "and",
    "or",
    "have-prefix",
    "have-suffix",
    "match-regexp",
    "contain-substring",
    "contain-element",
    "contain-elements",
    "consist-of",
    "have-len",
    "gt",
    "ge",
    "lt",
    "le",
    "have-key",
    "have-key-with-value",
    "semver-constraint",
    "gjson",
)
_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "have-prefix": str.startswith,
    "have-suffix": str.endswith,
    "contain-substring": lambda found, value: value in found,
}


def _list_arg(value: Any, path: str, key: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise SpecError(path, f"{key}: expected a list, got {type(value).__name__}")
    return value


def advanced(value: dict[Any, Any], path: str) -> Matcher:
    """goss's ``{matcher: argument}`` form."""
    if len(value) != 1:
        raise SpecError(path, f"an advanced matcher has exactly one key (one of {', '.join(ADVANCED)})")
    key, arg = next(iter(value.items()))
    where = f"{path}.{key}"
    if key not in ADVANCED:
        if isinstance(key, str) and (key.startswith("/") or key.startswith("!/") or key.startswith("!")):
            written = f"{key}: {show(arg)}" if arg is not None else f"{key}:"
            raise SpecError(
                path,
                f"YAML read {written!r} as a mapping (an unquoted pattern holding ': ' or ending in ':'): "
                f"quote the whole pattern, e.g. {json.dumps(written)}",
            )
        close = difflib.get_close_matches(str(key), ADVANCED, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SpecError(path, f"unknown matcher {key!r}{hint} (goss's matchers: {', '.join(ADVANCED)})")
    if key == "equal":
        return Equal(arg)
    if key == "not":
        return Not(generic(arg, where))
    if key in ("and", "or"):
        if isinstance(arg, dict):  # {and: {gt: 50, lt: 100}}: one matcher per key, as goss files write it
            arg = [{k: v} for k, v in arg.items()]
        parts = tuple(generic(v, f"{where}[{i}]") for i, v in enumerate(_list_arg(arg, path, key)))
        return AllOf(parts) if key == "and" else AnyOf(parts)
    if key in _STRING_TESTS or key == "match-regexp":
        if not isinstance(arg, str | int | float) or isinstance(arg, bool):
            raise SpecError(where, f"expected a string, got {type(arg).__name__}")
        if key == "match-regexp":
            return Regex(compile_regex(str(arg), where))
        return StringTest(key.replace("-", " "), str(arg), _STRING_TESTS[key])
    if key in ("gt", "ge", "lt", "le"):
        number = _number(arg)
        if number is None:
            raise SpecError(where, f"expected a number, got {show(arg)!r}")
        return Compare(key, number)
    if key == "have-len":
        if not isinstance(arg, int) or isinstance(arg, bool):
            raise SpecError(where, f"expected an integer, got {show(arg)!r}")
        return HaveLen(arg)
    if key == "contain-element":
        return ContainElement(generic(arg, where))
    if key == "have-key":
        return HaveKey(arg, None)
    if key == "have-key-with-value":
        if not isinstance(arg, dict) or not arg:
            raise SpecError(where, "expected a mapping of key: matcher")
        return AllOf(tuple(HaveKey(k, generic(v, f"{where}.{k}")) for k, v in arg.items()))
    if key == "semver-constraint":
        if not isinstance(arg, str) or not arg.strip():
            raise SpecError(where, f"expected a constraint string like '>1.0.0 <2.0.0', got {show(arg)!r}")
        try:
            return SemverConstraint(arg, parse_constraint(arg))
        except ValueError as exc:
            raise SpecError(where, f"bad semver constraint {arg!r}: {exc}") from None
    if key == "gjson":
        if not isinstance(arg, dict) or not arg:
            raise SpecError(where, "expected a mapping of gjson path: matcher")
        return AllOf(tuple(Gjson(str(k), generic(v, f"{where}.{k}")) for k, v in arg.items()))
    items = tuple(generic(v, f"{where}[{i}]") for i, v in enumerate(_list_arg(arg, path, key)))
    if key == "consist-of":
        return ConsistOf(items)
    return AllOf(tuple(ContainElement(m) for m in items))  # contain-elements


def generic(value: Any, path: str) -> Matcher:
    """A matcher nested in an advanced one: maps are matchers, lists contain-elements, scalars equality."""
    if isinstance(value, dict):
        return advanced(value, path)
    if isinstance(value, list):
        return AllOf(tuple(ContainElement(generic(v, f"{path}[{i}]")) for i, v in enumerate(value)))
    return Equal(value)


def _type_error(path: str, expected: str, value: Any) -> SpecError:
    return SpecError(path, f"expected {expected}, got {type(value).__name__} {show(value)!r}")


def build(kind: str, value: Any, path: str) -> Matcher:
    """The matcher for an attribute of ``kind`` written as ``value`` in the spec."""
    if isinstance(value, dict):
        return advanced(value, path)
    if kind == "any":
        return generic(value, path)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(path, "true or false", value)
        return Equal(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _type_error(path, "an integer, a /regex/ or a matcher", value)
        if isinstance(value, str) and not (_slashed(value.lstrip("!")) or value.lstrip("!").lstrip("-").isdigit()):
            raise _type_error(path, "an integer, a /regex/ or a matcher", value)
        return _scalar(value, path)
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _type_error(path, "a string, a /regex/ or a matcher", value)
        return _scalar(value, path)
    if kind == "mode":
        return _mode(value, path)
    if kind == "list":
        if not isinstance(value, list):
            raise _type_error(path, "a list", value)
        return AllOf(tuple(_element(v, f"{path}[{i}]") for i, v in enumerate(value)), label=show(value))
    if kind == "text":
        if isinstance(value, str):
            return TextEqual(value)
        if not isinstance(value, list):
            raise _type_error(path, "a list of patterns or a string", value)
        return AllOf(tuple(_pattern(v, f"{path}[{i}]") for i, v in enumerate(value)), label=show(value))
    raise ValueError(f"unknown kind {kind}")


def _mode(value: Any, path: str) -> Matcher:
    if isinstance(value, int) and not isinstance(value, bool):
        raise SpecError(
            path,
            f'expected a quoted octal string like "0644", got the number {value} '
            "(YAML reads an unquoted 0644 as the number 420: quote the mode)",
        )
    if not isinstance(value, str):
        raise SpecError(path, f'expected a quoted octal string like "0644", got {show(value)!r}')
    bare = value.lstrip("!")
    if _slashed(bare):
        return _scalar(value, path)
    if not re.fullmatch(r"[0-7]{3,4}", bare):
        raise SpecError(path, f'expected an octal mode like "0644", got {value!r}')
    matcher: Matcher = Mode(int(bare, 8))
    return Not(matcher) if value.startswith("!") else matcher


def _element(value: Any, path: str) -> Matcher:
    if isinstance(value, dict):
        return ContainElement(advanced(value, path))
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _type_error(path, "a string", value)
    if isinstance(value, str) and value.startswith("!") and len(value) > 1:
        return NoElement(_scalar(value[1:], path))
    return ContainElement(_scalar(value, path))


def _pattern(value: Any, path: str) -> Matcher:
    if isinstance(value, dict):
        return ContainElement(advanced(value, path))
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _type_error(path, "a string pattern", value)
    text = str(value)
    negate = text.startswith("!")
    if negate or text.startswith("\\!"):  # "\\!x" is a literal "!x"
        text = text[1:]
    regex = compile_regex(text[1:-1], path) if _slashed(text) else None
    return Pattern(text, regex, negate)
