"""kernel-param: value — read from /proc/sys (``net.ipv4.ip_forward`` is /proc/sys/net/ipv4/ip_forward)."""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key


def proc_path(name: str) -> str:
    """sysctl's convention: dots separate levels, a slash stands for a dot inside a level."""
    return "/proc/sys/" + name.translate(str.maketrans("./", "/."))


def gather(script: Script, items: list[Item]) -> None:
    for index, resource in items:
        script.add(key(index, resource), f"cat -- {q(proc_path(resource.target))} 2>&1")


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    section = facts[key(index, resource)]
    if not section.ok:
        reason = section.text.strip().rsplit(": ", 1)[-1]  # "cat: /proc/sys/...: <reason>"
        if not reason or "No such file" in reason:
            reason = "no such kernel parameter"
        return {"value": Unavailable(reason)}
    return {"value": section.text.rstrip("\n")}


TYPE = ResourceType(
    name="kernel-param",
    checks={"value": "str"},
    options={"name": "str"},
    target_option="name",
    target_pattern=r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_./:-]*",
    target_hint="a sysctl key like net.ipv4.ip_forward",
    gather=gather,
    observe=observe,
)
