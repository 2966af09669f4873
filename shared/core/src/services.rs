//! The broker, the worker and the rotation function over one set of
//! adapters, wired the same way in every mode (laptop, AWS, tests): the
//! modes differ only in their adapters and their [`ServiceSettings`].

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, BrokerSettings};
use crate::domain::RotationPolicy;
use crate::ports::{Alarms, CacheMetrics, CacheProvider, Inventory, JobQueue, Metrics, SecretStore, Store};
use crate::reconcile::{Reconciler, SweepSettings};
use crate::rotation::{RotationConfig, Rotator};
use crate::worker::{Worker, WorkerConfig};

/// The adapters behind the ports.
#[derive(Clone)]
pub struct Adapters {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn JobQueue>,
    pub provider: Arc<dyn CacheProvider>,
    pub secrets: Arc<dyn SecretStore>,
    /// What the reconciler's orphan sweep lists (the provider's and the
    /// secret store's resources); empty turns the sweep off.
    pub inventories: Vec<Arc<dyn Inventory>>,
    /// Where the worker counts operations (the API's requests are counted
    /// by the Router's own `AppState`, which the modes give the same one).
    pub metrics: Arc<dyn Metrics>,
    /// The caches' alarms (CloudWatch in AWS, [`crate::ports::NoAlarms`]
    /// on a laptop).
    pub alarms: Arc<dyn Alarms>,
    /// What the caches' nodes measured, for the dashboard's chart
    /// (CloudWatch in AWS, the servers' own counters on a laptop).
    pub cache_metrics: Arc<dyn CacheMetrics>,
}

/// What a mode sets. What the broker, the worker and the rotation function
/// must agree on (the secrets' prefix, the rotation policy) is given once.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Prefix of every secret name ("osb" gives "osb/instances/<id>/admin").
    pub secret_prefix: String,
    pub rotation: RotationPolicy,
    /// Delay before the worker looks again at a busy cache.
    pub poll_delay_secs: u32,
    /// Longest back-off after retryable errors (SQS allows 900).
    pub max_retry_delay_secs: u32,
    /// An operation whose record has not moved for this long is taken to
    /// have lost its job (see [`BrokerSettings::stall_secs`]).
    pub stall_secs: i64,
    /// How long the API reuses the catalog it read (zero: every request).
    pub catalog_ttl: Duration,
    /// How long testSecret waits for the cache to take a new password, and
    /// how often it looks.
    pub test_wait: Duration,
    pub test_poll: Duration,
    /// How long the orphan sweep lets a resource no record names stay
    /// before deleting it, and how often a sweep round starts.
    pub orphan_grace_secs: i64,
    pub sweep_every_secs: i64,
}

/// The broker, the worker, the rotation function and the reconciler.
pub struct Services {
    pub broker: Arc<Broker>,
    pub worker: Arc<Worker>,
    pub rotator: Arc<Rotator>,
    pub reconciler: Arc<Reconciler>,
}

impl Services {
    pub fn new(adapters: &Adapters, settings: &ServiceSettings) -> Services {
        let Adapters { store, queue, provider, secrets, inventories, metrics, alarms, cache_metrics } =
            adapters.clone();
        let worker = Arc::new(
            Worker::new(
                store.clone(),
                queue.clone(),
                provider.clone(),
                secrets.clone(),
                WorkerConfig {
                    poll_delay_secs: settings.poll_delay_secs,
                    max_retry_delay_secs: settings.max_retry_delay_secs,
                    secret_prefix: settings.secret_prefix.clone(),
                    rotation_days: settings.rotation.days,
                },
            )
            .with_metrics(metrics)
            .with_alarms(alarms),
        );
        let broker = Arc::new(
            Broker::new(
                store.clone(),
                queue.clone(),
                provider.clone(),
                secrets.clone(),
                worker.clone(),
                BrokerSettings {
                    stall_secs: settings.stall_secs,
                    catalog_ttl: settings.catalog_ttl,
                    rotation: settings.rotation,
                },
            )
            .with_cache_metrics(cache_metrics),
        );
        let mut reconciler =
            Reconciler::new(store.clone(), queue.clone(), broker.clone(), settings.stall_secs);
        if !inventories.is_empty() {
            reconciler = reconciler.with_sweep(SweepSettings {
                inventories,
                secret_prefix: settings.secret_prefix.clone(),
                grace_secs: settings.orphan_grace_secs,
                every_secs: settings.sweep_every_secs,
            });
        }
        let reconciler = Arc::new(reconciler);
        let rotator = Arc::new(Rotator::new(
            store,
            queue,
            provider,
            secrets,
            RotationConfig {
                secret_prefix: settings.secret_prefix.clone(),
                policy: settings.rotation,
                test_wait: settings.test_wait,
                test_poll: settings.test_poll,
            },
        ));
        Services { broker, worker, rotator, reconciler }
    }
}
