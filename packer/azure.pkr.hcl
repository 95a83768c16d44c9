source "azure-arm" "base" {
  subscription_id = var.azure_subscription_id
  client_id       = var.azure_client_id
  client_secret   = var.azure_client_secret
  tenant_id       = var.azure_tenant_id

  managed_image_name                = "${var.image_name}-${var.image_version}"
  managed_image_resource_group_name = "packer-images"

  os_type         = "Linux"
  image_publisher = "Canonical"
  image_offer     = "0001-com-ubuntu-server-jammy"
  image_sku       = "22_04-lts"

  location = "eastus"
  vm_size  = "Standard_D2s_v3"

  azure_tags = {
    version   = var.image_version
    managedBy = "packer"
    status    = "testing"
  }
}
