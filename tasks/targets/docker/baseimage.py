"""The local base image the Docker source builds from, made once with debootstrap (no registry here)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from tasks.errors import JobFailed

DEFAULT_BASE_IMAGE = "bakery/debian:bookworm"
SUITE = "bookworm"
# What a cloud base image (an Ubuntu AMI, say) already has: init, sshd, sudo, and python3 with its apt
# bindings for Ansible (without python3-apt, Ansible's apt module installs it first: ~2 s per build).
INCLUDE = ("systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "python3-apt", "ca-certificates")

log = logging.getLogger(__name__)


def ensure_base_image(engine: docker.DockerClient, name: str = DEFAULT_BASE_IMAGE, mirror: str = "") -> bool:
    """Make ``name`` when the engine lacks it; returns True when it had to be made."""
    try:
        engine.images.get(name)
        return False
    except docker.errors.ImageNotFound:
        pass
    if name != DEFAULT_BASE_IMAGE:
        raise JobFailed(f"docker: base image {name!r} is not in the engine, and bakery only makes {DEFAULT_BASE_IMAGE}")
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise JobFailed(
            f"docker: base image {name} is missing and debootstrap is not installed (apt-get install debootstrap)"
        )
    log.warning("Base image %s is missing: creating it with debootstrap (%s, once; about a minute)", name, SUITE)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bakery-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        args = [debootstrap, "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(rootfs)]
        result = subprocess.run([*args, mirror] if mirror else args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise JobFailed(f"debootstrap {SUITE} failed: {result.stdout[-800:]}{result.stderr[-800:]}")
        # Host keys made by the package's postinst would be shared by every image: drop them.
        for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            engine.images.client.api.import_image_from_stream(
                tar.stdout, repository=name.split(":")[0], tag=name.split(":")[1], changes=['CMD ["/bin/bash"]']
            )
        finally:
            tar.stdout.close()
            tar.wait()
    log.warning("Base image %s created in %.0f s", name, time.monotonic() - started)
    return True
