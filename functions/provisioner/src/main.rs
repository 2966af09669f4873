//! provisioner: the SQS-triggered worker, and the Secrets Manager rotation
//! function of the broker's secrets. Each batch of job messages runs through
//! the broker's worker; only failed message ids are reported back, so the
//! queue's redrive policy moves repeat failures to the dead-letter queue. A
//! rotation event (`{"Step": "createSecret", "SecretId": ..., "ClientRequestToken": ...}`)
//! runs one rotation step; an error tells Secrets Manager the step failed.
//! `BROKER_BACKEND=aws` uses the AWS adapters; otherwise laptop mode's.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use shared::laptop::{Laptop, LaptopConfig, init_tracing};
use shared::rotation::{RotationEvent, Rotator};
use shared::worker::Worker;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = std::time::Instant::now();
    init_tracing();
    let (worker, rotator): (Arc<Worker>, Arc<Rotator>) = match std::env::var("BROKER_BACKEND").as_deref() {
        Ok("aws") => {
            let (settings, sdk) = shared::aws_mode::from_env().await?;
            let parts = shared::aws_mode::AwsParts::new(&settings, &sdk, Default::default());
            (parts.worker, parts.rotator)
        }
        Ok("local") | Err(_) => {
            let laptop = Laptop::open(&LaptopConfig::from_env()?).await?;
            (laptop.worker, laptop.rotator)
        }
        Ok(other) => return Err(format!("BROKER_BACKEND={other:?}: use \"aws\" or \"local\"").into()),
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "provisioner ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (worker, rotator) = (worker.clone(), rotator.clone());
        async move { handle(&worker, &rotator, event.payload).await }
    }))
    .await
}

/// A rotation step or a batch of jobs, told apart by the rotation event's
/// `Step` field.
async fn handle(worker: &Worker, rotator: &Rotator, payload: Value) -> Result<Value, Error> {
    if payload.get("Step").is_some() {
        let event: RotationEvent = serde_json::from_value(payload)
            .map_err(|e| format!("not a Secrets Manager rotation event: {e}"))?;
        let span = tracing::info_span!("rotation", step = event.step.as_str(), token = %event.token);
        rotator.handle(&event).instrument(span).await?;
        return Ok(Value::Null);
    }
    let event: SqsEvent = serde_json::from_value(payload).map_err(|e| format!("not an SQS event: {e}"))?;
    Ok(serde_json::to_value(shared::sqs::handle_batch(worker, event).await)?)
}
