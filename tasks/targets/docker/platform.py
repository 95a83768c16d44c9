"""The Docker platform: the local engine, or a registry when one is configured."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from tasks.targets.base import (
    BuildInputs,
    ImageChecks,
    ImageStore,
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


class DockerPlatform(Platform):
    name = "docker"
    title = "Docker"
    packer_builder = "docker"

    def test_target(self, aws: AwsOptions | None = None, registry: Registry | None = None) -> Target:
        from tasks.targets.docker.instances import DockerTarget

        return DockerTarget(registry=registry)

    def stage_store(self, *, publish_ssm: bool = False, registry: str = "") -> StageStore:
        if registry:
            from tasks.targets.docker.image_registry import parse_registry
            from tasks.targets.docker.registry_stages import RegistryStages

            return RegistryStages(parse_registry(registry))
        from tasks.targets.docker.stages import DockerStages

        return DockerStages()

    def image_store(self, *, registry: str = "", family: str | None = None) -> ImageStore:
        if registry:
            from tasks.targets.docker.image_registry import parse_registry
            from tasks.targets.docker.registry_images import RegistryImages

            return RegistryImages(parse_registry(registry), [family] if family else None)
        from tasks.targets.docker.images import DockerImages

        return DockerImages()

    def leftover_sources(self, *, include_packer: bool = False) -> list[Source]:
        from tasks.targets.docker.leftovers import DockerLeftovers

        return [DockerLeftovers()]

    def check_image(self, reference: str, *, registry: str = "") -> None:
        """With a registry, the reference's form (``family:version`` or ``family@digest``); else the image
        in the local engine."""
        if registry:
            from tasks.targets.docker.registry_stages import split_reference

            split_reference(reference)
            return
        from tasks.targets.docker.stages import DockerStages

        DockerStages().find(reference)

    def teardown_run(self, run_id: str, *, timeout: float = 120) -> list[str]:
        from tasks.targets.docker.instances import DockerTarget

        return DockerTarget().teardown_run(run_id)

    def errors(self, doing: str) -> AbstractContextManager[None]:
        return nullcontext()

    def production(self, family: str) -> Production:
        import docker.errors

        from tasks.targets.docker.client import STAGE_TAGS, client

        try:
            found = client().images.get(f"{family}:production")
        except docker.errors.ImageNotFound:
            return Production(reason=f"no image tagged {family}:production")
        except docker.errors.DockerException as exc:
            return Production(reason=f"cannot ask the Docker engine for {family}:production ({exc})")
        versions = [t for t in found.tags if t.startswith(f"{family}:") and t.rpartition(":")[2] not in STAGE_TAGS]
        return Production(found.id, versions[0] if versions else f"{family}:production")

    def check_configured(self, *, credentials: bool = True) -> None:
        pass  # the engine is this machine's; a missing one is said when it is first asked

    def before_build(self, target: Target) -> None:
        """The default base image, imported from the tarball when the engine lacks it."""
        from tasks.targets.docker.baseimage import ensure_base_image
        from tasks.targets.docker.instances import DockerTarget

        if isinstance(target, DockerTarget):
            ensure_base_image(target.engine)

    def current_base(self, source: TemplateSource) -> str:
        from tasks.targets.docker import provenance

        return provenance.current_base(source)

    def record_build_inputs(self, image_id: str, built_from: BuildInputs) -> None:
        from tasks.targets.docker import provenance

        provenance.record(image_id, built_from)

    def recorded_build_inputs(self, image_id: str) -> BuildInputs | None:
        from tasks.targets.docker import provenance

        return provenance.recorded(image_id)

    def image_checks(self, store: StageStore | None = None) -> ImageChecks:
        """On the stage store's engine (none: the local one); a registry's stages name no engine to use."""
        from tasks.targets.docker.image_checks import DockerImageChecks
        from tasks.targets.docker.stages import DockerStages

        if isinstance(store, DockerStages):
            return DockerImageChecks(store.engine)
        return DockerImageChecks(in_registry=store is not None)

    def packer_variables(self) -> dict[str, str]:
        return {}  # the engine is this machine's: nothing to tell the template
