"""An HTTP client for a Prefect server's REST API in tests, patient with a busy SQLite database."""

from __future__ import annotations

import time

import httpx


class RetryingTransport(httpx.HTTPTransport):
    """The server answers 503 while its SQLite database is busy (a loaded 2-core machine): retry a while,
    as Prefect's own client does."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(20):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(min(0.25 * 2**attempt, 3))
        return super().handle_request(request)


def prefect_api(url: str) -> httpx.Client:
    """A client whose relative paths go to the API at ``url`` (``http://127.0.0.1:PORT/api``)."""
    return httpx.Client(base_url=url, timeout=30, transport=RetryingTransport())
