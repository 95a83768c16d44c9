locals {
  # GCE image names and label values allow only [a-z0-9-]: 1.0.0 -> 1-0-0.
  gcp_version = regex_replace(lower(var.image_version), "[^a-z0-9-]", "-")
}

source "googlecompute" "base" {
  project_id          = var.gcp_project_id
  zone                = "us-central1-a"
  machine_type        = "e2-medium"
  source_image_family = "ubuntu-2204-lts"
  image_name          = "${var.image_name}-${local.gcp_version}-{{timestamp}}"
  image_family        = var.image_name
  image_description   = "Base image version ${var.image_version}"
  ssh_username        = var.ssh_username

  image_labels = {
    version    = local.gcp_version
    managed_by = "packer"
    status     = "testing"
  }
}
