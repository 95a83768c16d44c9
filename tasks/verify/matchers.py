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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("bool", "int", "str", "mode", "list", "text")


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
    pattern: re.Pattern[str]

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
    regex: re.Pattern[str] | None
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


# --------------------------------------------------------------------------------------------- build


def compile_regex(source: str, path: str) -> re.Pattern[str]:
    try:
        return re.compile(source)
    except re.error as exc:
        raise SpecError(path, f"bad regex /{source}/: {exc}") from None


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
        raise SpecError(path, f"unsupported matcher {key!r} (bakery supports {', '.join(ADVANCED)})")
    if key == "equal":
        return Equal(arg)
    if key == "not":
        return Not(generic(arg, where))
    if key in ("and", "or"):
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
    if isinstance(value, dict) and kind != "bool":
        return advanced(value, path)
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
