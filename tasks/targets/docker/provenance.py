"""What a Docker image was built from: the base its template names, and the record kept beside the image.

A local engine's images are immutable, so the record is a small JSON file per image under
``$BAKERY_STATE_DIR/provenance/docker/``, on the machine whose engine holds the image.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from tasks.request import state_dir
from tasks.targets.base import BaseLookupError, BuildInputs, TemplateSource


def base_reference(source: TemplateSource) -> str:
    """The image a docker source builds from (its ``image``, variables resolved)."""
    return source.evaluate(source.block.get("image"), f"{source.name}.image")


def current_base(source: TemplateSource) -> str:
    """The local image id the source's ``image`` names."""
    from tasks.targets.docker.images import local_image_id

    reference = base_reference(source)
    found = local_image_id(reference)
    if found is None:
        raise BaseLookupError(f"base image {reference} is not in the local engine")
    return found


def record_path(image_id: str, root: Path | None = None) -> Path:
    safe = image_id.replace(":", "_").replace("/", "_")
    return (root or state_dir()) / "provenance" / "docker" / f"{safe}.json"


def record(image_id: str, built_from: BuildInputs) -> None:
    """The record file, rewritten atomically (a reader never sees half of it)."""
    path = record_path(image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".provenance-")
    with os.fdopen(handle, "w") as out:
        json.dump({"image": image_id, **asdict(built_from)}, out)
    os.replace(temporary, path)


def recorded(image_id: str) -> BuildInputs | None:
    try:
        data = json.loads(record_path(image_id).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not data.get("inputs"):
        return None
    return BuildInputs(base=str(data.get("base", "")), inputs=str(data["inputs"]), spec=str(data.get("spec", "")))
