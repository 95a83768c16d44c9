"""``--registry`` values, the registry client's one-line errors, and stages kept in a real registry.

The registry is Debian's docker-registry (Distribution 2.8) on 127.0.0.1 (tests/registry_server.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from flows.cli import main
from tasks.errors import JobFailed, UsageError
from tasks.targets.base import Intent
from tasks.targets.docker.image_registry import (
    Manifest,
    Registry,
    RegistryClient,
    RegistryError,
    describe_failure,
    next_page,
    parse_registry,
    resolve_registry,
    sha256_digest,
)
from tasks.targets.docker.registry_stages import RECORD_TAG, RegistryStages, split_reference, stage_in_registry
from tests.registry_server import free_port, running_registry


@pytest.mark.parametrize(
    ("value", "host", "prefix", "image"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000", "", "127.0.0.1:5000/app"),
        (
            "registry.example.com/team/images",
            "registry.example.com",
            "team/images",
            "registry.example.com/team/images/app",
        ),
        ("localhost:5000/bakery", "localhost:5000", "bakery", "localhost:5000/bakery/app"),
        ("[::1]:5000", "[::1]:5000", "", "[::1]:5000/app"),
    ],
)
def test_a_registry_value_is_host_port_and_prefix(value: str, host: str, prefix: str, image: str) -> None:
    registry = parse_registry(value)
    assert (registry.host, registry.prefix, registry.image("app")) == (host, prefix, image)


def test_loopback_registries_speak_http_and_others_https() -> None:
    assert parse_registry("127.0.0.2:5000").base_url == "http://127.0.0.2:5000"
    assert parse_registry("localhost").base_url == "http://localhost"
    assert parse_registry("registry.example.com").base_url == "https://registry.example.com"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://127.0.0.1:5000", "no scheme"),
        ("Registry.Example.com", "not a host name"),
        ("host:99999", "port out of range"),
        ("host:5000/Team", "PREFIX must be lowercase"),
        ("host:5000/team/", "PREFIX must be lowercase"),
        ("host name", "not a host name"),
        ("", "empty"),
    ],
)
def test_a_bad_registry_value_is_one_line_naming_it(value: str, why: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_registry(value)
    assert str(raised.value).startswith(f"--registry {value!r}: ") and why in str(raised.value)


def test_the_environment_names_the_registry_when_no_option_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAKERY_REGISTRY", raising=False)
    assert resolve_registry(None) is None
    monkeypatch.setenv("BAKERY_REGISTRY", "127.0.0.1:5000/x")
    assert resolve_registry(None) == Registry("127.0.0.1:5000", "x")
    assert resolve_registry("127.0.0.1:6000") == Registry("127.0.0.1:6000", "")
    monkeypatch.setenv("BAKERY_REGISTRY", "http://nope")
    with pytest.raises(UsageError, match=r"^BAKERY_REGISTRY 'http://nope': no scheme"):
        resolve_registry(None)


@pytest.mark.parametrize(
    "argv",
    [
        ["promote", "--family", "app", "--to", "production", "--registry", "HTTP://x"],
        ["rollback", "--family", "app", "--registry", "HTTP://x"],
        ["build", "--registry", "HTTP://x"],
        ["run", "--registry", "HTTP://x"],
        ["test", "--image", "app:1", "--registry", "HTTP://x"],
        ["retention", "--registry", "HTTP://x"],
    ],
)
def test_a_bad_registry_option_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(argv))
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.splitlines() == [err] and "--registry 'HTTP://x': no scheme" in err


def test_only_the_docker_target_takes_a_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(["rollback", "--target", "aws", "--family", "app", "--registry", "127.0.0.1:5000"]))
    assert exited.value.code == 2
    assert "--registry '127.0.0.1:5000': only the docker target pushes to a registry" in capsys.readouterr().err


def test_an_image_reference_with_a_registry_is_family_and_version_or_digest() -> None:
    digest = "sha256:" + "a" * 64
    assert split_reference("app:1.0") == ("app", "1.0", "")
    assert split_reference(f"app@{digest}") == ("app", "", digest)
    for bad in ("app", "app@sha256:12", "App:1"):
        with pytest.raises(UsageError):
            split_reference(bad)


@pytest.mark.parametrize(
    ("doing", "status", "body", "expected"),
    [
        ("reading app:1", 401, {}, "authentication required or refused (docker login 127.0.0.1:5000"),
        ("reading app:1", 403, {}, "denied"),
        (
            "reading app:1",
            404,
            {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
            "not found (MANIFEST_UNKNOWN manifest unknown)",
        ),
        ("deleting app@sha256:x", 405, {}, "does not allow deletes (Distribution: storage: delete: enabled: true)"),
        ("writing app:staging", 500, {"errors": [{"code": "UNKNOWN", "message": "boom"}]}, "HTTP 500 (UNKNOWN boom)"),
    ],
)
def test_a_failed_call_is_one_line_saying_what_to_do(doing: str, status: int, body: dict, expected: str) -> None:
    line = describe_failure(Registry("127.0.0.1:5000"), doing, httpx.Response(status, json=body))
    assert line.startswith(f"registry 127.0.0.1:5000: {doing}: ") and expected in line and "\n" not in line


def test_the_next_page_is_read_from_the_link_header() -> None:
    assert next_page('</v2/app/tags/list?last=b&n=2>; rel="next"') == "/v2/app/tags/list?last=b&n=2"
    assert next_page("") is None


def test_an_unreachable_registry_is_one_line() -> None:
    client = RegistryClient(Registry(f"127.0.0.1:{free_port()}"), timeout=2)
    with pytest.raises(RegistryError, match=r"^registry 127\.0\.0\.1:\d+: checking the API: unreachable at http://"):
        client.check()


def push_artifact(client: RegistryClient, repository: str, tag: str, content: bytes) -> str:
    """A tiny OCI manifest (one config blob, no layers) under ``tag``: an image as far as tags go."""
    config = client.upload_blob(repository, content)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": len(content)},
            "layers": [],
        }
    ).encode()
    return client.put_manifest(
        repository, tag, Manifest(body, "application/vnd.oci.image.manifest.v1+json", sha256_digest(body))
    )


def test_tags_are_listed_across_pages_and_written_by_digest(registry_host: str) -> None:
    client = RegistryClient(parse_registry(f"{registry_host}/team"))
    digests = [push_artifact(client, "team/app", f"1.{n}", json.dumps({"n": n}).encode()) for n in range(5)]
    assert sorted(client.tags("team/app", page_size=2)) == [f"1.{n}" for n in range(5)]
    client.tag("team/app", digests[3], "staging")
    assert client.digest_of("team/app", "staging") == digests[3]
    assert client.digest_of("team/app", "nosuch") is None
    assert client.tags("team/nosuch") == []
    with pytest.raises(RegistryError, match=r"reading team/app@sha256:0+: not found"):
        client.manifest("team/app", "sha256:" + "0" * 64)


def test_a_registry_without_delete_says_so(tmp_path: Path) -> None:
    with running_registry(tmp_path, delete_enabled=False) as host:
        client = RegistryClient(parse_registry(host))
        digest = push_artifact(client, "app", "1.0", b"{}")
        with pytest.raises(RegistryError, match=r"does not allow deletes \(Distribution: storage: delete: enabled"):
            client.delete_manifest("app", digest)


def test_stages_and_their_record_live_in_the_registry(registry_host: str, tmp_path: Path) -> None:
    """Two stores (two machines) see the same stages; the production tag decides production."""
    registry = parse_registry(f"{registry_host}/bk")
    first = RegistryStages(registry, locks=tmp_path / "one")
    other = RegistryStages(registry, locks=tmp_path / "two")
    old = push_artifact(first.client, "bk/app", "1.0", b'{"v": 1}')
    new = push_artifact(first.client, "bk/app", "2.0", b'{"v": 2}')
    first.record_push(old, "app", "1.0", "run-1")
    first.write_stage(old, "app", "1.0", "staging", "run-1")
    first.write_stage(old, "app", "1.0", "production", "run-2")
    first.write_stage(new, "app", "2.0", "staging", "run-3")
    stages = {i.version: i.stage for i in other.family_images("app")}
    assert stages == {"1.0": "production", "2.0": "staging"}
    assert other.find("app:2.0").staged_at is not None and other.find(f"app@{old}").version == "1.0"
    other.write_stage(old, "app", "1.0", "superseded", "run-4")
    other.write_stage(new, "app", "2.0", "production", "run-4")
    assert {i.version: i.stage for i in first.family_images("app")} == {"1.0": "superseded", "2.0": "production"}
    assert first.client.digest_of("bk/app", "production") == new == first.client.digest_of("bk/app", "latest")
    assert first.client.digest_of("bk/app", "superseded") == old
    history = [(h["version"], h["stage"]) for h in first.read_record("app")["history"]]
    assert history[-2:] == [("1.0", "superseded"), ("2.0", "production")]
    assert RECORD_TAG in first.client.tags("bk/app")
    intent = Intent("run-5", "promote", "app", new, "staging", (old,), "2026-12-07T00:00:00+00:00")
    first.write_intent("app", intent)
    assert other.read_intent("app") == intent
    other.clear_intent("app", intent)
    assert first.read_intent("app") is None


def test_the_production_tag_decides_production_and_the_record_the_rest() -> None:
    digest, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert stage_in_registry(digest, {"production": digest, "staging": digest}, "staging") == "production"
    assert stage_in_registry(digest, {"production": other, "staging": digest}, "superseded") == "superseded"
    assert stage_in_registry(digest, {"production": other}, "production") == "superseded"
    assert stage_in_registry(digest, {"staging": digest}, None) == "staging"
    assert stage_in_registry(digest, {}, None) == "testing"


def test_promotion_and_rollback_run_on_registry_stages(registry_host: str, tmp_path: Path) -> None:
    """The promotion algorithm on the registry's store: soak, switch, rollback; tags follow by digest."""
    from datetime import timedelta

    from tasks import promotion

    registry = parse_registry(registry_host)
    stages = RegistryStages(registry, locks=tmp_path)
    first = push_artifact(stages.client, "app", "1.0", b'{"v": 1}')
    second = push_artifact(stages.client, "app", "2.0", b'{"v": 2}')
    for digest, version in ((first, "1.0"), (second, "2.0")):
        stages.write_stage(digest, "app", version, "testing", "build")
        promotion.promote(stages, to="staging", run_id="stage", image=f"app:{version}")
        with pytest.raises(JobFailed, match="soak"):
            promotion.promote(stages, to="production", run_id="early", family="app", min_soak=timedelta(hours=1))
        promotion.promote(stages, to="production", run_id="p", family="app", min_soak=timedelta(0))
    assert stages.client.digest_of("app", "production") == second
    assert {i.version: i.stage for i in stages.family_images("app")} == {"1.0": "superseded", "2.0": "production"}

    back = promotion.rollback(stages, family="app", run_id="back")

    assert back.production == first
    assert stages.client.digest_of("app", "production") == first == stages.client.digest_of("app", "latest")
    assert stages.client.digest_of("app", "superseded") == second
    assert {i.version: i.stage for i in stages.family_images("app")} == {"1.0": "production", "2.0": "superseded"}
    assert stages.read_intent("app") is None


def test_a_family_names_its_registry_in_the_families_file(tmp_path: Path) -> None:
    from flows.rebuild import pipeline_parameters
    from tasks.rebuild import load_families

    path = tmp_path / "families.yaml"
    path.write_text(
        "families:\n  - family: app\n    registry: 127.0.0.1:5000/team\n    targets: [docker, aws]\n  - family: other\n"
    )
    app, other = load_families(path)
    assert app.registry == "127.0.0.1:5000/team" and other.registry == ""
    assert pipeline_parameters(app, "docker", None)["registry"] == "127.0.0.1:5000/team"
    assert "registry" not in pipeline_parameters(app, "aws", None)
    assert "registry" not in pipeline_parameters(other, "docker", None)
    with pytest.MonkeyPatch.context() as env:  # the rebuild's own default travels with the child run
        env.setenv("BAKERY_REGISTRY", "127.0.0.1:5001")
        assert pipeline_parameters(other, "docker", None)["registry"] == "127.0.0.1:5001"
        assert "registry" not in pipeline_parameters(other, "aws", None)
    path.write_text("families:\n  - family: app\n    registry: https://registry.example.com\n")
    with pytest.raises(UsageError) as raised:
        load_families(path)
    assert str(raised.value).startswith(f"{path}: families[0].registry: 'https://registry.example.com': no scheme")


def test_retention_in_a_registry_deletes_by_digest_only_what_no_other_tag_names(
    registry_host: str, tmp_path: Path
) -> None:
    from tasks import retention
    from tasks.targets.docker.registry_images import RegistryImages

    registry = parse_registry(f"{registry_host}/bk")
    store = RegistryImages(registry, ["app"])
    stages = RegistryStages(registry, store.client, locks=tmp_path)
    digests = {}
    for n in range(1, 6):
        digests[n] = push_artifact(store.client, "bk/app", f"{n}.0", json.dumps({"n": n}).encode())
        stages.record_push(digests[n], "app", f"{n}.0", "build")
    store.client.tag("bk/app", digests[2], "2.0-again")  # an old digest another version tag also names
    push_artifact(store.client, "bk/app", "0.9", b'{"by": "someone else"}')  # not pushed by bakery
    stages.write_stage(digests[5], "app", "5.0", "production", "p")
    stages.write_stage(digests[4], "app", "4.0", "staging", "s")
    store.client.tag("bk/app", digests[3], "latest-ish")

    images, usage = store.inventory()
    plan = retention.plan_retention(images, usage, keep=1, families=["app"], target="docker")
    plan = retention.confirm(plan, store.recheck)
    actions = {d.image.ref: (d.action, d.reason) for d in plan.decisions}

    assert actions["app:5.0"][0] == "keep" and "status production" in actions["app:5.0"][1]
    assert actions["app:4.0"][0] == "keep" and "current staging image" in actions["app:4.0"][1]
    assert actions["app:1.0"][0] == "delete"
    assert actions["app:2.0"] == ("keep", "digest also tagged 2.0-again (deleting it would remove those tags too)")
    assert actions["app:3.0"][0] == "keep" and "latest-ish" in actions["app:3.0"][1]
    assert actions["app:0.9"][0] == "skip"  # not bakery's push: never deleted

    outcome = retention.execute(plan, store)

    assert outcome.images == {"app:1.0": "deleted"}
    assert store.client.digest_of("bk/app", "1.0") is None
    assert store.client.digest_of("bk/app", "2.0") == digests[2] == store.client.digest_of("bk/app", "2.0-again")
    assert store.client.digest_of("bk/app", "production") == digests[5]
    assert store.client.digest_of("bk/app", "0.9") is not None
    assert stages.read_record("app")["images"][digests[1]]["stage"] == "deleted"


def test_credentials_come_from_dockers_config_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.targets.docker.image_registry import docker_config_auth

    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"https://registry.example.com/v1/": {"auth": "dXNlcjpwdw=="}, "other:5000": {}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_auth("registry.example.com") == "dXNlcjpwdw=="
    assert docker_config_auth("other:5000") is None
    client = RegistryClient(parse_registry("registry.example.com/team"))
    assert client._headers()["Authorization"] == "Basic dXNlcjpwdw=="
