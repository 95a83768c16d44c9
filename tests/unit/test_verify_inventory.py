"""Package inventories: parsing, version order (dpkg, rpm, apk), the diff against production, storage."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.verify import inventory
from tasks.verify.inventory import (
    Installed,
    Inventory,
    Production,
    compare_apk,
    compare_dpkg,
    compare_rpm,
    compare_versions,
    compare_with_production,
    diff,
    rpmvercmp,
)

DPKG_CASES = [
    ("1.0", "1.0", 0),
    ("1.0", "1.0.1", -1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0", "1.0+b1", -1),
    ("1.0a", "1.0", 1),
    ("1.0-1", "1.0-1.1", -1),
    ("1.0-0", "1.0", 0),
    ("1:0.9", "2.0", 1),
    ("0:2.0", "2.0", 0),
    ("2.36-9+deb12u4", "2.36-9+deb12u7", -1),
    ("2.36-9+deb12u10", "2.36-9+deb12u7", 1),
    ("3.0.11-1~deb12u2", "3.0.13-1~deb12u1", -1),
    ("1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+b1", -1),
    ("9.2p1-2+deb12u3", "9.2p1-2+deb12u2", 1),
    ("1.2-3-4", "1.2-3-5", -1),
    ("1.010", "1.9", 1),
    ("1.0.", "1.0", 1),
    ("1.0+", "1.0.", -1),
]

RPM_CASES = [  # rpm's own tests (tests/rpmvercmp.at)
    ("1.0", "2.0", -1),
    ("2.0.1a", "2.0.1", 1),
    ("5.5p1", "5.5p10", -1),
    ("10xyz", "10.1xyz", -1),
    ("xyz10", "xyz10.1", -1),
    ("xyz.4", "8", -1),
    ("8", "xyz.4", 1),
    ("6.0.rc1", "6.0", 1),
    ("10b2", "10a1", 1),
    ("1.0a", "1.0aa", -1),
    ("10.0001", "10.1", 0),
    ("10.0001", "10.0039", -1),
    ("4.999.9", "5.0", -1),
    ("2_0", "2.0", 0),
    ("a+", "a_", 0),
    ("+", "_", 0),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0^git2", -1),
    ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0.1", -1),
    ("1.0^20160102", "1.0^20160101^git1", 1),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0^git1~pre", "1.0^git1", -1),
]

APK_CASES = [
    ("1.2.4-r1", "1.2.4-r2", -1),
    ("1.2.10-r0", "1.2.9-r5", 1),
    ("1.0_rc1-r0", "1.0-r0", -1),
    ("1.0_alpha2-r0", "1.0_beta1-r0", -1),
    ("1.0_p1-r0", "1.0-r0", 1),
    ("1.0a-r0", "1.0-r0", 1),
    ("1.0-r0", "1.0.1-r0", -1),
    ("3.1.4-r5", "3.1.4-r5", 0),
]


@pytest.mark.parametrize(("a", "b", "expected"), DPKG_CASES)
def test_dpkg_order(a: str, b: str, expected: int) -> None:
    assert compare_versions("dpkg", a, b) == expected
    assert compare_versions("dpkg", b, a) == -expected


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="no dpkg to compare with")
def test_dpkg_order_agrees_with_dpkg_itself() -> None:
    for a, b, _ in DPKG_CASES:
        for op, sign in (("lt", -1), ("eq", 0), ("gt", 1)):
            real = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0
            assert real == ((compare_dpkg(a, b) > 0) - (compare_dpkg(a, b) < 0) == sign), (a, op, b)


@pytest.mark.parametrize(("a", "b", "expected"), RPM_CASES)
def test_rpm_order(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


def test_rpm_epoch_version_release() -> None:
    assert compare_rpm("1:3.0.7-25.el9", "3.0.9-1.el9") == 1  # the epoch wins
    assert compare_rpm("3.0.7-25.el9_3", "3.0.7-25.el9") == 1
    assert compare_rpm("3.0.7-24.el9", "3.0.7-25.el9") == -1
    assert compare_rpm("0:1.0-1", "1.0-1") == 0


@pytest.mark.parametrize(("a", "b", "expected"), APK_CASES)
def test_apk_order(a: str, b: str, expected: int) -> None:
    assert compare_apk(a, b) == expected
    assert compare_apk(b, a) == -expected


DPKG_OUTPUT = "\n".join(
    [
        "dpkg",
        "openssl\topenssl\tinstall ok installed\t3.0.11-1~deb12u2",
        "libc6:amd64\tlibc6\tinstall ok installed\t2.36-9+deb12u4",
        "libc6:i386\tlibc6\tinstall ok installed\t2.36-9+deb12u4",
        "zlib1g:amd64\tzlib1g\tinstall ok installed\t1:1.2.13.dfsg-1",
        "old-conf\told-conf\tdeinstall ok config-files\t0.9",
        "half\thalf\tinstall ok half-installed\t1.0",
        "",
    ]
)


def test_dpkg_inventory_keeps_installed_packages_only() -> None:
    found = inventory.parse(DPKG_OUTPUT)
    assert found is not None and found.manager == "dpkg"
    assert found.packages == {
        "libc6:amd64": ["2.36-9+deb12u4"],  # installed for two architectures: qualified
        "libc6:i386": ["2.36-9+deb12u4"],
        "openssl": ["3.0.11-1~deb12u2"],
        "zlib1g": ["1:1.2.13.dfsg-1"],  # one architecture: the plain name
    }
    assert found.versions("zlib1g:amd64") == found.versions("zlib1g") == ["1:1.2.13.dfsg-1"]
    assert found.versions("old-conf") == []


def test_rpm_and_apk_inventories() -> None:
    rpm = inventory.parse(
        "rpm\nkernel\tkernel.x86_64\t5.14.0-362.el9\nkernel\tkernel.x86_64\t5.14.0-427.el9\n"
        "gpg-pubkey\tgpg-pubkey.(none)\t8483c65d-5ccc5b19\n"
    )
    assert rpm is not None
    assert rpm.packages["kernel"] == ["5.14.0-362.el9", "5.14.0-427.el9"]  # oldest first
    apk = inventory.parse("apk\nmusl-1.2.4-r2\nca-certificates-bundle-20230506-r0\nWARNING: junk\n")
    assert apk is not None
    assert apk.packages == {"ca-certificates-bundle": ["20230506-r0"], "musl": ["1.2.4-r2"]}
    assert inventory.parse("none\n") is None
    assert inventory.parse("") is None


def inv(manager: str = "dpkg", **packages: str | list[str]) -> Inventory:
    items = [
        Installed(name, name, version)
        for name, versions in packages.items()
        for version in (versions if isinstance(versions, list) else [versions])
    ]
    return Inventory(manager, tuple(items))


def test_diff_sorts_every_kind_of_change() -> None:
    production = inv(
        openssl="3.0.11-1~deb12u2",
        libc6="2.36-9+deb12u7",
        curl="7.88.1-10",
        gone="1.0",
        same="2.0",
        tzdata="2024a-0+deb12u1",
        kernel=["6.1.0-17", "6.1.0-18"],
    )
    this = inv(
        openssl="3.0.13-1~deb12u1",
        libc6="2.36-9+deb12u10",  # u10 > u7: numbers, not text
        curl="7.88.1-10~bpo1",  # ~ sorts first: a downgrade
        new="0.1",
        same="2.0",
        tzdata="1:2023c-1",  # the epoch wins
        kernel=["6.1.0-18"],  # an old kernel removed: same newest version
    )
    result = diff(production, this)
    assert [(c.name, c.old, c.new) for c in result.upgraded] == [
        ("libc6", "2.36-9+deb12u7", "2.36-9+deb12u10"),
        ("openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1"),
        ("tzdata", "2024a-0+deb12u1", "1:2023c-1"),
    ]
    assert [(c.name, c.old, c.new) for c in result.downgraded] == [("curl", "7.88.1-10", "7.88.1-10~bpo1")]
    assert [(c.name, c.new) for c in result.added] == [("new", "0.1")]
    assert [(c.name, c.old) for c in result.removed] == [("gone", "1.0")]
    assert [(c.name, c.old, c.new) for c in result.changed] == [("kernel", "6.1.0-17, 6.1.0-18", "6.1.0-18")]
    assert result.unchanged == 1
    assert result.counts() == {
        "upgraded": 3,
        "added": 1,
        "removed": 1,
        "downgraded": 1,
        "changed": 1,
        "unchanged": 1,
    }
    assert diff(this, this).empty


def test_diff_uses_the_managers_order() -> None:
    # rpm: a number beats letters ("1.0.rc1" is newer than "1.0" for rpm, older for nobody else)
    assert [c.name for c in diff(inv("rpm", x="1.0-1"), inv("rpm", x="1.0.rc1-1")).upgraded] == ["x"]
    assert [c.name for c in diff(inv("apk", x="1.0-r0"), inv("apk", x="1.0_rc1-r0")).downgraded] == ["x"]


def test_store_and_load_round_trip(tmp_path: Path) -> None:
    found = inventory.parse(DPKG_OUTPUT)
    assert found is not None
    path = inventory.store(found, target="docker", image_id="sha256:abc", image="app-base:1", root=tmp_path)
    assert path == tmp_path / "inventories" / "docker" / "sha256_abc.json"
    document = json.loads(path.read_text())
    assert document["image_id"] == "sha256:abc" and document["count"] == 4
    loaded = inventory.load("docker", "sha256:abc", root=tmp_path)
    assert loaded is not None and loaded.image == "app-base:1"
    assert loaded.inventory.packages == found.packages
    assert diff(loaded.inventory, found).empty
    assert inventory.load("docker", "sha256:other", root=tmp_path) is None
    path.write_text("{not json")
    assert inventory.load("docker", "sha256:abc", root=tmp_path) is None


def test_image_ids_are_safe_file_names() -> None:
    assert inventory.safe_name("sha256:0123abcd") == "sha256_0123abcd"
    assert inventory.safe_name("ami-0123456789abcdef0") == "ami-0123456789abcdef0"
    assert inventory.safe_name("../../etc/passwd") == "_.._etc_passwd"


def test_comparison_with_production(tmp_path: Path) -> None:
    old = inv(openssl="3.0.11-1~deb12u2", curl="7.88.1-10")
    new = inv(openssl="3.0.13-1~deb12u1", curl="7.88.1-10", jq="1.6-2.1")
    inventory.store(old, target="docker", image_id="sha256:prod", image="app-base:1", root=tmp_path)

    def production(target: str, family: str) -> Production:
        assert (target, family) == ("docker", "app-base")
        return Production("sha256:prod", "app-base:1")

    result = compare_with_production(
        new, target="docker", family="app-base", image_id="sha256:new", image="app-base:2", root=tmp_path,
        lookup=production,
    )  # fmt: skip
    assert result.diff is not None
    assert result.headline == "packages of app-base:2 vs production app-base:1: 1 upgraded, 1 added, 1 unchanged"
    markdown = result.to_markdown()
    assert "### Upgraded (1)" in markdown
    assert "| `openssl` | 3.0.11-1~deb12u2 | 3.0.13-1~deb12u1 |" in markdown
    assert "### Added (1)" in markdown and "| `jq` | 1.6-2.1 |" in markdown
    assert "Removed" not in markdown
    assert result.to_dict()["diff"]["counts"]["upgraded"] == 1


def test_no_production_image_to_compare_with(tmp_path: Path) -> None:
    new = inv(openssl="3.0.13-1~deb12u1")

    def compare(production: Production, image_id: str = "sha256:new") -> str:
        result = compare_with_production(
            new, target="docker", family="app-base", image_id=image_id, root=tmp_path,
            lookup=lambda target, family: production,
        )  # fmt: skip
        assert result.diff is None
        assert "No production image to compare with" in result.to_markdown()
        return result.headline

    assert "no image tagged app-base:production" in compare(Production(reason="no image tagged app-base:production"))
    assert "this image is the production image" in compare(Production("sha256:new", "app-base:2"))
    missing = compare(Production("sha256:prod", "app-base:1"))
    assert "no stored inventory of the production image app-base:1" in missing


def test_production_lookup_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.targets import registry
    from tasks.targets.docker.platform import DockerPlatform

    def broken(self: DockerPlatform, family: str) -> Production:
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(DockerPlatform, "production", broken)
    found = registry.production_image("docker", "app-base")
    assert (found.image_id, found.reason) == ("", "production lookup failed (RuntimeError: engine on fire)")
    assert "no production lookup for target 'gcp'" in registry.production_image("gcp", "app-base").reason


def test_aws_production_is_the_seeds_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    class Ec2:
        def describe_images(self, **kwargs: object) -> dict[str, object]:
            calls.append(kwargs)
            return {
                "Images": [
                    {"ImageId": "ami-old", "CreationDate": "2026-01-01", "Tags": [{"Key": "Name", "Value": "a-1"}]},
                    {"ImageId": "ami-new", "CreationDate": "2026-02-01", "Tags": [{"Key": "Name", "Value": "a-2"}]},
                ]
            }

    from tasks.targets.aws import client as aws

    monkeypatch.setattr(aws, "client", lambda service, region=None: Ec2())
    from tasks.targets.registry import production_image

    found = production_image("aws", "a")
    assert (found.image_id, found.name) == ("ami-new", "a-2")
    assert {"Name": "tag:status", "Values": ["production"]} in calls[0]["Filters"]  # type: ignore[operator]
