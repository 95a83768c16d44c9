"""python-hcl2 behind one lock: its parser and transformer are not thread-safe.

The weekly rebuild observes families in parallel threads; two concurrent ``hcl2.load`` calls were seen
to return ``var.x`` where ``${var.x}`` was written, so a base image lookup failed at random. Every HCL
parse in bakery goes through here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import hcl2
from lark import Tree

_PARSE_LOCK = threading.Lock()


def unquote(text: Any) -> Any:
    """A string as python-hcl2 gives it (``'"x"'``, quotes kept) without its quotes; anything else as it is."""
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def load_document(path: Path) -> dict[str, Any]:
    """One HCL2 file as python-hcl2's dictionary (expressions as ``${...}`` strings)."""
    return loads_document(path.read_text())


def loads_document(text: str) -> dict[str, Any]:
    """One HCL2 text as python-hcl2's dictionary."""
    with _PARSE_LOCK:
        return dict(hcl2.loads(text))


def parse_tree(text: str) -> Tree:
    """One HCL2 text as python-hcl2's lark tree (keeps line numbers); raises lark's UnexpectedInput."""
    with _PARSE_LOCK:
        return hcl2.parses_to_tree(text)
