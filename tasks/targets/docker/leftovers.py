"""Docker leftovers for the sweep: test containers carrying ``bakery.run-id``, and Packer's build containers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import docker.errors

from tasks.errors import JobFailed
from tasks.targets.base import Leftover, key, parse_time
from tasks.targets.docker.client import PACKER_BUILDER_PREFIX, client, container_name
from tasks.targets.docker.instances import LABEL_EXPIRES_AT, LABEL_RUN_ID


class DockerLeftovers:
    """Containers carrying ``bakery.run-id`` (test instances), and Packer's build containers by name."""

    provider = "docker"

    def __init__(self, engine: Any = None) -> None:
        if engine is None:
            engine = client()
        self.engine = engine

    def find(self) -> list[Leftover]:
        try:
            listed = self.engine.api.containers(all=True, filters={"label": LABEL_RUN_ID})
            builders = self.engine.api.containers(all=True, filters={"name": PACKER_BUILDER_PREFIX})
        except docker.errors.DockerException as exc:
            raise JobFailed(f"docker: listing labelled containers failed: {exc}") from exc
        found = [self._builder(c) for c in builders if container_name(c).startswith(PACKER_BUILDER_PREFIX)]
        for c in listed:
            labels = c.get("Labels") or {}
            purpose = labels.get("bakery.purpose", "test")
            found.append(
                Leftover(
                    provider=self.provider,
                    kind="container",
                    id=c["Id"],
                    name=container_name(c),
                    run_id=labels.get(LABEL_RUN_ID, ""),
                    created=datetime.fromtimestamp(int(c.get("Created", 0)), UTC) if c.get("Created") else None,
                    expires_at=parse_time(labels.get(LABEL_EXPIRES_AT)),
                    extra={"state": str(c.get("State", "")), "purpose": purpose},
                )
            )
        return found

    def _builder(self, c: dict[str, Any]) -> Leftover:
        """Packer's build container, named (not labelled: labels would be committed into the image)."""
        name = container_name(c)
        return Leftover(
            provider=self.provider,
            kind="container",
            id=c["Id"],
            name=name,
            run_id=name.removeprefix(PACKER_BUILDER_PREFIX),
            created=datetime.fromtimestamp(int(c["Created"]), UTC) if c.get("Created") else None,
            labelled=False,
            extra={"state": str(c.get("State", "")), "purpose": "packer-builder"},
        )

    def protect(self, leftovers: list[Leftover]) -> list[Leftover]:
        return leftovers

    def remove(self, leftovers: Sequence[Leftover]) -> dict[str, str]:
        results = {}
        for item in leftovers:
            try:
                self.engine.api.remove_container(item.id, force=True, v=True)
            except docker.errors.NotFound:
                results[key(item)] = "already gone"
            except docker.errors.APIError as exc:
                results[key(item)] = f"failed: {exc}"
            else:
                results[key(item)] = "removed"
        return results
