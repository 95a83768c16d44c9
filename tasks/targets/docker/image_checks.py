"""What the weekly rebuild reads from a Docker image itself: its pending updates, its base, its packages.

On the engine the family's stages live on: the base is the image's bottom layer; the pending updates and
the packages come from a throwaway container of the image (labelled like every run resource, so a sweep
finds a leftover, and removed).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import docker

from tasks.errors import JobFailed
from tasks.request import expires_at
from tasks.targets.base import NotChecked, iso
from tasks.targets.docker.client import client
from tasks.targets.docker.instances import LABEL_EXPIRES_AT, LABEL_FAMILY, LABEL_RUN_ID

log = logging.getLogger(__name__)


class DockerImageChecks:
    """``ImageChecks`` on ``engine`` (None: the local engine, connected on first use). ``in_registry``: the
    family's stages are in a registry, so no engine here is known to hold its images and nothing is read."""

    def __init__(self, engine: docker.DockerClient | None = None, *, in_registry: bool = False) -> None:
        self._engine = engine
        self.in_registry = in_registry

    def _on_engine(self) -> docker.DockerClient | None:
        if self.in_registry:
            return None
        if self._engine is None:
            self._engine = client()
        return self._engine

    def pending_updates(self, image_id: str, run_id: str, family: str) -> tuple[str, ...]:
        engine = self._on_engine()
        if engine is None:
            raise NotChecked("not checked (the stages are in a registry: no engine here is known to hold the image)")
        return pending_updates(engine, image_id, run_id, family)

    def base_of(self, image_id: str) -> str | None:
        try:
            engine = self._on_engine()
        except JobFailed:
            return None
        return base_layer(engine, image_id) if engine is not None else None

    def packages(self, image_id: str, run_id: str, family: str) -> dict[str, str] | None:
        try:
            engine = self._on_engine()
        except JobFailed as exc:
            log.warning("no package inventory of %s: %s", image_id[:19], exc)
            return None
        return inventory(engine, image_id, run_id, family) if engine is not None else None


def _labels(run_id: str, family: str) -> dict[str, str]:
    return {LABEL_RUN_ID: run_id, LABEL_EXPIRES_AT: iso(expires_at(timedelta(minutes=10))), LABEL_FAMILY: family}


def inventory(engine: docker.DockerClient, image_id: str, run_id: str, family: str) -> dict[str, str] | None:
    """``dpkg-query`` in a throwaway container without network (labelled so a sweep finds a leftover)."""
    try:
        output = engine.containers.run(
            image_id,
            entrypoint=["dpkg-query"],
            command=["-W", "-f=${Package}\\t${Version}\\n"],
            network_disabled=True,
            remove=True,
            labels=_labels(run_id, family),
        )
    except Exception as exc:  # an inventory is a nicety: say why there is none, never fail the rebuild
        log.warning("no package inventory of %s: %s", image_id[:19], exc)
        return None
    packages = {}
    for line in output.decode(errors="replace").splitlines():
        name, _, version = line.partition("\t")
        if name:
            packages[name] = version
    return packages or None


def base_layer(engine: docker.DockerClient, image_id: str) -> str | None:
    """The bottom layer of a Docker image: the imported base it was built from."""
    try:
        layers = engine.images.get(image_id).attrs["RootFS"]["Layers"]
    except Exception:
        return None
    return str(layers[0]) if layers else None


APT_CHECK = (
    "if ! command -v apt-get >/dev/null 2>&1; then echo no-apt; exit 0; fi; "
    "apt-get update -q -o Acquire::Languages=none >/tmp/bakery-apt-update.log 2>&1 "
    "|| { echo update-failed; tail -n 3 /tmp/bakery-apt-update.log; exit 0; }; "
    "echo apt; apt-get -s -q -o Debug::NoLocking=1 dist-upgrade 2>&1"
)


def apt_cache_dir(family: str) -> Path:
    """Package lists kept between checks (per family: apt locks its lists while updating), so a check
    only fetches what changed on the mirror. A cache: deleting it costs one full download."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "bakery" / "apt-lists" / family


def pending_updates(engine: docker.DockerClient, image_id: str, run_id: str, family: str) -> tuple[str, ...]:
    """Updates ``apt-get`` would install in ``image_id`` now, from a throwaway container of it.

    The container talks only to the package mirrors the image's own sources name (as the build did), is
    labelled like every run resource (a sweep finds a leftover) and is removed.

    Raises:
        RuntimeError: the image has no apt, the mirror cannot be reached, or the container fails.
    """
    from tasks.verify.resources.pending_updates import apt_pending

    cache = apt_cache_dir(family)
    (cache / "partial").mkdir(parents=True, exist_ok=True)
    output = engine.containers.run(
        image_id,
        entrypoint=["sh", "-c"],
        command=[APT_CHECK],
        remove=True,
        volumes={str(cache): {"bind": "/var/lib/apt/lists", "mode": "rw"}},
        labels=_labels(run_id, family),
    ).decode(errors="replace")
    first, _, rest = output.partition("\n")
    if first.strip() == "no-apt":
        raise RuntimeError("the image has no apt-get")
    if first.strip() != "apt":
        raise RuntimeError("apt-get update failed: " + " ".join(rest.split())[:200])
    return tuple(str(p) for p in apt_pending(rest))
