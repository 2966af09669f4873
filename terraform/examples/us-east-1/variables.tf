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
  description = "The broker's NAME_PREFIX (see modules/broker). The same prefix may be used in every region. Not the SAM template's default (osb), so this broker and a SAM stack in the same account never share functions, secrets or caches."
  type        = string
  default     = "ecb"
}

variable "vpc_id" {
  description = "VPC of the caches in this region."
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

variable "kms_key_arn" {
  description = "Customer managed KMS key of the caches' encryption at rest in this region; null uses the AWS-owned key."
  type        = string
  default     = null
}

variable "architecture" {
  description = "arm64 or x86_64: the packages are taken from <lambda_dir>/<architecture>/, where the build for that architecture put them (README.md)."
  type        = string
  default     = "arm64"
}

variable "lambda_dir" {
  description = "Where cargo lambda builds each architecture's packages (path relative to this directory): `cargo lambda build --release --arm64 --output-format zip --lambda-dir target/lambda/arm64`, and without --arm64 into target/lambda/x86_64."
  type        = string
  default     = "../../../target/lambda"
}

variable "credentials_version" {
  description = "Bump to give the broker a new password (then cf update-service-broker)."
  type        = number
  default     = 1
}

variable "maximum_concurrency" {
  description = "Most provisioner invocations at once in this region."
  type        = number
  default     = 5
}

variable "alarm_actions" {
  description = "SNS topics (in this region) told when jobs reach the dead-letter queue."
  type        = list(string)
  default     = []
}
