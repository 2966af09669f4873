//! Laptop mode's cache provider: real redis-server, valkey-server and memcached
//! processes on free 127.0.0.1 ports, laid out as ElastiCache lays out the
//! plan's nodes (a primary and its replicas, the shards of a cluster, the
//! nodes of a Memcached cluster), speaking TLS only unless told not to,
//! one directory per instance under a root. The servers run in their own
//! process group so they can outlive the broker (which stops them with
//! [`LocalCacheProvider::stop_all`] unless told to keep them) and are
//! adopted on its next start.
//!
//! `root/<instance id, made filesystem-safe>/` holds:
//! - `instance.json`: engine, version, each server's port and pid, and the
//!   admin secret's *reference* and user name (never a password);
//! - `users.acl` (Redis OSS and Valkey): the users every server of the
//!   instance shares;
//! - for the first server, and under `node-<n>/` for each other one:
//!   `data/` (its working directory: append-only files, a cluster node's
//!   `nodes.conf`), `server.log` (its log, stdout and stderr),
//!   `server.pid` (written by the server) and `server.conf` (Redis OSS and
//!   Valkey).
//!
//! `root/_tls/` holds the certificate authority and the server
//! certificate every TLS server presents (see `tls`).
//!
//! Where passwords go: the admin password lives only in the secret store.
//! `users.acl` starts with its SHA-256 (`#<hex>`), the same form Redis itself
//! writes on `ACL SAVE`; `sha256sum` computes it reading the password from a
//! pipe, so it never appears in a file, a command line or a log. Binding
//! passwords reach the servers only inside `ACL SETUSER` on the admin
//! connection, and `ACL SAVE` stores them hashed too. Replicas log in to
//! their primary with the admin password set by `CONFIG SET`, in memory.
//!
//! This module is the provider itself (create, modify, delete, users, adopt);
//! `record` holds the instance files, `nodes` lays out and starts and stops
//! the servers, `replication` attaches replicas and forms clusters,
//! `process` runs one server, `config` writes what it starts with and
//! checks ACL names, `tls` makes the certificates, `client` talks to a
//! running server, `stats` reads its counters.
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
use broker_core::domain::credentials::{HostPort, passwords_fit};
use broker_core::domain::settings::DEFAULT_MAXMEMORY_POLICY;
use broker_core::domain::{Action, ActionStep, CacheUser, Endpoint, Engine, Snapshot};
use broker_core::ports::{
    CacheNode, CacheProvider, CacheSpec, Principal, Progress, ProviderError, SecretStore,
};

mod client;
mod config;
mod day2;
mod inventory;
mod nodes;
mod process;
mod record;
mod replication;
mod stats;
#[cfg(test)]
mod tests;
mod tls;

use client::*;
use config::*;
use nodes::*;
use process::*;
use record::*;
use replication::*;
pub use stats::NodeStats;
use tls::*;

/// Every server listens here only: laptop mode is for the laptop.
const HOST: &str = "127.0.0.1";
/// How long `create` and `adopt` wait for new servers to answer before they
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

/// An instance's servers as [`LocalCacheProvider::servers`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub instance_id: String,
    pub engine: Engine,
    /// The port clients start from: the primary's, the cluster's
    /// configuration endpoint, the first Memcached node's.
    pub port: u16,
    /// That server's process id; `None` when it is not running.
    pub pid: Option<u32>,
    /// Every server of the instance, the first one included.
    pub nodes: Vec<ServerNode>,
}

impl Server {
    /// How many of the instance's servers run.
    pub fn running(&self) -> usize {
        self.nodes.iter().filter(|n| n.pid.is_some()).count()
    }
}

/// One server of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNode {
    pub port: u16,
    pub pid: Option<u32>,
    /// Its shard, counted from 0.
    pub shard: u8,
    /// A replica, as the instance was laid out (a cluster may have failed
    /// over since).
    pub replica: bool,
}

/// Runs each cache as local processes. See the module documentation for the
/// layout on disk.
pub struct LocalCacheProvider {
    root: PathBuf,
    secrets: Arc<dyn SecretStore>,
    /// Binaries set by [`LocalCacheProvider::with_binary`]; they win over the
    /// environment and PATH.
    binaries: HashMap<Engine, PathBuf>,
    /// Whether new instances speak TLS only (each record keeps its own).
    tls: bool,
    /// The root's TLS files, once read ([`LocalCacheProvider::tls_files`]).
    tls_files: Mutex<Option<Arc<Tls>>>,
    /// The servers this provider started, by instance id and node
    /// directory. Holding the handles lets `try_wait` tell exactly whether
    /// they run, and reap them once they exit so they do not linger as
    /// zombies.
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
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl LocalCacheProvider {
    /// A provider keeping its instances under `root` (created when needed) and
    /// reading admin passwords from `secrets`. Binaries come from PATH unless
    /// `REDIS_SERVER_BIN`, `VALKEY_SERVER_BIN` or `MEMCACHED_BIN` name them.
    /// New instances speak TLS only, as ElastiCache's do.
    pub fn new(root: PathBuf, secrets: Arc<dyn SecretStore>) -> LocalCacheProvider {
        LocalCacheProvider {
            // Absolute, because servers run with their data directory as the
            // working directory and find their files through these paths.
            root: std::path::absolute(&root).unwrap_or(root),
            secrets,
            binaries: HashMap::new(),
            tls: true,
            tls_files: Mutex::new(None),
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

    /// Whether instances made from now on speak TLS only (the default) or
    /// plain text, for clients that cannot do TLS. An instance keeps what
    /// it was made with.
    pub fn with_tls(mut self, tls: bool) -> LocalCacheProvider {
        self.tls = tls;
        self
    }

    /// Where the instance directories are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes an instance back after a broker restart: leaves its servers
    /// alone when they still run, otherwise starts those that do not on the
    /// same data, on their recorded ports if free and on new ones if not.
    pub async fn adopt(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let _guard = self.lock(instance_id).await;
        let (paths, record) = self.existing(instance_id)?;
        let down = self.node_pids(&record, &paths).iter().filter(|pid| pid.is_none()).count();
        if down == 0 {
            return self.answer(&record, &paths).await;
        }
        tracing::info!(
            instance_id,
            engine = record.engine.as_str(),
            down,
            "local cache servers are not running; starting them again"
        );
        self.start(record, &paths).await
    }

    /// Stops every server under the root, keeping their data: a clean
    /// shutdown, and tests' clean-up. Every server gets SIGTERM at once
    /// (Redis OSS and Valkey write their append-only file and exit;
    /// memcached keeps nothing), and one still running after [`STOP_WAIT`]
    /// gets SIGKILL. `adopt` starts them again. Returns what was stopped.
    pub async fn stop_all(&self) -> Vec<Stopped> {
        let mut running = Vec::new();
        for (record, paths) in self.records() {
            for node in &record.nodes {
                if let Some(pid) = self.node_pid(&record, node, &paths) {
                    signal(pid, "TERM").await;
                    running.push((record.clone(), node.clone(), pid));
                }
            }
        }
        let still = |provider: &Self, record: &Record, node: &Node| {
            Paths::of(&provider.root, &record.instance_id)
                .is_ok_and(|paths| provider.node_pid(record, node, &paths).is_some())
        };
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline && running.iter().any(|(r, n, _)| still(self, r, n)) {
            sleep(POLL).await;
        }
        let mut stopped = Vec::with_capacity(running.len());
        for (record, node, pid) in &running {
            let forced = still(self, record, node);
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
                port: node.port,
                pid: *pid,
                forced,
            });
        }
        let deadline = Instant::now() + KILL_WAIT;
        while Instant::now() < deadline && running.iter().any(|(r, n, _)| still(self, r, n)) {
            sleep(POLL).await;
        }
        stopped
    }

    /// Every instance under the root with its servers' ports and process
    /// ids (none where one is not running), for `broker-api status`.
    pub fn servers(&self) -> Vec<Server> {
        self.records()
            .into_iter()
            .map(|(record, paths)| {
                let nodes: Vec<ServerNode> = record
                    .nodes
                    .iter()
                    .map(|node| ServerNode {
                        port: node.port,
                        pid: self.node_pid(&record, node, &paths),
                        shard: node.shard,
                        replica: node.replica,
                    })
                    .collect();
                Server {
                    port: nodes[0].port,
                    pid: nodes[0].pid,
                    nodes,
                    instance_id: record.instance_id,
                    engine: record.engine,
                }
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

    /// An admin connection to every running server of the instance, by
    /// place; `Retryable` when none runs.
    async fn admin_connections(
        &self,
        record: &Record,
        paths: &Paths,
    ) -> Result<Vec<(usize, MultiplexedConnection)>, ProviderError> {
        self.admin_connections_trying(record, paths, &[]).await
    }

    /// [`LocalCacheProvider::admin_connections`], logging in with the
    /// current admin password or, when that is refused, with one of `also`
    /// (during a rotation of the admin password the secret's current
    /// version may be either). A server that is down is left out: it loads
    /// the shared `users.acl` when it starts.
    async fn admin_connections_trying(
        &self,
        record: &Record,
        paths: &Paths,
        also: &[SecretString],
    ) -> Result<Vec<(usize, MultiplexedConnection)>, ProviderError> {
        let password = self.admin_password(record).await?;
        let tls = self.tls_of(record)?;
        let mut connections = Vec::with_capacity(record.nodes.len());
        for (place, node) in record.nodes.iter().enumerate() {
            if self.node_pid(record, node, paths).is_none() {
                tracing::info!(
                    instance_id = %record.instance_id,
                    node = place,
                    "a server of the instance is down: it takes the users' changes when it starts"
                );
                continue;
            }
            let first = match self.node_connection(record, place, tls.as_deref(), &password).await {
                Ok(c) => c,
                Err(e) => {
                    let mut found = None;
                    for password in also {
                        if let Ok(c) = connect(node.port, tls.as_deref(), ADMIN_USER, password).await {
                            found = Some(c);
                            break;
                        }
                    }
                    found.ok_or(e)?
                }
            };
            connections.push((place, first));
        }
        if connections.is_empty() {
            return Err(ProviderError::Retryable(format!(
                "no server of instance {} runs; it starts again with the broker",
                record.instance_id
            )));
        }
        Ok(connections)
    }

    /// `Ok` when the server of `place` answers: PING as the admin user
    /// (`admin`, the password read once for all the servers), or
    /// memcached's `version`. Not answering (yet) is `Retryable`.
    async fn probe(
        &self,
        record: &Record,
        place: usize,
        admin: Option<&SecretString>,
    ) -> Result<(), ProviderError> {
        let port = record.nodes[place].port;
        let tls = self.tls_of(record)?;
        if !record.engine.speaks_redis() {
            return memcached_version(port, tls.as_deref()).await.map(drop).map_err(|e| {
                ProviderError::Retryable(format!(
                    "memcached for instance {} does not answer on {HOST}:{port}: {e}",
                    record.instance_id
                ))
            });
        }
        let Some(password) = admin else {
            return Err(ProviderError::Permanent(format!(
                "instance {}: a {} server is probed as the admin, whose password was not read",
                record.instance_id,
                record.engine.as_str()
            )));
        };
        let mut connection = self.node_connection(record, place, tls.as_deref(), password).await?;
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

    /// `Done` when every server runs and answers and the instance is whole
    /// (replicas attached, cluster formed, a restore taken in), `Working`
    /// while it is not yet.
    async fn answer(&self, record: &Record, paths: &Paths) -> Result<Progress, ProviderError> {
        // One read of the admin password for every server's probe.
        let admin =
            if record.engine.speaks_redis() { Some(self.admin_password(record).await?) } else { None };
        for place in 0..record.nodes.len() {
            match self.probe(record, place, admin.as_ref()).await {
                Ok(()) => {}
                Err(ProviderError::Retryable(why)) => {
                    return Ok(Progress::Working {
                        detail: format!(
                            "starting {} on {HOST}:{} ({why})",
                            record.engine.as_str(),
                            record.nodes[place].port
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        self.converge(record.clone(), paths).await
    }

    /// Starts every server of the instance that does not run (writing its
    /// configuration first) and waits up to [`START_WAIT`] for all of them
    /// to answer, then for the instance to be whole. A server whose port
    /// was taken, recorded or between picking and binding, starts again on
    /// a new one.
    async fn start(&self, mut record: Record, paths: &Paths) -> Result<Progress, ProviderError> {
        let binary = self.binary(record.engine)?;
        let admin =
            if record.engine.speaks_redis() { Some(self.admin_password(&record).await?) } else { None };
        let tls = self.tls_of(&record)?;
        create_dir(&paths.dir)?;
        if let Some(password) = &admin {
            // Only the first start writes users.acl: later ones find the users
            // the broker added since, saved there by ACL SAVE.
            if !paths.acl.exists() {
                let acl = initial_acl(&sha256_hex(password).await?);
                write_file(&paths.acl, acl.as_bytes())?;
            }
        }
        let mut attempts = vec![0usize; record.nodes.len()];
        let mut log_starts = vec![0u64; record.nodes.len()];
        for place in 0..record.nodes.len() {
            if self.node_pid(&record, &record.nodes[place], paths).is_none() {
                log_starts[place] = file_len(&paths.node(record.nodes[place].dir).log);
                attempts[place] = 1;
                self.launch(&mut record, place, paths, &binary, tls.as_deref(), false)?;
            }
        }
        let deadline = Instant::now() + START_WAIT;
        let mut answered = vec![false; record.nodes.len()];
        while answered.iter().any(|a| !a) {
            for place in 0..record.nodes.len() {
                if answered[place] {
                    continue;
                }
                let node = record.nodes[place].clone();
                let node_paths = paths.node(node.dir);
                if self.node_pid(&record, &node, paths).is_none() {
                    if attempts[place] > 0
                        && attempts[place] < PORT_ATTEMPTS
                        && read_from(&node_paths.log, log_starts[place]).contains(PORT_TAKEN)
                    {
                        tracing::warn!(
                            instance_id = %record.instance_id,
                            port = node.port,
                            "port was taken before the server bound it; trying another"
                        );
                        attempts[place] += 1;
                        log_starts[place] = file_len(&node_paths.log);
                        self.launch(&mut record, place, paths, &binary, tls.as_deref(), true)?;
                        continue;
                    }
                    if attempts[place] >= PORT_ATTEMPTS {
                        return Err(ProviderError::Retryable(format!(
                            "could not start {} for instance {}: {PORT_ATTEMPTS} ports in a row were taken \
                             before it could bind them",
                            record.engine.as_str(),
                            record.instance_id
                        )));
                    }
                    return Err(exited(&record, &node, &node_paths, log_starts[place]));
                }
                match self.probe(&record, place, admin.as_ref()).await {
                    Ok(()) => answered[place] = true,
                    Err(ProviderError::Retryable(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if answered.iter().all(|a| *a) {
                break;
            }
            if Instant::now() >= deadline {
                let waiting = answered.iter().position(|a| !a).unwrap_or(0);
                return Ok(Progress::Working {
                    detail: format!(
                        "starting {} on {HOST}:{}",
                        record.engine.as_str(),
                        record.nodes[waiting].port
                    ),
                });
            }
            sleep(POLL).await;
        }
        self.converge(record, paths).await
    }

    /// The record of a Redis OSS or Valkey instance, or `None` for Memcached,
    /// which has no users.
    fn with_users(&self, instance_id: &str) -> Result<Option<(Paths, Record)>, ProviderError> {
        let (paths, record) = self.existing(instance_id)?;
        Ok(record.engine.speaks_redis().then_some((paths, record)))
    }

    /// `ACL SAVE` on one server: the file is the instance's, shared.
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

    /// Runs `command` as the admin on every running server of a Redis OSS
    /// or Valkey instance, then saves the users once.
    async fn on_every_server(
        &self,
        record: &Record,
        paths: &Paths,
        also: &[SecretString],
        command: &redis::Cmd,
        what: &str,
        passwords: &[SecretString],
    ) -> Result<(), ProviderError> {
        let mut connections = self.admin_connections_trying(record, paths, also).await?;
        for (place, connection) in &mut connections {
            command.query_async::<redis::Value>(connection).await.map_err(|e| {
                redis_failure(
                    &format!("{what} (server {place} of instance {})", record.instance_id),
                    &e,
                    passwords,
                )
            })?;
        }
        if let Some((_, connection)) = connections.first_mut() {
            self.acl_save(connection, record).await?;
        }
        Ok(())
    }

    /// Sets `name` to `value` with CONFIG SET on every running server.
    async fn config_set_everywhere(
        &self,
        record: &Record,
        paths: &Paths,
        name: &str,
        value: &str,
    ) -> Result<(), ProviderError> {
        for (place, mut connection) in self.admin_connections(record, paths).await? {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| {
                    redis_failure(
                        &format!("could not set {name} on server {place} of instance {}", record.instance_id),
                        &e,
                        &[],
                    )
                })?;
        }
        Ok(())
    }

    /// Changes the number of replicas of an instance without cluster mode:
    /// new places start and follow the primary, the last replicas stop and
    /// their directories go. Anything else about the layout stays.
    async fn change_layout(
        &self,
        record: &mut Record,
        paths: &Paths,
        want: Layout,
    ) -> Result<Option<Progress>, ProviderError> {
        let have = Layout::of_record(record);
        if have == want {
            return Ok(None);
        }
        let id = &record.instance_id;
        if have.cluster_mode
            || want.cluster_mode
            || have.shards != want.shards
            || !record.engine.speaks_redis()
        {
            return Err(ProviderError::Permanent(format!(
                "instance {id} runs as {} locally and the plan asks for {}: laptop mode changes only the \
                 number of replicas in place; provision a new instance of the plan and restore it from \
                 a snapshot",
                have.describe(),
                want.describe()
            )));
        }
        if want.replicas > have.replicas {
            for _ in have.replicas..want.replicas {
                let dir = record.nodes.iter().map(|n| n.dir).max().unwrap_or(0) + 1;
                record.nodes.push(Node::new(0, true, dir));
            }
            write_record(paths, record)?;
            tracing::info!(instance_id = %id, replicas = want.replicas, "adding local replicas");
            return self.start(record.clone(), paths).await.map(Some);
        }
        let keep = 1 + usize::from(want.replicas);
        let gone: Vec<usize> = (keep..record.nodes.len()).collect();
        self.stop_places(record, paths, &gone).await?;
        for place in gone.iter().rev() {
            let dir = paths.node(record.nodes[*place].dir).dir;
            record.nodes.remove(*place);
            if dir != paths.dir {
                fs::remove_dir_all(&dir)
                    .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                    .map_err(|e| {
                        ProviderError::Retryable(format!("could not remove {}: {e}", dir.display()))
                    })?;
            }
        }
        write_record(paths, record)?;
        tracing::info!(instance_id = %id, replicas = want.replicas, "removed local replicas");
        Ok(None)
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
            // An earlier attempt made the instance: start what is not
            // running, and wait for it to be whole.
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
        let layout = Layout::of(spec);
        let mut record = Record {
            instance_id: spec.cache_key.clone(),
            engine: spec.engine,
            engine_version: spec.engine_version.clone(),
            nodes: layout.nodes(),
            cluster_mode: layout.cluster_mode,
            tls: self.tls,
            formed: false,
            legacy_port: None,
            legacy_pid: None,
            admin_secret: if spec.engine.speaks_redis() { spec.admin_secret.clone() } else { None },
            admin_user: spec.engine.speaks_redis().then(|| ADMIN_USER.to_string()),
            restoring: false,
            maxmemory_policy: spec.settings.maxmemory_policy.clone(),
            maxmemory_gb: serverless_limit(spec),
        };
        if record.tls {
            // Made (once per root) before any server needs it.
            self.tls_files()?;
        }
        if let Some(reference) = &spec.restore {
            self.place_snapshot(&record, reference, &paths)?;
            record.restoring = true;
        }
        tracing::info!(
            instance_id = %spec.cache_key,
            engine = spec.engine.as_str(),
            layout = %layout.describe(),
            tls = record.tls,
            "making a local cache"
        );
        self.start(record, &paths).await
    }

    async fn progress(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let (paths, record) = self.existing(instance_id)?;
        for node in &record.nodes {
            if self.node_pid(&record, node, &paths).is_none() {
                return Err(exited(&record, node, &paths.node(node.dir), 0));
            }
        }
        self.answer(&record, &paths).await
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
            // same data directories reads what redis-server wrote (its
            // append-only files, cluster state and users), on the same ports.
            self.binary(Engine::Valkey)?;
            self.stop(&record, &paths).await?;
            record.engine = Engine::Valkey;
            record.engine_version = spec.engine_version.clone();
            tracing::info!(instance_id = %spec.cache_key, "moving local cache from redis-server to valkey-server");
            return self.start(record, &paths).await;
        }
        // Only the version the platform asked for is recorded (and
        // reported in credentials): the servers are the laptop's. The
        // windows and the snapshot retention are ElastiCache's: a laptop
        // server has no maintenance and takes no daily snapshots.
        record.engine_version = spec.engine_version.clone();
        if record.engine.speaks_redis() && record.maxmemory_policy != spec.settings.maxmemory_policy {
            let policy = spec.settings.maxmemory_policy.as_deref().unwrap_or(DEFAULT_MAXMEMORY_POLICY);
            self.config_set_everywhere(&record, &paths, "maxmemory-policy", policy).await?;
            record.maxmemory_policy = spec.settings.maxmemory_policy.clone();
            tracing::info!(instance_id = %spec.cache_key, policy, "eviction policy set");
        }
        if record.engine.speaks_redis() && record.maxmemory_gb != serverless_limit(spec) {
            let limit = serverless_limit(spec).map_or("0".to_string(), |gb| format!("{gb}gb"));
            self.config_set_everywhere(&record, &paths, "maxmemory", &limit).await?;
            record.maxmemory_gb = serverless_limit(spec);
            tracing::info!(instance_id = %spec.cache_key, limit, "memory limit set");
        }
        write_record(&paths, &record)?;
        // New replicas start with the settings just recorded.
        let progress = self.change_layout(&mut record, &paths, Layout::of(spec)).await?;
        Ok(progress.unwrap_or(Progress::Done))
    }

    /// With `final_snapshot`, a Redis OSS or Valkey cache's data is saved
    /// as its final snapshot first (the servers started again for it when
    /// they are not running), which outlives the cache as ElastiCache's do.
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
                let record = read_record(&paths)?.unwrap_or(record);
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
        self.forget_children(instance_id);
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

    /// As ElastiCache's: the primary's place (the first server) and the
    /// reader's (the first replica) without cluster mode; a configuration
    /// endpoint (the first node: any node tells a cluster client the
    /// shards) in cluster mode; every node for Memcached. With TLS, the
    /// CA certificate clients trust.
    async fn endpoint(&self, instance_id: &str) -> Result<Endpoint, ProviderError> {
        let (_, record) = self.existing(instance_id)?;
        let tls = self.tls_of(&record)?;
        let nodes = match record.engine {
            Engine::Memcached => record.nodes.iter().map(|n| format!("{HOST}:{}", n.port)).collect(),
            _ => vec![],
        };
        let reader = match (record.cluster_mode, record.nodes.iter().find(|n| n.replica)) {
            (false, Some(replica)) => Some(HostPort { host: HOST.to_string(), port: replica.port }),
            _ => None,
        };
        Ok(Endpoint {
            nodes,
            reader,
            cluster_mode: record.cluster_mode,
            ca_certificate: tls.map(|tls| tls.ca_pem.clone()),
            ..Endpoint::single(HOST, record.nodes[0].port, record.tls)
        })
    }

    /// One node per server: named by the instance alone for a single
    /// server (as before instances had several), by its number within the
    /// instance otherwise; none when no cache was made.
    async fn nodes(&self, instance_id: &str) -> Result<Vec<CacheNode>, ProviderError> {
        let paths = Paths::of(&self.root, instance_id)?;
        let Some(record) = read_record(&paths)? else { return Ok(Vec::new()) };
        let single = record.nodes.len() == 1;
        Ok((0..record.nodes.len())
            .map(|n| CacheNode {
                cluster_id: record.instance_id.clone(),
                node_id: (!single).then(|| format!("{:04}", n + 1)),
            })
            .collect())
    }

    async fn put_user(&self, instance_id: &str, user: &CacheUser) -> Result<Progress, ProviderError> {
        let Some((paths, record)) = self.with_users(instance_id)? else { return Ok(Progress::Done) };
        check_username(&user.username)?;
        if user.passwords.is_empty() || user.passwords.iter().any(|p| p.expose_secret().is_empty()) {
            return Err(ProviderError::Permanent(format!(
                "user {} needs at least one password, and no empty one",
                user.username
            )));
        }
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
        let what = format!("could not set up user {} on instance {instance_id}", user.username);
        self.on_every_server(&record, &paths, &[], &setuser, &what, &user.passwords).await?;
        Ok(Progress::Done)
    }

    async fn delete_user(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError> {
        // A deleted instance took its users with it.
        if read_record(&Paths::of(&self.root, instance_id)?)?.is_none() {
            return Ok(Progress::Done);
        }
        let Some((paths, record)) = self.with_users(instance_id)? else { return Ok(Progress::Done) };
        check_username(username)?;
        // DELUSER also closes the user's open connections, so access ends now;
        // deleting a user that is not there deletes 0 users and is fine.
        let mut deluser = redis::cmd("ACL");
        deluser.arg("DELUSER").arg(username);
        let what = format!("could not delete user {username} on instance {instance_id}");
        self.on_every_server(&record, &paths, &[], &deluser, &what, &[]).await?;
        Ok(Progress::Done)
    }

    async fn user_progress(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError> {
        let Some((paths, record)) = self.with_users(instance_id)? else { return Ok(Progress::Done) };
        for (place, mut connection) in self.admin_connections(&record, &paths).await? {
            let found = redis::cmd("ACL")
                .arg("GETUSER")
                .arg(username)
                .query_async::<redis::Value>(&mut connection)
                .await
                .map_err(|e| {
                    redis_failure(
                        &format!(
                            "could not look up user {username} on server {place} of instance {instance_id}"
                        ),
                        &e,
                        &[],
                    )
                })?;
            if found == redis::Value::Nil {
                return Err(ProviderError::Retryable(format!(
                    "user {username} does not exist on server {place} of instance {instance_id}"
                )));
            }
        }
        Ok(Progress::Done)
    }

    async fn set_passwords(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        let (paths, record) = self.with_passwords(instance_id)?;
        let username = acl_name(principal)?;
        check_passwords(&username, passwords)?;
        // `resetpass` drops every password and keeps the user's rules, so
        // the user ends up accepted with exactly these.
        let mut setuser = redis::cmd("ACL");
        setuser.arg("SETUSER").arg(&username).arg("resetpass");
        for password in passwords {
            setuser.arg(format!(">{}", password.expose_secret()));
        }
        let what = format!("could not set the passwords of {username} on instance {instance_id}");
        self.on_every_server(&record, &paths, passwords, &setuser, &what, passwords).await?;
        if *principal == Principal::Admin && (record.nodes.len() > 1 || record.cluster_mode) {
            // Replicas log in to their primary as the admin: with the
            // newest password from now on.
            for (_, mut connection) in self.admin_connections_trying(&record, &paths, passwords).await? {
                set_primary_login(&mut connection, &record, &passwords[0]).await?;
            }
        }
        tracing::info!(instance_id, user = %username, passwords = passwords.len(), "passwords set");
        Ok(Progress::Done)
    }

    /// Logs in as the user with each password (a new connection each) on
    /// every running server, and counts the passwords the user holds:
    /// `Done` when every one works everywhere and there are no others.
    async fn passwords_progress(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        let (paths, record) = self.with_passwords(instance_id)?;
        let username = acl_name(principal)?;
        check_passwords(&username, passwords)?;
        let tls = self.tls_of(&record)?;
        for (place, mut connection) in self.admin_connections_trying(&record, &paths, passwords).await? {
            let port = record.nodes[place].port;
            for (n, password) in passwords.iter().enumerate() {
                let login = async {
                    let mut c = connect(port, tls.as_deref(), &username, password).await?;
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
                            "{username} is not accepted with password {} of {} on server {place} yet",
                            n + 1,
                            passwords.len()
                        ),
                    });
                }
            }
            let held = acl_password_count(&mut connection, &username).await.map_err(|e| {
                redis_failure(
                    &format!("could not look up {username} on instance {instance_id}"),
                    &e,
                    passwords,
                )
            })?;
            if held != Some(passwords.len()) {
                return Ok(Progress::Working {
                    detail: format!(
                        "{username} holds {} passwords on server {place}, not {}",
                        held.map_or("no".to_string(), |n| n.to_string()),
                        passwords.len()
                    ),
                });
            }
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
    fn with_passwords(&self, instance_id: &str) -> Result<(Paths, Record), ProviderError> {
        self.with_users(instance_id)?.ok_or_else(|| {
            ProviderError::Permanent(format!(
                "instance {instance_id} is Memcached, which has no passwords to rotate"
            ))
        })
    }
}

/// A serverless plan's data storage maximum, which a local server takes as
/// its memory limit.
fn serverless_limit(spec: &CacheSpec) -> Option<u32> {
    spec.plan.usage_limits.filter(|_| spec.plan.serverless).map(|l| l.data_storage_gb.maximum)
}
