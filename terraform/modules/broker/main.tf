# The broker's stack in one region, as template.yaml deploys it with SAM:
# broker-api behind an HTTP API, the provisioner fed by an SQS queue with a
# dead-letter queue, the DynamoDB table, and the secret of the broker's own
# credentials. The caches' network (subnet groups, security group) comes from
# the network module.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  api_name         = "${var.name_prefix}-broker-api"
  provisioner_name = "${var.name_prefix}-provisioner"
  # The provisioner is the rotation function of the broker's secrets. Built
  # from its name: its own environment and policy cannot refer to its arn
  # attribute (a cycle).
  provisioner_arn = "arn:${local.partition}:lambda:${local.region}:${local.account}:function:${local.provisioner_name}"

  memcached_subnet_group = coalesce(var.memcached_subnet_group, var.cache_subnet_group)

  # The services the caches' KMS key is used through: ElastiCache, and DAX,
  # whose service ElastiCache's encryption at rest goes through (the
  # ElastiCache at-rest encryption guide lists both in its key policy).
  kms_via_services = tolist(["elasticache.${local.region}.amazonaws.com", "dax.${local.region}.amazonaws.com"])

  # Six times the provisioner's timeout (Lambda's advice for SQS event
  # sources), so a job is not delivered again while its batch still runs.
  visibility_timeout = 6 * var.provisioner_timeout

  # The environment of both functions: names from the Rust VARIABLES list
  # (shared/aws/src/config.rs) only. Every function parses the whole
  # AwsSettings, so each gets every required variable; the optional ones go
  # to the function that uses them, and only when the operator set them.
  common_environment = merge(
    {
      BROKER_BACKEND                = "aws"
      TABLE_NAME                    = aws_dynamodb_table.broker.name
      QUEUE_URL                     = aws_sqs_queue.jobs.url
      BROKER_CREDENTIALS_SECRET_ARN = aws_secretsmanager_secret.broker_credentials.arn
      NAME_PREFIX                   = var.name_prefix
      CACHE_SUBNET_GROUP            = var.cache_subnet_group
      MEMCACHED_SUBNET_GROUP        = local.memcached_subnet_group
      CACHE_SECURITY_GROUP_IDS      = join(",", var.cache_security_group_ids)
    },
    # broker-api: how long an operation may sit still before a poll
    # re-enqueues it; provisioner: the poll delay itself.
    var.poll_delay_secs == null ? {} : { POLL_DELAY_SECS = tostring(var.poll_delay_secs) },
    # Both functions build the broker and the worker, which rotate.
    var.rotation_days == null ? {} : { ROTATION_DAYS = tostring(var.rotation_days) },
    var.rotation_grace_secs == null ? {} : { ROTATION_GRACE_SECS = tostring(var.rotation_grace_secs) },
    # The provisioner's reconcile passes sweep for orphans.
    var.orphan_grace_secs == null ? {} : { ORPHAN_GRACE_SECS = tostring(var.orphan_grace_secs) },
    var.sweep_every_secs == null ? {} : { SWEEP_EVERY_SECS = tostring(var.sweep_every_secs) },
    # The rotation function RotateSecret names. Both functions derive the
    # rotation policy from it (no ARN, no schedule): broker-api's bind and
    # fetch responses carry metadata.renew_before and expires_at from it.
    { ROTATION_FUNCTION_ARN = local.provisioner_arn },
  )

  api_environment = merge(
    local.common_environment,
    var.catalog_cache_secs == null ? {} : { CATALOG_CACHE_SECS = tostring(var.catalog_cache_secs) },
  )

  provisioner_environment = merge(
    local.common_environment,
    var.kms_key_arn == null ? {} : { KMS_KEY_ID = var.kms_key_arn },
    # Serverless caches are created by the provisioner alone.
    length(var.cache_subnet_ids) == 0 ? {} : { CACHE_SUBNET_IDS = join(",", var.cache_subnet_ids) },
    var.secret_recovery_window_days == null ? {} : { SECRET_RECOVERY_WINDOW_DAYS = tostring(var.secret_recovery_window_days) },
    # The caches' alarms notify the same topics as the dead-letter alarm.
    length(var.alarm_actions) == 0 ? {} : { ALARM_ACTIONS = join(",", var.alarm_actions) },
    var.cache_log_retention_days == null ? {} : { CACHE_LOG_RETENTION_DAYS = tostring(var.cache_log_retention_days) },
  )
}

# ---------------------------------------------------------------- state

# Plans, instances, bindings and operations. Never a secret: records hold
# Secrets Manager ARNs. The table is the only record of which caches the
# broker owns, so deletion protection is on: `terraform destroy` stops here
# until an operator turns it off on purpose (template.yaml: DeletionPolicy Retain).
resource "aws_dynamodb_table" "broker" {
  #checkov:skip=CKV_AWS_119: Encrypted at rest with the AWS managed key; the table holds no secret by design (only Secrets Manager ARNs), so a customer managed key would add cost and a key policy without protecting anything more.
  name                        = "${var.name_prefix}-broker"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  attribute {
    name = "gsi1pk"
    type = "S"
  }
  attribute {
    name = "gsi1sk"
    type = "S"
  }

  # Instances and operations in progress (a sparse index: finished operations
  # drop out of it).
  global_secondary_index {
    name            = "gsi1"
    hash_key        = "gsi1pk"
    range_key       = "gsi1sk"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# ---------------------------------------------------------------- jobs

resource "aws_sqs_queue" "jobs" {
  name                       = "${var.name_prefix}-jobs"
  visibility_timeout_seconds = local.visibility_timeout
  message_retention_seconds  = 1209600
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.jobs_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue" "jobs_dlq" {
  name                      = "${var.name_prefix}-jobs-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

# Only the job queue may move messages into the dead-letter queue.
resource "aws_sqs_queue_redrive_allow_policy" "jobs_dlq" {
  queue_url = aws_sqs_queue.jobs_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.jobs.arn]
  })
}

# A job in the dead-letter queue is an operation nobody is working on: the
# platform's next poll re-enqueues it, but someone should look at why.
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name_prefix}-jobs-dead-letters"
  alarm_description   = "Jobs of the ${var.name_prefix} service broker failed ${var.max_receive_count} times and moved to ${aws_sqs_queue.jobs_dlq.name}: read the provisioner's log for their operation ids."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.jobs_dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

# The broker at a glance: its requests (the Embedded Metric Format lines
# broker-api writes), its functions and its job queues. template.yaml
# carries the same body (a test compares them).
resource "aws_cloudwatch_dashboard" "broker" {
  dashboard_name = "${var.name_prefix}-broker"
  dashboard_body = templatefile("${path.module}/dashboard.json.tftpl", {
    region               = local.region
    name_prefix          = var.name_prefix
    api_function         = aws_lambda_function.broker_api.function_name
    provisioner_function = aws_lambda_function.provisioner.function_name
    job_queue            = aws_sqs_queue.jobs.name
    dead_letter_queue    = aws_sqs_queue.jobs_dlq.name
  })
}

# ---------------------------------------------------------------- broker credentials

# Basic-auth credentials platforms call the broker with ({"username", "password"}).
# The password comes in through an ephemeral variable (the example roots
# generate it with Secrets Manager's ephemeral aws_secretsmanager_random_password)
# and is written with a write-only argument: it is in neither the plan nor
# the state, and is written again only when credentials_version changes.
resource "aws_secretsmanager_secret" "broker_credentials" {
  #checkov:skip=CKV_AWS_149: Encrypted with the account's aws/secretsmanager key, which only principals of this account can use; broker-api's role is the one reader.
  #checkov:skip=CKV2_AWS_57: Rotating the broker's password also means giving it to every platform (cf update-service-broker), so it is an operator's step: bump credentials_version.
  name                    = "${var.name_prefix}/broker-credentials"
  description             = "Basic auth credentials platforms use to call the ${var.name_prefix} service broker"
  recovery_window_in_days = coalesce(var.secret_recovery_window_days, 7)
}

resource "aws_secretsmanager_secret_version" "broker_credentials" {
  secret_id = aws_secretsmanager_secret.broker_credentials.id
  secret_string_wo = jsonencode({
    username = var.broker_username
    password = var.broker_password
  })
  secret_string_wo_version = var.credentials_version
}
