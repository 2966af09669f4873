# terraform test, offline: a mocked AWS provider, plans only.

mock_provider "aws" {}

variables {
  name_prefix                = "osb"
  vpc_id                     = "vpc-0123456789abcdef0"
  subnet_ids                 = ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d4e5f60718"]
  allowed_security_group_ids = ["sg-0a1b2c3d4e5f60718"]
  allowed_cidr_blocks        = ["10.20.0.0/16", "fd00:1234::/32"]
}

run "subnet_groups_get_the_given_subnets" {
  command = plan

  assert {
    condition     = aws_elasticache_subnet_group.cache.subnet_ids == toset(var.subnet_ids)
    error_message = "The Redis OSS / Valkey subnet group must hold exactly the given subnets."
  }
  assert {
    condition     = aws_elasticache_subnet_group.memcached.subnet_ids == toset(var.subnet_ids)
    error_message = "Without memcached_subnet_ids, the Memcached subnet group must hold subnet_ids."
  }
  assert {
    condition     = output.cache_subnet_group_name == "osb-cache" && output.memcached_subnet_group_name == "osb-memcached"
    error_message = "The subnet groups must be named after the prefix."
  }
  assert {
    condition     = output.cache_subnet_ids == var.subnet_ids
    error_message = "cache_subnet_ids (the broker's CACHE_SUBNET_IDS, for serverless caches) must be the Redis OSS / Valkey subnets."
  }
}

run "memcached_can_have_its_own_subnets" {
  command = plan

  variables {
    memcached_subnet_ids = ["subnet-2a1b2c3d", "subnet-3a1b2c3d"]
  }

  assert {
    condition     = aws_elasticache_subnet_group.memcached.subnet_ids == toset(["subnet-2a1b2c3d", "subnet-3a1b2c3d"])
    error_message = "The Memcached subnet group must hold memcached_subnet_ids."
  }
  assert {
    condition     = aws_elasticache_subnet_group.cache.subnet_ids == toset(var.subnet_ids)
    error_message = "memcached_subnet_ids must not change the Redis OSS / Valkey subnet group."
  }
}

run "ingress_is_the_cache_ports_from_the_given_sources_only" {
  command = plan

  # 1 security group + 2 CIDR blocks, times 3 ports.
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.from_security_groups) == 3 && length(aws_vpc_security_group_ingress_rule.from_cidr_blocks) == 6
    error_message = "Expected one rule per (source, cache port)."
  }
  assert {
    condition = alltrue([
      for r in concat(values(aws_vpc_security_group_ingress_rule.from_security_groups), values(aws_vpc_security_group_ingress_rule.from_cidr_blocks)) :
      r.ip_protocol == "tcp" && r.from_port == r.to_port && contains([6379, 6380, 11211], r.from_port)
    ])
    error_message = "Every ingress rule must open exactly one cache port (6379, 6380 or 11211) over TCP."
  }
  # A serverless cache's reader endpoint answers on 6380, from every source
  # its primary endpoint (6379) answers.
  assert {
    condition = (
      toset([for r in aws_vpc_security_group_ingress_rule.from_security_groups : r.referenced_security_group_id if r.from_port == 6380]) == toset(var.allowed_security_group_ids) &&
      length([for r in aws_vpc_security_group_ingress_rule.from_cidr_blocks : r if r.from_port == 6380]) == length(var.allowed_cidr_blocks)
    )
    error_message = "Every allowed source must reach 6380, a serverless cache's reader endpoint."
  }
  assert {
    condition     = toset([for r in aws_vpc_security_group_ingress_rule.from_security_groups : r.referenced_security_group_id]) == toset(var.allowed_security_group_ids)
    error_message = "Security-group rules must reference exactly the given application security groups."
  }
  assert {
    condition = toset(compact(flatten([
      for r in aws_vpc_security_group_ingress_rule.from_cidr_blocks : [r.cidr_ipv4, r.cidr_ipv6]
    ]))) == toset(var.allowed_cidr_blocks)
    error_message = "CIDR rules must name exactly the given blocks (IPv6 ones as cidr_ipv6)."
  }
  assert {
    condition = alltrue([
      for r in aws_vpc_security_group_ingress_rule.from_cidr_blocks :
      !contains(["0.0.0.0/0", "::/0"], coalesce(r.cidr_ipv4, r.cidr_ipv6))
    ])
    error_message = "No ingress rule may be open to the world."
  }
}

run "security_groups_alone_are_enough" {
  command = plan

  variables {
    allowed_cidr_blocks = []
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.from_cidr_blocks) == 0 && length(aws_vpc_security_group_ingress_rule.from_security_groups) == 3
    error_message = "Only security-group rules expected."
  }
}

# ---------------------------------------------------------------- refused variables

run "the_world_is_refused_ipv4" {
  command = plan
  variables {
    allowed_cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "the_world_is_refused_ipv6" {
  command = plan
  variables {
    allowed_cidr_blocks = ["::/0"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "any_slash_zero_is_refused" {
  command = plan
  variables {
    allowed_cidr_blocks = ["10.0.0.0/0"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "the_world_in_two_halves_is_refused" {
  command = plan
  variables {
    allowed_cidr_blocks = ["0.0.0.0/1", "128.0.0.0/1"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "a_block_wider_than_a_slash_8_is_refused" {
  command = plan
  variables {
    allowed_cidr_blocks = ["8.0.0.0/7"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "a_cidr_that_is_not_a_network_address_is_refused" {
  command = plan
  variables {
    allowed_cidr_blocks = ["10.0.0.1/16"]
  }
  expect_failures = [var.allowed_cidr_blocks]
}

run "no_source_at_all_is_refused" {
  command = plan
  variables {
    allowed_security_group_ids = []
    allowed_cidr_blocks        = []
  }
  expect_failures = [var.allowed_security_group_ids]
}

run "a_bad_security_group_id_is_refused" {
  command = plan
  variables {
    allowed_security_group_ids = ["default"]
  }
  expect_failures = [var.allowed_security_group_ids]
}

run "one_subnet_is_refused" {
  command = plan
  variables {
    subnet_ids = ["subnet-0a1b2c3d4e5f60718"]
  }
  expect_failures = [var.subnet_ids]
}

run "the_same_subnet_twice_is_refused" {
  command = plan
  variables {
    subnet_ids = ["subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60718"]
  }
  expect_failures = [var.subnet_ids]
}

run "a_bad_subnet_id_is_refused" {
  command = plan
  variables {
    subnet_ids = ["subnet-0a1b2c3d4e5f60718", "my-subnet"]
  }
  expect_failures = [var.subnet_ids]
}

run "a_bad_memcached_subnet_list_is_refused" {
  command = plan
  variables {
    memcached_subnet_ids = ["subnet-2a1b2c3d"]
  }
  expect_failures = [var.memcached_subnet_ids]
}

run "a_bad_vpc_id_is_refused" {
  command = plan
  variables {
    vpc_id = "vpc-xyz"
  }
  expect_failures = [var.vpc_id]
}

run "an_uppercase_prefix_is_refused" {
  command = plan
  variables {
    name_prefix = "OSB"
  }
  expect_failures = [var.name_prefix]
}

run "a_long_prefix_is_refused" {
  command = plan
  variables {
    name_prefix = "a-very-long-prefix-name"
  }
  expect_failures = [var.name_prefix]
}

run "a_prefix_with_a_double_or_trailing_hyphen_is_refused" {
  command = plan
  variables {
    name_prefix = "osb--x"
  }
  expect_failures = [var.name_prefix]
}

run "a_prefix_ending_with_a_hyphen_is_refused" {
  command = plan
  variables {
    name_prefix = "osb-"
  }
  expect_failures = [var.name_prefix]
}

run "a_prefix_starting_with_a_digit_is_refused" {
  command = plan
  variables {
    name_prefix = "9osb"
  }
  expect_failures = [var.name_prefix]
}
