"""The weekly rebuild over two families vs the slowest single family, measured in the same run.

Each round runs, as whole processes against one running Prefect server: ``bake rebuild`` of family A
alone, of family B alone, and of A and B together (``--max-parallel 2``); the order rotates between
rounds so drift in machine load hits all three alike. Prints the medians and the ratio
``both / max(A, B)`` (target <= 1.3: two families cost little more than one).
Run: .venv/bin/python bench/rebuild_concurrency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._run import timed
from tests.support import remove_family
from tests.support.servers import prefect_server

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
