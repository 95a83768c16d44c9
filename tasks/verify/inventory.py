"""The package inventory of a verified host, kept per image, and its diff against the family's production image.

The inventory is one section of the batched fact script (``dpkg-query -W``, ``rpm -qa`` or ``apk info -v``,
a few milliseconds), so every verification captures it. The pipeline writes it beside ``junit.xml`` as
``inventory.json`` and keeps a copy under ``$BAKERY_STATE_DIR/inventories/<target>/<image-id>.json``; the
diff against the inventory stored for the family's current production image says what a rebuild changed
(added, removed, upgraded, downgraded packages). Versions compare as the package manager does: dpkg's
``verrevcmp`` with epochs and ``~``, rpm's ``rpmvercmp`` with ``~`` and ``^``, and apk's version order.

The production image is looked up by the caller's ``lookup`` (``tasks.targets.registry.production_image``):
nothing here knows a platform.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cmp_to_key
from pathlib import Path
from typing import Any

from tasks.targets.base import Production
from tasks.verify.facts import Script, q

SECTION = "inventory"
MANAGERS = ("dpkg", "rpm", "apk")
_DPKG_FORMAT = "${binary:Package}\\t${Package}\\t${Status}\\t${Version}\\n"
_RPM_FORMAT = "%{NAME}\\t%{NAME}.%{ARCH}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"
_APK_LINE = re.compile(r"(.+)-(\d[^-]*-r\d+)")

COMMAND = (
    "if command -v dpkg-query >/dev/null 2>&1; then echo dpkg; "
    f"dpkg-query -W -f={q(_DPKG_FORMAT)} 2>/dev/null; "
    "elif command -v rpm >/dev/null 2>&1; then echo rpm; "
    f"rpm -qa --nosignature --nohdrchk --nodigest --qf {q(_RPM_FORMAT)} 2>/dev/null; "
    "elif command -v apk >/dev/null 2>&1; then echo apk; apk info -v 2>/dev/null; "
    "else echo none; fi"
)


def gather(script: Script) -> None:
    """Add the inventory section (its own lane, so it overlaps everything else)."""
    script.add(SECTION, COMMAND, lane=SECTION)


# ------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Installed:
    """One installed package: ``name`` as users write it, ``qualified`` with its architecture
    (dpkg ``libc6:amd64``, rpm ``glibc.x86_64``; apk has none), and its version."""

    name: str
    qualified: str
    version: str


@dataclass(frozen=True)
class Inventory:
    """What a host had installed, according to its package manager (``dpkg``, ``rpm`` or ``apk``)."""

    manager: str
    installed: tuple[Installed, ...]

    def versions(self, name: str) -> list[str]:
        """Installed versions of ``name`` (plain or architecture-qualified), as ``package`` checks see them."""
        found = [i.version for i in self.installed if name in (i.name, i.qualified)]
        return list(dict.fromkeys(found))

    @property
    def packages(self) -> dict[str, list[str]]:
        """Name → installed versions (oldest first); a name installed for two architectures is
        listed under each qualified name instead (``libc6:amd64``, ``libc6:i386``)."""
        arches: dict[str, set[str]] = {}
        for item in self.installed:
            arches.setdefault(item.name, set()).add(item.qualified)
        packages: dict[str, list[str]] = {}
        for item in self.installed:
            key = item.qualified if len(arches[item.name]) > 1 else item.name
            if item.version not in packages.setdefault(key, []):
                packages[key].append(item.version)
        return {k: sorted(v, key=_sort_key(self.manager)) for k, v in sorted(packages.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"manager": self.manager, "count": len(self.packages), "packages": self.packages}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        manager = str(data.get("manager", ""))
        items = [
            Installed(name, name, str(version))
            for name, versions in (data.get("packages") or {}).items()
            for version in (versions if isinstance(versions, list) else [versions])
        ]
        return cls(manager, tuple(items))


def parse(text: str) -> Inventory | None:
    """The inventory section's output; ``None`` when the host has no dpkg, rpm or apk."""
    lines = text.split("\n")
    manager = lines[0].strip()
    if manager not in MANAGERS:
        return None
    items: list[Installed] = []
    for line in lines[1:]:
        fields = line.split("\t")
        if manager == "dpkg" and len(fields) == 4:
            qualified, name, status, version = fields
            if status.split()[-1:] == ["installed"] and version:
                items.append(Installed(name, qualified, version))
        elif manager == "rpm" and len(fields) == 3:
            name, qualified, version = fields
            items.append(Installed(name, qualified, version))
        elif manager == "apk":
            match = _APK_LINE.fullmatch(line.strip())
            if match:
                items.append(Installed(match.group(1), match.group(1), match.group(2)))
    return Inventory(manager, tuple(items))


# -------------------------------------------------------------------------------- version ordering


def _digit(char: str) -> bool:
    return "0" <= char <= "9"


def _dpkg_order(char: str) -> int:
    if _digit(char):
        return 0
    if char.isascii() and char.isalpha():
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256 if char else 0


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or a revision (lib/dpkg/version.c)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not _digit(a[i])) or (j < len(b) and not _digit(b[j])):
            ac = _dpkg_order(a[i] if i < len(a) else "")
            bc = _dpkg_order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and j < len(b) and _digit(a[i]) and _digit(b[j]):
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and _digit(a[i]):
            return 1
        if j < len(b) and _digit(b[j]):
            return -1
        if first_diff:
            return first_diff
    return 0


def _epoch_split(version: str) -> tuple[int, str]:
    head, colon, rest = version.partition(":")
    if colon and head.isdigit():
        return int(head), rest
    return 0, version


def compare_dpkg(a: str, b: str) -> int:
    """<0, 0, >0 as Debian orders ``[epoch:]upstream[-revision]`` (``dpkg --compare-versions``)."""
    epoch_a, rest_a = _epoch_split(a)
    epoch_b, rest_b = _epoch_split(b)
    if epoch_a != epoch_b:
        return epoch_a - epoch_b
    upstream_a, _, revision_a = rest_a.rpartition("-") if "-" in rest_a else (rest_a, "", "")
    upstream_b, _, revision_b = rest_b.rpartition("-") if "-" in rest_b else (rest_b, "", "")
    return _verrevcmp(upstream_a, upstream_b) or _verrevcmp(revision_a, revision_b)


def rpmvercmp(a: str, b: str) -> int:
    """rpm's segment comparison (rpmio/rpmvercmp.c): ``~`` sorts before anything, even the end;
    ``^`` after the end but before anything else; numbers beat letters."""
    if a == b:
        return 0
    i = j = 0

    def skip(text: str, k: int) -> int:
        while k < len(text) and not (text[k].isascii() and text[k].isalnum()) and text[k] not in "~^":
            k += 1
        return k

    while i < len(a) or j < len(b):
        i, j = skip(a, i), skip(b, j)
        ca, cb = a[i : i + 1], b[j : j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        numeric = _digit(ca)
        test: Callable[[str], bool] = _digit if numeric else (lambda c: c.isascii() and c.isalpha())
        end_a, end_b = i, j
        while end_a < len(a) and test(a[end_a]):
            end_a += 1
        while end_b < len(b) and test(b[end_b]):
            end_b += 1
        seg_a, seg_b = a[i:end_a], b[j:end_b]
        if not seg_b:
            return 1 if numeric else -1  # a number beats a letter
        if numeric:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = end_a, end_b
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def compare_rpm(a: str, b: str) -> int:
    """``[epoch:]version-release`` as rpm orders them (a missing epoch is 0)."""
    epoch_a, rest_a = _epoch_split(a)
    epoch_b, rest_b = _epoch_split(b)
    if epoch_a != epoch_b:
        return 1 if epoch_a > epoch_b else -1
    version_a, _, release_a = rest_a.rpartition("-") if "-" in rest_a else (rest_a, "", "")
    version_b, _, release_b = rest_b.rpartition("-") if "-" in rest_b else (rest_b, "", "")
    return rpmvercmp(version_a, version_b) or rpmvercmp(release_a, release_b)


_APK_SUFFIXES = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}
_APK_VERSION = re.compile(
    r"(?P<numbers>\d+(?:\.\d+)*)(?P<letter>[a-z]?)(?P<suffixes>(?:_[a-z]+\d*)*)(?:-r(?P<rel>\d+))?"
)


def _apk_key(version: str) -> tuple[Any, ...]:
    match = _APK_VERSION.fullmatch(version)
    if not match:
        return ((), "", (), -1, version)
    numbers = tuple(int(n) for n in match["numbers"].split("."))
    suffixes = tuple(
        (_APK_SUFFIXES.get(word, 0), int(digits or 0))
        for word, digits in re.findall(r"_([a-z]+)(\d*)", match["suffixes"] or "")
    )
    return (numbers, match["letter"], (*suffixes, (0, 0)), int(match["rel"] or 0), "")


def compare_apk(a: str, b: str) -> int:
    """apk's order for ``1.2.3[letter][_suffixN...][-rN]``: numbers, letter, suffixes
    (``_alpha < _beta < _pre < _rc < none < _cvs < _svn < _git < _hg < _p``), then the release."""
    key_a, key_b = _apk_key(a), _apk_key(b)
    return (key_a > key_b) - (key_a < key_b)


COMPARE: dict[str, Callable[[str, str], int]] = {"dpkg": compare_dpkg, "rpm": compare_rpm, "apk": compare_apk}


def compare_versions(manager: str, a: str, b: str) -> int:
    """<0 when ``a`` is older than ``b``, 0 when equal, >0 when newer, in ``manager``'s order."""
    result = COMPARE.get(manager, compare_dpkg)(a, b)
    return (result > 0) - (result < 0)


def _sort_key(manager: str) -> Any:
    return cmp_to_key(lambda a, b: compare_versions(manager, a, b))


# -------------------------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Change:
    """One package that differs: ``old``/``new`` are its versions (comma-joined when several are installed)."""

    name: str
    old: str
    new: str


@dataclass(frozen=True)
class InventoryDiff:
    added: tuple[Change, ...] = ()
    removed: tuple[Change, ...] = ()
    upgraded: tuple[Change, ...] = ()
    downgraded: tuple[Change, ...] = ()
    changed: tuple[Change, ...] = ()  # same newest version, other installed versions differ (old kernels)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded or self.downgraded or self.changed)

    def counts(self) -> dict[str, int]:
        return {
            "upgraded": len(self.upgraded),
            "added": len(self.added),
            "removed": len(self.removed),
            "downgraded": len(self.downgraded),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
        }

    def to_dict(self) -> dict[str, Any]:
        lists = {
            kind: [{"name": c.name, "old": c.old, "new": c.new} for c in getattr(self, kind)]
            for kind in ("upgraded", "added", "removed", "downgraded", "changed")
        }
        return {"counts": self.counts(), **lists}


def diff(old: Inventory, new: Inventory) -> InventoryDiff:
    """What changed from ``old`` (production) to ``new`` (this image), in ``new``'s version order."""
    manager = new.manager or old.manager
    before, after = old.packages, new.packages
    added: list[Change] = []
    removed: list[Change] = []
    upgraded: list[Change] = []
    downgraded: list[Change] = []
    changed: list[Change] = []
    unchanged = 0
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was is None and now is not None:
            added.append(Change(name, "", ", ".join(now)))
        elif now is None and was is not None:
            removed.append(Change(name, ", ".join(was), ""))
        elif was is not None and now is not None:
            if set(was) == set(now):
                unchanged += 1
                continue
            change = Change(name, ", ".join(was), ", ".join(now))
            order = compare_versions(manager, now[-1], was[-1])  # newest installed of each
            (upgraded if order > 0 else downgraded if order < 0 else changed).append(change)
    return InventoryDiff(tuple(added), tuple(removed), tuple(upgraded), tuple(downgraded), tuple(changed), unchanged)


# ------------------------------------------------------------------------------------------ storage


def safe_name(image_id: str) -> str:
    """An image id as a file name: ``sha256:ab12...`` → ``sha256_ab12...``, ``ami-0123`` unchanged."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", image_id).lstrip(".") or "_"


def inventory_path(target: str, image_id: str, root: Path) -> Path:
    """Where the inventory of ``image_id`` is kept below ``root`` (the caller's ``$BAKERY_STATE_DIR``)."""
    return root / "inventories" / safe_name(target) / f"{safe_name(image_id)}.json"


def document(inventory: Inventory, *, target: str = "", image_id: str = "", image: str = "") -> dict[str, Any]:
    """The ``inventory.json`` document: which image, when, and its packages."""
    return {
        "target": target,
        "image_id": image_id,
        "image": image,
        "captured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **inventory.to_dict(),
    }


def to_json(inventory: Inventory, **where: str) -> str:
    return json.dumps(document(inventory, **where), indent=2) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def store(inventory: Inventory, *, target: str, image_id: str, root: Path, image: str = "") -> Path:
    """Keep the inventory of ``image_id`` for later diffs; replaces an earlier one of the same image."""
    path = inventory_path(target, image_id, root)
    _write_atomic(path, to_json(inventory, target=target, image_id=image_id, image=image))
    return path


@dataclass(frozen=True)
class Stored:
    inventory: Inventory
    image: str
    captured_at: str


def load(target: str, image_id: str, root: Path) -> Stored | None:
    """The stored inventory of ``image_id``; ``None`` when there is none (or it cannot be read)."""
    path = inventory_path(target, image_id, root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("packages"), dict):
        return None
    return Stored(Inventory.from_dict(data), str(data.get("image") or ""), str(data.get("captured_at") or ""))


# ------------------------------------------------------------------------------- production lookup


@dataclass(frozen=True)
class Comparison:
    """This image's inventory against production's: a diff, or why there is none."""

    image: str
    production: Production
    diff: InventoryDiff | None = None
    reason: str = ""
    production_captured_at: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headline(self) -> str:
        if self.diff is None:
            return f"packages of {self.image}: no production image to compare with ({self.reason})"
        counts = self.diff.counts()
        shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k != "unchanged") or "no changes"
        unchanged = counts["unchanged"]
        return f"packages of {self.image} vs production {self.production.name}: {shown}, {unchanged} unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "production": {"image_id": self.production.image_id, "name": self.production.name},
            "reason": self.reason,
            "notes": list(self.notes),
            "diff": self.diff.to_dict() if self.diff else None,
        }

    def to_markdown(self) -> str:
        lines = [f"## Packages of {_cell(self.image)}", ""]
        if self.diff is None:
            lines += [f"No production image to compare with: {_cell(self.reason)}.", ""]
            return "\n".join(lines)
        lines += [
            f"Compared with the production image **{_cell(self.production.name)}** "
            f"(`{_cell(self.production.image_id)}`"
            + (f", inventory of {self.production_captured_at}" if self.production_captured_at else "")
            + ").",
            "",
            "| upgraded | added | removed | downgraded | changed | unchanged |",
            "|---|---|---|---|---|---|",
            "| " + " | ".join(str(n) for n in self.diff.counts().values()) + " |",
            "",
        ]
        lines += [f"> {_cell(n)}" for n in self.notes]
        sections = (
            ("Upgraded", self.diff.upgraded, ("Package", "Production", "This image")),
            ("Added", self.diff.added, ("Package", "", "This image")),
            ("Removed", self.diff.removed, ("Package", "Production", "")),
            ("Downgraded", self.diff.downgraded, ("Package", "Production", "This image")),
            ("Changed (other installed versions)", self.diff.changed, ("Package", "Production", "This image")),
        )
        for title, changes, heads in sections:
            if not changes:
                continue
            columns = [h for h in heads if h]
            lines += [f"### {title} ({len(changes)})", "", "| " + " | ".join(columns) + " |"]
            lines.append("|" + "---|" * len(columns))
            for change in changes:
                cells = [f"`{_cell(change.name)}`"]
                if heads[1]:
                    cells.append(_cell(change.old))
                if heads[2]:
                    cells.append(_cell(change.new))
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        if self.diff.empty:
            lines.append("No package changed.")
        return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def compare_with_production(
    inventory: Inventory,
    *,
    target: str,
    family: str,
    image_id: str,
    image: str = "",
    root: Path,
    lookup: Callable[[str, str], Production],
) -> Comparison:
    """Diff ``inventory`` (of ``image_id``) against the stored inventory of the family's production image."""
    shown = image or image_id
    production = lookup(target, family)
    if not production.image_id:
        return Comparison(shown, production, reason=production.reason)
    if production.image_id == image_id:
        return Comparison(shown, production, reason=f"this image is the production image ({production.name})")
    stored = load(target, production.image_id, root)
    if stored is None:
        return Comparison(
            shown,
            production,
            reason=f"no stored inventory of the production image {production.name} ({production.image_id}): "
            f"it was verified before inventories were kept, or on another runner "
            f"({inventory_path(target, production.image_id, root)})",
        )
    notes: tuple[str, ...] = ()
    if stored.inventory.manager and stored.inventory.manager != inventory.manager:
        notes = (f"package managers differ: production {stored.inventory.manager}, this image {inventory.manager}",)
    return Comparison(
        shown, production, diff(stored.inventory, inventory), production_captured_at=stored.captured_at, notes=notes
    )
