"""bakery's pipeline vs the same steps as bare commands, measured in the same run.

Bare: packer build, docker run (systemd), the spec's checks in one ssh command once sshd answers,
docker rm, docker tag. bakery: ``bake run`` against a running Prefect server. Prints both wall times
and the ratio (target <= 1.25). Run: .venv/bin/python bench/pipeline_overhead.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._run import timed
from tests.support import remove_family
from tests.support.servers import prefect_server

REPO = Path(__file__).resolve().parents[1]
FAMILY = "bench-pipeline"  # its own family: the bench never moves a user's app-base tags
BIN = Path(sys.executable).parent
# The seed's checks (packer/test/image_spec.yaml) as a plain shell script.
CHECKS = (
    "dpkg-query -W -f='${Status}' nginx | grep -q 'install ok installed' && "
    "dpkg-query -W -f='${Status}' openssh-server | grep -q 'install ok installed' && "
    "systemctl is-enabled -q nginx && systemctl is-active -q nginx && "
    "systemctl is-enabled -q ssh && systemctl is-active -q ssh && "
    "ss -ltn | grep -q ':80 ' && grep -q '^PermitRootLogin no' /etc/ssh/sshd_config && "
    "grep -q '^PasswordAuthentication no' /etc/ssh/sshd_config && openssl version | grep -q 'OpenSSL 3' && "
    "id -nG deploy | grep -qw sudo"
)


def sh(*args: str, **kwargs: object) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout  # type: ignore[call-overload]


def bare_pipeline(version: str) -> float:
    """The steps as a person would type them, with the same waits bakery must do."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "CHECKPOINT_DISABLE": "1"}
        sh(
            "packer",
            "build",
            "-only=docker.base",
            f"-var=image_version={version}",
            f"-var=image_name={FAMILY}",
            f"-var=manifest_path={tmp}/manifest.json",
            ".",
            cwd=REPO / "packer",
            env=env,
        )
        key = Path(tmp) / "key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        cid = sh(
            "docker",
            "run",
            "-d",
            "-p",
            "127.0.0.1::22",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            f"{FAMILY}:{version}",
        ).strip()
        try:
            pub = key.with_suffix(".pub").read_text().strip()
            sh(
                "docker",
                "exec",
                cid,
                "sh",
                "-c",
                "useradd -m u && install -d -m700 -o u -g u /home/u/.ssh && "
                f"echo '{pub}' > /home/u/.ssh/authorized_keys && chown u:u /home/u/.ssh/authorized_keys && "
                "echo 'u ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/u",
            )
            port = sh("docker", "port", cid, "22/tcp").split(":")[-1].strip()
            known = Path(tmp) / "known_hosts"
            while subprocess.run(
                ["docker", "exec", cid, "test", "-s", "/etc/ssh/ssh_host_ed25519_key.pub"], check=False
            ).returncode:
                time.sleep(0.2)
            host_key = sh("docker", "exec", cid, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
            known.write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
            ssh = [
                "ssh",
                "-i",
                str(key),
                "-p",
                port,
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "u@127.0.0.1",
            ]
            deadline = time.monotonic() + 60
            while subprocess.run([*ssh, "true"], capture_output=True, check=False).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not answer")
                time.sleep(0.2)
            # services may still be starting: retry the checks briefly, as a person would
            while subprocess.run(
                [*ssh, "sudo sh -s"], input=CHECKS, capture_output=True, text=True, check=False
            ).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError("checks failed")
                time.sleep(0.2)
        finally:
            sh("docker", "rm", "-f", cid)
        sh("docker", "tag", f"{FAMILY}:{version}", f"{FAMILY}:staging")
    return time.monotonic() - started


def bakery_pipeline(version: str, api_url: str, state: Path) -> float:
    env = {**os.environ, "PREFECT_API_URL": api_url, "BAKERY_STATE_DIR": str(state)}
    return timed([str(BIN / "bake"), "run", "--family", FAMILY, "--version", version], REPO, env)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare_times: list[float] = []
    bakery_times: list[float] = []
    try:
        with prefect_server() as api_url, tempfile.TemporaryDirectory() as state:
            bakery_pipeline(f"0.0.0-warm.{uuid.uuid4().hex[:6]}", api_url, Path(state))  # warm caches once
            for _ in range(args.rounds):  # interleaved, so drift in machine load hits both alike
                bare_times.append(bare_pipeline(f"0.0.0-bare.{uuid.uuid4().hex[:6]}"))
                bakery_times.append(bakery_pipeline(f"0.0.0-bake.{uuid.uuid4().hex[:6]}", api_url, Path(state)))
    finally:
        remove_family(docker.from_env(), FAMILY)
    bare, bakery = statistics.median(bare_times), statistics.median(bakery_times)
    print(f"bare commands : median {bare:.2f} s  {[round(t, 2) for t in bare_times]}")
    print(f"bake run      : median {bakery:.2f} s  {[round(t, 2) for t in bakery_times]}")
    print(f"ratio bake/bare: {bakery / bare:.2f}  (target <= 1.25)   overhead: {bakery - bare:.2f} s")


if __name__ == "__main__":
    main()
