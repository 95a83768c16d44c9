# Plugin requirements for Packer >= 1.7 (run `packer init packer/plugins/`).
#
# Kept in a subdirectory on purpose: Packer 1.6.6 reads only *.pkr.hcl files
# of the directory it is given (not subdirectories) and rejects this block:
#   Error: Unsupported block type ... Blocks of type "required_plugins" are not expected here.
# `packer init` installs the plugins into the plugin directory
# (~/.config/packer/plugins or PACKER_PLUGIN_PATH); `packer build packer/` then finds them.
packer {
  required_version = ">= 1.7.0"

  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.2"
    }
    azure = {
      source  = "github.com/hashicorp/azure"
      version = "~> 2.0"
    }
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = "~> 1.1"
    }
    docker = {
      source  = "github.com/hashicorp/docker"
      version = "~> 1.0"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = "~> 1.1"
    }
  }
}
