# terraform test, offline: a mocked AWS provider. Plans check what is known
# before apply; the one apply run checks what depends on ARNs (the policies,
# the redrive policy), which the mock makes up.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }

  # The provider checks that these are ARNs; the mock's random strings are not.
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock" }
  }
  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:eu-west-1:123456789012:mock"
      url = "https://sqs.eu-west-1.amazonaws.com/123456789012/mock"
    }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/broker-credentials-AbCdEf" }
  }
  mock_resource "aws_dynamodb_table" {
    defaults = { arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/osb-broker" }
  }
  mock_resource "aws_lambda_function" {
    defaults = {
      arn        = "arn:aws:lambda:eu-west-1:123456789012:function:mock"
      invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:mock/invocations"
    }
  }
  mock_resource "aws_cloudwatch_event_rule" {
    defaults = { arn = "arn:aws:events:eu-west-1:123456789012:rule/osb-reconcile" }
  }
  mock_resource "aws_apigatewayv2_api" {
    defaults = {
      execution_arn = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234"
      api_endpoint  = "https://abcdef1234.execute-api.eu-west-1.amazonaws.com"
    }
  }
}

variables {
  name_prefix              = "osb"
  cache_subnet_group       = "osb-cache"
  memcached_subnet_group   = "osb-memcached"
  cache_security_group_ids = ["sg-0a1b2c3d4e5f60718", "sg-1a1b2c3d"]
  broker_api_zip           = "tests/fixtures/bootstrap.zip"
  provisioner_zip          = "tests/fixtures/bootstrap.zip"
  broker_password          = "0123456789abcdefghijklmnopqrstuvwxyzABCD"

  # The variable names the Rust code reads: VARIABLES in
  # shared/aws/src/config.rs, so the two cannot drift apart.
  rust_variables = regexall("\"([A-Z][A-Z0-9_]*)\"", regex("pub const VARIABLES: &\\[&str\\] = &\\[([^\\]]*)\\]", file("../../../shared/aws/src/config.rs"))[0])
}

run "environment_names_are_exactly_the_expected_ones" {
  command = plan

  assert {
    condition = sort(keys(aws_lambda_function.broker_api.environment[0].variables)) == sort([
      "BROKER_BACKEND", "TABLE_NAME", "QUEUE_URL", "BROKER_CREDENTIALS_SECRET_ARN", "NAME_PREFIX",
      "CACHE_SUBNET_GROUP", "MEMCACHED_SUBNET_GROUP", "CACHE_SECURITY_GROUP_IDS", "ROTATION_FUNCTION_ARN",
    ])
    error_message = "broker-api's environment must hold exactly the required variables and the rotation function's ARN when no optional one is set."
  }
  assert {
    condition = sort(keys(aws_lambda_function.provisioner.environment[0].variables)) == sort([
      "BROKER_BACKEND", "TABLE_NAME", "QUEUE_URL", "BROKER_CREDENTIALS_SECRET_ARN", "NAME_PREFIX",
      "CACHE_SUBNET_GROUP", "MEMCACHED_SUBNET_GROUP", "CACHE_SECURITY_GROUP_IDS", "ROTATION_FUNCTION_ARN",
    ])
    error_message = "The provisioner's environment must hold exactly the required variables and its own ARN as rotation function when no optional one is set."
  }
  assert {
    condition     = aws_lambda_function.provisioner.environment[0].variables.ROTATION_FUNCTION_ARN == "arn:aws:lambda:eu-west-1:123456789012:function:${aws_lambda_function.provisioner.function_name}"
    error_message = "ROTATION_FUNCTION_ARN must be the provisioner's own ARN."
  }
  assert {
    condition     = aws_lambda_function.broker_api.environment[0].variables.ROTATION_FUNCTION_ARN == aws_lambda_function.provisioner.environment[0].variables.ROTATION_FUNCTION_ARN
    error_message = "broker-api must name the same rotation function as the provisioner, or it answers binds without metadata.renew_before while the provisioner rotates."
  }
  assert {
    condition     = length(var.rust_variables) >= 8
    error_message = "Could not read VARIABLES from shared/aws/src/config.rs."
  }
  assert {
    condition = alltrue([
      for k in concat(keys(aws_lambda_function.broker_api.environment[0].variables), keys(aws_lambda_function.provisioner.environment[0].variables)) :
      contains(flatten(var.rust_variables), k)
    ])
    error_message = "Every environment variable must be one the Rust code reads (VARIABLES in shared/aws/src/config.rs)."
  }
  assert {
    condition = alltrue([for f in [aws_lambda_function.broker_api, aws_lambda_function.provisioner] : (
      f.environment[0].variables.BROKER_BACKEND == "aws" &&
      f.environment[0].variables.NAME_PREFIX == "osb" &&
      f.environment[0].variables.TABLE_NAME == "osb-broker" &&
      f.environment[0].variables.CACHE_SUBNET_GROUP == "osb-cache" &&
      f.environment[0].variables.MEMCACHED_SUBNET_GROUP == "osb-memcached" &&
      f.environment[0].variables.CACHE_SECURITY_GROUP_IDS == "sg-0a1b2c3d4e5f60718,sg-1a1b2c3d"
    )])
    error_message = "Both functions must get the AWS backend, the prefix, the table, the subnet groups and the comma-separated security groups."
  }
}

run "optional_variables_go_to_the_function_that_uses_them" {
  command = plan

  variables {
    memcached_subnet_group      = null
    kms_key_arn                 = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0a1b-0a1b-0a1b-0a1b2c3d4e5f"
    poll_delay_secs             = 20
    catalog_cache_secs          = 0
    secret_recovery_window_days = 30
    rotation_days               = 0
    rotation_grace_secs         = 604800
    alarm_actions               = ["arn:aws:sns:eu-west-1:123456789012:cache-alarms", "arn:aws:sns:eu-west-1:123456789012:pager"]
    cache_log_retention_days    = 14
    cache_subnet_ids            = ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d"]
  }

  assert {
    condition     = toset(keys(aws_lambda_function.broker_api.environment[0].variables)) == toset(["BROKER_BACKEND", "TABLE_NAME", "QUEUE_URL", "BROKER_CREDENTIALS_SECRET_ARN", "NAME_PREFIX", "CACHE_SUBNET_GROUP", "MEMCACHED_SUBNET_GROUP", "CACHE_SECURITY_GROUP_IDS", "POLL_DELAY_SECS", "CATALOG_CACHE_SECS", "ROTATION_DAYS", "ROTATION_GRACE_SECS", "ROTATION_FUNCTION_ARN"])
    error_message = "broker-api must get POLL_DELAY_SECS, CATALOG_CACHE_SECS, ROTATION_DAYS, ROTATION_GRACE_SECS and ROTATION_FUNCTION_ARN (its rotation policy is derived from them), and neither KMS_KEY_ID, SECRET_RECOVERY_WINDOW_DAYS nor CACHE_SUBNET_IDS (only the provisioner creates serverless caches)."
  }
  assert {
    condition     = toset(keys(aws_lambda_function.provisioner.environment[0].variables)) == toset(["BROKER_BACKEND", "TABLE_NAME", "QUEUE_URL", "BROKER_CREDENTIALS_SECRET_ARN", "NAME_PREFIX", "CACHE_SUBNET_GROUP", "MEMCACHED_SUBNET_GROUP", "CACHE_SECURITY_GROUP_IDS", "CACHE_SUBNET_IDS", "POLL_DELAY_SECS", "KMS_KEY_ID", "SECRET_RECOVERY_WINDOW_DAYS", "ROTATION_DAYS", "ROTATION_GRACE_SECS", "ROTATION_FUNCTION_ARN", "ALARM_ACTIONS", "CACHE_LOG_RETENTION_DAYS"])
    error_message = "The provisioner must get CACHE_SUBNET_IDS, POLL_DELAY_SECS, KMS_KEY_ID, SECRET_RECOVERY_WINDOW_DAYS, the rotation variables and ALARM_ACTIONS, and not CATALOG_CACHE_SECS."
  }
  assert {
    condition = (
      aws_lambda_function.provisioner.environment[0].variables.KMS_KEY_ID == var.kms_key_arn &&
      aws_lambda_function.provisioner.environment[0].variables.POLL_DELAY_SECS == "20" &&
      aws_lambda_function.broker_api.environment[0].variables.CATALOG_CACHE_SECS == "0" &&
      aws_lambda_function.provisioner.environment[0].variables.SECRET_RECOVERY_WINDOW_DAYS == "30" &&
      aws_lambda_function.broker_api.environment[0].variables.ROTATION_DAYS == "0" &&
      aws_lambda_function.provisioner.environment[0].variables.ROTATION_DAYS == "0" &&
      aws_lambda_function.provisioner.environment[0].variables.ROTATION_GRACE_SECS == "604800" &&
      aws_lambda_function.provisioner.environment[0].variables.ALARM_ACTIONS == "arn:aws:sns:eu-west-1:123456789012:cache-alarms,arn:aws:sns:eu-west-1:123456789012:pager" &&
      aws_lambda_function.provisioner.environment[0].variables.CACHE_LOG_RETENTION_DAYS == "14" &&
      aws_lambda_function.provisioner.environment[0].variables.CACHE_SUBNET_IDS == "subnet-0a1b2c3d4e5f60718,subnet-1a1b2c3d"
    )
    error_message = "The optional variables must carry the given values."
  }
  assert {
    condition     = aws_lambda_function.provisioner.environment[0].variables.MEMCACHED_SUBNET_GROUP == "osb-cache"
    error_message = "Without memcached_subnet_group, MEMCACHED_SUBNET_GROUP must be the cache subnet group."
  }
  assert {
    condition     = alltrue([for k in keys(aws_lambda_function.provisioner.environment[0].variables) : contains(flatten(var.rust_variables), k)])
    error_message = "Every environment variable must be one the Rust code reads."
  }
}

run "functions_queue_table_and_api" {
  command = plan

  assert {
    condition = alltrue([for f in [aws_lambda_function.broker_api, aws_lambda_function.provisioner] : (
      f.runtime == "provided.al2023" && f.handler == "bootstrap" && f.architectures == tolist(["arm64"]) &&
      f.tracing_config[0].mode == "Active"
    )])
    error_message = "Both functions: provided.al2023, handler bootstrap, arm64 by default, active tracing."
  }
  assert {
    condition = (
      aws_cloudwatch_log_group.broker_api.name == "/aws/lambda/osb-broker-api" &&
      aws_cloudwatch_log_group.provisioner.name == "/aws/lambda/osb-provisioner" &&
      aws_cloudwatch_log_group.broker_api.retention_in_days == 365 &&
      aws_cloudwatch_log_group.provisioner.retention_in_days == 365
    )
    error_message = "Each function needs its own log group, with a retention."
  }
  assert {
    condition = (
      aws_lambda_event_source_mapping.jobs.function_response_types == toset(["ReportBatchItemFailures"]) &&
      aws_lambda_event_source_mapping.jobs.batch_size == 10 &&
      aws_lambda_event_source_mapping.jobs.scaling_config[0].maximum_concurrency == 5
    )
    error_message = "The provisioner's SQS source must report batch item failures, with the given batch size and maximum concurrency."
  }
  assert {
    condition     = aws_sqs_queue.jobs.visibility_timeout_seconds > aws_lambda_function.provisioner.timeout && aws_sqs_queue.jobs.visibility_timeout_seconds == 720
    error_message = "The job queue's visibility timeout must be six times the provisioner's timeout."
  }
  assert {
    condition     = aws_sqs_queue.jobs.sqs_managed_sse_enabled && aws_sqs_queue.jobs_dlq.sqs_managed_sse_enabled
    error_message = "Both queues must be encrypted."
  }
  assert {
    condition = (
      aws_dynamodb_table.broker.hash_key == "pk" && aws_dynamodb_table.broker.range_key == "sk" &&
      aws_dynamodb_table.broker.billing_mode == "PAY_PER_REQUEST" &&
      one([for i in aws_dynamodb_table.broker.global_secondary_index : i if i.name == "gsi1" && i.hash_key == "gsi1pk" && i.range_key == "gsi1sk" && i.projection_type == "ALL"]) != null &&
      aws_dynamodb_table.broker.ttl[0].attribute_name == "expires_at" && aws_dynamodb_table.broker.ttl[0].enabled &&
      aws_dynamodb_table.broker.point_in_time_recovery[0].enabled &&
      aws_dynamodb_table.broker.server_side_encryption[0].enabled &&
      aws_dynamodb_table.broker.deletion_protection_enabled
    )
    error_message = "The table must be the one the Rust store expects (pk/sk, gsi1 over gsi1pk/gsi1sk with ALL, TTL on expires_at), on demand, with PITR, SSE and deletion protection."
  }
  assert {
    condition     = aws_apigatewayv2_route.default.route_key == "$default" && aws_apigatewayv2_api.broker.protocol_type == "HTTP"
    error_message = "Every request must reach broker-api through the HTTP API's $default route."
  }
  assert {
    condition     = aws_iam_role.broker_api.name == "osb-broker-api-eu-west-1" && aws_iam_role.provisioner.name == "osb-provisioner-eu-west-1"
    error_message = "Role names must carry the region, so the module applies in several regions of one account."
  }
  assert {
    condition     = aws_secretsmanager_secret.broker_credentials.name == "osb/broker-credentials"
    error_message = "The credentials secret must be named under the prefix."
  }
  # Lambda Developer Guide, "Recursive loop detection": after 16 hops from
  # one event Lambda stops the chain unless the function's recursive loop
  # setting is Allow; the provisioner re-sends its job while it polls.
  assert {
    condition = (
      aws_lambda_function_recursion_config.provisioner.recursive_loop == "Allow" &&
      aws_lambda_function_recursion_config.provisioner.function_name == aws_lambda_function.provisioner.function_name
    )
    error_message = "The provisioner re-enqueues its own jobs: its recursive loop setting must be Allow."
  }
  assert {
    condition = (
      aws_cloudwatch_event_rule.reconcile.schedule_expression == "rate(5 minutes)" &&
      jsondecode(aws_cloudwatch_event_target.reconcile.input) == { Reconcile = {} } &&
      aws_lambda_permission.reconcile.principal == "events.amazonaws.com"
    )
    error_message = "A schedule must invoke the provisioner with {\"Reconcile\": {}} every 5 minutes by default."
  }
}

run "x86_64_and_other_sizes" {
  command = plan

  variables {
    architecture        = "x86_64"
    provisioner_timeout = 300
    batch_size          = 1
    maximum_concurrency = 2
  }

  assert {
    condition     = aws_lambda_function.broker_api.architectures == tolist(["x86_64"]) && aws_lambda_function.provisioner.architectures == tolist(["x86_64"])
    error_message = "architecture must reach both functions."
  }
  assert {
    condition     = aws_sqs_queue.jobs.visibility_timeout_seconds == 1800
    error_message = "The visibility timeout must follow the provisioner's timeout."
  }
}

run "policies_name_only_what_each_function_calls" {
  command = apply

  variables {
    kms_key_arn      = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0a1b-0a1b-0a1b-0a1b2c3d4e5f"
    cache_subnet_ids = ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d"]
  }

  # broker-api: no ElastiCache write, no instance-secret write, no queue read.
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.broker_api.policy).Statement :
      alltrue([for a in flatten([s.Action]) : contains([
        "logs:CreateLogStream", "logs:PutLogEvents",
        "xray:PutTraceSegments", "xray:PutTelemetryRecords",
        "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:Query",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
        "elasticache:DescribeReplicationGroups", "elasticache:DescribeCacheClusters",
        "elasticache:DescribeSnapshots",
        "elasticache:DescribeServerlessCaches", "elasticache:DescribeServerlessCacheSnapshots",
        "cloudwatch:DescribeAlarms", "cloudwatch:GetMetricData",
      ], a)])
    ])
    error_message = "broker-api's policy must allow only the calls broker-api makes."
  }
  # The caches' alarms: the provisioner keeps them, broker-api reads their
  # states; both only on alarms under the prefix. broker-api's one other
  # CloudWatch call, GetMetricData for the dashboard's charts, has no
  # resource type: a statement of its own, with that action alone.
  assert {
    condition = alltrue([
      for s in concat(jsondecode(aws_iam_role_policy.broker_api.policy).Statement, jsondecode(aws_iam_role_policy.provisioner.policy).Statement) :
      flatten([s.Resource]) == ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:osb-*"]
      if anytrue([for a in flatten([s.Action]) : startswith(a, "cloudwatch:")]) && s.Sid != "CacheMetricCharts"
      ]) && alltrue([
      for s in jsondecode(aws_iam_role_policy.broker_api.policy).Statement :
      flatten([s.Action]) == ["cloudwatch:GetMetricData"] if s.Sid == "CacheMetricCharts"
      ]) && alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      !contains(flatten([s.Action]), "cloudwatch:GetMetricData")
      ]) && anytrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      length(setsubtract(["cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:TagResource", "cloudwatch:ListTagsForResource"], flatten([s.Action]))) == 0
    ])
    error_message = "The provisioner must describe, put, tag, read the tags of and delete the alarms under the prefix, and nothing else of CloudWatch."
  }
  # DeleteReplicationGroup with a final snapshot needs CreateSnapshot (the
  # ElastiCache API reference): without it a plan with final snapshots
  # cannot be deprovisioned.
  assert {
    condition = anytrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      contains(flatten([s.Action]), "elasticache:CreateSnapshot") &&
      contains(flatten([s.Resource]), "arn:aws:elasticache:eu-west-1:123456789012:snapshot:osb-*") &&
      contains(flatten([s.Resource]), "arn:aws:elasticache:eu-west-1:123456789012:replicationgroup:osb-*")
    ])
    error_message = "The provisioner needs elasticache:CreateSnapshot on its replication groups and snapshots to delete a cache with a final snapshot."
  }
  # DeleteServerlessCache likewise: "CreateServerlessCacheSnapshot permission
  # is required to create a final snapshot" (the ElastiCache API reference).
  assert {
    condition = anytrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      contains(flatten([s.Action]), "elasticache:CreateServerlessCacheSnapshot") &&
      contains(flatten([s.Resource]), "arn:aws:elasticache:eu-west-1:123456789012:serverlesscachesnapshot:osb-*") &&
      contains(flatten([s.Resource]), "arn:aws:elasticache:eu-west-1:123456789012:serverlesscache:osb-*")
    ])
    error_message = "The provisioner needs elasticache:CreateServerlessCacheSnapshot on its serverless caches and their snapshots to delete a serverless cache with a final snapshot."
  }
  # No wildcard action, and "*" as a resource only for X-Ray (which has no
  # resources), the orphan sweep's listings (calls that name no resource),
  # log delivery, the dashboard's GetMetricData and EC2's Describe calls (no
  # resource type).
  assert {
    condition = alltrue([
      for s in concat(jsondecode(aws_iam_role_policy.broker_api.policy).Statement, jsondecode(aws_iam_role_policy.provisioner.policy).Statement) :
      alltrue([for a in flatten([s.Action]) : !strcontains(a, "*")]) &&
      (s.Sid == "XRayTraces" || s.Sid == "OrphanSweepListings" || s.Sid == "CacheLogDelivery" || s.Sid == "CacheMetricCharts" || s.Sid == "SnapshotListings" || s.Sid == "ServerlessNetworkLookups" || !contains(flatten([s.Resource]), "*"))
    ])
    error_message = "Policies must name actions one by one and scope every resource but X-Ray's and the sweep's listings."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      alltrue([for a in flatten([s.Action]) : can(regex("^(elasticache:Describe|secretsmanager:List)", a))])
      if s.Sid == "OrphanSweepListings"
    ])
    error_message = "The sweep's unscoped statement may only describe and list; deletes stay scoped to the prefix."
  }
  # Log delivery's unscoped statement is what ElastiCache asks of its caller,
  # and no log group may be created, changed or deleted through it.
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      alltrue([for a in flatten([s.Action]) : can(regex("^logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)$", a))])
      if s.Sid == "CacheLogDelivery"
      ]) && alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      flatten([s.Resource]) == ["arn:aws:logs:eu-west-1:123456789012:log-group:/elasticache/osb-*"]
      if s.Sid == "CacheLogGroups"
    ])
    error_message = "Log groups are created, tagged and deleted only under /elasticache/<prefix>-; the unscoped statement only sets up log delivery."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      alltrue([for r in flatten([s.Resource]) : (
        !startswith(r, "arn:aws:elasticache:") ||
        can(regex("^arn:aws:elasticache:eu-west-1:123456789012:(replicationgroup|cluster|serverlesscache|user|usergroup|snapshot|serverlesscachesnapshot|parametergroup):osb-\\*$", r)) ||
        contains(["subnetgroup:osb-cache", "subnetgroup:osb-memcached", "parametergroup:default.*"], trimprefix(r, "arn:aws:elasticache:eu-west-1:123456789012:"))
      )])
    ])
    error_message = "The provisioner's ElastiCache resources must be the prefix's caches (serverless ones too), users, snapshots and parameter groups, its subnet groups and the default parameter groups."
  }
  # EC2: only what ElastiCache asks of the caller of CreateServerlessCache
  # (AmazonElastiCacheFullAccess's statements for serverless caches), for the
  # VPC endpoint it makes in cache_subnet_ids. The endpoint only for
  # ElastiCache Serverless's services, tagged only in its creation with
  # ElastiCache's tag; the network it names only the given subnets, the
  # caches' security groups and the region's VPCs.
  assert {
    condition = alltrue(flatten([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement : [
        for a in flatten([s.Action]) : startswith(s.Sid, "Serverless") && contains(
          ["ec2:CreateVpcEndpoint", "ec2:CreateTags", "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"], a
        ) if startswith(a, "ec2:")
      ]
      ])) && alltrue([
      for s in jsondecode(aws_iam_role_policy.broker_api.policy).Statement :
      alltrue([for a in flatten([s.Action]) : !startswith(a, "ec2:")])
    ])
    error_message = "Only the provisioner's Serverless* statements may name EC2 actions, and only CreateVpcEndpoint, CreateTags on creation and the VPC, subnet and security group lookups."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      s.Condition == { StringLike = { "ec2:VpceServiceName" = "com.amazonaws.elasticache.serverless.*" } } &&
      flatten([s.Action]) == ["ec2:CreateVpcEndpoint"]
      if anytrue([for r in flatten([s.Resource]) : strcontains(r, ":vpc-endpoint/")]) && contains(flatten([s.Action]), "ec2:CreateVpcEndpoint")
      ]) && alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      flatten([s.Resource]) == ["arn:aws:ec2:eu-west-1:123456789012:vpc-endpoint/*"] &&
      s.Condition == { StringEquals = { "ec2:CreateAction" = "CreateVpcEndpoint", "aws:RequestTag/AmazonElastiCacheManaged" = "true" } }
      if contains(flatten([s.Action]), "ec2:CreateTags")
      ]) && alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      toset(flatten([s.Resource])) == toset([
        "arn:aws:ec2:eu-west-1:*:vpc/*",
        "arn:aws:ec2:eu-west-1:*:subnet/subnet-0a1b2c3d4e5f60718",
        "arn:aws:ec2:eu-west-1:*:subnet/subnet-1a1b2c3d",
        "arn:aws:ec2:eu-west-1:*:security-group/sg-0a1b2c3d4e5f60718",
        "arn:aws:ec2:eu-west-1:*:security-group/sg-1a1b2c3d",
      ]) && flatten([s.Action]) == ["ec2:CreateVpcEndpoint"]
      if s.Sid == "ServerlessVpcEndpointNetwork"
      ]) && alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      alltrue([for a in flatten([s.Action]) : startswith(a, "ec2:Describe")])
      if s.Sid == "ServerlessNetworkLookups"
      ]) && length([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement : s if startswith(s.Sid, "Serverless")
    ]) == 4
    error_message = "With cache_subnet_ids, the provisioner may create ElastiCache Serverless VPC endpoints only (tagged AmazonElastiCacheManaged on creation only), in the given subnets with the caches' security groups, and look the network up."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      alltrue([for r in flatten([s.Resource]) : (
        !startswith(r, "arn:aws:secretsmanager:") ||
        r == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/instances/*"
      )])
    ])
    error_message = "The provisioner's secrets must be the broker's own, under <prefix>/instances/ (never the broker credentials)."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      flatten([s.Resource]) == ["arn:aws:lambda:eu-west-1:123456789012:function:osb-provisioner"]
      if contains(flatten([s.Action]), "lambda:InvokeFunction")
      ]) && anytrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      contains(flatten([s.Action]), "secretsmanager:RotateSecret") && contains(flatten([s.Action]), "lambda:InvokeFunction") == false
    ])
    error_message = "The provisioner may call RotateSecret on its secrets and invoke itself (the rotation function RotateSecret names), no other function."
  }
  assert {
    condition = (
      aws_lambda_permission.rotation.principal == "secretsmanager.amazonaws.com" &&
      aws_lambda_permission.rotation.source_account == "123456789012" &&
      aws_lambda_permission.rotation.source_arn == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/instances/*"
    )
    error_message = "Secrets Manager may invoke the provisioner for the broker's own secrets only."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.broker_api.policy).Statement :
      alltrue([for r in flatten([s.Resource]) : (
        !startswith(r, "arn:aws:secretsmanager:") ||
        contains([
          "arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/instances/*/bindings/*",
          "arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/instances/*/spares/*",
        ], r) ||
        r == aws_secretsmanager_secret.broker_credentials.arn
      )])
    ]) && contains(jsondecode(aws_iam_role_policy.broker_api.policy).Statement[*].Resource, aws_secretsmanager_secret.broker_credentials.arn)
    error_message = "broker-api's secrets must be the credentials secret and the binding secrets (bindings/ and spares/ under <prefix>/instances/<id>/), never an admin secret."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement :
      s.Resource == var.kms_key_arn && s.Condition.StringEquals["kms:ViaService"] == ["elasticache.eu-west-1.amazonaws.com", "dax.eu-west-1.amazonaws.com"]
      if anytrue([for a in flatten([s.Action]) : startswith(a, "kms:")])
    ]) && length([for s in jsondecode(aws_iam_role_policy.provisioner.policy).Statement : s if startswith(s.Sid, "CacheEncryptionKey")]) == 2
    # ElastiCache User Guide, "At-Rest Encryption in ElastiCache": the key
    # policy's kms:ViaService lists elasticache.<region> and dax.<region>.
    error_message = "With kms_key_arn, the provisioner may use that key through ElastiCache (and DAX, which its encryption at rest goes through) only."
  }
  assert {
    condition     = jsondecode(aws_sqs_queue.jobs.redrive_policy).maxReceiveCount == 10 && jsondecode(aws_sqs_queue.jobs.redrive_policy).deadLetterTargetArn == aws_sqs_queue.jobs_dlq.arn
    error_message = "The job queue must redrive to the dead-letter queue after max_receive_count receives."
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.dead_letters.dimensions.QueueName == aws_sqs_queue.jobs_dlq.name &&
      aws_cloudwatch_metric_alarm.dead_letters.metric_name == "ApproximateNumberOfMessagesVisible" &&
      aws_cloudwatch_metric_alarm.dead_letters.threshold == 0
    )
    error_message = "An alarm must watch the dead-letter queue's depth."
  }
  assert {
    condition     = output.credentials_secret_arn == aws_secretsmanager_secret.broker_credentials.arn && output.broker_url == aws_apigatewayv2_api.broker.api_endpoint
    error_message = "The module must output the broker URL and the credentials secret ARN."
  }
  assert {
    condition     = aws_secretsmanager_secret_version.broker_credentials.secret_string == null && aws_secretsmanager_secret_version.broker_credentials.secret_string_wo == null
    error_message = "The broker's password must never be stored in the state."
  }
}

# Without cache_subnet_ids no serverless cache is made (the provisioner
# refuses serverless plans), so the provisioner gets no EC2 permission.
run "no_ec2_permission_without_cache_subnet_ids" {
  command = apply

  assert {
    condition = alltrue(flatten([
      for s in concat(jsondecode(aws_iam_role_policy.broker_api.policy).Statement, jsondecode(aws_iam_role_policy.provisioner.policy).Statement) :
      [for a in flatten([s.Action]) : !startswith(a, "ec2:")]
    ]))
    error_message = "Without cache_subnet_ids, no role may name an EC2 action."
  }
  assert {
    condition     = !contains(keys(aws_lambda_function.provisioner.environment[0].variables), "CACHE_SUBNET_IDS")
    error_message = "Without cache_subnet_ids, the provisioner gets no CACHE_SUBNET_IDS."
  }
}

# ---------------------------------------------------------------- refused variables

run "a_bad_prefix_is_refused" {
  command = plan
  variables {
    name_prefix = "Osb_1"
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

run "a_bad_architecture_is_refused" {
  command = plan
  variables {
    architecture = "arm"
  }
  expect_failures = [var.architecture]
}

run "a_missing_package_is_refused" {
  command = plan
  variables {
    provisioner_zip = "tests/fixtures/missing.zip"
  }
  expect_failures = [var.provisioner_zip]
}

run "bad_security_groups_are_refused" {
  command = plan
  variables {
    cache_security_group_ids = ["default"]
  }
  expect_failures = [var.cache_security_group_ids]
}

run "bad_cache_subnets_are_refused" {
  command = plan
  variables {
    cache_subnet_ids = ["subnet-0a1b2c3d4e5f60718", "my-subnet"]
  }
  expect_failures = [var.cache_subnet_ids]
}

run "the_same_cache_subnet_twice_is_refused" {
  command = plan
  variables {
    cache_subnet_ids = ["subnet-1a1b2c3d", "subnet-1a1b2c3d"]
  }
  expect_failures = [var.cache_subnet_ids]
}

run "no_security_group_is_refused" {
  command = plan
  variables {
    cache_security_group_ids = []
  }
  expect_failures = [var.cache_security_group_ids]
}

run "out_of_range_numbers_are_refused" {
  command = plan
  variables {
    batch_size                  = 11
    maximum_concurrency         = 1
    poll_delay_secs             = 0
    secret_recovery_window_days = 3
    rotation_days               = 1001
    rotation_grace_secs         = 604801
    api_timeout                 = 30
    log_retention_days          = 100
    reconcile_minutes           = 1
  }
  expect_failures = [
    var.reconcile_minutes,
    var.batch_size,
    var.maximum_concurrency,
    var.poll_delay_secs,
    var.secret_recovery_window_days,
    var.rotation_days,
    var.rotation_grace_secs,
    var.api_timeout,
    var.log_retention_days,
  ]
}

run "a_grace_period_not_shorter_than_the_rotation_interval_is_refused" {
  command = plan
  variables {
    rotation_days       = 1
    rotation_grace_secs = 86400
  }
  expect_failures = [aws_lambda_function.provisioner]
}

run "a_key_id_instead_of_a_key_arn_is_refused" {
  command = plan
  variables {
    kms_key_arn = "alias/aws/elasticache"
  }
  expect_failures = [var.kms_key_arn]
}

run "a_short_password_is_refused" {
  command = plan
  variables {
    broker_password = "short"
  }
  expect_failures = [var.broker_password]
}
