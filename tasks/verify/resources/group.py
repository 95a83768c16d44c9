"""group: exists, gid — from the group database."""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts, Script
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key
from tasks.verify.resources.user import NAME_PATTERN, entry, lookup


def gather(script: Script, items: list[Item]) -> None:
    for index, resource in items:
        script.add(key(index, resource), lookup("group", resource.target))


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    fields = entry(facts[key(index, resource)].text, resource.target, 3)
    if fields is None:
        return {"exists": False, "gid": Unavailable("no such group")}
    return {"exists": True, "gid": int(fields[2])}


TYPE = ResourceType(
    name="group",
    checks={"exists": "bool", "gid": "int"},
    options={"groupname": "str"},
    target_option="groupname",
    target_pattern=NAME_PATTERN,
    target_hint="a group name",
    gather=gather,
    observe=observe,
)
