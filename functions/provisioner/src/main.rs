//! provisioner: the SQS-triggered worker. Each batch of job messages runs
//! through the broker's worker; only failed message ids are reported back, so
//! the queue's redrive policy moves repeat failures to the dead-letter queue.
//! `BROKER_BACKEND=aws` uses the AWS adapters; otherwise laptop mode's.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::laptop::{Laptop, LaptopConfig, init_tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = std::time::Instant::now();
    init_tracing();
    let worker = match std::env::var("BROKER_BACKEND").as_deref() {
        Ok("aws") => {
            let (settings, sdk) = shared::aws_mode::from_env().await?;
            shared::aws_mode::AwsParts::new(&settings, &sdk, Default::default()).worker
        }
        Ok("local") | Err(_) => Laptop::open(&LaptopConfig::from_env()?).await?.worker,
        Ok(other) => return Err(format!("BROKER_BACKEND={other:?}: use \"aws\" or \"local\"").into()),
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "provisioner ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move { Ok::<SqsBatchResponse, Error>(shared::sqs::handle_batch(&worker, event.payload).await) }
    }))
    .await
}
