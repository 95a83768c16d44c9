"""boto3 clients as bakery uses them: region and endpoint from the standard AWS variables
(``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_EC2``), credentials from the
standard chain, and botocore's adaptive retry mode so throttling is retried with client-side rate limiting.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

# Tags on everything a run creates in AWS (CONTRACT.md), which is what a sweep looks for.
TAG_RUN_ID = "bakery:run-id"
TAG_EXPIRES_AT = "bakery:expires-at"
TAG_MANAGED_BY = "ManagedBy"
MANAGED_BY_BAKERY = "bakery"


def retry_config(max_attempts: int | None = None) -> Config:
    attempts = max_attempts or int(os.environ.get("BAKERY_AWS_MAX_ATTEMPTS", "10"))
    return Config(retries={"mode": "adaptive", "max_attempts": attempts})


def client(service: str, region: str | None = None, session: boto3.Session | None = None) -> Any:
    """A client for ``service``; boto3 itself reads the endpoint variables."""
    return (session or boto3.Session()).client(service, region_name=region, config=retry_config())
