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


def region() -> str | None:
    """The region from ``AWS_REGION``/``AWS_DEFAULT_REGION``, else the profile's; None when nothing says.

    Read without any network call (no instance metadata lookup).
    """
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or boto3.Session().region_name


def endpoint_url(service: str = "ec2") -> str | None:
    """The endpoint boto3 will use for ``service`` from the environment (``AWS_ENDPOINT_URL_<SERVICE>`` wins
    over ``AWS_ENDPOINT_URL``), for tools that do not read these variables themselves (Packer)."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or None
