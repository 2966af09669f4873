# Where the broker's caches live in one region: two ElastiCache subnet groups
# (Redis OSS and Valkey replication groups; Memcached clusters) over the
# operator's private subnets, and one security group every cache gets. The
# broker creates the caches itself (CACHE_SUBNET_GROUP, MEMCACHED_SUBNET_GROUP,
# CACHE_SECURITY_GROUP_IDS, and CACHE_SUBNET_IDS for serverless caches, which
# take the subnets rather than a subnet group), always on the engines' default
# ports.

locals {
  # The ports ElastiCache uses when a create names none, as the broker does
  # (a serverless cache adds its reader endpoint's).
  cache_ports = {
    redis     = 6379  # Redis OSS and Valkey, and a serverless cache's primary endpoint
    memcached = 11211 # Memcached
    # A serverless Redis OSS or Valkey cache's reader endpoint: the same host
    # as its primary endpoint, on 6380. ElastiCache User Guide, "Best
    # Practices for using Read Replicas": the two endpoints "use the same DNS
    # name but different ports. To use the read-from-replica port, you must
    # authorize access to both ports from your client application".
    serverless-reader = 6380
  }

  memcached_subnet_ids = var.memcached_subnet_ids == null ? var.subnet_ids : var.memcached_subnet_ids

  # One ingress rule per (source, port): security groups first, then CIDR blocks.
  sg_rules = {
    for pair in setproduct(var.allowed_security_group_ids, keys(local.cache_ports)) :
    "${pair[0]}:${pair[1]}" => { source = pair[0], engine = pair[1], port = local.cache_ports[pair[1]] }
  }
  cidr_rules = {
    for pair in setproduct(var.allowed_cidr_blocks, keys(local.cache_ports)) :
    "${pair[0]}:${pair[1]}" => {
      source = pair[0]
      engine = pair[1]
      port   = local.cache_ports[pair[1]]
      ipv6   = strcontains(pair[0], ":")
    }
  }
}

resource "aws_elasticache_subnet_group" "cache" {
  name        = "${var.name_prefix}-cache"
  description = "Redis OSS and Valkey caches of the ${var.name_prefix} service broker"
  subnet_ids  = var.subnet_ids
}

resource "aws_elasticache_subnet_group" "memcached" {
  name        = "${var.name_prefix}-memcached"
  description = "Memcached caches of the ${var.name_prefix} service broker"
  subnet_ids  = local.memcached_subnet_ids
}

# No egress rule: caches answer connections (security groups are stateful) and
# open none of their own, so the default allow-all egress rule AWS adds to a
# new group is removed (Terraform does that when the group declares no egress)
# and nothing replaces it.
resource "aws_security_group" "caches" {
  #checkov:skip=CKV2_AWS_5: The broker attaches this group to the caches it creates at run time (CACHE_SECURITY_GROUP_IDS), outside Terraform.
  name        = "${var.name_prefix}-caches"
  description = "ElastiCache caches of the ${var.name_prefix} service broker: cache ports from the application networks only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_security_groups" {
  for_each = local.sg_rules

  security_group_id            = aws_security_group.caches.id
  description                  = "${each.value.engine} (${each.value.port}/tcp) from ${each.value.source}"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.source
}

resource "aws_vpc_security_group_ingress_rule" "from_cidr_blocks" {
  for_each = local.cidr_rules

  security_group_id = aws_security_group.caches.id
  description       = "${each.value.engine} (${each.value.port}/tcp) from ${each.value.source}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.ipv6 ? null : each.value.source
  cidr_ipv6         = each.value.ipv6 ? each.value.source : null
}
