"""`bake` with a seam that SIGKILLs its own process at one stage write, as a power loss or the OOM killer
would: no ``finally``, no hook, no lock release but the kernel's.

    python -m tests.reliability.kill_seam STAGE IMAGE_ID BAKE-ARGS...

kills the process when the promotion store (Docker or AWS) is about to write ``STAGE`` on ``IMAGE_ID``:
for ``production`` on the new image, that is between "demote the old production" and "write the new one".
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def arm(stage: str, image_id: str) -> None:
    from tasks.targets.aws.stages import AmiStages
    from tasks.targets.docker.stages import DockerStages

    for store in (DockerStages, AmiStages):
        real = store.write

        def write(self: Any, image: Any, to: str, run_id: str, tags: dict[str, str], _real: Any = real) -> None:
            if (image.id, to) == (image_id, stage):
                os.kill(os.getpid(), signal.SIGKILL)
            _real(self, image, to, run_id, tags)

        store.write = write  # type: ignore[method-assign]


if __name__ == "__main__":
    from flows.cli import main

    arm(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
