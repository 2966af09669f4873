# ---------------------------------------------------------------- log groups

# Made here, before the functions, so they get a retention (Lambda's own
# log groups never expire) and the functions' roles need no logs:CreateLogGroup.
resource "aws_cloudwatch_log_group" "broker_api" {
  #checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts every log group at rest; the broker never logs a secret (request bodies and the Authorization header are never logged), so a customer managed key would add a key policy to keep for nothing.
  name              = "/aws/lambda/${local.api_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "provisioner" {
  #checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts every log group at rest; passwords never reach the provisioner's log (AWS errors are logged with them blanked out).
  name              = "/aws/lambda/${local.provisioner_name}"
  retention_in_days = var.log_retention_days
}

# ---------------------------------------------------------------- functions

resource "aws_lambda_function" "broker_api" {
  #checkov:skip=CKV_AWS_117: broker-api calls only AWS APIs (DynamoDB, SQS, Secrets Manager, ElastiCache describes), never a cache, so it needs no VPC; inside one it would need NAT or five VPC endpoints.
  #checkov:skip=CKV_AWS_116: Invoked synchronously by the HTTP API only; a dead-letter queue applies to asynchronous invocations, which never happen.
  #checkov:skip=CKV_AWS_115: Concurrency is bounded in front of it by the HTTP API stage's throttling (api_throttling_rate_limit, api_throttling_burst_limit); reserved concurrency would take capacity from the account's other functions.
  #checkov:skip=CKV_AWS_173: The environment holds names, ARNs and numbers only; the credentials are read from Secrets Manager at start-up.
  #checkov:skip=CKV_AWS_272: The package is built from this repository by cargo lambda and uploaded by Terraform; code signing needs a signing profile and pipeline this project does not have.
  function_name    = local.api_name
  description      = "OSB API of the ${var.name_prefix} ElastiCache broker: validates, records in DynamoDB, enqueues jobs, answers at once"
  role             = aws_iam_role.broker_api.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = var.broker_api_zip
  source_code_hash = filebase64sha256(var.broker_api_zip)
  memory_size      = var.memory_size
  timeout          = var.api_timeout

  environment {
    variables = local.api_environment
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.broker_api, aws_iam_role_policy.broker_api]
}

resource "aws_lambda_function" "provisioner" {
  #checkov:skip=CKV_AWS_117: The provisioner calls only AWS APIs (ElastiCache, Secrets Manager, DynamoDB, SQS), never a cache, so it needs no VPC.
  #checkov:skip=CKV_AWS_116: Invoked by its SQS event source only; failed jobs go to the job queue's own dead-letter queue (redrive policy), a function DLQ would never be used.
  #checkov:skip=CKV_AWS_115: Concurrency is bounded by the SQS event source's maximum_concurrency; reserved concurrency below it would throttle and push jobs towards the dead-letter queue.
  #checkov:skip=CKV_AWS_173: The environment holds names, ARNs and numbers only; every password lives in Secrets Manager.
  #checkov:skip=CKV_AWS_272: The package is built from this repository by cargo lambda and uploaded by Terraform; code signing needs a signing profile and pipeline this project does not have.
  function_name    = local.provisioner_name
  description      = "Job consumer of the ${var.name_prefix} ElastiCache broker: ElastiCache and Secrets Manager work, re-enqueues while AWS is busy"
  role             = aws_iam_role.provisioner.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = var.provisioner_zip
  source_code_hash = filebase64sha256(var.provisioner_zip)
  memory_size      = var.memory_size
  timeout          = var.provisioner_timeout

  environment {
    variables = local.provisioner_environment
  }

  tracing_config {
    mode = "Active"
  }

  lifecycle {
    # A rotation that starts while the previous grace period runs is refused
    # (a cache user holds two passwords at most), and Secrets Manager then
    # reports every later rotation as in progress: the broker refuses to
    # start so. 30 and 3600 are its defaults.
    precondition {
      condition     = coalesce(var.rotation_days, 30) == 0 || coalesce(var.rotation_grace_secs, 3600) < coalesce(var.rotation_days, 30) * 86400
      error_message = "rotation_grace_secs must be shorter than rotation_days (in seconds): each rotation's grace period has to end before the next rotation starts."
    }
  }

  depends_on = [aws_cloudwatch_log_group.provisioner, aws_iam_role_policy.provisioner]
}

# The provisioner re-sends its job to the queue that triggers it while
# ElastiCache is busy. Lambda's recursive loop detection counts such hops
# through the trace header and, after 16 from one event, stops the invocation
# and drops the message to the dead-letter queue: a 10-15 minute create polled
# every 30 s needs more. Each operation's deadline (the plan's
# maximum_polling_duration) bounds the loop.
resource "aws_lambda_function_recursion_config" "provisioner" {
  function_name  = aws_lambda_function.provisioner.function_name
  recursive_loop = "Allow"
}

# Secrets Manager invokes the provisioner to rotate the broker's secrets: only
# for those under <prefix>/instances/, and only from this account.
resource "aws_lambda_permission" "rotation" {
  statement_id   = "SecretsManagerRotation"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.provisioner.function_name
  principal      = "secretsmanager.amazonaws.com"
  source_account = local.account
  source_arn     = local.instance_secrets_arn
}

# Only failed message ids are reported back (ReportBatchItemFailures), so one
# bad job does not make the whole batch run again.
# The reconcile pass: jobs that were lost, operations past their deadline,
# spare users to refill (broker_core::reconcile).
resource "aws_cloudwatch_event_rule" "reconcile" {
  name                = "${var.name_prefix}-reconcile"
  description         = "The service broker's reconcile pass"
  schedule_expression = "rate(${var.reconcile_minutes} minutes)"
}

resource "aws_cloudwatch_event_target" "reconcile" {
  rule  = aws_cloudwatch_event_rule.reconcile.name
  arn   = aws_lambda_function.provisioner.arn
  input = jsonencode({ Reconcile = {} })
}

resource "aws_lambda_permission" "reconcile" {
  statement_id  = "AllowReconcileSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.provisioner.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.reconcile.arn
}

resource "aws_lambda_event_source_mapping" "jobs" {
  event_source_arn        = aws_sqs_queue.jobs.arn
  function_name           = aws_lambda_function.provisioner.arn
  batch_size              = var.batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.maximum_concurrency
  }
}
