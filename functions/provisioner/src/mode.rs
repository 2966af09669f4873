//! The worker and rotation function of the mode `BROKER_BACKEND` selects.

use std::sync::Arc;
use std::time::Instant;

use broker_core::reconcile::Reconciler;
use broker_core::rotation::Rotator;
use broker_core::worker::Worker;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

/// Opens the mode's parts, then hands each invocation to them with its
/// deadline, until Lambda stops the process.
pub async fn serve() -> Result<(), Error> {
    let parts = open().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let Parts(worker, rotator, reconciler) = parts.clone();
        let deadline = event.context.deadline();
        async move {
            Ok::<_, Error>(
                broker_core::invocation::handle(&worker, &rotator, &reconciler, event.payload, deadline)
                    .await?,
            )
        }
    }))
    .await
}

/// What handles the invocations: the worker (SQS batches), the rotation
/// function (Secrets Manager's steps) and the reconciler (the schedule).
#[derive(Clone)]
struct Parts(Arc<Worker>, Arc<Rotator>, Arc<Reconciler>);

/// Opens the mode's parts once per cold start.
async fn open() -> Result<Parts, Error> {
    let started = Instant::now();
    let parts = match std::env::var("BROKER_BACKEND").as_deref() {
        Ok("aws") => aws().await?,
        Ok("local") | Err(_) => laptop().await?,
        Ok(other) => return Err(format!("BROKER_BACKEND={other:?}: use \"aws\" or \"local\"").into()),
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "provisioner ready");
    Ok(parts)
}

#[cfg(feature = "aws")]
async fn aws() -> Result<Parts, Error> {
    let (settings, sdk) = broker_lambda::from_env().await?;
    let parts = broker_lambda::AwsParts::new(&settings, &sdk, Default::default());
    Ok(Parts(parts.worker, parts.rotator, parts.reconciler))
}

#[cfg(not(feature = "aws"))]
async fn aws() -> Result<Parts, Error> {
    Err("BROKER_BACKEND=aws: this build of the provisioner has no AWS mode (it was built without the aws feature)".into())
}

#[cfg(feature = "local")]
async fn laptop() -> Result<Parts, Error> {
    let laptop = broker_laptop::Laptop::open(&broker_laptop::LaptopConfig::from_env()?).await?;
    Ok(Parts(laptop.worker, laptop.rotator, laptop.reconciler))
}

#[cfg(not(feature = "local"))]
async fn laptop() -> Result<Parts, Error> {
    Err("this build of the provisioner has no laptop mode (it was built without the local feature): set BROKER_BACKEND=aws".into())
}
