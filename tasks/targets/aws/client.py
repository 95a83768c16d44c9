"""boto3 clients as bakery uses them: region and endpoint from the standard AWS variables
(``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_EC2``), credentials from the
standard chain or from the session a Prefect ``AwsCredentials`` block gave (``using_session``), and
botocore's adaptive retry mode so throttling is retried with client-side rate limiting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, WaiterError

from tasks.errors import JobFailed
from tasks.targets.base import family_of

# Tags on everything a run creates in AWS (CONTRACT.md), which is what a sweep looks for.
TAG_RUN_ID = "bakery:run-id"
TAG_EXPIRES_AT = "bakery:expires-at"
TAG_MANAGED_BY = "ManagedBy"
MANAGED_BY_BAKERY = "bakery"
# bakery's own mark on an AMI it built, written after the build (``build_tags``): the family it was built as.
# Not ``ManagedBy=packer``, which any Packer pipeline in the account may set; an AMI made from an instance of
# a bakery AMI does not carry the source's tags, and the value must match the AMI's own family anyway.
TAG_BUILT_FAMILY = "bakery:family"


def retry_config(max_attempts: int | None = None) -> Config:
    attempts = max_attempts or int(os.environ.get("BAKERY_AWS_MAX_ATTEMPTS", "10"))
    return Config(retries={"mode": "adaptive", "max_attempts": attempts})


# The session of a Prefect AwsCredentials block for the flow (or command) running in this context; a
# context variable, not process state, so two flows in one process never see each other's credentials.
_SESSION: ContextVar[boto3.Session | None] = ContextVar("bakery_aws_session", default=None)


@contextlib.contextmanager
def using_session(chosen: boto3.Session) -> Iterator[None]:
    """Every client made in this context (and in threads started with a copy of it) uses ``chosen``.

    Args:
        chosen: the session to use, e.g. ``AwsCredentials.get_boto3_session()`` of a block.
    """
    token = _SESSION.set(chosen)
    try:
        yield
    finally:
        _SESSION.reset(token)


def session() -> boto3.Session:
    """The block's session when one is in use here, else a new one over the standard chain."""
    return _SESSION.get() or boto3.Session()


def client(service: str, region: str | None = None, session: boto3.Session | None = None, config: Any = None) -> Any:
    """A client for ``service``; boto3 itself reads the endpoint variables.

    Args:
        service: the AWS service (ec2, ssm, autoscaling).
        region: the region; None for the session's.
        session: the session; None for ``session()``.
        config: botocore config merged over the adaptive retry config.
    """
    merged = retry_config().merge(config) if config is not None else retry_config()
    chosen = session or _SESSION.get() or boto3.Session()
    return chosen.client(service, region_name=region, config=merged)


def region() -> str | None:
    """The region from ``AWS_REGION``/``AWS_DEFAULT_REGION``, else the block's or the profile's; None when
    nothing says.

    Read without any network call (no instance metadata lookup).
    """
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or session().region_name


def has_credentials(where: str | None = None) -> bool:
    """Whether the session in use here finds credentials (the block's, or the standard chain's)."""
    chosen = _SESSION.get() or boto3.Session(region_name=where)
    return chosen.get_credentials() is not None


def credentials_environment() -> dict[str, str]:
    """The block's credentials as the standard variables, for a subprocess that reads only those (Packer);
    empty when no block is in use (the subprocess then finds the standard chain itself).

    Resolved now (an assumed role's temporary keys included), to be put in that subprocess's own
    environment only: never on a command line, never in this process's ``os.environ``. The region reaches
    templates as the ``aws_region`` variable (``AwsPlatform.packer_variables``).
    """
    chosen = _SESSION.get()
    found = chosen.get_credentials() if chosen is not None else None
    if chosen is None or found is None:
        return {}
    frozen = found.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    return env


def endpoint_url(service: str = "ec2") -> str | None:
    """The endpoint boto3 will use for ``service`` from the environment (``AWS_ENDPOINT_URL_<SERVICE>`` wins
    over ``AWS_ENDPOINT_URL``), for tools that do not read these variables themselves (Packer)."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or None


# ------------------------------------------------------------------------------- errors

# Errors another launch attempt may get past; any other launch error is final.
TRANSIENT_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientAddressCapacity",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestLimitExceeded",
        "Throttling",
    }
)


class AwsFailed(JobFailed):
    """An AWS call failed (exit 1); ``retryable`` says whether another launch attempt may get past it."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    if isinstance(exc, WaiterError):
        return str((exc.last_response or {}).get("Error", {}).get("Code", ""))
    return ""


@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """botocore's errors as one clear ``AwsFailed`` line naming what was being done."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        raise AwsFailed(f"aws: {doing}: {code}: {message}", retryable=code in TRANSIENT_CODES) from exc
    except NoCredentialsError as exc:
        raise AwsFailed(f"aws: {doing}: no credentials (environment, shared files or instance role)") from exc
    except WaiterError as exc:
        raise AwsFailed(f"aws: {doing}: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsFailed(f"aws: {doing}: {exc}", retryable=True) from exc


def gone(call: Callable[[], Any], *gone_codes: str) -> bool:
    """Run ``call`` (a delete); True when it did something, False when the resource was already gone
    (any of ``gone_codes``). Every delete of bakery's treats already gone as done."""
    try:
        call()
    except ClientError as exc:
        if error_code(exc) in gone_codes:
            return False
        raise
    return True


def delete_key_pair(ec2: Any, key_id: str, name: str) -> bool:
    """Delete exactly the key pair ``key_id`` called ``name``: by id, so a newer pair of the same name
    survives; by name only when the endpoint ignored the id (moto does) and the pair of that name is still
    this one. True when it existed (already gone is fine)."""
    existed = gone(lambda: ec2.delete_key_pair(KeyPairId=key_id), "InvalidKeyPair.NotFound")
    try:
        still = ec2.describe_key_pairs(KeyNames=[name]).get("KeyPairs", [])
    except ClientError as exc:
        if error_code(exc) == "InvalidKeyPair.NotFound":
            return existed
        raise
    if any(p.get("KeyPairId") == key_id for p in still):
        ec2.delete_key_pair(KeyName=name)
    return existed


# ------------------------------------------------------------------------------- tags


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in resource.get("Tags") or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def family_of_tags(tags: dict[str, str]) -> str | None:
    """The CONTRACT rule (``tasks.targets.base.family_of``) over a resource's tags."""
    return family_of(tags.get("Name"), tags.get("Version"), tags.get("Family"))
