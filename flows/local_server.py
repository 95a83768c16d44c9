"""bakery's own local Prefect server: started in the background on first use, reused by every later command.

Without ``PREFECT_API_URL``, Prefect would start a temporary server for each command (about 10 s here) and the
runs would be gone with it. Instead the first ``bake`` command that runs a flow starts ``prefect server start``
on 127.0.0.1 in the background, says so once (the UI address, how to stop it), and every later command finds it
by its record and a health check, so it pays only for its own work. ``bake server status|start|stop``.

Its home is private (0700) under the user's bakery state dir: ``$BAKERY_STATE_DIR/prefect-server/`` holds
``server.json`` (pid, port, URLs), ``server.log``, ``lock`` and ``prefect/`` (its PREFECT_HOME, SQLite inside).
Two commands racing to start it take ``lock`` in turn: the second finds the first one's server. A record whose
process is gone (or is not this server) is stale and replaced. ``BAKERY_LOCAL_SERVER=off`` keeps Prefect's
temporary server per command.

Standard library only: this runs before Prefect is imported, and ``bake verify`` never imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.errors import JobFailed
from tasks.request import state_dir

START_TIMEOUT = 120.0  # `prefect server start` takes 10-20 s here, more on a loaded machine
# How long a recorded server that is alive but not answering gets before it is replaced.
UNANSWERED_TIMEOUT = START_TIMEOUT
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerRecord:
    """What ``server.json`` says about the server bakery started."""

    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def server_home() -> Path:
    return state_dir() / "prefect-server"


def _record_file(home: Path) -> Path:
    return home / "server.json"


def read_record(home: Path | None = None) -> ServerRecord | None:
    try:
        data = json.loads(_record_file(home or server_home()).read_text())
        return ServerRecord(pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(home: Path, record: ServerRecord) -> None:
    tmp = _record_file(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(_record_file(home))
    (home / "port").write_text(f"{record.port}\n")  # kept after a stop: the next start takes it again


def _last_port(home: Path) -> int | None:
    try:
        return int((home / "port").read_text())
    except (OSError, ValueError):
        return None


def is_our_process(record: ServerRecord) -> bool:
    """The recorded pid is alive and is a ``prefect server start`` on the recorded port (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [w.decode(errors="replace") for w in cmdline]
    return "server" in words and "start" in words and str(record.port) in words


def healthy(record: ServerRecord, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{record.api_url}/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def running(home: Path | None = None) -> ServerRecord | None:
    """The recorded server, if it is ours and answers."""
    record = read_record(home)
    if record and is_our_process(record) and healthy(record):
        return record
    return None


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    with open(home / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _private_home() -> Path:
    home = server_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    return home


def _port_for(home: Path) -> int:
    """The port it had before when that is free (a stable UI address), else a free one."""
    previous = _last_port(home)
    if previous:
        with socket.socket() as sock:
            # As the server's own listener does (uvicorn sets it): a killed server's connections left in
            # TIME_WAIT must not make its port look taken, or the UI address changes after a crash.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, previous))
                return previous
            except OSError:
                pass
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _prefect_command() -> list[str]:
    beside = Path(sys.executable).parent / "prefect"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "prefect"]


# What the detached server may inherit from the first command's shell. It outlives that command by days,
# so nothing else: no cloud credentials, no PKR_VAR_ secrets, no webhook addresses in /proc/<pid>/environ.
_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE"})


def _server_env(home: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _INHERITED
        or k.startswith("LC_")
        or (k.startswith("PREFECT_") and k not in ("PREFECT_API_URL", "PREFECT_API_KEY"))
    }
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_API_URL=f"http://{HOST}:{port}/api",  # else the UI calls the default port 4200
    )
    return env


def _wait_healthy(record: ServerRecord, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(record):
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise JobFailed(f"the local Prefect server did not start on {record.ui_url}; see {log}")
        time.sleep(0.3)


def ensure_running(announce: bool = True) -> tuple[ServerRecord, bool]:
    """The local server, started in the background when none answers; returns it and whether it was started."""
    found = running()
    if found:
        return found, False
    home = _private_home()
    with _locked(home):
        previous = read_record(home)
        if previous and is_our_process(previous):
            # Another command is starting it (we waited for its lock) or it is busy: give it its time,
            # then replace it (a hung server would otherwise cost every later command the whole wait).
            try:
                _wait_healthy(previous, None, home / "server.log", UNANSWERED_TIMEOUT)
                return previous, False
            except JobFailed:
                log_line = f"the local Prefect server (pid {previous.pid}) stopped answering; starting a new one"
                print(f"bake: {log_line}", file=sys.stderr)
                _stop(previous)
                _record_file(home).unlink(missing_ok=True)
        port = _port_for(home)
        log = home / "server.log"
        old_umask = os.umask(0o077)
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [*_prefect_command(), "server", "start", "--host", HOST, "--port", str(port)],
                    env=_server_env(home, port),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives this command; stopped by `bake server stop`
                )
        finally:
            os.umask(old_umask)
        record = ServerRecord(pid=proc.pid, port=port)
        _write_record(home, record)
        try:
            _wait_healthy(record, proc, log, START_TIMEOUT)
        except JobFailed:
            _stop(record)
            _record_file(home).unlink(missing_ok=True)
            raise
    if announce:
        print(
            f"bake: started a local Prefect server in the background; your runs are at {record.ui_url}\n"
            f"bake: later commands reuse it; stop it with `bake server stop` (its data: {home})",
            file=sys.stderr,
        )
    return record, True


def _stop(record: ServerRecord, timeout: float = 20.0) -> None:
    """SIGTERM to the server's process group (it runs uvicorn as a child), then SIGKILL: by its pid only."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(record.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(record.pid, os.WNOHANG)  # reap it when we are its parent (tests)
            if not Path(f"/proc/{record.pid}").exists() or not is_our_process(record):
                return
            time.sleep(0.2)


def stop() -> ServerRecord | None:
    """Stop the recorded server if it is ours; returns what was stopped (None: nothing was running)."""
    home = server_home()
    if not home.is_dir():
        return None
    with _locked(home):
        record = read_record(home)
        if record is None:
            return None
        stopped = record if is_our_process(record) else None
        if stopped:
            _stop(stopped)
        _record_file(home).unlink(missing_ok=True)
        return stopped


def status() -> dict[str, object]:
    record = read_record()
    alive = running()
    doc: dict[str, object] = {"running": alive is not None, "home": str(server_home())}
    if alive:
        doc.update(pid=alive.pid, ui=alive.ui_url, api=alive.api_url)
    elif record:
        doc["stale_record"] = f"pid {record.pid} is not a running server (replaced on next use)"
    if os.environ.get("PREFECT_API_URL"):
        doc["prefect_api_url"] = os.environ["PREFECT_API_URL"]  # what `bake` uses instead
    return doc


def _profile_api_url() -> str | None:
    """PREFECT_API_URL of the active Prefect profile (``prefect config set PREFECT_API_URL=...``), if any."""
    import tomllib

    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def wanted() -> bool:
    """Whether bake should use its local server: no Prefect API configured and not switched off."""
    if os.environ.get("BAKERY_LOCAL_SERVER", "on").lower() in ("off", "0", "false", "no"):
        return False
    return not (os.environ.get("PREFECT_API_URL") or _profile_api_url())


def use_local_server() -> None:
    """Before a flow runs: point this process at the local server, starting it on first use."""
    if not wanted():
        return
    record, _ = ensure_running()
    os.environ["PREFECT_API_URL"] = record.api_url
    if "prefect.context" in sys.modules:  # imported already (a check needed it): read the settings again
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
