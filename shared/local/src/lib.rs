//! Laptop-mode adapters: everything under one state directory, no AWS account.
//! `store` (SQLite), `queue` (durable SQLite job queue), `secrets` (SQLite
//! secret store with version stages), `provider` (real redis-server,
//! valkey-server and memcached processes on free 127.0.0.1 ports).

pub mod provider;
pub mod queue;
pub mod secrets;
pub mod store;

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

/// How long a write waits for another connection's transaction before giving
/// up: long enough to ride out a busy moment, short enough to answer a request.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database file could not be opened: what was being done, where, and
/// the cause (an io error, or SQLite's).
pub(crate) struct OpenError {
    pub what: String,
    pub cause: String,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

/// Opens (or creates) the SQLite database at `path` in WAL mode, its
/// directory made readable by its owner only (0700) and the file too (0600):
/// the state directory holds records, jobs and secrets. SQLite would create
/// the file with the process umask (often world readable); creating it first
/// fixes its mode, and SQLite gives its journal and WAL files the mode of the
/// database file. A file an older run left with a wider mode is tightened.
pub(crate) fn open_private_db(path: &Path) -> Result<Connection, OpenError> {
    let io = |what: &str, at: &Path| {
        let what = format!("cannot {what} {}", at.display());
        move |e: std::io::Error| OpenError { what, cause: e.to_string() }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io("create", parent))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(io("restrict", path))?;
    let sqlite = |e: rusqlite::Error| OpenError {
        what: format!("cannot open {}", path.display()),
        cause: e.to_string(),
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .map_err(sqlite)?;
    Ok(conn)
}

/// Runs `f` with an adapter's SQLite connection on the blocking pool, so SQLite
/// never blocks the async runtime. The outer `Err` says how the call was lost
/// ("panicked" or "was cancelled"); each adapter turns it into its own error.
pub(crate) async fn on_blocking_pool<T, E, F>(
    conn: &Arc<Mutex<Connection>>,
    f: F,
) -> Result<Result<T, E>, &'static str>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        // A panic while the lock was held dropped its transaction, which
        // rolled back, so the connection behind a poisoned lock is sound.
        let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    })
    .await
    .map_err(|e| if e.is_panic() { "panicked" } else { "was cancelled" })
}
