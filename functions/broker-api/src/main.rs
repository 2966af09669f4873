//! broker-api: the OSB API. In Lambda, lambda_http runs the Router; elsewhere
//! a plain listener on 127.0.0.1 runs the same Router. With no AWS backend
//! configured it is laptop mode: embedded store and queue, real local cache
//! processes, and the worker in this process.

use shared::laptop::{Laptop, LaptopConfig, init_tracing};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    if std::env::var("BROKER_BACKEND").is_ok_and(|b| b != "local") {
        return Err("BROKER_BACKEND: only \"local\" (laptop mode) is available in this build".into());
    }
    let config = LaptopConfig::from_env()?;
    let laptop = Laptop::open(&config).await?;
    let _worker = laptop.spawn_worker();
    if std::env::var("AWS_LAMBDA_RUNTIME_API").is_ok() {
        lambda_http::run(laptop.router.clone()).await
    } else {
        Ok(laptop.serve(config.port).await?)
    }
}
