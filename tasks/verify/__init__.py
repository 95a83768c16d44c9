"""goss-format verification of a host over one SSH connection: spec loading, checks, reports.

    spec = load_spec("packer/test/image_spec.yaml")      # UsageError (exit 2) for any spec problem
    result = verify(client, spec, sudo=True, command_timeout=30)
    report.to_junit(result), report.summary(result), report.to_json(result), report.to_markdown(result)

or all at once: ``verify_endpoint(endpoint, spec_path, ssh_timeout=120)``.
"""

from __future__ import annotations

from tasks.verify import report
from tasks.verify.model import CheckResult, Resource, VerifyResult
from tasks.verify.resources import TYPES, UNSUPPORTED
from tasks.verify.runner import verify, verify_endpoint
from tasks.verify.spec import Spec, load_spec, parse_spec

SUPPORTED_TYPES = tuple(TYPES)
UNSUPPORTED_TYPES = tuple(UNSUPPORTED)

__all__ = [
    "SUPPORTED_TYPES",
    "UNSUPPORTED_TYPES",
    "CheckResult",
    "Resource",
    "Spec",
    "VerifyResult",
    "load_spec",
    "parse_spec",
    "report",
    "verify",
    "verify_endpoint",
]
