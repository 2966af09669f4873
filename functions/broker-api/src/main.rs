//! broker-api: the OSB API. In Lambda, lambda_http runs the Router; elsewhere
//! a plain listener on 127.0.0.1 runs the same Router. With no AWS backend
//! configured it is laptop mode: embedded store and queue, real local cache
//! processes, and the worker in this process.
//!
//! `broker-api catalog apply FILE` writes the services and plans of FILE into
//! the store (an operator's plan change, no release needed) and exits.

use shared::laptop::{Laptop, LaptopConfig, apply_catalog, init_tracing};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    if std::env::var("BROKER_BACKEND").is_ok_and(|b| b != "local") {
        return Err("BROKER_BACKEND: only \"local\" (laptop mode) is available in this build".into());
    }
    let config = LaptopConfig::from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {}
        ["catalog", "apply", file] => {
            let n = apply_catalog(&config, std::path::Path::new(file)).await?;
            eprintln!("catalog applied: {n} services and plans written");
            return Ok(());
        }
        _ => return Err("usage: broker-api [catalog apply FILE]".into()),
    }
    let laptop = Laptop::open(&config).await?;
    let _worker = laptop.spawn_worker();
    if std::env::var("AWS_LAMBDA_RUNTIME_API").is_ok() {
        lambda_http::run(laptop.router.clone()).await
    } else {
        Ok(laptop.serve(config.port).await?)
    }
}
