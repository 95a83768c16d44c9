"""One build of a family at a time, across every worker and shell that talks to the same Prefect server,
and never blocked for long by a holder that died.

The slot is a Prefect *global concurrency limit* ``bakery-family-<family>`` with one slot, made on first
use (no prefect.yaml entry can declare one), taken with a lease the holder renews. Prefect alone does
not give a dead holder's slot back in every case: its lease storage lives in the server's memory, so a
temporary server (no ``PREFECT_API_URL``) that dies with its run, or a server restart, forgets the lease
while ``active_slots`` stays 1 in the database, for ever.

So the holder also records itself where every worker sees it, a Prefect variable
``bakery-family-<family>-holder`` (in the database, like the limit)::

    {"family": ..., "flow_run_id": ..., "flow_run_name": ..., "process": "host:pid:start",
     "lease_id": ..., "since": ..., "heartbeat": ..., "expires": ...}

and renews ``heartbeat``/``expires`` every ``HEARTBEAT`` (the lease, ``HOLDER_LEASE``, is 3 minutes).
A run that finds the slot taken says so at once and then every ``ANNOUNCE_EVERY``: which family, which
run holds it (name, state, since when) and how to free it. It gives the slot back itself when the
holder is gone:

- the holder's process is gone (same host: its pid no longer runs, or runs another program);
- its flow run is in a final state (Completed, Failed, Crashed, Cancelled);
- its heartbeat is older than its lease (another host, a frozen machine, a power loss);
- nobody recorded holding it (a holder killed before writing its record, a bakery before this one)
  and the slot has stayed taken for a whole lease.

Giving back: one waiter at a time (the variable ``bakery-family-<family>-reclaim``, created only if
absent, is the token), and only if the record is still the one judged dead; the record then says
``reclaimed``, and the slot is released through the dead holder's lease when the server still knows it
(so Prefect's own lease expiry cannot release it a second time), else decremented directly.
``bake sweep`` (and the hourly sweep deployment) does the same for every family (``sweep_family_slots``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from tasks import holders
from tasks.targets.base import iso, parse_time

log = logging.getLogger(__name__)

HOLDER_LEASE = timedelta(minutes=3)  # a killed holder blocks its family at most this long (plus a poll)
HEARTBEAT = timedelta(seconds=30)
ANNOUNCE_EVERY = timedelta(seconds=30)
RECLAIM_TOKEN_TTL = timedelta(minutes=1)
PREFECT_LEASE_SECONDS = 300.0
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
LIMIT_PREFIX = "bakery-family-"


def family_lock_name(family: str) -> str:
    return f"{LIMIT_PREFIX}{family}"


def _variable_base(family: str) -> str:
    """Prefect variable names take letters, digits, ``-`` and ``_``: a family with a dot gets a hash too."""
    safe = re.sub(r"[^a-z0-9_-]", "_", family.lower())
    if safe != family:
        safe += "-" + hashlib.sha256(family.encode()).hexdigest()[:8]
    return f"{LIMIT_PREFIX}{safe}"


def holder_variable(family: str) -> str:
    return f"{_variable_base(family)}-holder"


def reclaim_variable(family: str) -> str:
    return f"{_variable_base(family)}-reclaim"


def _now() -> datetime:
    return datetime.now(UTC)


def _lease() -> timedelta:
    """``BAKERY_FAMILY_LEASE_SECONDS`` overrides the holder lease (tests; very slow networks)."""
    text = os.environ.get("BAKERY_FAMILY_LEASE_SECONDS", "")
    return timedelta(seconds=float(text)) if text.replace(".", "", 1).isdigit() else HOLDER_LEASE


@dataclass
class Holder:
    """The record a slot's holder keeps in ``bakery-family-<family>-holder``."""

    family: str
    flow_run_id: str | None
    flow_run_name: str | None
    process: str
    lease_id: str | None
    since: str
    heartbeat: str
    expires: str
    state: str = "holding"  # or "reclaimed" (by whom in ``process``)

    @classmethod
    def from_value(cls, value: Any) -> Holder | None:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        if not isinstance(value, dict):
            return None
        known = {k: value.get(k) for k in cls.__dataclass_fields__}
        if not known.get("family") or not known.get("since"):
            return None
        known["process"] = str(known.get("process") or "")
        known["heartbeat"] = str(known.get("heartbeat") or known["since"])
        known["expires"] = str(known.get("expires") or known["since"])
        known["state"] = str(known.get("state") or "holding")
        return cls(**known)  # type: ignore[arg-type]

    def to_value(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SlotState:
    """What a family's slot looks like now, and who (if anyone) holds it."""

    family: str
    exists: bool = False
    limit: int = 1
    active_slots: int = 0
    updated: datetime | None = None
    holder: Holder | None = None
    holder_value: Any = None
    run_state: str | None = None  # the holder's flow run state name (Running, Crashed, ...)
    run_state_type: str | None = None
    run_state_since: datetime | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def taken(self) -> bool:
        return self.exists and self.active_slots >= self.limit


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
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


def read_state(client: Any, family: str) -> SlotState:
    """The limit, the holder record and the holder's flow run state, read now."""
    from prefect.exceptions import ObjectNotFound

    state = SlotState(family)
    try:
        limit = client.read_global_concurrency_limit_by_name(family_lock_name(family))
    except ObjectNotFound:
        return state
    state.exists, state.limit, state.active_slots = True, limit.limit, limit.active_slots
    state.updated = limit.updated
    variable = client.read_variable_by_name(holder_variable(family))
    if variable is not None:
        state.holder_value = variable.value
        state.holder = Holder.from_value(variable.value)
    if state.holder is not None and state.holder.flow_run_id and state.holder.state == "holding":
        with contextlib.suppress(Exception):
            run = client.read_flow_run(UUID(state.holder.flow_run_id))
            if run.state is not None:
                state.run_state = run.state.name
                state.run_state_type = run.state.type.value
                state.run_state_since = run.state.timestamp
    return state


SLOT_CLOCK_SLACK = timedelta(seconds=5)


def recorded_holder(state: SlotState) -> Holder | None:
    """The holder on record, if the record still describes the slot: a record whose last heartbeat is
    older than the slot's last change (a new holder took it after the recorded one died, and has not
    written its own record yet) describes nobody. Clock skew only makes this more careful."""
    holder = state.holder
    if holder is None or holder.state != "holding":
        return None
    beat = parse_time(holder.heartbeat)
    if state.updated is not None and beat is not None and state.updated > beat + SLOT_CLOCK_SLACK:
        return None
    return holder


def holder_gone(state: SlotState, now: datetime, taken_without_holder_since: datetime | None) -> str | None:
    """Why the slot's holder is no longer running (then its slot may be given back), or ``None``."""
    holder = recorded_holder(state)
    if not state.taken:
        return None
    if holder is None:
        seen = taken_without_holder_since or state.updated
        if seen is not None and now - seen >= _lease():
            return f"taken for {_ago(now - seen)} with no holder on record"
        return None
    if holders.dead_here(holder.process):
        return f"its process {holder.process} is gone"
    if state.run_state_type in FINAL_STATES:
        return f"its flow run is {state.run_state}"
    expires = parse_time(holder.expires)
    if expires is not None and now > expires:
        return f"its heartbeat stopped at {holder.heartbeat} (lease {_ago(_lease())})"
    return None


def _ago(delta: timedelta) -> str:
    seconds = int(max(delta.total_seconds(), 0))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe_holder(state: SlotState, now: datetime) -> str:
    holder = recorded_holder(state)
    if holder is None:
        return "no run on record (a run killed before it recorded itself, or an older bakery)"
    run = holder.flow_run_name or "a run outside Prefect"
    ident = f" ({holder.flow_run_id})" if holder.flow_run_id else ""
    run_state = f"{state.run_state}" if state.run_state else "state unknown"
    since = parse_time(holder.since)
    held = f"since {holder.since} ({_ago(now - since)})" if since else ""
    return f"run {run}{ident}, {run_state}, holding it {held}, process {holder.process}, heartbeat {holder.heartbeat}"


def waiting_message(state: SlotState, now: datetime) -> str:
    return (
        f"family {state.family} is busy: its build slot (global concurrency limit {family_lock_name(state.family)}) "
        f"is held by {describe_holder(state, now)}; waiting. It is given back when that run ends, or "
        f"{_ago(_lease())} after its heartbeat stops; if that run is gone, `bake sweep --apply` frees it now"
    )


def give_back(client: Any, state: SlotState, reason: str) -> bool:
    """Release the slot of a holder judged gone, once (see the module doc). True when this call did it."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    me = holders.this_process()
    token = reclaim_variable(state.family)
    try:
        client.create_variable(VariableCreate(name=token, value={"by": me, "at": iso(_now())}))
    except ObjectAlreadyExists:
        stale = client.read_variable_by_name(token)
        at = parse_time((stale.value or {}).get("at")) if stale is not None and isinstance(stale.value, dict) else None
        if at is not None and _now() - at > RECLAIM_TOKEN_TTL:
            with contextlib.suppress(Exception):
                client.delete_variable_by_name(token)  # its reclaimer died; the next look takes it
        return False
    try:
        fresh = read_state(client, state.family)
        if not fresh.taken or fresh.holder_value != state.holder_value:
            return False  # released, or taken by a new holder, since we looked
        dead = state.holder
        reclaimed = Holder(
            family=state.family,
            flow_run_id=dead.flow_run_id if dead else None,
            flow_run_name=dead.flow_run_name if dead else None,
            process=me,
            lease_id=None,
            since=iso(_now()),
            heartbeat=iso(_now()),
            expires=iso(_now()),
            state="reclaimed",
        )
        value = reclaimed.to_value()
        if client.read_variable_by_name(holder_variable(state.family)) is None:
            client.create_variable(VariableCreate(name=holder_variable(state.family), value=value))
        else:
            client.update_variable(VariableUpdate(name=holder_variable(state.family), value=value))
        _release(client, state.family, dead.lease_id if dead else None, dead.since if dead else None)
        log.warning(
            "gave back the build slot of family %s held by %s: %s",
            state.family,
            describe_holder(state, _now()),
            reason,
        )
        return True
    finally:
        with contextlib.suppress(Exception):
            client.delete_variable_by_name(token)


def _release(client: Any, family: str, lease_id: str | None, since: str | None) -> None:
    """Through the lease while the server knows it (it then never expires into a second release), else
    by decrementing the limit."""
    import httpx

    if lease_id:
        try:
            client.renew_concurrency_lease(UUID(lease_id), lease_duration=60)
        except (httpx.HTTPStatusError, ValueError):
            pass  # the server forgot the lease (a restart, a temporary server): decrement below
        else:
            client.release_concurrency_slots_with_lease(UUID(lease_id))
            return
    started = parse_time(since)
    occupied = max((_now() - started).total_seconds(), 1.0) if started else 1.0
    client.release_concurrency_slots(names=[family_lock_name(family)], slots=1, occupancy_seconds=occupied)


class _Heartbeat:
    """Renews the holder record every ``HEARTBEAT`` until stopped (a thread of the holding process)."""

    def __init__(self, write: Callable[[], None]) -> None:
        self.write = write
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bakery-family-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(min(HEARTBEAT, _lease() / 3).total_seconds()):
            try:
                self.write()
            except Exception as exc:  # a server blip: the next beat tries again; the lease allows misses
                log.warning("could not renew the family slot heartbeat: %s", exc)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()  # a beat in flight lands before the record is cleared and the slot released


class _QuietTimedOutAttempts(logging.Filter):
    """Prefect logs each timed-out acquisition attempt as an ERROR with its arguments; a waiting run's
    short attempts time out by design, and it says itself why it waits."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("ConcurrencySlotAcquisition" in text and "TimeoutError" in text)


def _quiet_attempts() -> None:
    """On Prefect's concurrency logger, once (its service thread logs after the attempt has returned)."""
    target = logging.getLogger("prefect._internal.concurrency")
    if not any(isinstance(f, _QuietTimedOutAttempts) for f in target.filters):
        target.addFilter(_QuietTimedOutAttempts())


def _current_run() -> tuple[str | None, str | None]:
    try:
        from prefect.runtime import flow_run

        return (str(flow_run.id) if flow_run.id else None), (flow_run.name or None)
    except Exception:
        return None, None


@contextlib.contextmanager
def family_lock(family: str, timeout_seconds: float | None = None, poll_seconds: float = 5) -> Iterator[None]:
    """Hold the family's slot for the block; waits while a live run holds it (``timeout_seconds``: then
    TimeoutError), saying so at once and every ``ANNOUNCE_EVERY``, and gives back a dead holder's slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency._leases import maintain_concurrency_lease
    from prefect.concurrency._sync import (
        acquire_concurrency_slots_with_lease,
        release_concurrency_slots_with_lease,
    )

    name = family_lock_name(family)
    ensure_limit(name)
    run_id, run_name = _current_run()
    lease_holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    last_said = 0.0
    taken_without_holder_since: datetime | None = None
    attempt = 1.0  # the first look is short: a waiting run says so at once
    while True:
        _quiet_attempts()
        try:
            acquired = acquire_concurrency_slots_with_lease(
                [name],
                1,
                timeout_seconds=max(attempt, 0.5),
                lease_duration=PREFECT_LEASE_SECONDS,
                strict=True,
                holder=lease_holder,
            )
            break
        except TimeoutError:
            if deadline is not None and time.monotonic() > deadline:
                raise
            attempt = poll_seconds
        with get_client(sync_client=True) as client:
            state = read_state(client, family)
            now = _now()
            if state.taken and recorded_holder(state) is None:
                taken_without_holder_since = taken_without_holder_since or now
            else:
                taken_without_holder_since = None
            reason = holder_gone(state, now, taken_without_holder_since)
            if reason is not None:
                if give_back(client, state, reason):
                    continue
            elif state.taken and time.monotonic() - last_said >= ANNOUNCE_EVERY.total_seconds():
                log.warning("%s", waiting_message(state, now))
                last_said = time.monotonic()

    lease_id = str(acquired.lease_id)
    since = _now()

    def record(renewal: bool = False) -> None:
        now = _now()
        holder = Holder(
            family=family,
            flow_run_id=run_id,
            flow_run_name=run_name,
            process=holders.this_process(),
            lease_id=lease_id,
            since=iso(since),
            heartbeat=iso(now),
            expires=iso(now + _lease()),
        )
        with get_client(sync_client=True) as client:
            current = client.read_variable_by_name(holder_variable(family))
            if current is None:
                if renewal:  # cleared: we are releasing, or a reclaimer judged us gone; never re-create it
                    return
                with contextlib.suppress(Exception):
                    client.create_variable(VariableCreate(name=holder_variable(family), value=holder.to_value()))
                    return
            elif renewal and getattr(Holder.from_value(current.value), "lease_id", None) != lease_id:
                return  # another holder's record now: a late beat must not overwrite it
            client.update_variable(VariableUpdate(name=holder_variable(family), value=holder.to_value()))

    try:
        record()
        with (
            maintain_concurrency_lease(acquired.lease_id, PREFECT_LEASE_SECONDS, raise_on_lease_renewal_failure=False),
            _Heartbeat(lambda: record(renewal=True)),
        ):
            log.info("holding the build slot of family %s (global concurrency limit %s)", family, name)
            yield
    finally:
        _clear_record(family, lease_id)
        try:
            release_concurrency_slots_with_lease(acquired.lease_id)
        except Exception as exc:
            log.warning("could not release the build slot of family %s: %s (a waiter gives it back)", family, exc)


def _clear_record(family: str, lease_id: str) -> None:
    """Remove our holder record (only ours: a reclaimer may have replaced it)."""
    from prefect.client.orchestration import get_client

    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(holder_variable(family))
        holder = Holder.from_value(variable.value) if variable is not None else None
        if holder is not None and holder.lease_id == lease_id:
            client.delete_variable_by_name(holder_variable(family))


def sweep_family_slots(apply: bool, max_age: timedelta | None = None) -> list[dict[str, str]]:
    """Every ``bakery-family-*`` slot whose holder is gone (``holder_gone``; a slot with no holder on
    record counts once it has been taken longer than ``max_age`` or the lease): given back with ``apply``.
    One row per taken slot: family, holder, decision, reason."""
    from prefect.client.orchestration import get_client

    rows: list[dict[str, str]] = []
    with get_client(sync_client=True) as client:
        limits = client.read_global_concurrency_limits(limit=200)
        for limit in limits:
            if not limit.name.startswith(LIMIT_PREFIX) or limit.active_slots < limit.limit:
                continue
            family = limit.name[len(LIMIT_PREFIX) :]
            state = read_state(client, family)
            now = _now()
            unrecorded_since = state.updated
            if max_age is not None and state.updated is not None and max_age < _lease():
                unrecorded_since = state.updated - (_lease() - max_age)  # taken longer than max_age counts
            reason = holder_gone(state, now, unrecorded_since)
            row = {"family": family, "holder": describe_holder(state, now), "decision": "keep"}
            if reason is None:
                row["reason"] = "its holder is running"
            elif not apply:
                row.update(decision="give back", reason=reason)
            else:
                done = give_back(client, state, reason)
                row.update(decision="given back" if done else "keep", reason=reason if done else "changed meanwhile")
            rows.append(row)
    return rows
