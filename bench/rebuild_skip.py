"""The weekly rebuild when nothing changed vs a full rebuild, measured in the same run.

Two families, each with its own copy of the shipped templates, against one running Prefect server, as
whole ``bake rebuild`` processes: a full rebuild (``--force``), then a rebuild right after it, where
nothing changed and both families are skipped (target: at least 5x faster). Then one template file of
family A is touched, and the next rebuild must build exactly family A.
Run: .venv/bin/python bench/rebuild_skip.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
FAMILIES = ("bench-skip-a", "bench-skip-b")


def rebuild(families: Path, api_url: str, state: Path, *extra: str) -> tuple[float, list[dict[str, object]]]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "BAKERY_STATE_DIR": str(state)}
    command = [BAKE, "--json", "rebuild", "--families", str(families), "--max-parallel", "2", *extra]
    elapsed, done = timed(command, REPO, env)
    return elapsed, json.loads(done.stdout)["families"]


def expect(summary: list[dict[str, object]], wanted: dict[str, str], what: str) -> None:
    results = {str(f["family"]): str(f["result"]) for f in summary}
    if results != wanted:
        # The whole per-family summary says why: the reason a family was built or skipped.
        raise SystemExit(f"{what}: expected {wanted}, got {json.dumps(summary, indent=2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    full: list[float] = []
    skip: list[float] = []
    try:
        with prefect_server() as api_url, tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            entries = []
            for family in FAMILIES:
                templates = directory / family
                shutil.copytree(REPO / "packer", templates, ignore=shutil.ignore_patterns("packer_cache", "*.json"))
                entries.append({"family": family, "template_dir": str(templates), "targets": ["docker"]})
            families = directory / "families.yaml"
            families.write_text(json.dumps({"families": entries}))  # JSON is YAML
            state = directory / "state"
            for round_ in range(args.rounds):
                elapsed, results = rebuild(families, api_url, state, "--force")
                expect(results, dict.fromkeys(FAMILIES, "staged"), "full rebuild")
                full.append(elapsed)
                elapsed, results = rebuild(families, api_url, state)
                expect(results, dict.fromkeys(FAMILIES, "skipped"), "rebuild with nothing changed")
                skip.append(elapsed)
                print(f"round {round_ + 1}: full {full[-1]:6.2f} s, unchanged {skip[-1]:6.2f} s", file=sys.stderr)
            touched = directory / FAMILIES[0] / "build.pkr.hcl"
            touched.write_text(touched.read_text() + "\n# touched by bench/rebuild_skip.py\n")
            elapsed, results = rebuild(families, api_url, state)
            expect(results, {FAMILIES[0]: "staged", FAMILIES[1]: "skipped"}, f"rebuild after touching {touched.name}")
    finally:
        for family in FAMILIES:
            remove_family(docker.from_env(), family)
    full_median, skip_median = statistics.median(full), statistics.median(skip)
    print(f"full rebuild (--force), 2 families : median {full_median:.2f} s  {[round(t, 2) for t in full]}")
    print(f"rebuild, nothing changed          : median {skip_median:.2f} s  {[round(t, 2) for t in skip]}")
    print(f"touched one template of {FAMILIES[0]}  : {elapsed:.2f} s, built {FAMILIES[0]} only")
    print(f"ratio full/unchanged: {full_median / skip_median:.1f}x  (target >= 5)")


if __name__ == "__main__":
    main()
