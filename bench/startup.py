"""The start-up tax of a `bake` command without PREFECT_API_URL: before (a temporary Prefect server per
command) and after (bakery's local server, started on first use and reused), in the same run.

The command is a dry-run ``bake retention --target docker --family <unused>``: its own work (the plan) takes
about 0.1 s, so nearly all of its time is start-up. Measured as whole processes, in interleaved rounds:

- before: ``BAKERY_LOCAL_SERVER=off``, no PREFECT_API_URL: Prefect's temporary server per command (the
  behaviour until 2026-12-07, kept behind that switch);
- after: no PREFECT_API_URL, a fresh BAKERY_STATE_DIR: the first command starts the local server (timed
  apart, as "first use"); the rounds time the later commands;
- reference: PREFECT_API_URL pointing at a `prefect server start` of its own (a team's server).

Prints the medians, before/after and after/reference. Targets: after - reference < 3 s (the later commands
pay only for their own work); before/after well above 1. The local server is stopped at the end.

Run: .venv/bin/python bench/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._run import timed
from tests.support.servers import prefect_server

REPO = Path(__file__).resolve().parents[1]
BAKE = str(Path(sys.executable).parent / "bake")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    family = f"startup-{uuid.uuid4().hex[:6]}"
    command = [BAKE, "retention", "--target", "docker", "--family", family]

    with prefect_server() as api_url, tempfile.TemporaryDirectory() as tmp:
        base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "BAKERY_LOCAL_SERVER")}
        base.update(BAKERY_LOG_LEVEL="WARNING", PREFECT_HOME=str(Path(tmp) / "client-home"))
        envs = {
            "before": {
                **base,
                "BAKERY_LOCAL_SERVER": "off",
                "BAKERY_STATE_DIR": str(Path(tmp) / "before"),
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # its 20 s default fails when loaded
            },
            "after": {**base, "BAKERY_STATE_DIR": str(Path(tmp) / "after")},
            "reference": {**base, "PREFECT_API_URL": api_url, "BAKERY_STATE_DIR": str(Path(tmp) / "reference")},
        }
        try:
            first_use, done = timed(command, cwd=REPO, env=envs["after"])
            assert "started a local Prefect server" in done.stderr, done.stderr
            print(f"first use (starts the local server): {first_use:.2f} s", flush=True)
            times: dict[str, list[float]] = {name: [] for name in envs}
            for round_no in range(opts.rounds):
                order = list(envs)[round_no % 3 :] + list(envs)[: round_no % 3]
                for name in order:
                    elapsed, _ = timed(command, cwd=REPO, env=envs[name])
                    times[name].append(elapsed)
                print("round", round_no + 1, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
        finally:
            subprocess.run([BAKE, "server", "stop"], env=envs["after"], capture_output=True, check=False)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"before (temporary server per command) {median['before']:.2f} s, "
        f"after (local server, later commands) {median['after']:.2f} s, "
        f"reference (PREFECT_API_URL) {median['reference']:.2f} s"
    )
    print(
        f"before/after {median['before'] / median['after']:.1f}x; "
        f"after - reference {median['after'] - median['reference']:+.2f} s (target < 3 s); "
        f"after/reference {median['after'] / median['reference']:.2f}"
    )


if __name__ == "__main__":
    main()
