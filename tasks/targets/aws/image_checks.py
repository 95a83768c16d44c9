"""What the weekly rebuild reads from an AMI itself: the base its ``BaseAMI`` tag names, nothing more."""

from __future__ import annotations

from typing import Any

from tasks.targets.base import NotChecked


class AmiChecks:
    """``ImageChecks`` for AMIs (``ec2``: the stage store's client; None: one made on first use)."""

    def __init__(self, ec2: Any = None) -> None:
        self._ec2 = ec2

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            from tasks.targets.aws.instances import ec2_client

            self._ec2 = ec2_client(quick=True)
        return self._ec2

    def pending_updates(self, image_id: str, run_id: str, family: str) -> tuple[str, ...]:
        # Starting an instance per family to ask apt would cost minutes and money; the base check (a newer
        # base AMI) covers what a rebuild is for.
        raise NotChecked("not checked (an AMI is not started for it; the base check covers it)")

    def base_of(self, image_id: str) -> str | None:
        """The seed's ``BaseAMI`` tag (best effort: any failure is unknown)."""
        try:
            image = self.ec2.describe_images(ImageIds=[image_id])["Images"][0]
        except Exception:
            return None
        return next((t["Value"] for t in image.get("Tags") or [] if t["Key"] == "BaseAMI"), None)

    def packages(self, image_id: str, run_id: str, family: str) -> dict[str, str] | None:
        return None  # an AMI's packages are known only from a verification's inventory
