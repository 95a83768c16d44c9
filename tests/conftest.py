"""Shared test settings and the moto server every AWS test talks to (a real HTTP EC2 endpoint)."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import docker
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

REGION = "us-east-1"


@pytest.fixture(scope="session", autouse=True)
def _no_local_server_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Code under test that runs a flow without PREFECT_API_URL starts bakery's local Prefect server
    (flows/local_server.py) under BAKERY_STATE_DIR: give the session its own, and stop what it holds at the end,
    so the suite never leaves a background server (tests that want one use their own state dir and stop it)."""
    previous = os.environ.get("BAKERY_STATE_DIR")
    if previous is None:
        os.environ["BAKERY_STATE_DIR"] = str(tmp_path_factory.mktemp("bakery-state"))
    try:
        yield
    finally:
        from flows.local_server import stop

        stop()
        if previous is None:
            os.environ.pop("BAKERY_STATE_DIR", None)


# Session fixtures are defined once, here: a fixture imported into a second conftest would be a second
# fixture, and a session would start a second Docker client or Prefect server.
@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="session")
def base_image(engine: docker.DockerClient) -> str:
    """The local base image every e2e image builds from (made once with debootstrap when missing)."""
    from tasks.targets.docker.baseimage import DEFAULT_BASE_IMAGE, ensure_base_image

    ensure_base_image(engine)
    return DEFAULT_BASE_IMAGE


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One temporary Prefect server for the whole session (as a team's server would be).

    Exported as PREFECT_API_URL as well as set in the harness's settings context, so that everything in
    the session (other threads, subprocesses) talks to this one server: a concurrency slot taken on one
    server and released on another would stay taken.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        url = str(PREFECT_API_URL.value())
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port), for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh moto (reset) behind the standard AWS variables, for in-process code and `bake` subprocesses."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    for name, value in {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_EC2", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_url


def ec2_inventory(url: str) -> dict[str, list[str]]:
    """What the EC2 endpoint holds that a run could create, counted from the API itself."""
    ec2: Any = boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=url)
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    )["Reservations"]
    return {
        "instances": sorted(i["InstanceId"] for r in reservations for i in r["Instances"]),
        "key_pairs": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "security_groups": sorted(
            g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
        ),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
    }


@pytest.fixture
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on 127.0.0.1:<free port>, deletes enabled, for one test."""
    from tests.registry_server import running_registry

    with running_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host
