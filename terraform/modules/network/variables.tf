variable "name_prefix" {
  description = "Prefix of every name (the broker's NAME_PREFIX): a letter first, then lowercase letters, digits and single hyphens, at most 16 characters, no hyphen last."
  type        = string
  default     = "osb"

  validation {
    # The same rule as the Rust NAME_PREFIX check (shared/aws/src/config.rs).
    condition = (
      length(var.name_prefix) <= 16 &&
      can(regex("^[a-z][a-z0-9-]*$", var.name_prefix)) &&
      !endswith(var.name_prefix, "-") &&
      !strcontains(var.name_prefix, "--")
    )
    error_message = "name_prefix must start with a letter and be at most 16 lowercase letters, digits or single hyphens, not ending with a hyphen (ElastiCache ids allow no more)."
  }
}

variable "vpc_id" {
  description = "VPC of the private subnets; the caches' security group is created in it."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8}([0-9a-f]{9})?$", var.vpc_id))
    error_message = "vpc_id must be a VPC id (vpc- followed by 8 or 17 hex digits)."
  }
}

variable "subnet_ids" {
  description = "Private subnets (in at least two Availability Zones) of the Redis OSS and Valkey subnet group, and of the Memcached one unless memcached_subnet_ids is set."
  type        = list(string)

  validation {
    condition     = length(distinct(var.subnet_ids)) >= 2
    error_message = "subnet_ids needs at least two distinct subnets (ElastiCache Multi-AZ and automatic failover need two Availability Zones)."
  }

  validation {
    condition     = alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8}([0-9a-f]{9})?$", s))])
    error_message = "Every entry of subnet_ids must be a subnet id (subnet- followed by 8 or 17 hex digits)."
  }
}

variable "memcached_subnet_ids" {
  description = "Private subnets of the Memcached subnet group; null uses subnet_ids."
  type        = list(string)
  default     = null

  validation {
    condition     = var.memcached_subnet_ids == null ? true : length(distinct(var.memcached_subnet_ids)) >= 2
    error_message = "memcached_subnet_ids needs at least two distinct subnets (or null to use subnet_ids)."
  }

  validation {
    condition     = alltrue([for s in(var.memcached_subnet_ids == null ? [] : var.memcached_subnet_ids) : can(regex("^subnet-[0-9a-f]{8}([0-9a-f]{9})?$", s))])
    error_message = "Every entry of memcached_subnet_ids must be a subnet id (subnet- followed by 8 or 17 hex digits)."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups of the applications that connect to the caches (Cloud Foundry cells, Kubernetes nodes or pods ...). Ingress is allowed from them on the cache ports only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.allowed_security_group_ids : can(regex("^sg-[0-9a-f]{8}([0-9a-f]{9})?$", s))])
    error_message = "Every entry of allowed_security_group_ids must be a security group id (sg- followed by 8 or 17 hex digits)."
  }

  validation {
    condition     = length(var.allowed_security_group_ids) + length(var.allowed_cidr_blocks) > 0
    error_message = "Give at least one source in allowed_security_group_ids or allowed_cidr_blocks: a cache security group nobody may reach is a mistake."
  }
}

variable "allowed_cidr_blocks" {
  description = "IPv4 or IPv6 CIDR blocks (private ranges of the application networks, /8 or longer) allowed to reach the caches on the cache ports. Never the whole Internet."
  type        = list(string)
  default     = []

  validation {
    # A network address with its prefix length, as AWS stores it (10.0.0.0/16, not 10.0.0.1/16).
    condition     = alltrue([for c in var.allowed_cidr_blocks : try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "Every entry of allowed_cidr_blocks must be a CIDR block written as its network address, such as 10.0.0.0/16 or fd00::/8."
  }

  validation {
    # Not /0, and not the world in pieces either: 0.0.0.0/1 and 128.0.0.0/1
    # together are 0.0.0.0/0. No private range is wider than a /8
    # (10.0.0.0/8, fd00::/8), so every block shorter than /8 is refused.
    condition     = alltrue([for c in var.allowed_cidr_blocks : try(tonumber(split("/", c)[1]) >= 8, true)])
    error_message = "allowed_cidr_blocks must not open the caches to the world: every block shorter than /8 (0.0.0.0/0, ::/0, 0.0.0.0/1 ...) is refused; name the private ranges of the application networks, such as 10.0.0.0/16."
  }
}
