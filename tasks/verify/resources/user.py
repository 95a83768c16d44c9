"""user: exists, uid, gid, groups, home, shell — from the passwd database and ``id -Gn``."""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key

NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?"


def lookup(database: str, name: str) -> str:
    """The ``getent`` line for ``name``, falling back to /etc/passwd or /etc/group."""
    n = q(name)
    return f"getent {database} {n} 2>/dev/null || awk -F: -v n={n} '$1 == n' /etc/{database}"


def gather(script: Script, items: list[Item]) -> None:
    for index, resource in items:
        script.add(key(index, resource, "passwd"), lookup("passwd", resource.target))
        if "groups" in resource.checks:
            script.add(key(index, resource, "groups"), f"id -Gn {q(resource.target)} 2>&1")


def entry(text: str, name: str, width: int) -> list[str] | None:
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= width and fields[0] == name:
            return fields
    return None


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    fields = entry(facts[key(index, resource, "passwd")].text, resource.target, 7)
    if fields is None:
        missing = Unavailable("no such user")
        return {"exists": False, "uid": missing, "gid": missing, "groups": missing, "home": missing, "shell": missing}
    groups_section = facts[key(index, resource, "groups")]
    groups: Any = groups_section.text.split() if groups_section.ok else Unavailable("id -Gn failed")
    return {
        "exists": True,
        "uid": int(fields[2]),
        "gid": int(fields[3]),
        "groups": groups,
        "home": fields[5],
        "shell": fields[6],
    }


TYPE = ResourceType(
    name="user",
    checks={"exists": "bool", "uid": "int", "gid": "int", "groups": "list", "home": "str", "shell": "str"},
    options={"username": "str"},
    target_option="username",
    target_pattern=NAME_PATTERN,
    target_hint="a login name",
    gather=gather,
    observe=observe,
)
