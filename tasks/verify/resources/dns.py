"""dns: resolvable, addrs — as the host resolves: ``getent ahosts`` (its resolver, /etc/hosts included) in
the batched script; with ``server`` (``IP`` or ``IP:PORT``) a DNS query over TCP that the host's sshd
connects to the server (a ``direct-tcpip`` channel), so the host needs no dig. A ``TYPE:name`` key
(A, AAAA, CNAME, MX, NS, PTR, SRV, TXT) needs ``server``, as in goss; record data is written as goss
writes it (``MX``: ``"10 mx.example.org."``, ``SRV``: ``"0 5 443 a.example.org."``). ``timeout`` in
milliseconds (0 or unset: 500) applies with ``server``."""

from __future__ import annotations

import ipaddress
import secrets
import struct
import time
from typing import Any

import paramiko

from tasks import ssh
from tasks.verify.facts import Facts, Script, q
from tasks.verify.model import Fact, Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType, key
from tasks.verify.tunnel import Stream, TunnelError, open_tcp

DEFAULT_TIMEOUT_MS = 500
RECORD_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}


def split(target: str) -> tuple[str, str]:
    """("", name) or (record type, name) for a ``TYPE:name`` key."""
    head, sep, rest = target.partition(":")
    if sep and head in RECORD_TYPES:
        return head, rest
    return "", target


def gather(script: Script, items: list[Item]) -> None:
    for index, resource in items:
        if not resource.options.get("server"):
            script.add(key(index, resource), f"getent ahosts -- {q(resource.target)}")


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    section = facts[key(index, resource)]
    addresses: list[str] = []
    for line in section.text.splitlines():
        parts = line.split()
        if parts and parts[0] not in addresses:
            addresses.append(parts[0])
    return {"resolvable": Fact(section.ok and bool(addresses), "getent ahosts"), "addrs": addresses}


def _name(data: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    jumped_end = -1
    for _ in range(128):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if jumped_end < 0:
                jumped_end = offset + 2
            offset = struct.unpack("!H", data[offset : offset + 2])[0] & 0x3FFF
            continue
        offset += 1
        if length == 0:
            break
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels) + ".", jumped_end if jumped_end >= 0 else offset


def query_message(name: str, qtype: int) -> bytes:
    header = struct.pack("!HHHHHH", secrets.randbelow(65536), 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(p)]) + p.encode("idna") for p in name.rstrip(".").split(".") if p) + b"\0"
    return header + question + struct.pack("!HH", qtype, 1)


def parse_answers(data: bytes, qtype: int) -> tuple[int, list[str]]:
    """(rcode, the answers of ``qtype`` written as goss writes them)."""
    _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    offset = 12
    for _ in range(qdcount):
        _, offset = _name(data, offset)
        offset += 4
    found: list[str] = []
    for _ in range(ancount):
        _, offset = _name(data, offset)
        rtype, _, _, length = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + length]
        if rtype == qtype:
            if rtype == 1:
                found.append(str(ipaddress.IPv4Address(rdata)))
            elif rtype == 28:
                found.append(str(ipaddress.IPv6Address(rdata)))
            elif rtype in (2, 5, 12):
                found.append(_name(data, offset)[0])
            elif rtype == 15:
                found.append(f"{struct.unpack('!H', rdata[:2])[0]} {_name(data, offset + 2)[0]}")
            elif rtype == 33:
                priority, weight, port = struct.unpack("!HHH", rdata[:6])
                found.append(f"{priority} {weight} {port} {_name(data, offset + 6)[0]}")
            elif rtype == 16:
                parts, position = [], 0
                while position < len(rdata):
                    size = rdata[position]
                    parts.append(rdata[position + 1 : position + 1 + size].decode("utf-8", "replace"))
                    position += 1 + size
                found.append("".join(parts))
        offset += length
    return flags & 0x000F, found


def _ask(client: paramiko.SSHClient, server: str, port: int, name: str, qtype: int, deadline: float) -> list[str]:
    channel = open_tcp(client, server, port, max(deadline - time.monotonic(), 0.1))
    stream = Stream(channel, deadline)
    try:
        message = query_message(name, qtype)
        stream.send(struct.pack("!H", len(message)) + message)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = stream.recv()
            if not chunk:
                raise TunnelError("the DNS server closed the connection")
            data += chunk
    finally:
        stream.close()
    rcode, answers = parse_answers(data[2:], qtype)
    if rcode not in (0, 3):
        raise TunnelError(f"the DNS server answered rcode {rcode}")
    return answers


def run(client: paramiko.SSHClient, resource: Resource, *, default_timeout: float, sudo: ssh.Sudo) -> dict[str, Any]:
    server_text = str(resource.options["server"])
    server, _, port_text = server_text.rpartition(":") if server_text.count(":") == 1 else (server_text, "", "")
    server = server or server_text
    port = int(port_text) if port_text.isdigit() else 53
    deadline = time.monotonic() + (resource.options.get("timeout") or DEFAULT_TIMEOUT_MS) / 1000
    record, name = split(resource.target)
    try:
        if record:
            answers = _ask(client, server, port, name, RECORD_TYPES[record], deadline)
        else:
            answers = _ask(client, server, port, name, 1, deadline) + _ask(client, server, port, name, 28, deadline)
    except TunnelError as exc:
        return {"resolvable": Fact(False, str(exc)), "addrs": Unavailable(str(exc))}
    return {"resolvable": Fact(bool(answers), f"server {server_text}"), "addrs": answers}


def validate(target: str, options: dict[str, Any], path: str) -> list[tuple[str, str]]:
    record, _ = split(target)
    if record and not options.get("server"):
        return [(path, f"a {record}: record lookup needs server (as in goss), e.g. server: 127.0.0.53")]
    return []


TYPE = ResourceType(
    name="dns",
    checks={"resolvable": "bool", "addrs": "list"},
    options={"resolve": "str", "server": "str", "timeout": "ms"},
    target_option="resolve",
    target_pattern=r"(?:(?:A|AAAA|CNAME|MX|NS|PTR|SRV|TXT):)?[A-Za-z0-9_.:-]+",
    target_hint="a host name, or TYPE:name (A, AAAA, CNAME, MX, NS, PTR, SRV, TXT) with server",
    gather=gather,
    observe=observe,
    run=run,
    channel_option="server",
    validate=validate,
)
