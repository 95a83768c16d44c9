"""port: listening, ip — read from /proc/net/{tcp,tcp6,udp,udp6}, so no ss/netstat is needed.

As goss, ``tcp:80`` means an IPv4 socket (/proc/net/tcp) and ``tcp6:80`` an IPv6 one: a dual-stack
``[::]:80`` listener is ``tcp6``. A failed ``tcp`` check says when the port is open on ``tcp6`` instead.
The kernel prints addresses in host byte order; little-endian hosts (x86-64, arm64) are assumed.
"""

from __future__ import annotations

import socket
from typing import Any

from tasks.verify.facts import Facts, Script
from tasks.verify.model import Fact, Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType

PROTOCOLS = ("tcp", "tcp6", "udp", "udp6")
TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"


def gather(script: Script, items: list[Item]) -> None:
    used = {split(r.target)[0] for _, r in items}
    needed = used | {f"{p}6" for p in used if not p.endswith("6")}  # the v6 table explains a v4 miss
    for proto in PROTOCOLS:
        if proto in needed:
            script.add(f"port.{proto}", f"cat /proc/net/{proto} 2>/dev/null", lane=f"port.{proto}")


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listeners(table: str, proto: str) -> dict[int, list[str]]:
    """Port → local addresses listening on it, from one /proc/net table."""
    found: dict[int, list[str]] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1]:
            continue
        local, remote, state = fields[1], fields[2], fields[3]
        address, _, port_hex = local.rpartition(":")
        if proto.startswith("tcp") and state != TCP_LISTEN:
            continue
        if proto.startswith("udp") and (state != UDP_UNCONNECTED or remote.rpartition(":")[2] != "0000"):
            continue
        try:
            ip = _address(address)
        except (ValueError, OSError):
            continue
        found.setdefault(int(port_hex, 16), [])
        if ip not in found[int(port_hex, 16)]:
            found[int(port_hex, 16)].append(ip)
    return found


def split(target: str) -> tuple[str, int]:
    proto, _, number = target.partition(":")
    return proto, int(number)


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    proto, number = split(resource.target)
    section = facts[f"port.{proto}"]
    if not section.ok:
        missing = Unavailable(f"cannot read /proc/net/{proto}")
        return {"listening": missing, "ip": missing}
    ips = listeners(section.text, proto).get(number, [])
    note = ""
    if not ips and not proto.endswith("6"):
        other = listeners(facts[f"port.{proto}6"].text, f"{proto}6").get(number, [])
        if other:
            note = f"listening on {proto}6 {', '.join(other)}; write {proto}6:{number}"
    return {"listening": Fact(bool(ips), note), "ip": sorted(ips)}


TYPE = ResourceType(
    name="port",
    checks={"listening": "bool", "ip": "list"},
    options={"port": "str"},
    target_option="port",
    target_pattern=r"(tcp|tcp6|udp|udp6):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])",
    target_hint='like "tcp:80", "tcp6:22", "udp:53" or "udp6:53"',
    gather=gather,
    observe=observe,
)
