"""The one interface every target implements, and the records passed between pipeline steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

STAGES = ("testing", "staging", "production", "superseded", "failed")
# A test moves only these to ``staging``/``failed``; any other stage was earned and stays (CONTRACT).
TESTABLE_STAGES = (None, "testing")
TAG_LAST_TESTED = "bakery:last-tested"
TAG_LAST_RESULT = "bakery:last-result"
TAG_LAST_TEST_RUN = "bakery:last-test-run"


@dataclass(frozen=True)
class Run:
    """One pipeline run: its id, its files, its SSH key pair, and when what it creates expires.

    ``private_key`` lives in a per-run 0700 directory that is removed when the run ends.
    """

    run_id: str
    family: str
    workdir: Path
    expires_at: datetime
    private_key: Path
    public_key: str


@dataclass(frozen=True)
class Image:
    """A built image as a target knows it."""

    target: str
    id: str
    family: str
    version: str
    name: str = ""
    created: datetime | None = None
    stage: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Instance:
    """A test instance launched from an image; ``id`` is what ``teardown`` needs."""

    target: str
    id: str
    image_id: str
    run_id: str

    @property
    def label(self) -> str:
        """The id as people read it: a Docker id shortened to 12 characters, a cloud id (``i-…``) whole."""
        return self.id[:12] if len(self.id) == 64 else self.id


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach an instance over SSH, with the host key pinned (``"TYPE BASE64"``)."""

    host: str
    port: int
    user: str
    key_path: Path
    host_key: str


class Target(Protocol):
    """What the pipeline, retention and sweep need from a place images live."""

    name: str

    def image_from_artifact(self, artifact_id: str, family: str, version: str) -> Image: ...

    def adopt_build(self, artifact_id: str, family: str, version: str, run_id: str) -> Image:
        """The built image with the names, tags and labels bakery relies on written by bakery itself."""
        ...

    def launch(self, image: Image, run: Run) -> Instance: ...

    def endpoint(self, instance: Instance, run: Run) -> SshEndpoint: ...

    def teardown(self, instance: Instance) -> None: ...

    def set_stage(self, image: Image, stage: str, run_id: str) -> None: ...

    def current_stage(self, image: Image) -> str | None:
        """The image's stage as stored now (read again, not the value of ``image``)."""
        ...

    def record_test_result(self, image: Image, result: str, run_id: str) -> None:
        """A test's result (``passed``/``failed``) kept beside an image whose stage a test must not move."""
        ...
