# The OSB API over HTTPS: an HTTP API whose $default route sends every
# request to broker-api. Basic auth is checked by broker-api itself (in
# constant time), as the OSB spec asks of a broker.

resource "aws_apigatewayv2_api" "broker" {
  name          = "${var.name_prefix}-broker"
  description   = "OSB API of the ${var.name_prefix} ElastiCache service broker (basic auth is checked by broker-api)"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "broker_api" {
  api_id                 = aws_apigatewayv2_api.broker.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.broker_api.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(30000, (var.api_timeout + 1) * 1000)
}

resource "aws_apigatewayv2_route" "default" {
  #checkov:skip=CKV_AWS_309: OSB platforms authenticate with HTTP basic auth, which HTTP APIs have no authorizer for; broker-api checks it on every request before anything else (401 otherwise).
  api_id    = aws_apigatewayv2_api.broker.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.broker_api.id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts every log group at rest; access log lines hold no credentials (the Authorization header is not in the format).
  name              = "/aws/apigateway/${var.name_prefix}-broker"
  retention_in_days = var.log_retention_days
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.broker.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.api_throttling_rate_limit
    throttling_burst_limit = var.api_throttling_burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      sourceIp           = "$context.identity.sourceIp"
      httpMethod         = "$context.httpMethod"
      path               = "$context.path"
      protocol           = "$context.protocol"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      integrationStatus  = "$context.integrationStatus"
      integrationLatency = "$context.integrationLatency"
      integrationError   = "$context.integrationErrorMessage"
    })
  }
}

resource "aws_lambda_permission" "http_api" {
  statement_id  = "AllowHttpApiDefaultRoute"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.broker_api.function_name
  principal     = "apigateway.amazonaws.com"
  # Any stage of this API, through its $default route only.
  source_arn = "${aws_apigatewayv2_api.broker.execution_arn}/*/$default"
}
