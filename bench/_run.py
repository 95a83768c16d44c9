"""What every benchmark does around its measurements: time a whole process (removing what it built is
``tests.support.remove_family``, shared with the tests)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path


def timed(
    args: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one whole process; a failure ends the bench with the command and its output."""
    started = time.monotonic()
    done = subprocess.run(args, cwd=cwd, env=dict(env or os.environ), capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        output = done.stdout[-2000:] + done.stderr[-3000:]
        raise SystemExit(f"{shlex.join(args)[:200]} failed ({done.returncode}):\n{output}")
    return elapsed, done
