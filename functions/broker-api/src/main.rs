//! broker-api: the OSB API. In Lambda, lambda_http runs the Router; elsewhere
//! a plain listener on 127.0.0.1 runs the same Router.
//!
//! `BROKER_BACKEND=aws` (set by the deploy templates) uses DynamoDB, SQS,
//! ElastiCache and Secrets Manager; otherwise it is laptop mode: embedded
//! store and queue, real local cache processes, and the worker in this process.
//!
//! `broker-api catalog seed [FILE]` adds the catalog's missing services and
//! plans to the store; `broker-api catalog apply FILE` inserts or replaces
//! them (an operator's plan change, no release needed). `broker-api rotate
//! INSTANCE_ID [BINDING_ID]` rotates the admin credential of an instance, or
//! a binding's credential, now: in AWS mode it asks Secrets Manager to rotate
//! the secret (which invokes the provisioner), in laptop mode it runs the
//! rotation steps itself. All of them exit after.

use std::path::Path;

use shared::catalog::CatalogFile;
use shared::laptop::{Laptop, LaptopConfig, apply, init_tracing};
use shared::rotation::Target;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let started = std::time::Instant::now();
    init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match std::env::var("BROKER_BACKEND").as_deref() {
        Ok("aws") => aws(&args, started).await,
        Ok("local") | Err(_) => laptop(&args, started).await,
        Ok(other) => Err(format!("BROKER_BACKEND={other:?}: use \"aws\" or \"local\"").into()),
    }
}

/// The credential `broker-api rotate INSTANCE_ID [BINDING_ID]` names.
fn rotation_target(rest: &[&str]) -> Option<Target> {
    match rest {
        [instance] => Some(Target::Admin { instance_id: instance.to_string() }),
        [instance, binding] => {
            Some(Target::Binding { instance_id: instance.to_string(), binding_id: binding.to_string() })
        }
        _ => None,
    }
}

fn catalog_file(file: Option<&str>) -> Result<CatalogFile, String> {
    match file {
        None => Ok(CatalogFile::builtin()),
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            CatalogFile::parse(&text).map_err(|e| format!("{f}: {e}"))
        }
    }
}

async fn aws(args: &[&str], started: std::time::Instant) -> Result<(), lambda_http::Error> {
    let (settings, sdk) = shared::aws_mode::from_env().await?;
    let parts = shared::aws_mode::AwsParts::new(&settings, &sdk, Default::default());
    match args {
        [] => {}
        ["catalog", "seed", rest @ ..] if rest.len() <= 1 => {
            let n = parts.seed_catalog(&catalog_file(rest.first().copied())?).await?;
            eprintln!("catalog seeded: {n} services and plans added (existing ones left as they are)");
            return Ok(());
        }
        ["catalog", "apply", file] => {
            let n = apply(parts.store.as_ref(), &catalog_file(Some(file))?).await?;
            eprintln!("catalog applied: {n} services and plans written");
            return Ok(());
        }
        ["rotate", rest @ ..] => {
            let target = rotation_target(rest).ok_or(USAGE)?;
            // A binding that claimed a spare user keeps the spare's secret.
            let secret = parts.rotator.resolve(&target).await?.secret_name(&settings.name_prefix);
            parts.secrets.rotate_now(&secret).await?;
            eprintln!(
                "rotation of {secret} started: Secrets Manager runs the provisioner's rotation steps; \
                 the previous password works for {} s after they finish",
                settings.rotation_grace_secs
            );
            return Ok(());
        }
        _ => return Err(USAGE.into()),
    }
    let router = parts.router(&settings).await?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "broker-api ready (AWS mode)");
    lambda_http::run(router).await
}

async fn laptop(args: &[&str], started: std::time::Instant) -> Result<(), lambda_http::Error> {
    let config = LaptopConfig::from_env()?;
    match args {
        [] => {}
        ["catalog", "apply", file] => {
            let n = shared::laptop::apply_catalog(&config, Path::new(file)).await?;
            eprintln!("catalog applied: {n} services and plans written");
            return Ok(());
        }
        ["rotate", rest @ ..] => {
            let target = rotation_target(rest).ok_or(USAGE)?;
            let token = shared::laptop::rotate(&config, &target).await?;
            eprintln!(
                "rotated (version {token}): the new password is current; the previous one works for {} s more, \
                 until the running broker removes it",
                config.rotation.grace_secs
            );
            return Ok(());
        }
        _ => return Err(USAGE.into()),
    }
    let laptop = Laptop::open(&config).await?;
    let _worker = laptop.spawn_worker();
    let _rotation = laptop.spawn_rotation_schedule();
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "broker-api ready (laptop mode)");
    if std::env::var("AWS_LAMBDA_RUNTIME_API").is_ok() {
        lambda_http::run(laptop.router.clone()).await
    } else {
        Ok(laptop.serve(config.port).await?)
    }
}

const USAGE: &str =
    "usage: broker-api [catalog seed [FILE] | catalog apply FILE | rotate INSTANCE_ID [BINDING_ID]]";
