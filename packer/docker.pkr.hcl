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

  # Labels on Packer's temporary build container, so `bake sweep` can find one a crashed run left.
  run_command = [
    "-d", "-i", "-t",
    "--label", "bakery.run-id=${var.run_id}",
    "--label", "bakery.expires-at=${var.expires_at}",
    "--label", "bakery.family=${var.image_name}",
    "--label", "bakery.purpose=packer-builder",
    "--entrypoint=/bin/sh", "--", "{{.Image}}",
  ]

  changes = [
    "ENTRYPOINT [\"/sbin/init\"]",
    "CMD []",
    "ENV container=docker",
    "EXPOSE 22",
    "LABEL name=\"${var.image_name}\" version=\"${var.image_version}\" managed-by=\"packer\" source-commit=\"${var.source_commit}\"",
  ]
}
