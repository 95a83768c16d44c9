"""The Docker engine is shared (other workers, a sweep, Packer's own clean-up, people): anything may be removed
between a listing and the inspect docker-py makes of each entry. Read from the source with ``ast``:

- ``<engine>.containers.list(...)`` always passes ``ignore_removed=True`` (or ``sparse=True``, which
  inspects nothing) — in tasks/, flows/, tests/, bench/ and scripts/;
- tasks/ and flows/ never call ``<engine>.images.list(...)`` (it has no such option):
  ``tasks.targets.docker.client.images_named`` lists what is still there.

CI failed once on the first (a test polling a run's containers while Packer removed its build container).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_layering import ROOT, write

TOLERANT = {"ignore_removed", "sparse"}


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def fragile_listings(root: Path) -> list[str]:
    found = []
    for folder in ("tasks", "flows", "tests", "bench", "scripts"):
        for file in sorted((root / folder).rglob("*.py")):
            rel = str(file.relative_to(root))
            product = folder in ("tasks", "flows")
            for node in ast.walk(ast.parse(file.read_text(), filename=rel)):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "list"
                    and isinstance(node.func.value, ast.Attribute)
                ):
                    continue
                kind = node.func.value.attr
                if kind == "containers" and not any(k.arg in TOLERANT and _is_true(k.value) for k in node.keywords):
                    found.append(
                        f"{rel}:{node.lineno}: containers.list() without ignore_removed=True "
                        "(a container removed meanwhile fails the whole listing)"
                    )
                elif kind == "images" and product:
                    found.append(
                        f"{rel}:{node.lineno}: images.list() fails when an image is removed meanwhile; "
                        "use tasks.targets.docker.client.images_named"
                    )
    return found


def test_every_engine_listing_tolerates_what_others_remove_meanwhile() -> None:
    broken = fragile_listings(ROOT)
    assert not broken, "\n" + "\n".join(broken)


def test_a_fragile_listing_is_named_with_file_and_line(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "tasks/a.py": (
                "def f(engine):\n"
                "    engine.containers.list(all=True)\n"
                "    engine.containers.list(all=True, ignore_removed=True)\n"
                "    engine.containers.list(sparse=True)\n"
                "    engine.images.list(name='x')\n"
                "    [1].copy()\n"
            ),
            "tests/b.py": "def g(e):\n    e.images.list(name='mine')\n    e.containers.list(ignore_removed=False)\n",
        },
    )
    assert fragile_listings(root) == [
        "tasks/a.py:2: containers.list() without ignore_removed=True (a container removed meanwhile fails the "
        "whole listing)",
        "tasks/a.py:5: images.list() fails when an image is removed meanwhile; use "
        "tasks.targets.docker.client.images_named",
        "tests/b.py:3: containers.list() without ignore_removed=True (a container removed meanwhile fails the "
        "whole listing)",
    ]
