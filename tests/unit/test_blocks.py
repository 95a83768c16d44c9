"""Block names and secret variables as options, and where block credentials may go (no server needed)."""

from __future__ import annotations

import os

import boto3
import pytest

from flows.blocks import parse_secret_vars
from tasks import packer
from tasks.errors import UsageError
from tasks.targets.aws import client as aws


def test_secret_vars_parse_and_check() -> None:
    assert parse_secret_vars(["registry_password=registry-pass"]) == {"registry_password": "registry-pass"}
    for bad, says in (
        ("registry_password", "expected NAME=BLOCK"),
        ("=block", "expected NAME=BLOCK"),
        ("image_version=block", "set by bakery"),
        ("password=Not_A_Block", "not a Prefect block name"),
    ):
        with pytest.raises(UsageError, match=says):
            parse_secret_vars([bad])


def test_block_session_is_used_by_clients_and_reaches_packer_env_only_in_its_context() -> None:
    session = boto3.Session(
        aws_access_key_id="AKIDBLOCK", aws_secret_access_key="block-secret", region_name="eu-west-1"
    )
    assert aws.credentials_environment() == {}
    with aws.using_session(session):
        assert aws.session() is session
        assert aws.client("ec2", region="eu-west-1")._request_signer._credentials.access_key == "AKIDBLOCK"
        env = aws.credentials_environment()
        assert env == {"AWS_ACCESS_KEY_ID": "AKIDBLOCK", "AWS_SECRET_ACCESS_KEY": "block-secret"}
        with packer.subprocess_environment(env):
            assert packer.packer_env()["AWS_SECRET_ACCESS_KEY"] == "block-secret"
        assert "block-secret" not in packer.packer_env().values()
    assert aws.session() is not session
    assert "block-secret" not in os.environ.values()
