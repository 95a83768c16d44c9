#!/usr/bin/env bash
# The whole test suite: lint, types, the import contracts (tests/unit/test_layering.py: platform SDKs only in
# their target folder, Prefect only in flows/ and tasks/steps/, no import cycle in tasks/), unit and end-to-end
# tests (Docker, packer, sshd, moto, Prefect).
# Pass pytest options through, e.g. `scripts/test.sh -m "not e2e"` for the fast unit tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pytest ] || [ ! -x .venv/bin/ruff ] || [ ! -x .venv/bin/mypy ]; then
  echo "test.sh: the test tools are not installed in .venv; run scripts/setup.sh --test first" >&2
  exit 2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
