"""Who holds a lock or a slot, as one short text any other process can judge: ``host:pid:start``.

``start`` is the process's start time in clock ticks since boot (``/proc/<pid>/stat``, field 22), so a
pid the kernel has since given to another process does not look alive. Only a process on the same
host can be judged dead at once (its pid is gone, or started at another time); a holder on another host
is judged by its lease or heartbeat alone.
"""

from __future__ import annotations

import os
import socket
from functools import cache


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot; ``None`` when there is no such process."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 (one read)
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@cache
def this_process() -> str:
    """This process as a holder: ``host:pid:start``."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid()) or '?'}"


def dead_here(holder: str | None) -> bool:
    """True when ``holder`` names a process of this host that no longer runs (the pid is gone or reused).

    Any other holder (another host, an unreadable text) is not judged here: False.
    """
    if not holder:
        return False
    host, _, rest = holder.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or not start or start == "?":
        return False
    return process_start(int(pid_text)) != start
