"""SSH with a pinned host key, a bounded wait until the host answers, and commands with a hard timeout.

The only keys a client knows are the pinned ones, and ``RejectPolicy`` refuses every other key: a host
whose key is unknown or different is never talked to. No system known_hosts, agent or
``~/.ssh`` key is ever consulted.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import logging
import os
import select
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.pkey import UnknownKeyType

from tasks.errors import JobFailed, UsageError
from tasks.targets.base import SshEndpoint

# While a host boots, paramiko logs each failed banner read as an ERROR with a traceback; connect()
# retries those and reports the outcome itself, in one line.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)

FIRST_DELAY = 0.2
MAX_DELAY = 2.0
KILL_GRACE = 2.0  # seconds between the remote TERM and KILL of a command past its timeout


@dataclass(frozen=True)
class CommandResult:
    """What a remote command left behind; ``timed_out`` means it was killed at its deadline."""

    exit_status: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    duration: float = 0.0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------- keys


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint(key)}"


def host_key_from_text(text: str) -> paramiko.PKey:
    """A public key from a ``"TYPE BASE64 [comment]"`` line (an ``*.pub`` file or a known_hosts tail)."""
    fields = text.split()
    if len(fields) < 2:
        raise UsageError(f"host key {text[:40]!r}: expected 'TYPE BASE64', e.g. 'ssh-ed25519 AAAA...'")
    key_type, blob = fields[0], fields[1]
    try:
        data = base64.b64decode(blob, validate=True)
        key = paramiko.PKey.from_type_string(key_type, data)
    except (binascii.Error, ValueError, paramiko.SSHException, UnknownKeyType) as exc:
        raise UsageError(f"host key {key_type} {blob[:16]}...: not a valid public key ({exc})") from exc
    if key.get_name() != key_type and not key_type.startswith(key.get_name()):
        raise UsageError(f"host key: type {key_type} does not match the key data ({key.get_name()})")
    return key


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def host_keys_from_known_hosts(path: str | os.PathLike[str], host: str, port: int) -> list[paramiko.PKey]:
    """The keys a known_hosts file lists for ``host:port`` (hashed entries included; ``@cert-authority``
    lines are not pins and are passed over, a key under ``@revoked`` is never returned).

    Any line that cannot be read is a UsageError naming the file and line, never a traceback.
    """
    from tasks.inputs import read_text_file

    where = f"--known-hosts {os.fspath(path)}"
    text = read_text_file(path, where)
    name = known_hosts_name(host, port)
    found: list[paramiko.PKey] = []
    revoked: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            if marker not in ("@cert-authority", "@revoked"):
                raise UsageError(f"{where}:{number}: unknown marker {marker!r}")
        if len(line.split()) < 3:
            raise UsageError(f"{where}:{number}: not a known_hosts line (expected HOSTS TYPE KEY)")
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
            matches = entry is not None and any(_host_matches(pattern, name) for pattern in entry.hostnames)
        except Exception as exc:  # paramiko raises a mix of SSHException, binascii.Error, ValueError...
            raise UsageError(f"{where}:{number}: not a known_hosts line ({type(exc).__name__}: {exc})") from None
        if entry is None:  # a key type paramiko does not know: not one it could pin either
            continue
        if not matches or marker == "@cert-authority":
            continue
        if marker == "@revoked":
            revoked.add(entry.key.get_base64())
        else:
            found.append(entry.key)
    keys = [k for k in found if k.get_base64() not in revoked]
    if not keys:
        raise UsageError(f"{where}: no host key for {name}")
    return keys


def _host_matches(pattern: str, name: str) -> bool:
    """A known_hosts host field: plain (``name`` itself) or hashed (``|1|salt|hash``)."""
    if pattern.startswith("|1|"):
        return hmac.compare_digest(paramiko.HostKeys.hash_host(name, pattern), pattern)
    return pattern == name


def load_private_key(path: str | os.PathLike[str]) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(os.fspath(path))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise UsageError(f"{path}: cannot load private key ({exc})") from exc


def new_ed25519_key() -> tuple[bytes, str]:
    """A fresh Ed25519 key: ``(private key in OpenSSH PEM, "ssh-ed25519 AAAA...")``, written nowhere."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def generate_keypair(directory: str | os.PathLike[str], name: str = "id_ed25519") -> tuple[Path, str]:
    """A fresh Ed25519 key: ``(private_key_path, "ssh-ed25519 AAAA... bakery")``; the file is 0600."""
    private, public = new_ed25519_key()
    path = Path(directory) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    return path, public + " bakery"


# ------------------------------------------------------------------------------------------ connect


class _Retry(Exception):
    """A failure worth another attempt; ``kind`` goes into the final message."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _pin(
    client: paramiko.SSHClient, endpoint: SshEndpoint, known_keys: list[paramiko.PKey] | None
) -> list[paramiko.PKey]:
    keys = list(known_keys or [])
    if endpoint.host_key:
        keys.append(host_key_from_text(endpoint.host_key))
    if not keys:
        raise UsageError(f"ssh {endpoint.host}:{endpoint.port}: no pinned host key; refusing to connect")
    name = known_hosts_name(endpoint.host, endpoint.port)
    for key in keys:
        client.get_host_keys().add(name, key.get_name(), key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return keys


def _attempt(
    endpoint: SshEndpoint, pkey: paramiko.PKey, known_keys: list[paramiko.PKey] | None, budget: float
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    pinned = _pin(client, endpoint, known_keys)
    step = max(0.5, min(budget, 10.0))
    sock: socket.socket | None = None
    connected = False
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=step)
        connected = True
        # Without TCP_NODELAY each channel request sits out a delayed ACK: ~40 ms per command.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(
            endpoint.host,
            port=endpoint.port,
            username=endpoint.user,
            pkey=pkey,
            sock=sock,
            timeout=step,
            banner_timeout=step,
            auth_timeout=step,
            channel_timeout=step,
            look_for_keys=False,
            allow_agent=False,
        )
        return client
    except Exception as exc:
        offered = _offered_key(client)
        turned_away = _turned_away(client, exc)
        client.close()
        if sock is not None:
            sock.close()
        if turned_away is not None:
            raise _Retry("turned away after the key was accepted", turned_away) from None
        raise _classify(exc, endpoint, pinned, offered, connected, step) from None


def _turned_away(client: paramiko.SSHClient, exc: Exception) -> str | None:
    """What the server said when it closed the connection during authentication, or None if it did not.

    A key the server refuses gets an answer ("Authentication failed."): that is final. A closed
    connection is not a refusal: while a host boots, pam_nologin (``/run/nologin``, removed when boot ends)
    makes sshd send its message as a banner and hang up, even though the key was good.
    """
    if not isinstance(exc, paramiko.AuthenticationException) or isinstance(exc, paramiko.BadAuthenticationType):
        return None
    transport = client.get_transport()
    if transport is None or transport.is_active():
        return None
    # transport.get_banner() answers only while the transport is up; the handler keeps what was said.
    banner = transport.auth_handler.banner if transport.auth_handler is not None else None
    text = banner.decode("utf-8", "replace") if isinstance(banner, bytes) else banner or ""
    said = " ".join(text.split())
    return f"server closed the connection: {said}" if said else "server closed the connection"


def _classify(
    exc: Exception,
    endpoint: SshEndpoint,
    pinned: list[paramiko.PKey],
    offered: paramiko.PKey | None,
    connected: bool,
    step: float,
) -> Exception:
    """The error to raise for a failed attempt: ``_Retry`` when another attempt may succeed."""
    where = f"ssh {endpoint.user}@{endpoint.host}:{endpoint.port}"
    expected = ", ".join(describe_key(k) for k in pinned)
    text = str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return JobFailed(
            f"{where}: host key mismatch: expected {expected}, offered {describe_key(exc.key)}; refusing to connect"
        )
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in text:
        found = describe_key(offered) if offered else "a key of another type"
        return JobFailed(f"{where}: host key mismatch: expected {expected}, offered {found}; refusing to connect")
    if isinstance(exc, paramiko.AuthenticationException):
        return JobFailed(f"{where}: authentication failed for user {endpoint.user!r} with the given key ({exc})")
    if isinstance(exc, socket.gaierror):
        return JobFailed(f"{where}: cannot resolve host ({exc})")
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return _Retry("connection refused", text)
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return _Retry("timed out", text or ("no SSH banner" if connected else "TCP connect timed out"))
    if isinstance(exc, paramiko.SSHException) and "No existing session" in text:
        return _Retry("timed out", f"no SSH handshake within {step:g} s")  # paramiko's word for it
    if connected and isinstance(exc, paramiko.SSHException | EOFError | OSError):
        # Docker's userland proxy accepts TCP before sshd listens, then closes: EOF or reset here.
        return _Retry("connection closed before the SSH handshake", text or type(exc).__name__)
    if isinstance(exc, OSError):
        return _Retry("unreachable", text)
    return exc


def _offered_key(client: paramiko.SSHClient) -> paramiko.PKey | None:
    transport = client.get_transport()
    try:
        return transport.get_remote_server_key() if transport else None
    except paramiko.SSHException:
        return None


def connect(
    endpoint: SshEndpoint, *, timeout: float, known_keys: list[paramiko.PKey] | None = None
) -> paramiko.SSHClient:
    """Connect with the pinned host key(s), key auth only, retrying until ``timeout`` seconds have passed.

    Refused, timed-out and closed-before-handshake attempts are retried with exponential backoff
    (0.2 s doubling to 2 s), and so is a connection the server closes during authentication (a host still
    booting turns logins away with pam_nologin); a host key mismatch or a refused key ends at once.
    """
    pkey = load_private_key(endpoint.key_path)
    started = time.monotonic()
    deadline = started + timeout
    delay = FIRST_DELAY
    attempts = 0
    while True:
        attempts += 1
        try:
            return _attempt(endpoint, pkey, known_keys, deadline - time.monotonic())
        except _Retry as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)
    waited = time.monotonic() - started
    raise JobFailed(
        f"ssh {endpoint.user}@{endpoint.host}:{endpoint.port}: {last.kind} "
        f"(gave up after {waited:.1f} s, {attempts} attempts; last error: {last})"
    )


# ---------------------------------------------------------------------------------------------- run


Sudo = bool | Literal["if-available"]


def _wrap(command: str, timeout: float, sudo: Sudo) -> str:
    """``/bin/sh -c`` the command under coreutils ``timeout`` when present (it kills the whole group).

    ``sudo`` puts ``sudo -n`` outside the timeout, so the timeout (and its kill) runs as root too;
    ``"if-available"`` uses it only when the user is not root and sudo needs no password.
    """
    seconds = f"{max(timeout, 0.1):.3f}"
    quoted = shlex.quote(command)
    inner = shlex.quote(
        "if timeout -k 1 0.5 true >/dev/null 2>&1; "  # coreutils or a recent busybox timeout
        f"then exec timeout -k {KILL_GRACE:g} {seconds} /bin/sh -c {quoted}; "
        f"else exec /bin/sh -c {quoted}; fi"
    )
    if sudo == "if-available":
        elevate = (
            f'if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then exec sudo -n /bin/sh -c {inner}; fi; '
            f"exec /bin/sh -c {inner}"
        )
        return f"/bin/sh -c {shlex.quote(elevate)}"
    return f"{'sudo -n ' if sudo else ''}/bin/sh -c {inner}"


def run(
    client: paramiko.SSHClient,
    command: str,
    timeout: float,
    *,
    stdin: bytes | None = None,
    sudo: Sudo = False,
) -> CommandResult:
    """Run ``command`` (a ``/bin/sh`` command line) and return its status and output.

    The remote side is killed by ``timeout`` (TERM, then KILL after 2 s); locally the channel is
    abandoned at ``timeout + 3 s`` whatever the remote side does, so a hanging command cannot hang us.
    """
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise JobFailed("ssh: the connection is closed")
    started = time.monotonic()
    deadline = started + timeout + KILL_GRACE + 1.0
    channel = transport.open_session(timeout=max(timeout, 1.0))
    out: list[bytes] = []
    err: list[bytes] = []
    timed_out = False
    try:
        channel.exec_command(_wrap(command, timeout, sudo))
        if stdin:
            channel.settimeout(max(deadline - time.monotonic(), 0.1))  # bounds sendall if nobody reads
            channel.sendall(stdin)
        channel.shutdown_write()
        while True:
            while channel.recv_ready():
                out.append(channel.recv(65536))
            while channel.recv_stderr_ready():
                err.append(channel.recv_stderr(65536))
            drained = not channel.recv_ready() and not channel.recv_stderr_ready()
            if drained and channel.exit_status_ready() and (channel.eof_received or channel.closed):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            select.select([channel], [], [], min(remaining, 0.05))
        status = channel.recv_exit_status() if not timed_out else -1
    finally:
        channel.close()
    duration = time.monotonic() - started
    if not timed_out and status in (124, 137) and duration >= timeout * 0.98:
        timed_out = True
    return CommandResult(status, b"".join(out), b"".join(err), timed_out, duration)
