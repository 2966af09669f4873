terraform {
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # One state per region: this root's key names its region. The bucket (and
  # its region) come from backend.hcl: terraform init -backend-config=backend.hcl
  backend "s3" {
    key          = "elasticache-broker/eu-west-1/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
