//! The laptop-mode secret store: owns an owner-only SQLite file of secret
//! versions labelled with Secrets Manager's stages (AWSCURRENT, AWSPENDING,
//! AWSPREVIOUS), so rotation runs the same steps on a laptop as in AWS.
//!
//! Records elsewhere hold only references (`local:<name>`); values leave this
//! module only as [`SecretString`]s and never appear in errors or logs.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use secrecy::{ExposeSecret, SecretString};

use broker_core::domain::ResourceKind;
use broker_core::ports::{
    Claim, Inventory, Leftover, LeftoverPage, LiveCaches, ProviderError, Removal, SecretError, SecretInfo,
    SecretStore, SecretVersion, Stage,
};

/// What every reference this store hands out starts with.
pub const REFERENCE_PREFIX: &str = "local:";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secret_versions (
    name          TEXT NOT NULL,
    version_id    TEXT NOT NULL,
    value         TEXT NOT NULL,
    stages        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version_id)
);
CREATE TABLE IF NOT EXISTS secret_rotation (
    name          TEXT PRIMARY KEY,
    days          INTEGER NOT NULL,
    next_at       INTEGER NOT NULL
);
";

/// Seconds in a day, for rotation schedules.
const DAY_SECS: i64 = 24 * 3600;

/// Secrets with version stages in one SQLite database. Clones share it.
#[derive(Clone)]
pub struct LocalSecretStore {
    db: crate::Db,
    path: Option<PathBuf>,
}

/// Shows where the secrets are, never what they are.
impl std::fmt::Debug for LocalSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSecretStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// One stored version, as the stage moves need it: no value.
struct Version {
    id: String,
    stages: Vec<String>,
}

impl LocalSecretStore {
    /// Opens (or creates) the secret file at `path`, readable and writable by
    /// its owner only.
    pub fn open(path: &Path) -> Result<LocalSecretStore, SecretError> {
        let open_error = |e: crate::OpenError| SecretError::Unavailable(e.to_string());
        let conn = crate::open_private_db(path).map_err(open_error)?;
        LocalSecretStore::prepare(&conn)?;
        let db = crate::Db::file(conn, path).map_err(open_error)?;
        Ok(LocalSecretStore { db, path: Some(path.to_path_buf()) })
    }

    /// A store that lives only as long as the value.
    pub fn in_memory() -> Result<LocalSecretStore, SecretError> {
        let conn = Connection::open_in_memory().map_err(unavailable)?;
        LocalSecretStore::prepare(&conn)?;
        Ok(LocalSecretStore { db: crate::Db::single(conn), path: None })
    }

    /// Sets up the writer: the schema, and deleted versions overwritten on
    /// disk, not left in free pages (readers delete nothing).
    fn prepare(conn: &Connection) -> Result<(), SecretError> {
        conn.pragma_update(None, "secure_delete", "ON").map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)
    }

    /// The reference of the secret `name`.
    pub fn reference(name: &str) -> String {
        format!("{REFERENCE_PREFIX}{name}")
    }

    /// References of the secrets whose scheduled rotation is due at `now`
    /// (Unix seconds): what Secrets Manager's scheduler would rotate. A
    /// finished rotation (`promote`) sets the next one `days` later.
    pub async fn due_for_rotation(&self, now: i64) -> Result<Vec<String>, SecretError> {
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name FROM secret_rotation WHERE next_at <= ?1 ORDER BY next_at")
                .map_err(unavailable)?;
            let names = stmt
                .query_map([now], |row| row.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            Ok(names.iter().map(|n| LocalSecretStore::reference(n)).collect())
        })
        .await
    }

    /// Runs `f` with the writer on the blocking pool, so SQLite never
    /// blocks the async runtime.
    async fn run<T, F>(&self, f: F) -> Result<T, SecretError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SecretError> + Send + 'static,
    {
        self.db.write(f).await.unwrap_or_else(lost)
    }

    /// Runs the read `f` on a reader ([`crate::Db::read`]).
    async fn read_with<T, F>(&self, f: F) -> Result<T, SecretError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SecretError> + Send + 'static,
    {
        self.db.read(f).await.unwrap_or_else(lost)
    }
}

fn lost<T>(how: &str) -> Result<T, SecretError> {
    Err(SecretError::Unavailable(format!("a secret store call {how}")))
}

/// Secrets listed per page for the orphan sweep.
const PAGE: i64 = 100;

/// The orphan sweep's view of the secrets: every secret in this file (the
/// file is this broker's alone, as the tag is in AWS), a page at a time in
/// name order; the sweep judges them by name.
#[async_trait]
impl Inventory for LocalSecretStore {
    fn kinds(&self) -> &'static [ResourceKind] {
        &[ResourceKind::Secret]
    }

    async fn leftovers(
        &self,
        _kind: ResourceKind,
        token: Option<&str>,
        _live: &LiveCaches,
    ) -> Result<LeftoverPage, ProviderError> {
        let after = token.unwrap_or_default().to_string();
        let names = self
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT DISTINCT name FROM secret_versions WHERE name > ?1 ORDER BY name LIMIT ?2",
                    )
                    .map_err(unavailable)?;
                stmt.query_map(params![after, PAGE], |row| row.get::<_, String>(0))
                    .map_err(unavailable)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)
            })
            .await
            .map_err(|e| ProviderError::Retryable(e.to_string()))?;
        let next = (names.len() as i64 == PAGE).then(|| names.last().cloned()).flatten();
        let leftovers = names
            .into_iter()
            .map(|name| Leftover {
                kind: ResourceKind::Secret,
                reference: LocalSecretStore::reference(&name),
                id: name,
                claim: Claim::SecretName,
            })
            .collect();
        Ok(LeftoverPage { leftovers, next })
    }

    async fn remove(&self, leftover: &Leftover) -> Result<Removal, ProviderError> {
        self.delete(&leftover.reference).await.map_err(|e| ProviderError::Retryable(e.to_string()))?;
        Ok(Removal::Removed)
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    fn reference_for(&self, name: &str) -> String {
        LocalSecretStore::reference(name)
    }

    async fn create(&self, name: &str, value: &SecretString) -> Result<String, SecretError> {
        let owned_name = name.to_string();
        let value = SecretString::from(value.expose_secret().to_owned());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if versions(&tx, &owned_name)?.is_empty() {
                let version_id = uuid::Uuid::new_v4().to_string();
                insert_version(&tx, &owned_name, &version_id, &value, &[Stage::Current])?;
                tx.commit().map_err(unavailable)?;
            }
            Ok(())
        })
        .await?;
        Ok(LocalSecretStore::reference(name))
    }

    async fn read(&self, reference: &str, stage: Stage) -> Result<Option<SecretString>, SecretError> {
        let name = name_of(reference)?;
        self.read_with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT value, stages FROM secret_versions WHERE name = ?1")
                .map_err(unavailable)?;
            let mut rows = stmt.query([&name]).map_err(unavailable)?;
            while let Some(row) = rows.next().map_err(unavailable)? {
                let stages = parse_stages(&row.get::<_, String>(1).map_err(unavailable)?)?;
                if stages.iter().any(|s| s == stage.label()) {
                    let value: String = row.get(0).map_err(unavailable)?;
                    return Ok(Some(SecretString::from(value)));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn delete(&self, reference: &str) -> Result<(), SecretError> {
        let name = name_of(reference)?;
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute("DELETE FROM secret_versions WHERE name = ?1", [&name]).map_err(unavailable)?;
            tx.execute("DELETE FROM secret_rotation WHERE name = ?1", [&name]).map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    /// Adds `value` as version `version_id`, labelled AWSPENDING (taking the
    /// label from any other version), as PutSecretValue does during the first
    /// step of a rotation. Putting a version that exists changes nothing, so
    /// a retried rotation step keeps the first value.
    async fn put_pending(
        &self,
        reference: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<(), SecretError> {
        let name = name_of(reference)?;
        let (reference, version_id) = (reference.to_string(), version_id.to_string());
        let value = SecretString::from(value.expose_secret().to_owned());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let versions = versions(&tx, &name)?;
            if versions.is_empty() {
                return Err(SecretError::NotFound(reference));
            }
            if versions.iter().any(|v| v.id == version_id) {
                return Ok(());
            }
            for v in &versions {
                let mut stages = v.stages.clone();
                stages.retain(|s| s != Stage::Pending.label());
                relabel(&tx, &name, v, stages)?;
            }
            insert_version(&tx, &name, &version_id, &value, &[Stage::Pending])?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    /// Moves AWSCURRENT to version `version_id`, labels the version that held
    /// it AWSPREVIOUS and removes AWSPENDING, as UpdateSecretVersionStage does
    /// when a rotation finishes. Versions left without a label are deleted:
    /// nothing can read them any more. Promoting the current version again
    /// changes nothing but dropping AWSPENDING.
    async fn promote(&self, reference: &str, version_id: &str) -> Result<(), SecretError> {
        let name = name_of(reference)?;
        let (reference, version_id) = (reference.to_string(), version_id.to_string());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let versions = versions(&tx, &name)?;
            let Some(target) = versions.iter().find(|v| v.id == version_id) else {
                return Err(SecretError::NotFound(format!("{reference} version {version_id}")));
            };
            let already_current = has(target, Stage::Current);
            for v in &versions {
                let mut stages = v.stages.clone();
                stages.retain(|s| s != Stage::Pending.label());
                if !already_current {
                    if v.id == version_id {
                        stages.retain(|s| s != Stage::Previous.label());
                        stages.push(Stage::Current.label().to_string());
                    } else if has(v, Stage::Current) {
                        stages.retain(|s| s != Stage::Current.label());
                        stages.push(Stage::Previous.label().to_string());
                    } else {
                        stages.retain(|s| s != Stage::Previous.label());
                    }
                }
                relabel(&tx, &name, v, stages)?;
            }
            if !already_current {
                // The schedule counts from the last rotation, as Secrets
                // Manager's does.
                tx.execute(
                    "UPDATE secret_rotation SET next_at = ?2 + days * ?3 WHERE name = ?1",
                    params![name, chrono::Utc::now().timestamp(), DAY_SECS],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn describe(&self, reference: &str) -> Result<SecretInfo, SecretError> {
        let name = name_of(reference)?;
        let reference = reference.to_string();
        self.read_with(move |conn| {
            let tx = conn.unchecked_transaction().map_err(unavailable)?;
            let versions = versions(&tx, &name)?;
            if versions.is_empty() {
                return Err(SecretError::NotFound(reference));
            }
            let days: Option<u32> = tx
                .query_row("SELECT days FROM secret_rotation WHERE name = ?1", [&name], |row| row.get(0))
                .optional()
                .map_err(unavailable)?;
            let versions = versions
                .into_iter()
                .map(|v| SecretVersion {
                    stages: [Stage::Current, Stage::Pending, Stage::Previous]
                        .into_iter()
                        .filter(|s| has(&v, *s))
                        .collect(),
                    id: v.id,
                })
                .collect();
            Ok(SecretInfo { name, versions, rotation_days: days })
        })
        .await
    }

    async fn read_version(
        &self,
        reference: &str,
        version_id: &str,
    ) -> Result<Option<SecretString>, SecretError> {
        let name = name_of(reference)?;
        let version_id = version_id.to_string();
        self.read_with(move |conn| {
            conn.query_row(
                "SELECT value FROM secret_versions WHERE name = ?1 AND version_id = ?2",
                params![name, version_id],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map(|v| v.map(SecretString::from))
            .map_err(unavailable)
        })
        .await
    }

    /// Records the schedule; the laptop's rotation ticker asks
    /// [`LocalSecretStore::due_for_rotation`]. Scheduling again with the same
    /// days keeps the next date; other days count from now.
    async fn schedule_rotation(&self, reference: &str, days: u32) -> Result<(), SecretError> {
        let name = name_of(reference)?;
        let reference = reference.to_string();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if versions(&tx, &name)?.is_empty() {
                return Err(SecretError::NotFound(reference));
            }
            tx.execute(
                "INSERT INTO secret_rotation (name, days, next_at) VALUES (?1, ?2, ?3 + ?2 * ?4)
                 ON CONFLICT (name) DO UPDATE SET days = excluded.days, next_at = excluded.next_at
                 WHERE secret_rotation.days <> excluded.days",
                params![name, days, chrono::Utc::now().timestamp(), DAY_SECS],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }
}

/// The secret name inside a reference. A Secrets Manager ARN names the
/// secret whose name it carries (`arn:...:secret:NAME-AbCdEf`), so the
/// rotation events Secrets Manager sends run in laptop mode too; any other
/// reference this store did not make (a bare name) names none of its secrets.
fn name_of(reference: &str) -> Result<String, SecretError> {
    let from_arn = || {
        let (_, rest) = reference.strip_prefix("arn:")?.split_once(":secret:")?;
        let (name, suffix) = rest.rsplit_once('-')?;
        (suffix.len() == 6).then(|| name.to_string())
    };
    reference
        .strip_prefix(REFERENCE_PREFIX)
        .map(str::to_string)
        .or_else(from_arn)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| SecretError::NotFound(reference.to_string()))
}

/// Stage moves read, then write: taking the write lock at BEGIN keeps another
/// connection from moving the labels in between.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, SecretError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)
}

fn versions(tx: &Transaction<'_>, name: &str) -> Result<Vec<Version>, SecretError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT version_id, stages FROM secret_versions WHERE name = ?1 ORDER BY created_at_ms",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([name], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter().map(|(id, stages)| Ok(Version { id, stages: parse_stages(&stages)? })).collect()
}

fn insert_version(
    tx: &Transaction<'_>,
    name: &str,
    version_id: &str,
    value: &SecretString,
    stages: &[Stage],
) -> Result<(), SecretError> {
    let labels: Vec<&str> = stages.iter().map(|s| s.label()).collect();
    tx.execute(
        "INSERT INTO secret_versions (name, version_id, value, stages, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            name,
            version_id,
            value.expose_secret(),
            encode_stages(&labels)?,
            chrono::Utc::now().timestamp_millis()
        ],
    )
    .map_err(unavailable)?;
    Ok(())
}

/// Writes `stages` for version `v` if they changed; a version left without a
/// label is deleted, so old passwords do not linger on disk.
fn relabel(tx: &Transaction<'_>, name: &str, v: &Version, stages: Vec<String>) -> Result<(), SecretError> {
    if stages == v.stages {
        return Ok(());
    }
    if stages.is_empty() {
        tx.execute("DELETE FROM secret_versions WHERE name = ?1 AND version_id = ?2", params![name, v.id])
    } else {
        tx.execute(
            "UPDATE secret_versions SET stages = ?3 WHERE name = ?1 AND version_id = ?2",
            params![name, v.id, encode_stages(&stages)?],
        )
    }
    .map_err(unavailable)?;
    Ok(())
}

fn has(v: &Version, stage: Stage) -> bool {
    v.stages.iter().any(|s| s == stage.label())
}

/// Stages are stored as a JSON array of labels, as Secrets Manager lists them.
fn encode_stages<S: AsRef<str>>(stages: &[S]) -> Result<String, SecretError> {
    let labels: Vec<&str> = stages.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&labels).map_err(|_| SecretError::Unavailable("cannot encode stage labels".into()))
}

fn parse_stages(text: &str) -> Result<Vec<String>, SecretError> {
    serde_json::from_str(text)
        .map_err(|_| SecretError::Unavailable("stored stage labels are not readable".into()))
}

/// SQLite's messages name tables and constraints, never bound values, so no
/// secret can reach an error this way.
fn unavailable(e: rusqlite::Error) -> SecretError {
    SecretError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    async fn read(store: &LocalSecretStore, reference: &str, stage: Stage) -> Option<String> {
        let value = store.read(reference, stage).await.unwrap();
        value.map(|v| v.expose_secret().to_string())
    }

    async fn version_count(store: &LocalSecretStore) -> i64 {
        store
            .run(|conn| {
                conn.query_row("SELECT COUNT(*) FROM secret_versions", [], |r| r.get(0)).map_err(unavailable)
            })
            .await
            .unwrap()
    }

    async fn open() -> (LocalSecretStore, ()) {
        (LocalSecretStore::in_memory().unwrap(), ())
    }

    broker_testing::secret_contract!(open);

    /// The contract again on a file, where reads run on the reader
    /// connections and writes on the writer.
    mod on_a_file {
        use super::*;

        async fn open() -> (LocalSecretStore, tempfile::TempDir) {
            let dir = tempfile::tempdir().unwrap();
            (LocalSecretStore::open(&dir.path().join("secrets.db")).unwrap(), dir)
        }

        broker_testing::secret_contract!(open);
    }

    /// What no stage labels any more is not kept: a rotation leaves the
    /// current and previous versions, a delete leaves no row.
    #[tokio::test]
    async fn old_versions_and_deleted_secrets_leave_no_rows() {
        let store = LocalSecretStore::in_memory().unwrap();
        let r = store.create("s", &secret("one")).await.unwrap();
        assert_eq!(r, "local:s");
        for (n, token) in ["v2", "v3", "v4"].into_iter().enumerate() {
            store.put_pending(&r, token, &secret(&format!("pw-{n}"))).await.unwrap();
            store.promote(&r, token).await.unwrap();
        }
        assert_eq!(version_count(&store).await, 2, "current and previous only");
        store.put_pending(&r, "v5", &secret("abandoned")).await.unwrap();
        store.put_pending(&r, "v6", &secret("pending")).await.unwrap();
        assert_eq!(version_count(&store).await, 3, "v5 lost its only label");
        store.delete(&r).await.unwrap();
        assert_eq!(version_count(&store).await, 0);
    }

    #[tokio::test]
    async fn a_reference_this_store_did_not_make_is_not_found() {
        let store = LocalSecretStore::in_memory().unwrap();
        store.create("s", &secret("pw")).await.unwrap();
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:s";
        for bad in [arn, "s", "local:"] {
            let err = store.read(bad, Stage::Current).await.unwrap_err();
            assert!(matches!(err, SecretError::NotFound(_)), "{bad}: {err}");
            assert!(matches!(store.delete(bad).await, Err(SecretError::NotFound(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_file_is_readable_by_its_owner_only_and_keeps_secrets_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("secrets.db");
        let r = {
            let store = LocalSecretStore::open(&path).unwrap();
            store.create("s", &secret("pw")).await.unwrap()
        };
        let store = LocalSecretStore::open(&path).unwrap();
        assert_eq!(read(&store, &r, Stage::Current).await.as_deref(), Some("pw"));
        store.create("t", &secret("pw2")).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let wal = path.with_extension("db-wal");
        assert!(wal.exists(), "the WAL file is there while the store is open");
        assert_eq!(mode(&wal), 0o600, "SQLite's own files follow the database's mode");
    }

    #[tokio::test]
    async fn opening_tightens_a_file_left_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        LocalSecretStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn debug_never_prints_a_value() {
        let store = LocalSecretStore::in_memory().unwrap();
        store.create("s", &secret("hunter2hunter2")).await.unwrap();
        let value = store.read("local:s", Stage::Current).await.unwrap().unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));
        assert!(!format!("{value:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_scheduled_rotation_is_due_after_its_days_and_again_after_each_rotation() {
        let store = LocalSecretStore::in_memory().unwrap();
        let r = store.create("b-1", &secret("old-password")).await.unwrap();
        let now = chrono::Utc::now().timestamp();
        store.schedule_rotation(&r, 2).await.unwrap();
        store.schedule_rotation(&r, 2).await.unwrap();
        assert_eq!(store.describe(&r).await.unwrap().rotation_days, Some(2));
        assert!(store.due_for_rotation(now + DAY_SECS).await.unwrap().is_empty());
        assert_eq!(store.due_for_rotation(now + 2 * DAY_SECS + 5).await.unwrap(), vec![r.clone()]);
        store.put_pending(&r, "token-1", &secret("new-password")).await.unwrap();
        store.promote(&r, "token-1").await.unwrap();
        let later = chrono::Utc::now().timestamp();
        assert!(store.due_for_rotation(later + DAY_SECS).await.unwrap().is_empty());
        assert_eq!(store.due_for_rotation(later + 2 * DAY_SECS + 5).await.unwrap(), vec![r.clone()]);
        store.delete(&r).await.unwrap();
        assert!(store.due_for_rotation(later + 10 * DAY_SECS).await.unwrap().is_empty());
        assert!(matches!(store.schedule_rotation("local:gone", 1).await, Err(SecretError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_secrets_manager_arn_names_the_secret_it_carries() {
        let store = LocalSecretStore::in_memory().unwrap();
        let r = store.create("local/instances/i-1/admin", &secret("a-password")).await.unwrap();
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:local/instances/i-1/admin-AbCdEf";
        assert_eq!(read(&store, arn, Stage::Current).await.as_deref(), Some("a-password"));
        assert_eq!(store.describe(arn).await.unwrap().name, "local/instances/i-1/admin");
        assert_eq!(read(&store, &r, Stage::Current).await.as_deref(), Some("a-password"));
        for other in ["arn:aws:secretsmanager:eu-west-1:1:secret:local/instances/i-1/admin", "local/x"] {
            assert!(matches!(store.describe(other).await, Err(SecretError::NotFound(_))), "{other}");
        }
    }
}
