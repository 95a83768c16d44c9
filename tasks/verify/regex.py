"""Regular expressions as goss (Go's RE2) reads them: the google-re2 binding when it is installed, else
Python's ``re`` after translating the RE2 syntax that ``re`` reads differently (``\\Q...\\E`` literals,
``\\z``, POSIX classes like ``[[:alpha:]]``, ``\\pN``)."""

from __future__ import annotations

import re
from typing import Any

try:  # a maintained RE2 binding (PyPI google-re2): Go's syntax and semantics, linear time
    import re2 as _re2  # type: ignore[import-not-found, import-untyped]

    _re2_options = _re2.Options()
    _re2_options.log_errors = False
except ImportError:  # pragma: no cover - the dependency is declared; this keeps a broken install usable
    _re2 = None

# what a bad pattern raises: catch it as ``except regex.error``
error: tuple[type[Exception], ...] = (re.error,) if _re2 is None else (re.error, _re2.error)

_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


def translate(pattern: str) -> str:
    """RE2 syntax that Python's ``re`` reads differently, rewritten for ``re``; what RE2 refuses (look-around,
    back-references, possessive or atomic groups) is refused here too."""
    unquoted = re.sub(r"\\Q.*?(?:\\E|$)", "", pattern, flags=re.S)
    if re.search(r"\(\?(=|!|<=|<!|>)", unquoted):
        raise re.error("look-around and atomic groups are not Go RE2 syntax")
    if re.search(r"(?<!\\)(?:\\\\)*\\[1-9]", unquoted):
        raise re.error("back-references are not Go RE2 syntax")
    pattern = re.sub(r"\\Q(.*?)(?:\\E|$)", lambda m: re.escape(m.group(1)), pattern, flags=re.S)
    pattern = re.sub(r"\[:(\^?)([a-z]+):\]", lambda m: _posix(m.group(1), m.group(2)), pattern)
    pattern = pattern.replace("\\z", "\\Z")
    pattern = re.sub(r"\(\?P?<([A-Za-z_]\w*)>", r"(?P<\1>", pattern)
    return pattern


def _posix(negate: str, name: str) -> str:
    if name not in _POSIX:
        raise re.error(f"unknown POSIX class [:{name}:]")
    if negate:
        raise re.error(f"negated POSIX class [:^{name}:] needs RE2 (pip install google-re2)")
    return _POSIX[name]


def compile(pattern: str) -> Any:
    """A compiled pattern with ``search``/``sub``/``pattern``; raises one of ``error``."""
    if _re2 is not None:
        return _re2.compile(pattern, options=_re2_options)
    return re.compile(translate(pattern))


def engine() -> str:
    return "re2" if _re2 is not None else "re (RE2 syntax translated)"


def reason(exc: BaseException) -> str:
    """An error's message as text (RE2's binding gives bytes)."""
    message = exc.args[0] if exc.args else exc
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
