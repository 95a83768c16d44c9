"""addr: reachable — ``tcp://host:port`` is reachable when the *host* can connect to it (an SSH
``direct-tcpip`` channel: the host's sshd connects); ``udp://host:port`` when the host resolves the name,
as goss's UDP dial (which sends nothing) does. ``timeout`` in milliseconds (0 or unset: 500, goss's)."""

from __future__ import annotations

import re
from typing import Any

import paramiko

from tasks import ssh
from tasks.verify.facts import q
from tasks.verify.model import Fact, Resource
from tasks.verify.resources.base import ResourceType
from tasks.verify.tunnel import TunnelError, open_tcp

DEFAULT_TIMEOUT_MS = 500
_ADDRESS = re.compile(r"(tcp|udp)://(\[[^\]]+\]|[^:/\s]+):(\d{1,5})")


def split(address: str) -> tuple[str, str, int]:
    match = _ADDRESS.fullmatch(address)
    if not match:
        raise ValueError(address)
    return match.group(1), match.group(2).strip("[]"), int(match.group(3))


def run(client: paramiko.SSHClient, resource: Resource, *, default_timeout: float, sudo: ssh.Sudo) -> dict[str, Any]:
    proto, host, port = split(resource.target)
    timeout = (resource.options.get("timeout") or DEFAULT_TIMEOUT_MS) / 1000
    if proto == "udp":
        result = ssh.run(client, f"getent hosts {q(host)} >/dev/null", max(timeout, 5.0))
        return {"reachable": Fact(result.exit_status == 0, "" if result.exit_status == 0 else "does not resolve")}
    try:
        open_tcp(client, host, port, max(timeout, 0.2)).close()
    except TunnelError as exc:
        return {"reachable": Fact(False, str(exc))}
    return {"reachable": True}


TYPE = ResourceType(
    name="addr",
    checks={"reachable": "bool"},
    options={"address": "str", "timeout": "ms"},
    unsupported={"local-address": "the host picks its own source address"},
    target_option="address",
    target_pattern=_ADDRESS.pattern,
    target_hint='like "tcp://10.0.0.5:443" or "udp://ntp.example.org:123"',
    run=run,
)
