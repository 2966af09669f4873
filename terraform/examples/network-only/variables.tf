variable "region" {
  description = "The region of the SAM stack whose caches this network serves."
  type        = string
}

variable "allowed_account_ids" {
  description = "Accounts this root may be applied to (a guard against the wrong credentials); null allows any."
  type        = list(string)
  default     = null
}

variable "tags" {
  description = "Tags of every resource (the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "name_prefix" {
  description = "The SAM stack's NamePrefix (default osb): the subnet groups are <prefix>-cache and <prefix>-memcached, the security group <prefix>-caches."
  type        = string
  default     = "osb"
}

variable "vpc_id" {
  description = "VPC of the caches."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more Availability Zones) of the Redis OSS and Valkey caches."
  type        = list(string)
}

variable "memcached_subnet_ids" {
  description = "Private subnets of the Memcached caches; null uses private_subnet_ids."
  type        = list(string)
  default     = null
}

variable "app_security_group_ids" {
  description = "Security groups of the applications that use the caches."
  type        = list(string)
  default     = []
}

variable "app_cidr_blocks" {
  description = "Private CIDR blocks of the applications that use the caches, /8 or longer (never 0.0.0.0/0, ::/0 or the world in pieces)."
  type        = list(string)
  default     = []
}
