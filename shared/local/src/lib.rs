//! Laptop-mode adapters: everything under one state directory, no AWS account.
//! `store` (SQLite), `queue` (durable SQLite job queue), `secrets` (SQLite
//! secret store with version stages), `provider` (real redis-server,
//! valkey-server and memcached processes on free 127.0.0.1 ports).

pub mod provider;
pub mod queue;
pub mod secrets;
pub mod store;

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

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
