//! Laptop mode's cache provider: real redis-server, valkey-server and memcached
//! processes on free 127.0.0.1 ports, one directory per instance under a root,
//! started in their own process group so they can outlive the broker (which
//! stops them with [`LocalCacheProvider::stop_all`] unless told to keep them)
//! and are adopted on its next start.
//!
//! `root/<instance id, made filesystem-safe>/` holds:
//! - `instance.json`: engine, version, port, pid, and the admin secret's
//!   *reference* and user name (never a password);
//! - `data/`: the server's working directory (Redis/Valkey append-only files);
//! - `server.log`: the server's log, and its stdout and stderr;
//! - `server.pid`: the pid file the server writes itself;
//! - `server.conf` and `users.acl` (Redis OSS and Valkey only).
//!
//! Where passwords go: the admin password lives only in the secret store.
//! `users.acl` starts with its SHA-256 (`#<hex>`), the same form Redis itself
//! writes on `ACL SAVE`; `sha256sum` computes it reading the password from a
//! pipe, so it never appears in a file, a command line or a log. Binding
//! passwords reach the server only inside `ACL SETUSER` on the admin connection,
//! and `ACL SAVE` stores them hashed too.
//!
//! This module is the provider itself (create, modify, delete, users, adopt);
//! `record` holds the instance files, `process` starts and stops servers,
//! `config` writes what they start with and checks ACL names, `client`
//! talks to a running server, `stats` reads its counters.
//!
//! The files here are a few hundred bytes, so they are read and written with
//! `std::fs`: that blocks for less time than a hop to tokio's blocking pool.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    ServerErrorKind,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

pub use broker_core::domain::credentials::ADMIN_USER;
use broker_core::domain::credentials::passwords_fit;
use broker_core::domain::settings::DEFAULT_MAXMEMORY_POLICY;
use broker_core::domain::{Action, ActionStep, CacheUser, Endpoint, Engine, Snapshot};
use broker_core::ports::{
    CacheNode, CacheProvider, CacheSpec, Principal, Progress, ProviderError, SecretStore,
};

/// Every server listens here only: laptop mode is for the laptop.
mod client;
mod config;
mod day2;
mod inventory;
mod process;
mod record;
mod stats;
#[cfg(test)]
mod tests;

use client::*;
use config::*;
use process::*;
use record::*;
pub use stats::NodeStats;

const HOST: &str = "127.0.0.1";
/// How long `create` and `adopt` wait for a new server to answer before they
/// report `Working` (the worker then polls `progress`).
const START_WAIT: Duration = Duration::from_secs(5);
/// How long a server gets to exit after SIGTERM before it gets SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long a SIGKILLed process gets to disappear before we call it stuck.
const KILL_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(25);
/// A port found free can be taken by someone else before the server binds it;
/// the start is retried on this many ports before giving up.
const PORT_ATTEMPTS: usize = 5;
/// How many lines of `server.log` an error about a dead server quotes.
const LOG_TAIL_LINES: usize = 12;
/// How far back from the end of `server.log` those lines are looked for.
const LOG_TAIL_BYTES: u64 = 32 * 1024;
/// What Redis, Valkey and memcached all print when their port is taken.
const PORT_TAKEN: &str = "Address already in use";

/// A server [`LocalCacheProvider::stop_all`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub instance_id: String,
    pub engine: Engine,
    pub port: u16,
    pub pid: u32,
    /// It ignored SIGTERM and was killed.
    pub forced: bool,
}

/// An instance's server as [`LocalCacheProvider::servers`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub instance_id: String,
    pub engine: Engine,
    /// The port it listens on (or will, when started again).
    pub port: u16,
    /// `None` when it is not running.
    pub pid: Option<u32>,
}

/// Runs each cache as a local process. See the module documentation for the
/// layout on disk.
pub struct LocalCacheProvider {
    root: PathBuf,
    secrets: Arc<dyn SecretStore>,
    /// Binaries set by [`LocalCacheProvider::with_binary`]; they win over the
    /// environment and PATH.
    binaries: HashMap<Engine, PathBuf>,
    /// The servers this provider started, by instance id. Holding the handles
    /// lets `try_wait` tell exactly whether they run, and reap them once they
    /// exit so they do not linger as zombies.
    children: Mutex<HashMap<String, Child>>,
    /// One lock per instance, so that a create racing a delete or an adopt of
    /// the same instance cannot start two servers on one data directory.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for LocalCacheProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCacheProvider")
            .field("root", &self.root)
            .field("binaries", &self.binaries)
            .finish_non_exhaustive()
    }
}

impl LocalCacheProvider {
    /// A provider keeping its instances under `root` (created when needed) and
    /// reading admin passwords from `secrets`. Binaries come from PATH unless
    /// `REDIS_SERVER_BIN`, `VALKEY_SERVER_BIN` or `MEMCACHED_BIN` name them.
    pub fn new(root: PathBuf, secrets: Arc<dyn SecretStore>) -> LocalCacheProvider {
        LocalCacheProvider {
            // Absolute, because servers run with their data directory as the
            // working directory and find their files through these paths.
            root: std::path::absolute(&root).unwrap_or(root),
            secrets,
            binaries: HashMap::new(),
            children: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `path` as the server binary of `engine`, whatever the environment
    /// says. A bare name is looked up on PATH.
    pub fn with_binary(mut self, engine: Engine, path: impl Into<PathBuf>) -> LocalCacheProvider {
        self.binaries.insert(engine, path.into());
        self
    }

    /// Where the instance directories are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes an instance back after a broker restart: leaves its server alone
    /// when it still runs, otherwise starts it again on the same data, on its
    /// recorded port if that is free and on a new one if not.
    pub async fn adopt(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let _guard = self.lock(instance_id).await;
        let (paths, record) = self.existing(instance_id)?;
        if self.running_pid(&record, &paths).is_some() {
            return self.answer(&record, &paths).await;
        }
        tracing::info!(
            instance_id,
            engine = record.engine.as_str(),
            "local cache server is not running; starting it again"
        );
        self.start(record, &paths).await
    }

    /// Stops the server of every instance under the root, keeping their data:
    /// a clean shutdown, and tests' clean-up. Every server gets SIGTERM at
    /// once (Redis OSS and Valkey write their append-only file and exit;
    /// memcached keeps nothing), and one still running after [`STOP_WAIT`]
    /// gets SIGKILL. `adopt` starts them again. Returns what was stopped.
    pub async fn stop_all(&self) -> Vec<Stopped> {
        let mut running = Vec::new();
        for (record, paths) in self.records() {
            if let Some(pid) = self.running_pid(&record, &paths) {
                signal(pid, "TERM").await;
                running.push((record, paths, pid));
            }
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline
            && running.iter().any(|(record, paths, _)| self.running_pid(record, paths).is_some())
        {
            sleep(POLL).await;
        }
        let mut stopped = Vec::with_capacity(running.len());
        for (record, paths, pid) in &running {
            let forced = self.running_pid(record, paths).is_some();
            if forced {
                tracing::warn!(
                    instance_id = %record.instance_id,
                    pid,
                    "local cache server ignored SIGTERM; killing it"
                );
                signal(*pid, "KILL").await;
            }
            stopped.push(Stopped {
                instance_id: record.instance_id.clone(),
                engine: record.engine,
                port: record.port,
                pid: *pid,
                forced,
            });
        }
        let deadline = Instant::now() + KILL_WAIT;
        while Instant::now() < deadline
            && running.iter().any(|(record, paths, _)| self.running_pid(record, paths).is_some())
        {
            sleep(POLL).await;
        }
        stopped
    }

    /// Every instance under the root with its server's port and process id
    /// (none when it is not running), for `broker-api status`.
    pub fn servers(&self) -> Vec<Server> {
        self.records()
            .into_iter()
            .map(|(record, paths)| Server {
                pid: self.running_pid(&record, &paths),
                instance_id: record.instance_id,
                engine: record.engine,
                port: record.port,
            })
            .collect()
    }

    /// The record of every instance directory under the root that has one.
    fn records(&self) -> Vec<(Record, Paths)> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "cannot list the local caches");
                return Vec::new();
            }
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let paths = Paths::in_dir(entry.path());
            if let Ok(Some(record)) = read_record(&paths) {
                records.push((record, paths));
            }
        }
        records.sort_by(|a, b| a.0.instance_id.cmp(&b.0.instance_id));
        records
    }

    // ------------------------------------------------------------ internals

    async fn lock(&self, instance_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(instance_id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// The paths and record of an instance that must exist.
    fn existing(&self, instance_id: &str) -> Result<(Paths, Record), ProviderError> {
        let paths = Paths::of(&self.root, instance_id)?;
        let record = read_record(&paths)?.ok_or_else(|| unknown(instance_id))?;
        Ok((paths, record))
    }

    /// The pid of the instance's server when it runs. A server this provider
    /// started is asked about through its handle, which also reaps it once it
    /// exited: that is exact, and it does not race Redis rewriting its command
    /// line at start-up. Any other (adopted) server is looked up in /proc.
    fn running_pid(&self, record: &Record, paths: &Paths) -> Option<u32> {
        {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(child) = children.get_mut(&record.instance_id) {
                match (child.try_wait(), child.id()) {
                    (Ok(None), Some(pid)) => return Some(pid),
                    _ => {
                        children.remove(&record.instance_id);
                    }
                }
            }
        }
        live_pid(record, paths)
    }

    fn binary(&self, engine: Engine) -> Result<PathBuf, ProviderError> {
        let configured = match self.binaries.get(&engine) {
            Some(path) => Some(path.as_os_str().to_owned()),
            None => std::env::var_os(binary_of(engine).env),
        };
        resolve_binary(engine, configured, std::env::var_os("PATH"))
    }

    async fn admin_password(&self, record: &Record) -> Result<SecretString, ProviderError> {
        broker_core::ports::read_admin_password(
            self.secrets.as_ref(),
            record.admin_secret.as_deref(),
            &record.instance_id,
            record.engine,
        )
        .await
    }

    async fn admin_connection(&self, record: &Record) -> Result<MultiplexedConnection, ProviderError> {
        let password = self.admin_password(record).await?;
        connect(record.port, ADMIN_USER, &password).await.map_err(|e| {
            redis_failure(
                &format!(
                    "could not reach {} for instance {} on {HOST}:{} as {ADMIN_USER}",
                    record.engine.as_str(),
                    record.instance_id,
                    record.port
                ),
                &e,
                &[],
            )
        })
    }

    /// `Ok` when the server answers: PING as the admin user, or memcached's
    /// `version`. Not answering (yet) is `Retryable`.
    async fn probe(&self, record: &Record, admin: Option<&SecretString>) -> Result<(), ProviderError> {
        if !record.engine.speaks_redis() {
            return memcached_version(record.port).await.map(drop).map_err(|e| {
                ProviderError::Retryable(format!(
                    "memcached for instance {} does not answer on {HOST}:{}: {e}",
                    record.instance_id, record.port
                ))
            });
        }
        let mut connection = match admin {
            Some(password) => connect(record.port, ADMIN_USER, password).await.map_err(|e| {
                redis_failure(
                    &format!(
                        "{} for instance {} does not answer on {HOST}:{} as {ADMIN_USER}",
                        record.engine.as_str(),
                        record.instance_id,
                        record.port
                    ),
                    &e,
                    &[],
                )
            })?,
            None => self.admin_connection(record).await?,
        };
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop).map_err(|e| {
            redis_failure(
                &format!(
                    "{} for instance {} does not answer PING",
                    record.engine.as_str(),
                    record.instance_id
                ),
                &e,
                &[],
            )
        })
    }

    /// `Done` when a running server answers (and has finished taking in a
    /// restored snapshot), `Working` while it does not yet.
    async fn answer(&self, record: &Record, paths: &Paths) -> Result<Progress, ProviderError> {
        match self.probe(record, None).await {
            Ok(()) => self.settle(record.clone(), paths).await,
            Err(ProviderError::Retryable(why)) => Ok(Progress::Working {
                detail: format!("starting {} on {HOST}:{} ({why})", record.engine.as_str(), record.port),
            }),
            Err(e) => Err(e),
        }
    }

    /// Writes the configuration, starts the server and waits up to
    /// [`START_WAIT`] for it to answer. Picks a new port when the recorded one
    /// is taken, or was taken between picking and binding.
    async fn start(&self, mut record: Record, paths: &Paths) -> Result<Progress, ProviderError> {
        let binary = self.binary(record.engine)?;
        let admin =
            if record.engine.speaks_redis() { Some(self.admin_password(&record).await?) } else { None };
        create_dir(&paths.dir)?;
        create_dir(&paths.data)?;
        if let Some(password) = &admin {
            // Only the first start writes users.acl: later ones find the users
            // the broker added since, saved there by ACL SAVE.
            if !paths.acl.exists() {
                let acl = initial_acl(&sha256_hex(password).await?);
                write_file(&paths.acl, acl.as_bytes())?;
            }
        }
        for attempt in 1..=PORT_ATTEMPTS {
            if attempt > 1 || record.port == 0 || !port_is_free(record.port) {
                record.port = free_port()?;
            }
            if record.engine.speaks_redis() {
                write_file(&paths.conf, redis_config(&record, paths)?.as_bytes())?;
            }
            let log_start = file_len(&paths.log);
            // The record names the port before the server starts: a crash
            // between the two leaves a record the next create finds, and it
            // adopts the server by its pid file (written by the server on
            // that port) instead of starting a second one on the same data.
            record.pid = None;
            write_record(paths, &record)?;
            let child = spawn(&binary, &record, paths)?;
            record.pid = child.id();
            self.children
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(record.instance_id.clone(), child);
            write_record(paths, &record)?;
            tracing::info!(
                instance_id = %record.instance_id,
                engine = record.engine.as_str(),
                port = record.port,
                pid = record.pid,
                "started local cache server"
            );
            let deadline = Instant::now() + START_WAIT;
            loop {
                if self.running_pid(&record, paths).is_none() {
                    if read_from(&paths.log, log_start).contains(PORT_TAKEN) {
                        tracing::warn!(
                            instance_id = %record.instance_id,
                            port = record.port,
                            "port was taken before the server bound it; trying another"
                        );
                        break;
                    }
                    return Err(exited(&record, paths, log_start));
                }
                match self.probe(&record, admin.as_ref()).await {
                    Ok(()) => return self.settle(record, paths).await,
                    Err(ProviderError::Retryable(_)) if Instant::now() < deadline => sleep(POLL).await,
                    Err(ProviderError::Retryable(why)) => {
                        return Ok(Progress::Working {
                            detail: format!(
                                "starting {} on {HOST}:{} ({why})",
                                record.engine.as_str(),
                                record.port
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(ProviderError::Retryable(format!(
            "could not start {} for instance {}: {PORT_ATTEMPTS} ports in a row were taken \
             before it could bind them",
            record.engine.as_str(),
            record.instance_id
        )))
    }

    /// SIGTERM, then SIGKILL after [`STOP_WAIT`]; `Ok` once nothing runs.
    async fn stop(&self, record: &Record, paths: &Paths) -> Result<(), ProviderError> {
        let Some(pid) = self.running_pid(record, paths) else { return Ok(()) };
        signal(pid, "TERM").await;
        if self.wait_until_stopped(record, paths, STOP_WAIT).await {
            return Ok(());
        }
        tracing::warn!(
            instance_id = %record.instance_id,
            pid,
            "local cache server ignored SIGTERM; killing it"
        );
        signal(pid, "KILL").await;
        if self.wait_until_stopped(record, paths, KILL_WAIT).await {
            return Ok(());
        }
        Err(ProviderError::Retryable(format!(
            "{} for instance {} (pid {pid}) still runs after SIGKILL",
            record.engine.as_str(),
            record.instance_id
        )))
    }

    async fn wait_until_stopped(&self, record: &Record, paths: &Paths, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.running_pid(record, paths).is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }

    /// The record of a Redis OSS or Valkey instance, or `None` for Memcached,
    /// which has no users.
    fn with_users(&self, instance_id: &str) -> Result<Option<Record>, ProviderError> {
        let (_, record) = self.existing(instance_id)?;
        Ok(record.engine.speaks_redis().then_some(record))
    }

    async fn acl_save(
        &self,
        connection: &mut MultiplexedConnection,
        record: &Record,
    ) -> Result<(), ProviderError> {
        redis::cmd("ACL").arg("SAVE").query_async::<()>(connection).await.map_err(|e| {
            redis_failure(
                &format!("could not save the users of instance {} to users.acl", record.instance_id),
                &e,
                &[],
            )
        })
    }
}

#[async_trait]
impl CacheProvider for LocalCacheProvider {
    /// `ACL SETUSER` and `ACL DELUSER` take effect before they answer.
    fn users_change_at_once(&self) -> bool {
        true
    }

    async fn create(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        if !spec.spare_users.is_empty() {
            // Binds make their users at once here; nothing asks for spares.
            return Err(ProviderError::Permanent(format!(
                "instance {}: laptop mode makes binding users at once and keeps no spare users",
                spec.cache_key
            )));
        }
        let _guard = self.lock(&spec.cache_key).await;
        let paths = Paths::of(&self.root, &spec.cache_key)?;
        if let Some(record) = read_record(&paths)? {
            if record.engine != spec.engine {
                return Err(ProviderError::Permanent(format!(
                    "instance {} already runs {} locally, not {}; delete it first",
                    spec.cache_key,
                    record.engine.as_str(),
                    spec.engine.as_str()
                )));
            }
            if self.running_pid(&record, &paths).is_some() {
                return self.answer(&record, &paths).await;
            }
            // An earlier attempt made the instance but its server is gone.
            return self.start(record, &paths).await;
        }
        if spec.engine.speaks_redis() && spec.admin_secret.is_none() {
            return Err(ProviderError::Permanent(format!(
                "instance {} needs an admin secret reference: {} has users",
                spec.cache_key,
                spec.engine.as_str()
            )));
        }
        // Before anything is written, so a missing binary leaves nothing behind.
        self.binary(spec.engine)?;
        let restoring = match &spec.restore {
            Some(reference) => {
                self.place_snapshot(&spec.cache_key, spec.engine, reference, &paths)?;
                true
            }
            None => false,
        };
        let record = Record {
            instance_id: spec.cache_key.clone(),
            engine: spec.engine,
            engine_version: spec.engine_version.clone(),
            port: 0,
            pid: None,
            admin_secret: if spec.engine.speaks_redis() { spec.admin_secret.clone() } else { None },
            admin_user: spec.engine.speaks_redis().then(|| ADMIN_USER.to_string()),
            restoring,
            maxmemory_policy: spec.settings.maxmemory_policy.clone(),
            maxmemory_gb: serverless_limit(spec),
        };
        self.start(record, &paths).await
    }

    async fn progress(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let (paths, record) = self.existing(instance_id)?;
        if self.running_pid(&record, &paths).is_some() {
            return self.answer(&record, &paths).await;
        }
        Err(exited(&record, &paths, 0))
    }

    /// Local processes carry no tags: done once the cache exists.
    async fn retag(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.existing(&spec.cache_key)?;
        Ok(Progress::Done)
    }

    async fn modify(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let _guard = self.lock(&spec.cache_key).await;
        let (paths, mut record) = self.existing(&spec.cache_key)?;
        if record.engine != spec.engine {
            if !(record.engine == Engine::Redis && spec.engine == Engine::Valkey) {
                return Err(ProviderError::Permanent(format!(
                    "instance {} runs {}; changing the engine to {} is not supported",
                    spec.cache_key,
                    record.engine.as_str(),
                    spec.engine.as_str()
                )));
            }
            // Redis OSS to Valkey in place: valkey-server started on the
            // same data directory reads what redis-server wrote (its
            // append-only file and its users), on the same port.
            self.binary(Engine::Valkey)?;
            self.stop(&record, &paths).await?;
            record.engine = Engine::Valkey;
            record.engine_version = spec.engine_version.clone();
            tracing::info!(instance_id = %spec.cache_key, "moving local cache from redis-server to valkey-server");
            return self.start(record, &paths).await;
        }
        // Laptop mode runs one process whatever the plan, so only the version
        // the platform asked for is recorded (and reported in credentials).
        // The windows and the snapshot retention are ElastiCache's: a
        // laptop server has no maintenance and takes no daily snapshots.
        record.engine_version = spec.engine_version.clone();
        if record.engine.speaks_redis() && record.maxmemory_policy != spec.settings.maxmemory_policy {
            let policy = spec.settings.maxmemory_policy.as_deref().unwrap_or(DEFAULT_MAXMEMORY_POLICY);
            let mut connection = self.admin_connection(&record).await?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(policy)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| {
                    redis_failure(
                        &format!("could not set the eviction policy of instance {}", spec.cache_key),
                        &e,
                        &[],
                    )
                })?;
            record.maxmemory_policy = spec.settings.maxmemory_policy.clone();
            tracing::info!(instance_id = %spec.cache_key, policy, "eviction policy set");
        }
        if record.engine.speaks_redis() && record.maxmemory_gb != serverless_limit(spec) {
            let limit = serverless_limit(spec).map_or("0".to_string(), |gb| format!("{gb}gb"));
            let mut connection = self.admin_connection(&record).await?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(&limit)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| {
                    redis_failure(
                        &format!("could not set the memory limit of instance {}", spec.cache_key),
                        &e,
                        &[],
                    )
                })?;
            record.maxmemory_gb = serverless_limit(spec);
            tracing::info!(instance_id = %spec.cache_key, limit, "memory limit set");
        }
        write_record(&paths, &record)?;
        Ok(Progress::Done)
    }

    /// With `final_snapshot`, a Redis OSS or Valkey cache's data is saved
    /// as its final snapshot first (the server started again for it when
    /// it is not running), which outlives the cache as ElastiCache's do.
    /// The cache's named snapshots go with it.
    async fn delete(
        &self,
        instance_id: &str,
        final_snapshot: Option<&str>,
    ) -> Result<Progress, ProviderError> {
        let _guard = self.lock(instance_id).await;
        let paths = Paths::of(&self.root, instance_id)?;
        match read_record(&paths) {
            Ok(Some(record)) => {
                if let Some(key) = final_snapshot
                    && record.engine.speaks_redis()
                    && let Progress::Working { detail } =
                        self.take_final_snapshot(&record, &paths, key).await?
                {
                    return Ok(Progress::Working { detail });
                }
                self.stop(&record, &paths).await?;
            }
            Ok(None) => {}
            // A record that cannot be parsed names no process to stop; the
            // directory still goes, or the instance could never be deleted.
            Err(ProviderError::Permanent(why)) => {
                tracing::warn!(instance_id, error = %why, "deleting a local cache without a readable record");
            }
            Err(e) => return Err(e),
        }
        self.children.lock().unwrap_or_else(PoisonError::into_inner).remove(instance_id);
        self.delete_named_snapshots(instance_id)?;
        match fs::remove_dir_all(&paths.dir) {
            Ok(()) => {
                tracing::info!(instance_id, "deleted local cache");
                Ok(Progress::Done)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Progress::Done),
            Err(e) => Err(ProviderError::Retryable(format!("could not remove {}: {e}", paths.dir.display()))),
        }
    }

    async fn endpoint(&self, instance_id: &str) -> Result<Endpoint, ProviderError> {
        let (_, record) = self.existing(instance_id)?;
        // One process: for Memcached the node list is that one node.
        let nodes = match record.engine {
            Engine::Memcached => vec![format!("{HOST}:{}", record.port)],
            _ => vec![],
        };
        Ok(Endpoint { nodes, ..Endpoint::single(HOST, record.port, false) })
    }

    /// One process, one node, named by its instance; none when no cache
    /// was made.
    async fn nodes(&self, instance_id: &str) -> Result<Vec<CacheNode>, ProviderError> {
        let paths = Paths::of(&self.root, instance_id)?;
        Ok(read_record(&paths)?
            .map(|record| vec![CacheNode { cluster_id: record.instance_id, node_id: None }])
            .unwrap_or_default())
    }

    async fn put_user(&self, instance_id: &str, user: &CacheUser) -> Result<Progress, ProviderError> {
        let Some(record) = self.with_users(instance_id)? else { return Ok(Progress::Done) };
        check_username(&user.username)?;
        if user.passwords.is_empty() || user.passwords.iter().any(|p| p.expose_secret().is_empty()) {
            return Err(ProviderError::Permanent(format!(
                "user {} needs at least one password, and no empty one",
                user.username
            )));
        }
        let mut connection = self.admin_connection(&record).await?;
        // `reset` first, so the user ends up with exactly these passwords and
        // rules: a rotation adds the new password, and later drops the old one,
        // by calling this again.
        let mut setuser = redis::cmd("ACL");
        setuser.arg("SETUSER").arg(&user.username).arg("reset").arg("on");
        for password in &user.passwords {
            setuser.arg(format!(">{}", password.expose_secret()));
        }
        for rule in user.access_string.split_whitespace() {
            setuser.arg(rule);
        }
        setuser.query_async::<()>(&mut connection).await.map_err(|e| {
            redis_failure(
                &format!("could not set up user {} on instance {instance_id}", user.username),
                &e,
                &user.passwords,
            )
        })?;
        self.acl_save(&mut connection, &record).await?;
        Ok(Progress::Done)
    }

    async fn delete_user(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError> {
        // A deleted instance took its users with it.
        if read_record(&Paths::of(&self.root, instance_id)?)?.is_none() {
            return Ok(Progress::Done);
        }
        let Some(record) = self.with_users(instance_id)? else { return Ok(Progress::Done) };
        check_username(username)?;
        let mut connection = self.admin_connection(&record).await?;
        // DELUSER also closes the user's open connections, so access ends now;
        // deleting a user that is not there deletes 0 users and is fine.
        redis::cmd("ACL").arg("DELUSER").arg(username).query_async::<i64>(&mut connection).await.map_err(
            |e| {
                redis_failure(&format!("could not delete user {username} on instance {instance_id}"), &e, &[])
            },
        )?;
        self.acl_save(&mut connection, &record).await?;
        Ok(Progress::Done)
    }

    async fn user_progress(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError> {
        let Some(record) = self.with_users(instance_id)? else { return Ok(Progress::Done) };
        let mut connection = self.admin_connection(&record).await?;
        let found = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(username)
            .query_async::<redis::Value>(&mut connection)
            .await
            .map_err(|e| {
                redis_failure(
                    &format!("could not look up user {username} on instance {instance_id}"),
                    &e,
                    &[],
                )
            })?;
        match found {
            redis::Value::Nil => Err(ProviderError::Retryable(format!(
                "user {username} does not exist on instance {instance_id}"
            ))),
            _ => Ok(Progress::Done),
        }
    }

    async fn set_passwords(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        let record = self.with_passwords(instance_id)?;
        let username = acl_name(principal)?;
        check_passwords(&username, passwords)?;
        let mut connection = self.admin_connection_trying(&record, passwords).await?;
        // `resetpass` drops every password and keeps the user's rules, so
        // the user ends up accepted with exactly these.
        let mut setuser = redis::cmd("ACL");
        setuser.arg("SETUSER").arg(&username).arg("resetpass");
        for password in passwords {
            setuser.arg(format!(">{}", password.expose_secret()));
        }
        setuser.query_async::<()>(&mut connection).await.map_err(|e| {
            redis_failure(
                &format!("could not set the passwords of {username} on instance {instance_id}"),
                &e,
                passwords,
            )
        })?;
        self.acl_save(&mut connection, &record).await?;
        tracing::info!(instance_id, user = %username, passwords = passwords.len(), "passwords set");
        Ok(Progress::Done)
    }

    /// Logs in as the user with each password (a new connection each), and
    /// counts the passwords the user holds: `Done` when every one works and
    /// there are no others.
    async fn passwords_progress(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        let record = self.with_passwords(instance_id)?;
        let username = acl_name(principal)?;
        check_passwords(&username, passwords)?;
        for (n, password) in passwords.iter().enumerate() {
            let login = async {
                let mut c = connect(record.port, &username, password).await?;
                redis::cmd("PING").query_async::<String>(&mut c).await
            };
            if let Err(e) = login.await {
                if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() {
                    return Err(redis_failure(
                        &format!("could not reach instance {instance_id} to check {username}"),
                        &e,
                        passwords,
                    ));
                }
                return Ok(Progress::Working {
                    detail: format!(
                        "{username} is not accepted with password {} of {} yet",
                        n + 1,
                        passwords.len()
                    ),
                });
            }
        }
        let mut connection = self.admin_connection_trying(&record, passwords).await?;
        let held = acl_password_count(&mut connection, &username).await.map_err(|e| {
            redis_failure(&format!("could not look up {username} on instance {instance_id}"), &e, passwords)
        })?;
        if held != Some(passwords.len()) {
            return Ok(Progress::Working {
                detail: format!(
                    "{username} holds {} passwords, not {}",
                    held.map_or("no".to_string(), |n| n.to_string()),
                    passwords.len()
                ),
            });
        }
        Ok(Progress::Done)
    }

    async fn plan_action(
        &self,
        instance_id: &str,
        action: &Action,
    ) -> Result<Vec<ActionStep>, ProviderError> {
        self.plan_local_action(instance_id, action).await
    }

    async fn start_action(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        self.start_local_action(instance_id, action, step).await
    }

    async fn action_progress(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        self.local_action_progress(instance_id, action, step).await
    }

    /// Final snapshots are in the cache's snapshot directory: `final_key`
    /// is not needed to find them.
    async fn snapshots(
        &self,
        instance_id: &str,
        _final_key: Option<&str>,
    ) -> Result<Vec<Snapshot>, ProviderError> {
        self.list_snapshots(instance_id)
    }
}

impl LocalCacheProvider {
    /// The record of an instance whose users have passwords (Redis OSS and
    /// Valkey); Memcached has none, so a rotation of one is a mistake.
    fn with_passwords(&self, instance_id: &str) -> Result<Record, ProviderError> {
        self.with_users(instance_id)?.ok_or_else(|| {
            ProviderError::Permanent(format!(
                "instance {instance_id} is Memcached, which has no passwords to rotate"
            ))
        })
    }

    /// The admin connection, logging in with the current admin password or,
    /// when that is refused, with one of `also` (during a rotation of the
    /// admin password the secret's current version may be either).
    async fn admin_connection_trying(
        &self,
        record: &Record,
        also: &[SecretString],
    ) -> Result<MultiplexedConnection, ProviderError> {
        let first = match self.admin_connection(record).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        for password in also {
            if let Ok(c) = connect(record.port, ADMIN_USER, password).await {
                return Ok(c);
            }
        }
        Err(first)
    }
}

/// A serverless plan's data storage maximum, which a local server takes as
/// its memory limit.
fn serverless_limit(spec: &CacheSpec) -> Option<u32> {
    spec.plan.usage_limits.filter(|_| spec.plan.serverless).map(|l| l.data_storage_gb.maximum)
}
