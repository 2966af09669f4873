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
