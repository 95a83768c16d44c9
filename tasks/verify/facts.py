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
    """Collects ``(key, shell command)`` sections; ``text`` is the script, ``parse`` reads its output."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(12)
        self._body: list[str] = []
        self._keys: set[str] = set()

    @property
    def marker(self) -> str:
        return f"@@bakery-{self.nonce}@@"

    def add(self, key: str, command: str) -> None:
        if " " in key or "\n" in key or key in self._keys:
            raise ValueError(f"bad or duplicate section key {key!r}")
        self._keys.add(key)
        self._body.append(f"b {key}\n{command}\ne")

    def raw(self, shell: str) -> None:
        """Shell text outside any section (``if``/``fi`` around sections)."""
        self._body.append(shell)

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
        return "\n".join([*head, *self._body, ""])

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
