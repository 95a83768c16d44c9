"""`bake validate --json` findings as CI annotations: GitHub workflow commands or a GitLab Code Quality report.

    bake --json validate > validate.json; python deployments/ci/annotate.py github validate.json
    python deployments/ci/annotate.py gitlab validate.json > gl-code-quality-report.json

Paths are made relative to the current directory (the checkout), as both services expect. Waived findings
are listed as notices (GitHub) / info (GitLab), so a waiver stays visible. Standard library only.
Exit 0 whatever the findings: the `bake validate` step's own exit status decides the job.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _escape(text: str, property_value: bool = False) -> str:
    """GitHub's workflow-command escaping (data: % CR LF; properties also : and ,)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def github(findings: list[dict[str, Any]]) -> list[str]:
    lines = []
    for f in findings:
        level = "notice" if f.get("waived") else ("error" if f["severity"] == "error" else "warning")
        title = f"bakery {f['rule']}" + (f" (waived: {f['waived']})" if f.get("waived") else "")
        where = f"file={_escape(_relative(f['file']), True)}"
        if f.get("line"):
            where += f",line={int(f['line'])}"
        lines.append(f"::{level} {where},title={_escape(title, True)}::{_escape(f['message'])}")
    return lines


def gitlab(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    report = []
    for f in findings:
        path = _relative(f["file"])
        severity = "info" if f.get("waived") else ("major" if f["severity"] == "error" else "minor")
        waived = f" (waived: {f['waived']})" if f.get("waived") else ""
        key = f"{path}:{f.get('line') or 1}:{f['rule']}"
        report.append(
            {
                "description": f"{f['message']} [{f['rule']}]{waived}",
                "check_name": f"bakery-{f['rule']}",
                "fingerprint": hashlib.sha256(key.encode()).hexdigest(),
                "severity": severity,
                "location": {"path": path, "lines": {"begin": int(f.get("line") or 1)}},
            }
        )
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("github", "gitlab"):
        print("usage: annotate.py github|gitlab VALIDATE_JSON", file=sys.stderr)
        return 2
    try:
        document = json.loads(Path(argv[1]).read_text() or "{}")
    except (OSError, ValueError) as exc:
        print(f"annotate.py: {argv[1]}: not a `bake validate --json` document ({exc})", file=sys.stderr)
        return 2
    findings = document.get("findings") or []
    if argv[0] == "github":
        for line in github(findings):
            print(line)
    else:
        print(json.dumps(gitlab(findings), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
