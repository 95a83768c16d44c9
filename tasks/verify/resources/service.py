"""service: enabled, running — systemd when it is the init, else OpenRC, else SysV init scripts.

As goss: systemd's ``is-enabled`` exit status (enabled, static, alias, ... count as enabled) and
``is-active``; OpenRC's runlevel links and ``rc-service status``; SysV ``S??name`` links and ``service status``.
"""

from __future__ import annotations

from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Fact, Resource
from tasks.verify.resources.base import Item, ResourceType, first_line, key

_DETECT = (
    "if [ -d /run/systemd/system ]; then bk_init=systemd; "
    "elif command -v rc-service >/dev/null 2>&1; then bk_init=openrc; else bk_init=sysv; fi; echo $bk_init"
)


def _enabled(name: str) -> str:
    n = q(name)
    return (
        "case $bk_init in "
        f"systemd) systemctl is-enabled -- {n} 2>&1;; "
        f"openrc) ls /etc/runlevels/*/{n} 2>&1;; "
        f"*) ls /etc/rc[S2345].d/S[0-9][0-9]{n} 2>&1;; esac"
    )


def _running(name: str) -> str:
    n = q(name)
    return (
        "case $bk_init in "
        f"systemd) systemctl is-active -- {n} 2>&1;; "
        f"openrc) rc-service {n} status 2>&1;; "
        f"*) if command -v service >/dev/null 2>&1; then service {n} status 2>&1; "
        f"else /etc/init.d/{n} status 2>&1; fi;; esac"
    )


def gather(script: Script, items: list[Item]) -> None:
    script.add("service.init", _DETECT, prelude=True)
    for index, resource in items:
        lane = key(index, resource)  # systemctl waits on systemd: let every service overlap the others
        if "enabled" in resource.checks:
            script.add(key(index, resource, "enabled"), _enabled(resource.target), lane=lane)
        if "running" in resource.checks:
            script.add(key(index, resource, "running"), _running(resource.target), lane=lane)


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    init = facts["service.init"].text.strip()
    found: dict[str, Any] = {}
    for attribute in ("enabled", "running"):
        section = facts[key(index, resource, attribute)]
        note = first_line(section.text) if init == "systemd" else init
        found[attribute] = Fact(section.ok, note)
    return found


TYPE = ResourceType(
    name="service",
    checks={"enabled": "bool", "running": "bool"},
    options={"name": "str"},
    target_option="name",
    target_pattern=r"[A-Za-z0-9_][A-Za-z0-9@._:\\-]*",
    target_hint="a unit or init script name",
    unsupported={"runlevels": "runlevels are not checked"},
    gather=gather,
    observe=observe,
)
