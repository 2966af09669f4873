output "sam_parameter_overrides" {
  description = "The SAM stack's network parameters: sam deploy --parameter-overrides $(terraform output -raw sam_parameter_overrides)"
  value = join(" ", [
    "CacheSubnetGroupName=${module.network.cache_subnet_group_name}",
    "MemcachedSubnetGroupName=${module.network.memcached_subnet_group_name}",
    "SecurityGroupIds=${module.network.security_group_id}",
    "CacheSubnetIds=${join(",", module.network.cache_subnet_ids)}",
  ])
}

output "cache_subnet_group_name" {
  description = "CacheSubnetGroupName of the SAM stack."
  value       = module.network.cache_subnet_group_name
}

output "memcached_subnet_group_name" {
  description = "MemcachedSubnetGroupName of the SAM stack."
  value       = module.network.memcached_subnet_group_name
}

output "cache_subnet_ids" {
  description = "CacheSubnetIds of the SAM stack (comma-separated), for serverless plans."
  value       = join(",", module.network.cache_subnet_ids)
}

output "cache_security_group_id" {
  description = "SecurityGroupIds of the SAM stack."
  value       = module.network.security_group_id
}
