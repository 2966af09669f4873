//! `moto-env`: creates what AWS mode needs (the table, the job queue with its
//! dead-letter queue, the broker's credentials secret) on the AWS stand-in
//! that `AWS_ENDPOINT_URL` names (moto in server mode on 127.0.0.1), and
//! prints the environment for broker-api and provisioner as `export` lines:
//! `eval "$(cargo run -q -p broker-tests --bin moto-env)"`. Safe to run again.

use broker_aws::dynamodb::create_table;
use broker_aws::sqs::create_queue_with_dlq;

#[tokio::main]
async fn main() -> Result<(), String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
        "AWS_ENDPOINT_URL is not set: point it at moto, e.g. http://127.0.0.1:5000".to_string()
    })?;
    if !(endpoint.starts_with("http://127.") || endpoint.starts_with("http://localhost")) {
        return Err(format!(
            "AWS_ENDPOINT_URL={endpoint} is not a loopback address; moto-env only sets up moto"
        ));
    }
    let sdk = broker_aws::sdk_config_for_endpoint(&endpoint).await;
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), "osb-broker").await.map_err(|e| e.to_string())?;
    let (queue_url, _) = create_queue_with_dlq(&aws_sdk_sqs::Client::new(&sdk), "osb-jobs", 10)
        .await
        .map_err(|e| e.to_string())?;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    // The same credentials the events in events/ carry.
    let value = r#"{"username":"broker","password":"local-events-only"}"#;
    let arn = match sm.create_secret().name("osb/broker-credentials").secret_string(value).send().await {
        Ok(out) => out.arn().unwrap_or_default().to_string(),
        Err(_) => sm
            .describe_secret()
            .secret_id("osb/broker-credentials")
            .send()
            .await
            .map_err(|e| format!("DescribeSecret: {e}"))?
            .arn()
            .unwrap_or_default()
            .to_string(),
    };
    for (k, v) in [
        ("BROKER_BACKEND", "aws".to_string()),
        ("TABLE_NAME", "osb-broker".to_string()),
        ("QUEUE_URL", queue_url),
        ("BROKER_CREDENTIALS_SECRET_ARN", arn),
        ("NAME_PREFIX", "osb".to_string()),
        ("CACHE_SUBNET_GROUP", "osb-cache".to_string()),
        ("CACHE_SECURITY_GROUP_IDS", "sg-0123456789abcdef0".to_string()),
        ("POLL_DELAY_SECS", "1".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ] {
        println!("export {k}='{v}'");
    }
    Ok(())
}
