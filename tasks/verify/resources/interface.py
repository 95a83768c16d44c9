"""interface: exists, addrs, mtu — ``/sys/class/net/NAME``; addresses (``ADDR/PREFIX``, as goss lists them)
from ``ip -o addr`` when iproute2 is there, else IPv6 from ``/proc/net/if_inet6`` and IPv4 through
python3's SIOCGIFADDR/SIOCGIFNETMASK ioctls (the primary address) when python3 is there."""

from __future__ import annotations

import ipaddress
from typing import Any

from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key

_IPV4_FALLBACK = (
    "import fcntl,socket,struct,sys\n"
    "n=sys.argv[1].encode()[:15]\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "try:\n"
    " a=socket.inet_ntoa(fcntl.ioctl(s.fileno(),0x8915,struct.pack('256s',n))[20:24])\n"
    " m=socket.inet_ntoa(fcntl.ioctl(s.fileno(),0x891b,struct.pack('256s',n))[20:24])\n"
    " print('v4',a,m)\n"
    "except OSError: pass\n"
)


def _addresses(name: str) -> str:
    n = q(name)
    return (
        "if command -v ip >/dev/null 2>&1; then "
        f'ip -o addr show dev {n} 2>/dev/null | while read -r _ _ fam addr _; do echo "ip $addr"; done; '
        "else "
        f"grep -E ' {name}$' /proc/net/if_inet6 2>/dev/null | while read -r a _ p _ _ _; do echo \"v6 $a $p\"; done; "
        f"command -v python3 >/dev/null 2>&1 && python3 -c {q(_IPV4_FALLBACK)} {n}; "
        "fi; true"
    )


def gather(script: Script, items: list[Item]) -> None:
    for index, resource in items:
        script.add(key(index, resource, "mtu"), f"cat /sys/class/net/{q(resource.target)}/mtu 2>&1")
        if "addrs" in resource.checks:
            script.add(key(index, resource, "addrs"), _addresses(resource.target))


def parse_addresses(text: str) -> list[str]:
    found: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "ip" and len(parts) == 2:
            found.append(parts[1])
        elif parts[0] == "v6" and len(parts) == 3 and len(parts[1]) == 32:
            address = ipaddress.IPv6Address(bytes.fromhex(parts[1]))
            found.append(f"{address}/{int(parts[2], 16)}")
        elif parts[0] == "v4" and len(parts) == 3:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{parts[2]}").prefixlen
            found.append(f"{parts[1]}/{prefix}")
    v4 = [a for a in found if ":" not in a]
    return v4 + [a for a in found if ":" in a]


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    mtu = facts[key(index, resource, "mtu")]
    if not mtu.ok:
        missing = Unavailable("no such interface")
        return {"exists": False, "mtu": missing, "addrs": missing}
    text = mtu.text.strip()
    return {
        "exists": True,
        "mtu": int(text) if text.isdigit() else Unavailable(f"unreadable mtu {text[:40]!r}"),
        "addrs": parse_addresses(facts[key(index, resource, "addrs")].text),
    }


TYPE = ResourceType(
    name="interface",
    checks={"exists": "bool", "addrs": "list", "mtu": "int"},
    options={"name": "str"},
    target_option="name",
    target_pattern=r"[A-Za-z0-9_.:@-]{1,15}",
    target_hint="a network interface name like eth0 or lo",
    gather=gather,
    observe=observe,
)
