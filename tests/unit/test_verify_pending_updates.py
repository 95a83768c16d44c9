"""pending-updates (bakery's extension): spec shape, parsers of apt/dnf/yum/apk output, the shell glue."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tasks.errors import UsageError
from tasks.verify import EXTENSION_TYPES, parse_spec
from tasks.verify.facts import Script
from tasks.verify.model import Fact, Unavailable
from tasks.verify.resources import pending_updates
from tasks.verify.resources.pending_updates import apk_pending, apt_pending, dnf_check_update, dnf_security, pending
from tasks.verify.runner import evaluate

APT = """\
apt
lists 1795708870 1795536070
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Building dependency tree...
Calculating upgrade...
The following NEW packages will be installed:
  linux-image-6.1.0-21-amd64
The following packages will be upgraded:
  curl libssl3 openssl tzdata
Inst openssl [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64]) []
Inst libssl3 [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024a-0+deb12u1] (2024b-0+deb12u1 Debian:12.7/stable-updates [all])
Inst linux-image-6.1.0-21-amd64 (6.1.90-1 Debian-Security:12/stable-security [amd64])
Inst curl [7.88.1-10] (7.88.1-10+deb12u5 Debian:12.5/stable, Debian-Security:12/stable-security [amd64])
Conf openssl (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
"""

DNF4_SECURITY = """\
RHSA-2024:0256 Important/Sec.  gnutls-3.7.6-23.el9_3.3.x86_64
RHSA-2024:0310 Moderate/Sec.   openssl-1:3.0.7-25.el9_3.x86_64
RHSA-2024:0310 Moderate/Sec.   openssl-libs-1:3.0.7-25.el9_3.x86_64
RHSA-2024:0311 Moderate/Sec.   openssl-libs-1:3.0.7-26.el9_3.x86_64
"""

DNF5_SECURITY = """\
Name                   Type     Severity Package                               Issued
FEDORA-2024-1a2b3c4d5e security Moderate python3-urllib3-1.26.18-2.fc39.noarch 2024-01-20 01:33:16
"""

CHECK_UPDATE = """\

kernel.x86_64                     5.14.0-427.el9                    baseos
openssl.x86_64                    1:3.0.7-27.el9                    baseos
Obsoleting Packages
grub2-tools.x86_64                1:2.06-77.el9                     baseos
    grub2-tools.x86_64            1:2.06-70.el9                     @baseos
"""


def test_a_spec_with_the_extension_is_valid() -> None:
    assert EXTENSION_TYPES == ("pending-updates",)
    spec = parse_spec("pending-updates:\n  security: {count: 0}\n  all: {count: {lt: 20}, packages: ['!openssl']}\n")
    assert [(r.type, r.id, list(r.checks)) for r in spec.resources] == [
        ("pending-updates", "security", ["count"]),
        ("pending-updates", "all", ["count", "packages"]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pending-updates:\n  critical: {count: 0}\n", "s.yaml:2: pending-updates.critical: bad pending-updates name"),
        ("pending-updates:\n  security: {cuont: 0}\n", "pending-updates.security.cuont: unknown attribute"),
        ("pending-updates:\n  security: {count: lots}\n", "pending-updates.security.count"),
        ("pending_updates:\n  security: {count: 0}\n", "did you mean 'pending-updates'?"),
    ],
)
def test_bad_extension_entries_name_the_field(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("?", r"\?")):
        parse_spec(text, "s.yaml")


def test_apt_simulation_is_read() -> None:
    updates = apt_pending(APT)
    assert [(u.name, u.installed, u.candidate, u.security) for u in updates] == [
        ("openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", True),
        ("libssl3", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", True),
        ("tzdata", "2024a-0+deb12u1", "2024b-0+deb12u1", False),
        ("linux-image-6.1.0-21-amd64", "", "6.1.90-1", True),
        ("curl", "7.88.1-10", "7.88.1-10+deb12u5", True),  # in stable and stable-security: security
    ]
    assert str(updates[0]) == "openssl 3.0.11-1~deb12u2 → 3.0.13-1~deb12u1 (Debian-Security:12/stable-security)"
    assert str(updates[3]).startswith("linux-image-6.1.0-21-amd64 new 6.1.90-1")


def test_apt_security_and_all() -> None:
    security, note = pending(APT, 0, "security")
    assert not isinstance(security, Unavailable)
    assert [u.name for u in security] == ["openssl", "libssl3", "linux-image-6.1.0-21-amd64", "curl"]
    assert note == "package lists of 2026-11-24, 2 d old"
    everything, _ = pending(APT, 0, "all")
    assert not isinstance(everything, Unavailable) and len(everything) == 5


def test_no_lists_is_said_not_guessed() -> None:
    found, _ = pending("apt\nnolists\n", 0, "security")
    assert isinstance(found, Unavailable)
    assert "no apt package lists on the host" in found.reason
    assert "cannot be told without the network" in found.reason
    failed, _ = pending("apt\nlists 1 1\nE: The package cache file is corrupted\n", 100, "all")
    assert isinstance(failed, Unavailable)
    assert failed.reason == "apt-get -s dist-upgrade failed (exit 100): E: The package cache file is corrupted"
    nothing, _ = pending("none\n", 0, "all")
    assert isinstance(nothing, Unavailable) and nothing.reason == "no apt, dnf, yum or apk on the host"


def test_dnf_and_yum_outputs() -> None:
    assert [(p.name, p.candidate) for p in dnf_security(DNF4_SECURITY)] == [
        ("gnutls", "3.7.6-23.el9_3.3"),
        ("openssl", "3.0.7-25.el9_3"),
        ("openssl-libs", "3.0.7-25.el9_3"),
    ]
    assert [p.name for p in dnf_security(DNF5_SECURITY)] == ["python3-urllib3"]
    assert [(p.name, p.candidate, p.origin) for p in dnf_check_update(CHECK_UPDATE)] == [
        ("kernel", "5.14.0-427.el9", "baseos"),
        ("openssl", "1:3.0.7-27.el9", "baseos"),
    ]
    section = f"dnf\n-- security\n{DNF4_SECURITY}-- rc 0\n-- all\n{CHECK_UPDATE}-- rc 100\n"
    security, _ = pending(section, 0, "security")
    everything, _ = pending(section, 0, "all")
    assert not isinstance(security, Unavailable) and len(security) == 3
    assert not isinstance(everything, Unavailable) and len(everything) == 2
    no_cache = "dnf\n-- security\nError: Cache-only enabled but no cache for 'baseos'\n-- rc 1\n"
    found, _ = pending(no_cache, 0, "security")
    assert isinstance(found, Unavailable) and "no dnf metadata cache on the host" in found.reason
    broken, _ = pending("yum\n-- all\nThere was a problem\n-- rc 1\n", 0, "all")
    assert isinstance(broken, Unavailable) and broken.reason == "yum failed (exit 1): There was a problem"


def test_apk_has_no_security_metadata() -> None:
    output = "apk\n-- all\nInstalled:                Available:\nmusl-1.2.4-r1            < 1.2.4-r2\n-- rc 0\n"
    assert [(p.name, p.installed, p.candidate) for p in apk_pending(output)] == [("musl", "1.2.4-r1", "1.2.4-r2")]
    everything, _ = pending(output, 0, "all")
    assert not isinstance(everything, Unavailable) and len(everything) == 1
    security, _ = pending(output, 0, "security")
    assert isinstance(security, Unavailable) and "apk keeps no security advisories" in security.reason


def test_found_values_name_the_packages() -> None:
    spec = parse_spec("pending-updates:\n  security: {count: 0, packages: ['!openssl']}\n")
    script = Script()
    facts = script.parse(f"\n{script.marker} pending-updates\n{APT}\n{script.marker} .rc 0\n".encode())
    found = pending_updates.observe(spec.resources[0], 0, facts)
    assert isinstance(found["count"], Fact) and found["count"].value == 4
    count, packages = evaluate(spec.resources[0], found)
    assert not count.ok and not packages.ok
    first = "openssl 3.0.11-1~deb12u2 → 3.0.13-1~deb12u1 (Debian-Security:12/stable-security)"
    assert count.found.startswith(f"4 ({first};")
    assert count.found.endswith("package lists of 2026-11-24, 2 d old)")
    assert packages.found.startswith("[curl, libssl3, linux-image-6.1.0-21-amd64, openssl]")


FAKE = """#!/bin/sh
echo "$0 $*" >> "{log}"
case "$*" in
  *updateinfo*) printf '%s' '{security}';;
  *check-update*) printf '%s' '{updates}'; exit 100;;
esac
"""


@pytest.mark.parametrize("manager", ["dnf", "yum"])
def test_rpm_glue_runs_cache_only_queries(manager: str, tmp_path: Path) -> None:
    """The section's shell on a host with only dnf (or yum): both queries, -C (no network), exit statuses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    fake = bin_dir / manager
    fake.write_text(FAKE.format(log=log, security=DNF4_SECURITY, updates=CHECK_UPDATE))
    fake.chmod(0o755)
    shell = pending_updates.command({"security", "all"})
    done = subprocess.run(
        ["/bin/sh", "-c", shell], env={**os.environ, "PATH": str(bin_dir)}, capture_output=True, text=True, check=False
    )
    calls = log.read_text().splitlines()
    expected_security = "updateinfo list --security" if manager == "dnf" else "updateinfo list security"
    assert [c.split(" ", 1)[1] for c in calls] == [f"-C -q {expected_security}", "-C -q check-update"]
    security, _ = pending(done.stdout, done.returncode, "security")
    everything, _ = pending(done.stdout, done.returncode, "all")
    assert not isinstance(security, Unavailable) and len(security) == 3
    assert not isinstance(everything, Unavailable) and len(everything) == 2
    only_all = pending_updates.command({"all"})
    assert "updateinfo" not in only_all and "check-update" in only_all


def test_the_shell_is_valid_posix_sh() -> None:
    for kinds in ({"security"}, {"all"}, {"security", "all"}):
        subprocess.run(["/bin/sh", "-n", "-c", pending_updates.command(kinds)], check=True)
    assert "dnf -C" in textwrap.dedent(pending_updates.command({"security"}))
