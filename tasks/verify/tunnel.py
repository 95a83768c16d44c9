"""TCP connections made *by the host*: an SSH ``direct-tcpip`` channel asks the host's sshd to connect, so
``http`` and ``addr`` checks see the network as the host sees it (its loopback, its DNS, its routes) and
the host needs no curl or nc. TLS runs over the channel through an in-memory ``ssl.SSLObject``."""

from __future__ import annotations

import ssl
import time

import paramiko


class TunnelError(Exception):
    """The host could not connect (refused, unreachable, forwarding forbidden, timed out)."""


def open_tcp(client: paramiko.SSHClient, host: str, port: int, timeout: float) -> paramiko.Channel:
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise TunnelError("the SSH connection is closed")
    try:
        channel = transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        reasons = {
            1: "administratively prohibited (the host's sshd has AllowTcpForwarding no)",
            2: "connect failed (refused or unreachable from the host)",
            3: "unknown channel type",
            4: "resource shortage",
        }
        raise TunnelError(f"the host could not connect to {host}:{port}: {reasons.get(exc.code, exc.text)}") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TunnelError(f"the host could not connect to {host}:{port}: {exc or 'timed out'}") from None
    channel.settimeout(timeout)
    return channel


class Stream:
    """Bytes in and out of a channel, optionally through TLS; every read and write respects ``deadline``."""

    def __init__(self, channel: paramiko.Channel, deadline: float) -> None:
        self.channel = channel
        self.deadline = deadline
        self.tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TunnelError("timed out")
        return left

    def _raw_recv(self) -> bytes:
        self.channel.settimeout(self._remaining())
        try:
            return bytes(self.channel.recv(65536))
        except TimeoutError:
            raise TunnelError("timed out") from None

    def _raw_send(self, data: bytes) -> None:
        self.channel.settimeout(self._remaining())
        try:
            self.channel.sendall(data)
        except TimeoutError:
            raise TunnelError("timed out") from None

    def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            self._raw_send(pending)

    def start_tls(self, server_name: str, verify: bool) -> None:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=server_name)
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                data = self._raw_recv()
                if not data:
                    raise TunnelError("TLS handshake: the server closed the connection") from None
                self._in.write(data)
            except ssl.SSLCertVerificationError as exc:
                raise TunnelError(f"TLS: {exc.verify_message} (allow-insecure: true skips the check)") from None
            except ssl.SSLError as exc:
                raise TunnelError(f"TLS: {exc.reason or exc}") from None

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self._raw_send(data)
            return
        self.tls.write(data)
        self._flush()

    def recv(self) -> bytes:
        if self.tls is None:
            return self._raw_recv()
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self._raw_recv()
                if not data:
                    self._in.write_eof()
                    try:
                        return self.tls.read(65536)
                    except (ssl.SSLEOFError, ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                        return b""
                self._in.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as exc:
                raise TunnelError(f"TLS: {exc.reason or exc}") from None

    def close(self) -> None:
        self.channel.close()
