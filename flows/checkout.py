"""The deployments' pull step: run each flow from a bakery checkout, whichever worker takes it.

``prefect deploy`` records the directory it ran in (the build step ``checkout`` in prefect.yaml, Prefect's own
convention for local code); on the worker, ``BAKERY_CHECKOUT`` overrides it (a worker on another machine keeps
its checkout elsewhere). A directory that holds no bakery checkout ends the run in one line saying what to set,
rather than with Prefect's traceback about a flow file missing in a temporary directory.

Only the standard library and Prefect here: the step runs before the flow's own code can be imported.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

CHECKOUT_ENV = "BAKERY_CHECKOUT"
PROJECT_MARKER = Path("flows") / "pipeline.py"


class NoCheckout(RuntimeError):
    """The directory a run should start in holds no bakery checkout."""


def checkout_directory(registered: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """The checkout a run starts in: ``$BAKERY_CHECKOUT`` if set, else the directory ``prefect deploy`` ran in.

    Raises NoCheckout, with one line naming what to set, when that directory holds no bakery project.
    """
    override = (environ.get(CHECKOUT_ENV) or "").strip()
    if override:
        directory, source = Path(override).expanduser(), f"{CHECKOUT_ENV}={override}"
    elif registered and registered.strip() and "{{" not in registered:
        directory, source = Path(registered.strip()), f"the checkout the deployment was registered from ({registered})"
    else:
        raise NoCheckout(
            f"no bakery checkout known for this run: set {CHECKOUT_ENV} in the worker's environment to the "
            "directory holding prefect.yaml and flows/ (or register the deployments again from that directory)"
        )
    if not (directory / PROJECT_MARKER).is_file():
        raise NoCheckout(
            f"{source}: no bakery checkout there ({PROJECT_MARKER} missing); set {CHECKOUT_ENV} in the worker's "
            "environment to the directory holding prefect.yaml and flows/"
        )
    return directory.resolve()


def enter_checkout(directory: str | None = None) -> dict[str, str]:
    """Prefect pull step: change into the checkout (see ``checkout_directory``) and return it as ``directory``.

    When there is none, the flow run is marked Crashed with the one-line reason (not Prefect's generic
    "infrastructure exited" message) before the step fails.
    """
    try:
        chosen = checkout_directory(directory)
    except NoCheckout as exc:
        _crash_flow_run(str(exc))
        raise
    os.chdir(chosen)
    return {"directory": str(chosen)}


def _crash_flow_run(message: str) -> None:
    """Put the reason on the flow run this process executes (``PREFECT__FLOW_RUN_ID``), if there is one."""
    flow_run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not flow_run_id:
        return
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
    except Exception:  # the step's own error still says it; a server hiccup must not hide it
        return


COMMIT_PATTERN = re.compile(r"^[0-9a-f]{7,40}$")


def check_commit(commit: str, directory: Path | None = None) -> str:
    """The commit a CI pipeline asked to build (the ``commit`` parameter): the checkout the run starts in must
    be at it, or the image would be built from other templates than the ones CI validated.

    Empty: no check. Not a hex commit id, or the checkout at another commit: UsageError in one line (the run
    fails before anything is built). A directory that is not a git checkout cannot be told: allowed.
    """
    from tasks.errors import UsageError

    commit = commit.strip().lower()
    if not commit:
        return ""
    if not COMMIT_PATTERN.match(commit):
        raise UsageError(f"commit {commit!r}: expected a git commit id (7-40 hex digits)")
    where = directory or Path.cwd()
    head = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=False
    )
    if head.returncode != 0:
        return commit
    found = head.stdout.strip()
    if not found.startswith(commit):
        raise UsageError(
            f"commit {commit}: the checkout this run uses ({where}) is at {found[:12]}; update it "
            f"(git fetch && git checkout {commit[:12]}) before running this commit"
        )
    return found
