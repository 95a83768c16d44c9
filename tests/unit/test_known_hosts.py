"""``--known-hosts``: every malformed line is one UsageError naming file and line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from tasks.errors import UsageError
from tasks.ssh import host_keys_from_known_hosts

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIBvGA0ACsbTAgfg3SRv6cWu4sEBBOy8Qr9ZHtQ3pr/kh"
NAME = "[127.0.0.1]:2222"


@pytest.mark.parametrize(
    "line",
    [
        f"{NAME} ssh-ed25519 {KEY[:-1]}",  # bad base64 padding
        f"{NAME} ssh-ed25519 AAAA",  # not a key
        f"|1|abc|def ssh-ed25519 {KEY}",  # hashed entry with a broken salt
        "just-one-field",
        f"@nonsense {NAME} ssh-ed25519 {KEY}",
    ],
)
def test_malformed_line_is_a_usage_error(tmp_path: Path, line: str) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# comment\n{line}\n")
    with pytest.raises(UsageError, match=r"known_hosts:2: "):
        host_keys_from_known_hosts(path, "127.0.0.1", 2222)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(b"\xff\xfe\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        host_keys_from_known_hosts(path, "127.0.0.1", 2222)


def test_plain_hashed_and_revoked_entries(tmp_path: Path) -> None:
    hashed = paramiko.HostKeys.hash_host(NAME)
    path = tmp_path / "known_hosts"
    path.write_text(
        f"{NAME} ssh-ed25519 {KEY}\n{hashed} ssh-ed25519 {KEY}\n@cert-authority * ssh-ed25519 {KEY}\n"
        f"other.example ssh-ed25519 {KEY}\n"
    )
    keys = host_keys_from_known_hosts(path, "127.0.0.1", 2222)
    assert [k.get_base64() for k in keys] == [KEY, KEY]
    path.write_text(f"{NAME} ssh-ed25519 {KEY}\n@revoked {NAME} ssh-ed25519 {KEY}\n")
    with pytest.raises(UsageError, match="no host key for"):
        host_keys_from_known_hosts(path, "127.0.0.1", 2222)
