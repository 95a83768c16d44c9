"""tasks.ssh.connect against a host that is still booting: sshd accepts the key, then pam_nologin turns the
login away (a banner, then the connection closes). Seen in CI: two pipelines booting at once on a loaded
machine, one reached sshd before boot ended and failed with "authentication failed" although its key was
good. An in-process SSH server (paramiko's) plays sshd: it says no exactly as sshd does."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from tasks import ssh
from tasks.errors import JobFailed
from tasks.targets.base import SshEndpoint
from tests.support.ssh_server import in_process_ssh_server

NOLOGIN = "System is booting up. Unprivileged users are not permitted to log in yet."


@dataclass
class Sshd:
    """What the fake sshd does with each login: the first ``turn_away`` logins get the nologin banner and a
    closed connection; then, if ``refuse`` is set, the key is refused; else the login succeeds."""

    turn_away: int = 0
    refuse: bool = False
    logins: int = 0


class _BootingServer(paramiko.ServerInterface):
    def __init__(self, sshd: Sshd, conn: socket.socket) -> None:
        self.sshd = sshd
        self.conn = conn
        self.this_login = sshd.logins
        sshd.logins += 1

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def get_banner(self) -> tuple[str | None, str | None]:
        # sshd sends pam_nologin's text as the userauth banner, then hangs up; the banner goes out first.
        return (NOLOGIN, "en") if self.this_login < self.sshd.turn_away else (None, None)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if self.this_login < self.sshd.turn_away:
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)  # sshd: fatal("Access denied ... by PAM account ...")
            return paramiko.AUTH_FAILED
        return paramiko.AUTH_FAILED if self.sshd.refuse else paramiko.AUTH_SUCCESSFUL


@pytest.fixture
def booting_sshd(tmp_path: Path) -> Iterator[tuple[SshEndpoint, Sshd]]:
    key_path, _ = ssh.generate_keypair(tmp_path)
    sshd = Sshd()
    with in_process_ssh_server(lambda conn: _BootingServer(sshd, conn), "bakery", key_path) as endpoint:
        yield endpoint, sshd


def test_a_login_turned_away_while_the_host_boots_is_retried(booting_sshd: tuple[SshEndpoint, Sshd]) -> None:
    endpoint, sshd = booting_sshd
    sshd.turn_away = 2
    client = ssh.connect(endpoint, timeout=20)
    try:
        transport = client.get_transport()
        assert transport is not None and transport.is_authenticated()
    finally:
        client.close()
    assert sshd.logins == 3


def test_a_host_that_keeps_turning_logins_away_gives_up_at_the_timeout_and_says_why(
    booting_sshd: tuple[SshEndpoint, Sshd],
) -> None:
    endpoint, sshd = booting_sshd
    sshd.turn_away = 10**6
    started = time.monotonic()
    with pytest.raises(JobFailed) as failed:
        ssh.connect(endpoint, timeout=2)
    assert 2 <= time.monotonic() - started < 10
    message = str(failed.value)
    assert "turned away after the key was accepted" in message
    assert NOLOGIN in message
    assert sshd.logins >= 2


def test_a_refused_key_still_fails_at_once(booting_sshd: tuple[SshEndpoint, Sshd]) -> None:
    endpoint, sshd = booting_sshd
    sshd.refuse = True
    started = time.monotonic()
    with pytest.raises(JobFailed, match="authentication failed for user 'bakery' with the given key"):
        ssh.connect(endpoint, timeout=20)
    assert time.monotonic() - started < 5
    assert sshd.logins == 1
