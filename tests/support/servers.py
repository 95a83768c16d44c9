"""A real Prefect server on 127.0.0.1 for benchmarks and end-to-end tests, started and stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``: its URLs, its PREFECT_HOME, the environment for its clients."""

    url: str  # the API, http://127.0.0.1:PORT/api
    ui_url: str  # http://127.0.0.1:PORT
    home: Path
    pid: int
    log: Path

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a `prefect`/`bake` subprocess (a worker, a deploy) talking to this server."""
        return {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            **extra,
        }


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM to the process group we started (``start_new_session``), then SIGKILL: by PID only."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextmanager
def running_prefect_server(ui: bool = False, startup_timeout: float = 90) -> Iterator[PrefectServer]:
    """``prefect server start`` on 127.0.0.1 with a temporary PREFECT_HOME (SQLite inside it)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bakery-prefect-") as tmp:
        home = Path(tmp)
        log = home / "server.log"
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",  # else the UI calls the default port 4200
            "DO_NOT_TRACK": "1",
        }
        env.pop("PREFECT_API_URL", None)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = PrefectServer(f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}", home, proc.pid, log)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{server.url}/health", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"prefect server did not start; see {log}") from None
                    time.sleep(0.5)
            yield server
        finally:
            stop_process(proc)


@contextmanager
def prefect_server() -> Iterator[str]:
    """``prefect server start`` with a temporary PREFECT_HOME; yields its API URL."""
    with running_prefect_server() as server:
        yield server.url


def without_checkout(env: dict[str, str]) -> dict[str, str]:
    """The environment minus BAKERY_CHECKOUT: what a Prefect user who never heard of it has."""
    return {k: v for k, v in env.items() if k != "BAKERY_CHECKOUT"}


@contextmanager
def running_process_worker(
    server: PrefectServer, directory: Path, limit: int | None = None, name: str = "", **env: str
) -> Iterator[Path]:
    """`prefect worker start` on the pool ``bakery-process``, stopped by its PID on exit; yields its log file
    (``directory/worker.log``). ``limit``: at most that many flow runs at once (`--limit`); ``name``: the
    worker's name (else Prefect's).

    Started in ``directory`` with its own BAKERY_STATE_DIR (``directory/state``) and without BAKERY_CHECKOUT
    unless ``env`` gives it, as a worker on another machine would be: the deployments must find the
    checkout themselves."""
    log = directory / "worker.log"
    worker_env = {**without_checkout(server.client_env(BAKERY_STATE_DIR=str(directory / "state"))), **env}
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "bakery-process", "--type", "process"]
            + (["--name", name] if name else [])
            + (["--limit", str(limit)] if limit else []),
            cwd=directory,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        stop_process(worker)
