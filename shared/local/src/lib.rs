//! Laptop-mode adapters: everything under one state directory, no AWS account.
//! `store` (SQLite), `queue` (durable SQLite job queue), `secrets` (SQLite
//! secret store with version stages), `provider` (real redis-server,
//! valkey-server and memcached processes on free 127.0.0.1 ports).

pub mod charts;
pub mod metrics;
pub mod provider;
pub mod queue;
pub mod secrets;
pub mod store;

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::Connection;

/// How long a write waits for another connection's transaction before giving
/// up: long enough to ride out a busy moment, short enough to answer a request.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database file could not be opened: what was being done, where, and
/// the cause (an io error, or SQLite's).
#[derive(Debug)]
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

/// How long a read waits on another connection (only a WAL recovery or a
/// checkpoint makes a reader wait) before it gives way to the blocking pool.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// An adapter's database: one writer connection and, for a file, a few
/// read-only connections.
///
/// Writes run on tokio's blocking pool behind the writer's mutex: they may
/// wait on `busy_timeout` for another process's transaction. A point read
/// (one row by its key, a few microseconds) runs in the calling task on the
/// first idle reader, with no thread hop: WAL mode never makes a reader wait
/// for a writer, so it cannot stall the runtime behind a write. When every
/// reader is busy, or the database lives in memory (one connection is the
/// whole database), the read goes to the blocking pool on the writer. A
/// reader sees every write that returned before the read began. Clones share
/// the connections.
#[derive(Clone)]
pub(crate) struct Db {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<[Mutex<Connection>]>,
}

impl Db {
    /// A database with one connection for reads and writes: one in memory
    /// (the connection is the whole database), or one that is written more
    /// than read (the job queue).
    pub fn single(conn: Connection) -> Db {
        Db { writer: Arc::new(Mutex::new(conn)), readers: Arc::from(Vec::new()) }
    }

    /// The database file at `path`, whose schema `writer` has made: opens one
    /// reader per core (2 to 8), each refusing writes (`query_only`).
    pub fn file(writer: Connection, path: &Path) -> Result<Db, OpenError> {
        let sqlite = |e: rusqlite::Error| OpenError {
            what: format!("cannot open a reader of {}", path.display()),
            cause: e.to_string(),
        };
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        let readers = (0..count)
            .map(|_| {
                let conn = Connection::open(path).map_err(sqlite)?;
                conn.busy_timeout(READ_BUSY_TIMEOUT).map_err(sqlite)?;
                conn.pragma_update(None, "query_only", "ON").map_err(sqlite)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, OpenError>>()?;
        Ok(Db { writer: Arc::new(Mutex::new(writer)), readers: Arc::from(readers) })
    }

    /// Runs `f` with the writer on the blocking pool. The outer `Err` says how
    /// the call was lost ("panicked" or "was cancelled"); each adapter turns
    /// it into its own error.
    pub async fn write<T, E, F>(&self, f: F) -> Result<Result<T, E>, &'static str>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| if e.is_panic() { "panicked" } else { "was cancelled" })
    }

    /// Runs the read `f` on an idle reader in this task, or on the writer on
    /// the blocking pool when no reader is idle. `f` must only read: a reader
    /// refuses writes.
    pub async fn read<T, E, F>(&self, f: F) -> Result<Result<T, E>, &'static str>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        match self.read_here(f) {
            Ok(done) => done,
            Err(f) => self.write(move |conn| f(conn)).await,
        }
    }

    /// Runs `f` on the first idle reader, or gives it back when none is idle.
    fn read_here<T, E, F>(&self, f: F) -> Result<Result<Result<T, E>, &'static str>, F>
    where
        F: FnOnce(&Connection) -> Result<T, E>,
    {
        let idle = self.readers.iter().find_map(|reader| match reader.try_lock() {
            Ok(conn) => Some(conn),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        });
        match idle {
            // A panic in `f` is the caller's lost call, as on the blocking pool.
            Some(conn) => Ok(std::panic::catch_unwind(AssertUnwindSafe(|| f(&conn))).map_err(|_| "panicked")),
            None => Err(f),
        }
    }
}

/// A panic while a lock was held dropped its transaction, which rolled back,
/// so the connection behind a poisoned lock is sound.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::thread::{self, ThreadId};

    use super::*;

    fn file_db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open_private_db(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        (Db::file(conn, &path).unwrap(), dir)
    }

    async fn insert(db: &Db, v: i64) {
        db.write(move |c| c.execute("INSERT INTO t VALUES (?1)", [v]).map(drop)).await.unwrap().unwrap();
    }

    /// The thread a read ran on, and the sum of `t` it saw.
    async fn sum(db: &Db) -> (ThreadId, i64) {
        db.read(|c| {
            let sum = c.query_row("SELECT COALESCE(SUM(v), 0) FROM t", [], |r| r.get(0))?;
            Ok::<_, rusqlite::Error>((thread::current().id(), sum))
        })
        .await
        .unwrap()
        .unwrap()
    }

    #[tokio::test]
    async fn a_read_runs_in_the_calling_task_and_sees_every_write_that_returned() {
        let (db, _dir) = file_db();
        insert(&db, 2).await;
        insert(&db, 3).await;
        assert_eq!(sum(&db).await, (thread::current().id(), 5));
    }

    #[tokio::test]
    async fn a_read_while_every_reader_is_busy_goes_to_the_blocking_pool() {
        let (db, _dir) = file_db();
        insert(&db, 7).await;
        let held: Vec<_> = db.readers.iter().map(|r| r.lock().unwrap()).collect();
        let (on, seen) = sum(&db).await;
        assert_ne!(on, thread::current().id(), "no reader was idle");
        assert_eq!(seen, 7);
        drop(held);
        assert_eq!(sum(&db).await.0, thread::current().id());
    }

    #[tokio::test]
    async fn a_database_in_memory_reads_on_its_one_connection() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let db = Db::single(conn);
        insert(&db, 4).await;
        assert_eq!(sum(&db).await.1, 4);
    }

    #[tokio::test]
    async fn a_reader_refuses_writes() {
        let (db, _dir) = file_db();
        let refused = db.read(|c| c.execute("INSERT INTO t VALUES (1)", [])).await.unwrap();
        assert!(refused.is_err(), "a reader wrote");
        assert_eq!(sum(&db).await.1, 0);
    }

    #[tokio::test]
    async fn a_read_that_panics_is_lost_and_its_reader_serves_the_next() {
        let (db, _dir) = file_db();
        insert(&db, 1).await;
        let lost = db.read(|_| -> Result<(), rusqlite::Error> { panic!("a read went wrong") }).await;
        assert_eq!(lost, Err("panicked"));
        assert_eq!(sum(&db).await, (thread::current().id(), 1));
    }
}
