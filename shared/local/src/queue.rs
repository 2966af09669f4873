//! The laptop-mode job queue: owns a durable SQLite queue of worker jobs that
//! behaves like SQS with a redrive policy (delays, visibility timeouts,
//! receive counts, a dead-letter table).
//!
//! Jobs survive a restart; a job received but never acknowledged (the worker
//! crashed mid-step) comes back when its visibility timeout ends, and one that
//! keeps coming back is parked in `dead_letters` instead of looping forever.

use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::Notify;

use broker_core::ports::{Job, JobQueue, QueueError};

/// The longest delay SQS allows; longer ones are cut to it, as the port says.
pub const MAX_DELAY_SECS: u32 = 900;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    body           TEXT NOT NULL,
    visible_at_ms  INTEGER NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    enqueued_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_visibility ON jobs (visible_at_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    id            INTEGER PRIMARY KEY,
    body          TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at_ms    INTEGER NOT NULL
);
";

/// A received job. `id` is what [`LocalQueue::ack`] takes once the job is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub job: Job,
    /// How many times the job has been received, this time included.
    pub receive_count: u32,
    /// When it was enqueued, in ms since the epoch.
    pub enqueued_at_ms: i64,
}

/// The durable job queue of laptop mode. Clones share the database and wake
/// each other's waiters.
#[derive(Clone)]
pub struct LocalQueue {
    db: crate::Db,
    max_receives: u32,
    enqueued: Arc<Notify>,
}

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue").field("max_receives", &self.max_receives).finish_non_exhaustive()
    }
}

impl LocalQueue {
    /// Opens (or creates) the queue at `path`. A job is delivered at most
    /// `max_receives` times (at least once) before it is dead-lettered.
    pub fn open(path: &Path, max_receives: u32) -> Result<LocalQueue, QueueError> {
        let conn = crate::open_private_db(path).map_err(|e| QueueError(e.to_string()))?;
        LocalQueue::with_schema(conn, max_receives)
    }

    /// A queue that lives only as long as the value.
    pub fn in_memory(max_receives: u32) -> Result<LocalQueue, QueueError> {
        LocalQueue::with_schema(Connection::open_in_memory().map_err(unavailable)?, max_receives)
    }

    fn with_schema(conn: Connection, max_receives: u32) -> Result<LocalQueue, QueueError> {
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(LocalQueue {
            db: crate::Db::single(conn),
            // Zero would dead-letter every job unseen.
            max_receives: max_receives.max(1),
            enqueued: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` with the connection on the blocking pool, so SQLite never
    /// blocks the async runtime.
    async fn run<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, QueueError> + Send + 'static,
    {
        self.db.write(f).await.unwrap_or_else(|how| Err(QueueError(format!("a queue call {how}"))))
    }

    /// Takes the oldest visible job and hides it for `visibility_timeout`, as
    /// SQS does; `None` when no job is visible. A job received `max_receives`
    /// times already, or a body that is not a job, goes to the dead letters
    /// and the next job is tried.
    pub async fn receive(&self, visibility_timeout: Duration) -> Result<Option<Delivery>, QueueError> {
        let max_receives = self.max_receives;
        let hide_ms = i64::try_from(visibility_timeout.as_millis()).unwrap_or(i64::MAX / 4);
        self.run(move |conn| take_next(conn, max_receives, hide_ms)).await
    }

    /// Deletes a received job: the worker is done with it.
    pub async fn ack(&self, id: i64) -> Result<(), QueueError> {
        self.run(move |conn| {
            conn.execute("DELETE FROM jobs WHERE id = ?1", [id]).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    /// The dead-lettered jobs, oldest first. Bodies that are not jobs stay in
    /// the table for a person to look at but are not listed.
    pub async fn dead_letters(&self) -> Result<Vec<Job>, QueueError> {
        self.run(|conn| {
            let mut stmt = conn.prepare("SELECT body FROM dead_letters ORDER BY id").map_err(unavailable)?;
            let bodies = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            Ok(bodies.iter().filter_map(|b| serde_json::from_str(b).ok()).collect())
        })
        .await
    }

    /// Jobs not yet acknowledged nor dead-lettered: visible, delayed and in
    /// flight alike.
    pub async fn len(&self) -> Result<usize, QueueError> {
        self.run(|conn| {
            conn.query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0)).map_err(unavailable)
        })
        .await
    }

    pub async fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len().await? == 0)
    }

    /// Returns when a job is enqueued, when the earliest pending job becomes
    /// visible, or after `max`, whichever comes first: the worker loop calls it
    /// when `receive` found nothing, and so neither spins nor oversleeps.
    pub async fn wait(&self, max: Duration) {
        let mut enqueued = pin!(self.enqueued.notified());
        // Registering before looking at the table means an enqueue landing
        // between the look and the sleep still wakes us.
        enqueued.as_mut().enable();
        let due_in = match self.next_due_in().await {
            Ok(due_in) => due_in,
            Err(e) => {
                tracing::warn!(error = %e, "cannot see when the next job is due");
                None
            }
        };
        let nap = due_in.map_or(max, |d| d.min(max));
        if nap.is_zero() {
            return;
        }
        tokio::select! {
            () = enqueued => {}
            () = tokio::time::sleep(nap) => {}
        }
    }

    /// How long until the earliest pending job is visible (zero if one is).
    async fn next_due_in(&self) -> Result<Option<Duration>, QueueError> {
        let earliest: Option<i64> = self
            .run(|conn| {
                conn.query_row("SELECT MIN(visible_at_ms) FROM jobs", [], |row| row.get(0))
                    .map_err(unavailable)
            })
            .await?;
        Ok(earliest.map(|at| {
            // One millisecond more, so a worker woken at the due time finds it
            // visible despite rounding.
            let ms = at.saturating_sub(now_ms()).saturating_add(1).max(0);
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        }))
    }
}

#[async_trait]
impl JobQueue for LocalQueue {
    async fn enqueue(&self, job: &Job, delay_secs: u32) -> Result<(), QueueError> {
        let body = serde_json::to_string(job)
            .map_err(|_| QueueError(format!("cannot encode the job of operation {}", job.operation_id)))?;
        let delay_ms = i64::from(delay_secs.min(MAX_DELAY_SECS)) * 1000;
        self.run(move |conn| {
            let now = now_ms();
            // The same job already waiting (never received) absorbs this one,
            // due at the earlier of the two times: a heal or a restart that
            // enqueues a job again never starts a second chain of polls.
            let merged = conn
                .execute(
                    "UPDATE jobs SET visible_at_ms = MIN(visible_at_ms, ?2)
                     WHERE body = ?1 AND receive_count = 0",
                    params![body, now + delay_ms],
                )
                .map_err(unavailable)?;
            if merged == 0 {
                conn.execute(
                    "INSERT INTO jobs (body, visible_at_ms, receive_count, enqueued_at_ms)
                     VALUES (?1, ?2, 0, ?3)",
                    params![body, now + delay_ms, now],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await?;
        self.enqueued.notify_waiters();
        Ok(())
    }
}

/// Why a job left the queue for the dead letters; logged after the commit so
/// the log never reports a move that was rolled back.
struct DeadLetter {
    id: i64,
    operation_id: Option<String>,
    receive_count: u32,
    unreadable: bool,
}

impl DeadLetter {
    fn log(&self) {
        let operation_id = self.operation_id.as_deref().unwrap_or("unknown");
        if self.unreadable {
            tracing::error!(
                message_id = self.id,
                operation_id,
                "a queued message is not a job; moved it to the dead letters"
            );
        } else {
            tracing::error!(
                message_id = self.id,
                operation_id,
                receive_count = self.receive_count,
                "job of operation {operation_id} was received {} times without being \
                 acknowledged; moved it to the dead letters",
                self.receive_count
            );
        }
    }
}

/// One transaction: skip over jobs that must be dead-lettered, then hide and
/// return the first deliverable one. IMMEDIATE takes the write lock up front,
/// so two consumers of one file never receive the same job.
fn take_next(conn: &mut Connection, max_receives: u32, hide_ms: i64) -> Result<Option<Delivery>, QueueError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    let now = now_ms();
    let mut dead = Vec::new();
    let delivery = loop {
        let next = tx
            .query_row(
                "SELECT id, body, receive_count, enqueued_at_ms FROM jobs WHERE visible_at_ms <= ?1
                 ORDER BY id LIMIT 1",
                [now],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(unavailable)?;
        let Some((id, body, received, enqueued_at_ms)) = next else {
            break None;
        };
        let receive_count = received.saturating_add(1);
        match serde_json::from_str::<Job>(&body) {
            Ok(job) if receive_count <= max_receives => {
                tx.execute(
                    "UPDATE jobs SET receive_count = ?2, visible_at_ms = ?3 WHERE id = ?1",
                    params![id, receive_count, now.saturating_add(hide_ms)],
                )
                .map_err(unavailable)?;
                break Some(Delivery { id, job, receive_count, enqueued_at_ms });
            }
            parsed => {
                bury(&tx, id, &body, received, now)?;
                let unreadable = parsed.is_err();
                let operation_id = match parsed {
                    Ok(job) => Some(job.operation_id),
                    Err(_) => operation_id_of(&body),
                };
                dead.push(DeadLetter { id, operation_id, receive_count: received, unreadable });
            }
        }
    };
    tx.commit().map_err(unavailable)?;
    dead.iter().for_each(DeadLetter::log);
    Ok(delivery)
}

/// Moves a job to the dead letters, keeping its id so the two can be matched.
fn bury(tx: &Transaction<'_>, id: i64, body: &str, received: u32, now: i64) -> Result<(), QueueError> {
    tx.execute(
        "INSERT OR REPLACE INTO dead_letters (id, body, receive_count, dead_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![id, body, received, now],
    )
    .map_err(unavailable)?;
    tx.execute("DELETE FROM jobs WHERE id = ?1", [id]).map_err(unavailable)?;
    Ok(())
}

/// The operation a malformed body names, if it names one: worth a try so the
/// log says which operation got stuck.
fn operation_id_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("operation_id")?.as_str().map(str::to_string)
}

/// Now, in ms since the epoch (the unit of the queue's columns).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn unavailable(e: rusqlite::Error) -> QueueError {
    QueueError(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn job(n: u32) -> Job {
        Job {
            v: Job::VERSION,
            operation_id: format!("op-{n}"),
            instance_id: format!("i-{n}"),
            binding_id: None,
        }
    }

    const HIDE: Duration = Duration::from_secs(30);

    /// The worker's side of the contract: receive and acknowledge.
    struct Receiver(LocalQueue);

    #[async_trait::async_trait]
    impl broker_testing::contract::queue::Receiver for Receiver {
        async fn take_visible(&self) -> Vec<Job> {
            let mut jobs = Vec::new();
            while let Some(d) = self.0.receive(HIDE).await.unwrap() {
                self.0.ack(d.id).await.unwrap();
                jobs.push(d.job);
            }
            jobs
        }
    }

    async fn open() -> (LocalQueue, Receiver, ()) {
        let q = LocalQueue::in_memory(3).unwrap();
        (q.clone(), Receiver(q), ())
    }

    broker_testing::queue_contract!(open);

    #[tokio::test]
    async fn visible_jobs_are_received_oldest_first() {
        let q = LocalQueue::in_memory(3).unwrap();
        for n in 1..=3 {
            q.enqueue(&job(n), 0).await.unwrap();
        }
        for n in 1..=3 {
            let d = q.receive(HIDE).await.unwrap().unwrap();
            assert_eq!((d.job, d.receive_count), (job(n), 1));
        }
        assert_eq!(q.receive(HIDE).await.unwrap(), None, "received jobs are hidden");
        assert_eq!(q.len().await.unwrap(), 3, "until they are acknowledged");
    }

    #[tokio::test]
    async fn a_delayed_job_is_invisible_until_its_delay_passes() {
        let q = LocalQueue::in_memory(3).unwrap();
        q.enqueue(&job(1), 1).await.unwrap();
        q.enqueue(&job(2), 0).await.unwrap();
        let first = q.receive(HIDE).await.unwrap().unwrap();
        assert_eq!(first.job, job(2), "the delayed job does not hold up the others");
        assert_eq!(q.receive(HIDE).await.unwrap(), None);

        let started = Instant::now();
        q.wait(Duration::from_secs(10)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900), "woke early: {waited:?}");
        assert!(waited < Duration::from_secs(3), "overslept: {waited:?}");
        assert_eq!(q.receive(HIDE).await.unwrap().unwrap().job, job(1));
    }

    #[tokio::test]
    async fn an_unacknowledged_job_comes_back_after_its_visibility_timeout() {
        let q = LocalQueue::in_memory(3).unwrap();
        q.enqueue(&job(1), 0).await.unwrap();
        let first = q.receive(Duration::from_millis(100)).await.unwrap().unwrap();
        assert_eq!(q.receive(HIDE).await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let again = q.receive(HIDE).await.unwrap().unwrap();
        assert_eq!((again.id, again.job, again.receive_count), (first.id, job(1), 2));
    }

    #[tokio::test]
    async fn an_acknowledged_job_is_gone() {
        let q = LocalQueue::in_memory(3).unwrap();
        q.enqueue(&job(1), 0).await.unwrap();
        let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
        q.ack(d.id).await.unwrap();
        assert_eq!(q.receive(Duration::ZERO).await.unwrap(), None);
        assert!(q.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_job_received_max_receives_times_is_dead_lettered_and_not_delivered_again() {
        let q = LocalQueue::in_memory(2).unwrap();
        q.enqueue(&job(1), 0).await.unwrap();
        q.enqueue(&job(2), 0).await.unwrap();
        for count in 1..=2 {
            let d = q.receive(Duration::ZERO).await.unwrap().unwrap();
            assert_eq!((d.job, d.receive_count), (job(1), count));
        }
        let next = q.receive(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(next.job, job(2), "the dead job is skipped over, the next one delivered");
        q.ack(next.id).await.unwrap();
        assert_eq!(q.receive(Duration::ZERO).await.unwrap(), None);
        assert_eq!(q.dead_letters().await.unwrap(), vec![job(1)]);
        assert!(q.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_job_is_dead_lettered() {
        let q = LocalQueue::in_memory(3).unwrap();
        q.run(|conn| {
            conn.execute(
                "INSERT INTO jobs (body, visible_at_ms, receive_count, enqueued_at_ms)
                 VALUES ('{\"operation_id\": 7}', 0, 0, 0)",
                [],
            )
            .map_err(unavailable)
        })
        .await
        .unwrap();
        q.enqueue(&job(1), 0).await.unwrap();
        assert_eq!(q.receive(HIDE).await.unwrap().unwrap().job, job(1));
        let buried: i64 = q
            .run(|conn| {
                conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0)).map_err(unavailable)
            })
            .await
            .unwrap();
        assert_eq!(buried, 1);
        assert_eq!(q.dead_letters().await.unwrap(), vec![], "only jobs are listed");
    }

    #[tokio::test]
    async fn jobs_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("queue.db");
        {
            let q = LocalQueue::open(&path, 3).unwrap();
            q.enqueue(&job(1), 0).await.unwrap();
            q.enqueue(&job(2), 0).await.unwrap();
            q.receive(Duration::ZERO).await.unwrap().unwrap();
        }
        let q = LocalQueue::open(&path, 3).unwrap();
        let d = q.receive(HIDE).await.unwrap().unwrap();
        assert_eq!((d.job, d.receive_count), (job(1), 2), "receive counts survive too");
        assert_eq!(q.receive(HIDE).await.unwrap().unwrap().job, job(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_worker_wakes_promptly_on_enqueue() {
        let q = LocalQueue::in_memory(3).unwrap();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                q.wait(Duration::from_secs(30)).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.enqueue(&job(1), 0).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    }

    #[tokio::test]
    async fn waiting_returns_at_once_when_a_job_is_visible_and_after_max_when_none_is() {
        let q = LocalQueue::in_memory(3).unwrap();
        let started = Instant::now();
        q.wait(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));

        q.enqueue(&job(1), 0).await.unwrap();
        let started = Instant::now();
        q.wait(Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn delays_are_capped_at_fifteen_minutes() {
        let q = LocalQueue::in_memory(3).unwrap();
        q.enqueue(&job(1), 3_600).await.unwrap();
        let due_in = q.next_due_in().await.unwrap().unwrap();
        assert!(due_in <= Duration::from_secs(900) + Duration::from_millis(5), "{due_in:?}");
        assert!(due_in > Duration::from_secs(899), "{due_in:?}");
    }

    #[tokio::test]
    async fn the_same_job_enqueued_again_while_waiting_is_merged_into_one() {
        let q = LocalQueue::in_memory(10).unwrap();
        q.enqueue(&job(77), 600).await.unwrap();
        q.enqueue(&job(77), 0).await.unwrap();
        assert_eq!(q.len().await.unwrap(), 1);
        // The merged job is due at the earlier time.
        let d = q.receive(Duration::from_secs(30)).await.unwrap().expect("due now");
        assert_eq!(d.job.operation_id, "op-77");
        // Once received, a new enqueue of the same job is a new message.
        q.enqueue(&job(77), 0).await.unwrap();
        assert_eq!(q.len().await.unwrap(), 2);
    }
}
