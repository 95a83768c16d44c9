"""package: installed, versions — read from the package inventory section (dpkg, rpm or apk).

Every verification lists the host's installed packages once (``tasks/verify/inventory.py``: the same
query is kept as the image's inventory), so package checks of any number cost no extra command.
"""

from __future__ import annotations

from typing import Any

from tasks.verify import inventory
from tasks.verify.facts import Facts
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import ResourceType


def installed_versions(manager: str, lines: list[str], name: str) -> list[str]:
    """Versions of ``name`` installed according to the inventory section's output lines."""
    found = inventory.parse("\n".join([manager, *lines]))
    return found.versions(name) if found else []


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    found = inventory.parse(facts[inventory.SECTION].text)
    if found is None:
        missing = Unavailable("no dpkg, rpm or apk on the host")
        return {"installed": missing, "versions": missing}
    versions = found.versions(resource.target)
    return {"installed": bool(versions), "versions": versions}


TYPE = ResourceType(
    name="package",
    checks={"installed": "bool", "versions": "list"},
    options={"name": "str"},
    target_option="name",
    target_pattern=r"[A-Za-z0-9][A-Za-z0-9+._:@~-]*",
    target_hint="letters, digits and + . _ : @ ~ -",
    gather=None,  # the inventory section, always gathered, holds what package checks need
    observe=observe,
)
