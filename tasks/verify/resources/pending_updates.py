"""pending-updates — a bakery extension, NOT a goss resource type (goss rejects a spec that has it).

    pending-updates:
      security: {count: 0}              # no upgradable package from a security origin
      all: {count: {lt: 20}, packages: ["!openssl"]}

``count`` is the number of pending updates of the kind, ``packages`` their names. Read from the host's
package metadata *without the network*:

- apt: ``apt-get -s dist-upgrade`` (a simulation: no lock, nothing changes) over the package lists already
  in /var/lib/apt/lists; an update is a security update when its candidate comes from an origin whose
  label or suite says ``security`` (``Debian-Security:12/stable-security``, ``Ubuntu:22.04/jammy-security``).
- dnf/yum: ``updateinfo list --security`` and ``check-update`` with ``-C`` (the metadata cache only).
- apk: ``apk version -l '<'`` over the cached indexes; apk has no security metadata, so only ``all``.

When the host has no lists or cache (a golden image usually deletes /var/lib/apt/lists), nothing can be
told without the network: the check fails and says so rather than guessing zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.verify.facts import Facts, Script
from tasks.verify.model import Fact, Resource, Unavailable
from tasks.verify.resources.base import Item, ResourceType

SECTION = "pending-updates"
KINDS = ("security", "all")
SHOWN = 5

_APT = """if ls /var/lib/apt/lists 2>/dev/null | grep -q '_Packages'; then
    echo "lists $(date +%s) $(stat -c %Y /var/lib/apt/lists/*Release 2>/dev/null | sort -n | tail -n 1)"
    apt-get -s -q -o Debug::NoLocking=1 dist-upgrade 2>&1
  else
    echo nolists
  fi"""

_RPM_QUERIES = {
    "security": {
        "dnf": "dnf -C -q updateinfo list --security 2>&1",
        "yum": "yum -C -q updateinfo list security 2>&1",
    },
    "all": {"dnf": "dnf -C -q check-update 2>&1", "yum": "yum -C -q check-update 2>&1"},
}

_APK = """if ls /var/cache/apk/APKINDEX.* >/dev/null 2>&1; then
    echo "-- all"; apk version -l '<' 2>&1; echo "-- rc $?"
  else
    echo nolists
  fi"""


def command(kinds: set[str]) -> str:
    """The shell that reports pending updates of ``kinds`` on whichever package manager the host has."""
    rpm_parts = []
    for kind in KINDS:
        if kind in kinds:
            queries = _RPM_QUERIES[kind]
            rpm_parts.append(
                f'echo "-- {kind}"; if [ "$bk_pm" = dnf ]; then {queries["dnf"]}; else {queries["yum"]}; fi; '
                'echo "-- rc $?"'
            )
    return (
        "if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then\n"
        f"  echo apt\n  {_APT}\n"
        "elif command -v dnf >/dev/null 2>&1 || command -v yum >/dev/null 2>&1; then\n"
        "  if command -v dnf >/dev/null 2>&1; then bk_pm=dnf; else bk_pm=yum; fi\n"
        '  echo "$bk_pm"\n'
        f"  {'; '.join(rpm_parts) or 'true'}\n"
        "elif command -v apk >/dev/null 2>&1; then\n"
        f"  echo apk\n  {_APK}\n"
        "else\n  echo none\nfi"
    )


def gather(script: Script, items: list[Item]) -> None:
    script.add(SECTION, command({r.target for _, r in items}))


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Pending:
    """One pending update: the installed version (empty for a package the upgrade would add) and the
    candidate with where it comes from."""

    name: str
    installed: str
    candidate: str
    origin: str = ""

    @property
    def security(self) -> bool:
        return "security" in self.origin.lower()

    def __str__(self) -> str:
        version = f"{self.installed} → {self.candidate}" if self.installed else f"new {self.candidate}"
        return f"{self.name} {version}" + (f" ({self.origin})" if self.origin else "")


_APT_INST = re.compile(
    r"Inst (?P<name>\S+)(?: \[(?P<old>[^\]]*)\])? \((?P<new>\S+)(?: (?P<origin>[^\[\)]*?))?(?: \[[^\]]*\])?\)"
)


def apt_pending(text: str) -> list[Pending]:
    """The ``Inst`` lines of ``apt-get -s dist-upgrade``:
    ``Inst openssl [3.0.11-1~deb12u1] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])``."""
    found = []
    for line in text.splitlines():
        match = _APT_INST.match(line)
        if match:
            found.append(Pending(match["name"], match["old"] or "", match["new"], (match["origin"] or "").strip()))
    return found


# name-[epoch:]version-release.arch, e.g. openssl-libs-1:3.0.7-25.el9_3.x86_64
_NEVRA = re.compile(r"(?P<name>[A-Za-z0-9_.+-]+?)-(?:\d+:)?(?P<version>[^-\s:]+)-(?P<release>[^-\s]+)\.(?P<arch>\w+)")


def dnf_security(text: str) -> list[Pending]:
    """``dnf/yum updateinfo list --security``: an advisory id, its type/severity, the fixed package
    (dnf5 adds a header line and the issue date); one entry per package."""
    found: dict[str, Pending] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0] in ("Name", "Error:") or "-" not in fields[0]:
            continue
        for field in fields[1:]:
            match = _NEVRA.fullmatch(field)
            if match:
                candidate = f"{match['version']}-{match['release']}"
                found.setdefault(match["name"], Pending(match["name"], "", candidate, fields[0]))
                break
    return list(found.values())


def dnf_check_update(text: str) -> list[Pending]:
    """``dnf/yum check-update``: ``name.arch  version  repository`` per update (obsoletes not counted)."""
    found: dict[str, Pending] = {}
    for line in text.splitlines():
        if line.startswith("Obsoleting"):
            break
        fields = line.split()
        if len(fields) != 3 or "." not in fields[0] or line[:1].isspace():
            continue
        name = fields[0].rpartition(".")[0]
        found.setdefault(name, Pending(name, "", fields[1], fields[2]))
    return list(found.values())


_APK_UPGRADE = re.compile(r"(?P<name>.+)-(?P<old>\d[^-]*-r\d+)\s+<\s+(?P<new>\S+)")


def apk_pending(text: str) -> list[Pending]:
    """``apk version -l '<'``: ``musl-1.2.4-r1   < 1.2.4-r2``."""
    found = []
    for line in text.splitlines():
        match = _APK_UPGRADE.fullmatch(line.strip())
        if match:
            found.append(Pending(match["name"], match["old"], match["new"]))
    return found


def _parts(lines: list[str]) -> dict[str, tuple[str, int | None]]:
    """``-- kind`` ... ``-- rc N`` blocks → kind: (output, exit status)."""
    parts: dict[str, tuple[str, int | None]] = {}
    kind, body = "", list[str]()
    for line in lines:
        if line.startswith("-- rc ") and kind:
            rc = line[6:].strip()
            parts[kind] = ("\n".join(body), int(rc) if rc.lstrip("-").isdigit() else None)
            kind, body = "", []
        elif line.startswith("-- ") and line[3:].strip() in KINDS:
            kind, body = line[3:].strip(), []
        elif kind:
            body.append(line)
    return parts


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "Error", "ERROR"))]
    return (errors or lines or ["no output"])[-1][:200]


NO_LISTS = {
    "apt": "no apt package lists on the host (/var/lib/apt/lists has no Packages files: the image removed them "
    "or apt-get update never ran); pending updates cannot be told without the network",
    "dnf": "no dnf metadata cache on the host (dnf makecache never ran or the cache was cleaned); "
    "pending updates cannot be told without the network",
    "yum": "no yum metadata cache on the host (yum makecache never ran or the cache was cleaned); "
    "pending updates cannot be told without the network",
    "apk": "no apk indexes on the host (/var/cache/apk has no APKINDEX: apk update never ran or the cache "
    "was cleaned); pending updates cannot be told without the network",
}


def _rpm_result(manager: str, kind: str, part: tuple[str, int | None] | None) -> list[Pending] | Unavailable:
    if part is None:
        return Unavailable(f"{manager} gave no answer")
    output, rc = part
    if "cache-only enabled but no cache" in output.lower():
        return Unavailable(NO_LISTS[manager])
    accepted = (0, 100) if kind == "all" else (0,)  # check-update exits 100 when there are updates
    if rc not in accepted:
        return Unavailable(f"{manager} failed (exit {rc}): {_error_line(output)}")
    return dnf_security(output) if kind == "security" else dnf_check_update(output)


def pending(text: str, rc: int | None, kind: str) -> tuple[list[Pending] | Unavailable, str]:
    """The pending updates of ``kind`` from the section's output, and a note (how old apt's lists are)."""
    lines = text.split("\n")
    manager = lines[0].strip()
    rest = lines[1:]
    if manager == "none" or manager not in ("apt", "dnf", "yum", "apk"):
        return Unavailable("no apt, dnf, yum or apk on the host"), ""
    if rest[:1] == ["nolists"]:
        return Unavailable(NO_LISTS[manager]), ""
    if manager == "apt":
        note = ""
        stamp = rest[0].split() if rest else []
        if len(stamp) == 3 and stamp[0] == "lists" and stamp[1].isdigit() and stamp[2].isdigit():
            day = datetime.fromtimestamp(int(stamp[2]), UTC).date().isoformat()
            note = f"package lists of {day}, {max(int(stamp[1]) - int(stamp[2]), 0) // 86400} d old"
        body = "\n".join(rest[1:])
        if rc != 0:
            return Unavailable(f"apt-get -s dist-upgrade failed (exit {rc}): {_error_line(body)}"), note
        updates = apt_pending(body)
        return ([u for u in updates if u.security] if kind == "security" else updates), note
    parts = _parts(rest)
    if manager == "apk":
        if kind == "security":
            return Unavailable("apk keeps no security advisories; check pending-updates: {all: ...} instead"), ""
        output, status = parts.get("all", ("", None))
        if status not in (0, None) or "all" not in parts:
            return Unavailable(f"apk version failed (exit {status}): {_error_line(output)}"), ""
        return apk_pending(output), ""
    return _rpm_result(manager, kind, parts.get(kind)), ""


def observe(resource: Resource, index: int, facts: Facts) -> dict[str, Any]:
    section = facts[SECTION]
    found, note = pending(section.text, section.rc, resource.target)
    if isinstance(found, Unavailable):
        return {"count": found, "packages": found}
    names = sorted({p.name for p in found})
    shown = "; ".join(str(p) for p in found[:SHOWN])
    if len(found) > SHOWN:
        shown += f"; and {len(found) - SHOWN} more"
    return {
        "count": Fact(len(found), "; ".join(n for n in (shown, note) if n)),
        "packages": Fact(names, note),
    }


TYPE = ResourceType(
    name="pending-updates",
    checks={"count": "int", "packages": "list"},
    target_pattern="|".join(KINDS),
    target_hint="security (updates from a security origin) or all",
    gather=gather,
    observe=observe,
)
