"""What every resource type module provides: its schema, the shell that gathers its facts, and how
to read those facts back into found values."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.verify.facts import Facts, Script
from tasks.verify.model import Resource

Item = tuple[int, Resource]  # a resource and its position in the spec (section keys use the position)
Gather = Callable[[Script, list[Item]], None]
Observe = Callable[[Resource, int, Facts], dict[str, Any]]
# A check made on its own SSH channel (command, http, addr): (client, resource, default_timeout=, sudo=).
Run = Callable[..., dict[str, Any]]
# Checks across attributes once each is valid, (target, options, path): (path, message) per problem.
Validate = Callable[[str, dict[str, Any], str], list[tuple[str, str]]]


@dataclass(frozen=True)
class ResourceType:
    """``checks`` maps checked attributes to matcher kinds; ``options`` are goss's other attributes."""

    name: str
    checks: dict[str, str]
    options: dict[str, str] = field(default_factory=dict)
    target_option: str = ""
    target_pattern: str = r".+"
    target_hint: str = ""
    unsupported: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # old goss names, e.g. contains → contents
    gather: Gather | None = None
    observe: Observe | None = None
    validate: Validate | None = None
    run: Run | None = None
    channel_option: str = ""  # with gather and run: run (own channel) only for resources setting this option

    def on_channel(self, resource: Resource) -> bool:
        """Checked on its own SSH channel (``run``) rather than from the batched script (``gather``)."""
        if self.run is None:
            return False
        return not self.channel_option or bool(resource.options.get(self.channel_option))

    def check_target(self, target: str) -> str:
        """An error message when ``target`` is not a plausible name for this type, else ``""``."""
        if "\n" in target or "\0" in target or not re.fullmatch(self.target_pattern, target):
            return f"bad {self.name} name {target!r}" + (f" ({self.target_hint})" if self.target_hint else "")
        return ""


def key(resource_index: int, resource: Resource, part: str = "") -> str:
    return f"{resource.type}.{resource_index}" + (f".{part}" if part else "")


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0][:200]
