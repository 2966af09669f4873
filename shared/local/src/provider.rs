//! Laptop mode's cache provider: real redis-server, valkey-server and memcached
//! processes on free 127.0.0.1 ports, one directory per instance under a root,
//! started detached so they outlive the broker and are adopted on its next start.
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
use broker_core::domain::{CacheUser, Endpoint, Engine};
use broker_core::ports::{CacheProvider, CacheSpec, Principal, Progress, ProviderError, SecretStore};

/// Every server listens here only: laptop mode is for the laptop.
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
            return self.answer(&record).await;
        }
        tracing::info!(
            instance_id,
            engine = record.engine.as_str(),
            "local cache server is not running; starting it again"
        );
        self.start(record, &paths).await
    }

    /// Stops the server of every instance under the root, keeping their data:
    /// a clean shutdown, and tests' clean-up. `adopt` starts them again.
    pub async fn stop_all(&self) {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "cannot list local caches to stop them");
                return;
            }
        };
        let mut running = Vec::new();
        for entry in entries.flatten() {
            let paths = Paths::in_dir(entry.path());
            let Ok(Some(record)) = read_record(&paths) else { continue };
            if let Some(pid) = self.running_pid(&record, &paths) {
                signal(pid, "TERM").await;
                running.push((record, paths, pid));
            }
        }
        // Every server got SIGTERM at once above, so they shut down in parallel.
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline
            && running.iter().any(|(record, paths, _)| self.running_pid(record, paths).is_some())
        {
            sleep(POLL).await;
        }
        for (record, paths, pid) in &running {
            if self.running_pid(record, paths).is_some() {
                tracing::warn!(
                    instance_id = %record.instance_id,
                    pid,
                    "local cache server ignored SIGTERM; killing it"
                );
                signal(*pid, "KILL").await;
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        while Instant::now() < deadline
            && running.iter().any(|(record, paths, _)| self.running_pid(record, paths).is_some())
        {
            sleep(POLL).await;
        }
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

    /// `Done` when a running server answers, `Working` while it does not yet.
    async fn answer(&self, record: &Record) -> Result<Progress, ProviderError> {
        match self.probe(record, None).await {
            Ok(()) => Ok(Progress::Done),
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
                write_file(&paths.conf, redis_config(paths, record.port)?.as_bytes())?;
            }
            let log_start = file_len(&paths.log);
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
                    Ok(()) => return Ok(Progress::Done),
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
                spec.instance_id
            )));
        }
        let _guard = self.lock(&spec.instance_id).await;
        let paths = Paths::of(&self.root, &spec.instance_id)?;
        if let Some(record) = read_record(&paths)? {
            if record.engine != spec.engine {
                return Err(ProviderError::Permanent(format!(
                    "instance {} already runs {} locally, not {}; delete it first",
                    spec.instance_id,
                    record.engine.as_str(),
                    spec.engine.as_str()
                )));
            }
            if self.running_pid(&record, &paths).is_some() {
                return self.answer(&record).await;
            }
            // An earlier attempt made the instance but its server is gone.
            return self.start(record, &paths).await;
        }
        if spec.engine.speaks_redis() && spec.admin_secret.is_none() {
            return Err(ProviderError::Permanent(format!(
                "instance {} needs an admin secret reference: {} has users",
                spec.instance_id,
                spec.engine.as_str()
            )));
        }
        // Before anything is written, so a missing binary leaves nothing behind.
        self.binary(spec.engine)?;
        let record = Record {
            instance_id: spec.instance_id.clone(),
            engine: spec.engine,
            engine_version: spec.engine_version.clone(),
            port: 0,
            pid: None,
            admin_secret: if spec.engine.speaks_redis() { spec.admin_secret.clone() } else { None },
            admin_user: spec.engine.speaks_redis().then(|| ADMIN_USER.to_string()),
        };
        self.start(record, &paths).await
    }

    async fn progress(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let (paths, record) = self.existing(instance_id)?;
        if self.running_pid(&record, &paths).is_some() {
            return self.answer(&record).await;
        }
        Err(exited(&record, &paths, 0))
    }

    async fn modify(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let _guard = self.lock(&spec.instance_id).await;
        let (paths, mut record) = self.existing(&spec.instance_id)?;
        if record.engine != spec.engine {
            return Err(ProviderError::Permanent(format!(
                "instance {} runs {}; changing the engine to {} is not supported",
                spec.instance_id,
                record.engine.as_str(),
                spec.engine.as_str()
            )));
        }
        // Laptop mode runs one process whatever the plan, so only the version
        // the platform asked for is recorded (and reported in credentials).
        record.engine_version = spec.engine_version.clone();
        write_record(&paths, &record)?;
        Ok(Progress::Done)
    }

    /// `final_snapshot` is ignored: laptop caches keep no snapshots, and a
    /// deleted one's data directory is removed outright. A snapshot that
    /// outlives its instance is an ElastiCache matter.
    async fn delete(&self, instance_id: &str, _final_snapshot: bool) -> Result<Progress, ProviderError> {
        let _guard = self.lock(instance_id).await;
        let paths = Paths::of(&self.root, instance_id)?;
        match read_record(&paths) {
            Ok(Some(record)) => self.stop(&record, &paths).await?,
            Ok(None) => {}
            // A record that cannot be parsed names no process to stop; the
            // directory still goes, or the instance could never be deleted.
            Err(ProviderError::Permanent(why)) => {
                tracing::warn!(instance_id, error = %why, "deleting a local cache without a readable record");
            }
            Err(e) => return Err(e),
        }
        self.children.lock().unwrap_or_else(PoisonError::into_inner).remove(instance_id);
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

// ---------------------------------------------------------------- records and paths

/// `instance.json`: what the provider needs to find an instance's server again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    instance_id: String,
    engine: Engine,
    engine_version: String,
    port: u16,
    /// The pid of the server last started; `server.pid` is the fallback.
    #[serde(default)]
    pid: Option<u32>,
    /// Reference into the secret store, never the password itself.
    #[serde(default)]
    admin_secret: Option<String>,
    #[serde(default)]
    admin_user: Option<String>,
}

/// The files of one instance.
struct Paths {
    dir: PathBuf,
    record: PathBuf,
    data: PathBuf,
    log: PathBuf,
    conf: PathBuf,
    acl: PathBuf,
    pidfile: PathBuf,
}

impl Paths {
    fn of(root: &Path, instance_id: &str) -> Result<Paths, ProviderError> {
        if instance_id.is_empty() {
            return Err(ProviderError::Permanent("an instance id is required".into()));
        }
        Ok(Paths::in_dir(root.join(dir_name(instance_id))))
    }

    fn in_dir(dir: PathBuf) -> Paths {
        Paths {
            record: dir.join("instance.json"),
            data: dir.join("data"),
            log: dir.join("server.log"),
            conf: dir.join("server.conf"),
            acl: dir.join("users.acl"),
            pidfile: dir.join("server.pid"),
            dir,
        }
    }
}

/// A directory name for an instance id: ASCII letters, digits and hyphens stay
/// (so GUIDs read as themselves); every other byte becomes `_xx` in hex. Two ids
/// never share a name, and no name is `.`, `..` or holds a `/`.
fn dir_name(instance_id: &str) -> String {
    let mut name = String::with_capacity(instance_id.len());
    for byte in instance_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("_{byte:02x}"));
        }
    }
    name
}

fn unknown(instance_id: &str) -> ProviderError {
    ProviderError::Permanent(format!("no local cache for instance {instance_id}"))
}

fn read_record(paths: &Paths) -> Result<Option<Record>, ProviderError> {
    match fs::read(&paths.record) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ProviderError::Permanent(format!(
                "{} is not a valid instance record ({e}); fix or remove it",
                paths.record.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProviderError::Retryable(format!("could not read {}: {e}", paths.record.display()))),
    }
}

fn write_record(paths: &Paths, record: &Record) -> Result<(), ProviderError> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| ProviderError::Permanent(format!("could not encode the instance record: {e}")))?;
    write_file(&paths.record, &json)
}

/// Writes `contents` readable by the owner only, through a temporary file and
/// a rename, so a reader never sees half a file.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), ProviderError> {
    let failed = |e: io::Error| ProviderError::Permanent(format!("could not write {}: {e}", path.display()));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(failed)?;
    fs::rename(&temporary, path).map_err(failed)
}

fn create_dir(path: &Path) -> Result<(), ProviderError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ProviderError::Permanent(format!("could not create {}: {e}", path.display())))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text of `path` from byte `offset` on ("" when there is none).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_to_end(&mut bytes));
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last lines `server.log` got since `offset`.
fn log_tail(path: &Path, offset: u64) -> String {
    let start = offset.max(file_len(path).saturating_sub(LOG_TAIL_BYTES));
    let text = read_from(path, start);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(server.log is empty)".into();
    }
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// The error for a server that is not running, quoting its log.
fn exited(record: &Record, paths: &Paths, log_start: u64) -> ProviderError {
    ProviderError::Permanent(format!(
        "{} for instance {} is not running (port {}); last lines of {}:\n{}",
        record.engine.as_str(),
        record.instance_id,
        record.port,
        paths.log.display(),
        log_tail(&paths.log, log_start)
    ))
}

// ---------------------------------------------------------------- processes

/// Which binary serves an engine, and how an operator gets it.
struct Binary {
    name: &'static str,
    env: &'static str,
    package: &'static str,
    install: &'static str,
}

fn binary_of(engine: Engine) -> Binary {
    match engine {
        Engine::Redis => Binary {
            name: "redis-server",
            env: "REDIS_SERVER_BIN",
            package: "redis-server",
            install: "apt-get install redis-server",
        },
        Engine::Valkey => Binary {
            name: "valkey-server",
            env: "VALKEY_SERVER_BIN",
            package: "valkey-server from bookworm-backports",
            install: "apt-get install -t bookworm-backports valkey-server",
        },
        Engine::Memcached => Binary {
            name: "memcached",
            env: "MEMCACHED_BIN",
            package: "memcached",
            install: "apt-get install memcached",
        },
    }
}

/// Finds the server binary of `engine`: `configured` (from `with_binary` or the
/// engine's environment variable) when set, a path as is and a bare name on
/// `path_var`; otherwise the engine's usual name on `path_var`.
fn resolve_binary(
    engine: Engine,
    configured: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf, ProviderError> {
    let binary = binary_of(engine);
    let missing = |what: String| {
        ProviderError::Permanent(format!(
            "{what}; install the {} package ({}) or set {} to the {} binary",
            binary.package, binary.install, binary.env, binary.name
        ))
    };
    let name = match configured.filter(|value| !value.is_empty()) {
        Some(value) if value.as_bytes().contains(&b'/') => {
            let path = PathBuf::from(value);
            return if is_executable(&path) {
                Ok(path)
            } else {
                Err(missing(format!(
                    "{} (the {} binary) is not an executable file",
                    path.display(),
                    binary.name
                )))
            };
        }
        Some(value) => PathBuf::from(value),
        None => PathBuf::from(binary.name),
    };
    path_var
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| missing(format!("{} was not found on PATH", name.display())))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts the server detached from the broker: its own process group (so a
/// Ctrl-C to the broker does not reach it), no stdin, output to server.log.
fn spawn(binary: &Path, record: &Record, paths: &Paths) -> Result<Child, ProviderError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.log)
        .map_err(|e| ProviderError::Permanent(format!("could not open {}: {e}", paths.log.display())))?;
    let errors = log
        .try_clone()
        .map_err(|e| ProviderError::Permanent(format!("could not open {}: {e}", paths.log.display())))?;
    let mut command = Command::new(binary);
    match record.engine {
        Engine::Redis | Engine::Valkey => {
            command.arg(&paths.conf);
        }
        Engine::Memcached => {
            let port = record.port.to_string();
            command.args(["-l", HOST, "-p", &port, "-U", "0", "-m", "64", "-P"]).arg(&paths.pidfile);
            // memcached refuses to run as root unless told which user to be.
            if running_as_root() {
                command.args(["-u", "root"]);
            }
        }
    }
    command
        .current_dir(&paths.data)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(errors)
        .process_group(0)
        .kill_on_drop(false);
    command.spawn().map_err(|e| {
        ProviderError::Permanent(format!(
            "could not start {} for instance {}: {e}",
            binary.display(),
            record.instance_id
        ))
    })
}

fn running_as_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs"; the effective one counts.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find(|line| line.starts_with("Uid:")).and_then(|line| line.split_whitespace().nth(2))
            == Some("0")
    })
}

/// The pid of the instance's server if it runs: the recorded pid, else the one
/// in the server's own pid file (which covers a start whose record was lost).
fn live_pid(record: &Record, paths: &Paths) -> Option<u32> {
    record
        .pid
        .into_iter()
        .chain(read_pidfile(&paths.pidfile))
        .find(|&pid| is_our_server(pid, record.port, &paths.conf))
}

fn read_pidfile(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True when `pid` is a live (not zombie) process that is one of our servers:
/// its command line names our config file (Redis before it renames itself),
/// our listen address (`redis-server 127.0.0.1:<port>` after), or our port
/// (memcached's `-p <port>`). This guards against a pid reused by another
/// process after ours died.
fn is_our_server(pid: u32, port: u16, conf: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else { return false };
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses: hence the last ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    match state {
        None | Some("X") => return false,
        // A killed multi-threaded server shows its main thread as a zombie
        // while the other threads still exit, holding its port and files: it
        // is gone only once they are. (Its command line is empty by then, so
        // it cannot be checked; a pid is not reused before it is reaped.)
        Some("Z") => return task_count(&proc_dir) > 1,
        Some(_) => {}
    }
    let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else { return false };
    let conf = conf.as_os_str().as_bytes();
    let port = port.to_string();
    let listen = format!("{HOST}:{port}");
    cmdline.split(|&b| b == 0).any(|arg| {
        arg == conf
            || arg == port.as_bytes()
            || arg.split(|&b| b == b' ').any(|word| word == listen.as_bytes())
    })
}

fn task_count(proc_dir: &Path) -> usize {
    fs::read_dir(proc_dir.join("task")).map_or(0, Iterator::count)
}

/// Sends `SIGname` to `pid` with kill(1): the crate has no libc binding, and a
/// process that is already gone is fine.
async fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(e) = sent {
        tracing::warn!(pid, signal = name, error = %e, "could not run kill");
    }
}

/// A port nobody listens on right now. The listener is dropped before the
/// server binds the port, so someone else may take it first: `start` retries.
fn free_port() -> Result<u16, ProviderError> {
    std::net::TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| ProviderError::Retryable(format!("could not find a free port on {HOST}: {e}")))
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((HOST, port)).is_ok()
}

// ---------------------------------------------------------------- configuration

/// `users.acl` before the first `ACL SAVE`: the default user is off (every
/// client must log in as a named user) and the admin is known by the SHA-256
/// of its password only.
fn initial_acl(admin_sha256_hex: &str) -> String {
    format!(
        "user default off resetpass nocommands\n\
         user {ADMIN_USER} on #{admin_sha256_hex} ~* &* +@all\n"
    )
}

/// `server.conf` for Redis OSS and Valkey (same format), rewritten at every
/// start because the port may change.
fn redis_config(paths: &Paths, port: u16) -> Result<String, ProviderError> {
    Ok(format!(
        "# Written by the broker's laptop mode at every start: edits are lost.\n\
         bind {HOST}\n\
         port {port}\n\
         protected-mode yes\n\
         daemonize no\n\
         supervised no\n\
         dir {data}\n\
         # The append-only file has every write, so data survives a restart or kill -9.\n\
         appendonly yes\n\
         save \"\"\n\
         aclfile {acl}\n\
         pidfile {pidfile}\n\
         logfile {log}\n",
        data = config_path(&paths.data)?,
        acl = config_path(&paths.acl)?,
        pidfile = config_path(&paths.pidfile)?,
        log = config_path(&paths.log)?,
    ))
}

/// A path as a double-quoted Redis config value.
fn config_path(path: &Path) -> Result<String, ProviderError> {
    match path.to_str() {
        Some(text) if !text.chars().any(|c| c.is_control() || c == '"' || c == '\\') => {
            Ok(format!("\"{text}\""))
        }
        _ => Err(ProviderError::Permanent(format!(
            "{} cannot go into a Redis config file: use a state directory whose path is \
             plain UTF-8 without quotes, backslashes or control characters",
            path.display()
        ))),
    }
}

/// The SHA-256 of the password in lowercase hex, as Redis ACLs take it (`#hex`).
/// The crate has no SHA-256 implementation, so `sha256sum` computes it, reading
/// the password from a pipe: it never touches a file or a command line.
async fn sha256_hex(password: &SecretString) -> Result<String, ProviderError> {
    let failed = |e: io::Error| {
        ProviderError::Permanent(format!(
            "could not hash the admin password with sha256sum (install coreutils): {e}"
        ))
    };
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(password.expose_secret().as_bytes()).await.map_err(failed)?;
        // Dropping `stdin` here closes the pipe: sha256sum sees the end of input.
    }
    let output = child.wait_with_output().await.map_err(failed)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if !output.status.success() || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ProviderError::Permanent(
            "sha256sum did not print a SHA-256 digest of the admin password".into(),
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// The ACL user a principal is.
fn acl_name(principal: &Principal) -> Result<String, ProviderError> {
    match principal {
        Principal::Admin => Ok(ADMIN_USER.to_string()),
        Principal::User(name) => {
            check_username(name)?;
            Ok(name.clone())
        }
    }
}

/// One or two passwords, none empty: what a rotation gives a user.
fn check_passwords(username: &str, passwords: &[SecretString]) -> Result<(), ProviderError> {
    if !passwords_fit(passwords) {
        return Err(ProviderError::Permanent(format!(
            "{username} needs one or two passwords, and no empty one"
        )));
    }
    Ok(())
}

/// How many passwords the ACL user holds (`ACL GETUSER` lists their
/// hashes); `None` when there is no such user.
async fn acl_password_count(
    connection: &mut MultiplexedConnection,
    username: &str,
) -> Result<Option<usize>, RedisError> {
    let found =
        redis::cmd("ACL").arg("GETUSER").arg(username).query_async::<redis::Value>(connection).await?;
    let fields: Vec<redis::Value> = match found {
        redis::Value::Nil => return Ok(None),
        redis::Value::Array(items) => items,
        redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Ok(Some(0)),
    };
    for pair in fields.chunks(2) {
        if let [key, value] = pair
            && redis::from_redis_value::<String>(key.clone()).is_ok_and(|k| k == "passwords")
        {
            return Ok(Some(match value {
                redis::Value::Array(items) => items.len(),
                _ => 0,
            }));
        }
    }
    Ok(Some(0))
}

fn check_username(username: &str) -> Result<(), ProviderError> {
    if username.is_empty() || username.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProviderError::Permanent(format!("{username:?} is not a valid cache user name")));
    }
    if username == "default" || username == ADMIN_USER {
        return Err(ProviderError::Permanent(format!(
            "the cache user name {username} is reserved for the broker"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- clients

/// A connection to the server on `port` as `username`.
async fn connect(
    port: u16,
    username: &str,
    password: &SecretString,
) -> Result<MultiplexedConnection, RedisError> {
    let info = ConnectionAddr::Tcp(HOST.to_string(), port).into_connection_info()?.set_redis_settings(
        RedisConnectionInfo::default().set_username(username).set_password(password.expose_secret()),
    );
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(info)?.get_multiplexed_async_connection_with_config(&config).await
}

/// A provider error for a failed Redis call: not reaching the server (refused,
/// timed out, dropped, still loading) is worth a retry, anything else is not.
/// Any of `passwords` the server quoted back is blanked out.
fn redis_failure(context: &str, error: &RedisError, passwords: &[SecretString]) -> ProviderError {
    let message = redact(&format!("{context}: {error}"), passwords);
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
            )
        );
    if transient { ProviderError::Retryable(message) } else { ProviderError::Permanent(message) }
}

/// `text` with every occurrence of each password replaced by `[redacted]`.
fn redact(text: &str, passwords: &[SecretString]) -> String {
    passwords
        .iter()
        .map(ExposeSecret::expose_secret)
        .filter(|password| !password.is_empty())
        .fold(text.to_string(), |text, password| text.replace(password, "[redacted]"))
}

/// memcached's answer to `version`, e.g. `VERSION 1.6.18`.
async fn memcached_version(port: u16) -> io::Result<String> {
    let ask = async {
        let mut stream = TcpStream::connect((HOST, port)).await?;
        stream.write_all(b"version\r\n").await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        if line.starts_with("VERSION ") {
            Ok(line.trim_end().to_string())
        } else {
            Err(io::Error::other(format!("unexpected answer {:?}", line.trim_end())))
        }
    };
    timeout(Duration::from_secs(2), ask)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer within 2 s")))
}

#[cfg(test)]
mod tests {
    //! Real redis-server, valkey-server and memcached processes on 127.0.0.1,
    //! each test under its own temporary root; a guard kills and reaps whatever
    //! a test leaves running, even when it fails.

    use super::*;
    use broker_core::domain::Plan;
    use broker_core::domain::credentials::{PASSWORD_LEN, generate_password};
    use broker_testing::MemorySecrets;
    use tokio::io::AsyncReadExt;

    const ADMIN_SECRET: &str = "laptop/admin";

    /// A provider with its own root and admin password. Dropping it SIGKILLs
    /// every server under that root, so a failing test leaves no process behind.
    struct Fixture {
        provider: LocalCacheProvider,
        secrets: Arc<MemorySecrets>,
        admin_password: SecretString,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let secrets = Arc::new(MemorySecrets::default());
            let admin_password = generate_password(PASSWORD_LEN);
            secrets.create(ADMIN_SECRET, &admin_password).await.unwrap();
            let provider = LocalCacheProvider::new(dir.path().join("caches"), secrets.clone());
            Fixture { provider, secrets, admin_password, dir }
        }

        /// Creates the instance, insists it is done, and returns its port.
        async fn created(&self, instance_id: &str, engine: Engine) -> u16 {
            assert_eq!(self.provider.create(&spec(instance_id, engine)).await, Ok(Progress::Done));
            self.provider.endpoint(instance_id).await.unwrap().port
        }

        fn record(&self, instance_id: &str) -> Record {
            self.provider.existing(instance_id).unwrap().1
        }

        fn running_pid(&self, instance_id: &str) -> Option<u32> {
            let (paths, record) = self.provider.existing(instance_id).unwrap();
            self.provider.running_pid(&record, &paths)
        }

        fn pid(&self, instance_id: &str) -> u32 {
            self.running_pid(instance_id).expect("the server runs")
        }

        /// SIGKILLs the instance's server and waits until it is gone.
        async fn kill(&self, instance_id: &str) -> u32 {
            let pid = self.pid(instance_id);
            kill_now(pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.running_pid(instance_id).is_some() {
                assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
                sleep(POLL).await;
            }
            pid
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let Ok(entries) = fs::read_dir(self.provider.root()) else { return };
            for entry in entries.flatten() {
                let paths = Paths::in_dir(entry.path());
                if let Ok(Some(record)) = read_record(&paths)
                    && let Some(pid) = self.provider.running_pid(&record, &paths)
                {
                    kill_now(pid);
                }
            }
            // Reaps what was killed: no zombie outlives the test.
            let mut children = self.provider.children.lock().unwrap_or_else(PoisonError::into_inner);
            let deadline = std::time::Instant::now() + KILL_WAIT;
            while std::time::Instant::now() < deadline {
                children.retain(|_, child| matches!(child.try_wait(), Ok(None)));
                if children.is_empty() {
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
    }

    fn kill_now(pid: u32) {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }

    fn plan() -> Plan {
        serde_json::from_value(serde_json::json!({
            "id": "plan-small",
            "service_id": "service-redis",
            "name": "small",
            "description": "one small node",
            "node_type": "cache.t4g.micro",
            "engine_versions": ["7.0"],
            "default_engine_version": "7.0",
            "maximum_polling_duration": 3600,
            "metadata": { "displayName": "Small" }
        }))
        .unwrap()
    }

    fn spec(instance_id: &str, engine: Engine) -> CacheSpec {
        CacheSpec {
            instance_id: instance_id.to_string(),
            engine,
            engine_version: "7.0".into(),
            plan: plan(),
            admin_secret: engine.speaks_redis().then(|| ADMIN_SECRET.to_string()),
            tags: vec![],
            spare_users: vec![],
        }
    }

    /// A binding user with the plan's rules.
    fn user(name: &str, passwords: &[&SecretString]) -> CacheUser {
        CacheUser {
            username: name.to_string(),
            passwords: passwords.iter().map(|p| (*p).clone()).collect(),
            access_string: plan().access_string,
        }
    }

    /// The server's own answer to `AUTH name password` on a fresh connection:
    /// `+OK`, or the error line (`-WRONGPASS ...`) as the server words it.
    async fn auth_reply(port: u16, name: &str, password: &SecretString) -> String {
        let mut stream = TcpStream::connect((HOST, port)).await.unwrap();
        let auth = format!("AUTH {name} {}\r\n", password.expose_secret());
        stream.write_all(auth.as_bytes()).await.unwrap();
        read_until(&mut stream, "\r\n").await.trim_end().to_string()
    }

    fn is_wrongpass(reply: &str) -> bool {
        reply.starts_with("-WRONGPASS")
    }

    /// Reads until the text read so far ends with `suffix`, or the peer closes
    /// ("" then, or what came before).
    async fn read_until(stream: &mut TcpStream, suffix: &str) -> String {
        let mut text = Vec::new();
        let mut buffer = [0u8; 512];
        while !text.ends_with(suffix.as_bytes()) {
            let read = timeout(Duration::from_secs(2), stream.read(&mut buffer))
                .await
                .expect("an answer within 2 s");
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buffer[..n]),
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// A plain TCP session logged in as `name`, to watch the server close it.
    async fn session(port: u16, name: &str, password: &SecretString) -> TcpStream {
        let mut stream = TcpStream::connect((HOST, port)).await.unwrap();
        let auth = format!("AUTH {name} {}\r\n", password.expose_secret());
        stream.write_all(auth.as_bytes()).await.unwrap();
        assert_eq!(read_until(&mut stream, "\r\n").await, "+OK\r\n");
        stream
    }

    /// The server's answer to PING on `session`; "" once it closed the session.
    async fn ping(session: &mut TcpStream) -> String {
        let _ = session.write_all(b"PING\r\n").await;
        read_until(session, "\r\n").await
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(files_under(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
    }

    // ------------------------------------------------------------ Redis OSS and Valkey

    /// The whole life of a binding user on a Redis-protocol engine.
    async fn users_get_exactly_the_passwords_they_are_given(engine: Engine) {
        let f = Fixture::new().await;
        let port = f.created("cache-1", engine).await;
        assert_eq!(f.provider.endpoint("cache-1").await, Ok(Endpoint::single("127.0.0.1", port, false)));

        // The default user is off: nothing runs without logging in, and nobody
        // logs in as it.
        let mut anonymous = redis::Client::open(format!("redis://{HOST}:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let refused = redis::cmd("PING").query_async::<String>(&mut anonymous).await.unwrap_err();
        assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
        let refused = auth_reply(port, "default", &SecretString::from("guess")).await;
        assert!(is_wrongpass(&refused), "{refused}");

        let first = generate_password(PASSWORD_LEN);
        assert_eq!(f.provider.put_user("cache-1", &user("app", &[&first])).await, Ok(Progress::Done));
        assert_eq!(f.provider.user_progress("cache-1", "app").await, Ok(Progress::Done));
        let mut app = connect(port, "app", &first).await.unwrap();
        redis::cmd("SET").arg("greeting").arg("hello").query_async::<()>(&mut app).await.unwrap();
        let greeting: String = redis::cmd("GET").arg("greeting").query_async(&mut app).await.unwrap();
        assert_eq!(greeting, "hello");
        let refused = redis::cmd("FLUSHALL").query_async::<()>(&mut app).await.unwrap_err();
        assert_eq!(refused.code(), Some("NOPERM"), "the plan's -@dangerous applies: {refused}");

        // A rotation: both passwords work during the grace period, then only the new one.
        let second = generate_password(PASSWORD_LEN);
        assert_eq!(
            f.provider.put_user("cache-1", &user("app", &[&second, &first])).await,
            Ok(Progress::Done)
        );
        assert_eq!(auth_reply(port, "app", &first).await, "+OK");
        assert_eq!(auth_reply(port, "app", &second).await, "+OK");
        assert_eq!(f.provider.put_user("cache-1", &user("app", &[&second])).await, Ok(Progress::Done));
        let refused = auth_reply(port, "app", &first).await;
        assert!(is_wrongpass(&refused), "{refused}");
        assert_eq!(auth_reply(port, "app", &second).await, "+OK");

        // Deleting the user ends its access at once, open sessions included.
        let mut open = session(port, "app", &second).await;
        assert_eq!(ping(&mut open).await, "+PONG\r\n");
        assert_eq!(f.provider.delete_user("cache-1", "app").await, Ok(Progress::Done));
        let refused = auth_reply(port, "app", &second).await;
        assert!(is_wrongpass(&refused), "{refused}");
        assert_eq!(ping(&mut open).await, "", "the deleted user's session is closed");
        assert!(matches!(f.provider.user_progress("cache-1", "app").await, Err(ProviderError::Retryable(_))));
        assert_eq!(f.provider.delete_user("cache-1", "app").await, Ok(Progress::Done));
    }

    #[tokio::test]
    async fn redis_refuses_the_default_user_and_admits_users_with_exactly_their_current_passwords() {
        users_get_exactly_the_passwords_they_are_given(Engine::Redis).await;
    }

    #[tokio::test]
    async fn valkey_refuses_the_default_user_and_admits_users_with_exactly_their_current_passwords() {
        users_get_exactly_the_passwords_they_are_given(Engine::Valkey).await;
    }

    /// A rotation through `set_passwords`: both passwords during the grace
    /// period, then only the new one; the user's rules stay as they were.
    #[tokio::test]
    async fn a_rotation_gives_a_user_two_passwords_then_one_and_keeps_its_rules() {
        let f = Fixture::new().await;
        let port = f.created("cache-1", Engine::Valkey).await;
        let app = Principal::User("app".into());
        let (old, new) = (generate_password(PASSWORD_LEN), generate_password(PASSWORD_LEN));
        f.provider.put_user("cache-1", &user("app", &[&old])).await.unwrap();

        let both = [new.clone(), old.clone()];
        assert_eq!(f.provider.set_passwords("cache-1", &app, &both).await, Ok(Progress::Done));
        assert_eq!(f.provider.passwords_progress("cache-1", &app, &both).await, Ok(Progress::Done));
        assert_eq!(auth_reply(port, "app", &old).await, "+OK");
        let mut c = connect(port, "app", &new).await.unwrap();
        let refused = redis::cmd("FLUSHALL").query_async::<()>(&mut c).await.unwrap_err();
        assert_eq!(refused.code(), Some("NOPERM"), "the plan's rules survive a rotation: {refused}");
        // Checking for one password while two are held is not done yet.
        let just_new = [new.clone()];
        assert!(matches!(
            f.provider.passwords_progress("cache-1", &app, &just_new).await,
            Ok(Progress::Working { .. })
        ));

        assert_eq!(f.provider.set_passwords("cache-1", &app, &just_new).await, Ok(Progress::Done));
        assert_eq!(f.provider.set_passwords("cache-1", &app, &just_new).await, Ok(Progress::Done));
        assert_eq!(f.provider.passwords_progress("cache-1", &app, &just_new).await, Ok(Progress::Done));
        assert!(is_wrongpass(&auth_reply(port, "app", &old).await));
        assert_eq!(auth_reply(port, "app", &new).await, "+OK");
        let detail = match f.provider.passwords_progress("cache-1", &app, &both).await {
            Ok(Progress::Working { detail }) => detail,
            other => panic!("{other:?}"),
        };
        assert!(!detail.contains(old.expose_secret()) && !detail.contains(new.expose_secret()));
    }

    /// The admin's password rotates too; the provider still gets in when the
    /// secret's current version is the one just removed.
    #[tokio::test]
    async fn a_rotation_of_the_admin_password_keeps_the_provider_in() {
        let f = Fixture::new().await;
        let port = f.created("cache-1", Engine::Redis).await;
        let new = generate_password(PASSWORD_LEN);
        let both = [new.clone(), f.admin_password.clone()];
        assert_eq!(f.provider.set_passwords("cache-1", &Principal::Admin, &both).await, Ok(Progress::Done));
        assert_eq!(
            f.provider.passwords_progress("cache-1", &Principal::Admin, &both).await,
            Ok(Progress::Done)
        );
        let just_new = [new.clone()];
        assert_eq!(
            f.provider.set_passwords("cache-1", &Principal::Admin, &just_new).await,
            Ok(Progress::Done)
        );
        assert!(is_wrongpass(&auth_reply(port, ADMIN_USER, &f.admin_password).await));
        assert_eq!(auth_reply(port, ADMIN_USER, &new).await, "+OK");
        // Reserved and Memcached: refused, saying why.
        let reserved =
            f.provider.set_passwords("cache-1", &Principal::User("default".into()), &just_new).await;
        assert!(matches!(reserved, Err(ProviderError::Permanent(_))), "{reserved:?}");
        f.created("mc-1", Engine::Memcached).await;
        let memcached = f.provider.set_passwords("mc-1", &Principal::Admin, &just_new).await;
        assert!(
            matches!(&memcached, Err(ProviderError::Permanent(m)) if m.contains("Memcached")),
            "{memcached:?}"
        );
        let none = f.provider.set_passwords("cache-1", &Principal::Admin, &[]).await;
        assert!(matches!(none, Err(ProviderError::Permanent(_))), "{none:?}");
    }

    #[tokio::test]
    async fn creating_twice_keeps_the_same_server_on_the_same_port() {
        let f = Fixture::new().await;
        let port = f.created("twice", Engine::Redis).await;
        let pid = f.pid("twice");

        assert_eq!(f.provider.create(&spec("twice", Engine::Redis)).await, Ok(Progress::Done));
        assert_eq!(f.provider.adopt("twice").await, Ok(Progress::Done));
        assert_eq!(f.provider.progress("twice").await, Ok(Progress::Done));

        assert_eq!(f.provider.endpoint("twice").await.unwrap().port, port);
        assert_eq!(f.pid("twice"), pid);
        let Err(ProviderError::Permanent(why)) = f.provider.create(&spec("twice", Engine::Valkey)).await
        else {
            panic!("another engine under the same id must be refused");
        };
        assert!(why.contains("already runs redis"), "{why}");
    }

    #[tokio::test]
    async fn deleting_stops_the_server_and_removes_its_directory() {
        let f = Fixture::new().await;
        let port = f.created("doomed", Engine::Redis).await;
        let pid = f.pid("doomed");
        let dir = f.provider.root().join("doomed");
        for file in ["instance.json", "data", "server.log", "server.conf", "users.acl"] {
            assert!(dir.join(file).exists(), "{file} is there while the instance lives");
        }

        assert_eq!(f.provider.delete("doomed", false).await, Ok(Progress::Done));

        assert!(!dir.exists());
        assert!(!is_our_server(pid, port, &dir.join("server.conf")));
        assert!(TcpStream::connect((HOST, port)).await.is_err(), "nothing answers on {port}");
        assert_eq!(f.provider.delete("doomed", false).await, Ok(Progress::Done));
        assert_eq!(
            f.provider.progress("doomed").await,
            Err(ProviderError::Permanent("no local cache for instance doomed".into()))
        );
    }

    #[tokio::test]
    async fn adopting_a_killed_server_starts_it_again_with_its_data_and_users() {
        let f = Fixture::new().await;
        let port = f.created("phoenix", Engine::Redis).await;
        let password = generate_password(PASSWORD_LEN);
        f.provider.put_user("phoenix", &user("app", &[&password])).await.unwrap();
        let mut app = connect(port, "app", &password).await.unwrap();
        redis::cmd("SET").arg("kept").arg("across restarts").query_async::<()>(&mut app).await.unwrap();

        let old_pid = f.kill("phoenix").await;
        let Err(ProviderError::Permanent(why)) = f.provider.progress("phoenix").await else {
            panic!("a dead server is a failure");
        };
        assert!(why.contains("is not running") && why.contains("server.log"), "{why}");

        assert_eq!(f.provider.adopt("phoenix").await, Ok(Progress::Done));

        assert_ne!(f.pid("phoenix"), old_pid);
        let port = f.provider.endpoint("phoenix").await.unwrap().port;
        let mut app = connect(port, "app", &password).await.unwrap();
        let kept: String = redis::cmd("GET").arg("kept").query_async(&mut app).await.unwrap();
        assert_eq!(kept, "across restarts");
    }

    #[tokio::test]
    async fn a_restarted_broker_adopts_running_servers_without_restarting_them() {
        let f = Fixture::new().await;
        f.created("survivor", Engine::Redis).await;
        f.created("survivor-mc", Engine::Memcached).await;
        let pids = [f.pid("survivor"), f.pid("survivor-mc")];
        let restarted = LocalCacheProvider::new(f.provider.root().to_path_buf(), f.secrets.clone());

        for (id, pid) in ["survivor", "survivor-mc"].into_iter().zip(pids) {
            assert_eq!(restarted.adopt(id).await, Ok(Progress::Done), "{id}");
            assert_eq!(restarted.progress(id).await, Ok(Progress::Done), "{id}");
            let (paths, record) = restarted.existing(id).unwrap();
            assert_eq!(restarted.running_pid(&record, &paths), Some(pid), "{id} kept its server");
        }
        let port = restarted.endpoint("survivor").await.unwrap().port;
        assert_eq!(restarted.delete("survivor", false).await, Ok(Progress::Done));
        assert!(TcpStream::connect((HOST, port)).await.is_err(), "the adopted server was stopped");
    }

    #[tokio::test]
    async fn adopting_moves_to_a_new_port_when_someone_took_the_old_one() {
        let f = Fixture::new().await;
        let old_port = f.created("moved", Engine::Valkey).await;
        f.kill("moved").await;
        let squatter = std::net::TcpListener::bind((HOST, old_port)).unwrap();

        assert_eq!(f.provider.adopt("moved").await, Ok(Progress::Done));

        let new_port = f.provider.endpoint("moved").await.unwrap().port;
        assert_ne!(new_port, old_port);
        assert_eq!(f.record("moved").port, new_port);
        assert_eq!(auth_reply(new_port, ADMIN_USER, &f.admin_password).await, "+OK");
        drop(squatter);
    }

    #[tokio::test]
    async fn creating_again_after_the_server_died_starts_it_again() {
        let f = Fixture::new().await;
        f.created("retried", Engine::Memcached).await;
        let old_pid = f.kill("retried").await;

        assert_eq!(f.provider.create(&spec("retried", Engine::Memcached)).await, Ok(Progress::Done));

        assert_ne!(f.pid("retried"), old_pid);
    }

    #[tokio::test]
    async fn stop_all_stops_every_server_but_keeps_their_data_for_adoption() {
        let f = Fixture::new().await;
        f.created("first", Engine::Redis).await;
        f.created("second", Engine::Memcached).await;

        f.provider.stop_all().await;

        for id in ["first", "second"] {
            assert_eq!(f.running_pid(id), None, "{id} is stopped");
            assert!(f.provider.root().join(id).join("instance.json").exists(), "{id} is kept");
            assert_eq!(f.provider.adopt(id).await, Ok(Progress::Done), "{id} comes back");
        }
    }

    #[tokio::test]
    async fn no_password_reaches_a_file_or_an_error_message() {
        let f = Fixture::new().await;
        f.created("secretive", Engine::Redis).await;
        let password = generate_password(PASSWORD_LEN);
        f.provider.put_user("secretive", &user("app", &[&password])).await.unwrap();
        let mut bad = user("other", &[&password]);
        bad.access_string = "+@all no-such-rule".into();

        let Err(ProviderError::Permanent(why)) = f.provider.put_user("secretive", &bad).await else {
            panic!("Redis rejects an unknown rule");
        };

        assert!(why.contains("no-such-rule"), "{why}");
        assert!(!why.contains(password.expose_secret()), "{why}");
        let files = files_under(f.provider.root());
        assert!(files.iter().any(|file| file.ends_with("users.acl")));
        for file in files {
            let bytes = fs::read(&file).unwrap();
            for secret in [&f.admin_password, &password] {
                assert!(!contains(&bytes, secret.expose_secret()), "{} holds a password", file.display());
            }
        }
        let acl = fs::read_to_string(f.provider.root().join("secretive/users.acl")).unwrap();
        let admin_hash = sha256_hex(&f.admin_password).await.unwrap();
        assert!(acl.contains(&format!("#{admin_hash}")), "{acl}");
        assert_eq!(f.record("secretive").admin_secret.as_deref(), Some(ADMIN_SECRET));
        assert_eq!(f.record("secretive").admin_user.as_deref(), Some(ADMIN_USER));
    }

    #[tokio::test]
    async fn a_missing_admin_secret_is_a_permanent_error() {
        let f = Fixture::new().await;
        f.secrets.delete(ADMIN_SECRET).await.unwrap();

        let created = f.provider.create(&spec("keyless", Engine::Redis)).await;

        assert_eq!(
            created,
            Err(ProviderError::Permanent(format!("the admin secret {ADMIN_SECRET} does not exist")))
        );
    }

    // ------------------------------------------------------------ Memcached

    #[tokio::test]
    async fn memcached_stores_and_returns_values_until_deleted_then_its_port_is_closed() {
        let f = Fixture::new().await;
        let port = f.created("mc", Engine::Memcached).await;
        let mut client = TcpStream::connect((HOST, port)).await.unwrap();
        client.write_all(b"set greeting 0 0 5\r\nhello\r\n").await.unwrap();
        assert_eq!(read_until(&mut client, "\r\n").await, "STORED\r\n");
        client.write_all(b"get greeting\r\n").await.unwrap();
        assert_eq!(read_until(&mut client, "END\r\n").await, "VALUE greeting 0 5\r\nhello\r\nEND\r\n");
        drop(client);

        assert_eq!(f.provider.delete("mc", false).await, Ok(Progress::Done));

        assert!(TcpStream::connect((HOST, port)).await.is_err(), "nothing answers on {port}");
    }

    #[tokio::test]
    async fn memcached_has_no_users_so_user_calls_change_nothing() {
        let f = Fixture::new().await;
        f.created("mc-users", Engine::Memcached).await;
        let password = generate_password(PASSWORD_LEN);

        assert_eq!(f.provider.put_user("mc-users", &user("app", &[&password])).await, Ok(Progress::Done));
        assert_eq!(f.provider.user_progress("mc-users", "app").await, Ok(Progress::Done));
        assert_eq!(f.provider.delete_user("mc-users", "app").await, Ok(Progress::Done));
        assert_eq!(f.provider.progress("mc-users").await, Ok(Progress::Done));
    }

    #[tokio::test]
    async fn modifying_records_the_new_version_and_keeps_the_server() {
        let f = Fixture::new().await;
        f.created("versioned", Engine::Memcached).await;
        let pid = f.pid("versioned");
        let mut newer = spec("versioned", Engine::Memcached);
        newer.engine_version = "1.6".into();

        assert_eq!(f.provider.modify(&newer).await, Ok(Progress::Done));

        assert_eq!(f.record("versioned").engine_version, "1.6");
        assert_eq!(f.pid("versioned"), pid);
    }

    // ------------------------------------------------------------ errors and helpers

    #[tokio::test]
    async fn a_missing_binary_is_a_permanent_error_naming_the_package_to_install() {
        let f = Fixture::new().await;
        let provider = LocalCacheProvider::new(f.dir.path().join("other"), f.secrets.clone())
            .with_binary(Engine::Valkey, f.dir.path().join("no-such-valkey-server"));

        let Err(ProviderError::Permanent(why)) = provider.create(&spec("v", Engine::Valkey)).await else {
            panic!("a missing binary cannot be retried away");
        };

        assert!(why.contains("valkey-server") && why.contains("bookworm-backports"), "{why}");
        assert!(!provider.root().join("v").exists(), "nothing is left behind");
    }

    /// An executable shell script standing in for a server binary.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn a_port_taken_before_the_server_binds_it_is_retried_on_another() {
        let f = Fixture::new().await;
        let unlucky = script(
            f.dir.path(),
            "unlucky-memcached",
            "if [ ! -e \"$0.tried\" ]; then : > \"$0.tried\"\n\
             echo 'failed to listen on one of interface(s) 127.0.0.1: Address already in use' >&2\n\
             exit 71; fi\n\
             exec memcached \"$@\"",
        );
        let provider = LocalCacheProvider::new(f.dir.path().join("other"), f.secrets.clone())
            .with_binary(Engine::Memcached, unlucky);

        let created = provider.create(&spec("unlucky", Engine::Memcached)).await;
        let log = fs::read_to_string(provider.root().join("unlucky/server.log")).unwrap_or_default();
        provider.stop_all().await;

        assert_eq!(created, Ok(Progress::Done));
        assert!(log.contains(PORT_TAKEN), "the first attempt failed: {log}");
    }

    #[tokio::test]
    async fn a_server_that_exits_at_once_fails_permanently_quoting_its_log() {
        let f = Fixture::new().await;
        let broken =
            script(f.dir.path(), "broken-redis", "echo '*** FATAL CONFIG FILE ERROR ***' >&2; exit 1");
        let provider = LocalCacheProvider::new(f.dir.path().join("other"), f.secrets.clone())
            .with_binary(Engine::Redis, broken);

        let created = provider.create(&spec("broken", Engine::Redis)).await;

        let Err(ProviderError::Permanent(why)) = created else { panic!("{created:?}") };
        assert!(why.contains("FATAL CONFIG FILE ERROR") && why.contains("is not running"), "{why}");
        assert!(!why.contains(f.admin_password.expose_secret()));
    }

    #[test]
    fn binaries_missing_from_path_name_their_debian_package_and_variable() {
        let empty = tempfile::tempdir().unwrap();
        for (engine, install, variable) in [
            (Engine::Redis, "apt-get install redis-server", "REDIS_SERVER_BIN"),
            (Engine::Valkey, "apt-get install -t bookworm-backports valkey-server", "VALKEY_SERVER_BIN"),
            (Engine::Memcached, "apt-get install memcached", "MEMCACHED_BIN"),
        ] {
            let found = resolve_binary(engine, None, Some(empty.path().into()));
            let Err(ProviderError::Permanent(why)) = found else { panic!("{found:?}") };
            assert!(why.contains(install) && why.contains(variable), "{why}");
        }
    }

    #[test]
    fn a_configured_binary_wins_over_the_usual_name() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("my-redis");
        fs::write(&binary, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();

        assert_eq!(resolve_binary(Engine::Redis, Some(binary.clone().into()), None), Ok(binary.clone()));
        assert_eq!(
            resolve_binary(Engine::Redis, Some("my-redis".into()), Some(dir.path().into())),
            Ok(binary)
        );
    }

    #[tokio::test]
    async fn unknown_instances_are_permanent_errors_except_for_deletes() {
        let f = Fixture::new().await;
        let unknown = Err(ProviderError::Permanent("no local cache for instance nobody".into()));
        let password = generate_password(PASSWORD_LEN);

        assert_eq!(f.provider.progress("nobody").await, unknown);
        assert_eq!(f.provider.adopt("nobody").await, unknown);
        assert_eq!(f.provider.modify(&spec("nobody", Engine::Redis)).await, unknown);
        assert_eq!(f.provider.put_user("nobody", &user("app", &[&password])).await, unknown);
        assert_eq!(f.provider.user_progress("nobody", "app").await, unknown);
        assert!(f.provider.endpoint("nobody").await.is_err());
        assert_eq!(f.provider.delete("nobody", false).await, Ok(Progress::Done));
        assert_eq!(f.provider.delete_user("nobody", "app").await, Ok(Progress::Done));
    }

    #[tokio::test]
    async fn spare_users_are_refused_since_binds_make_users_at_once() {
        let f = Fixture::new().await;
        assert!(f.provider.users_change_at_once());
        let mut s = spec("spares", Engine::Redis);
        s.spare_users = vec![user("s-1", &[&generate_password(PASSWORD_LEN)])];
        let err = f.provider.create(&s).await.unwrap_err();
        assert!(matches!(&err, ProviderError::Permanent(m) if m.contains("no spare users")), "{err:?}");
        assert!(!f.provider.root().join(dir_name("spares")).exists(), "nothing is made");
    }

    #[test]
    fn the_default_and_admin_users_are_reserved() {
        for name in ["default", ADMIN_USER, "", "two words"] {
            assert!(matches!(check_username(name), Err(ProviderError::Permanent(_))), "{name:?}");
        }
        assert_eq!(check_username("binding-1"), Ok(()));
    }

    #[test]
    fn instance_ids_become_distinct_filesystem_safe_directory_names() {
        let guid = "6f1c2a9e-0b7d-4c1e-9a53-2d1f0e8b7c64";
        assert_eq!(dir_name(guid), guid);
        assert_ne!(dir_name("a/b"), dir_name("a_b"));
        for id in [".", "..", "../etc", "a b", "x/y"] {
            let name = dir_name(id);
            assert!(!name.contains('/') && !name.contains('.') && !name.is_empty(), "{id} -> {name}");
        }
        assert!(Paths::of(Path::new("/tmp"), "").is_err());
    }

    #[test]
    fn redaction_blanks_every_password_out_of_a_message() {
        let password = SecretString::from("hunter2hunter2");
        assert_eq!(
            redact("ERR bad modifier '>hunter2hunter2'", &[password]),
            "ERR bad modifier '>[redacted]'"
        );
    }

    #[tokio::test]
    async fn admin_passwords_are_hashed_the_way_redis_acls_expect() {
        let digest = sha256_hex(&SecretString::from("abc")).await.unwrap();
        assert_eq!(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_process_that_is_not_our_server_is_not_taken_for_it() {
        let me = std::process::id();
        assert!(!is_our_server(me, 1, Path::new("/nonexistent/server.conf")));
        assert!(!is_our_server(u32::MAX, 1, Path::new("/nonexistent/server.conf")));
    }
}
