"""file: exists, mode, size, owner, group, uid, gid, filetype, linked-to, contents, md5, sha256, sha512.

As goss: the file itself is examined (a symlink is a ``symlink`` with its own mode); contents and
checksums follow the link. Contents are fetched only when a ``contents`` check asks for them.
"""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Fact, Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key

STAT_FORMAT = "%F|%a|%u|%g|%U|%G|%s"
FILETYPES = {
    "regular file": "file",
    "regular empty file": "file",
    "directory": "directory",
    "symbolic link": "symlink",
    "fifo": "pipe",
    "socket": "socket",
    "character special file": "character-device",
    "block special file": "block-device",
}
STAT_ATTRIBUTES = ("exists", "mode", "size", "owner", "group", "uid", "gid", "filetype")
DIGESTS = {"md5": "md5sum", "sha256": "sha256sum", "sha512": "sha512sum"}


def gather(script: Script, items: list[Item]) -> None:
    for index, resource in items:
        path = q(resource.target)
        script.add(key(index, resource, "stat"), f"stat -c {q(STAT_FORMAT)} -- {path} 2>&1")
        if "linked-to" in resource.checks:
            script.add(key(index, resource, "link"), f"readlink -- {path} 2>&1")
        if "contents" in resource.checks:
            script.add(key(index, resource, "contents"), f"cat -- {path} 2>/dev/null")
        for attribute, tool in DIGESTS.items():
            if attribute in resource.checks:
                script.add(key(index, resource, attribute), f"{tool} < {path} 2>&1")


def _stat(text: str) -> dict[str, Any]:
    kind, mode, uid, gid, owner, group, size = text.rstrip("\n").split("|")
    return {
        "exists": True,
        "filetype": FILETYPES.get(kind, kind),
        "mode": f"{int(mode, 8):04o}",
        "uid": int(uid),
        "gid": int(gid),
        "owner": owner,
        "group": group,
        "size": int(size),
    }


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    stat = facts[key(index, resource, "stat")]
    if stat.ok:
        found = _stat(stat.text)
    else:
        reason = stat.text.strip().rsplit(": ", 1)[-1] or "stat failed"  # "stat: cannot statx 'p': <reason>"
        if "No such file" in reason or "Not a directory" in reason:
            found = {"exists": False} | {a: Unavailable("no such file") for a in STAT_ATTRIBUTES[1:]}
        else:
            if "Permission denied" in reason:
                reason = "permission denied" + _as_user(facts)
            found = {a: Unavailable(reason) for a in STAT_ATTRIBUTES}
    if "linked-to" in resource.checks:
        link = facts[key(index, resource, "link")]
        found["linked-to"] = link.text.rstrip("\n") if link.ok else Unavailable("not a symlink")
    if "contents" in resource.checks:
        contents = facts[key(index, resource, "contents")]
        found["contents"] = _summarised(contents.text) if contents.ok else _unreadable(found, facts)
    for attribute in DIGESTS:
        if attribute in resource.checks:
            digest = facts[key(index, resource, attribute)]
            found[attribute] = (
                digest.text.split()[0] if digest.ok and digest.text.strip() else _unreadable(found, facts)
            )
    return found


def _summarised(text: str) -> Fact:
    """The contents for matching; in reports only their size (a file may hold secrets)."""
    lines = text.count("\n")
    return Fact(text, shown=f"<{lines} lines, {len(text.encode())} bytes>")


def _unreadable(found: dict[str, Any], facts: Facts) -> Unavailable:
    if found.get("exists") is False:
        return Unavailable("no such file")
    if found.get("filetype") == "directory":
        return Unavailable("a directory")
    return Unavailable(f"unreadable{_as_user(facts)}")


def _as_user(facts: Facts) -> str:
    return f" as uid {facts.uid}" if facts.uid and facts.uid != "0" else ""


TYPE = ResourceType(
    name="file",
    checks={
        "exists": "bool",
        "mode": "mode",
        "size": "int",
        "owner": "str",
        "group": "str",
        "uid": "int",
        "gid": "int",
        "filetype": "str",
        "linked-to": "str",
        "contents": "text",
        "md5": "str",
        "sha256": "str",
        "sha512": "str",
    },
    options={"path": "str"},
    aliases={"contains": "contents"},
    target_option="path",
    target_pattern=r"/.*",
    target_hint="an absolute path",
    gather=gather,
    observe=observe,
)
