"""Run a validated spec over one SSH connection.

All facts but the channel checks come from ONE remote shell script (run as root through ``sudo -n``
when the login user is not root and sudo allows it), so a spec of any size costs one round trip.
Channel checks (``command``, ``http``, ``addr``, ``dns`` with ``server``) run beside it on the same
connection, concurrently, each on its own channel with its own timeout; ``matching`` needs no host.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko

from tasks import ssh
from tasks.targets.base import SshEndpoint
from tasks.verify import inventory, matchers
from tasks.verify.facts import Script
from tasks.verify.model import CheckResult, Fact, Resource, Unavailable, VerifyResult
from tasks.verify.resources import TYPES, command
from tasks.verify.spec import Spec, load_spec

# OpenSSH allows 10 sessions per connection (MaxSessions); stay below it.
MAX_CHANNELS = 8


def build_script(spec: Spec) -> Script:
    """The fact-gathering script for every non-command, non-skipped resource of ``spec``, and the
    package inventory (which ``package`` checks read as well)."""
    script = Script()
    inventory.gather(script)
    for name, kind in TYPES.items():
        items = [
            (i, r) for i, r in enumerate(spec.resources) if r.type == name and not r.skip and not kind.on_channel(r)
        ]
        if items and kind.gather:
            kind.gather(script, items)
    return script


def _found_text(found: Any) -> str:
    if isinstance(found, Unavailable):
        return str(found)
    if isinstance(found, str) and ("\n" in found or len(found) > 160 or not found):
        shown = repr(found[:120])
        return shown + (f"... ({len(found)} chars)" if len(found) > 120 else "")
    return matchers.show(found)


def evaluate(resource: Resource, found: dict[str, Any], duration: float = 0.0) -> list[CheckResult]:
    """One result per checked attribute of ``resource``."""
    results = []
    for attribute, matcher in resource.checks.items():
        value = found.get(attribute, Unavailable("not gathered"))
        note, shown = "", None
        if isinstance(value, Fact):
            value, note, shown = value.value, value.note, value.shown
        if isinstance(value, Unavailable):
            ok, message = False, ""  # the reason is the found value
        else:
            ok = matcher.test(value)
            message = "" if ok else matcher.explain(value)
        shown = (_found_text(value) if shown is None else shown) + (f" ({note})" if note else "")
        results.append(
            CheckResult(
                resource.type,
                resource.id,
                attribute,
                matcher.describe(),
                shown,
                ok,
                False,
                message,
                duration,
                resource.title,
                resource.meta,
            )
        )
    return results


def _skipped(resource: Resource) -> list[CheckResult]:
    return [
        CheckResult(
            resource.type,
            resource.id,
            a,
            m.describe(),
            "",
            False,
            True,
            "skip: true",
            0.0,
            resource.title,
            resource.meta,
        )
        for a, m in resource.checks.items()
    ]


def verify(client: paramiko.SSHClient, spec: Spec, *, sudo: bool = True, command_timeout: float = 30.0) -> VerifyResult:
    """Check every resource of ``spec`` on the host behind ``client``; never raises for a failed check.

    With ``sudo``, facts and commands run as root (``sudo -n``) when the login user is not root and
    sudo needs no password, as ``sudo goss validate`` would; otherwise as the login user, with a note.
    """
    started = time.monotonic()
    transport = client.get_transport()
    login = (transport.get_username() if transport else "") or ""
    peer = transport.getpeername() if transport else ("", "")
    elevate: ssh.Sudo = "if-available" if sudo else False
    script = build_script(spec)
    commands = [(i, r) for i, r in enumerate(spec.resources) if TYPES[r.type].on_channel(r) and not r.skip]

    stopped = threading.Event()  # set when this thread is interrupted: no check starts or retries after it

    def run_command(item: tuple[int, Resource]) -> tuple[int, list[CheckResult]]:
        index, resource = item
        run = TYPES[resource.type].run
        assert run is not None
        attempts, delay = command.attempts_of(resource)
        for attempt in range(1, attempts + 1):
            begun = time.monotonic()
            try:
                found = run(client, resource, default_timeout=command_timeout, sudo=elevate)
            except Exception as exc:  # a broken channel fails this check, not the whole run
                found = dict.fromkeys(resource.checks, Unavailable(f"{type(exc).__name__}: {exc}"))
            checked = evaluate(resource, found, time.monotonic() - begun)
            if all(c.ok for c in checked) or attempt == attempts or stopped.wait(delay):
                return index, checked
        raise AssertionError("unreachable")

    # The fact script and the commands share the connection, each on its own channel, all at once.
    with ThreadPoolExecutor(max_workers=min(MAX_CHANNELS, 1 + len(commands))) as pool:
        try:
            gathering = pool.submit(
                ssh.run, client, "exec /bin/sh -s", command_timeout, stdin=script.text.encode(), sudo=elevate
            )
            command_results = pool.map(run_command, commands)
            try:
                gathered = gathering.result()
            except Exception as exc:  # a broken connection fails the checks, it does not lose the report
                gathered = ssh.CommandResult(-1, b"", f"{type(exc).__name__}: {exc}".encode())
            results: dict[int, list[CheckResult]] = dict(command_results)
        except BaseException:
            _abandon_checks(client, pool, stopped)
            raise

    facts = script.parse(gathered.stdout)
    failure = ""
    if gathered.timed_out:
        failure = f"fact gathering timed out after {command_timeout:g} s"
    elif "meta.uid" not in facts:
        failure = f"fact gathering failed (exit {gathered.exit_status}): {gathered.err.strip()[:200]}"
    as_root = facts.uid == "0"
    notes = [failure] if failure else []
    if sudo and not as_root and not failure:
        notes.append(f"checks ran as {login} (uid {facts.uid}): sudo -n is not available, root-only facts may fail")

    gathered_checks = sum(len(r.checks) for r in spec.resources if not TYPES[r.type].on_channel(r) and not r.skip)
    per_check = gathered.duration / max(gathered_checks, 1)
    for index, resource in enumerate(spec.resources):
        kind = TYPES[resource.type]
        if resource.skip:
            results[index] = _skipped(resource)
        elif kind.on_channel(resource):
            continue
        elif failure and kind.gather is not None:
            results[index] = evaluate(resource, dict.fromkeys(resource.checks, Unavailable(failure)))
        else:
            observe = kind.observe
            assert observe is not None
            results[index] = evaluate(resource, observe(resource, index, facts), per_check)

    checks = tuple(c for index in sorted(results) for c in results[index])
    remote_user = f"{login} (as root)" if as_root and login != "root" else login
    packages = None if failure else inventory.parse(facts[inventory.SECTION].text)
    return VerifyResult(
        spec.path, f"{peer[0]}:{peer[1]}", checks, time.monotonic() - started, remote_user, tuple(notes), packages
    )


def _abandon_checks(client: paramiko.SSHClient, pool: ThreadPoolExecutor, stopped: threading.Event) -> None:
    """This thread was interrupted while the checks ran (SIGTERM: Prefect's handler raises here; Ctrl-C).
    Leaving the pool waits for its threads, and they sit in channel reads until their commands end, up to
    each check's timeout: stop retries, drop the checks not started yet and close the connection, which
    ends every open channel at once. The remote commands die with the test instance's teardown."""
    stopped.set()
    pool.shutdown(wait=False, cancel_futures=True)
    client.close()


def verify_endpoint(
    endpoint: SshEndpoint,
    spec_path: str | os.PathLike[str],
    *,
    ssh_timeout: float,
    command_timeout: float = 30.0,
    sudo: bool = True,
    known_keys: list[paramiko.PKey] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> VerifyResult:
    """Validate the spec (a bad one fails here, before connecting), connect once, verify, close.
    ``variables`` are the ``.Vars`` of a templated spec."""
    spec = load_spec(spec_path, variables)
    client = ssh.connect(endpoint, timeout=ssh_timeout, known_keys=known_keys)
    try:
        return verify(client, spec, sudo=sudo, command_timeout=command_timeout)
    finally:
        client.close()
