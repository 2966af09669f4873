//! The laptop-mode store: owns the SQLite file that holds the catalog
//! (services, plans) and the state (instances, bindings, operations).
//!
//! Each record is a JSON document of its domain struct, next to the few
//! columns queries need. Writes to versioned records are conditional on the
//! `version` the caller loaded and bump it, so a lost race is a
//! [`StoreError::Conflict`] instead of a silent overwrite.

use std::fmt::Display;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Params, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use broker_core::domain::{Binding, Instance, Operation, OperationState, Plan, Pool, Service, Sweep};
use broker_core::ports::{CatalogStore, PoolChange, StateStore, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services (
    id  TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    id  TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id         TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    expires_at INTEGER,
    doc        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
    instance_id TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    expires_at  INTEGER,
    doc         TEXT NOT NULL,
    PRIMARY KEY (instance_id, id)
);
CREATE TABLE IF NOT EXISTS operations (
    id          TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    binding_id  TEXT,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    expires_at  INTEGER,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_state ON operations (state);
CREATE TABLE IF NOT EXISTS pools (
    plan_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
-- The orphan sweep's one record.
CREATE TABLE IF NOT EXISTS sweep (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
-- Bumped by every write to the catalog, whichever process makes it (the
-- API's seed, `catalog apply`), so the API knows when to read it again.
CREATE TABLE IF NOT EXISTS catalog_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO catalog_version (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS services_inserted AFTER INSERT ON services
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS services_updated AFTER UPDATE ON services
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS services_deleted AFTER DELETE ON services
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS plans_inserted AFTER INSERT ON plans
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS plans_updated AFTER UPDATE ON plans
    BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS plans_deleted AFTER DELETE ON plans
    BEGIN UPDATE catalog_version SET version = version + 1; END;
";

/// The store of laptop mode: one SQLite database.
///
/// Writes run on tokio's blocking pool, so the async runtime keeps serving
/// requests meanwhile; point reads run on an idle reader connection in the
/// calling task ([`crate::Db`]). Clones share the connections.
///
/// The catalog's version is read again at most once per `catalog_recheck`
/// (a second): a catalog change written through this store shows at once,
/// another process's (`broker-api catalog apply`) within the second, and
/// `GET /v2/catalog` costs no query.
#[derive(Clone)]
pub struct SqliteStore {
    db: crate::Db,
    catalog_seen: Arc<Mutex<CatalogSeen>>,
    catalog_recheck: Duration,
}

/// How long a catalog version read from the file is taken as current.
const CATALOG_RECHECK: Duration = Duration::from_secs(1);

/// The catalog version last read and when; `writes` counts this store's
/// catalog writes, so that a read which began before one does not keep the
/// version it saw.
#[derive(Default)]
struct CatalogSeen {
    writes: u64,
    read: Option<(u64, Instant)>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, creating its directory and
    /// schema. WAL mode lets readers go on while a write commits.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_error = |e: crate::OpenError| StoreError::Unavailable(e.to_string());
        let conn = crate::open_private_db(path).map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(SqliteStore::over(crate::Db::file(conn, path).map_err(open_error)?))
    }

    /// A store that lives only as long as the value (tests, throwaway runs).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(SqliteStore::over(crate::Db::single(conn)))
    }

    fn over(db: crate::Db) -> SqliteStore {
        SqliteStore { db, catalog_seen: Arc::default(), catalog_recheck: CATALOG_RECHECK }
    }

    /// The same store, reading the catalog version again after `recheck`.
    #[cfg(test)]
    fn with_catalog_recheck(mut self, recheck: Duration) -> SqliteStore {
        self.catalog_recheck = recheck;
        self
    }

    fn catalog_seen(&self) -> std::sync::MutexGuard<'_, CatalogSeen> {
        self.catalog_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the catalog write `f`; the next `catalog_version` reads the file.
    async fn catalog_write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let written = self.run(f).await;
        let mut seen = self.catalog_seen();
        seen.writes += 1;
        seen.read = None;
        written
    }

    /// Runs `f` with the writer on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.write(f).await.unwrap_or_else(lost)
    }

    /// Runs the read `f` on a reader ([`crate::Db::read`]).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.read(f).await.unwrap_or_else(lost)
    }
}

fn lost<T>(how: &str) -> Result<T, StoreError> {
    Err(StoreError::Unavailable(format!("a store call {how}")))
}

/// Every write that touches more than one row takes the write lock at BEGIN,
/// so a second connection waits on `busy_timeout` instead of failing with a
/// stale snapshot half-way through.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)
}

/// SQLite's messages name tables and constraints, never bound values, so they
/// are safe to pass on.
fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn to_doc<T: Serialize>(record: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|_| StoreError::Unavailable(format!("cannot encode {what}")))
}

/// serde_json's messages may quote pieces of the document, so only the kind and
/// place of the problem are reported.
fn from_doc<T: DeserializeOwned>(doc: &str, what: impl Display) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| {
        StoreError::Unavailable(format!(
            "stored {what} cannot be read ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Column `i` of `row` as text, borrowed from SQLite: a record is decoded
/// from it without a copy.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// `what` names the record in an error, and is formatted only then.
fn query_one<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: impl Display,
) -> Result<Option<T>, StoreError> {
    // A cached statement: SQLite parses each query once per connection, not
    // once per read (a read of a record is a few microseconds; its parse was
    // as many again).
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let doc =
        stmt.query_row(params, |row| Ok(from_doc(text(row, 0)?, &what))).optional().map_err(unavailable)?;
    doc.transpose()
}

/// Two records read by one statement, and so from one snapshot, without a
/// transaction to begin and end: `sql` is a `UNION ALL` whose rows are
/// `(0, doc)` for the first record and `(1, doc)` for the second.
fn query_pair<A: DeserializeOwned, B: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    (first, second): (impl Display, impl Display),
) -> Result<(Option<A>, Option<B>), StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let mut rows = stmt.query(params).map_err(unavailable)?;
    let (mut a, mut b) = (None, None);
    while let Some(row) = rows.next().map_err(unavailable)? {
        let doc = text(row, 1).map_err(unavailable)?;
        match row.get::<_, i64>(0).map_err(unavailable)? {
            0 => a = Some(from_doc(doc, &first)?),
            _ => b = Some(from_doc(doc, &second)?),
        }
    }
    Ok((a, b))
}

fn instance_row(conn: &Connection, id: &str) -> Result<Option<Instance>, StoreError> {
    query_one(conn, "SELECT doc FROM instances WHERE id = ?1", [id], format_args!("service instance {id}"))
}

fn binding_row(conn: &Connection, instance_id: &str, id: &str) -> Result<Option<Binding>, StoreError> {
    query_one(
        conn,
        "SELECT doc FROM bindings WHERE instance_id = ?1 AND id = ?2",
        [instance_id, id],
        format_args!("service binding {id} of service instance {instance_id}"),
    )
}

fn operation_row(conn: &Connection, id: &str) -> Result<Option<Operation>, StoreError> {
    query_one(conn, "SELECT doc FROM operations WHERE id = ?1", [id], format_args!("operation {id}"))
}

fn query_all<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let docs = stmt
        .query_map(params, |row| row.get::<_, String>(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    docs.iter().map(|doc| from_doc(doc, what)).collect()
}

/// The `state` column, so `operations_in_progress` need not read every document.
fn state_column(state: OperationState) -> &'static str {
    match state {
        OperationState::InProgress => "in_progress",
        OperationState::Succeeded => "succeeded",
        OperationState::Failed => "failed",
    }
}

// ---------------------------------------------------------------- versioned rows

/// A record written under optimistic concurrency: what it is called in errors,
/// its version, and how its row is inserted or conditionally updated.
trait Versioned: Serialize {
    fn what(&self) -> String;
    fn set_version(&mut self, version: u64);
    /// Inserts the row unless its key is taken; the number of rows written.
    fn insert(&self, tx: &Transaction<'_>, doc: &str) -> rusqlite::Result<usize>;
    /// Bumps the row's version if it is still `expected`; the rows written.
    fn update(&self, tx: &Transaction<'_>, expected: u64, doc: &str) -> rusqlite::Result<usize>;
}

impl Versioned for Instance {
    fn what(&self) -> String {
        format!("service instance {}", self.id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn insert(&self, tx: &Transaction<'_>, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO instances (id, version, expires_at, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![self.id, self.version, self.expires_at, doc],
        )
    }
    fn update(&self, tx: &Transaction<'_>, expected: u64, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "UPDATE instances SET version = version + 1, expires_at = ?2, doc = ?3
             WHERE id = ?1 AND version = ?4",
            params![self.id, self.expires_at, doc, expected],
        )
    }
}

impl Versioned for Binding {
    fn what(&self) -> String {
        format!("service binding {} of service instance {}", self.id, self.instance_id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn insert(&self, tx: &Transaction<'_>, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO bindings (instance_id, id, version, expires_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (instance_id, id) DO NOTHING",
            params![self.instance_id, self.id, self.version, self.expires_at, doc],
        )
    }
    fn update(&self, tx: &Transaction<'_>, expected: u64, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "UPDATE bindings SET version = version + 1, expires_at = ?3, doc = ?4
             WHERE instance_id = ?1 AND id = ?2 AND version = ?5",
            params![self.instance_id, self.id, self.expires_at, doc, expected],
        )
    }
}

impl Versioned for Operation {
    fn what(&self) -> String {
        format!("operation {}", self.id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn insert(&self, tx: &Transaction<'_>, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO operations (id, instance_id, binding_id, state, version, expires_at, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO NOTHING",
            params![
                self.id,
                self.instance_id,
                self.binding_id,
                state_column(self.state),
                self.version,
                self.expires_at,
                doc
            ],
        )
    }
    fn update(&self, tx: &Transaction<'_>, expected: u64, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "UPDATE operations
             SET version = version + 1, instance_id = ?2, binding_id = ?3, state = ?4,
                 expires_at = ?5, doc = ?6
             WHERE id = ?1 AND version = ?7",
            params![
                self.id,
                self.instance_id,
                self.binding_id,
                state_column(self.state),
                self.expires_at,
                doc,
                expected
            ],
        )
    }
}

impl Versioned for Pool {
    fn what(&self) -> String {
        format!("the warm pool of plan {}", self.plan_id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn insert(&self, tx: &Transaction<'_>, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO pools (plan_id, version, doc) VALUES (?1, ?2, ?3) ON CONFLICT (plan_id) DO NOTHING",
            params![self.plan_id, self.version, doc],
        )
    }
    fn update(&self, tx: &Transaction<'_>, expected: u64, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "UPDATE pools SET version = version + 1, doc = ?2 WHERE plan_id = ?1 AND version = ?3",
            params![self.plan_id, doc, expected],
        )
    }
}

impl Versioned for Sweep {
    fn what(&self) -> String {
        "the orphan sweep's record".to_string()
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn insert(&self, tx: &Transaction<'_>, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO sweep (id, version, doc) VALUES (1, ?1, ?2) ON CONFLICT (id) DO NOTHING",
            params![self.version, doc],
        )
    }
    fn update(&self, tx: &Transaction<'_>, expected: u64, doc: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "UPDATE sweep SET version = version + 1, doc = ?1 WHERE id = 1 AND version = ?2",
            params![doc, expected],
        )
    }
}

/// Inserts `record` at version 1. `record` is the caller's copy moved into the
/// blocking task, so bumping it here touches the caller's value only once the
/// transaction has committed.
fn insert_new<T: Versioned>(tx: &Transaction<'_>, record: &mut T) -> Result<u64, StoreError> {
    record.set_version(1);
    let doc = to_doc(record, &record.what())?;
    match record.insert(tx, &doc).map_err(unavailable)? {
        0 => Err(StoreError::AlreadyExists(record.what())),
        _ => Ok(1),
    }
}

/// Overwrites the row if its version is still `expected`, storing the document
/// with the version the row will have.
fn update_from<T: Versioned>(tx: &Transaction<'_>, record: &mut T, expected: u64) -> Result<u64, StoreError> {
    let next = expected.checked_add(1).ok_or_else(|| StoreError::Conflict(record.what()))?;
    record.set_version(next);
    let doc = to_doc(record, &record.what())?;
    match record.update(tx, expected, &doc).map_err(unavailable)? {
        0 => Err(StoreError::Conflict(record.what())),
        _ => Ok(next),
    }
}

/// The first write of a record and its operation. `replacing` reuses the row
/// of a deleted or failed record, and keeps counting from its version so that
/// anyone still holding the old record loses.
fn create_with_operation<T: Versioned>(
    conn: &mut Connection,
    mut record: T,
    mut operation: Operation,
    replacing: Option<u64>,
) -> Result<(u64, u64), StoreError> {
    let tx = write_tx(conn)?;
    let record_version = match replacing {
        None => insert_new(&tx, &mut record)?,
        Some(expected) => update_from(&tx, &mut record, expected)?,
    };
    let operation_version = insert_new(&tx, &mut operation)?;
    tx.commit().map_err(unavailable)?;
    Ok((record_version, operation_version))
}

/// A record and, if given, its operation, both or neither. An operation at
/// version 0 has never been stored and is inserted.
fn save_with_operation<T: Versioned>(
    conn: &mut Connection,
    mut record: T,
    expected: u64,
    operation: Option<Operation>,
) -> Result<(u64, Option<u64>), StoreError> {
    let tx = write_tx(conn)?;
    let record_version = update_from(&tx, &mut record, expected)?;
    let operation_version = match operation {
        None => None,
        Some(mut op) if op.version == 0 => Some(insert_new(&tx, &mut op)?),
        Some(mut op) => {
            let expected = op.version;
            Some(update_from(&tx, &mut op, expected)?)
        }
    };
    tx.commit().map_err(unavailable)?;
    Ok((record_version, operation_version))
}

/// A [`PoolChange`]'s records, copied to move into the blocking task.
enum OwnedChange {
    Nothing,
    Add(Instance, Operation),
    Retire(Instance, Operation),
    Claim {
        member: Box<Instance>,
        instance: Box<Instance>,
        provision: Box<Operation>,
        tagging: Box<Operation>,
        replacing: Option<u64>,
    },
}

/// The versions the records of a change were written at.
#[derive(Default)]
struct ChangeVersions(Vec<u64>);

impl OwnedChange {
    fn of(change: &PoolChange<'_>) -> OwnedChange {
        match change {
            PoolChange::Nothing => OwnedChange::Nothing,
            PoolChange::Add { member, operation } => {
                OwnedChange::Add((**member).clone(), (**operation).clone())
            }
            PoolChange::Retire { member, operation } => {
                OwnedChange::Retire((**member).clone(), (**operation).clone())
            }
            PoolChange::Claim { member, instance, provision, tagging, replacing } => OwnedChange::Claim {
                member: Box::new((**member).clone()),
                instance: Box::new((**instance).clone()),
                provision: Box::new((**provision).clone()),
                tagging: Box::new((**tagging).clone()),
                replacing: *replacing,
            },
        }
    }

    fn write(&mut self, tx: &Transaction<'_>) -> Result<ChangeVersions, StoreError> {
        let versions = match self {
            OwnedChange::Nothing => vec![],
            OwnedChange::Add(member, op) => vec![insert_new(tx, member)?, insert_new(tx, op)?],
            OwnedChange::Retire(member, op) => {
                let expected = member.version;
                vec![update_from(tx, member, expected)?, insert_new(tx, op)?]
            }
            OwnedChange::Claim { member, instance, provision, tagging, replacing } => {
                let expected = member.version;
                let mv = update_from(tx, member.as_mut(), expected)?;
                let iv = match replacing {
                    None => insert_new(tx, instance.as_mut())?,
                    Some(expected) => update_from(tx, instance.as_mut(), *expected)?,
                };
                vec![mv, iv, insert_new(tx, provision.as_mut())?, insert_new(tx, tagging.as_mut())?]
            }
        };
        Ok(ChangeVersions(versions))
    }
}

impl ChangeVersions {
    /// Gives the caller's records the versions they were written at, in
    /// the order [`OwnedChange::write`] wrote them.
    fn apply(self, change: PoolChange<'_>) {
        let v = self.0;
        match change {
            PoolChange::Nothing => {}
            PoolChange::Add { member, operation } | PoolChange::Retire { member, operation } => {
                member.version = v[0];
                operation.version = v[1];
            }
            PoolChange::Claim { member, instance, provision, tagging, .. } => {
                member.version = v[0];
                instance.version = v[1];
                provision.version = v[2];
                tagging.version = v[3];
            }
        }
    }
}

// ---------------------------------------------------------------- catalog

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn services(&self) -> Result<Vec<Service>, StoreError> {
        self.run(|conn| {
            query_all(
                conn,
                "SELECT doc FROM services ORDER BY json_extract(doc, '$.name'), id",
                [],
                "service",
            )
        })
        .await
    }

    async fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        self.run(|conn| {
            query_all(conn, "SELECT doc FROM plans ORDER BY json_extract(doc, '$.name'), id", [], "plan")
        })
        .await
    }

    async fn catalog_version(&self) -> Result<Option<u64>, StoreError> {
        let writes = {
            let seen = self.catalog_seen();
            if let Some((version, at)) = seen.read
                && at.elapsed() < self.catalog_recheck
            {
                return Ok(Some(version));
            }
            seen.writes
        };
        let read_at = Instant::now();
        let version = self
            .read(|conn| {
                let version: i64 = conn
                    .query_row("SELECT version FROM catalog_version WHERE id = 1", [], |row| row.get(0))
                    .map_err(unavailable)?;
                Ok(version.unsigned_abs())
            })
            .await?;
        let mut seen = self.catalog_seen();
        if seen.writes == writes {
            seen.read = Some((version, read_at));
        }
        Ok(Some(version))
    }

    async fn seed(&self, services: &[Service], plans: &[Plan]) -> Result<usize, StoreError> {
        let services = services
            .iter()
            .map(|s| Ok((s.id.clone(), to_doc(s, &format!("service {}", s.id))?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let plans = plans
            .iter()
            .map(|p| Ok((p.id.clone(), to_doc(p, &format!("plan {}", p.id))?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.catalog_write(move |conn| {
            let tx = write_tx(conn)?;
            let mut inserted = 0;
            for (table, rows) in [("services", &services), ("plans", &plans)] {
                let sql =
                    format!("INSERT INTO {table} (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING");
                for (id, doc) in rows {
                    inserted += tx.execute(&sql, params![id, doc]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(inserted)
        })
        .await
    }

    async fn put_service(&self, service: &Service) -> Result<(), StoreError> {
        let id = service.id.clone();
        let doc = to_doc(service, &format!("service {id}"))?;
        self.catalog_write(move |conn| {
            conn.execute(
                "INSERT INTO services (id, doc) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                params![id, doc],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let id = plan.id.clone();
        let doc = to_doc(plan, &format!("plan {id}"))?;
        self.catalog_write(move |conn| {
            conn.execute(
                "INSERT INTO plans (id, doc) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                params![id, doc],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

// ---------------------------------------------------------------- state

#[async_trait]
impl StateStore for SqliteStore {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| instance_row(conn, &id)).await
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.run(|conn| query_all(conn, "SELECT doc FROM instances ORDER BY id", [], "service instance"))
            .await
    }

    async fn create_instance(
        &self,
        instance: &mut Instance,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        let (record, op) = (instance.clone(), operation.clone());
        let (iv, ov) = self.run(move |conn| create_with_operation(conn, record, op, replacing)).await?;
        instance.version = iv;
        operation.version = ov;
        Ok(())
    }

    async fn save_instance(
        &self,
        instance: &mut Instance,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError> {
        let (record, expected) = (instance.clone(), instance.version);
        let op = operation.as_deref().cloned();
        let (iv, ov) = self.run(move |conn| save_with_operation(conn, record, expected, op)).await?;
        instance.version = iv;
        if let (Some(operation), Some(ov)) = (operation, ov) {
            operation.version = ov;
        }
        Ok(())
    }

    async fn binding(&self, instance_id: &str, binding_id: &str) -> Result<Option<Binding>, StoreError> {
        let (instance_id, binding_id) = (instance_id.to_string(), binding_id.to_string());
        self.read(move |conn| binding_row(conn, &instance_id, &binding_id)).await
    }

    /// Both rows in one statement.
    async fn binding_and_instance(
        &self,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<(Option<Binding>, Option<Instance>), StoreError> {
        let (instance_id, binding_id) = (instance_id.to_string(), binding_id.to_string());
        self.read(move |conn| {
            query_pair(
                conn,
                "SELECT 0, doc FROM bindings WHERE instance_id = ?1 AND id = ?2 \
                 UNION ALL SELECT 1, doc FROM instances WHERE id = ?1",
                [&instance_id, &binding_id],
                (
                    format_args!("service binding {binding_id} of service instance {instance_id}"),
                    format_args!("service instance {instance_id}"),
                ),
            )
        })
        .await
    }

    async fn bindings(&self, instance_id: &str) -> Result<Vec<Binding>, StoreError> {
        let instance_id = instance_id.to_string();
        self.run(move |conn| {
            query_all(
                conn,
                "SELECT doc FROM bindings WHERE instance_id = ?1 ORDER BY id",
                [&instance_id],
                "service binding",
            )
        })
        .await
    }

    async fn create_binding(
        &self,
        binding: &mut Binding,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        let (record, op) = (binding.clone(), operation.clone());
        let (bv, ov) = self.run(move |conn| create_with_operation(conn, record, op, replacing)).await?;
        binding.version = bv;
        operation.version = ov;
        Ok(())
    }

    async fn save_binding(
        &self,
        binding: &mut Binding,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError> {
        let (record, expected) = (binding.clone(), binding.version);
        let op = operation.as_deref().cloned();
        let (bv, ov) = self.run(move |conn| save_with_operation(conn, record, expected, op)).await?;
        binding.version = bv;
        if let (Some(operation), Some(ov)) = (operation, ov) {
            operation.version = ov;
        }
        Ok(())
    }

    async fn claim_spare(
        &self,
        instance: &mut Instance,
        spares_op: Option<&mut Operation>,
        binding: &mut Binding,
        bind_op: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        let (mut i, expected) = (instance.clone(), instance.version);
        let mut spares = spares_op.as_deref().cloned();
        let (mut b, mut op) = (binding.clone(), bind_op.clone());
        let (iv, sv, bv, ov) = self
            .run(move |conn| {
                let tx = write_tx(conn)?;
                let iv = update_from(&tx, &mut i, expected)?;
                let sv = match spares.as_mut() {
                    Some(s) => Some(insert_new(&tx, s)?),
                    None => None,
                };
                let bv = match replacing {
                    None => insert_new(&tx, &mut b)?,
                    Some(expected) => update_from(&tx, &mut b, expected)?,
                };
                let ov = insert_new(&tx, &mut op)?;
                tx.commit().map_err(unavailable)?;
                Ok((iv, sv, bv, ov))
            })
            .await?;
        instance.version = iv;
        if let (Some(s), Some(sv)) = (spares_op, sv) {
            s.version = sv;
        }
        binding.version = bv;
        bind_op.version = ov;
        Ok(())
    }

    async fn pool(&self, plan_id: &str) -> Result<Option<Pool>, StoreError> {
        let plan_id = plan_id.to_string();
        self.read(move |conn| {
            let what = format!("the warm pool of plan {plan_id}");
            query_one(conn, "SELECT doc FROM pools WHERE plan_id = ?1", [&plan_id], &what)
        })
        .await
    }

    async fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        self.run(|conn| query_all(conn, "SELECT doc FROM pools ORDER BY plan_id", [], "warm pool")).await
    }

    async fn save_pool(&self, pool: &mut Pool, change: PoolChange<'_>) -> Result<(), StoreError> {
        // Copies go into the transaction; the caller's records take their
        // new versions only once it has committed.
        let (mut p, expected) = (pool.clone(), pool.version);
        let mut owned = OwnedChange::of(&change);
        let versions = self
            .run(move |conn| {
                let tx = write_tx(conn)?;
                let pv = if expected == 0 {
                    insert_new(&tx, &mut p)?
                } else {
                    update_from(&tx, &mut p, expected)?
                };
                let versions = owned.write(&tx)?;
                tx.commit().map_err(unavailable)?;
                Ok((pv, versions))
            })
            .await?;
        pool.version = versions.0;
        versions.1.apply(change);
        Ok(())
    }

    async fn sweep(&self) -> Result<Option<Sweep>, StoreError> {
        self.read(|conn| {
            query_one(conn, "SELECT doc FROM sweep WHERE id = 1", [], "the orphan sweep's record")
        })
        .await
    }

    async fn save_sweep(&self, sweep: &mut Sweep) -> Result<(), StoreError> {
        let (mut copy, expected) = (sweep.clone(), sweep.version);
        let version = self
            .run(move |conn| {
                let tx = write_tx(conn)?;
                let version = match expected {
                    0 => insert_new(&tx, &mut copy)?,
                    _ => update_from(&tx, &mut copy, expected)?,
                };
                tx.commit().map_err(unavailable)?;
                Ok(version)
            })
            .await?;
        sweep.version = version;
        Ok(())
    }

    async fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| operation_row(conn, &id)).await
    }

    /// Both rows in one statement.
    async fn instance_and_operation(
        &self,
        instance_id: &str,
        operation_id: Option<&str>,
    ) -> Result<(Option<Instance>, Option<Operation>), StoreError> {
        let (instance_id, operation_id) = (instance_id.to_string(), operation_id.map(str::to_string));
        self.read(move |conn| {
            let named = operation_id.as_deref().unwrap_or("its last operation");
            let (instance, operation) = query_pair(
                conn,
                "SELECT 0, doc FROM instances WHERE id = ?1 \
                 UNION ALL SELECT 1, doc FROM operations WHERE id = \
                   COALESCE(?2, (SELECT json_extract(doc, '$.last_operation_id') FROM instances WHERE id = ?1))",
                params![instance_id, operation_id],
                (format_args!("service instance {instance_id}"), format_args!("operation {named}")),
            )?;
            // No instance, no operation, whichever was named.
            Ok(if instance.is_some() { (instance, operation) } else { (None, None) })
        })
        .await
    }

    async fn operations_in_progress(&self) -> Result<Vec<Operation>, StoreError> {
        self.run(|conn| {
            query_all(
                conn,
                "SELECT doc FROM operations WHERE state = ?1 ORDER BY id",
                [state_column(OperationState::InProgress)],
                "operation",
            )
        })
        .await
    }

    async fn save_operation(&self, operation: &mut Operation) -> Result<(), StoreError> {
        let (mut op, expected) = (operation.clone(), operation.version);
        let version = self
            .run(move |conn| {
                let tx = write_tx(conn)?;
                let version = update_from(&tx, &mut op, expected)?;
                tx.commit().map_err(unavailable)?;
                Ok(version)
            })
            .await?;
        operation.version = version;
        Ok(())
    }

    async fn purge_expired(&self, now: i64) -> Result<usize, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let mut purged = 0;
            for table in ["instances", "bindings", "operations"] {
                let sql = format!("DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= ?1");
                purged += tx.execute(&sql, [now]).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(purged)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::domain::OperationKind;
    use broker_testing::records::{binding, op, plan, service};

    /// A fresh in-memory store, for the store contract.
    async fn open() -> (SqliteStore, ()) {
        (SqliteStore::in_memory().unwrap(), ())
    }

    broker_testing::store_contract!(open);

    /// The contract again on a file, where reads run on the reader
    /// connections and writes on the writer.
    mod on_a_file {
        use super::*;

        async fn open() -> (SqliteStore, tempfile::TempDir) {
            let dir = tempfile::tempdir().unwrap();
            (SqliteStore::open(&dir.path().join("state.db")).unwrap(), dir)
        }

        broker_testing::store_contract!(open);
    }

    async fn created(store: &SqliteStore, id: &str) -> (Instance, Operation) {
        broker_testing::contract::store::created(store, id).await
    }

    // What only SQLite shows: one atomic winner, connections sharing a file,
    // the catalog's version, purging by expiry.

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_saves_of_the_same_loaded_version_have_exactly_one_winner() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let (loaded, _) = created(&store, "i-1").await;
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = Arc::clone(&store);
                let mut mine = loaded.clone();
                mine.engine_version = format!("7.{n}");
                tokio::spawn(async move { store.save_instance(&mut mine, None).await.map(|()| mine) })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(won) => winners.push(won),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1);
        assert_eq!(store.instance("i-1").await.unwrap(), winners.pop());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_connections_to_one_file_also_have_exactly_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        let (loaded, _) = created(&a, "i-1").await;
        let (mut one, mut two) = (loaded.clone(), loaded);
        let (r1, r2) = tokio::join!(a.save_instance(&mut one, None), b.save_instance(&mut two, None));
        assert!(r1.is_ok() != r2.is_ok(), "{r1:?} {r2:?}");
        assert!(matches!(r1.err().or(r2.err()), Some(StoreError::Conflict(_))));
    }

    #[tokio::test]
    async fn state_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("broker.db");
        let (i, o) = {
            let store = SqliteStore::open(&path).unwrap();
            store.seed(&[service("s", "redis")], &[plan("p", "small")]).await.unwrap();
            created(&store, "i-1").await
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.instance("i-1").await.unwrap(), Some(i));
        assert_eq!(store.operation(&o.id).await.unwrap(), Some(o));
        assert_eq!(store.plans().await.unwrap(), vec![plan("p", "small")]);
    }

    /// `catalog apply` runs in another process: the API's connection sees
    /// the version move, and only catalog writes move it.
    #[tokio::test]
    async fn the_catalog_version_moves_with_catalog_writes_from_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let api = SqliteStore::open(&path).unwrap().with_catalog_recheck(Duration::ZERO);
        let cli = SqliteStore::open(&path).unwrap();
        let version = || async { api.catalog_version().await.unwrap().unwrap() };
        let v0 = version().await;
        cli.seed(&[service("s", "redis")], &[plan("p", "small")]).await.unwrap();
        let v1 = version().await;
        assert!(v1 > v0);
        cli.seed(&[service("s", "redis")], &[plan("p", "small")]).await.unwrap();
        created(&cli, "i-1").await;
        assert_eq!(version().await, v1, "a seed that adds nothing and an instance leave it alone");
        let mut changed = plan("p", "small");
        changed.node_type = "cache.r7g.large".into();
        cli.put_plan(&changed).await.unwrap();
        let v2 = version().await;
        assert!(v2 > v1);
        cli.put_service(&service("s", "valkey")).await.unwrap();
        assert!(version().await > v2);
    }

    /// Between rechecks the version comes from memory (a request costs no
    /// query): another process's write shows after the recheck interval, this
    /// store's own at once.
    #[tokio::test]
    async fn the_catalog_version_is_read_again_after_the_recheck_interval_or_an_own_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let recheck = Duration::from_millis(300);
        let api = SqliteStore::open(&path).unwrap().with_catalog_recheck(recheck);
        let cli = SqliteStore::open(&path).unwrap();
        let version = || async { api.catalog_version().await.unwrap().unwrap() };
        let v0 = version().await;
        let written = Instant::now();
        cli.put_service(&service("s", "redis")).await.unwrap();
        let seen = version().await;
        if written.elapsed() < recheck {
            assert_eq!(seen, v0, "read again before the recheck interval");
        }
        tokio::time::sleep(recheck).await;
        let v1 = version().await;
        assert!(v1 > v0, "another process's write unseen after the recheck interval");
        api.put_plan(&plan("p", "small")).await.unwrap();
        assert!(version().await > v1, "this store's own write unseen");
    }

    #[tokio::test]
    async fn purging_removes_only_rows_whose_expiry_has_passed() {
        let store = SqliteStore::in_memory().unwrap();
        let (mut gone, mut gone_op) = created(&store, "i-gone").await;
        let (mut later, _) = created(&store, "i-later").await;
        let (kept, kept_op) = created(&store, "i-kept").await;
        gone.expires_at = Some(100);
        gone_op.succeed(50, "done").unwrap();
        gone_op.expires_at = Some(100);
        store.save_instance(&mut gone, Some(&mut gone_op)).await.unwrap();
        later.expires_at = Some(200);
        store.save_instance(&mut later, None).await.unwrap();
        let mut b = binding("i-kept", "b-gone");
        b.expires_at = Some(150);
        let mut bind_op = op(OperationKind::Bind, "i-kept", Some("b-gone"));
        store.create_binding(&mut b, &mut bind_op, None).await.unwrap();

        assert_eq!(store.purge_expired(150).await.unwrap(), 3);
        let ids: Vec<_> = store.instances().await.unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["i-kept", "i-later"]);
        assert_eq!(store.operation(&gone_op.id).await.unwrap(), None);
        assert_eq!(store.bindings("i-kept").await.unwrap(), vec![]);
        assert_eq!(store.operation(&kept_op.id).await.unwrap(), Some(kept_op));
        assert_eq!(store.instance("i-kept").await.unwrap(), Some(kept));
    }
}
