"""python-hcl2 is not thread-safe: every parse goes through tasks/hcl.py's lock, checked here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_only_tasks_hcl_imports_python_hcl2() -> None:
    importers = []
    for path in sorted([*REPO.glob("tasks/**/*.py"), *REPO.glob("flows/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "hcl2" or n.startswith("hcl2.") for n in names):
                importers.append(str(path.relative_to(REPO)))
    assert importers == ["tasks/hcl.py"]
