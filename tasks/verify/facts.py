"""One POSIX shell script that gathers the facts of many checks, its output split into sections.

Every fact is a section: ``b KEY`` writes a marker line, the command writes the fact, ``e`` writes its
exit status. The marker carries a random nonce so no file content or command output can fake one.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass

q = shlex.quote


@dataclass(frozen=True)
class Section:
    body: bytes
    rc: int | None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.rc == 0


MISSING = Section(b"", None)


class Script:
    """Collects ``(key, shell command)`` sections; ``text`` is the script, ``parse`` reads its output.

    Sections run in *lanes* (by default one per resource type): lanes run concurrently, each into its
    own temporary file, and the files are printed in order, so slow tools (systemctl, /proc/net) overlap.
    Prelude sections run first, before any lane, and may set shell variables the lanes use.
    """

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(12)
        self._prelude: list[str] = []
        self._lanes: dict[str, list[str]] = {}
        self._keys: set[str] = set()

    @property
    def marker(self) -> str:
        return f"@@bakery-{self.nonce}@@"

    def add(self, key: str, command: str, *, lane: str | None = None, prelude: bool = False) -> None:
        if not key or " " in key or "\n" in key or key in self._keys:
            raise ValueError(f"bad or duplicate section key {key!r}")
        self._keys.add(key)
        section = f"b {key}\n{command}\ne"
        if prelude:
            self._prelude.append(section)
        else:
            self._lanes.setdefault(lane or key.split(".")[0], []).append(section)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def text(self) -> str:
        head = [
            f"M={q(self.marker)}",
            """b() { printf '\\n%s %s\\n' "$M" "$1"; }""",
            """e() { printf '\\n%s .rc %s\\n' "$M" "$?"; }""",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
            "LC_ALL=C; export LC_ALL",
            "b meta.uid",
            "id -u",
            "e",
        ]
        lanes = [f"bk_lane_{i}() {{\n" + "\n".join(body) + "\n}" for i, body in enumerate(self._lanes.values())]
        names = [f"bk_lane_{i}" for i in range(len(lanes))]
        return "\n".join([*head, *self._prelude, *lanes, *self._run(names), ""])

    @staticmethod
    def _run(names: list[str]) -> list[str]:
        if len(names) < 2:
            return names
        files = " ".join(f'"$bk_tmp/{i}"' for i in range(len(names)))
        return [
            'bk_tmp=$(mktemp -d 2>/dev/null) || bk_tmp=""',
            'if [ -n "$bk_tmp" ] && [ -d "$bk_tmp" ]; then',
            """  trap 'rm -rf "$bk_tmp"' EXIT; trap 'exit 143' HUP INT TERM""",
            *(f'  {name} > "$bk_tmp/{i}" &' for i, name in enumerate(names)),
            "  wait",
            f"  cat {files}",
            "else",
            *(f"  {name}" for name in names),
            "fi",
        ]

    def parse(self, stdout: bytes) -> Facts:
        sections: dict[str, Section] = {}
        last = ""
        for chunk in stdout.split(b"\n" + self.marker.encode() + b" ")[1:]:
            head, _, body = chunk.partition(b"\n")
            key = head.decode("utf-8", "replace")
            if key.startswith(".rc ") and last:
                try:
                    rc: int | None = int(key[4:])
                except ValueError:
                    rc = None
                sections[last] = Section(sections[last].body, rc)
            else:
                sections[key] = Section(body, None)
                last = key
        return Facts(sections)


@dataclass(frozen=True)
class Facts:
    sections: dict[str, Section]

    def __getitem__(self, key: str) -> Section:
        return self.sections.get(key, MISSING)

    def __contains__(self, key: str) -> bool:
        return key in self.sections

    @property
    def uid(self) -> str:
        return self["meta.uid"].text.strip()
