"""package: installed, versions — from dpkg, rpm or apk, whichever the host has, in one query."""

from __future__ import annotations

import re
from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType

_DPKG_FORMAT = "${binary:Package}\\t${Package}\\t${Status}\\t${Version}\\n"
_RPM_FORMAT = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"


def gather(script: Script, items: list[Item]) -> None:
    names = " ".join(q(n) for n in sorted({r.target for _, r in items}))
    script.add(
        "package.db",
        "if command -v dpkg-query >/dev/null 2>&1; then echo dpkg; "
        f"dpkg-query -W -f={q(_DPKG_FORMAT)} {names} 2>/dev/null; "
        "elif command -v rpm >/dev/null 2>&1; then echo rpm; "
        f"rpm -q --nosignature --nohdrchk --nodigest --qf {q(_RPM_FORMAT)} {names} 2>/dev/null; "
        "elif command -v apk >/dev/null 2>&1; then echo apk; apk info -v 2>/dev/null; "
        "else echo none; fi",
    )


def installed_versions(manager: str, lines: list[str], name: str) -> list[str]:
    """Versions of ``name`` installed according to the package manager's output lines."""
    versions: list[str] = []
    for line in lines:
        fields = line.split("\t")
        if manager == "dpkg" and len(fields) == 4:
            if name in fields[:2] and fields[2].split()[-1:] == ["installed"]:
                versions.append(fields[3])
        elif manager == "rpm" and len(fields) == 2:
            if fields[0] == name:
                versions.append(fields[1])
        elif manager == "apk":
            match = re.fullmatch(re.escape(name) + r"-(\d[^-]*-r\d+)", line.strip())
            if match:
                versions.append(match.group(1))
    return list(dict.fromkeys(versions))


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    lines = facts["package.db"].text.split("\n")
    manager = lines[0].strip()
    if manager not in ("dpkg", "rpm", "apk"):
        missing = Unavailable("no dpkg, rpm or apk on the host")
        return {"installed": missing, "versions": missing}
    versions = installed_versions(manager, lines[1:], resource.target)
    return {"installed": bool(versions), "versions": versions}


TYPE = ResourceType(
    name="package",
    checks={"installed": "bool", "versions": "list"},
    options={"name": "str"},
    target_option="name",
    target_pattern=r"[A-Za-z0-9][A-Za-z0-9+._:@~-]*",
    target_hint="letters, digits and + . _ : @ ~ -",
    gather=gather,
    observe=observe,
)
