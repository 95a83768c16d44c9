"""A "machine" that takes a family's registry promotion lock a few times, holding it a moment each time and
writing when it entered and left (one JSON line each) to a file: tests/e2e/test_registry_promotion_slot.py
runs two of these at once with different BAKERY_STATE_DIRs.

    python -m tests.e2e.promotion_slot_holder REGISTRY FAMILY OUT ROUNDS HOLD_SECONDS
"""

from __future__ import annotations

import json
import os
import sys
import time

from tasks.targets.docker.image_registry import parse_registry
from tasks.targets.docker.registry_stages import RegistryStages


def main(registry: str, family: str, out: str, rounds: int, hold: float) -> None:
    stages = RegistryStages(parse_registry(registry))
    for n in range(rounds):
        with stages.lock(family, f"holder-{os.getpid()}-{n}"):
            entered = time.time()
            time.sleep(hold)
            with stages.update(family) as record:  # a record write inside the lock does not take it again
                record.setdefault("holders", []).append(f"{os.getpid()}-{n}")
            left = time.time()
        with open(out, "a") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "entered": entered, "left": left}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
