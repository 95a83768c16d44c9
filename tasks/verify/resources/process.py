"""process: running — by executable name (``/proc/PID/comm``, 15 characters at most), as goss."""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts, Script
from tasks.verify.model import Fact, Resource
from tasks.verify.resources.base import Item, ResourceType

COMM_LENGTH = 15


def gather(script: Script, items: list[Item]) -> None:
    script.add("process.comm", "cat /proc/[0-9]*/comm 2>/dev/null; true")


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    count = facts["process.comm"].text.splitlines().count(resource.target[:COMM_LENGTH])
    return {"running": Fact(count > 0, f"{count} running" if count else "")}


TYPE = ResourceType(
    name="process",
    checks={"running": "bool"},
    options={"comm": "str"},
    target_option="comm",
    target_pattern=r"[^/]+",
    target_hint="an executable name, no slashes",
    gather=gather,
    observe=observe,
)
