"""Docker images a benchmark made, removed afterwards: each bench builds under its own family."""

from __future__ import annotations

import subprocess


def remove_family_images(family: str) -> None:
    """``docker rmi -f`` every ``<family>:<tag>``, so no tagged or dangling image of the bench stays."""
    listing = ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", family]
    listed = subprocess.run(listing, capture_output=True, text=True, check=False).stdout.split()
    if listed:
        subprocess.run(["docker", "rmi", "-f", *listed], capture_output=True, check=False)
