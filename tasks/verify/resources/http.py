"""http: status, body, headers — the request is made by the host, through the SSH connection itself (a
``direct-tcpip`` channel, :mod:`tasks.verify.tunnel`), so ``http://127.0.0.1:8080/`` is the host's own
loopback and the host needs no curl.

As goss: redirects are followed (at most 10) unless ``no-follow-redirects``; ``timeout`` in milliseconds
(0 or unset: 5000); ``allow-insecure`` skips certificate checks; ``request-headers`` are ``"Name: value"``;
``method`` and ``request-body``; ``username``/``password`` for basic auth. ``body`` and ``headers`` are
checked line by line like file contents (headers as ``Name: value`` lines, names canonical as Go writes
them); the body itself is never copied into reports.
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import paramiko

from tasks import ssh
from tasks.verify.model import Fact, Resource, Unavailable
from tasks.verify.resources.base import ResourceType
from tasks.verify.tunnel import Stream, TunnelError, open_tcp

DEFAULT_TIMEOUT_MS = 5000
MAX_REDIRECTS = 10
MAX_BODY = 16 * 1024 * 1024


def canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: content-type → Content-Type."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


def _read_response(stream: Stream, head_only: bool) -> Response:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv()
        if not chunk:
            raise TunnelError("the server closed the connection before a full response")
        data += chunk
        if len(data) > 1024 * 1024:
            raise TunnelError("response headers too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise TunnelError(f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((canonical(name.strip()), value.strip()))
    response = Response(status, headers, b"")
    if head_only or status in (204, 304) or 100 <= status < 200:
        return response
    body = rest
    if "chunked" in response.header("Transfer-Encoding").lower():
        response.body = _dechunk(stream, body)
        return response
    length = response.header("Content-Length")
    if length.isdigit():
        while len(body) < int(length):
            chunk = stream.recv()
            if not chunk:
                break
            body += chunk
        response.body = body[: int(length)]
        return response
    while len(body) <= MAX_BODY:
        chunk = stream.recv()
        if not chunk:
            break
        body += chunk
    response.body = body
    return response


def _dechunk(stream: Stream, data: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in data:
            more = stream.recv()
            if not more:
                return body
            data += more
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return body
        while len(data) < size + 2:
            more = stream.recv()
            if not more:
                return body + data[:size]
            data += more
        body += data[:size]
        data = data[size + 2 :]
        if len(body) > MAX_BODY:
            return body


def request(
    client: paramiko.SSHClient,
    url: str,
    *,
    method: str = "GET",
    headers: list[str] | None = None,
    body: str = "",
    timeout: float = DEFAULT_TIMEOUT_MS / 1000,
    verify_tls: bool = True,
    follow_redirects: bool = True,
    basic_auth: tuple[str, str] | None = None,
) -> Response:
    """One HTTP exchange (and its redirects) made from the host; raises TunnelError."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TunnelError(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TunnelError("timed out")
        channel = open_tcp(client, parts.hostname, port, left)
        stream = Stream(channel, deadline)
        try:
            if parts.scheme == "https":
                stream.start_tls(parts.hostname, verify_tls)
            host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            if ":" in parts.hostname and parts.port is None:
                host = f"[{parts.hostname}]"
            fields: dict[str, str] = {"Host": host, "User-Agent": "bakery-verify (goss-compatible)"}
            for line in headers or []:
                name, _, value = line.partition(":")
                fields[canonical(name.strip())] = value.strip()
            if basic_auth:
                token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
                fields["Authorization"] = f"Basic {token}"
            payload = body.encode()
            if payload or method in ("POST", "PUT", "PATCH"):
                fields["Content-Length"] = str(len(payload))
            fields["Connection"] = "close"
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items()), "", ""]
            stream.send("\r\n".join(lines).encode("iso-8859-1") + payload)
            response = _read_response(stream, method == "HEAD")
        finally:
            stream.close()
        location = response.header("Location")
        if follow_redirects and response.status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", ""
            continue
        return response
    raise TunnelError(f"stopped after {MAX_REDIRECTS} redirects")


def run(client: paramiko.SSHClient, resource: Resource, *, default_timeout: float, sudo: ssh.Sudo) -> dict[str, Any]:
    options = resource.options
    timeout = (options.get("timeout") or DEFAULT_TIMEOUT_MS) / 1000
    auth = (options.get("username", ""), options.get("password", ""))
    try:
        response = request(
            client,
            resource.target,
            method=options.get("method", "GET").upper(),
            headers=options.get("request-headers"),
            body=options.get("request-body", ""),
            timeout=timeout,
            verify_tls=not options.get("allow-insecure", False),
            follow_redirects=not options.get("no-follow-redirects", False),
            basic_auth=auth if any(auth) else None,
        )
    except TunnelError as exc:
        return dict.fromkeys(TYPE.checks, Unavailable(str(exc)))
    text = response.body.decode("utf-8", "replace")
    header_lines = "\n".join(f"{k}: {v}" for k, v in response.headers)
    return {
        "status": response.status,
        "body": Fact(text, shown=f"<{len(response.body)} bytes>"),
        "headers": Fact(header_lines, shown=f"<{len(response.headers)} headers>"),
    }


TYPE = ResourceType(
    name="http",
    checks={"status": "int", "body": "text", "headers": "text"},
    options={
        "url": "str",
        "method": "str",
        "request-headers": "strlist",
        "request-body": "str",
        "timeout": "ms",
        "allow-insecure": "bool",
        "no-follow-redirects": "bool",
        "username": "str",
        "password": "str",
        "retry_count": "count",
        "retry_delay": "delay",
    },
    unsupported={
        "ca-file": "client certificates and custom CAs are not supported (the host's own CA store is not used)",
        "cert-file": "client certificates are not supported",
        "key-file": "client certificates are not supported",
        "proxy": "requests go from the host directly, not through a proxy",
    },
    target_option="url",
    target_pattern=r"https?://[^\s/]+.*",
    target_hint="an http:// or https:// URL",
    run=run,
)
