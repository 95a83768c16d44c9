"""The local Docker engine as a target: images tagged by stage, test containers that boot systemd.

A test container is reached only through its SSH port published on 127.0.0.1; its host key is read
through ``docker exec`` (a channel we already trust) and pinned for the SSH session.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from tasks.errors import JobFailed, UsageError
from tasks.targets.base import Image, Instance, Run, SshEndpoint, is_managed
from tasks.targets.docker.client import (
    FAMILY_LABEL,
    MANAGED_LABEL,
    PACKER_BUILDER_PREFIX,
    STAGE_TAGS,
    client,
    container_names,
    pointer_stage,
)
from tasks.targets.docker.image_registry import Registry, RegistryClient, RegistryError, context_login

LABEL_RUN_ID = "bakery.run-id"
LABEL_EXPIRES_AT = "bakery.expires-at"
LABEL_FAMILY = "bakery.family"
LABEL_IMAGE = "bakery.image"
TEST_USER = "bakery"
HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key.pub"

# Stand-in for cloud-init's default user: a per-run login with the run's key and passwordless sudo.
_ADD_TEST_USER = f"""set -eu
id {TEST_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/sh {TEST_USER}
home=$(getent passwd {TEST_USER} | cut -d: -f6)
install -d -m 700 -o {TEST_USER} -g {TEST_USER} "$home/.ssh"
printf '%s\\n' "$BAKERY_PUBLIC_KEY" > "$home/.ssh/authorized_keys"
chown {TEST_USER}:{TEST_USER} "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"
printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {TEST_USER} > /etc/sudoers.d/90-bakery-test
chmod 440 /etc/sudoers.d/90-bakery-test
"""


# Limits of a test container: it is the image under test, not a trusted process.
TEST_MEMORY = os.environ.get("BAKERY_TEST_MEMORY", "2g")
TEST_PIDS = int(os.environ.get("BAKERY_TEST_PIDS", "2048"))
# no-new-privileges blocks setuid programs, sudo included: checks then run as the login user (the report
# says so). BAKERY_TEST_NO_NEW_PRIVILEGES=0 for specs that need root facts on the Docker target.
NO_NEW_PRIVILEGES = os.environ.get("BAKERY_TEST_NO_NEW_PRIVILEGES", "1") != "0"


SYSTEMD_HIERARCHY = "/sys/fs/cgroup/systemd"


def container_limits(cgroup_version: str) -> dict[str, Any]:
    """What keeps a test container off the host: memory and process limits, ``no-new-privileges`` (unless
    turned off: it also stops sudo, so checks run as the login user), and on cgroup v1 a private cgroup
    namespace with the engine's own read-only cgroup mounts: no resource controller of the host is
    writable. systemd still needs its ``name=systemd`` hierarchy writable to start; that one (it has no
    controller, so nothing in it lifts a limit) is bound from the host. (A bind of the whole host tree
    ``:ro`` is not read-only below its top: each controller is a submount, writable as root.) On cgroup v2
    Docker mounts a private namespace read-only, where systemd cannot start (moby/moby#46763), so there
    the host namespace and a read-write ``/sys/fs/cgroup`` remain."""
    limits: dict[str, Any] = {"mem_limit": TEST_MEMORY, "pids_limit": TEST_PIDS}
    if NO_NEW_PRIVILEGES:
        limits["security_opt"] = ["no-new-privileges"]
    if cgroup_version == "2":
        limits["cgroupns"] = "host"
        limits["volumes"] = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}
    else:
        limits["cgroupns"] = "private"
        limits["volumes"] = {SYSTEMD_HIERARCHY: {"bind": SYSTEMD_HIERARCHY, "mode": "rw"}}
    return limits


def run_labels(run: Run, image_id: str = "") -> dict[str, str]:
    labels = {
        LABEL_RUN_ID: run.run_id,
        LABEL_EXPIRES_AT: run.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
        LABEL_FAMILY: run.family,
    }
    if image_id:
        labels[LABEL_IMAGE] = image_id
    return labels


class DockerTarget:
    """Images are ``<family>:<version>``; stages are tags on the same image id.

    With a ``registry`` the registry is the source of truth: a build is pushed as
    ``<registry>/[<prefix>/]<family>:<version>`` and the image's id is the pushed manifest digest; the
    test container starts from that digest (pulled by digest); stages are registry tags
    (``tasks.targets.docker.registry_stages``).
    """

    name = "docker"

    def __init__(
        self, engine: docker.DockerClient | None = None, boot_timeout: float = 60, registry: Registry | None = None
    ) -> None:
        self.engine = engine or client()
        self.boot_timeout = boot_timeout
        self.registry = registry
        self._pushed: dict[str, str] = {}  # pushed digest -> the engine's image id it was pushed from

    def _stages(self) -> Any:
        """Where stages live: the registry's tags and record, else the engine's tags and the local record."""
        if self.registry is not None:
            from tasks.targets.docker.registry_stages import RegistryStages

            return RegistryStages(self.registry)
        from tasks.targets.docker.stages import DockerStages

        return DockerStages(self.engine)

    def preflight(self) -> None:
        """With a registry: it answers and takes the credentials (``GET /v2/``) before anything is built or
        launched; else one line (unreachable, authentication refused), exit 1."""
        if self.registry is None:
            return
        registry = RegistryClient(self.registry, timeout=10)
        try:
            registry.check()
        finally:
            registry.close()

    def image_from_artifact(self, artifact_id: str, family: str, version: str) -> Image:
        try:
            found = self.engine.images.get(artifact_id)
        except docker.errors.ImageNotFound as exc:
            raise JobFailed(f"docker: image {artifact_id} from the manifest is not in the engine") from exc
        return self._image(found, family, version)

    def adopt_build(self, artifact_id: str, family: str, version: str, run_id: str) -> Image:
        """Packer's image as bakery names it: tagged ``<family>:<version>`` and labelled ``managed-by``,
        ``name`` and ``version``, whatever the template set.

        An image's labels cannot be changed, so when any is missing or different the image is committed
        anew from a container created from it (never started; named after the run so a sweep finds it if
        this is interrupted) with ``LABEL`` changes: same layers, one empty layer more. Packer's image
        stays as its untagged parent (the engine refuses to remove a parent) and goes with it: removing
        ``<family>:<version>`` (retention) prunes untagged parents.
        """
        try:
            built = self.engine.images.get(artifact_id)
        except docker.errors.ImageNotFound as exc:
            raise JobFailed(f"docker: image {artifact_id} from the packer build is not in the engine") from exc
        labels = built.labels or {}
        wanted = {
            MANAGED_LABEL: labels.get(MANAGED_LABEL) if is_managed(labels.get(MANAGED_LABEL)) else "bakery",
            FAMILY_LABEL: family,
            "version": version,
        }
        if all(labels.get(k) == v for k, v in wanted.items()):
            built.tag(family, version)
            adopted = self._image(self.engine.images.get(built.id), family, version)
        else:
            changes = [f"LABEL {k}={json.dumps(v)}" for k, v in wanted.items()]
            container = self.engine.api.create_container(built.id, name=f"{PACKER_BUILDER_PREFIX}{run_id}")
            try:
                committed = self.engine.api.commit(container["Id"], repository=family, tag=version, changes=changes)
            finally:
                with contextlib.suppress(docker.errors.NotFound):
                    self.engine.api.remove_container(container["Id"], force=True, v=True)
            adopted = self._image(self.engine.images.get(committed["Id"]), family, version)
        if self.registry is None:
            return adopted
        return self.push(adopted, run_id)

    def push(self, image: Image, run_id: str) -> Image:
        """``<family>:<version>`` pushed as ``<registry>/[<prefix>/]<family>:<version>`` (credentials: the
        context's login (``image_registry.using_login``, a Prefect block), else the engine's, from ``docker
        login`` / ``$DOCKER_CONFIG``); the image's id becomes the pushed digest, recorded in the registry's
        stage record. A failed push leaves no stage tag."""
        assert self.registry is not None
        from tasks.targets.docker.registry_stages import RegistryStages

        repository = self.registry.image(image.family)
        self.engine.images.get(image.id).tag(repository, image.version)
        digest = ""
        try:
            pushed = self.engine.images.push(
                repository, tag=image.version, stream=True, decode=True, auth_config=self._auth_config()
            )
            for line in pushed:
                if line.get("error"):
                    raise RegistryError(self._failure(f"pushing {image.name}", str(line["error"])))
                digest = str((line.get("aux") or {}).get("Digest") or digest)
        except docker.errors.APIError as exc:
            raise RegistryError(self._failure(f"pushing {image.name}", str(exc.explanation or exc))) from None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                self.engine.api.remove_image(f"{repository}:{image.version}", noprune=True)
        if not digest:
            raise RegistryError(f"registry {self.registry}: pushing {image.name}: the engine reported no digest")
        RegistryStages(self.registry).record_push(digest, image.family, image.version, run_id)
        self._pushed[digest] = image.id
        return Image(
            target=self.name,
            id=digest,
            family=image.family,
            version=image.version,
            name=image.name,
            created=image.created,
            stage="testing",
        )

    def pull(self, image: Image) -> str:
        """The image pulled by its digest from the registry; returns the engine's image id."""
        assert self.registry is not None
        reference = f"{self.registry.image(image.family)}@{image.id}"
        try:
            return str(self.engine.images.pull(reference, auth_config=self._auth_config()).id)
        except docker.errors.APIError as exc:
            raise RegistryError(self._failure(f"pulling {reference}", str(exc.explanation or exc))) from None

    def _auth_config(self) -> dict[str, str] | None:
        """The context's login for the registry as the engine's ``auth_config``; None: the engine's own."""
        assert self.registry is not None
        given = context_login(self.registry.host)
        return given.auth_config() if given is not None else None

    def _failure(self, doing: str, error: str) -> str:
        """One line for a failed push or pull; with a block's login, an authentication failure names the
        block (the engine's words are kept: they never hold the password)."""
        assert self.registry is not None
        given = context_login(self.registry.host)
        line = f"registry {self.registry}: {doing}: {error.splitlines()[0] if error else 'failed'}"
        if given is not None and given.source and _auth_failure(error):
            line += f" (the login of {given.source} was refused: check its username and password)"
        return line

    def image(self, reference: str) -> Image:
        """An image by id or ``family:version`` (with a registry: ``family:version`` or ``family@digest``
        in the registry)."""
        if self.registry is not None:
            found_in_registry = self._stages().find(reference)
            return Image(
                target=self.name,
                id=found_in_registry.id,
                family=found_in_registry.family,
                version=found_in_registry.version,
                name=found_in_registry.name,
                created=found_in_registry.created or datetime.now(UTC),
                stage=found_in_registry.stage,
            )
        try:
            found = self.engine.images.get(reference)
        except docker.errors.ImageNotFound as exc:
            raise UsageError(f"--image {reference!r}: no such image in the Docker engine") from exc
        family, version = _family_version(found.tags, reference)
        return self._image(found, family, version)

    def _image(self, found: Any, family: str, version: str) -> Image:
        # Docker writes nanoseconds ("2026-11-26T15:44:36.123456789Z"); seconds are enough here.
        created = datetime.fromisoformat(found.attrs["Created"][:19]).replace(tzinfo=UTC)
        return Image(
            target=self.name,
            id=found.id,
            family=family,
            version=version,
            name=f"{family}:{version}",
            created=created,
            stage=_stage_from_tags(found.tags, family),
        )

    def launch(self, image: Image, run: Run) -> Instance:
        """A container booting ``/sbin/init`` with SSH on 127.0.0.1 only and the run's key installed."""
        local_id = self.pull(image) if self.registry is not None else image.id
        try:
            container = self._create(local_id, image, run)
        except docker.errors.ImageNotFound:
            if self.registry is None:
                raise
            # another run on this engine released the pulled copy between our pull and our create
            container = self._create(self.pull(image), image, run)
        try:
            container.start()
        except BaseException:
            self.teardown(Instance(self.name, container.id, image.id, run.run_id))
            raise
        instance = Instance(self.name, container.id, image.id, run.run_id)
        try:
            self._exec(container, _ADD_TEST_USER, environment={"BAKERY_PUBLIC_KEY": run.public_key})
        except BaseException:
            self.teardown(instance)
            raise
        return instance

    def _create(self, local_id: str, image: Image, run: Run) -> Container:
        """The test container, created, not started (``containers.create`` never pulls: a missing image is
        ``ImageNotFound``, not a pull of ``sha256:…`` from Docker Hub as ``containers.run`` would try)."""
        return self.engine.containers.create(
            local_id,
            entrypoint=["/sbin/init"],
            command=[],
            name=f"bakery-{run.family}-{run.run_id[:8]}",
            hostname=f"{run.family}-test",
            labels=run_labels(run, image.id),
            ports={"22/tcp": ("127.0.0.1", None)},
            tmpfs={"/run": "", "/run/lock": ""},
            stop_signal="SIGRTMIN+3",
            **container_limits(str(self.engine.info().get("CgroupVersion", "1"))),
        )

    def endpoint(self, instance: Instance, run: Run) -> SshEndpoint:
        container = self.engine.containers.get(instance.id)
        ports = (container.ports or {}).get("22/tcp") or []
        if not ports:
            raise JobFailed(f"docker: container {container.name} has no published SSH port")
        return SshEndpoint(
            host="127.0.0.1",
            port=int(ports[0]["HostPort"]),
            user=TEST_USER,
            key_path=run.private_key,
            host_key=self._host_key(container),
        )

    def _host_key(self, container: Container) -> str:
        """The instance's own host key; images carry none, so wait for first boot to generate it."""
        deadline = time.monotonic() + self.boot_timeout
        while True:
            code, out = container.exec_run(["cat", HOST_KEY_FILE])
            if code == 0 and out.strip():
                return " ".join(out.decode().split()[:2])
            if time.monotonic() > deadline:
                raise JobFailed(
                    f"docker: {HOST_KEY_FILE} did not appear in {container.name} within "
                    f"{self.boot_timeout:.0f} s (does the image generate host keys at boot?)"
                )
            time.sleep(0.2)

    def _exec(self, container: Container, script: str, environment: dict[str, str] | None = None) -> str:
        code, out = container.exec_run(["/bin/sh", "-c", script], environment=environment)
        if code != 0:
            raise JobFailed(f"docker exec in {container.name} failed ({code}): {out.decode(errors='replace')[-500:]}")
        return str(out.decode(errors="replace"))

    def teardown(self, instance: Instance) -> None:
        """Remove the container; already gone is fine."""
        with contextlib.suppress(docker.errors.NotFound):
            self.engine.api.remove_container(instance.id, force=True, v=True)

    def teardown_run(self, run_id: str) -> list[str]:
        """Remove every container labelled with ``run_id`` (crash and cancellation hooks)."""
        removed = []
        for container_id, name in container_names(self.engine, label=f"{LABEL_RUN_ID}={run_id}").items():
            self.teardown(Instance(self.name, container_id, "", run_id))
            removed.append(name)
        return removed

    def set_stage(self, image: Image, stage: str, run_id: str) -> None:
        """Pointer tags ``<family>:staging`` / ``:production`` (+ ``latest``) / ``:superseded``, and the
        stage with its time (``staged-at``: the soak starts here) in the family's promotion record."""
        self._stages().write_stage(image.id, image.family, image.version, stage, run_id)

    def current_stage(self, image: Image) -> str | None:
        """The pointer tags first, the family's promotion record for what tags cannot say (``failed``, an
        older ``superseded``)."""
        return str(self._stages().stage_of(image.id, image.family))

    def release(self, image: Image) -> list[str]:
        """With a registry the registry holds the image, and the engine's copy (the build's
        ``<family>:<version>``, the pull by digest for the test) was only for this run: a worker rebuilding
        every week would otherwise keep every version it ever built or tested.

        ``<family>:<version>`` goes only when it is this very image: this target pushed it, or it carries the
        pushed digest. Never when another tag of the family (a local ``production``) names it too, and
        nothing goes while a container uses the image (a kept failed instance, another run's test). Without
        a registry the engine is where the image lives: nothing goes."""
        if self.registry is None:
            return []
        pushed = f"{self.registry.image(image.family)}@{image.id}"
        names: list[str] = []
        local_ids = set()
        for name in (f"{image.family}:{image.version}", pushed):
            try:
                found = self.engine.api.inspect_image(name)
            except docker.errors.DockerException:
                continue
            this_build = found["Id"] == self._pushed.get(image.id) or pushed in (found.get("RepoDigests") or [])
            staged = [t for t in found.get("RepoTags") or [] if t.rpartition(":")[0] == image.family]
            if this_build and staged in ([], [f"{image.family}:{image.version}"]):
                names.append(name)
                local_ids.add(str(found["Id"]))
        try:
            if not names or any(c.get("ImageID") in local_ids for c in self.engine.api.containers(all=True)):
                return []
        except docker.errors.DockerException:
            return []
        released = []
        for name in names:
            try:
                self.engine.api.remove_image(name)  # never forced: a container started meanwhile keeps it
            except docker.errors.DockerException:
                continue
            released.append(name)
        return released

    def record_test_result(self, image: Image, result: str, run_id: str) -> None:
        """``last_tested``/``last_result``/``last_test_run`` in the family's promotion record; no tag moves."""
        self._stages().record_test(image.id, image.family, image.version, result, run_id)


def _auth_failure(error: str) -> bool:
    text = error.lower()
    return any(word in text for word in ("unauthorized", "authentication required", "no basic auth", "401"))


def _stage_from_tags(tags: list[str], family: str) -> str | None:
    names = {t.rpartition(":")[2] for t in tags if t.rpartition(":")[0] == family}
    return pointer_stage(names) or ("testing" if names else None)


def _family_version(tags: list[str], reference: str) -> tuple[str, str]:
    for tag in tags:
        repo, _, version = tag.rpartition(":")
        if version not in STAGE_TAGS:
            return repo, version
    repo, _, version = reference.rpartition(":")
    return (repo, version) if repo else (reference, "")
