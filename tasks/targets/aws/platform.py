"""The AWS platform: EC2 in the configured region (AMIs, test instances, their leftovers)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from tasks.targets.base import (
    BuildInputs,
    ImageChecks,
    ImageStore,
    NotConfigured,
    Platform,
    Production,
    Source,
    StageStore,
    Target,
    TemplateSource,
)

if TYPE_CHECKING:
    from tasks.request import AwsOptions
    from tasks.targets.docker.image_registry import Registry


class AwsPlatform(Platform):
    name = "aws"
    title = "AWS"
    packer_builder = "amazon-ebs"

    def test_target(self, aws: AwsOptions | None = None, registry: Registry | None = None) -> Target:
        from tasks.targets.aws.instances import AwsTarget

        return AwsTarget(aws)

    def stage_store(self, *, publish_ssm: bool = False, registry: str = "") -> StageStore:
        from tasks.targets.aws.stages import AmiStages

        return AmiStages(publish_ssm=publish_ssm)

    def image_store(self, *, registry: str = "", family: str | None = None) -> ImageStore:
        from tasks.targets.aws.images import AwsImages, require_configured

        require_configured()
        return AwsImages()

    def leftover_sources(self, *, include_packer: bool = False) -> list[Source]:
        from tasks.targets.aws.images import require_configured
        from tasks.targets.aws.leftovers import AwsLeftovers

        require_configured()
        return [AwsLeftovers(include_packer=include_packer)]

    def check_image(self, reference: str, *, registry: str = "") -> None:
        pass  # finding an AMI is an EC2 call: the flow makes it, and says so in one line

    def teardown_run(self, run_id: str, *, timeout: float = 120) -> list[str]:
        """Only when a region is set here; short client timeouts and a bounded wait."""
        from tasks.targets.aws import client as aws
        from tasks.targets.aws.instances import AwsTarget, ec2_client

        if not aws.region():
            raise NotConfigured("AWS is not configured here (no region)")
        return AwsTarget(ec2=ec2_client(quick=True), timeout=timeout).teardown_run(run_id)

    def errors(self, doing: str) -> AbstractContextManager[None]:
        from tasks.targets.aws.instances import aws_errors

        return aws_errors(doing)

    def production(self, family: str) -> Production:
        from botocore.exceptions import BotoCoreError, ClientError

        from tasks.targets.aws import client as aws
        from tasks.targets.aws.stages import seed_lookup

        try:
            found = seed_lookup(aws.client("ec2", region=aws.region()), family)
        except (BotoCoreError, ClientError) as exc:
            return Production(reason=f"cannot look up the production AMI of {family} ({exc})")
        if not found:
            return Production(reason=f"no AMI of {family} tagged status=production")
        tags = aws.tags_of(found[0])
        return Production(found[0]["ImageId"], tags.get("Name", found[0]["ImageId"]))

    def check_configured(self, *, credentials: bool = True) -> None:
        from tasks.errors import UsageError
        from tasks.targets.aws import client as aws
        from tasks.targets.aws.images import require_configured

        if credentials:
            require_configured()
        elif not aws.region():
            raise UsageError("--target aws: no region (set AWS_REGION or AWS_DEFAULT_REGION)")

    def before_build(self, target: Target) -> None:
        pass  # Packer's amazon-ebs builder finds its source AMI itself

    def current_base(self, source: TemplateSource) -> str:
        from tasks.targets.aws import provenance

        return provenance.current_base(source)

    def record_build_inputs(self, image_id: str, built_from: BuildInputs) -> None:
        from tasks.targets.aws import provenance

        provenance.record(image_id, built_from)

    def recorded_build_inputs(self, image_id: str) -> BuildInputs | None:
        from tasks.targets.aws import provenance

        return provenance.recorded(image_id)

    def image_checks(self, store: StageStore | None = None) -> ImageChecks:
        from tasks.targets.aws.image_checks import AmiChecks
        from tasks.targets.aws.stages import AmiStages

        return AmiChecks(store.ec2 if isinstance(store, AmiStages) else None)

    def packer_variables(self) -> dict[str, str]:
        """The EC2 region and endpoint from the standard AWS variables: Packer reads neither itself, and
        without them a build could land in another region than bakery looks in."""
        from tasks.targets.aws import client as aws

        return {"aws_region": aws.region() or "", "aws_endpoint": aws.endpoint_url("ec2") or ""}
