output "cache_subnet_group_name" {
  description = "Subnet group of Redis OSS and Valkey replication groups (the broker's CACHE_SUBNET_GROUP)."
  value       = aws_elasticache_subnet_group.cache.name
}

output "memcached_subnet_group_name" {
  description = "Subnet group of Memcached clusters (the broker's MEMCACHED_SUBNET_GROUP)."
  value       = aws_elasticache_subnet_group.memcached.name
}

output "cache_subnet_ids" {
  description = "The subnets of the Redis OSS and Valkey subnet group, which serverless caches take instead of a subnet group (the broker's CACHE_SUBNET_IDS)."
  value       = var.subnet_ids
}

output "security_group_id" {
  description = "Security group of every cache (the broker's CACHE_SECURITY_GROUP_IDS)."
  value       = aws_security_group.caches.id
}

output "cache_ports" {
  description = "The ports the security group opens, by engine family."
  value       = local.cache_ports
}
