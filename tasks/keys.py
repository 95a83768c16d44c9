"""The per-run SSH key pair: private key 0600 in a 0700 directory that is gone when the run ends."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks import ssh
from tasks.request import keys_root


def run_key_dir(run_id: str) -> Path:
    return keys_root() / run_id


@contextmanager
def run_keypair(run_id: str) -> Iterator[tuple[Path, str]]:
    """Yields ``(private_key_path, public_key_line)``; removes the directory on every path."""
    root = keys_root()
    root.mkdir(mode=0o700, exist_ok=True)
    directory = run_key_dir(run_id)
    directory.mkdir(mode=0o700, exist_ok=True)
    try:
        yield ssh.generate_keypair(directory)
    finally:
        remove_run_keys(run_id)


def remove_run_keys(run_id: str) -> None:
    shutil.rmtree(run_key_dir(run_id), ignore_errors=True)
