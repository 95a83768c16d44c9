"""The weekly rebuild over two families vs the slowest single family, measured in the same run.

Each round runs, as whole processes against one running Prefect server: ``bake rebuild`` of family A
alone, of family B alone, and of A and B together (``--max-parallel 2``); the order rotates between
rounds so drift in machine load hits all three alike. Prints the medians and the ratio
``both / max(A, B)`` (target <= 1.3: two families cost little more than one).

``--workers``: the team case instead (issue 12). A ``prefect server start`` with the pool and the
deployments of prefect.yaml; a weekly-rebuild run over both families started through the API fans out
one image-pipeline deployment run per family, timed from its creation to Completed, taken by one process
worker, or by two (each its own working directory and BAKERY_STATE_DIR, like two machines; the first takes
at most two runs at once). Prints the medians and ``two workers / one worker``.
Run: .venv/bin/python bench/rebuild_concurrency.py [--rounds N] [--workers]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._run import timed
from tests.support import remove_family
from tests.support.servers import (
    PREFECT,
    PrefectServer,
    prefect_server,
    running_prefect_server,
    running_process_worker,
    without_checkout,
)

REPO = Path(__file__).resolve().parents[1]
BAKE = str(Path(sys.executable).parent / "bake")
FAMILIES = ("bench-rebuild-a", "bench-rebuild-b")


def families_file(directory: Path, name: str, families: tuple[str, ...]) -> Path:
    path = directory / f"{name}.yaml"
    entries = [{"family": f, "template_dir": "packer", "targets": ["docker"]} for f in families]
    path.write_text(json.dumps({"families": entries}))  # JSON is YAML
    return path


def rebuild(families: Path, api_url: str, state: Path) -> float:
    env = {**os.environ, "PREFECT_API_URL": api_url, "BAKERY_STATE_DIR": str(state)}
    # --force: every round builds (a rebuild skips a family whose inputs did not change)
    command = [BAKE, "--json", "rebuild", "--families", str(families), "--max-parallel", "2", "--force"]
    elapsed, done = timed(command, REPO, env)
    results = [f["result"] for f in json.loads(done.stdout)["families"]]
    if not results or set(results) != {"staged"}:
        raise SystemExit(f"bake rebuild --families {families.name}: expected every family staged, got {results}")
    return elapsed


def _api(server: PrefectServer, method: str, path: str, body: object = None) -> object:
    """One API call; a busy server's 503 (SQLite locked under load) is tried again, as Prefect's client does."""
    import httpx

    for attempt in range(6):
        response = httpx.request(method, f"{server.url}{path}", json=body, timeout=30)
        if response.status_code not in (502, 503) or attempt == 5:
            break
        time.sleep(2**attempt)
    response.raise_for_status()
    return response.json() if response.content else None


def deploy(server: PrefectServer) -> dict[str, str]:
    """The pool and prefect.yaml's deployments (scheduled ones paused); deployment name -> id."""
    env = without_checkout(server.client_env())
    for command in (["work-pool", "create", "bakery-process", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
        done = subprocess.run([PREFECT, *command], cwd=REPO, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"prefect {' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    found = _api(server, "POST", "/deployments/filter", {})
    assert isinstance(found, list)
    for deployment in found:
        if deployment["schedules"]:
            _api(server, "PATCH", f"/deployments/{deployment['id']}", {"paused": True})
    return {d["name"]: d["id"] for d in found}


@contextlib.contextmanager
def workers(server: PrefectServer, directory: Path, count: int) -> Iterator[None]:
    """``count`` process workers on the pool (named after ``directory``), each in its own directory with its
    own state, once all are online; stopped by PID at the end."""
    names = [f"bench-{directory.name}-{n + 1}" for n in range(count)]
    with contextlib.ExitStack() as started:
        for n, name in enumerate(names):
            machine = directory / f"machine-{n + 1}"
            machine.mkdir(parents=True, exist_ok=True)
            limit = 2 if count > 1 and n == 0 else None
            started.enter_context(
                running_process_worker(server, machine, limit, name=name, PREFECT_WORKER_QUERY_SECONDS="2")
            )
        deadline = time.monotonic() + 120
        while True:
            online = _api(server, "POST", "/work_pools/bakery-process/workers/filter", {})
            assert isinstance(online, list)
            if sum(w.get("status") == "ONLINE" and w.get("name") in names for w in online) == count:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{count} workers did not come online; see {directory}/machine-*/worker.log")
            time.sleep(1)
        yield


def rebuild_through_the_api(server: PrefectServer, rebuild_id: str, families: Path) -> float:
    """A weekly-rebuild run created through the API, timed to Completed; every family must be staged."""
    started = time.monotonic()
    created = _api(
        server,
        "POST",
        f"/deployments/{rebuild_id}/create_flow_run",
        {"parameters": {"families_file": str(families), "force": True}},
    )
    assert isinstance(created, dict)
    while True:
        run = _api(server, "GET", f"/flow_runs/{created['id']}")
        assert isinstance(run, dict)
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    elapsed = time.monotonic() - started
    children = _api(server, "POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    assert isinstance(children, list)
    if run["state_type"] != "COMPLETED" or sorted(c["state_type"] for c in children) != ["COMPLETED"] * len(FAMILIES):
        raise SystemExit(f"rebuild {run['name']}: {run['state_type']}, pipelines {[c['state_type'] for c in children]}")
    return elapsed


def team_main(rounds: int) -> None:
    times: dict[str, list[float]] = {"one worker": [], "two workers": []}
    try:
        with running_prefect_server() as server, tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            both = families_file(directory, "both", FAMILIES)
            rebuild_id = deploy(server)["weekly-rebuild"]
            with workers(server, directory / "warm-up", 1):
                rebuild_through_the_api(server, rebuild_id, both)  # warm-up: caches, first production
            for round_ in range(rounds):
                for name in list(times)[round_ % 2 :] + list(times)[: round_ % 2]:
                    case = directory / f"round-{round_}-{name.replace(' ', '-')}"
                    with workers(server, case, 1 if name == "one worker" else 2):
                        times[name].append(rebuild_through_the_api(server, rebuild_id, both))
                    print(f"round {round_ + 1}: {name:>11} {times[name][-1]:6.2f} s", file=sys.stderr)
    finally:
        for family in FAMILIES:
            remove_family(docker.from_env(), family)
    one, two = (statistics.median(times[k]) for k in times)
    for name, median in zip(times, (one, two), strict=True):
        print(f"{name:<12}: median {median:.2f} s  {[round(t, 2) for t in times[name]]}")
    print(f"ratio two workers / one worker: {two / one:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", action="store_true", help="the team case: one worker vs two, through the API")
    args = parser.parse_args()
    if args.workers:
        team_main(args.rounds)
        return
    times: dict[str, list[float]] = {"a": [], "b": [], "both": []}
    try:
        with prefect_server() as api_url, tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            files = {
                "a": families_file(directory, "a", FAMILIES[:1]),
                "b": families_file(directory, "b", FAMILIES[1:]),
                "both": families_file(directory, "both", FAMILIES),
            }
            rebuild(files["both"], api_url, directory / "state")  # warm-up: caches, first production
            order = list(files)
            for round_ in range(args.rounds):
                for name in order[round_ % 3 :] + order[: round_ % 3]:
                    times[name].append(rebuild(files[name], api_url, directory / "state"))
                    print(f"round {round_ + 1}: {name:>4} {times[name][-1]:6.2f} s", file=sys.stderr)
    finally:
        for family in FAMILIES:
            remove_family(docker.from_env(), family)
    a, b, both = (statistics.median(times[k]) for k in ("a", "b", "both"))
    slowest = max(a, b)
    print(f"family A alone : median {a:.2f} s  {[round(t, 2) for t in times['a']]}")
    print(f"family B alone : median {b:.2f} s  {[round(t, 2) for t in times['b']]}")
    print(f"A and B        : median {both:.2f} s  {[round(t, 2) for t in times['both']]}")
    print(f"ratio both/slowest single: {both / slowest:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
