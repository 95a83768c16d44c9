# Inputs of the bakery image template set.
#
# Only image_version is required. Everything else has a default so that
# `packer validate -syntax-only -var image_version=X .` works without any
# cloud credentials. Packer 1.6.6 supports `sensitive` and `validation`,
# but has no regex()/regexall(): the patterns below use regex_replace(),
# which also exists in current Packer releases.

# --- the seed's variables ----------------------------------------------------

variable "aws_region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type    = string
  default = "t3.medium"
}

variable "image_name" {
  type        = string
  default     = "app-base"
  description = "Image family: AMI/Azure/GCE name prefix, GCE image family and Docker repository."

  # Lower case so it is also a valid Docker repository and GCE image family.
  validation {
    condition     = length(var.image_name) > 0 && regex_replace(var.image_name, "^[a-z][a-z0-9-]{0,39}$", "") == ""
    error_message = "The image_name must match ^[a-z][a-z0-9-]{0,39}$ (lower-case letters, digits and '-', starting with a letter)."
  }
}

variable "image_version" {
  type        = string
  description = "Version of the image (required). Ends up in names, tags, labels and a shell command line."

  # The value reaches resource names, tags, the ansible --extra-vars string
  # and /etc/bakery-release, so only a safe character set is accepted.
  validation {
    condition     = length(var.image_version) > 0 && regex_replace(var.image_version, "^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$", "") == ""
    error_message = "The image_version must match ^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$ (e.g. 1.0.0 or 20240101T000000Z)."
  }
}

variable "ssh_username" {
  type    = string
  default = "ubuntu"

  # Used in paths of the cleanup step (/home/<user>/...).
  validation {
    condition     = length(var.ssh_username) > 0 && regex_replace(var.ssh_username, "^[a-z_][a-z0-9_-]{0,31}$", "") == ""
    error_message = "The ssh_username must be a plain user name (^[a-z_][a-z0-9_-]{0,31}$)."
  }
}

variable "base_ami_filter" {
  type    = string
  default = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"
}

# --- AWS -----------------------------------------------------------------------

# The seed shares the AMI with ["111111111111", "222222222222"] and sets
# encrypt_boot = true. Packer rejects that pair ("Cannot share AMI encrypted
# with default KMS key"): AWS cannot share an AMI encrypted with the aws/ebs
# default key. So nobody is shared with by default; to share, give the
# accounts AND a customer-managed key they may use:
#   -var 'ami_users=["111111111111","222222222222"]' -var kms_key_id=alias/app-images
variable "ami_users" {
  type        = list(string)
  default     = []
  description = "Accounts the AMI is shared with. Needs kms_key_id (a customer-managed KMS key) because the AMI is encrypted."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key (id, ARN or alias/...) for the encrypted AMI. Empty: the account's default aws/ebs key."
}

variable "aws_endpoint" {
  type        = string
  default     = ""
  description = "Custom EC2 endpoint (custom_endpoint_ec2), e.g. a local moto server. Empty: the AWS default."
}

# --- Azure (credentials normally come from -var/-var-file or PKR_VAR_*) -------

variable "azure_subscription_id" {
  type    = string
  default = ""
}

variable "azure_client_id" {
  type    = string
  default = ""
}

variable "azure_client_secret" {
  type      = string
  default   = ""
  sensitive = true
}

variable "azure_tenant_id" {
  type    = string
  default = ""
}

# --- GCP -------------------------------------------------------------------------

variable "gcp_project_id" {
  type    = string
  default = ""
}

# --- Docker ----------------------------------------------------------------------

variable "docker_base_image" {
  type        = string
  default     = "bakery/debian:bookworm"
  description = "Local base image for the docker source (never pulled)."
}

# For a registry push (the seed's docker-push post-processor). No registry is reachable in bakery's own
# CI, so the push is not part of build.pkr.hcl; the password is marked sensitive, and bakery hands any
# secret-named variable to packer as PKR_VAR_<name> so it never becomes a Prefect parameter.
variable "registry_server" {
  type    = string
  default = ""
}

variable "registry_username" {
  type    = string
  default = ""
}

variable "registry_password" {
  type      = string
  default   = ""
  sensitive = true
}

# --- bookkeeping -------------------------------------------------------------------

variable "manifest_path" {
  type        = string
  default     = "build-manifest.json"
  description = "Where the manifest post-processor writes (relative to the working directory). It appends to an existing file."
}

variable "source_commit" {
  type        = string
  default     = ""
  description = "VCS commit of the template set, recorded in tags, labels and the manifest."

  validation {
    condition     = regex_replace(var.source_commit, "^[0-9a-f]{0,40}$", "") == ""
    error_message = "The source_commit must be empty or a hex commit id (^[0-9a-f]{0,40}$)."
  }
}

variable "run_id" {
  type        = string
  default     = ""
  description = "bakery run id, put on Packer's temporary builder instance so `sweep` can find it."
}

variable "expires_at" {
  type        = string
  default     = ""
  description = "UTC ISO 8601 time after which `sweep` may remove Packer's temporary builder instance."
}
