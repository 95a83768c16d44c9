"""command: exit-status, stdout, stderr — each command on its own SSH channel with its own timeout.

goss's ``timeout`` is in milliseconds (0 or unset: the verify run's command timeout). A command past its
timeout is killed and every attribute of it fails with "timed out". ``exec`` is the command to run when
the key is only a name. As goss's ``retry_count``/``retry_delay``: a command whose checks fail is run again
up to ``retry_count`` more times, ``retry_delay`` apart (milliseconds or ``2s``; 0 or unset: 1 s).
"""

from __future__ import annotations

from typing import Any

import paramiko

from tasks import ssh
from tasks.verify.model import Resource, Unavailable
from tasks.verify.resources.base import ResourceType

# goss is usually run as root, with the sbin directories on PATH.
PATH_PREFIX = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH; '


def timeout_of(resource: Resource, default: float) -> float:
    milliseconds = resource.options.get("timeout")
    return milliseconds / 1000 if milliseconds else default


def attempts_of(resource: Resource) -> tuple[int, float]:
    """How many times to run the command at most, and the seconds between runs (goss's retry)."""
    delay_ms = resource.options.get("retry_delay") or 1000.0
    return int(resource.options.get("retry_count", 0)) + 1, delay_ms / 1000


def run(client: paramiko.SSHClient, resource: Resource, *, default_timeout: float, sudo: ssh.Sudo) -> dict[str, Any]:
    """Found values for the command's attributes."""
    timeout = timeout_of(resource, default_timeout)
    try:
        result = ssh.run(client, PATH_PREFIX + resource.target, timeout, sudo=sudo)
    except Exception as exc:  # a broken channel fails this check, not the whole run
        failed = Unavailable(f"could not run: {type(exc).__name__}: {exc}")
        return dict.fromkeys(TYPE.checks, failed)
    if result.timed_out:
        return dict.fromkeys(TYPE.checks, Unavailable(f"timed out after {timeout:g} s, killed"))
    return {"exit-status": result.exit_status, "stdout": result.out, "stderr": result.err}


TYPE = ResourceType(
    name="command",
    checks={"exit-status": "int", "stdout": "text", "stderr": "text"},
    options={"exec": "str", "timeout": "ms", "retry_count": "count", "retry_delay": "delay"},
    target_option="exec",
    target_pattern=r"(?s).*\S.*",
    target_hint="a shell command",
    run=run,
)
