# ---------------------------------------------------------------- naming

variable "name_prefix" {
  description = "NAME_PREFIX: starts every name the broker and this module make (caches, users, secrets, the table, the queues, the functions). A letter first, then lowercase letters, digits and single hyphens, at most 16 characters, no hyphen last."
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

# ---------------------------------------------------------------- network (the network module's outputs)

variable "cache_subnet_group" {
  description = "CACHE_SUBNET_GROUP: subnet group of Redis OSS and Valkey replication groups (network module output cache_subnet_group_name)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,254}$", var.cache_subnet_group))
    error_message = "cache_subnet_group must be an ElastiCache subnet group name (lowercase letters, digits and hyphens, at most 255)."
  }
}

variable "memcached_subnet_group" {
  description = "MEMCACHED_SUBNET_GROUP: subnet group of Memcached clusters (network module output memcached_subnet_group_name); null uses cache_subnet_group."
  type        = string
  default     = null

  validation {
    condition     = var.memcached_subnet_group == null || can(regex("^[a-z0-9][a-z0-9-]{0,254}$", coalesce(var.memcached_subnet_group, "x")))
    error_message = "memcached_subnet_group must be an ElastiCache subnet group name (lowercase letters, digits and hyphens, at most 255), or null."
  }
}

variable "cache_security_group_ids" {
  description = "CACHE_SECURITY_GROUP_IDS: security groups attached to every cache (network module output security_group_id)."
  type        = list(string)

  validation {
    condition     = length(var.cache_security_group_ids) >= 1 && length(var.cache_security_group_ids) <= 5
    error_message = "cache_security_group_ids needs one to five security groups (ElastiCache attaches at most five)."
  }

  validation {
    condition     = alltrue([for s in var.cache_security_group_ids : can(regex("^sg-[0-9a-f]{8}([0-9a-f]{9})?$", s))])
    error_message = "Every entry of cache_security_group_ids must be a security group id (sg- followed by 8 or 17 hex digits)."
  }
}

variable "cache_subnet_ids" {
  description = "CACHE_SUBNET_IDS: subnets of serverless caches (Redis OSS and Valkey), which take subnets rather than a subnet group: ElastiCache puts their VPC endpoint there (network module output cache_subnet_ids). Empty when no plan is serverless: the provisioner then gets neither the variable nor the EC2 permissions the endpoint needs."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for s in var.cache_subnet_ids : can(regex("^subnet-[0-9a-f]{8}([0-9a-f]{9})?$", s))])
    error_message = "Every entry of cache_subnet_ids must be a subnet id (subnet- followed by 8 or 17 hex digits)."
  }

  validation {
    condition     = length(distinct(var.cache_subnet_ids)) == length(var.cache_subnet_ids)
    error_message = "cache_subnet_ids names a subnet twice."
  }
}

variable "kms_key_arn" {
  description = "KMS_KEY_ID: customer managed key for the caches' encryption at rest; null uses the AWS-owned key. Given as an ARN so the provisioner's policy can name it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", coalesce(var.kms_key_arn, "x")))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID), or null."
  }
}

# ---------------------------------------------------------------- functions

variable "broker_api_zip" {
  description = "Path of broker-api's deployment package: target/lambda/broker-api/bootstrap.zip from `cargo lambda build --release --output-format zip` (add --arm64 for arm64)."
  type        = string

  validation {
    condition     = endswith(var.broker_api_zip, ".zip") && fileexists(var.broker_api_zip)
    error_message = "broker_api_zip must name an existing .zip file: build it with `cargo lambda build --release --output-format zip`."
  }
}

variable "provisioner_zip" {
  description = "Path of the provisioner's deployment package: target/lambda/provisioner/bootstrap.zip from `cargo lambda build --release --output-format zip` (add --arm64 for arm64)."
  type        = string

  validation {
    condition     = endswith(var.provisioner_zip, ".zip") && fileexists(var.provisioner_zip)
    error_message = "provisioner_zip must name an existing .zip file: build it with `cargo lambda build --release --output-format zip`."
  }
}

variable "architecture" {
  description = "CPU architecture of both functions; it must match the build (cargo lambda build --arm64 for arm64)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "memory_size" {
  description = "Memory of each function, in MB."
  type        = number
  default     = 256

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240 && floor(var.memory_size) == var.memory_size
    error_message = "memory_size must be a whole number of MB from 128 to 10240."
  }
}

variable "api_timeout" {
  description = "Timeout of broker-api, in seconds. It answers in milliseconds; the HTTP API waits 30 s at most."
  type        = number
  default     = 15

  validation {
    condition     = var.api_timeout >= 1 && var.api_timeout <= 29 && floor(var.api_timeout) == var.api_timeout
    error_message = "api_timeout must be a whole number of seconds from 1 to 29 (the HTTP API's integration limit is 30 s)."
  }
}

variable "provisioner_timeout" {
  description = "Timeout of the provisioner, in seconds. The job queue's visibility timeout is six times this, as Lambda advises for SQS event sources."
  type        = number
  default     = 120

  validation {
    condition     = var.provisioner_timeout >= 10 && var.provisioner_timeout <= 900 && floor(var.provisioner_timeout) == var.provisioner_timeout
    error_message = "provisioner_timeout must be a whole number of seconds from 10 to 900."
  }
}

variable "log_retention_days" {
  description = "Retention of the functions' and the HTTP API's log groups, in days. The functions' logs hold the audit line of every request."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "cache_log_retention_days" {
  description = "CACHE_LOG_RETENTION_DAYS: days the caches' delivered logs (slow log, engine log) are kept in their log groups; null leaves the broker's default (30)."
  type        = number
  default     = null

  validation {
    condition     = var.cache_log_retention_days == null || contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], coalesce(var.cache_log_retention_days, 30))
    error_message = "cache_log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary of both functions' roles, when the account requires one."
  type        = string
  default     = null
}

# ---------------------------------------------------------------- jobs

variable "batch_size" {
  description = "Jobs the provisioner receives per invocation."
  type        = number
  default     = 10

  validation {
    condition     = var.batch_size >= 1 && var.batch_size <= 10 && floor(var.batch_size) == var.batch_size
    error_message = "batch_size must be a whole number from 1 to 10 (the largest batch without a batching window)."
  }
}

variable "reconcile_minutes" {
  description = "Minutes between reconcile passes (each enqueues again the jobs that were lost and ends operations past their deadline)."
  type        = number
  default     = 5

  validation {
    condition     = var.reconcile_minutes >= 2 && var.reconcile_minutes <= 60 && floor(var.reconcile_minutes) == var.reconcile_minutes
    error_message = "reconcile_minutes must be a whole number from 2 to 60."
  }
}

variable "maximum_concurrency" {
  description = "Most provisioner invocations the SQS event source runs at once, which bounds the ElastiCache API calls in flight."
  type        = number
  default     = 5

  validation {
    condition     = var.maximum_concurrency >= 2 && var.maximum_concurrency <= 1000 && floor(var.maximum_concurrency) == var.maximum_concurrency
    error_message = "maximum_concurrency must be a whole number from 2 to 1000 (Lambda's limits for SQS event sources)."
  }
}

variable "max_receive_count" {
  description = "Receives of one job before the queue moves it to the dead-letter queue. Busy caches do not count: the provisioner re-enqueues those jobs with a delay instead of failing them."
  type        = number
  default     = 10

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count must be a whole number from 1 to 1000."
  }
}

variable "poll_delay_secs" {
  description = "POLL_DELAY_SECS: delay before the provisioner looks again at a busy cache; null leaves the broker's default (30)."
  type        = number
  default     = null

  validation {
    condition     = var.poll_delay_secs == null || try(var.poll_delay_secs >= 1 && var.poll_delay_secs <= 900 && floor(var.poll_delay_secs) == var.poll_delay_secs, false)
    error_message = "poll_delay_secs must be a whole number of seconds from 1 to 900 (the longest SQS delay), or null."
  }
}

variable "catalog_cache_secs" {
  description = "CATALOG_CACHE_SECS: how long broker-api keeps the catalog before reading the table again; null leaves the broker's default (60)."
  type        = number
  default     = null

  validation {
    condition     = var.catalog_cache_secs == null || try(var.catalog_cache_secs >= 0 && var.catalog_cache_secs <= 3600 && floor(var.catalog_cache_secs) == var.catalog_cache_secs, false)
    error_message = "catalog_cache_secs must be a whole number of seconds from 0 to 3600, or null."
  }
}

variable "secret_recovery_window_days" {
  description = "SECRET_RECOVERY_WINDOW_DAYS: recovery window of the secrets the broker deletes, and of the broker credentials secret; null leaves the broker's default (7)."
  type        = number
  default     = null

  validation {
    condition     = var.secret_recovery_window_days == null || try(var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30 && floor(var.secret_recovery_window_days) == var.secret_recovery_window_days, false)
    error_message = "secret_recovery_window_days must be a whole number of days from 7 to 30, or null."
  }
}

variable "rotation_days" {
  description = "ROTATION_DAYS: days between the scheduled rotations of admin passwords, AUTH tokens and binding passwords (Secrets Manager invokes the provisioner); 0 schedules none; null leaves the broker's default (30)."
  type        = number
  default     = null

  validation {
    condition     = var.rotation_days == null || try(var.rotation_days >= 0 && var.rotation_days <= 1000 && floor(var.rotation_days) == var.rotation_days, false)
    error_message = "rotation_days must be a whole number of days from 0 (no scheduled rotation) to 1000 (the most Secrets Manager allows), or null."
  }
}

variable "rotation_grace_secs" {
  description = "ROTATION_GRACE_SECS: seconds the previous password keeps working after a rotation; null leaves the broker's default (3600)."
  type        = number
  default     = null

  validation {
    condition     = var.rotation_grace_secs == null || try(var.rotation_grace_secs >= 0 && var.rotation_grace_secs <= 604800 && floor(var.rotation_grace_secs) == var.rotation_grace_secs, false)
    error_message = "rotation_grace_secs must be a whole number of seconds from 0 to 604800 (7 days), or null."
  }
}

variable "orphan_grace_secs" {
  description = "ORPHAN_GRACE_SECS: seconds a cache, user, user group or secret under the prefix that no record names stays before the reconciler deletes it; null leaves the broker's default (3600)."
  type        = number
  default     = null

  validation {
    condition     = var.orphan_grace_secs == null || try(var.orphan_grace_secs >= 600 && var.orphan_grace_secs <= 604800 && floor(var.orphan_grace_secs) == var.orphan_grace_secs, false)
    error_message = "orphan_grace_secs must be a whole number of seconds from 600 to 604800 (7 days), or null."
  }
}

variable "sweep_every_secs" {
  description = "SWEEP_EVERY_SECS: seconds between the starts of two orphan sweep rounds (0: every reconcile pass); null leaves the broker's default (3600)."
  type        = number
  default     = null

  validation {
    condition     = var.sweep_every_secs == null || try(var.sweep_every_secs >= 0 && var.sweep_every_secs <= 86400 && floor(var.sweep_every_secs) == var.sweep_every_secs, false)
    error_message = "sweep_every_secs must be a whole number of seconds from 0 to 86400, or null."
  }
}

# ---------------------------------------------------------------- API

variable "api_throttling_rate_limit" {
  description = "Steady requests per second the HTTP API passes to broker-api; more are answered 429 before they reach it."
  type        = number
  default     = 50

  validation {
    condition     = var.api_throttling_rate_limit > 0
    error_message = "api_throttling_rate_limit must be positive."
  }
}

variable "api_throttling_burst_limit" {
  description = "Burst of requests the HTTP API passes to broker-api."
  type        = number
  default     = 100

  validation {
    condition     = var.api_throttling_burst_limit > 0 && floor(var.api_throttling_burst_limit) == var.api_throttling_burst_limit
    error_message = "api_throttling_burst_limit must be a positive whole number."
  }
}

# ---------------------------------------------------------------- credentials and alarms

variable "broker_username" {
  description = "User name platforms authenticate with (the password is generated, never seen by Terraform's state)."
  type        = string
  default     = "broker"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,64}$", var.broker_username))
    error_message = "broker_username must be 1 to 64 letters, digits, dots, underscores or hyphens."
  }
}

variable "broker_password" {
  description = "The broker's password: an ephemeral value (e.g. ephemeral.aws_secretsmanager_random_password, as the examples do, or TF_VAR_broker_password from a vault). Never in the plan or the state; written to the secret only when credentials_version changes."
  type        = string
  nullable    = false
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = length(var.broker_password) >= 32
    error_message = "broker_password must be at least 32 characters long."
  }
}

variable "credentials_version" {
  description = "Bump (1, 2, 3 ...) to write broker_password to the secret again (with generated passwords: a new one); platforms must then be given it (cf update-service-broker)."
  type        = number
  default     = 1

  validation {
    condition     = var.credentials_version >= 1 && floor(var.credentials_version) == var.credentials_version
    error_message = "credentials_version must be a whole number from 1."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics ...) notified when jobs land in the dead-letter queue and when a cache's alarm (CPU, connections, memory) goes off, and again on recovery (ALARM_ACTIONS); at most 5."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_actions : startswith(a, "arn:")])
    error_message = "Every entry of alarm_actions must be an ARN."
  }

  validation {
    condition     = length(var.alarm_actions) <= 5
    error_message = "CloudWatch allows at most 5 actions per alarm state."
  }
}
