"""mount: exists, opts, vfs-opts, source, filesystem, usage — from ``/proc/self/mountinfo`` (the first entry
for the mount point, as goss) and ``stat -f`` (usage: the percentage of blocks not free, rounded, as
goss's statfs). ``opts`` are the per-mount options, ``vfs-opts`` the filesystem's (superblock) ones."""

from __future__ import annotations

import re
from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key

SECTION = "mount.info"


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 3:
            continue
        entries.append(
            {
                "mountpoint": _unescape(fields[4]),
                "opts": fields[5].split(","),
                "filesystem": fields[dash + 1],
                "source": _unescape(fields[dash + 2]),
                "vfs-opts": fields[dash + 3].split(",") if len(fields) > dash + 3 else [],
            }
        )
    return entries


def gather(script: Script, items: list[Item]) -> None:
    script.add(SECTION, "cat /proc/self/mountinfo")
    for index, resource in items:
        if "usage" in resource.checks:
            script.add(key(index, resource, "usage"), f"stat -f -c '%b %f' -- {q(resource.target)} 2>&1")


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    section = facts[SECTION]
    if not section.ok:
        return dict.fromkeys(TYPE.checks, Unavailable("cannot read /proc/self/mountinfo"))
    entry = next((e for e in parse_mountinfo(section.text) if e["mountpoint"] == resource.target), None)
    if entry is None:
        missing = Unavailable("not a mount point")
        return {"exists": False, **dict.fromkeys(("opts", "vfs-opts", "source", "filesystem", "usage"), missing)}
    found: dict[str, Any] = {"exists": True, **{k: entry[k] for k in ("opts", "vfs-opts", "source", "filesystem")}}
    usage = facts[key(index, resource, "usage")]
    numbers = usage.text.split()
    if usage.ok and len(numbers) == 2 and all(n.isdigit() for n in numbers) and int(numbers[0]) > 0:
        blocks, free = int(numbers[0]), int(numbers[1])
        found["usage"] = round((1 - free / blocks) * 100)
    else:
        found["usage"] = Unavailable(f"statfs failed: {usage.text.strip()[:100]}")
    return found


TYPE = ResourceType(
    name="mount",
    checks={
        "exists": "bool",
        "opts": "list",
        "vfs-opts": "list",
        "source": "str",
        "filesystem": "str",
        "usage": "int",
    },
    options={"mountpoint": "str", "timeout": "ms"},  # timeout: accepted; /proc and statfs do not block
    target_option="mountpoint",
    target_pattern=r"/.*",
    target_hint="an absolute path",
    gather=gather,
    observe=observe,
)
