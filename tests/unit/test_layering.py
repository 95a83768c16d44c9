"""The import contracts of tasks/ and flows/ (docs/architecture.md), read from the source with ``ast``.

Every import that runs counts, the ones inside functions too: a lazy import hides a cycle or a platform SDK
from a module-level reading, not from Python. Imports under ``if TYPE_CHECKING:`` never run and are left
out. The rules:

- ``boto3``/``botocore`` are imported only under ``tasks/targets/aws/``;
- the ``docker`` SDK only under ``tasks/targets/docker/``;
- ``prefect`` only in ``flows/`` and ``tasks/steps/`` (the Prefect edge);
- no two modules of ``tasks/`` import each other, directly or through others;
- outside ``tasks/targets/`` no code compares a value with a target name (``target == "aws"``,
  ``target in ("docker", ...)``, ``case "aws":``): what differs between platforms is a method or an attribute
  of ``Platform`` (``tasks/targets/base.py``). A comparison that is about one platform's own option (an
  ``--aws-*`` option, ``--registry``) says so with a ``# platform-specific: <why>`` comment on its line or the
  line above.

Each failure names the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    """One import statement's target module, where it stands."""

    module: str  # the importing module, e.g. tasks.sweep
    path: str  # its file, relative to the repository
    line: int
    imported: str  # the module it imports, e.g. tasks.targets.docker.instances or boto3


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (types only, never run)."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return found


def read_imports(root: Path) -> tuple[set[str], list[Import]]:
    """All modules of tasks/ and flows/ under ``root``, and every import they make (function level too)."""
    files = sorted([*root.glob("tasks/**/*.py"), *root.glob("flows/**/*.py")])
    modules = {module_name(f, root) for f in files}
    found: list[Import] = []
    for file in files:
        name = module_name(file, root)
        is_package = file.name == "__init__.py"
        rel = str(file.relative_to(root))
        for node in runtime_nodes(ast.parse(file.read_text(), filename=rel)):
            if isinstance(node, ast.Import):
                found += [Import(name, rel, node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package of this module
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base_parts = package[: len(package) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` imports mod
                    found.append(Import(name, rel, node.lineno, sub if sub in modules else base))
    return modules, sorted(found, key=lambda i: (i.path, i.line, i.imported))


SDK_RULES = (
    (("boto3", "botocore"), ("tasks/targets/aws/",), "boto3/botocore are imported only under tasks/targets/aws/"),
    (("docker",), ("tasks/targets/docker/",), "the docker SDK is imported only under tasks/targets/docker/"),
    (("prefect",), ("flows/", "tasks/steps/"), "prefect is imported only in flows/ and tasks/steps/"),
)


def sdk_violations(imports: list[Import]) -> list[str]:
    broken: list[str] = []
    for imp in imports:
        top = imp.imported.split(".")[0]
        for packages, allowed, rule in SDK_RULES:
            if top in packages and not imp.path.startswith(allowed):
                broken.append(f"{imp.path}:{imp.line}: imports {imp.imported} ({rule})")
    return list(dict.fromkeys(broken))  # ``from x import a, b`` is one finding


def cycles(modules: set[str], imports: list[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each strongly connected group of tasks/ modules, with one cycle of imports through it."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules if m.split(".")[0] == "tasks"}
    for imp in imports:
        if imp.module in edges and imp.imported in edges and imp.imported != imp.module:
            edges[imp.module].setdefault(imp.imported, imp)

    # Tarjan's strongly connected components (iterative: no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    found = []
    for group in groups:
        members = set(group)
        # one concrete cycle through the group: walk from its first member until a module repeats
        path = [group[0]]
        while True:
            nxt = next(m for m in sorted(edges[path[-1]]) if m in members)
            if nxt in path:
                path = [*path[path.index(nxt) :], nxt]
                break
            path.append(nxt)
        found.append((group, [edges[a][b] for a, b in itertools.pairwise(path)]))
    return found


def cycle_violations(modules: set[str], imports: list[Import]) -> list[str]:
    return [
        "import cycle among tasks/ modules (no tasks/ module may import itself through others): "
        + " -> ".join(f"{imp.path}:{imp.line} imports {imp.imported}" for imp in cycle)
        + (
            f" (the cycle is part of a knot of {len(group)} modules: {', '.join(group)})"
            if len(group) > len(cycle)
            else ""
        )
        for group, cycle in cycles(modules, imports)
    ]


PLATFORM_SPECIFIC = "platform-specific:"


def target_name_comparisons(root: Path, names: Iterable[str]) -> list[str]:
    """Every comparison with a target name in tasks/ and flows/ outside tasks/targets/ that no
    ``# platform-specific:`` comment explains: on the statement's lines up to the comparison, or in the
    comment lines right above the statement."""
    names = set(names)

    def names_a_target(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(names_a_target(e) for e in node.elts)
        return False

    found: list[str] = []
    for file in sorted([*root.glob("tasks/**/*.py"), *root.glob("flows/**/*.py")]):
        rel = str(file.relative_to(root))
        if rel.startswith("tasks/targets/"):
            continue
        text = file.read_text()
        lines = text.splitlines()
        tree = ast.parse(text, filename=rel)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                hit = any(names_a_target(side) for side in (node.left, *node.comparators))
            elif isinstance(node, ast.MatchValue):
                hit = names_a_target(node.value)
            else:
                continue
            if not hit:
                continue
            statement: ast.AST = node
            while not isinstance(statement, ast.stmt | ast.match_case) and statement in parents:
                statement = parents[statement]
            first = (
                getattr(statement, "lineno", node.lineno) if not isinstance(statement, ast.match_case) else node.lineno
            )
            above = first - 1
            while above > 0 and lines[above - 1].lstrip().startswith("#"):
                above -= 1
            if not any(PLATFORM_SPECIFIC in line for line in lines[above : node.end_lineno or node.lineno]):
                found.append(
                    f"{rel}:{node.lineno}: compares with a target name: {ast.unparse(node)!r} "
                    "(a difference between platforms is a Platform method or attribute in tasks/targets/; "
                    f"one platform's own option says why with a '# {PLATFORM_SPECIFIC} ...' comment)"
                )
    return found


def test_platform_sdks_and_prefect_are_imported_only_where_allowed() -> None:
    _, imports = read_imports(ROOT)
    broken = sdk_violations(imports)
    assert not broken, "\n" + "\n".join(broken)


def test_tasks_modules_import_each_other_without_a_cycle() -> None:
    modules, imports = read_imports(ROOT)
    broken = cycle_violations(modules, imports)
    assert not broken, "\n" + "\n".join(broken)


def test_no_code_outside_tasks_targets_branches_on_a_target_name() -> None:
    from tasks.targets.registry import PLATFORMS

    broken = target_name_comparisons(ROOT, PLATFORMS)
    assert not broken, "\n" + "\n".join(broken)


# ---------------------------------------------------------------- the checks themselves catch what they must


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_lazy_sdk_import_outside_its_target_is_named_with_file_line_and_rule(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "tasks/__init__.py": "",
            "tasks/sweep.py": "import os\n\n\ndef find():\n    import docker\n    from botocore.exceptions import X\n",
            "tasks/targets/aws/client.py": "import boto3\n",
        },
    )
    _, imports = read_imports(root)
    assert sdk_violations(imports) == [
        "tasks/sweep.py:5: imports docker (the docker SDK is imported only under tasks/targets/docker/)",
        "tasks/sweep.py:6: imports botocore.exceptions (boto3/botocore are imported only under tasks/targets/aws/)",
    ]


def test_prefect_outside_the_edge_is_named(tmp_path: Path) -> None:
    root = write(tmp_path, {"tasks/locks.py": "from prefect import task\n", "tasks/steps/locks.py": "import prefect\n"})
    _, imports = read_imports(root)
    assert sdk_violations(imports) == [
        "tasks/locks.py:1: imports prefect (prefect is imported only in flows/ and tasks/steps/)"
    ]


@pytest.mark.parametrize(
    "sweep_import",
    ["from tasks import retention", "from tasks.retention import Plan", "from . import retention"],
)
def test_a_cycle_through_a_function_level_import_is_named(tmp_path: Path, sweep_import: str) -> None:
    root = write(
        tmp_path,
        {
            "tasks/__init__.py": "",
            "tasks/retention.py": "from tasks.sweep import Leftover\n",
            "tasks/sweep.py": f"def later():\n    {sweep_import}\n",
            "tasks/errors.py": "",
        },
    )
    modules, imports = read_imports(root)
    assert cycle_violations(modules, imports) == [
        "import cycle among tasks/ modules (no tasks/ module may import itself through others): "
        "tasks/retention.py:1 imports tasks.sweep -> tasks/sweep.py:2 imports tasks.retention"
    ]


def test_a_comparison_with_a_target_name_is_named_unless_it_says_why(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "tasks/build.py": (
                "def pick(target, t):\n"
                '    if target == "aws":\n'
                "        return 1\n"
                '    if t not in ("docker", None):\n'
                "        return 2\n"
                "    match target:\n"
                '        case "gcp":\n'
                "            return 3\n"
                "    # platform-specific: --registry is the docker target option\n"
                '    if target != "docker":\n'
                "        return 4\n"
                "    # platform-specific: the why,\n"
                "    # over two lines\n"
                "    x = (\n"
                '        1 if target == "aws" else 2\n'
                "    )\n"
                '    return target == "local"  # not a target name\n'
            ),
            "tasks/targets/aws/platform.py": 'name = "aws"\nok = name == "aws"\n',
        },
    )
    assert [line.split(": compares")[0] for line in target_name_comparisons(root, ("docker", "aws", "gcp"))] == [
        "tasks/build.py:2",
        "tasks/build.py:4",
        "tasks/build.py:7",
    ]
