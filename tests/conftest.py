"""Shared test settings: no telemetry, and e2e tests skipped (not failed) only where no engine runs."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
