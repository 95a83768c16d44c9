"""matching: matches — ``content`` (any value, usually from a template) checked against a matcher, with no
host access, as goss does."""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts
from tasks.verify.model import Resource
from tasks.verify.resources.base import ResourceType


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    return {"matches": resource.options.get("content")}


TYPE = ResourceType(
    name="matching",
    checks={"matches": "any"},
    options={"content": "any"},
    target_pattern=r"(?s).+",
    target_hint="a name for the check",
    observe=observe,
)
