terraform {
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # One state per region: give each its own key in backend.hcl
  # (terraform init -backend-config=backend.hcl).
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}
