//! broker-api's command line (clap): no command serves the OSB API; the
//! operator's commands change the catalog in the store or rotate a
//! credential, in the mode `BROKER_BACKEND` selects, and exit. Unknown
//! arguments print the usage and exit with status 2.

use std::path::PathBuf;
use std::time::Instant;

use broker_core::domain::{BindingId, InstanceId};
use broker_core::rotation::Target;
use clap::{Parser, Subcommand};
use lambda_http::Error;

#[derive(Debug, Parser)]
#[command(
    name = "broker-api",
    version,
    about = "The OSB API of the ElastiCache service broker",
    long_about = "The OSB API of the ElastiCache service broker. Without a command it serves the API: \
                  in Lambda with BROKER_BACKEND=aws, otherwise in laptop mode on 127.0.0.1:$PORT with \
                  the worker and local cache processes. The commands run once, in the same mode, and exit."
)]
pub struct Cli {
    /// Laptop mode: leave the cache processes running when the broker stops
    /// (Ctrl-C, SIGTERM); the next start adopts them. By default they are
    /// stopped with the broker, their data kept, and started again with it.
    #[arg(long)]
    keep_caches: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Change the catalog (services and plans) the store holds, without a release
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Laptop mode: list the instances with plan, state, port, process id and whether the process is up
    Status,
    /// Run one reconcile pass now: enqueue again the jobs that were lost, end operations past their deadline, refill spare users
    Reconcile,
    /// Rotate a credential now: a binding's password, or the instance's admin credential
    Rotate {
        /// The service instance
        instance_id: InstanceId,
        /// The binding whose password rotates; without it, the instance's admin credential
        binding_id: Option<BindingId>,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Add the services and plans the store does not have yet (entries already there are left alone)
    Seed {
        /// A catalog file; without it, the built-in catalog
        file: Option<PathBuf>,
    },
    /// Insert or replace every service and plan of FILE
    Apply {
        /// The catalog file (the format of catalog/catalog.json)
        file: PathBuf,
    },
}

impl Command {
    fn target(instance_id: &InstanceId, binding_id: Option<&BindingId>) -> Target {
        match binding_id {
            Some(b) => Target::Binding { instance_id: instance_id.to_string(), binding_id: b.to_string() },
            None => Target::Admin { instance_id: instance_id.to_string() },
        }
    }
}

/// Runs `cli` in the mode `BROKER_BACKEND` selects.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let started = Instant::now();
    match std::env::var("BROKER_BACKEND").as_deref() {
        Ok("aws") => aws(cli.command, started).await,
        Ok("local") | Err(_) => laptop(cli.command, cli.keep_caches, started).await,
        Ok(other) => Err(format!("BROKER_BACKEND={other:?}: use \"aws\" or \"local\"").into()),
    }
}

#[cfg(feature = "aws")]
async fn aws(command: Option<Command>, started: Instant) -> Result<(), Error> {
    use broker_core::catalog::{CatalogFile, apply};
    let (settings, sdk) = broker_lambda::from_env().await?;
    let parts = broker_lambda::AwsParts::new(&settings, &sdk, Default::default());
    match command {
        None => {
            let router = parts.router(&settings).await?;
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "broker-api ready (AWS mode)");
            lambda_http::run(router).await
        }
        Some(Command::Catalog(CatalogCommand::Seed { file })) => {
            let n = parts.seed_catalog(&CatalogFile::from_file_or_builtin(file.as_deref())?).await?;
            eprintln!("catalog seeded: {n} services and plans added (existing ones left as they are)");
            Ok(())
        }
        Some(Command::Catalog(CatalogCommand::Apply { file })) => {
            let n = apply(parts.store.as_ref(), &CatalogFile::from_file(&file)?).await?;
            eprintln!("catalog applied: {n} services and plans written");
            Ok(())
        }
        Some(Command::Reconcile) => {
            let report = parts.reconciler.run(broker_core::domain::now()).await?;
            eprintln!("{}", reconcile_summary(&report));
            Ok(())
        }
        Some(Command::Status) => {
            Err("status lists laptop mode's local cache processes; in AWS mode use the ElastiCache console or `aws elasticache describe-replication-groups`".into())
        }
        Some(Command::Rotate { instance_id, binding_id }) => {
            let secret = parts.rotate_now(&Command::target(&instance_id, binding_id.as_ref())).await?;
            eprintln!(
                "rotation of {secret} started: Secrets Manager runs the provisioner's rotation steps; \
                 the previous password works for {} s after they finish",
                settings.rotation_grace_secs
            );
            Ok(())
        }
    }
}

#[cfg(not(feature = "aws"))]
async fn aws(_: Option<Command>, _: Instant) -> Result<(), Error> {
    Err("BROKER_BACKEND=aws: this build of broker-api has no AWS mode (it was built without the aws feature)"
        .into())
}

#[cfg(feature = "local")]
async fn laptop(command: Option<Command>, keep_caches: bool, started: Instant) -> Result<(), Error> {
    use broker_laptop::{Laptop, LaptopConfig};
    let config = LaptopConfig::from_env()?;
    match command {
        None => {
            let laptop = Laptop::open(&config).await?;
            let worker = laptop.spawn_worker();
            let rotation = laptop.spawn_rotation_schedule();
            let reconcile = laptop.spawn_reconcile_schedule();
            let sampling = laptop.spawn_metrics_sampling();
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "broker-api ready (laptop mode)"
            );
            if std::env::var("AWS_LAMBDA_RUNTIME_API").is_ok() {
                return lambda_http::run(laptop.router.clone()).await;
            }
            let served = laptop.serve(config.port).await;
            rotation.abort();
            reconcile.abort();
            sampling.abort();
            laptop.shutdown(worker, keep_caches).await;
            Ok(served?)
        }
        Some(Command::Status) => {
            print!("{}", broker_laptop::format_status(&broker_laptop::status(&config).await?));
            Ok(())
        }
        Some(Command::Reconcile) => {
            eprintln!("{}", reconcile_summary(&broker_laptop::reconcile(&config).await?));
            Ok(())
        }
        Some(Command::Catalog(CatalogCommand::Seed { file })) => {
            let n = broker_laptop::seed_catalog(&config, file.as_deref()).await?;
            eprintln!("catalog seeded: {n} services and plans added (existing ones left as they are)");
            Ok(())
        }
        Some(Command::Catalog(CatalogCommand::Apply { file })) => {
            let n = broker_laptop::apply_catalog(&config, &file).await?;
            eprintln!("catalog applied: {n} services and plans written");
            Ok(())
        }
        Some(Command::Rotate { instance_id, binding_id }) => {
            let target = Command::target(&instance_id, binding_id.as_ref());
            let token = broker_laptop::rotate(&config, &target).await?;
            eprintln!(
                "rotated (version {token}): the new password is current; the previous one works for {} s more, \
                 until the running broker removes it",
                config.rotation.grace_secs
            );
            Ok(())
        }
    }
}

#[cfg(not(feature = "local"))]
async fn laptop(_: Option<Command>, _: bool, _: Instant) -> Result<(), Error> {
    Err("this build of broker-api has no laptop mode (it was built without the local feature): set BROKER_BACKEND=aws".into())
}

/// One line saying what a reconcile pass did.
fn reconcile_summary(r: &broker_core::reconcile::Report) -> String {
    format!(
        "reconciled: {} operations in progress, {} lost jobs enqueued again, {} past their deadline enqueued to end, \
         {} left for the next pass, {} spare-user refills started, {} warm-pool caches started, {} deleted, \
         {} orphans seen, {} orphans deleted, {} left alone (not tagged as this broker's)",
        r.in_progress,
        r.stalled,
        r.past_deadline,
        r.left_for_next_pass,
        r.spares_started,
        r.pool_added,
        r.pool_retired,
        r.orphans_seen,
        r.orphans_removed,
        r.orphans_left_alone
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("broker-api").chain(args.iter().copied()))
    }

    #[test]
    fn no_command_serves_and_each_command_parses() {
        assert!(parse(&[]).unwrap().command.is_none());
        assert!(!parse(&[]).unwrap().keep_caches, "caches stop with the broker by default");
        assert!(parse(&["--keep-caches"]).unwrap().keep_caches);
        assert!(matches!(parse(&["status"]).unwrap().command, Some(Command::Status)));
        assert!(matches!(
            parse(&["catalog", "seed"]).unwrap().command,
            Some(Command::Catalog(CatalogCommand::Seed { file: None }))
        ));
        assert!(matches!(
            parse(&["catalog", "apply", "c.json"]).unwrap().command,
            Some(Command::Catalog(CatalogCommand::Apply { file })) if file.as_os_str() == "c.json"
        ));
        let Some(Command::Rotate { instance_id, binding_id }) =
            parse(&["rotate", "i-1", "b-1"]).unwrap().command
        else {
            panic!("rotate");
        };
        assert_eq!(
            Command::target(&instance_id, binding_id.as_ref()),
            Target::Binding { instance_id: "i-1".into(), binding_id: "b-1".into() }
        );
    }

    #[test]
    fn every_command_has_help() {
        for args in [
            &["--help"][..],
            &["catalog", "--help"],
            &["catalog", "seed", "--help"],
            &["catalog", "apply", "--help"],
            &["rotate", "--help"],
            &["status", "--help"],
            &["reconcile", "--help"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0);
            assert!(e.to_string().contains("Usage: broker-api"), "{args:?}: {e}");
        }
    }

    #[test]
    fn unknown_or_missing_arguments_print_the_usage_and_exit_2() {
        for args in
            [&["--port", "1"][..], &["serve"], &["catalog", "apply"], &["rotate"], &["rotate", "i", "b", "c"]]
        {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.render().to_string().contains("Usage:"), "{args:?}: {e}");
        }
    }

    /// An id is parsed where it enters: the same rule as the OSB paths.
    #[test]
    fn rotate_refuses_an_id_that_is_not_one_naming_it() {
        let e = parse(&["rotate", "../etc"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("instance_id must be 1 to 128 characters"), "{e}");
        let e = parse(&["rotate", "i-1", "b 1"]).unwrap_err();
        assert!(e.to_string().contains("binding_id must be 1 to 128 characters"), "{e}");
    }
}
