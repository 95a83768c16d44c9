"""The weekly rebuild's plain parts: the families file, and what changed since the current production.

``deployments/families.yaml``::

    families:
      - family: app-base                 # required; the template's image_name
        template_dir: packer             # default: packer
        var_files: [deployments/app-base.pkrvars.hcl]   # default: none
        variables: {instance_type: t3.small}            # default: none
        spec: packer/test/image_spec.yaml                # default: the shipped spec (a file or directory)
        spec_vars_file: deployments/app-base.vars.yaml   # default: none; the spec's .Vars (goss --vars)
        spec_vars: {web.port: "8080"}                    # default: none; over the file's
        targets: [docker, aws]           # default: [docker]

Before building a family the rebuild asks whether anything changed since its current ``staging`` or
``production`` image (``observe`` gathers, ``decide`` rules): the base the template would use now, the
inputs hash and the spec hash against those recorded at build time (``tasks/provenance.py``), pending
package updates in the image (``Platform.image_checks``; Docker: an ``apt-get`` simulation in a throwaway
container of it), and its age against ``max_age``. Anything that differs, cannot be checked or is unknown
means a build, with the reason; a skip says what was checked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tasks import inputs
from tasks.errors import UsageError
from tasks.provenance import BuildInputs
from tasks.request import FamilySpec, PipelineRequest, state_dir
from tasks.targets.base import ImageChecks, StagedImage, human, iso
from tasks.targets.registry import platform

log = logging.getLogger(__name__)
STALE_AFTER = timedelta(days=90)
# The Prefect event a rebuild emits for a production older than STALE_AFTER (deployments/automations.yaml).
STALE_EVENT = "bakery.production.stale"
DEFAULT_FAMILIES = "deployments/families.yaml"
DEFAULT_MAX_AGE = timedelta(days=7)
PENDING_SHOWN = 10


def load_families(path: str | Path) -> list[FamilySpec]:
    """Read and check the families file; any problem is one UsageError naming the file and field."""
    source = Path(path)
    try:
        data = yaml.safe_load(inputs.read_text_file(source, f"--families {source}"))
    except yaml.YAMLError as exc:
        raise UsageError(f"--families {source}: not valid YAML ({exc})".splitlines()[0]) from None
    entries = data.get("families") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{source}: expected a top-level 'families:' list with at least one entry")
    families: list[FamilySpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{source}: families[{index}]"
        family = FamilySpec.read(entry, where)
        if family.family in seen:
            raise UsageError(f"{where}.family: {family.family!r} is listed twice")
        seen.add(family.family)
        if family.registry:
            from tasks.targets.docker.image_registry import parse_registry

            family = family.model_copy(update={"registry": str(parse_registry(family.registry, f"{where}.registry:"))})
        families.append(family)
    return families


@dataclass(frozen=True)
class PackageChanges:
    """The production's packages against the new image's, as the verification's diff sorts them."""

    added: dict[str, str]
    removed: dict[str, str]
    upgraded: dict[str, tuple[str, str]]
    downgraded: dict[str, tuple[str, str]]
    changed: dict[str, tuple[str, str]]  # other installed versions, neither newer nor older

    @property
    def count(self) -> int:
        return len(self.added) + len(self.removed) + len(self.upgraded) + len(self.downgraded) + len(self.changed)

    def lines(self, limit: int = 40) -> list[str]:
        rows = [f"`{n}` {old} → {new}" for n, (old, new) in sorted(self.upgraded.items())]
        rows += [f"`{n}` {old} → {new} (downgraded)" for n, (old, new) in sorted(self.downgraded.items())]
        rows += [f"`{n}` {old} → {new}" for n, (old, new) in sorted(self.changed.items())]
        rows += [f"`{n}` added ({v})" for n, v in sorted(self.added.items())]
        rows += [f"`{n}` removed ({v})" for n, v in sorted(self.removed.items())]
        return rows[:limit] + ([f"… and {len(rows) - limit} more"] if len(rows) > limit else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_changes(old: dict[str, str], new: dict[str, str], manager: str = "dpkg") -> PackageChanges:
    """``{name: versions}`` of production and of the new image compared by the verification's diff
    (``tasks.verify.inventory.diff``), versions in ``manager``'s order (dpkg unless told)."""
    from tasks.verify import inventory

    def parsed(packages: dict[str, str]) -> inventory.Inventory:
        return inventory.Inventory.from_dict(
            {"manager": manager, "packages": {n: v.split(", ") for n, v in packages.items()}}
        )

    found = inventory.diff(parsed(old), parsed(new))
    return PackageChanges(
        added={c.name: c.new for c in found.added},
        removed={c.name: c.old for c in found.removed},
        upgraded={c.name: (c.old, c.new) for c in found.upgraded},
        downgraded={c.name: (c.old, c.new) for c in found.downgraded},
        changed={c.name: (c.old, c.new) for c in found.changed},
    )


def _flat(packages: dict[str, Any]) -> dict[str, str]:
    """``{name: version}`` from the verification inventory's ``{name: [versions]}`` (or plain strings)."""
    return {str(k): ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in packages.items()}


def recorded_inventory(workdir: str | Path | None) -> dict[str, str] | None:
    """Packages the verification of a run recorded beside its ``junit.xml`` (``inventory.json``)."""
    if not workdir:
        return None
    try:
        data = json.loads((Path(workdir) / "inventory.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    packages = data.get("packages") if isinstance(data, dict) else None
    return _flat(packages) if isinstance(packages, dict) and packages else None


def stored_inventory(target: str, image_id: str) -> dict[str, str] | None:
    """The inventory the verification engine kept for ``image_id`` (``tasks/verify/inventory.py``)."""
    from tasks.verify import inventory

    stored = inventory.load(target, image_id, state_dir())
    return _flat(stored.inventory.packages) if stored is not None and stored.inventory.packages else None


@dataclass
class FamilySummary:
    """The per-family line of a weekly rebuild, as the UI artifact and the JSON result show it."""

    family: str
    target: str
    result: str  # staged | skipped | failed
    version: str = ""
    image: str = ""
    message: str = ""
    base_changed: bool | None = None
    base_note: str = ""
    packages: PackageChanges | None = None
    packages_note: str = ""
    production: str = ""
    production_built: datetime | None = None
    production_age_days: float | None = None
    decision: Decision | None = None
    pipeline_run: str = ""  # the image-pipeline deployment run that built it, when the rebuild fanned out
    pipeline_run_id: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def stale(self) -> bool:
        return self.production_age_days is not None and self.production_age_days > STALE_AFTER.days

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["packages"] = self.packages.to_dict() if self.packages else None
        data["decision"] = self.decision.to_dict() if self.decision else None
        data["production_built"] = iso(self.production_built) if self.production_built else None
        data["now"] = iso(self.now)
        data["stale"] = self.stale
        return data

    def headline(self) -> str:
        what = f"{self.family} on {self.target}: {self.result}"
        if self.result == "staged":
            what += f", version {self.version}"
        if self.decision is not None:
            what += f" ({self.decision.text})"
        return what

    def to_markdown(self) -> str:
        lines = [f"# Weekly rebuild: {self.family} on {self.target}", ""]
        if self.stale:
            lines += [
                f"> **⚠️ STALE PRODUCTION: `{self.production}` was built {self.production_age_days:.0f} days ago "
                f"(over {STALE_AFTER.days}). It likely lacks security patches: promote a rebuilt image.**",
                "",
            ]
        lines.append(f"- **result**: {self.result}" + (f" — {self.message}" if self.message else ""))
        if self.decision is not None:
            lines.append(f"- **decision**: {self.decision.text}")
        if self.pipeline_run:
            lines.append(f"- **pipeline run**: `{self.pipeline_run}`")
        if self.result == "skipped":
            return "\n".join(lines) + "\n"
        if self.version:
            lines.append(f"- **new version**: `{self.version}` (`{self.image[:19]}`), now at staging")
        if self.production:
            age = f"{self.production_age_days:.1f} days" if self.production_age_days is not None else "unknown"
            lines.append(f"- **current production**: `{self.production}`, built {age} ago")
        else:
            lines.append("- **current production**: none")
        base = {True: "changed", False: "unchanged", None: "unknown"}[self.base_changed]
        lines.append(f"- **base image**: {base}" + (f" ({self.base_note})" if self.base_note else ""))
        if self.packages is not None:
            lines.append(f"- **package changes** against production: {self.packages.count}")
            lines += [f"  - {line}" for line in self.packages.lines()]
        else:
            lines.append(f"- **package changes**: unknown ({self.packages_note or 'no inventory'})")
        return "\n".join(lines) + "\n"

    def row(self) -> dict[str, str]:
        return {
            "family": self.family,
            "target": self.target,
            "result": self.result,
            "why": self.decision.text if self.decision else "-",
            "new version": self.version if self.result == "staged" else "-",
            "base changed": {True: "yes", False: "no", None: "?"}[self.base_changed],
            "package changes": str(self.packages.count) if self.packages else "?",
            "pipeline run": self.pipeline_run or "-",
            "production": self.production or "-",
            "production age": (
                ("STALE " if self.stale else "") + human(timedelta(days=self.production_age_days))
                if self.production_age_days is not None
                else "-"
            ),
        }


def fans_out(fan_out: bool | None, deployment_id: str | None) -> bool:
    """Whether the rebuild runs each family as an ``image-pipeline`` deployment run (any free worker takes
    it) rather than in its own process: as asked, else when the rebuild itself runs from a deployment."""
    return bool(deployment_id) if fan_out is None else fan_out


def production_of(images: list[StagedImage]) -> StagedImage | None:
    found = [i for i in images if i.stage == "production"]
    return found[0] if found else None


def age_days(image: StagedImage, now: datetime) -> float | None:
    return (now - image.created).total_seconds() / 86400 if image.created else None


def run_dir(run_id: str) -> Path:
    return state_dir() / "runs" / run_id


# ------------------------------------------------------------------------ build only what changed


@dataclass(frozen=True)
class Observation:
    """What the rebuild found for one family on one target, before deciding.

    ``base``/``pending`` are ``None`` when that check could not be made; ``*_note`` says why.
    """

    current: StagedImage | None
    recorded: BuildInputs | None
    inputs: str
    spec: str
    base: str | None = None
    base_note: str = ""
    pending: tuple[str, ...] | None = None
    pending_note: str = ""


@dataclass(frozen=True)
class Decision:
    """Build or skip, and why: ``reasons`` for a build, ``checked`` for what a skip rests on."""

    build: bool
    reasons: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()
    compared_with: str = ""
    compared_version: str = ""

    @property
    def text(self) -> str:
        if self.build:
            return "built because " + "; ".join(self.reasons)
        return f"skipped: unchanged since version {self.compared_version} (checked " + ", ".join(self.checked) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {
            "build": self.build,
            "reasons": list(self.reasons),
            "checked": list(self.checked),
            "compared_with": self.compared_with,
            "compared_version": self.compared_version,
            "text": self.text,
        }


def short(value: str) -> str:
    """``sha256:abcd…`` ids cut to 19 characters; AMI ids whole."""
    return value[:19] if value.startswith("sha256:") else value


def current_image(images: list[StagedImage]) -> StagedImage | None:
    """The family's newest image at ``staging`` or ``production``: what a rebuild would replace."""
    candidates = [i for i in images if i.stage in ("staging", "production")]
    if not candidates:
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    return max(candidates, key=lambda i: (i.created or oldest, i.stage == "staging"))


def decide(
    observed: Observation, *, force: bool = False, max_age: timedelta = DEFAULT_MAX_AGE, now: datetime
) -> Decision:
    """Build when anything differs, cannot be checked, or the image is too old; skip otherwise."""
    current = observed.current
    if force:
        return Decision(True, ("forced",), compared_with=current.label if current else "")
    if current is None:
        return Decision(True, ("no staging or production image to compare with",))
    recorded = observed.recorded
    if recorded is None:
        reason = f"{current.label} has no recorded build inputs (built by an older bakery)"
        return Decision(True, (reason,), compared_with=current.label, compared_version=current.version)
    reasons: list[str] = []
    checked: list[str] = []
    if observed.base is None:
        reasons.append(f"the base check failed ({observed.base_note or 'unknown base'})")
    elif not recorded.base:
        reasons.append("the base it was built from was not recorded")
    elif observed.base != recorded.base:
        reasons.append(f"base changed from {short(recorded.base)} to {short(observed.base)}")
    else:
        checked.append(f"base {short(observed.base)}")
    if observed.inputs != recorded.inputs:
        reasons.append("templates, var files or variables changed")
    else:
        checked.append("templates and variables")
    if observed.spec != recorded.spec:
        reasons.append("the verification spec changed")
    else:
        checked.append("spec")
    if observed.pending is None:
        if observed.pending_note.startswith("not checked"):
            checked.append(f"pending updates {observed.pending_note}")
        else:
            reasons.append(f"the pending-updates check failed ({observed.pending_note or 'no result'})")
    elif observed.pending:
        listed = ", ".join(observed.pending[:PENDING_SHOWN])
        more = f" and {len(observed.pending) - PENDING_SHOWN} more" if len(observed.pending) > PENDING_SHOWN else ""
        reasons.append(f"{len(observed.pending)} pending updates: {listed}{more}")
    else:
        checked.append("0 pending updates")
    if current.created is None:
        reasons.append(f"the age of {current.label} is unknown")
    elif now - current.created > max_age:
        reasons.append(f"older than {human(max_age)} (built {human(now - current.created)} ago)")
    else:
        checked.append(f"age {human(now - current.created)} (max {human(max_age)})")
    return Decision(bool(reasons), tuple(reasons), tuple(checked), current.label, current.version)


def observe(
    request: PipelineRequest, images: list[StagedImage], run_id: str, checks: ImageChecks | None = None
) -> Observation:
    """Everything ``decide`` compares, for one family on one target; a check that fails is noted, not raised.

    The pending-updates check (``checks``, else the platform's own: a container start and an ``apt-get
    update`` on Docker) runs only when nothing cheaper already calls for a build.
    """
    from tasks import lint, provenance

    current = current_image(images)
    if current is None:
        return Observation(None, None, "", "")
    recorded = provenance.recorded(request.target, current.id)
    templates = lint.load_template_set(request.template_dir)
    now_inputs = provenance.request_inputs(request, templates)
    base: str | None = None
    base_note = ""
    try:
        source = provenance.build_source(request, templates)
        values = provenance.template_values(request)
        base = provenance.current_base(request.target, request.template_dir, source, values)
    except provenance.BaseLookupError as exc:
        base_note = str(exc)
    cheap = Observation(
        current,
        recorded,
        now_inputs.inputs,
        now_inputs.spec,
        base,
        base_note,
        pending_note="not checked (a build is due)",
    )
    if recorded is None or decide(cheap, max_age=timedelta.max, now=datetime.now(UTC)).build:
        return cheap
    try:
        pending = (checks or platform(request.target).image_checks()).pending_updates(
            current.id, run_id, request.family
        )
    except Exception as exc:  # NotChecked too: its message says why
        return replace(cheap, pending_note=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return replace(cheap, pending=pending, pending_note="")
