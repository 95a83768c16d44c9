"""The background Prefect server outlives the command that started it: it inherits no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import local_server


def test_the_server_inherits_no_credentials_or_packer_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("PKR_VAR_registry_password", "hunter2")
    monkeypatch.setenv("BAKERY_ALERT_WEBHOOK_URL", "http://127.0.0.1:1/hook")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:2/api")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_x")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = local_server._server_env(tmp_path, 4321)
    for secret in ("AWS_SECRET_ACCESS_KEY", "PKR_VAR_registry_password", "BAKERY_ALERT_WEBHOOK_URL", "PREFECT_API_KEY"):
        assert secret not in env
    assert "PREFECT_API_URL" not in env  # the server is not a client of another server
    assert env["PATH"] and env["PREFECT_LOGGING_LEVEL"] == "DEBUG" and env["LC_ALL"] == "C.UTF-8"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"


FAKE_SERVER = """
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_a_hung_server_is_replaced_not_waited_on_by_every_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket
    import subprocess
    import sys
    import time

    monkeypatch.setenv("BAKERY_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(local_server, "UNANSWERED_TIMEOUT", 1.0)  # the new server keeps its whole start time
    fake = tmp_path / "fake_prefect.py"
    fake.write_text(FAKE_SERVER)
    monkeypatch.setattr(local_server, "_prefect_command", lambda: [sys.executable, str(fake)])
    home = local_server._private_home()
    # A recorded "prefect server start" that is alive but never answers (a hung server), on a port of its
    # own: the replacement takes the recorded port again, and a fixed one (root may bind port 1) would be
    # shared with any other suite running this test at the same time.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    hung = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "server", "start", "--port", str(port)],
        start_new_session=True,
    )
    try:
        recorded = local_server.ServerRecord(pid=hung.pid, port=port)
        local_server._write_record(home, recorded)
        # Popen returns while the kernel may still be finishing the exec: until /proc shows the new command
        # line, the recorded process does not look like a server (and would be left alone, not replaced).
        deadline = time.monotonic() + 10
        while not local_server.is_our_process(recorded) and time.monotonic() < deadline:
            time.sleep(0.01)
        record, started = local_server.ensure_running(announce=False)
        try:
            assert started and record.pid != hung.pid
            assert hung.wait(timeout=30) is not None  # the hung one was stopped
            assert local_server.running(home) == record
        finally:
            local_server._stop(record)
    finally:
        hung.kill()
