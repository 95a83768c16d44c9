"""The interfaces every target implements, and the records passed between targets and the domain code.

Nothing here imports another bakery module or a platform SDK: the pipeline steps, the promotion
algorithm, the retention planner, the sweep rules and each target under ``tasks/targets/<name>/`` all
build on this module, so none of them needs to import another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tasks.errors import JobFailed

if TYPE_CHECKING:  # types only: the request and registry modules build on this one
    from tasks.request import AwsOptions
    from tasks.targets.docker.image_registry import Registry

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
        return short_id(self.id)


def short_id(resource_id: str) -> str:
    """An id as people read it: a Docker engine id (64 hex digits) shortened to 12 characters, as ``docker``
    shows it; a cloud id (``i-…``, ``sg-…``) whole."""
    is_engine_id = len(resource_id) == 64 and all(c in "0123456789abcdef" for c in resource_id)
    return resource_id[:12] if is_engine_id else resource_id


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

    def release(self, image: Image) -> list[str]:
        """A run is done with ``image``: copies of it this machine holds only for the run go (the image
        itself stays where it lives). Never fails the run: what cannot go now stays. What went, by name."""
        ...


# --- time: one format in records (``2026-01-02T03:04:05+00:00``), both forms read ---------------------

TAG_STATUS = "status"
TAG_STAGED_AT = "bakery:staged-at"
TAG_PROMOTED_AT = "bakery:promoted-at"
TAG_SUPERSEDED_AT = "bakery:superseded-at"
TAG_RUN_ID = "bakery:run-id"
TAG_FORCED = "bakery:forced"
TAG_INTENT = "bakery:promotion-intent"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str:
    """The one time format of bakery's records, tags, labels and reports: UTC to the second,
    ``2026-01-02T03:04:05+00:00`` (what stored records already use); empty for no time."""
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


def parse_time(text: str | datetime | None) -> datetime | None:
    """A UTC time from a tag, label or record (``...+00:00`` as bakery writes it, or ``...Z`` as older
    reports and other tools do) or from an SDK's own datetime; ``None`` for missing or unreadable values.
    A time without a zone is taken as UTC."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def human(delta: timedelta) -> str:
    """``1d 2h 3m``-style; negative deltas read as 0m."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    parts.append(f"{mins}m")
    return " ".join(parts)


# --- stages, for promotion ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedImage:
    """An image of a family with its stage and the times promotion cares about."""

    id: str
    family: str
    version: str
    name: str
    stage: str | None
    created: datetime | None = None
    staged_at: datetime | None = None
    promoted_at: datetime | None = None
    superseded_at: datetime | None = None

    @property
    def label(self) -> str:
        short = self.id if len(self.id) <= 24 else self.id[:19]  # AMI ids whole, sha256 ids cut
        return f"{self.name} ({short})" if self.name else self.id


@dataclass(frozen=True)
class Change:
    """One stage write: ``image`` went from ``before`` to ``after``."""

    image: str
    name: str
    before: str | None
    after: str


@dataclass
class PromotionRecord:
    """What one promote/rollback did; becomes the Prefect artifact and the ``--json`` output."""

    action: str
    target: str
    family: str
    image: str
    name: str
    to: str
    at: datetime
    run_id: str
    changes: list[Change] = field(default_factory=list)
    forced: bool = False
    soaked: timedelta | None = None
    min_soak: timedelta | None = None
    previous_production: str | None = None
    production: str | None = None
    notes: list[str] = field(default_factory=list)
    published: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = iso(self.at)
        data["soaked"] = human(self.soaked) if self.soaked is not None else None
        data["min_soak"] = human(self.min_soak) if self.min_soak is not None else None
        return data

    def to_markdown(self) -> str:
        title = "Rollback" if self.action == "rollback" else f"Promotion to {self.to}"
        lines = [
            f"# {title}: {self.family} on {self.target}",
            "",
            f"- **image**: `{self.name}` (`{self.image}`)",
            f"- **when**: {iso(self.at)}, run `{self.run_id}`",
        ]
        if self.min_soak is not None:
            soaked = human(self.soaked) if self.soaked is not None else "unknown (no staged-at)"
            lines.append(f"- **soak**: {soaked} (minimum {human(self.min_soak)})")
        if self.forced:
            lines.append("- **forced**: yes (`--force` overrode the soak check)")
        if self.previous_production:
            lines.append(f"- **previous production**: `{self.previous_production}`")
        if self.production:
            lines.append(f"- **production now**: `{self.production}`")
        for key, value in self.published.items():
            lines.append(f"- **published** `{key}` = `{value}`")
        lines += ["", "| image | from | to |", "| --- | --- | --- |"]
        lines += [f"| `{c.name or c.image}` | {c.before or '-'} | {c.after} |" for c in self.changes]
        if not self.changes:
            lines.append("| (nothing changed) | | |")
        if self.notes:
            lines += ["", *[f"> {note}" for note in self.notes]]
        return "\n".join(lines) + "\n"


class StageStore(Protocol):
    """Where a target keeps stages; see ``tasks.targets.docker.stages`` and ``tasks.targets.aws.stages``."""

    target: str

    def find(self, reference: str) -> StagedImage: ...

    def family_images(self, family: str) -> list[StagedImage]: ...

    def lock(self, family: str, run_id: str) -> AbstractContextManager[None]: ...

    def write(self, image: StagedImage, stage: str, run_id: str, tags: dict[str, str]) -> None: ...

    def after_change(self, family: str, production: StagedImage, record: PromotionRecord) -> None: ...

    def write_intent(self, family: str, intent: Intent) -> None: ...

    def read_intent(self, family: str) -> Intent | None: ...

    def clear_intent(self, family: str, intent: Intent) -> None: ...

    def families_with_intent(self) -> list[str]:
        """The families with an intent (a killed switch), and those whose record cannot be read (it may
        hold one: reading it again names the problem, for that family alone)."""
        ...


def families_holding_intent(families: Iterable[str], read_intent: Callable[[str], Intent | None]) -> list[str]:
    """``StageStore.families_with_intent`` for a store that reads each family's record: the ones whose
    intent is set, and the ones whose record ``read_intent`` cannot read (``JobFailed``)."""
    found = []
    for family in families:
        try:
            if read_intent(family) is None:
                continue
        except JobFailed:
            pass  # listed: the caller's own read of this family says what is wrong with its record
        found.append(family)
    return found


class ProblemAfterPromotion(JobFailed):
    """The stages are right, but a check after the change failed (exit 1); ``record`` says what was done."""

    def __init__(self, message: str, record: PromotionRecord) -> None:
        super().__init__(message, record.to_dict())
        self.record = record


@dataclass(frozen=True)
class Intent:
    """A production switch in progress: written before its first stage write, cleared after its last."""

    run_id: str
    action: str
    family: str
    new: str  # the image that becomes production
    was: str  # its stage before (staging; superseded for a rollback)
    old: tuple[str, ...]  # the production image(s) being demoted
    at: str

    def to_text(self) -> str:
        """One line that fits an EC2 tag value (256 characters) for one or a few old productions."""
        return f"run={self.run_id};action={self.action};was={self.was};old={','.join(self.old)};at={self.at}"

    @classmethod
    def from_text(cls, family: str, new: str, text: str) -> Intent | None:
        fields = dict(part.partition("=")[::2] for part in text.split(";") if "=" in part)
        if not fields.get("run"):
            return None
        return cls(
            run_id=fields["run"],
            action=fields.get("action", "promote"),
            family=family,
            new=new,
            was=fields.get("was") or "staging",
            old=tuple(o for o in fields.get("old", "").split(",") if o),
            at=fields.get("at", ""),
        )

    def describe(self) -> str:
        return f"an unfinished {self.action} of {self.family} (run {self.run_id}, started {self.at or '?'})"


# --- images, for retention ---------------------------------------------------------------------------------

DELETE_WORKERS = 8
# ``ManagedBy`` values of images bakery may delete: the seed's Packer tag and bakery's own.
MANAGED_BY_VALUES = frozenset({"packer", "bakery"})


@dataclass(frozen=True)
class ImageRecord:
    """One image as retention sees it, whatever the target.

    ``ref`` is the unique handle a deletion takes (an AMI id; ``family:version`` on Docker), ``image_id``
    what usage is keyed by (the AMI id; the Docker image id, shared by every tag of one image).
    ``family`` is ``None`` when it cannot be told; ``managed`` is False for images bakery must not touch.
    ``stage_since`` is when it entered its stage (``bakery:staged-at``/``bakery:superseded-at``), which is
    how promotion picks the staging image to promote and the superseded image to roll back to.
    """

    ref: str
    image_id: str
    name: str
    family: str | None
    version: str
    created: datetime
    stage: str | None = None
    managed: bool = True
    snapshots: tuple[str, ...] = ()
    state: str = "available"
    pins: tuple[str, ...] = ()
    stage_since: datetime | None = None
    foreign: str = ""  # why bakery does not count it as its own build of ``family``; empty when it does


Usage = Mapping[str, Sequence[str]]
"""Image id → what uses it, each as a short phrase (``instance i-0abc (running)``)."""


class ImageStore(Protocol):
    """What retention needs from a place images live."""

    target: str

    def inventory(self) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        """Every image there is (all families, managed or not) and what uses each image id."""
        ...

    def delete_image(self, image: ImageRecord) -> str:
        """Deregister/remove one image; ``deleted`` or ``already gone``; raises on failure."""
        ...

    def delete_snapshot(self, snapshot_id: str) -> str:
        """``deleted`` or ``already gone``; raises on failure."""
        ...

    def before_deletes(self, family: str) -> None:
        """Once, before the first deletion of a run: raise (saying nothing was deleted) when this store
        cannot delete at all, e.g. a registry with deletes disabled; nothing where deletes always work."""
        ...

    def recheck(self, images: Sequence[ImageRecord]) -> dict[str, list[str]]:
        """Read a batch of images again now, in as few calls as the platform allows: ref → the reasons the
        image must stay after all (its stage changed since the plan, something uses it now, it is shared);
        empty when it may go, or when it is gone already (the deletion then says ``already gone``).

        An image that could not be read again gets that as its reason (:func:`recheck_each`); an error
        for the whole batch may be raised (the caller keeps the whole batch, with that reason).
        """
        ...


def is_managed(managed_by: str | None) -> bool:
    return (managed_by or "").strip().lower() in MANAGED_BY_VALUES


def family_of(name: str | None, version: str | None, family_tag: str | None) -> str | None:
    """CONTRACT: the family is ``Name`` with ``-<Version>`` stripped; a ``Family`` tag wins."""
    if family_tag and family_tag.strip():
        return family_tag.strip()
    if name and version and name.endswith(f"-{version}") and len(name) > len(version) + 1:
        return name[: -len(version) - 1]
    return None


T = TypeVar("T")


def bounded_map(fn: Callable[[T], str], items: Sequence[T], workers: int = DELETE_WORKERS) -> list[str]:
    """``fn`` over ``items`` with at most ``workers`` at once; a raised error becomes ``failed: <error>``."""

    def safe(item: T) -> str:
        try:
            return fn(item)
        except Exception as exc:
            return f"failed: {one_line(exc)}"

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="bakery-delete") as pool:
        return list(pool.map(safe, items))


def recheck_each(
    fn: Callable[[ImageRecord], list[str]], images: Sequence[ImageRecord], workers: int = DELETE_WORKERS
) -> dict[str, list[str]]:
    """``fn`` (one image's re-read) over ``images``, at most ``workers`` at once: ref → reasons; an image
    ``fn`` raises for stays, with the reason ``could not be read again before deletion: <error>``."""

    def safe(image: ImageRecord) -> list[str]:
        try:
            return fn(image)
        except Exception as exc:
            return [f"{NOT_REREAD}: {one_line(exc)}"]

    if not images:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(images)), thread_name_prefix="bakery-recheck") as pool:
        return {image.ref: reasons for image, reasons in zip(images, pool.map(safe, images), strict=True)}


NOT_REREAD = "could not be read again before deletion"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


# --- leftovers, for the sweep ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """One labelled resource: what it is, whose run, how old, and whether the sweep removes it (and why)."""

    provider: str  # docker, aws, local
    kind: str  # container, instance, volume, security-group, key-pair, key-dir
    id: str
    name: str = ""
    run_id: str = ""
    created: datetime | None = None
    expires_at: datetime | None = None
    labelled: bool = True  # False: found by Packer's naming or location, judged by age alone
    remove: bool = False
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


class Source(Protocol):
    """A place leftovers live (the Docker engine, an AWS region)."""

    provider: str

    def find(self) -> list[Leftover]: ...

    def protect(self, leftovers: list[Leftover]) -> list[Leftover]:
        """A second look once every item is decided (e.g. keep what a kept instance still uses)."""
        ...

    def remove(self, leftovers: Sequence[Leftover]) -> dict[str, str]:
        """Remove these (all marked ``remove``); ``"<kind> <id>"`` → ``removed``/``already gone``/``failed: ...``."""
        ...


def key(item: Leftover) -> str:
    return f"{item.kind} {item.id}"


# --- the production lookup, for the verify engine's package diff -------------------------------------------


@dataclass(frozen=True)
class Production:
    """The family's production image, or why there is none to compare with (``image_id`` empty)."""

    image_id: str = ""
    name: str = ""
    reason: str = ""


# --- what an image was built from, for the weekly rebuild (tasks/provenance.py) ---------------------------

TAG_BASE = "bakery:base"
TAG_INPUTS = "bakery:inputs"
TAG_SPEC = "bakery:spec"


class BaseLookupError(Exception):
    """The base the template names cannot be told (unresolvable filter, API or engine error)."""


@dataclass(frozen=True)
class BuildInputs:
    """What one image was built from (any field may be unknown: empty)."""

    base: str = ""
    inputs: str = ""
    spec: str = ""

    def to_tags(self) -> dict[str, str]:
        found = {TAG_BASE: self.base, TAG_INPUTS: self.inputs, TAG_SPEC: self.spec}
        return {k: v for k, v in found.items() if v}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> BuildInputs | None:
        """The record in an image's tags; ``None`` for an image built before bakery recorded inputs."""
        if TAG_INPUTS not in tags:
            return None
        return cls(
            base=tags.get(TAG_BASE, "") or tags.get("BaseAMI", ""), inputs=tags[TAG_INPUTS], spec=tags.get(TAG_SPEC, "")
        )


class TemplateSource(Protocol):
    """One source block of a template set with the build's variable values: what a platform reads the base
    from (``tasks.provenance.template_source`` makes one)."""

    @property
    def name(self) -> str:
        """The source as ``-only`` names it: ``docker.base``, ``amazon-ebs.base``."""
        ...

    @property
    def block(self) -> Mapping[str, Any]:
        """The block's attributes as python-hcl2 reads them (strings still quoted)."""
        ...

    def evaluate(self, text: Any, where: str) -> str:
        """An attribute's value, variables substituted; a ``BaseLookupError`` naming ``where`` when it
        cannot be evaluated."""
        ...


# --- what the weekly rebuild reads from the images themselves (tasks/rebuild.py) ---------------------------


class NotChecked(Exception):
    """A check this platform does not make (here); the message says why, as the rebuild's report shows it."""


class ImageChecks(Protocol):
    """What the weekly rebuild reads from a family's images themselves, beyond their records."""

    def pending_updates(self, image_id: str, run_id: str, family: str) -> tuple[str, ...]:
        """Updates the image's package manager would install now (Docker: an ``apt-get`` simulation in a
        throwaway container); ``NotChecked`` when the platform does not look, any other error when the
        check failed."""
        ...

    def base_of(self, image_id: str) -> str | None:
        """What the image was built on as the image itself tells (Docker: its bottom layer; AWS: its
        ``BaseAMI`` tag); ``None`` when it cannot be told."""
        ...

    def packages(self, image_id: str, run_id: str, family: str) -> dict[str, str] | None:
        """The image's packages (name to version) read from the image; ``None`` when it cannot be read."""
        ...


# --- one platform: everything bakery opens on it ---------------------------------------------------------


class NotConfigured(Exception):
    """The platform cannot be reached from here as configured (AWS: no region); the message says why."""


class Platform(ABC):
    """One target platform as the domain code sees it; ``tasks/targets/registry.py`` holds one per name.

    Each method opens one side of the platform: test instances for the pipeline, the stage store for
    promotion, the image store for retention, the leftover sources for the sweep, the production lookup
    for the package diff; and answers what else differs between platforms, so no code outside
    ``tasks/targets/`` asks which one it has: the Packer builder and template variables, what a build needs
    first, the build-inputs record and the base lookup, the rebuild's image checks, the checks ``bake``
    makes before Prefect starts. The implementation imports its platform's modules lazily, so naming a
    platform costs nothing until it is used. Options that do not apply to a platform are ignored by it.
    """

    name: str  # as --target spells it
    title: str  # as people write it in a sentence (AWS, Docker)
    # The Packer builder type a build for this target uses: without --only, the pipeline builds the one
    # source of this type (``docker.*``, ``amazon-ebs.*``).
    packer_builder: str

    @abstractmethod
    def test_target(self, aws: AwsOptions | None = None, registry: Registry | None = None) -> Target:
        """Where the pipeline builds, launches, tests and stages images (``aws``: how AWS launches test
        instances; ``registry``: where Docker images are pushed and staged)."""

    @abstractmethod
    def stage_store(self, *, publish_ssm: bool = False, registry: str = "") -> StageStore:
        """Where stages are read and written for promotion and rollback."""

    @abstractmethod
    def image_store(self, *, registry: str = "", family: str | None = None) -> ImageStore:
        """The images and their usage, for retention (a bad setup is a ``UsageError``)."""

    @abstractmethod
    def leftover_sources(self, *, include_packer: bool = False) -> list[Source]:
        """Where crashed runs' leftovers live, for the sweep (a bad setup is a ``UsageError``)."""

    @abstractmethod
    def check_image(self, reference: str, *, registry: str = "") -> None:
        """A cheap check of ``--image`` for promotion, before Prefect starts: one clear line for a reference
        that cannot name an image (or, where looking is cheap, names none); the rest is left to the flow."""

    @abstractmethod
    def teardown_run(self, run_id: str, *, timeout: float = 120) -> list[str]:
        """Remove what ``run_id`` launched (crash and cancellation hooks, quick and bounded); what was removed."""

    @abstractmethod
    def errors(self, doing: str) -> AbstractContextManager[None]:
        """The platform's client errors while ``doing`` as one clear ``JobFailed`` line, not a traceback."""

    @abstractmethod
    def production(self, family: str) -> Production:
        """The family's current production image (may raise; callers report, never fail on it)."""

    # --- what else differs: bake's pre-checks, the build, the weekly rebuild ----------------------------------

    @abstractmethod
    def check_configured(self, *, credentials: bool = True) -> None:
        """A ``UsageError`` (exit 2, one line) when the platform cannot be used from here as configured, before
        anything starts (AWS: no region; with ``credentials``, also no credentials)."""

    @abstractmethod
    def before_build(self, target: Target) -> None:
        """What must be in place before Packer builds for ``target`` (Docker: the default base image)."""

    @abstractmethod
    def current_base(self, source: TemplateSource) -> str:
        """What ``source`` would build on now, as the image records it (Docker: the local image id its
        ``image`` names; AWS: the AMI its ``source_ami_filter`` selects); a ``BaseLookupError`` when that
        cannot be told."""

    @abstractmethod
    def record_build_inputs(self, image_id: str, built_from: BuildInputs) -> None:
        """Keep ``built_from`` with the image, where every worker that sees the image reads it."""

    @abstractmethod
    def recorded_build_inputs(self, image_id: str) -> BuildInputs | None:
        """The inputs recorded for an image; ``None`` when it has none (built by an older bakery)."""

    @abstractmethod
    def image_checks(self, store: StageStore | None = None) -> ImageChecks:
        """What the weekly rebuild reads from the images, through ``store``'s own connection when given."""

    @abstractmethod
    def packer_variables(self) -> dict[str, str]:
        """bakery's values for template variables of this platform (AWS: ``aws_region``, ``aws_endpoint``);
        each reaches a template only when the template declares it, and an empty value not at all."""
