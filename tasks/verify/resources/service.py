"""service: enabled, running, runlevels — systemd when it is the init, else OpenRC, else SysV init scripts.

As goss: systemd's ``is-enabled`` exit status (enabled, static, alias, ... count as enabled) and
``is-active``; OpenRC's runlevel links and ``rc-service status``; SysV ``S??name`` links and ``service status``.
``runlevels`` lists the OpenRC runlevels (``/etc/runlevels/*/name``) or SysV ones (``/etc/rcN.d/S??name``) the
service starts in; under systemd it is empty, as in goss (runlevels are an OpenRC/SysV/upstart notion).
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


def _runlevels(name: str) -> str:
    n = q(name)
    return (
        "case $bk_init in "
        "systemd) ;; "  # as goss: runlevels come from OpenRC and SysV init only
        f'openrc) for bk_d in /etc/runlevels/*/; do [ -e "$bk_d"{n} ] && basename "$bk_d"; done;; '
        f'*) for bk_f in /etc/rc?.d/S[0-9][0-9]{n}; do [ -e "$bk_f" ] || continue; '
        'bk_f=${bk_f%/*}; bk_f=${bk_f#/etc/rc}; echo "${bk_f%.d}"; done;; esac; true'
    )


def gather(script: Script, items: list[Item]) -> None:
    script.add("service.init", _DETECT, prelude=True)
    for index, resource in items:
        lane = key(index, resource)  # systemctl waits on systemd: let every service overlap the others
        if "enabled" in resource.checks:
            script.add(key(index, resource, "enabled"), _enabled(resource.target), lane=lane)
        if "running" in resource.checks:
            script.add(key(index, resource, "running"), _running(resource.target), lane=lane)
        if "runlevels" in resource.checks:
            script.add(key(index, resource, "runlevels"), _runlevels(resource.target), lane=lane)


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    init = facts["service.init"].text.strip()
    found: dict[str, Any] = {}
    for attribute in ("enabled", "running"):
        section = facts[key(index, resource, attribute)]
        note = first_line(section.text) if init == "systemd" else init
        found[attribute] = Fact(section.ok, note)
    levels = [line for line in facts[key(index, resource, "runlevels")].text.split("\n") if line.strip()]
    found["runlevels"] = Fact(sorted(levels), init)
    return found


TYPE = ResourceType(
    name="service",
    checks={"enabled": "bool", "running": "bool", "runlevels": "list"},
    options={"name": "str"},
    target_option="name",
    target_pattern=r"[A-Za-z0-9_][A-Za-z0-9@._:\\-]*",
    target_hint="a unit or init script name",
    gather=gather,
    observe=observe,
)
