build {
  sources = [
    "source.amazon-ebs.base",
    "source.azure-arm.base",
    "source.googlecompute.base",
    "source.docker.base",
  ]

  # 1. Wait for cloud-init to finish (cloud sources only: a container has no
  #    cloud-init). Bounded, so a broken instance fails the build instead of
  #    hanging it.
  provisioner "shell" {
    only = ["amazon-ebs.base", "azure-arm.base", "googlecompute.base"]
    inline = [
      "timeout 900 sh -c 'while [ ! -f /var/lib/cloud/instance/boot-finished ]; do sleep 2; done'",
    ]
  }

  # 2. System updates. sudo resets the environment, so DEBIAN_FRONTEND is
  #    passed on the sudo command line. As root in a container, sudo is a no-op.
  provisioner "shell" {
    inline = [
      "sudo DEBIAN_FRONTEND=noninteractive apt-get update -q -o Acquire::Languages=none",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl wget jq unzip htop",
    ]
  }

  # 3. Configuration files: upload, check with sshd -t, then move into place.
  provisioner "file" {
    source      = "${path.root}/files/sshd_config"
    destination = "/tmp/sshd_config"
  }

  provisioner "shell" {
    inline = [
      "sudo install -d -m 0755 /run/sshd",
      # sshd -t needs a host key; a base image may carry none (they are made per instance), so the
      # check uses a throwaway one (removed with /tmp by the cleanup step).
      "ssh-keygen -q -t ed25519 -N '' -f /tmp/sshd-check-key",
      "sudo /usr/sbin/sshd -t -f /tmp/sshd_config -h /tmp/sshd-check-key",
      "sudo mv /tmp/sshd_config /etc/ssh/sshd_config",
      "sudo chown root:root /etc/ssh/sshd_config",
      "sudo chmod 644 /etc/ssh/sshd_config",
    ]
  }

  # 4. Ansible for the rest of the configuration.
  #    Packer 1.6.6 proxies ansible's SSH through an adapter that only offers an
  #    ssh-rsa host key, which current OpenSSH refuses unless re-enabled.
  #    On docker the communicator runs everything as root, so ansible's user is
  #    root there; on clouds it is the SSH user and the play uses become (sudo).
  provisioner "ansible" {
    playbook_file = "${path.root}/ansible/configure.yml"
    user          = source.type == "docker" ? "root" : var.ssh_username
    extra_arguments = [
      "--extra-vars", "image_name=${var.image_name} image_version=${var.image_version} ansible_python_interpreter=/usr/bin/python3",
      "--ssh-extra-args", "-o HostKeyAlgorithms=+ssh-rsa -o PubkeyAcceptedAlgorithms=+ssh-rsa",
    ]
    ansible_env_vars = [
      "ANSIBLE_PIPELINING=True",
      "ANSIBLE_NOCOLOR=True",
      "ANSIBLE_RETRY_FILES_ENABLED=False",
    ]
  }

  # 5. Clean up before creating the image. Host keys are removed so that each
  #    instance generates its own on first boot (ssh-host-keys.service); an
  #    empty /etc/machine-id makes systemd give each instance its own id
  #    (/var/lib/dbus/machine-id becomes a link to it, else it would be reused).
  provisioner "shell" {
    inline = [
      "sudo apt-get clean",
      "sudo rm -rf /var/lib/apt/lists/*",
      "sudo rm -rf /tmp/*",
      "sudo rm -rf /var/tmp/*",
      "sudo rm -f /root/.bash_history",
      "sudo rm -f /home/${var.ssh_username}/.bash_history",
      "sudo rm -rf /root/.ansible /home/${var.ssh_username}/.ansible",
      "sudo rm -f /etc/ssh/ssh_host_*",
      "sudo truncate -s 0 /etc/machine-id",
      "[ ! -e /var/lib/dbus/machine-id ] || sudo ln -sf /etc/machine-id /var/lib/dbus/machine-id",
      "sudo truncate -c -s 0 /var/log/*.log",
      "sudo sync",
    ]
  }

  # 6. Azure: generalize the VM. waagent -deprovision+user deletes the build
  #    user and its sudo rights, so nothing that needs sudo can run after it:
  #    it has to be the very last step on Azure (after the cleanup above).
  provisioner "shell" {
    only            = ["azure-arm.base"]
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    inline = [
      "/usr/sbin/waagent -force -deprovision+user && export HISTSIZE=0 && sync",
    ]
    skip_clean = true
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      image_name    = var.image_name
      image_version = var.image_version
      source_commit = var.source_commit
    }
  }

  # Docker: name the committed image <image_name>:<image_version>. Stage tags
  # (staging, production, latest) are added by bakery on promotion.
  post-processor "docker-tag" {
    only       = ["docker.base"]
    repository = var.image_name
    tags       = [var.image_version]
  }
}
