output "broker_url" {
  description = "Register this URL with the platform: cf create-service-broker elasticache-eu-west-1 USER PASSWORD URL"
  value       = module.broker.broker_url
}

output "credentials_secret_arn" {
  description = "Secret with the username and password to register with: aws secretsmanager get-secret-value --region eu-west-1 --secret-id ARN"
  value       = module.broker.credentials_secret_arn
}

output "cache_subnet_group_name" {
  description = "Subnet group of Redis OSS and Valkey caches."
  value       = module.network.cache_subnet_group_name
}

output "memcached_subnet_group_name" {
  description = "Subnet group of Memcached caches."
  value       = module.network.memcached_subnet_group_name
}

output "cache_subnet_ids" {
  description = "Subnets of serverless caches."
  value       = module.network.cache_subnet_ids
}

output "cache_security_group_id" {
  description = "Security group of every cache."
  value       = module.network.security_group_id
}

output "api_environment" {
  description = "broker-api's environment, to seed the catalog: see README.md."
  value       = module.broker.api_environment
}
