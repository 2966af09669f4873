//! AWS adapters behind the same ports as laptop mode: DynamoDB store, SQS job
//! queue, Secrets Manager secret store, ElastiCache provider and CloudWatch
//! alarms.
//! Built with the `aws` feature only.

pub mod cloudwatch;
pub mod config;
pub mod dynamodb;
pub mod elasticache;
pub mod emf;
pub mod secretsmanager;
pub mod sqs;

/// What went wrong, as AWS names it: the error code and message of a service
/// error, else the whole chain of a transport failure (timeout, DNS ...).
/// Every AWS adapter describes failures with it; the services' messages name
/// resources, never secret values.
pub(crate) fn aws_terms<E>(err: &E) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, _) => aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string(),
    }
}

/// What went wrong around the exchange, when that is what went wrong (a
/// timeout, a request that could not be sent, a response that could not be
/// read): it says nothing about the resource, and the call may work later.
pub(crate) fn transport_problem<E, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> Option<&'static str> {
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::TimeoutError(_) => Some("the request timed out"),
        SdkError::DispatchFailure(_) => Some("the request could not be sent"),
        SdkError::ResponseError(_) => Some("the response could not be read"),
        _ => None,
    }
}

/// What a failed call of an AWS service without a classifier of its own
/// (CloudWatch, CloudWatch Logs) means: throttling, server trouble and the
/// transport pass; anything else is final. Described in AWS terms
/// ("PutMetricAlarm failed: LimitExceeded: ...").
pub(crate) fn classify_call<E>(
    call: &str,
    err: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> broker_core::ports::ProviderError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
    use broker_core::ports::ProviderError;
    if let Some(what) = transport_problem(&err) {
        return ProviderError::Retryable(format!("{call} failed: {what}: {}", DisplayErrorContext(&err)));
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("an unnamed error").to_string();
    let description = match err.message() {
        Some(message) if !message.is_empty() => format!("{call} failed: {code}: {message}"),
        _ => format!("{call} failed: {code}"),
    };
    let transient = elasticache::failure::TRANSIENT_CODES.contains(&code.as_str())
        || status.is_some_and(|s| s == 429 || s >= 500);
    if transient { ProviderError::Retryable(description) } else { ProviderError::Permanent(description) }
}

/// An SDK configuration for tests and tools that talk to an AWS stand-in
/// (moto in server mode) on `endpoint`, with dummy credentials.
pub async fn sdk_config_for_endpoint(endpoint: &str) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region};
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "static");
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .load()
        .await
}
