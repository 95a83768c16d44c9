"""Private keys: a per-user private directory, checked (0700, owned by the user, no symlink on the path),
never a predictable shared /tmp path; the sweep never follows a symlink; a kept key goes at its
``expires-at`` (issue 11, item 6)."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks import keys
from tasks.errors import UsageError
from tasks.request import keys_root, private_dir
from tasks.sweep import Rules, find_key_dirs, remove_key_dirs


def test_default_root_is_per_user_not_shared_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BAKERY_KEYS_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path / "state"))
    assert keys_root() == tmp_path / "state" / "keys"
    assert not str(keys_root()).startswith(tempfile.gettempdir() + "/bakery-keys")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert keys_root() == tmp_path / "bakery-keys"


def test_private_dir_is_created_0700(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert (made.stat().st_mode & 0o777) == 0o700
    assert ((tmp_path / "a").stat().st_mode & 0o777) == 0o700


def test_private_dir_refuses_a_symlink_anywhere_on_the_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UsageError, match="link is a symlink"):
        private_dir(tmp_path / "link" / "keys")
    (tmp_path / "real" / "keys").mkdir(mode=0o700)
    with pytest.raises(UsageError, match="is a symlink"):
        private_dir(tmp_path / "link" / "keys")


def test_private_dir_refuses_other_modes_and_owners(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(UsageError, match="mode 0o755, expected 0o700"):
        private_dir(shared)
    if os.getuid() == 0:  # root can give a directory away: the check must notice
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 12345, 12345)
        with pytest.raises(UsageError, match="owned by uid 12345"):
            private_dir(theirs)


def test_kept_key_stays_until_its_expiry_then_the_sweep_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKERY_KEYS_DIR", str(tmp_path / "keys"))
    expires = datetime.now(UTC) + timedelta(hours=2)
    with keys.run_keypair("kept-run", expires) as key:
        key.keep = True
    with keys.run_keypair("plain-run", expires):
        pass
    assert key.private_key.is_file() and not (tmp_path / "keys" / "plain-run").exists()
    now = datetime.now(UTC)
    found = {i.name: i for i in find_key_dirs(Rules(now=now), set())}
    assert not found["kept-run"].remove and found["kept-run"].reason.startswith("expires in")
    later = {i.name: i for i in find_key_dirs(Rules(now=now + timedelta(hours=3)), set())}
    assert later["kept-run"].remove and later["kept-run"].reason.startswith("expired")
    assert remove_key_dirs([later["kept-run"]]) == {"key-dir " + str(tmp_path / "keys" / "kept-run"): "removed"}


def test_sweep_never_follows_a_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    root = tmp_path / "keys"
    root.mkdir(mode=0o700)
    (root / "run-a").symlink_to(victim)
    old = Rules(now=datetime.now(UTC) + timedelta(days=30))
    assert find_key_dirs(old, set(), root) == []  # a link is not a key directory
    # the whole root a symlink: not looked into at all
    linked_root = tmp_path / "linked-keys"
    linked_root.symlink_to(victim)
    assert find_key_dirs(old, set(), linked_root) == []
    # a key directory swapped for a link between finding and removing: left alone
    real = root / "run-b"
    real.mkdir(mode=0o700)
    os.utime(real, (0, 0))
    (item,) = [i for i in find_key_dirs(old, set(), root) if i.name == "run-b"]
    real.rmdir()
    real.symlink_to(victim)
    assert remove_key_dirs([item])[f"key-dir {real}"].startswith("failed")
    assert (victim / "precious").exists()


def test_a_key_that_cannot_be_written_leaves_no_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKERY_KEYS_DIR", str(tmp_path / "keys"))

    def disk_full(directory: Path) -> tuple[Path, str]:
        (directory / "id_ed25519").write_text("half a key")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys.ssh, "generate_keypair", disk_full)
    with pytest.raises(OSError, match="No space"), keys.run_keypair("run-1"):
        pass
    assert not keys.run_key_dir("run-1").exists()
