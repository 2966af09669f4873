//! Laptop mode: the broker with no AWS account. Reads its settings from the
//! environment, opens the embedded store, queue and secret store under the
//! state directory, adopts the cache processes that were running, and runs the
//! worker in the same process as the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::{error, info, warn};

use broker_core::broker::Broker;
use broker_core::catalog::{CatalogError, CatalogFile};
use broker_core::domain::InstanceState;
use broker_core::domain::RotationPolicy;
use broker_core::domain::credentials::generate_password;
use broker_core::ports::{
    CacheProvider, CatalogStore, Job, JobQueue, QueueError, SecretError, SecretStore, StateStore, StoreError,
};
use broker_core::reconcile::Reconciler;
use broker_core::rotation::{RotationError, Rotator, Target};
use broker_core::services::{ServiceSettings, Services};
use broker_core::worker::Worker;
use broker_http::{AppState, BasicAuth, router};
use broker_local::charts::LocalCacheMetrics;
use broker_local::metrics::PrometheusMetrics;
use broker_local::provider::LocalCacheProvider;
use broker_local::queue::LocalQueue;
use broker_local::secrets::LocalSecretStore;
use broker_local::store::SqliteStore;

mod lifecycle;

pub use lifecycle::{InstanceStatus, WorkerHandle, format_status, status};

/// Why laptop mode cannot start or a command cannot run; each keeps its
/// cause, and the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum LaptopError {
    /// A setting is wrong: the message names the variable and what it takes.
    #[error("{0}")]
    Setting(String),
    #[error("cannot create BROKER_STATE_DIR {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid; delete it to generate new credentials", path.display())]
    SavedCredentials {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("CATALOG_FILE")]
    CatalogFile(#[source] CatalogError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the state store under BROKER_STATE_DIR")]
    Store(#[from] StoreError),
    #[error("the job queue under BROKER_STATE_DIR")]
    Queue(#[from] QueueError),
    #[error("the secret store under BROKER_STATE_DIR")]
    Secrets(#[from] SecretError),
    #[error("the rotation did not finish; the previous password is still current")]
    Rotation(#[from] RotationError),
    #[error("cannot listen on 127.0.0.1:{port} (set PORT to use another port)")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the API failed")]
    Serve(#[source] std::io::Error),
}

/// Laptop-mode settings, from the environment.
#[derive(Debug, Clone)]
pub struct LaptopConfig {
    pub port: u16,
    pub state_dir: PathBuf,
    /// `None`: read or generate them under the state directory.
    pub credentials: Option<BasicAuth>,
    pub catalog_file: Option<PathBuf>,
    /// How often the worker looks again at a cache that is starting.
    pub poll_delay_secs: u32,
    /// `ROTATION_DAYS` and `ROTATION_GRACE_SECS`.
    pub rotation: RotationPolicy,
    /// `BROKER_CACHE_TLS`: whether caches made from now on speak TLS only
    /// (`on`, the default, as ElastiCache's do) or plain text (`off`, for
    /// clients that cannot do TLS). A cache keeps what it was made with.
    pub cache_tls: bool,
}

impl LaptopConfig {
    /// Reads `PORT`, `BROKER_STATE_DIR`, `BROKER_USERNAME`, `BROKER_PASSWORD`,
    /// `CATALOG_FILE`, `ROTATION_DAYS` (default 30; 0: no schedule),
    /// `ROTATION_GRACE_SECS` (default 3600) and `BROKER_CACHE_TLS` (`on` or
    /// `off`, default `on`); the error names the variable at fault.
    pub fn from_env() -> Result<LaptopConfig, LaptopError> {
        LaptopConfig::from_vars().map_err(LaptopError::Setting)
    }

    fn from_vars() -> Result<LaptopConfig, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let port = match var("PORT") {
            None => 8080,
            Some(p) => p.parse().map_err(|_| format!("PORT={p:?} is not a port number"))?,
        };
        let credentials = match (var("BROKER_USERNAME"), var("BROKER_PASSWORD")) {
            (Some(username), Some(password)) => {
                Some(BasicAuth { username, password: SecretString::from(password) })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err("BROKER_USERNAME is set but BROKER_PASSWORD is not; set both or neither".into());
            }
            (None, Some(_)) => {
                return Err("BROKER_PASSWORD is set but BROKER_USERNAME is not; set both or neither".into());
            }
        };
        let number = |name: &str, default: u64, max: u64| -> Result<u64, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(format!("{name}={v:?} must be a whole number from 0 to {max}")),
                },
            }
        };
        let rotation = RotationPolicy {
            days: number("ROTATION_DAYS", 30, 1000)? as u32,
            grace_secs: number("ROTATION_GRACE_SECS", 3600, 7 * 86_400)?,
        };
        rotation.check()?;
        let cache_tls = match var("BROKER_CACHE_TLS").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(format!(
                    "BROKER_CACHE_TLS={other:?}: use \"on\" (caches speak TLS only, the default) or \"off\" \
                     (plain text, for clients that cannot do TLS)"
                ));
            }
        };
        Ok(LaptopConfig {
            cache_tls,
            port,
            rotation,
            state_dir: PathBuf::from(var("BROKER_STATE_DIR").unwrap_or_else(|| ".broker-state".into())),
            credentials,
            catalog_file: var("CATALOG_FILE").map(PathBuf::from),
            poll_delay_secs: 1,
        })
    }
}

#[derive(Deserialize)]
struct SavedCredentials {
    username: String,
    password: String,
}

/// The broker's own credentials: from the config, else from
/// `<state>/broker-credentials`, else generated there (mode 0600). Where
/// the password is kept is printed; the password never is.
fn credentials(config: &LaptopConfig) -> Result<BasicAuth, LaptopError> {
    if let Some(c) = &config.credentials {
        return Ok(c.clone());
    }
    let path = config.state_dir.join("broker-credentials");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let saved: SavedCredentials = serde_json::from_str(&text)
            .map_err(|source| LaptopError::SavedCredentials { path: path.clone(), source })?;
        if saved.username.trim().is_empty() || saved.password.trim().is_empty() {
            return Err(LaptopError::Setting(format!(
                "{} has an empty username or password; delete it to generate new credentials, or set BROKER_USERNAME and BROKER_PASSWORD",
                path.display()
            )));
        }
        eprintln!("broker credentials: user {} (password in {})", saved.username, path.display());
        return Ok(BasicAuth { username: saved.username, password: SecretString::from(saved.password) });
    }
    let password = generate_password(32);
    let saved =
        SavedCredentials { username: "broker".into(), password: password.expose_secret().to_string() };
    let text = serde_json::json!({ "username": saved.username, "password": saved.password }).to_string();
    write_private(&path, &text)?;
    // The password itself is never printed: a terminal's scrollback and a
    // redirected stderr are logs, and a log holds no password.
    eprintln!(
        "broker credentials generated: user {} (password in {}; set BROKER_USERNAME and BROKER_PASSWORD to choose your own)",
        saved.username,
        path.display()
    );
    Ok(BasicAuth { username: saved.username, password })
}

fn write_private(path: &Path, text: &str) -> Result<(), LaptopError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| LaptopError::Write { path: path.into(), source })
}

/// The laptop broker's parts, opened and ready.
pub struct Laptop {
    pub router: axum::Router,
    pub broker: Arc<Broker>,
    pub worker: Arc<Worker>,
    pub store: Arc<SqliteStore>,
    pub queue: Arc<LocalQueue>,
    pub secrets: Arc<LocalSecretStore>,
    pub provider: Arc<LocalCacheProvider>,
    /// The servers' counters the dashboard charts; see
    /// [`Laptop::spawn_metrics_sampling`].
    pub cache_metrics: Arc<LocalCacheMetrics>,
    pub rotator: Arc<Rotator>,
    pub reconciler: Arc<Reconciler>,
}

/// How often laptop mode looks for secrets whose scheduled rotation is due.
const ROTATION_TICK: Duration = Duration::from_secs(60);

/// The adapters under the state directory, opened.
struct Adapters {
    store: Arc<SqliteStore>,
    queue: Arc<LocalQueue>,
    secrets: Arc<LocalSecretStore>,
    provider: Arc<LocalCacheProvider>,
    metrics: Arc<PrometheusMetrics>,
    cache_metrics: Arc<LocalCacheMetrics>,
}

impl Adapters {
    fn open(config: &LaptopConfig) -> Result<Adapters, LaptopError> {
        let dir = config.state_dir.as_path();
        let store = Arc::new(open_store(dir)?);
        let queue = Arc::new(LocalQueue::open(&dir.join("jobs.sqlite"), 10)?);
        let secrets = Arc::new(LocalSecretStore::open(&dir.join("secrets.sqlite"))?);
        let provider =
            Arc::new(LocalCacheProvider::new(dir.join("caches"), secrets.clone()).with_tls(config.cache_tls));
        let cache_metrics = Arc::new(LocalCacheMetrics::new(provider.clone()));
        let metrics = Arc::new(PrometheusMetrics::default());
        Ok(Adapters { store, queue, secrets, provider, metrics, cache_metrics })
    }

    /// The broker, worker and rotation function over these adapters.
    fn services(&self, config: &LaptopConfig) -> Services {
        let adapters = broker_core::services::Adapters {
            store: self.store.clone(),
            queue: self.queue.clone(),
            provider: self.provider.clone(),
            secrets: self.secrets.clone(),
            inventories: vec![self.provider.clone(), self.secrets.clone()],
            metrics: self.metrics.clone(),
            // No CloudWatch on a laptop.
            alarms: Arc::new(broker_core::ports::NoAlarms),
            cache_metrics: self.cache_metrics.clone(),
        };
        Services::new(
            &adapters,
            &ServiceSettings {
                secret_prefix: SECRET_PREFIX.into(),
                rotation: config.rotation,
                poll_delay_secs: config.poll_delay_secs,
                max_retry_delay_secs: 30,
                stall_secs: 30,
                // Unused: SQLite counts catalog writes, so the API reads the
                // catalog again right after `catalog apply` and never before.
                catalog_ttl: Duration::ZERO,
                test_wait: Duration::from_secs(10),
                test_poll: Duration::from_millis(200),
                orphan_grace_secs: ORPHAN_GRACE_SECS,
                // Listing a directory and a SQLite table costs nothing:
                // every pass sweeps.
                sweep_every_secs: 0,
            },
        )
    }
}

/// Prefix of laptop mode's secret names.
const SECRET_PREFIX: &str = "local";

/// How long a cache directory or secret no record names stays before the
/// reconciler deletes it.
pub const ORPHAN_GRACE_SECS: i64 = 3600;

/// `broker-api rotate INSTANCE [BINDING]`: rotates the admin credential of a
/// service instance, or a binding's credential, now, by the same four steps
/// Secrets Manager runs. The running broker's worker ends the grace period.
/// Returns the new version's id.
pub async fn rotate(config: &LaptopConfig, target: &Target) -> Result<String, LaptopError> {
    let adapters = Adapters::open(config)?;
    Ok(adapters.services(config).rotator.rotate_now(target).await?)
}

/// `broker-api reconcile`: one reconcile pass over the state directory,
/// next to a running broker or without one (the jobs it enqueues wait for
/// the next start).
pub async fn reconcile(config: &LaptopConfig) -> Result<broker_core::reconcile::Report, LaptopError> {
    let adapters = Adapters::open(config)?;
    Ok(adapters.services(config).reconciler.run(broker_core::domain::now()).await?)
}

impl Laptop {
    /// Opens everything under the state directory, seeds the catalog, adopts
    /// running caches and re-enqueues operations that were in progress.
    pub async fn open(config: &LaptopConfig) -> Result<Laptop, LaptopError> {
        let adapters = Adapters::open(config)?;
        let auth = credentials(config)?;
        let Services { broker, worker, rotator, reconciler } = adapters.services(config);
        let Adapters { store, queue, secrets, provider, metrics, cache_metrics } = adapters;
        let catalog = CatalogFile::from_file_or_builtin(config.catalog_file.as_deref())
            .map_err(LaptopError::CatalogFile)?;
        let added = store.seed(&catalog.services, &catalog.plans).await?;
        info!(added, "catalog seeded (entries already in the store are left as they are)");
        let router = router(AppState { broker: broker.clone(), auth: Arc::new(auth), metrics });
        let laptop = Laptop {
            router,
            broker,
            worker,
            store,
            queue,
            secrets,
            provider,
            cache_metrics,
            rotator,
            reconciler,
        };
        laptop.recover().await?;
        Ok(laptop)
    }

    /// After a restart: start again the caches that should be running, and
    /// enqueue once more every operation still in progress (a job that was
    /// being handled when the broker stopped would otherwise wait for its
    /// visibility timeout; duplicates are harmless).
    async fn recover(&self) -> Result<(), LaptopError> {
        // An instance still being provisioned has a server once the create
        // step started one (its record exists); a stop then stopped it too,
        // and the provision goes on once it runs again.
        let started: Vec<String> = self.provider.servers().into_iter().map(|s| s.instance_id).collect();
        for instance in self.store.instances().await? {
            let provisioning = instance.state == InstanceState::Provisioning
                && started.iter().any(|s| s == instance.cache_key());
            if provisioning || matches!(instance.state, InstanceState::Ready | InstanceState::Updating) {
                match self.provider.adopt(instance.cache_key()).await {
                    Ok(_) => {
                        info!(instance = %instance.id, "cache adopted");
                        self.record_endpoint(instance).await;
                    }
                    Err(e) => error!(instance = %instance.id, error = %e, "cache could not be started again"),
                }
            }
        }
        for op in self.store.operations_in_progress().await? {
            self.queue.enqueue(&Job::for_operation(&op), 0).await?;
            info!(operation = %op.id, "operation in progress enqueued again");
        }
        Ok(())
    }

    /// Records where an adopted cache listens now (it moves to another port
    /// when someone took its old one), so the credentials handed out next
    /// name it. A failure is logged; the credentials then name the old port
    /// until the next start.
    async fn record_endpoint(&self, mut instance: broker_core::domain::Instance) {
        let endpoint = match self.provider.endpoint(instance.cache_key()).await {
            Ok(e) => e,
            Err(e) => return warn!(instance = %instance.id, error = %e, "the adopted cache has no endpoint"),
        };
        if instance.endpoint.as_ref() == Some(&endpoint) {
            return;
        }
        info!(instance = %instance.id, port = endpoint.port, "the adopted cache's endpoint is recorded");
        instance.endpoint = Some(endpoint);
        instance.updated_at = broker_core::domain::now();
        if let Err(e) = self.store.save_instance(&mut instance, None).await {
            warn!(instance = %instance.id, error = %e, "could not record the adopted cache's endpoint");
        }
    }

    /// Rotates the secrets whose scheduled rotation is due, now and every
    /// minute, as Secrets Manager's scheduler does in AWS.
    pub fn spawn_rotation_schedule(&self) -> tokio::task::JoinHandle<()> {
        let secrets = self.secrets.clone();
        let rotator = self.rotator.clone();
        tokio::spawn(async move {
            loop {
                match secrets.due_for_rotation(broker_core::domain::now()).await {
                    Ok(due) => {
                        for reference in due {
                            rotate_due(&secrets, &rotator, &reference).await;
                        }
                    }
                    Err(e) => warn!(error = %e, "could not list the secrets due for rotation"),
                }
                tokio::time::sleep(ROTATION_TICK).await;
            }
        })
    }

    /// Samples every running cache's counters for the dashboard's charts,
    /// now and every minute, as ElastiCache publishes its metrics.
    pub fn spawn_metrics_sampling(&self) -> tokio::task::JoinHandle<()> {
        self.cache_metrics.spawn_sampling()
    }

    /// Serves the API on 127.0.0.1:`port` until Ctrl-C or SIGTERM, then
    /// finishes the requests under way and returns; [`Laptop::shutdown`]
    /// stops the rest.
    pub async fn serve(&self, port: u16) -> Result<(), LaptopError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| LaptopError::Listen { port, source })?;
        let addr = listener.local_addr().map_err(|source| LaptopError::Listen { port, source })?;
        info!(%addr, "broker listening");
        eprintln!("broker listening on http://{addr}");
        axum::serve(listener, self.router.clone())
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(LaptopError::Serve)
    }
}

/// Rotates one secret the schedule says is due; a failure is logged and the
/// next tick tries again.
async fn rotate_due(secrets: &LocalSecretStore, rotator: &Rotator, reference: &str) {
    let name = match secrets.describe(reference).await {
        Ok(info) => info.name,
        Err(e) => {
            return warn!(secret = reference, error = %e, "scheduled rotation: the secret is unreadable");
        }
    };
    let Some(target) = Target::from_secret_name(SECRET_PREFIX, &name) else {
        return warn!(secret = %name, "scheduled rotation: not a credential the broker rotates");
    };
    match rotator.rotate_now(&target).await {
        Ok(token) => info!(secret = %name, token = %token, "scheduled rotation done; the grace period runs"),
        Err(e) => warn!(secret = %name, error = %e, "scheduled rotation failed; retrying in a minute"),
    }
}

/// `broker-api catalog apply FILE`: inserts or replaces every service and plan
/// of FILE in the store, the operator's way to add or change a plan without a
/// release (the broker reads the store on every request). Returns how many
/// entries were written.
pub async fn apply_catalog(config: &LaptopConfig, file: &Path) -> Result<usize, LaptopError> {
    let catalog = CatalogFile::from_file(file)?;
    Ok(broker_core::catalog::apply(&open_store(&config.state_dir)?, &catalog).await?)
}

/// `broker-api catalog seed [FILE]`: adds the services and plans of FILE (or
/// the built-in catalog) that the store does not have yet, as every start
/// does. Returns how many were added.
pub async fn seed_catalog(config: &LaptopConfig, file: Option<&Path>) -> Result<usize, LaptopError> {
    let catalog = CatalogFile::from_file_or_builtin(file)?;
    Ok(open_store(&config.state_dir)?.seed(&catalog.services, &catalog.plans).await?)
}

/// The store under the state directory, which is made if it is missing,
/// readable by its owner only (0700): it holds the records, the jobs and the
/// secrets. An existing directory keeps its mode (it may be one the operator
/// shares); the files in it are 0600 whatever it is.
fn open_store(dir: &Path) -> Result<SqliteStore, LaptopError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LaptopError::StateDir { path: dir.into(), source })?;
    Ok(SqliteStore::open(&dir.join("broker.sqlite"))?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down: no new requests; finishing the ones under way");
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::logging::Report;
    use std::error::Error;

    fn config_in(state_dir: PathBuf) -> LaptopConfig {
        LaptopConfig {
            port: 0,
            state_dir,
            credentials: None,
            catalog_file: None,
            poll_delay_secs: 1,
            rotation: RotationPolicy { days: 0, grace_secs: 60 },
            cache_tls: true,
        }
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
            & 0o777
    }

    /// The state directory holds records, jobs, secrets and the broker's own
    /// password: only its owner may read any of it.
    #[tokio::test]
    async fn the_state_directory_and_its_files_are_the_owners_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        Laptop::open(&config_in(dir.clone())).await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        for file in ["broker.sqlite", "jobs.sqlite", "secrets.sqlite", "broker-credentials"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
    }

    /// Saved credentials with an empty name or password would let anyone in
    /// with empty basic auth, or nobody at all: the start is refused, saying
    /// what to do.
    #[tokio::test]
    async fn saved_credentials_with_an_empty_username_or_password_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for saved in
            [r#"{"username": "", "password": "a-password"}"#, r#"{"username": "broker", "password": " "}"#]
        {
            std::fs::write(root.path().join("broker-credentials"), saved).unwrap();
            let err = Laptop::open(&config_in(root.path().to_path_buf())).await.err().expect("refused");
            let report = Report(&err).to_string();
            assert!(report.contains("broker-credentials has an empty username or password"), "{report}");
            assert!(report.contains("delete it"), "{report}");
        }
    }

    /// A state directory that cannot be made names the variable and the
    /// path, and keeps the operating system's reason as its cause.
    #[tokio::test]
    async fn a_state_directory_that_cannot_be_made_says_which_and_why() {
        let file = std::env::temp_dir().join(format!("laptop-state-{}", std::process::id()));
        std::fs::write(&file, "a file, not a directory").unwrap();
        let config = config_in(file.join("state"));
        let err = seed_catalog(&config, None).await.unwrap_err();
        assert!(matches!(err, LaptopError::StateDir { .. }), "{err:?}");
        assert!(err.source().and_then(|c| c.downcast_ref::<std::io::Error>()).is_some(), "{err:?}");
        let report = Report(&err).to_string();
        assert!(report.starts_with("cannot create BROKER_STATE_DIR ") && report.contains(": "), "{report}");
        std::fs::remove_file(&file).unwrap();
    }
}
