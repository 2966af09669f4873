//! provisioner: the SQS-triggered worker. Each batch of job messages runs
//! through the broker's worker; only failed message ids are reported back.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::laptop::{Laptop, LaptopConfig, init_tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    if std::env::var("BROKER_BACKEND").is_ok_and(|b| b != "local") {
        return Err("BROKER_BACKEND: only \"local\" (laptop mode) is available in this build".into());
    }
    let config = LaptopConfig::from_env()?;
    let laptop = Laptop::open(&config).await?;
    let worker = laptop.worker.clone();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move { Ok::<SqsBatchResponse, Error>(shared::sqs::handle_batch(&worker, event.payload).await) }
    }))
    .await
}
