# The caches' network alone, for a broker deployed with the SAM template
# (template.yaml): the subnet groups, subnets and security group its
# CacheSubnetGroupName, MemcachedSubnetGroupName, CacheSubnetIds and
# SecurityGroupIds parameters name. One root per region, like the full
# examples, but it creates no function, table or secret, so it never collides
# with the stack.

provider "aws" {
  region              = var.region
  allowed_account_ids = var.allowed_account_ids

  default_tags {
    tags = merge(var.tags, { "service-broker" = var.name_prefix })
  }
}

module "network" {
  source = "../../modules/network"

  name_prefix                = var.name_prefix
  vpc_id                     = var.vpc_id
  subnet_ids                 = var.private_subnet_ids
  memcached_subnet_ids       = var.memcached_subnet_ids
  allowed_security_group_ids = var.app_security_group_ids
  allowed_cidr_blocks        = var.app_cidr_blocks
}
