output "broker_url" {
  description = "URL to register with the platform (cf create-service-broker NAME USER PASSWORD URL)."
  value       = aws_apigatewayv2_api.broker.api_endpoint
}

output "credentials_secret_arn" {
  description = "Secret holding the broker's basic-auth username and password (JSON: username, password)."
  value       = aws_secretsmanager_secret.broker_credentials.arn
}

output "table_name" {
  description = "DynamoDB table of the catalog and the broker's state."
  value       = aws_dynamodb_table.broker.name
}

output "queue_url" {
  description = "Job queue of the provisioner."
  value       = aws_sqs_queue.jobs.url
}

output "dead_letter_queue_url" {
  description = "Where jobs that failed max_receive_count times wait for an operator."
  value       = aws_sqs_queue.jobs_dlq.url
}

output "function_names" {
  description = "The two functions, by role."
  value = {
    broker_api  = aws_lambda_function.broker_api.function_name
    provisioner = aws_lambda_function.provisioner.function_name
  }
}

output "api_environment" {
  description = "broker-api's environment: run `broker-api catalog seed` (or `catalog apply FILE`) with it and AWS credentials to seed the catalog."
  value       = local.api_environment
}

output "dashboard_name" {
  description = "CloudWatch dashboard of the broker's requests, functions and job queues."
  value       = aws_cloudwatch_dashboard.broker.dashboard_name
}
