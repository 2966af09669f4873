//! Day-2 operations on local servers: restart, test failover (see
//! `replication`), snapshots (an RDB dump each shard's primary writes on
//! `SAVE`, copied out of its data directory) and new servers restored from
//! one.
//!
//! Snapshots live beside the instance directories, so they outlive their
//! cache as ElastiCache's manual snapshots do:
//! `root/_snapshots/<instance directory name>/<name>.rdb`, with
//! `<name>.json` saying what it is; a cache of several shards adds
//! `<name>.shard-<n>.rdb` for its shards after the first. No instance
//! directory can be named
//! `_snapshots` (`dir_name` writes `_` followed by two hex digits), and a
//! directory without `instance.json` is never taken for an instance.
//!
//! A restored server starts with its append-only file off, so that it
//! loads the dump (with the file on, Redis OSS and Valkey start from the
//! file and ignore the dump), then the provider turns it on, which writes
//! the data into a new append-only file, and only then is the cache ready.
//! Each shard's primary loads its shard's dump; replicas copy their
//! primary.

use super::*;
use broker_core::domain::{Action, ActionStep, Snapshot, SnapshotKind};

/// The directory under the root that holds every cache's snapshots.
const SNAPSHOTS_DIR: &str = "_snapshots";
/// How long the provider waits for a restored server's append-only file
/// before it reports `Working` (the worker asks again).
const RESTORE_WAIT: Duration = Duration::from_secs(10);

/// What `<name>.json` records of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    name: String,
    kind: SnapshotKind,
    created_at: i64,
    engine: Engine,
    engine_version: String,
    /// How many shards' dumps it holds.
    #[serde(default = "one_shard")]
    shards: u8,
}

fn one_shard() -> u8 {
    1
}

/// The dump of shard `shard` beside the first shard's `dump`.
fn shard_file(dump: &Path, shard: u8) -> PathBuf {
    if shard == 0 {
        return dump.to_path_buf();
    }
    let stem = dump.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    dump.with_file_name(format!("{stem}.shard-{}.rdb", u32::from(shard) + 1))
}

impl LocalCacheProvider {
    /// Where the snapshots of the cache `instance_id` are.
    fn snapshot_dir(&self, instance_id: &str) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR).join(dir_name(instance_id))
    }

    /// The dump and the record of one snapshot, from its reference
    /// (`<instance directory name>/<name>`), which must lie inside the
    /// snapshots directory.
    fn snapshot_files(&self, reference: &str) -> Result<(PathBuf, PathBuf), ProviderError> {
        let plain = |part: &str| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        match reference.split_once('/') {
            Some((dir, name)) if plain(dir) && plain(name) => {
                let base = self.root.join(SNAPSHOTS_DIR).join(dir);
                Ok((base.join(format!("{name}.rdb")), base.join(format!("{name}.json"))))
            }
            _ => Err(ProviderError::Permanent(format!("{reference:?} does not name a local snapshot"))),
        }
    }

    fn reference(instance_id: &str, name: &str) -> String {
        format!("{}/{name}", dir_name(instance_id))
    }

    /// Copies the snapshot `reference` names into a new cache's data
    /// directories: each shard's dump as the one its primary loads at its
    /// first start.
    pub(super) fn place_snapshot(
        &self,
        record: &Record,
        reference: &str,
        paths: &Paths,
    ) -> Result<(), ProviderError> {
        let (instance_id, engine) = (record.instance_id.as_str(), record.engine);
        if !engine.speaks_redis() {
            return Err(ProviderError::Permanent(format!(
                "instance {instance_id}: Memcached keeps no data to restore"
            )));
        }
        let (dump, about_file) = self.snapshot_files(reference)?;
        let about: SnapshotRecord = read_json(&about_file)?.ok_or_else(|| {
            ProviderError::Permanent(format!(
                "the snapshot {reference} to restore instance {instance_id} from is gone"
            ))
        })?;
        if about.engine != engine {
            return Err(ProviderError::Permanent(format!(
                "snapshot {} is of {}, not {}: restore it into a {} instance",
                about.name,
                about.engine.as_str(),
                engine.as_str(),
                about.engine.as_str()
            )));
        }
        let shards = Layout::of_record(record).shards;
        if about.shards != shards {
            return Err(ProviderError::Permanent(format!(
                "snapshot {} holds {} shard(s) and the plan has {shards}: restore it into a plan with {} \
                 shard(s)",
                about.name, about.shards, about.shards
            )));
        }
        create_dir(&paths.dir)?;
        for node in record.nodes.iter().filter(|n| !n.replica) {
            let node_paths = paths.node(node.dir);
            create_dir(&node_paths.dir)?;
            create_dir(&node_paths.data)?;
            copy_file(&shard_file(&dump, node.shard), &node_paths.data.join("dump.rdb"))?;
        }
        tracing::info!(instance_id, snapshot = %about.name, "restoring a local cache from a snapshot");
        Ok(())
    }

    /// Running servers that answer are ready, unless they are still taking
    /// in a restored snapshot: then their append-only files are turned on
    /// and waited for, and the record says it is done.
    pub(super) async fn settle(&self, mut record: Record, paths: &Paths) -> Result<Progress, ProviderError> {
        if !record.restoring {
            return Ok(Progress::Done);
        }
        for (_, mut connection) in self.admin_connections(&record, paths).await? {
            if let Progress::Working { detail } = append_only(&record, &mut connection).await? {
                return Ok(Progress::Working { detail });
            }
        }
        record.restoring = false;
        write_record(paths, &record)?;
        tracing::info!(instance_id = %record.instance_id, "restored local cache ready");
        Ok(Progress::Done)
    }
}

/// Turns a restored server's append-only file on and waits for it to be
/// written.
async fn append_only(
    record: &Record,
    connection: &mut MultiplexedConnection,
) -> Result<Progress, ProviderError> {
    let failed = |e: &RedisError| {
        redis_failure(
            &format!("could not turn on the append-only file of restored instance {}", record.instance_id),
            e,
            &[],
        )
    };
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query_async::<()>(connection)
        .await
        .map_err(|e| failed(&e))?;
    let deadline = Instant::now() + RESTORE_WAIT;
    loop {
        let info: String =
            redis::cmd("INFO").arg("persistence").query_async(connection).await.map_err(|e| failed(&e))?;
        if info_field(&info, "aof_enabled") == "1"
            && info_field(&info, "aof_rewrite_in_progress") == "0"
            && info_field(&info, "aof_rewrite_scheduled") == "0"
        {
            return Ok(Progress::Done);
        }
        if Instant::now() >= deadline {
            return Ok(Progress::Working {
                detail: format!(
                    "instance {} is writing its restored data to its append-only file",
                    record.instance_id
                ),
            });
        }
        sleep(POLL).await;
    }
}

impl LocalCacheProvider {
    /// Saves the cache's data as snapshot `name` of `kind`: `SAVE` on each
    /// shard's primary, then its dump copied out (through a temporary
    /// file, so a half-copied dump is never taken for a snapshot); the
    /// record last. Nothing happens when it exists already.
    async fn save_snapshot(
        &self,
        record: &Record,
        paths: &Paths,
        name: &str,
        kind: SnapshotKind,
    ) -> Result<Progress, ProviderError> {
        let dir = self.snapshot_dir(&record.instance_id);
        let (dump, about) = self.snapshot_files(&Self::reference(&record.instance_id, name))?;
        if about.exists() {
            return Ok(Progress::Done);
        }
        let shards = Layout::of_record(record).shards;
        create_dir(&dir)?;
        for shard in 0..shards {
            let (place, mut connection) = self.shard_primary_connection(record, paths, shard).await?;
            redis::cmd("SAVE").query_async::<()>(&mut connection).await.map_err(|e| {
                redis_failure(&format!("could not save the data of instance {}", record.instance_id), &e, &[])
            })?;
            let data = paths.node(record.nodes[place].dir).data;
            copy_file(&data.join("dump.rdb"), &shard_file(&dump, shard))?;
        }
        let snapshot = SnapshotRecord {
            name: name.to_string(),
            kind,
            created_at: broker_core::domain::now(),
            engine: record.engine,
            engine_version: record.engine_version.clone(),
            shards,
        };
        let json = serde_json::to_vec_pretty(&snapshot)
            .map_err(|e| ProviderError::Permanent(format!("could not encode the snapshot record: {e}")))?;
        write_file(&about, &json)?;
        tracing::info!(instance_id = %record.instance_id, snapshot = name, "local snapshot taken");
        Ok(Progress::Done)
    }

    /// An admin connection to shard `shard`'s primary as it is now (the
    /// primary's place without cluster mode; in cluster mode whichever
    /// node of the shard says it is primary), and its place.
    async fn shard_primary_connection(
        &self,
        record: &Record,
        paths: &Paths,
        shard: u8,
    ) -> Result<(usize, MultiplexedConnection), ProviderError> {
        let connections = self.admin_connections(record, paths).await?;
        let mut candidates = connections.into_iter().filter(|(place, _)| record.nodes[*place].shard == shard);
        if !record.cluster_mode {
            return candidates.find(|(place, _)| !record.nodes[*place].replica).ok_or_else(|| {
                ProviderError::Retryable(format!(
                    "the primary of instance {} is not running",
                    record.instance_id
                ))
            });
        }
        for (place, mut connection) in candidates {
            let info: String =
                redis::cmd("INFO").arg("replication").query_async(&mut connection).await.map_err(|e| {
                    redis_failure(
                        &format!("could not read the role of a node of {}", record.instance_id),
                        &e,
                        &[],
                    )
                })?;
            if info_field(&info, "role") == "master" {
                return Ok((place, connection));
            }
        }
        Err(ProviderError::Retryable(format!(
            "no primary of shard {} of instance {} answers",
            u32::from(shard) + 1,
            record.instance_id
        )))
    }

    /// The final snapshot of a cache being deleted, named after the
    /// deprovision (`key`): its servers are started again for it when they
    /// are not running, since only a running server writes a dump.
    pub(super) async fn take_final_snapshot(
        &self,
        record: &Record,
        paths: &Paths,
        key: &str,
    ) -> Result<Progress, ProviderError> {
        let name = final_name(key);
        if self.snapshot_files(&Self::reference(&record.instance_id, &name))?.1.exists() {
            return Ok(Progress::Done);
        }
        if self.node_pids(record, paths).iter().any(Option::is_none)
            && let Progress::Working { detail } = self.start(record.clone(), paths).await?
        {
            return Ok(Progress::Working {
                detail: format!("starting the server to take its final snapshot: {detail}"),
            });
        }
        let record = read_record(paths)?.unwrap_or_else(|| record.clone());
        self.save_snapshot(&record, paths, &name, SnapshotKind::Final).await
    }

    /// Removes the named snapshots of a deleted cache; its final ones stay.
    pub(super) fn delete_named_snapshots(&self, instance_id: &str) -> Result<(), ProviderError> {
        for snapshot in self.list_snapshots(instance_id)? {
            if snapshot.kind == SnapshotKind::Named {
                self.remove_snapshot(instance_id, &snapshot.name)?;
            }
        }
        Ok(())
    }

    fn remove_snapshot(&self, instance_id: &str, name: &str) -> Result<(), ProviderError> {
        let (dump, about) = self.snapshot_files(&Self::reference(instance_id, name))?;
        // The other shards' dumps are found by their names: the record
        // that counts them may be gone already, after a failed removal.
        let prefix = format!("{name}.shard-");
        let shards: Vec<PathBuf> = fs::read_dir(self.snapshot_dir(instance_id))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&prefix)))
            .collect();
        // The record first: without it the dumps are no snapshot.
        for path in [about, dump].into_iter().chain(shards) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ProviderError::Retryable(format!(
                        "could not remove {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) fn list_snapshots(&self, instance_id: &str) -> Result<Vec<Snapshot>, ProviderError> {
        let dir = self.snapshot_dir(instance_id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProviderError::Retryable(format!("could not list {}: {e}", dir.display()))),
        };
        let mut snapshots = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            if let Some(about) = read_json::<SnapshotRecord>(&path)? {
                snapshots.push(Snapshot {
                    reference: Self::reference(instance_id, &about.name),
                    name: about.name,
                    kind: about.kind,
                    status: "available".to_string(),
                    created_at: Some(about.created_at),
                });
            }
        }
        snapshots.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(snapshots)
    }

    /// Stops the servers and starts them again on the same data (the
    /// append-only files keep every write; a cluster's nodes.conf its
    /// shape).
    async fn restart(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let _guard = self.lock(instance_id).await;
        let (paths, record) = self.existing(instance_id)?;
        self.stop(&record, &paths).await?;
        tracing::info!(instance_id, servers = record.nodes.len(), "restarting local cache servers");
        self.start(record, &paths).await
    }

    pub(super) async fn plan_local_action(
        &self,
        instance_id: &str,
        action: &Action,
    ) -> Result<Vec<ActionStep>, ProviderError> {
        let (_, record) = self.existing(instance_id)?;
        match action {
            Action::Restart => Ok(vec![ActionStep::on(instance_id)]),
            Action::TestFailover if !record.engine.speaks_redis() => Err(ProviderError::Permanent(format!(
                "instance {instance_id} is Memcached, which has no replicas to fail over to"
            ))),
            Action::TestFailover if !record.nodes.iter().any(|n| n.replica) => {
                Err(ProviderError::Permanent(format!(
                    "instance {instance_id} has no replica to fail over to: its plan runs {}; choose a \
                     plan with replicas to test failover",
                    Layout::of_record(&record).describe()
                )))
            }
            // One shard at a time, as ElastiCache: `before` is who is
            // primary now, so a repeated start or a poll knows when the
            // shard has failed over.
            Action::TestFailover if record.cluster_mode => {
                let mut steps = Vec::new();
                for shard in 0..Layout::of_record(&record).shards {
                    let primary = self.shard_primary(&record, shard).await?;
                    steps.push(ActionStep { target: shard_name(shard), before: primary });
                }
                Ok(steps)
            }
            Action::TestFailover => {
                Ok(vec![ActionStep { target: shard_name(0), before: Some(record.nodes[0].dir.to_string()) }])
            }
            // The servers are the ones installed on the laptop: ElastiCache's
            // service updates have nothing to apply to.
            Action::Maintenance => Ok(Vec::new()),
            Action::Snapshot { name } | Action::DeleteSnapshot { name } => {
                if !record.engine.speaks_redis() {
                    return Err(ProviderError::Permanent(format!(
                        "instance {instance_id} is Memcached, which keeps no snapshots"
                    )));
                }
                Ok(vec![ActionStep::on(name.clone())])
            }
        }
    }

    pub(super) async fn start_local_action(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        match action {
            Action::Restart => self.restart(instance_id).await,
            Action::Maintenance => Ok(Progress::Done),
            Action::TestFailover => {
                self.fail_over(instance_id, shard_of(step)?, step.before.as_deref()).await
            }
            Action::Snapshot { .. } => {
                let _guard = self.lock(instance_id).await;
                let (paths, record) = self.existing(instance_id)?;
                self.save_snapshot(&record, &paths, &step.target, SnapshotKind::Named).await
            }
            Action::DeleteSnapshot { .. } => {
                self.remove_snapshot(instance_id, &step.target)?;
                Ok(Progress::Done)
            }
        }
    }

    pub(super) async fn local_action_progress(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        let exists = |name: &str| -> Result<bool, ProviderError> {
            Ok(self.snapshot_files(&Self::reference(instance_id, name))?.1.exists())
        };
        match action {
            Action::TestFailover => {
                let (_, record) = self.existing(instance_id)?;
                let shard = shard_of(step)?;
                let now = if record.cluster_mode {
                    self.shard_primary(&record, shard).await?
                } else {
                    Some(record.nodes[0].dir.to_string())
                };
                if now == step.before {
                    return Ok(Progress::Working {
                        detail: format!(
                            "shard {} of instance {instance_id} has not failed over yet",
                            step.target
                        ),
                    });
                }
                self.progress(instance_id).await
            }
            Action::Restart | Action::Maintenance => self.progress(instance_id).await,
            Action::Snapshot { .. } if exists(&step.target)? => Ok(Progress::Done),
            Action::Snapshot { name } => Err(ProviderError::Retryable(format!(
                "snapshot {name} of instance {instance_id} is not saved yet"
            ))),
            Action::DeleteSnapshot { name } if exists(&step.target)? => Err(ProviderError::Retryable(
                format!("snapshot {name} of instance {instance_id} is still there"),
            )),
            Action::DeleteSnapshot { .. } => Ok(Progress::Done),
        }
    }
}

/// A shard's name in a test failover's steps: `0001` for the first, as
/// ElastiCache numbers node groups.
fn shard_name(shard: u8) -> String {
    format!("{:04}", u32::from(shard) + 1)
}

/// The shard a test failover's step names.
fn shard_of(step: &ActionStep) -> Result<u8, ProviderError> {
    step.target
        .parse::<u8>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .ok_or_else(|| ProviderError::Permanent(format!("{:?} does not name a shard", step.target)))
}

/// The name of the final snapshot of the deprovision `key` names (its
/// operation id, `deprovision-<uuid>`): `final-` and the key's last twelve
/// letters and digits, so a retry finds the one it took.
fn final_name(key: &str) -> String {
    let tail: Vec<char> =
        key.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    let start = tail.len().saturating_sub(12);
    format!("final-{}", tail[start..].iter().collect::<String>())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ProviderError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ProviderError::Permanent(format!("{} is not valid ({e}); fix or remove it", path.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProviderError::Retryable(format!("could not read {}: {e}", path.display()))),
    }
}

/// Copies `from` to `to` through a temporary file and a rename, readable
/// by the owner only.
fn copy_file(from: &Path, to: &Path) -> Result<(), ProviderError> {
    let mut temporary = to.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let copied = fs::copy(from, &temporary)
        .and_then(|_| fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600)))
        .and_then(|()| fs::rename(&temporary, to));
    copied.map_err(|e| {
        ProviderError::Retryable(format!("could not copy {} to {}: {e}", from.display(), to.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::final_name;

    #[test]
    fn a_final_snapshot_is_named_after_its_deprovision() {
        assert_eq!(final_name("deprovision-0f8e2d1c-aaaa-bbbb-cccc-1234567890ab"), "final-1234567890ab");
        assert_eq!(final_name("x"), "final-x");
    }
}
