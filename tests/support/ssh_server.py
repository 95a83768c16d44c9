"""An SSH server in the test process (paramiko's), for tests of bakery's SSH client: what the server does
with each connection is the test's ``paramiko.ServerInterface``."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko

from tasks import ssh
from tasks.targets.base import SshEndpoint


@contextlib.contextmanager
def in_process_ssh_server(
    server_for: Callable[[socket.socket], paramiko.ServerInterface], user: str, key_path: Path
) -> Iterator[SshEndpoint]:
    """Serve SSH on 127.0.0.1 with a fresh Ed25519 host key, one ``server_for(connection)`` per connection;
    yields the endpoint (that host key pinned, ``user`` logging in with ``key_path``)."""
    private, public = ssh.new_ed25519_key()
    host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(private.decode()))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transports.append(transport)
            # With an event start_server returns at once: negotiation runs in the transport's own thread, so a
            # connection that ends early (the test's server hangs up, as a booting sshd does) never raises
            # here and the next connection is accepted. Without it, start_server waits for the key exchange
            # and re-raises what ended the connection: under load that stopped this loop (seen in CI).
            transport.start_server(threading.Event(), server=server_for(conn))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield SshEndpoint("127.0.0.1", listener.getsockname()[1], user, key_path, public)
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        for transport in transports:
            transport.close()
        thread.join(5)
