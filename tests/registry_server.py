"""A real image registry for tests: Debian's ``docker-registry`` (Distribution 2.8) on 127.0.0.1.

Started on a free port with a temporary storage directory, no auth, and deletes enabled (unless asked
otherwise: ``delete_enabled=False``; ``users`` turns on Distribution's htpasswd authentication, bcrypt
hashes written to the temporary directory); Docker treats 127.0.0.0/8 registries as insecure-allowed, so
the engine pushes to it as is.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REGISTRY_BINARY = "docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(
    directory: Path, delete_enabled: bool = True, users: dict[str, str] | None = None
) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a registry serving from ``directory`` until the block ends; with ``users``
    ({name: password}) only they get in (Basic authentication, htpasswd)."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh --test installs it)")
    port = free_port()
    storage = directory / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yml"
    auth = ""
    if users:
        import bcrypt

        htpasswd = directory / "htpasswd"
        hashed = {name: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode() for name, pw in users.items()}
        htpasswd.write_text("".join(f"{name}:{line}\n" for name, line in hashed.items()))
        auth = f"auth:\n  htpasswd:\n    realm: bakery-test\n    path: {htpasswd}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"  delete:\n    enabled: {'true' if delete_enabled else 'false'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code in (200, 401):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(directory / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
