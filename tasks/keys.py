"""The per-run SSH key pair: private key 0600 in a 0700 directory below a checked private root
(``tasks.request.private_dir``), gone when the run ends, or kept with a kept instance until the same
``expires-at`` (the sweep reads it from the directory).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tasks import ssh
from tasks.request import keys_root, private_dir

EXPIRES_FILE = "expires-at"


def run_key_dir(run_id: str) -> Path:
    return keys_root() / run_id


@dataclass
class RunKey:
    """A run's key pair; set ``keep`` to leave it in place (with a kept instance) until ``expires_at``."""

    private_key: Path
    public_key: str
    keep: bool = False


@contextmanager
def run_keypair(run_id: str, expires_at: datetime | None = None) -> Iterator[RunKey]:
    """A fresh key pair for the run; removed on every path unless ``keep`` was set on it."""
    root = private_dir(keys_root())
    directory = root / run_id
    os.mkdir(directory, 0o700)  # never an existing one: a run id is new
    key: RunKey | None = None
    try:
        private_dir(directory, create=False)
        if expires_at is not None:
            (directory / EXPIRES_FILE).write_text(expires_at.astimezone(UTC).isoformat(timespec="seconds") + "\n")
        key = RunKey(*ssh.generate_keypair(directory))
        yield key
    finally:
        if key is None or not key.keep:  # also a half-made directory (a full disk while writing the key)
            remove_run_keys(run_id)


def remove_run_keys(run_id: str) -> None:
    """The run's key directory, if it is one (a symlink in its place is left alone)."""
    directory = run_key_dir(run_id)
    if directory.is_symlink() or not directory.is_dir():
        return
    shutil.rmtree(directory, ignore_errors=True)
