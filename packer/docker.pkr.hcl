# A local stand-in for a VM: the committed image boots systemd as PID 1.
# Run it with:
#   docker run -d -v /sys/fs/cgroup:/sys/fs/cgroup:ro --tmpfs /run --tmpfs /run/lock \
#     --stop-signal SIGRTMIN+3 app-base:<version>
# (`docker commit --change` does not accept STOPSIGNAL, so the stop signal
# has to be given on `docker run`.)
source "docker" "base" {
  image  = var.docker_base_image
  pull   = false
  commit = true

  # Packer's temporary build container is named after the run, so `bake sweep` can find one a crashed
  # run left. A name, not labels: `docker commit` copies a container's labels into the image, and every
  # container started from the image would then look like a bakery run's.
  run_command = concat(
    ["-d", "-i", "-t"],
    var.run_id != "" ? ["--name", "bakery-build-${var.run_id}"] : [],
    ["--entrypoint=/bin/sh", "--", "{{.Image}}"],
  )

  changes = [
    "ENTRYPOINT [\"/sbin/init\"]",
    "CMD []",
    "ENV container=docker",
    "EXPOSE 22",
    "LABEL name=\"${var.image_name}\" version=\"${var.image_version}\" managed-by=\"packer\" source-commit=\"${var.source_commit}\"",
  ]
}
