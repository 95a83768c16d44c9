locals {
  # The seed's tags plus the stage. BuildTime and BaseAMI are filled in by the
  # amazon-ebs builder's template engine.
  aws_image_tags = {
    Name         = "${var.image_name}-${var.image_version}"
    Version      = var.image_version
    BuildTime    = "{{timestamp}}"
    BaseAMI      = "{{ .SourceAMI }}"
    ManagedBy    = "packer"
    SourceCommit = var.source_commit
    status       = "testing"
  }

  # Packer's temporary builder instance and its volumes: what `sweep` looks for.
  aws_builder_tags = {
    Name                = "packer-builder-${var.image_name}-${var.image_version}"
    ManagedBy           = "bakery"
    "bakery:purpose"    = "packer-builder"
    "bakery:family"     = var.image_name
    "bakery:run-id"     = var.run_id
    "bakery:expires-at" = var.expires_at
  }
}

source "amazon-ebs" "base" {
  region              = var.aws_region
  custom_endpoint_ec2 = var.aws_endpoint
  instance_type       = var.instance_type
  ami_name            = "${var.image_name}-${var.image_version}-{{timestamp}}"

  source_ami_filter {
    filters = {
      name                = var.base_ami_filter
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    most_recent = true
    owners      = ["099720109477"] # Canonical
  }

  ssh_username = var.ssh_username

  tags            = local.aws_image_tags
  snapshot_tags   = local.aws_image_tags
  run_tags        = local.aws_builder_tags
  run_volume_tags = local.aws_builder_tags

  # Encrypt the resulting AMI
  encrypt_boot = true
  kms_key_id   = var.kms_key_id

  # Share with other accounts
  ami_users = var.ami_users
}
