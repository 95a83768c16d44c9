"""The subset of Go's text/template that goss files use, rendered as goss renders them.

Data: ``.Vars`` (``--vars FILE``, ``--var K=V``, an include's ``vars``) and ``.Env`` (the environment of
``bake``). As goss (``missingkey=error``), a missing variable or environment variable is an error that
names it; ``getEnv "X" "default"`` and ``index .Vars "x"`` are the forgiving lookups.

Actions: ``{{ pipeline }}``, ``{{- trim -}}``, comments, ``if/else if/else``, ``range`` (with ``$i, $v :=``
and ``else``), ``with``, ``$var :=``/``=``, pipes, parentheses. Functions: Go's builtins (and, or, not, eq,
ne, lt, le, gt, ge, len, index, print, printf, println), goss's own (mkSlice, getEnv, readFile, regexMatch,
findStringSubmatch, toUpper, toLower) and the common sprig helpers listed in ``FUNCTIONS``. Anything
else (``define``, ``template``, ``block``, an unknown function) is an error naming it.
"""

from __future__ import annotations

import json
import os
import re
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tasks.verify import regex as regex_engine


class TemplateError(Exception):
    """A template problem at ``line`` of the file (1-based)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def is_template(text: str) -> bool:
    return "{{" in text


# ------------------------------------------------------------------------------------------- values


def truthy(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | tuple | dict):
        return bool(value)
    return True


def show(value: Any) -> str:
    """A value as Go's ``%v`` prints it."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{show(k)}:{show(value[k])}" for k in sorted(value, key=str)) + "]"
    return str(value)


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, got {show(value)}")
    if isinstance(value, int | float):
        return value
    try:
        text = str(value).strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        raise ValueError(f"{what}: expected a number, got {show(value)!r}") from None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise ValueError("eq: missing argument for comparison")
    for b in others:
        if a is None or b is None:
            if a is b:
                return True
            continue
        if _kind(a) != _kind(b):
            raise ValueError(
                f"eq: incompatible types for comparison ({show(a)!r} is a {_kind(a)}, {show(b)!r} a {_kind(b)})"
            )
        if a == b:
            return True
    return False


def _ordered(op: str) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if _kind(a) != _kind(b) or _kind(a) not in ("number", "string"):
            raise ValueError(f"{op}: incompatible types for comparison ({show(a)!r}, {show(b)!r})")
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]

    return compare


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, value.get(str(key)) if not isinstance(key, str) else None)
        elif isinstance(value, list | tuple | str):
            position = int(_number(key, "index"))
            if not 0 <= position < len(value):
                raise ValueError(f"index: {position} out of range (length {len(value)})")
            value = value[position]
        elif value is None:
            raise ValueError("index of a missing value (<no value>)")
        else:
            raise ValueError(f"can't index a {_kind(value)}")
    return value


def _printf(form: str, *args: Any) -> str:
    parts = iter(args)
    out: list[str] = []

    def verb(match: re.Match[str]) -> str:
        flags, kind = match.group(1), match.group(2)
        if kind == "%":
            return "%"
        value = next(parts, None)
        if kind == "q":
            return json.dumps(show(value))
        if kind in "dxXobc":
            return ("%" + flags + {"b": "d", "c": "c"}.get(kind, kind)) % int(_number(value, "printf"))
        if kind in "feEgG":
            return ("%" + flags + kind) % float(_number(value, "printf"))
        return ("%" + flags + "s") % show(value)

    out.append(re.sub(r"%([-+# 0]*\d*(?:\.\d+)?)([%vsdqfeEgGxXobct])", verb, form))
    return "".join(out)


def _default(fallback: Any, *given: Any) -> Any:
    return given[0] if given and truthy(given[0]) else fallback


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ValueError(f"readFile {path!r}: {exc.strerror}") from None


def _regex_match(pattern: str, text: Any) -> bool:
    return regex_engine.compile(str(pattern)).search(show(text)) is not None


def _find_submatch(pattern: str, text: Any) -> list[str]:
    match = regex_engine.compile(str(pattern)).search(show(text))
    return [match.group(0), *(g or "" for g in match.groups())] if match else []


def _dict(*pairs: Any) -> dict[str, Any]:
    if len(pairs) % 2:
        raise ValueError("dict: expected key value pairs")
    return {str(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}


def _indent(spaces: Any, text: Any) -> str:
    pad = " " * int(_number(spaces, "indent"))
    return pad + show(text).replace("\n", "\n" + pad)


def _uniq(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items or []:
        if item not in out:
            out.append(item)
    return out


def _to_int(value: Any) -> int:
    try:
        return int(_number(value, "int"))
    except ValueError:
        return 0


def _env_lookup(name: str, *fallback: str) -> str:
    value = os.environ.get(str(name), "")
    return fallback[0] if not value and fallback else value


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Go's text/template builtins (and/or are evaluated lazily in _call)
    "not": lambda v: not truthy(v),
    "len": lambda v: len(v) if v is not None else 0,
    "index": _index,
    "print": lambda *a: "".join(show(v) for v in a),
    "println": lambda *a: " ".join(show(v) for v in a) + "\n",
    "printf": _printf,
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered("lt"),
    "le": _ordered("le"),
    "gt": _ordered("gt"),
    "ge": _ordered("ge"),
    # goss's own
    "mkSlice": lambda *a: list(a),
    "getEnv": _env_lookup,
    "readFile": _read_file,
    "regexMatch": _regex_match,
    "findStringSubmatch": _find_submatch,
    "toUpper": lambda s: show(s).upper(),
    "toLower": lambda s: show(s).lower(),
    # sprig
    "env": lambda name: os.environ.get(str(name), ""),
    "default": _default,
    "empty": lambda v: not truthy(v),
    "coalesce": lambda *a: next((v for v in a if truthy(v)), None),
    "ternary": lambda yes, no, condition: yes if truthy(condition) else no,
    "upper": lambda s: show(s).upper(),
    "lower": lambda s: show(s).lower(),
    "title": lambda s: re.sub(r"\b[a-z]", lambda m: m.group(0).upper(), show(s)),
    "trim": lambda s: show(s).strip(),
    "trimAll": lambda chars, s: show(s).strip(str(chars)),
    "trimPrefix": lambda prefix, s: show(s).removeprefix(str(prefix)),
    "trimSuffix": lambda suffix, s: show(s).removesuffix(str(suffix)),
    "replace": lambda old, new, s: show(s).replace(str(old), str(new)),
    "contains": lambda sub, s: str(sub) in show(s),
    "hasPrefix": lambda prefix, s: show(s).startswith(str(prefix)),
    "hasSuffix": lambda suffix, s: show(s).endswith(str(suffix)),
    "repeat": lambda n, s: show(s) * int(_number(n, "repeat")),
    "quote": lambda *a: " ".join(json.dumps(show(v)) for v in a),
    "squote": lambda *a: " ".join(f"'{show(v)}'" for v in a),
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "splitList": lambda sep, s: show(s).split(str(sep)),
    "join": lambda sep, items: str(sep).join(show(v) for v in (items or [])),
    "regexFind": lambda pattern, s: (lambda m: m.group(0) if m else "")(
        regex_engine.compile(str(pattern)).search(show(s))
    ),
    "regexReplaceAll": lambda pattern, s, repl: regex_engine.compile(str(pattern)).sub(
        re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", str(repl)), show(s)
    ),
    "toString": show,
    "toJson": lambda v: json.dumps(v, separators=(",", ":")),
    "toYaml": lambda v: yaml.safe_dump(v, default_flow_style=False).rstrip("\n"),
    "int": _to_int,
    "atoi": _to_int,
    "int64": _to_int,
    "float64": lambda v: float(_number(v, "float64")),
    "add": lambda *a: sum(_number(v, "add") for v in a),
    "add1": lambda v: _number(v, "add1") + 1,
    "sub": lambda a, b: _number(a, "sub") - _number(b, "sub"),
    "mul": lambda *a: __import__("math").prod(_number(v, "mul") for v in a),
    "div": lambda a, b: int(_number(a, "div") / _number(b, "div")),
    "mod": lambda a, b: _number(a, "mod") % _number(b, "mod"),
    "max": lambda *a: max(_number(v, "max") for v in a),
    "min": lambda *a: min(_number(v, "min") for v in a),
    "list": lambda *a: list(a),
    "dict": _dict,
    "hasKey": lambda m, k: isinstance(m, dict) and k in m,
    "keys": lambda *maps: [k for m in maps for k in m],
    "values": lambda m: list(m.values()),
    "has": lambda needle, items: needle in (items or []),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "uniq": _uniq,
    "sortAlpha": lambda items: sorted(show(v) for v in (items or [])),
    "until": lambda n: list(range(int(_number(n, "until")))),
    "toStrings": lambda items: [show(v) for v in (items or [])],
}
LAZY = ("and", "or")
KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")


# ------------------------------------------------------------------------------------------ parsing


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<punct>[()|,])
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+))
  | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(text: str, line: int) -> list[_Tok]:
    out: list[_Tok] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise TemplateError(
                f"template: unexpected {text[position : position + 10]!r} in action {{{{{text}}}}}", line
            )
        kind = match.lastgroup or ""
        if kind != "space":
            out.append(_Tok(kind, match.group(0)))
        position = match.end()
    return out


# A pipeline is a list of commands; a command a list of operands; an operand one of:
#   ("lit", value) ("field", [names]) ("var", name, [names]) ("func", name) ("sub", pipeline, [names])
Operand = tuple[Any, ...]


@dataclass
class _Pipeline:
    declare: list[str]
    assign: bool
    commands: list[list[Operand]]
    line: int


@dataclass
class _Node:
    kind: str  # text, action, if, range, with
    line: int
    text: str = ""
    pipeline: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


def _unquote(token: _Tok) -> str:
    if token.kind == "raw":
        return token.text[1:-1]
    value: str = (
        json.loads(token.text) if "\\x" not in token.text else token.text[1:-1].encode().decode("unicode_escape")
    )
    return value


class _Parser:
    def __init__(self, tokens: list[_Tok], line: int) -> None:
        self.tokens = tokens
        self.position = 0
        self.line = line

    def peek(self) -> _Tok | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Tok:
        token = self.peek()
        if token is None:
            raise TemplateError("template: unexpected end of action", self.line)
        self.position += 1
        return token

    def pipeline(self, allow_declare: bool = True) -> _Pipeline:
        declare: list[str] = []
        assign = False
        if allow_declare:
            mark = self.position
            names: list[str] = []
            while (token := self.peek()) and token.kind == "variable" and "." not in token.text:
                names.append(token.text)
                self.position += 1
                following = self.peek()
                if following and following.kind == "punct" and following.text == ",":
                    self.position += 1
                    continue
                break
            following = self.peek()
            if names and following and following.kind in ("declare", "assign"):
                self.position += 1
                declare, assign = names, following.kind == "assign"
            else:
                self.position = mark
        commands: list[list[Operand]] = []
        command: list[Operand] = []
        while (token := self.peek()) is not None:
            if token.kind == "punct" and token.text == ")":
                break
            if token.kind == "punct" and token.text == "|":
                self.position += 1
                if not command:
                    raise TemplateError("template: missing command before '|'", self.line)
                commands.append(command)
                command = []
                continue
            command.append(self.operand())
        if command:
            commands.append(command)
        if not commands:
            raise TemplateError("template: missing value in action", self.line)
        return _Pipeline(declare, assign, commands, self.line)

    def operand(self) -> Operand:
        token = self.take()
        if token.kind in ("string", "raw"):
            return ("lit", _unquote(token))
        if token.kind == "char":
            return ("lit", ord(_unquote(_Tok("string", '"' + token.text[1:-1] + '"'))))
        if token.kind == "number":
            text = token.text
            value: Any = int(text, 0) if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", text) else float(text)
            return ("lit", value)
        if token.kind == "field":
            return ("field", [] if token.text == "." else token.text[1:].split("."))
        if token.kind == "variable":
            name, *names = token.text.split(".")
            return ("var", name, names)
        if token.kind == "punct" and token.text == "(":
            inner = self.pipeline(allow_declare=False)
            closing = self.take()
            if closing.text != ")":
                raise TemplateError("template: unclosed '('", self.line)
            names = []
            following = self.peek()
            if following and following.kind == "field" and following.text != ".":
                self.position += 1
                names = following.text[1:].split(".")
            return ("sub", inner, names)
        if token.kind == "ident":
            word = token.text
            if word in ("true", "false"):
                return ("lit", word == "true")
            if word == "nil":
                return ("lit", None)
            if "." in word or word in KEYWORDS:
                raise TemplateError(f"template: unexpected {word!r}", self.line)
            if word not in FUNCTIONS and word not in LAZY:
                raise TemplateError(
                    f"template: function {word!r} is not supported (bakery renders Go's builtins, goss's own "
                    f"functions and these sprig helpers: {', '.join(sorted(set(FUNCTIONS) - {'eq', 'ne'}))})",
                    self.line,
                )
            return ("func", word)
        raise TemplateError(f"template: unexpected {token.text!r}", self.line)


_ACTION = re.compile(r"\{\{(-\s)?")


def _split(text: str) -> Iterator[tuple[str, str, int]]:
    """("text", chunk, line) and ("action", body, line), with Go's ``{{-``/``-}}`` trimming applied."""
    position = 0
    trim_next = False
    while True:
        start = text.find("{{", position)
        if start < 0:
            chunk = text[position:]
            yield ("text", chunk.lstrip() if trim_next else chunk, text.count("\n", 0, position) + 1)
            return
        chunk = text[position:start]
        if trim_next:
            chunk = chunk.lstrip()
        inner_start = start + 2
        trim_before = (
            text.startswith("- ", inner_start)
            or text.startswith("-\n", inner_start)
            or text.startswith("-\t", inner_start)
        )
        if trim_before:
            chunk = chunk.rstrip()
            inner_start += 1
        yield ("text", chunk, text.count("\n", 0, position) + 1)
        line = text.count("\n", 0, start) + 1
        end = _action_end(text, inner_start, line)
        body = text[inner_start:end]
        trim_next = body.endswith(" -") or body.endswith("\n-") or body.endswith("\t-")
        if trim_next:
            body = body[:-1]
        yield ("action", body.strip(), line)
        position = end + 2


def _action_end(text: str, position: int, line: int) -> int:
    quote = ""
    index = position
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"`'":
            quote = char
        elif text.startswith("}}", index):
            return index
        index += 1
    raise TemplateError("template: unclosed action (no '}}' after '{{')", line)


def parse(text: str) -> list[_Node]:
    root: list[_Node] = []
    # (block node, the list being filled, chained): a chained entry is an {{else if}} whose {{end}}
    # also closes the block it hangs from
    stack: list[tuple[_Node | None, list[_Node], bool]] = [(None, root, False)]
    for kind, chunk, line in _split(text):
        current = stack[-1][1]
        if kind == "text":
            if chunk:
                current.append(_Node("text", line, chunk))
            continue
        if chunk.startswith("/*"):
            if not chunk.endswith("*/"):
                raise TemplateError("template: unclosed comment", line)
            continue
        tokens = _tokens(chunk, line)
        if not tokens:
            raise TemplateError("template: missing value in empty action {{}}", line)
        head = tokens[0]
        word = head.text if head.kind == "ident" else ""
        if word in ("if", "range", "with"):
            node = _Node(word, line, pipeline=_Parser(tokens[1:], line).pipeline())
            current.append(node)
            stack.append((node, node.body, False))
        elif word == "else":
            owner, filling, chained = stack[-1]
            if owner is None or filling is owner.otherwise:
                raise TemplateError("template: unexpected {{else}}", line)
            stack.pop()
            stack.append((owner, owner.otherwise, chained))
            if len(tokens) > 1 and tokens[1].kind == "ident" and tokens[1].text in ("if", "with"):
                nested = _Node(tokens[1].text, line, pipeline=_Parser(tokens[2:], line).pipeline())
                owner.otherwise.append(nested)
                stack.append((nested, nested.body, True))
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("template: unexpected {{end}}", line)
            while stack.pop()[2]:
                pass
        elif word in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"template: {{{{{word}}}}} is not supported by bakery's renderer", line)
        else:
            current.append(_Node("action", line, pipeline=_Parser(tokens, line).pipeline()))
    if len(stack) > 1:
        owner = stack[-1][0]
        opened = owner.line if owner else 0
        raise TemplateError(f"template: missing {{{{end}}}} for the block opened on line {opened}", opened)
    return root


# ----------------------------------------------------------------------------------------- executing


class _Missing(Exception):
    pass


class _Renderer:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.out: list[str] = []

    def run(self, nodes: list[_Node], dot: Any, scope: ChainMap[str, Any]) -> None:
        for node in nodes:
            if node.kind == "text":
                self.out.append(node.text)
            elif node.kind == "action":
                assert node.pipeline is not None
                value = self.pipeline(node.pipeline, dot, scope)
                if not node.pipeline.declare:
                    self.out.append(show(value))
            elif node.kind in ("if", "with"):
                assert node.pipeline is not None
                inner = scope.new_child()
                value = self.pipeline(node.pipeline, dot, inner)
                if truthy(value):
                    self.run(node.body, value if node.kind == "with" else dot, inner)
                else:
                    self.run(node.otherwise, dot, inner)
            elif node.kind == "range":
                self.range(node, dot, scope)

    def range(self, node: _Node, dot: Any, scope: ChainMap[str, Any]) -> None:
        assert node.pipeline is not None
        names = node.pipeline.declare
        collection = self.pipeline(_Pipeline([], False, node.pipeline.commands, node.line), dot, scope)
        if isinstance(collection, dict):
            pairs = [(k, collection[k]) for k in sorted(collection, key=str)]
        elif isinstance(collection, list | tuple):
            pairs = list(enumerate(collection))
        elif isinstance(collection, int) and not isinstance(collection, bool):
            pairs = [(i, i) for i in range(collection)]
        elif collection is None:
            pairs = []
        else:
            raise TemplateError(f"template: range can't iterate over {show(collection)!r}", node.line)
        if not pairs:
            self.run(node.otherwise, dot, scope.new_child())
            return
        for key, item in pairs:
            inner = scope.new_child()
            if len(names) == 1:
                inner[names[0]] = item
            elif len(names) == 2:
                inner[names[0]], inner[names[1]] = key, item
            self.run(node.body, item, inner)

    def pipeline(self, pipeline: _Pipeline, dot: Any, scope: ChainMap[str, Any]) -> Any:
        value: Any = None
        for position, command in enumerate(pipeline.commands):
            piped = position > 0
            value = self.command(command, dot, scope, value if piped else _NOTHING, pipeline.line)
        if pipeline.declare:
            if len(pipeline.declare) != 1:
                raise TemplateError("template: too many variables in declaration", pipeline.line)
            name = pipeline.declare[0]
            if not pipeline.assign:
                scope[name] = value  # := declares in the innermost block
            elif name in scope:
                # = changes the variable where it was declared, as Go does (also from inside if/range/with)
                next(m for m in scope.maps if name in m)[name] = value
            else:
                raise TemplateError(f"template: undefined variable {name}", pipeline.line)
        return value

    def command(self, command: list[Operand], dot: Any, scope: ChainMap[str, Any], piped: Any, line: int) -> Any:
        head = command[0]
        if head[0] == "func":
            name = head[1]
            if name in LAZY:
                return self.lazy(name, command[1:], dot, scope, piped, line)
            args = [self.operand(o, dot, scope, line) for o in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return FUNCTIONS[name](*args)
            except TemplateError:
                raise
            except TypeError as exc:
                raise TemplateError(f"template: {name}: wrong number or kind of arguments ({exc})", line) from None
            except (ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
                raise TemplateError(f"template: {name}: {exc}", line) from None
            except regex_engine.error as exc:
                raise TemplateError(
                    f"template: {name}: bad regular expression: {regex_engine.reason(exc)}", line
                ) from None
        if len(command) > 1 or piped is not _NOTHING:
            raise TemplateError(f"template: can't give arguments to a non-function {_describe(head)}", line)
        return self.operand(head, dot, scope, line)

    def lazy(
        self, name: str, operands: list[Operand], dot: Any, scope: ChainMap[str, Any], piped: Any, line: int
    ) -> Any:
        def thunk(operand: Operand) -> Callable[[], Any]:
            return lambda: self.operand(operand, dot, scope, line)

        thunks: list[Callable[[], Any]] = [thunk(o) for o in operands]
        if piped is not _NOTHING:
            thunks.append(lambda: piped)
        if not thunks:
            raise TemplateError(f"template: {name}: needs at least one argument", line)
        value: Any = None
        for evaluate in thunks:
            value = evaluate()
            if truthy(value) == (name == "or"):
                return value
        return value

    def operand(self, operand: Operand, dot: Any, scope: ChainMap[str, Any], line: int) -> Any:
        kind = operand[0]
        if kind == "lit":
            return operand[1]
        if kind == "func":
            return self.command([operand], dot, scope, _NOTHING, line)
        if kind == "field":
            return self.fields(dot, operand[1], line, ".")
        if kind == "var":
            name, names = operand[1], operand[2]
            if name == "$":
                base = self.data
            elif name in scope:
                base = scope[name]
            else:
                raise TemplateError(f"template: undefined variable {name}", line)
            return self.fields(base, names, line, name)
        if kind == "sub":
            value = self.pipeline(operand[1], dot, scope.new_child())
            return self.fields(value, operand[2], line, "(...)")
        raise TemplateError(f"template: bad operand {operand!r}", line)

    def fields(self, value: Any, names: list[str], line: int, start: str) -> Any:
        path = start.rstrip(".")
        for name in names:
            path = f"{path}.{name}"
            if isinstance(value, dict):
                if name not in value:
                    raise TemplateError(_missing(path), line)
                value = value[name]
            elif value is None:
                raise TemplateError(f"template: {path}: nil pointer evaluating <no value>.{name}", line)
            else:
                raise TemplateError(f"template: {path}: can't evaluate field {name} in a {_kind(value)}", line)
        return value


_NOTHING = object()


def _describe(operand: Operand) -> str:
    if operand[0] == "lit":
        return repr(operand[1])
    if operand[0] == "field":
        return "." + ".".join(operand[1])
    return str(operand[1])


def _missing(path: str) -> str:
    if path.startswith(".Vars."):
        name = path[len(".Vars.") :]
        return (
            f"template: {path}: no such variable (goss stops here too: give it with --vars FILE or --var {name}=VALUE, "
            'or write {{ index .Vars "' + name.split(".")[-1] + '" }} / default for an optional one)'
        )
    if path.startswith(".Env."):
        name = path[len(".Env.") :]
        return (
            f"template: {path}: environment variable {name} is not set "
            f'(goss stops here too; getEnv "{name}" "default" is the forgiving lookup)'
        )
    return f"template: {path}: map has no entry for key {path.rsplit('.', 1)[-1]!r}"


def render(text: str, variables: Mapping[str, Any], source: str = "<spec>") -> str:
    """``text`` rendered with ``.Vars`` = ``variables`` and ``.Env`` = the environment."""
    data = {"Vars": dict(variables), "Env": dict(os.environ)}
    renderer = _Renderer(data)
    try:
        renderer.run(parse(text), data, ChainMap({"$": data}))
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, OverflowError, MemoryError, UnicodeError) as exc:
        # a malformed literal or a helper given what it cannot take: a spec problem, never a traceback
        raise TemplateError(f"template: {exc}") from None
    return "".join(renderer.out)
