"""A moto server on 127.0.0.1 that counts the API calls it serves, whoever makes them (boto3, the aws CLI).

Used by ``bench/retention_speed.py`` and the retention/sweep/rebuild tests. The server runs in this process, so a
test or benchmark can also reach into moto's backend at the seam (creation dates, shared snapshots).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from tests.support.servers import free_port

ACCOUNT = "123456789012"
REGION = "us-east-1"


class CountingApp:
    """WSGI middleware: ``calls[Action] += 1`` for every Query-protocol request (EC2, Auto Scaling)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        fields = parse_qs(environ.get("QUERY_STRING", "")) | parse_qs(body.decode(errors="replace"))
        action = (fields.get("Action") or [""])[0]
        if action:
            with self.lock:
                self.calls[action] += 1
        return self.app(environ, start_response)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class CountingMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` with a :class:`CountingApp` in front; always on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(ip_address="127.0.0.1", port=port or free_port(), verbose=False)
        self.counter = CountingApp(DomainDispatcherApplication(create_backend_app))

    def _server_entry(self) -> None:
        self._server = make_server(self._ip_address, self._port, self.counter, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint) and the call counts."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):  # our own loopback server
            pass
        self.counter.reset()


def aws_env(url: str) -> dict[str, str]:
    """The variables that point boto3 and the aws CLI at the moto server, with throwaway credentials."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }


@contextmanager
def moto_server() -> Iterator[CountingMotoServer]:
    """A counting moto server, with os.environ pointing at it while it runs."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = CountingMotoServer()
    server.start()
    saved = {k: os.environ.get(k) for k in aws_env(server.url)}
    os.environ.update(aws_env(server.url))
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def ec2_backend() -> Any:
    """moto's in-process EC2 state (for test seams only: creation dates, shared snapshots)."""
    from moto.ec2.models import ec2_backends

    return ec2_backends[ACCOUNT][REGION]
