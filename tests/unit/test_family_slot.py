"""The family build slot's holder rules (tasks/locks.py, tasks/holders.py), without a server."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta

from tasks import holders
from tasks.steps import locks
from tasks.steps.locks import Holder, SlotState
from tasks.targets.base import iso

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def holder(process: str = "", expires: timedelta = timedelta(minutes=2), state: str = "holding") -> Holder:
    return Holder(
        family="app-base",
        flow_run_id="5a0c5e4e-1b2f-4c0e-9d53-7d1f7a0f1c11",
        flow_run_name="amber-fox",
        process=process or holders.this_process(),
        lease_id=None,
        since=iso(NOW - timedelta(minutes=10)),
        heartbeat=iso(NOW - timedelta(seconds=20)),
        expires=iso(NOW + expires),
        state=state,
    )


def taken(h: Holder | None, run_state: str | None = "Running", updated: datetime | None = None) -> SlotState:
    return SlotState(
        "app-base",
        exists=True,
        limit=1,
        active_slots=1,
        updated=updated or NOW - timedelta(minutes=10),
        holder=h,
        holder_value=h.to_value() if h else None,
        run_state=run_state,
        run_state_type=run_state.upper() if run_state else None,
    )


def dead_process() -> str:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return f"{holders.this_process().split(':')[0]}:{finished.pid}:12345"


def test_a_live_holder_is_waited_for() -> None:
    assert locks.holder_gone(taken(holder()), NOW, None) is None


def test_a_holder_whose_process_is_gone_is_given_back_at_once() -> None:
    reason = locks.holder_gone(taken(holder(process=dead_process())), NOW, None)
    assert reason is not None and "is gone" in reason


def test_a_holder_whose_run_ended_is_given_back() -> None:
    reason = locks.holder_gone(taken(holder(), run_state="Crashed"), NOW, None)
    assert reason == "its flow run is Crashed"


def test_a_holder_on_another_host_goes_when_its_heartbeat_stops() -> None:
    elsewhere = "another-host:4242:999"
    assert locks.holder_gone(taken(holder(process=elsewhere)), NOW, None) is None
    reason = locks.holder_gone(taken(holder(process=elsewhere, expires=-timedelta(seconds=1))), NOW, None)
    assert reason is not None and "heartbeat stopped" in reason


def test_a_slot_taken_with_no_holder_on_record_is_given_back_after_a_lease() -> None:
    assert locks.holder_gone(taken(None), NOW, NOW - timedelta(minutes=1)) is None
    reason = locks.holder_gone(taken(None), NOW, NOW - locks.HOLDER_LEASE)
    assert reason is not None and "no holder on record" in reason
    reclaimed = holder(state="reclaimed")
    assert locks.holder_gone(taken(reclaimed), NOW, NOW - locks.HOLDER_LEASE) is not None


def test_a_free_slot_is_never_given_back() -> None:
    state = taken(holder(process=dead_process()))
    state.active_slots = 0
    assert locks.holder_gone(state, NOW, None) is None


def test_the_waiting_message_says_who_holds_it_and_how_to_free_it() -> None:
    message = locks.waiting_message(taken(holder()), NOW)
    for part in ("family app-base is busy", "bakery-family-app-base", "amber-fox", "Running", "since", "bake sweep"):
        assert part in message, message


def test_holder_records_read_back_and_garbage_is_no_holder() -> None:
    h = holder()
    assert Holder.from_value(h.to_value()) == h
    assert Holder.from_value("not json") is None
    assert Holder.from_value({"family": "x"}) is None


def test_variable_names_are_valid_for_every_family() -> None:
    names = {locks.holder_variable(f) for f in ("app-base", "app.base", "app_base")}
    assert len(names) == 3
    assert all(re.fullmatch(r"[a-z0-9_-]+", n) for n in names)


def test_this_process_is_alive_and_a_reused_pid_is_not() -> None:
    me = holders.this_process()
    assert not holders.dead_here(me)
    host, pid, _ = me.split(":")
    assert holders.dead_here(f"{host}:{pid}:1")  # same pid, another start time: not this process
    assert not holders.dead_here(f"elsewhere:{pid}:1")
    assert not holders.dead_here(None)


def test_a_record_older_than_the_slots_last_change_describes_nobody() -> None:
    """A new holder took the slot after the recorded one died and has not written its record yet: the
    dead record must not get the new holder's slot given back; it counts as no holder on record."""
    state = taken(holder(process=dead_process()), updated=NOW)
    assert locks.recorded_holder(state) is None
    assert locks.holder_gone(state, NOW, NOW) is None
    assert "no run on record" in locks.describe_holder(state, NOW)
