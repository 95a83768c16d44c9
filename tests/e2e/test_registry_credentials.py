"""Registry credentials from a Prefect ``DockerRegistryCredentials`` block (issue 12), with no ``docker login``
anywhere (``DOCKER_CONFIG`` an empty directory): ``bake promote --registry`` and the engine's push and pull
succeed with the block and fail in one line, naming the block and never the password, with a wrong one.

Real parts: the session's Prefect server holds the blocks, Debian's docker-registry with htpasswd
authentication on 127.0.0.1 (tests/registry_server.py), the Docker engine pushes a tiny image (no packer).
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import docker.errors
import pytest

from flows.blocks import registry_login
from tasks.errors import UsageError
from tasks.targets.base import Image, Intent
from tasks.targets.docker.image_registry import RegistryClient, RegistryError, parse_registry, using_login
from tasks.targets.docker.instances import DockerTarget
from tasks.targets.docker.registry_stages import RegistryStages
from tests.e2e.conftest import Bake
from tests.e2e.test_blocks import _delete_block
from tests.prefect_api import prefect_api
from tests.registry_server import running_registry
from tests.unit.test_image_registry import push_artifact
from tests.unit.test_registry_faults import image_config

pytestmark = pytest.mark.e2e

USER = "bakery"


@pytest.fixture
def password() -> str:
    return f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def host(tmp_path: Path, password: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A registry only ``bakery``/``password`` gets into; no login stored anywhere."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-login"))
    monkeypatch.delenv("BAKERY_REGISTRY", raising=False)
    with running_registry(tmp_path / "registry", users={USER: password}) as found:
        yield found


@pytest.fixture
def blocks(prefect_api_url: str, host: str, password: str) -> Iterator[dict[str, str]]:
    """``right``, ``wrong`` (another password) and ``elsewhere`` (another registry_url): block names."""
    from prefect_docker import DockerRegistryCredentials

    tag = uuid.uuid4().hex[:8]
    names = {"right": f"t-reg-right-{tag}", "wrong": f"t-reg-wrong-{tag}", "elsewhere": f"t-reg-other-{tag}"}
    DockerRegistryCredentials(username=USER, password=password, registry_url=host).save(names["right"])
    DockerRegistryCredentials(username=USER, password="not-it", registry_url=f"http://{host}").save(names["wrong"])
    DockerRegistryCredentials(username=USER, password=password, registry_url="registry.example.com").save(
        names["elsewhere"]
    )
    yield names
    for name in names.values():
        _delete_block(prefect_api_url, name)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_promote_logs_in_with_the_block_and_a_wrong_one_is_one_line(
    bake: Bake, host: str, password: str, blocks: dict[str, str], prefect_api_url: str, tmp_path: Path
) -> None:
    family = f"creds-{uuid.uuid4().hex[:6]}"
    registry = parse_registry(host)
    with using_login(USER, password, host, "the test"):
        stages = RegistryStages(registry, locks=tmp_path)
        digest = push_artifact(stages.client, family, "1.0", image_config(family))
        stages.write_stage(digest, family, "1.0", "staging", "build-1")
    promote = ("promote", "--image", f"{family}:1.0", "--to", "production", "--force", "--registry", host)

    anonymous = bake(*promote)
    assert anonymous.returncode == 1, anonymous.stderr[-3000:]
    assert "authentication required and no login stored" in last_line(anonymous.stderr)

    refused = bake(*promote, "--registry-credentials-block", blocks["wrong"])
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert last_line(refused.stderr).endswith(
        f"the login of the Prefect block {blocks['wrong']!r} was refused (check its username and password)"
    )

    done = bake("--json", *promote, "--registry-credentials-block", blocks["right"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["to"] == "production"
    with using_login(USER, password, host):
        assert RegistryClient(registry).digest_of(family, "production") == digest
    kept = bake(
        "--json", "retention", "--family", family, "--registry", host, "--registry-credentials-block", blocks["right"]
    )  # bake's own look at the registry before the flow, then the flow's
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert [row["image"] for row in json.loads(kept.stdout)["images"]] == [f"{family}:1.0"]
    for result in (anonymous, refused, done, kept):
        assert password not in result.stdout + result.stderr
    with prefect_api(prefect_api_url) as api:  # the flow run holds the block's name, not its values
        runs = api.post("/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 20}).json()
    (run,) = [r for r in runs if r["parameters"].get("image") == f"{family}:1.0" and r["state_type"] == "COMPLETED"]
    assert run["parameters"]["registry_credentials"] == blocks["right"]
    assert password not in json.dumps(runs)


def test_a_build_with_a_refused_block_login_stops_before_it_builds(
    bake: Bake, engine: docker.DockerClient, host: str, password: str, blocks: dict[str, str]
) -> None:
    family = f"creds-build-{uuid.uuid4().hex[:6]}"
    built = bake(
        "build",
        "--family",
        family,
        "--version",
        "1.0",
        "--registry",
        host,
        "--registry-credentials-block",
        blocks["wrong"],
    )
    assert built.returncode == 1, built.stderr[-3000:]
    assert last_line(built.stderr) == (
        f"bake build: registry {host}: checking the API: the login of the Prefect block {blocks['wrong']!r} was "
        "refused (check its username and password)"
    )
    assert password not in built.stdout + built.stderr
    assert engine.images.list(name=family) == []  # nothing was built, so nothing pushed or staged


def test_a_missing_block_or_one_for_another_registry_is_exit_2_in_one_line(
    bake: Bake, host: str, blocks: dict[str, str]
) -> None:
    for name, expected in (
        (
            "no-such-login",
            "no DockerRegistryCredentials block named 'no-such-login' on the Prefect server (create it in the UI, "
            "Blocks)",
        ),
        (
            blocks["elsewhere"],
            f"the block's registry_url is 'registry.example.com', not the registry {host!r} (its login goes to "
            "that registry only)",
        ),
    ):
        result = bake("retention", "--registry", host, "--registry-credentials-block", name)
        assert result.returncode == 2, result.stderr[-3000:]
        # Prefect may say, on its way out, that it still sends the block-loaded event: not bakery's line
        lines = [line for line in result.stderr.strip().splitlines() if "Still processing items" not in line]
        assert lines == [f"bake retention: --registry-credentials-block {name}: {expected}"]


@pytest.fixture
def tiny_image(engine: docker.DockerClient) -> Iterator[Image]:
    """A one-file image from scratch, built without packer or a network."""
    family, version = f"creds-push-{uuid.uuid4().hex[:6]}", "1.0"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY hello /hello\n"), ("hello", b"hello\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    built, _ = engine.images.build(fileobj=context, custom_context=True, tag=f"{family}:{version}", rm=True)
    yield Image("docker", str(built.id), family, version, f"{family}:{version}", datetime.now(UTC))
    for reference in (f"{family}:{version}", str(built.id)):
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(reference, force=True)


def test_the_engine_pushes_and_pulls_with_the_blocks_login(
    engine: docker.DockerClient, host: str, blocks: dict[str, str], tiny_image: Image
) -> None:
    target = DockerTarget(engine, registry=parse_registry(host))
    with registry_login(blocks["wrong"], host), pytest.raises(RegistryError) as raised:
        target.push(tiny_image, "run-wrong")
    line = str(raised.value)
    assert line.splitlines() == [line] and line.startswith(f"registry {host}: pushing {tiny_image.name}: ")
    assert f"the login of the Prefect block {blocks['wrong']!r} was refused" in line

    with registry_login(blocks["right"], host):
        pushed = target.push(tiny_image, "run-right")
        assert pushed.id.startswith("sha256:")
        pulled = target.pull(pushed)
    assert engine.images.get(pulled).id == tiny_image.id  # the same image came back, by digest
    engine.images.remove(f"{host}/{tiny_image.family}@{pushed.id}", force=True)
    with (
        pytest.raises(UsageError, match=r"registry_url is 'registry\.example\.com'"),
        registry_login(blocks["elsewhere"], host),
    ):
        pass


def test_the_sweep_reads_a_registry_with_the_blocks_login(
    bake: Bake, host: str, password: str, blocks: dict[str, str], tmp_path: Path
) -> None:
    """A promotion killed after writing its intent, in a registry that needs a login: the sweep finds it
    with the block and says, in its notes, that it could not look without one."""
    family = f"creds-sweep-{uuid.uuid4().hex[:6]}"
    with using_login(USER, password, host, "the test"):
        stages = RegistryStages(parse_registry(host), locks=tmp_path)
        digest = push_artifact(stages.client, family, "1.0", image_config(family))
        stages.write_stage(digest, family, "1.0", "staging", "build-1")
        stages.write_intent(family, Intent("killed-promote", "promote", family, digest, "staging", (), "2026-12-07"))

    anonymous = bake("--json", "sweep", "--registry", host)
    assert anonymous.returncode == 0, anonymous.stderr[-3000:]  # a dry run: what it could not read is a note
    notes = "\n".join(json.loads(anonymous.stdout)["notes"])
    assert "resuming killed promotions: " in notes and "authentication required and no login stored" in notes, notes

    found = bake("--json", "sweep", "--registry", host, "--registry-credentials-block", blocks["right"])
    assert found.returncode == 0, found.stderr[-3000:]
    notes = "\n".join(json.loads(found.stdout)["notes"])
    assert f"would resume an unfinished promote of {family} (run killed-promote" in notes, notes
    for result in (anonymous, found):
        assert password not in result.stdout + result.stderr

    without_registry = bake("sweep", "--registry-credentials-block", blocks["right"])
    assert without_registry.returncode == 2, without_registry.stderr[-3000:]
    assert "only with a registry" in last_line(without_registry.stderr)
