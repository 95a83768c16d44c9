"""tasks.ssh without a real sshd: keys, known_hosts, the retry loop's error messages, the timeout wrapper."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tasks import ssh
from tasks.errors import JobFailed, UsageError
from tasks.targets.base import SshEndpoint
from tasks.verify import verify_endpoint
from tests.support.ssh_server import in_process_ssh_server


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, str]:
    return ssh.generate_keypair(tmp_path)


def test_generated_key_is_private_and_loadable(keypair: tuple[Path, str]) -> None:
    path, public = keypair
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = paramiko.Ed25519Key.from_private_key_file(str(path))
    assert public == f"ssh-ed25519 {key.get_base64()} bakery"
    with pytest.raises(FileExistsError):
        ssh.generate_keypair(path.parent)


def test_host_key_from_text(keypair: tuple[Path, str]) -> None:
    key = ssh.host_key_from_text(keypair[1])
    assert key.get_name() == "ssh-ed25519"
    assert ssh.fingerprint(key).startswith("SHA256:")
    blob = keypair[1].split()[1]
    for bad in ("ssh-ed25519", f"ssh-ed25519 {blob[:-4]}!!!!", f"ssh-rsa {blob}", "nonsense AAAA"):
        with pytest.raises(UsageError, match="host key"):
            ssh.host_key_from_text(bad)


def test_known_hosts_lookup(tmp_path: Path, keypair: tuple[Path, str]) -> None:
    line = keypair[1].rsplit(" ", 1)[0]
    hashed = paramiko.HostKeys.hash_host("build.example.org")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:2222 {line}\n{hashed} {line}\n")
    assert [ssh.fingerprint(k) for k in ssh.host_keys_from_known_hosts(known, "127.0.0.1", 2222)] == [
        ssh.fingerprint(ssh.host_key_from_text(line))
    ]
    assert len(ssh.host_keys_from_known_hosts(known, "build.example.org", 22)) == 1
    with pytest.raises(UsageError, match=r"no host key for 127.0.0.1$"):
        ssh.host_keys_from_known_hosts(known, "127.0.0.1", 22)
    with pytest.raises(UsageError, match="nope: cannot read"):
        ssh.host_keys_from_known_hosts(tmp_path / "nope", "127.0.0.1", 22)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake_server() -> Iterator[tuple[int, list[socket.socket], threading.Event]]:
    """A TCP server on 127.0.0.1; the test decides whether it closes connections or keeps them silent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    close_at_once = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if close_at_once.is_set():
                conn.close()
            else:
                accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted, close_at_once
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def endpoint(port: int, keypair: tuple[Path, str]) -> SshEndpoint:
    return SshEndpoint("127.0.0.1", port, "deploy", keypair[0], keypair[1])


def test_refused_is_retried_until_the_timeout(keypair: tuple[Path, str]) -> None:
    started = time.monotonic()
    with pytest.raises(JobFailed, match=r"connection refused \(gave up after 1\.\d s, [4-9] attempts"):
        ssh.connect(endpoint(free_port(), keypair), timeout=1.5)
    assert 1.4 < time.monotonic() - started < 3


def test_closed_before_handshake_is_retried(keypair: tuple[Path, str], fake_server: tuple) -> None:
    port, _, close_at_once = fake_server
    close_at_once.set()  # what Docker's userland proxy does before sshd listens
    with pytest.raises(JobFailed, match="connection closed before the SSH handshake"):
        ssh.connect(endpoint(port, keypair), timeout=1.0)


def test_silent_server_times_out(keypair: tuple[Path, str], fake_server: tuple) -> None:
    port, _, _ = fake_server
    started = time.monotonic()
    with pytest.raises(JobFailed, match="timed out"):
        ssh.connect(endpoint(port, keypair), timeout=1.0)
    assert time.monotonic() - started < 3


def test_no_pinned_key_or_bad_private_key_is_a_usage_error(tmp_path: Path, keypair: tuple[Path, str]) -> None:
    with pytest.raises(UsageError, match="no pinned host key"):
        ssh.connect(SshEndpoint("127.0.0.1", free_port(), "u", keypair[0], ""), timeout=1)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key")
    with pytest.raises(UsageError, match="cannot load private key"):
        ssh.connect(SshEndpoint("127.0.0.1", free_port(), "u", garbage, keypair[1]), timeout=1)


def test_a_bad_spec_fails_before_connecting(tmp_path: Path, keypair: tuple[Path, str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("service:\n  nginx: {enabeld: true}\n")
    started = time.monotonic()
    with pytest.raises(UsageError, match=r"service\.nginx\.enabeld: unknown attribute"):
        verify_endpoint(endpoint(free_port(), keypair), spec, ssh_timeout=30)
    assert time.monotonic() - started < 1


def test_timeout_wrapper_kills_the_command_group() -> None:
    started = time.monotonic()
    done = subprocess.run(["/bin/sh", "-c", ssh._wrap("sleep 30 & sleep 30", 0.5, sudo=False)], check=False)
    assert done.returncode == 124
    assert time.monotonic() - started < 3
    wrapped = ssh._wrap("echo 'quoted' \"$HOME\"", 5, sudo=False)
    assert subprocess.run(["/bin/sh", "-c", wrapped], capture_output=True, check=True).stdout.startswith(b"quoted /")


class _HangingSshServer(paramiko.ServerInterface):
    """A real SSH server (paramiko's) that accepts the client's key and every command, and never ends one."""

    def __init__(self, commands_started: threading.Semaphore) -> None:
        self.commands_started = commands_started

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands_started.release()
        return True


@pytest.fixture
def hanging_ssh_server(keypair: tuple[Path, str]) -> Iterator[tuple[SshEndpoint, threading.Semaphore]]:
    """The endpoint of a ``_HangingSshServer`` on 127.0.0.1 (its host key pinned), and a semaphore released
    once per command it starts."""
    commands_started = threading.Semaphore(0)
    with in_process_ssh_server(lambda conn: _HangingSshServer(commands_started), "deploy", keypair[0]) as endpoint:
        yield endpoint, commands_started


def test_sigterm_while_a_check_runs_ends_verify_at_once(
    tmp_path: Path, hanging_ssh_server: tuple[SshEndpoint, threading.Semaphore]
) -> None:
    """SIGTERM raises in the main thread (bake's handler, or Prefect's during a flow) while the fact script
    and a 30 s check hang on their channels: verify closes the connection and re-raises at once, instead
    of waiting in the check pool's exit until the commands' timeouts; no channel thread is left behind."""
    from flows.cli import Terminated, _sigterm_raises
    from tasks.verify.runner import verify
    from tasks.verify.spec import load_spec

    endpoint, commands_started = hanging_ssh_server
    spec = tmp_path / "slow.yaml"
    spec.write_text("command:\n  slow:\n    exec: sleep 30\n    exit-status: 0\n    timeout: 30000\n")
    client = ssh.connect(endpoint, timeout=5)
    threads_before = set(threading.enumerate())

    def terminate_when_both_commands_run() -> None:
        if all(commands_started.acquire(timeout=5) for _ in range(2)):
            os.kill(os.getpid(), signal.SIGTERM)

    signaller = threading.Thread(target=terminate_when_both_commands_run)
    try:
        with _sigterm_raises(), pytest.raises(Terminated):
            signaller.start()
            started = time.monotonic()
            verify(client, load_spec(spec), sudo=False, command_timeout=30)
        assert time.monotonic() - started < 3
        transport = client.get_transport()
        assert transport is None or not transport.is_active()
        signaller.join(5)
        assert set(threading.enumerate()) - threads_before == set()
    finally:
        client.close()
