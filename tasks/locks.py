"""One build of a family at a time, across every worker and shell that talks to the same Prefect server.

A Prefect *global concurrency limit* ``bakery-family-<family>`` with one slot, made on first use (no
prefect.yaml entry can declare one). The slot is a lease the holder renews; a SIGKILLed holder's lease
runs out (5 minutes) and the next build goes ahead. Without a server (ephemeral mode) the limit lives in
the local Prefect database and still serialises builds on this machine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress

log = logging.getLogger(__name__)


def family_lock_name(family: str) -> str:
    return f"bakery-family-{family}"


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit ``name`` unless it exists (a racing creator is fine)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


@contextmanager
def family_lock(family: str, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the family's slot for the block; waits (``timeout_seconds``: then TimeoutError) while taken."""
    from prefect.concurrency.sync import concurrency

    name = family_lock_name(family)
    ensure_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        log.info("holding the build slot of family %s (global concurrency limit %s)", family, name)
        yield
