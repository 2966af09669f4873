//! The ports: narrow traits in domain words that the broker and the worker
//! depend on. Adapters implement them: embedded ones for laptop mode, AWS ones
//! for Lambda. No AWS SDK type appears in any signature.

use async_trait::async_trait;
use secrecy::SecretString;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::domain::{
    Action, ActionStep, AlarmThresholds, Binding, CacheUser, Endpoint, Engine, Instance, LogType, Operation,
    OperationKind, OperationState, Plan, Pool, ResourceKind, Service, Snapshot, Sweep, Timestamp,
};

// ---------------------------------------------------------------- store

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the record already there.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A conditional write lost: someone else changed the record first.
    #[error("{0} was changed concurrently")]
    Conflict(String),
    /// The backend failed; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the request as wrong or not allowed (a
    /// validation error, access denied): retrying will not help until the
    /// broker or its permissions change.
    #[error("the store refused the request: {0}")]
    Refused(String),
}

impl StoreError {
    /// A lost race (the record was created or changed by someone else):
    /// read again and decide again.
    pub fn is_race(&self) -> bool {
        matches!(self, StoreError::AlreadyExists(_) | StoreError::Conflict(_))
    }
}

/// The catalog as the store holds it.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    async fn services(&self) -> Result<Vec<Service>, StoreError>;
    async fn plans(&self) -> Result<Vec<Plan>, StoreError>;
    /// A number that changes whenever the catalog does, when the store can
    /// tell cheaply (SQLite counts its writes); `None` when it cannot, and the
    /// broker then reuses what it read for `catalog_ttl`.
    async fn catalog_version(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Inserts services and plans that are not there yet; leaves existing ones
    /// alone, so an operator's change survives a restart.
    async fn seed(&self, services: &[Service], plans: &[Plan]) -> Result<usize, StoreError>;
    /// Inserts or replaces: an operator's deliberate change.
    async fn put_service(&self, service: &Service) -> Result<(), StoreError>;
    async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError>;
}

/// Instances, bindings and operations. Writes are conditional on the record's
/// `version`, and bump it; a lost race is [`StoreError::Conflict`].
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError>;
    /// Every instance not yet purged (laptop adoption and reapers use it).
    async fn instances(&self) -> Result<Vec<Instance>, StoreError>;
    /// Writes a new instance and its first operation together. Fails with
    /// `AlreadyExists` when the id is taken, unless `replacing` names the
    /// version of a deleted or failed record being reused.
    async fn create_instance(
        &self,
        instance: &mut Instance,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Writes the instance, and the operation if given, in one transaction.
    async fn save_instance(
        &self,
        instance: &mut Instance,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError>;

    async fn binding(&self, instance_id: &str, binding_id: &str) -> Result<Option<Binding>, StoreError>;
    /// A binding and its instance, in one read where the store can (a
    /// fetch of a binding needs both).
    async fn binding_and_instance(
        &self,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<(Option<Binding>, Option<Instance>), StoreError> {
        Ok((self.binding(instance_id, binding_id).await?, self.instance(instance_id).await?))
    }
    async fn bindings(&self, instance_id: &str) -> Result<Vec<Binding>, StoreError>;
    async fn create_binding(
        &self,
        binding: &mut Binding,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn save_binding(
        &self,
        binding: &mut Binding,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError>;
    /// A bind that claims one of the instance's spare users, in one
    /// transaction: the instance as changed (the spare taken out, and
    /// `spares_operation` naming `spares_op` when one starts), that new
    /// operation, and the new binding with its bind operation. The instance
    /// is written at its loaded version (`Conflict` when someone changed it,
    /// so no spare goes to two binds); the binding and its operation as in
    /// [`StateStore::create_binding`].
    async fn claim_spare(
        &self,
        instance: &mut Instance,
        spares_op: Option<&mut Operation>,
        binding: &mut Binding,
        bind_op: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError>;

    /// The warm pool of `plan_id` (see [`crate::domain::pool`]); `None`
    /// when it was never stored.
    async fn pool(&self, plan_id: &str) -> Result<Option<Pool>, StoreError>;
    /// Every stored pool, in one read (the reconciler's pass).
    async fn pools(&self) -> Result<Vec<Pool>, StoreError>;
    /// Writes `pool` at its loaded version (a pool at version 0 is
    /// created: `AlreadyExists` when someone stored it first) together with
    /// `change`, all or nothing; `Conflict` when someone changed the pool or
    /// a record of the change first.
    async fn save_pool(&self, pool: &mut Pool, change: PoolChange<'_>) -> Result<(), StoreError>;

    /// The orphan sweep's record (see [`crate::domain::sweep`]); `None`
    /// before the first pass stored it.
    async fn sweep(&self) -> Result<Option<Sweep>, StoreError>;
    /// Writes the sweep's record at its loaded version (version 0 creates
    /// it: `AlreadyExists` when someone stored it first); `Conflict` when
    /// another pass wrote it first.
    async fn save_sweep(&self, sweep: &mut Sweep) -> Result<(), StoreError>;

    async fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError>;
    /// An instance and its operation `operation_id` (its last one when
    /// `None`), in one read where the store can (a poll of
    /// `last_operation` needs both).
    async fn instance_and_operation(
        &self,
        instance_id: &str,
        operation_id: Option<&str>,
    ) -> Result<(Option<Instance>, Option<Operation>), StoreError> {
        let Some(instance) = self.instance(instance_id).await? else {
            return Ok((None, None));
        };
        let operation = self.operation(operation_id.unwrap_or(&instance.last_operation_id)).await?;
        Ok((Some(instance), operation))
    }
    /// Operations still in progress (laptop start-up re-enqueues their jobs).
    async fn operations_in_progress(&self) -> Result<Vec<Operation>, StoreError>;
    async fn save_operation(&self, operation: &mut Operation) -> Result<(), StoreError>;
    /// Deletes finished records whose `expires_at` has passed.
    async fn purge_expired(&self, now: i64) -> Result<usize, StoreError>;
}

/// What is written with a pool (see [`StateStore::save_pool`]).
pub enum PoolChange<'a> {
    /// Only the pool's list (a member that is gone taken off it).
    Nothing,
    /// A new member's record and its provision operation, both created.
    Add { member: &'a mut Instance, operation: &'a mut Operation },
    /// A member leaving the pool: its record, saved at its loaded version
    /// (being deprovisioned), and that new operation.
    Retire { member: &'a mut Instance, operation: &'a mut Operation },
    /// A provision taking a member's cache: the member (claimed, pointing
    /// at `instance`) saved at its loaded version; the new instance created
    /// (or replacing the deleted record at that version) with its
    /// provision, already succeeded, and the operation that tags the cache
    /// for its tenant.
    Claim {
        member: &'a mut Instance,
        instance: &'a mut Instance,
        provision: &'a mut Operation,
        tagging: &'a mut Operation,
        replacing: Option<u64>,
    },
}

/// Everything the broker keeps.
pub trait Store: CatalogStore + StateStore {}
impl<T: CatalogStore + StateStore> Store for T {}

// ---------------------------------------------------------------- queue

/// A unit of work for the worker: "advance this operation". Versioned so the
/// format can change without losing messages in flight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// Message format version; this code writes and reads version 1.
    pub v: u32,
    pub operation_id: String,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
}

impl Job {
    pub const VERSION: u32 = 1;

    pub fn for_operation(op: &Operation) -> Job {
        Job {
            v: Job::VERSION,
            operation_id: op.id.clone(),
            instance_id: op.instance_id.clone(),
            binding_id: op.binding_id.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("job queue unavailable: {0}")]
pub struct QueueError(pub String);

/// Where jobs wait for the worker.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues `job`, visible to the worker after `delay_secs` (at most 900,
    /// as SQS allows).
    async fn enqueue(&self, job: &Job, delay_secs: u32) -> Result<(), QueueError>;
}

// ---------------------------------------------------------------- cache provider

/// How a provider call ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The requested state is reached.
    Done,
    /// Still working; `detail` says how far ("2 of 6 nodes available").
    Working { detail: String },
}

/// Why a provider call failed: every error is one or the other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Try again later (throttling, a busy resource, a network blip).
    #[error("{0}")]
    Retryable(String),
    /// Retrying will not help; the operation fails with this description.
    #[error("{0}")]
    Permanent(String),
}

/// What the provider needs to create or modify a cache.
#[derive(Debug, Clone)]
pub struct CacheSpec {
    /// The key the cache's names derive from ([`Instance::cache_key`]).
    pub cache_key: String,
    pub engine: Engine,
    pub engine_version: String,
    pub plan: Plan,
    /// Reference to the admin credential in the secret store (Redis OSS and
    /// Valkey; Memcached has none).
    pub admin_secret: Option<String>,
    /// Tags for the resource (organization, space, plan ...).
    pub tags: Vec<(String, String)>,
    /// The logs the cache delivers ([`crate::domain::params::log_delivery`]):
    /// ElastiCache sends them to a CloudWatch Logs group of the cache's own;
    /// a backend without log delivery ignores them.
    pub log_delivery: Vec<LogType>,
    /// Binding users to make with the cache, so that they are ready when it
    /// is: the instance's spare users (ElastiCache puts them in the user
    /// group it creates). Only a provider whose users take time to add is
    /// given any (see [`CacheProvider::users_change_at_once`]).
    pub spare_users: Vec<CacheUser>,
    /// The snapshot a new cache is made from ([`Snapshot::reference`] of
    /// one of [`CacheProvider::snapshots`]); `None` for an empty cache.
    /// Only `create` reads it.
    pub restore: Option<String>,
    /// The eviction policy, windows and snapshot retention
    /// ([`crate::domain::settings::of`] the instance's parameters).
    pub settings: crate::domain::settings::CacheSettings,
}

/// A cache backend: ElastiCache in AWS, local processes on a laptop.
/// Every call is idempotent: repeating it changes nothing twice, and `create`
/// adopts what an earlier attempt made. Calls name a cache by its key
/// ([`Instance::cache_key`], the `instance_id` parameters): the instance's
/// id, or the warm-pool member's whose cache it took.
#[async_trait]
pub trait CacheProvider: Send + Sync {
    /// Whether `put_user` and `delete_user` take effect before they return
    /// (`Done` at once), so that a bind and an unbind can finish inside the
    /// request. Local processes: yes. ElastiCache adds a user to a user group
    /// in minutes: no, so instances keep spare users for binds to claim.
    fn users_change_at_once(&self) -> bool;
    async fn create(&self, spec: &CacheSpec) -> Result<Progress, ProviderError>;
    /// How far creation or modification has got.
    async fn progress(&self, instance_id: &str) -> Result<Progress, ProviderError>;
    async fn modify(&self, spec: &CacheSpec) -> Result<Progress, ProviderError>;
    /// Adds `spec.tags` to the cache, replacing the values of keys it has
    /// (a warm-pool cache gets its tenant's tags when a provision claims
    /// it). A backend without tags has nothing to do.
    async fn retag(&self, spec: &CacheSpec) -> Result<Progress, ProviderError>;
    /// Deletes the cache and everything it holds; `Done` once it is gone
    /// (and at once when there was nothing). With `final_snapshot` (given
    /// when the plan keeps one: a key unique to this deprovision, its
    /// operation id), a backend that keeps snapshots takes one of the data
    /// first, under a name derived from `instance_id` and that key: a
    /// repeated call asks for the same snapshot, and a later deprovision of
    /// a reused instance id takes a new one instead of failing on the name.
    /// The snapshot outlives the cache. Backends without snapshots
    /// (Memcached, laptop processes) ignore it.
    async fn delete(
        &self,
        instance_id: &str,
        final_snapshot: Option<&str>,
    ) -> Result<Progress, ProviderError>;
    async fn endpoint(&self, instance_id: &str) -> Result<Endpoint, ProviderError>;
    /// The cache's nodes as its metrics name them: what [`Alarms::put`]
    /// watches. Empty when the cache does not exist.
    async fn nodes(&self, instance_id: &str) -> Result<Vec<CacheNode>, ProviderError>;
    /// Creates the user, or resets an existing one to exactly these passwords
    /// and rules.
    async fn put_user(&self, instance_id: &str, user: &CacheUser) -> Result<Progress, ProviderError>;
    /// Removes the user; `Done` at once when it does not exist (nor the
    /// instance's cache). Its open connections are closed, so access ends
    /// immediately. A user the cache is gone without (one made but never
    /// added to a user group) is deleted too.
    async fn delete_user(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError>;
    /// Whether a user created or changed by `put_user` is active yet.
    async fn user_progress(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError>;

    /// The units `action` goes through on the cache, in the order they
    /// run (see [`crate::domain::day2`]): each node to reboot, replicas
    /// first; each node group to fail over, with its primary noted; the
    /// snapshot to take or delete. An action the cache cannot do is a
    /// permanent error saying why (the broker refuses it first, where it
    /// can tell from the plan).
    async fn plan_action(&self, instance_id: &str, action: &Action)
    -> Result<Vec<ActionStep>, ProviderError>;
    /// Starts `action` on one of its units. Repeating the call while that
    /// unit is still at it changes nothing (a node being rebooted is not
    /// rebooted again; a snapshot of that name is not taken twice).
    async fn start_action(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError>;
    /// `Done` once `action` has finished on that unit: the node answers
    /// again, the node group has a new primary, the snapshot is available
    /// (or gone).
    async fn action_progress(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError>;
    /// The cache's snapshots: named, automatic and final ones, including
    /// those that outlived the cache. Empty for a cache without snapshots
    /// (Memcached) or that never existed. `final_key` names the
    /// deprovision of a deleted cache (as [`CacheProvider::delete`] was
    /// given it), so its final snapshot is found by name.
    async fn snapshots(
        &self,
        instance_id: &str,
        final_key: Option<&str>,
    ) -> Result<Vec<Snapshot>, ProviderError>;
    /// Sets the passwords `principal` is accepted with to exactly
    /// `passwords`, the newest first: one or two, none empty. Other rules of
    /// the user stay as they are. This is how a rotation runs: `[new, old]`
    /// (both work), the grace period, then `[new]` (only the new one works).
    /// The admin of a cache without users (Redis OSS before 6) has an AUTH
    /// token instead: two passwords rotate it (ElastiCache's `ROTATE`: the
    /// old and the new one are accepted), one sets it (`SET`: only that one).
    /// Repeating a call is harmless. Memcached has no passwords: a call for
    /// it is a permanent error.
    async fn set_passwords(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError>;
    /// `Done` once the last `set_passwords` is in effect: `principal` is
    /// accepted with each of `passwords` (a backend that cannot try them,
    /// like ElastiCache from outside the VPC, checks what it can: the user
    /// or the replication group is active and holds that many passwords).
    async fn passwords_progress(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError>;
}

/// Whose password a rotation changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The broker's own admin of the instance (an RBAC user, or the AUTH
    /// token of a cache without users).
    Admin,
    /// A binding's cache user, by user name.
    User(String),
}

impl Principal {
    /// How logs and errors name it.
    pub fn describe(&self) -> String {
        match self {
            Principal::Admin => "the admin credential".to_string(),
            Principal::User(name) => format!("cache user {name}"),
        }
    }
}

// ---------------------------------------------------------------- alarms

/// One node of a cache, as the cache's metrics name it: a replication
/// group's member cluster (one node each), or a Memcached cluster's node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheNode {
    /// The cache cluster id (`CacheClusterId`).
    pub cluster_id: String,
    /// The node within it (`CacheNodeId`), for a cluster of several nodes
    /// (Memcached); `None` for a cluster of one.
    pub node_id: Option<String>,
}

impl CacheNode {
    /// How alarm names and the fetch response name it.
    pub fn label(&self) -> String {
        match &self.node_id {
            Some(node) => format!("{}/{node}", self.cluster_id),
            None => self.cluster_id.clone(),
        }
    }
}

/// What the alarms of one cache watch.
#[derive(Debug, Clone)]
pub struct AlarmSpec {
    /// The key the cache's names derive from ([`Instance::cache_key`]).
    pub cache_key: String,
    pub engine: Engine,
    /// Every node of the cache ([`CacheProvider::nodes`]).
    pub nodes: Vec<CacheNode>,
    pub thresholds: AlarmThresholds,
    /// The instance's tags, as its cache has them ([`CacheSpec::tags`]).
    pub tags: Vec<(String, String)>,
}

/// One alarm of a cache and its state, as fetching the instance shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlarmStatus {
    /// The metric it watches (`EngineCPUUtilization` ...).
    pub metric: String,
    /// The node it watches ([`CacheNode::label`]).
    pub node: String,
    /// Above this the alarm goes off.
    pub threshold: f64,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// When the state last changed (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Alarms on the caches' metrics: CloudWatch in AWS, none on a laptop.
/// Every call is idempotent.
#[async_trait]
pub trait Alarms: Send + Sync {
    /// Makes the cache's alarms exactly what `spec` asks for: one per node
    /// and metric with a threshold, created or brought up to date, and the
    /// cache's other alarms (nodes gone, a threshold turned off) deleted.
    /// Returns how many the cache has.
    async fn put(&self, spec: &AlarmSpec) -> Result<usize, ProviderError>;
    /// Deletes every alarm of the cache; `Ok` when it has none.
    async fn delete(&self, cache_key: &str) -> Result<(), ProviderError>;
    /// The cache's alarms and their states; `None` when the backend keeps
    /// no alarms at all.
    async fn states(&self, cache_key: &str) -> Result<Option<Vec<AlarmStatus>>, ProviderError>;
}

/// No alarms: laptop mode, and AWS without CloudWatch.
pub struct NoAlarms;

#[async_trait]
impl Alarms for NoAlarms {
    async fn put(&self, _: &AlarmSpec) -> Result<usize, ProviderError> {
        Ok(0)
    }
    async fn delete(&self, _: &str) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn states(&self, _: &str) -> Result<Option<Vec<AlarmStatus>>, ProviderError> {
        Ok(None)
    }
}

// ---------------------------------------------------------------- cache metrics

/// What a series' values count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    Percent,
    Count,
    Bytes,
}

/// One metric of one node over time, as the dashboard page charts it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// ElastiCache's name of the metric (`EngineCPUUtilization` ...).
    pub metric: String,
    pub unit: MetricUnit,
    /// The node measured ([`CacheNode::label`]).
    pub node: String,
    /// The plan's alarm threshold for the metric, when it sets one.
    pub threshold: Option<f64>,
    /// (time, value), oldest first.
    pub points: Vec<(Timestamp, f64)>,
}

/// What the caches' nodes measured: CloudWatch's ElastiCache metrics in
/// AWS, the servers' own counters (`INFO`, `stats`) sampled by the broker
/// on a laptop. Read-only; the dashboard page calls it.
#[async_trait]
pub trait CacheMetrics: Send + Sync {
    /// The CPU, memory and connections of each node `spec` names from
    /// `since` to `until`, one series per node and metric, with the plan's
    /// thresholds. `None` where the backend measures nothing.
    async fn recent(
        &self,
        spec: &AlarmSpec,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Vec<MetricSeries>>, ProviderError>;
}

/// Nothing measured: tests, and a backend without metrics.
pub struct NoCacheMetrics;

#[async_trait]
impl CacheMetrics for NoCacheMetrics {
    async fn recent(
        &self,
        _: &AlarmSpec,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Option<Vec<MetricSeries>>, ProviderError> {
        Ok(None)
    }
}

// ---------------------------------------------------------------- inventory

/// The cache keys ([`Instance::cache_key`]) of every instance not deleted:
/// what the orphan sweep gives an inventory, which leaves out whatever
/// those caches' own names and user groups hold.
pub type LiveCaches = BTreeSet<String>;

/// Whose a listed resource is, as far as its inventory can tell; the sweep
/// checks the rest against the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No live cache's names hold it: no record names it.
    Nobody,
    /// A user of the live cache `key` that its user group does not hold
    /// (one being made or deleted, or left behind): named when a spare or
    /// a binding of that cache's instance names `username`.
    UserOf { key: String, username: String },
    /// A secret: its name says whose credential it holds
    /// ([`crate::rotation::Target`]).
    SecretName,
}

/// A resource of the broker's that the live caches do not account for: a
/// candidate orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub kind: ResourceKind,
    /// Its id or name, as logs give it.
    pub id: String,
    /// How its service addresses it for tags and deletion (an ARN, or the
    /// id again).
    pub reference: String,
    pub claim: Claim,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftoverPage {
    pub leftovers: Vec<Leftover>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

/// How a removal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Deleted, or its deletion started.
    Removed,
    /// It was gone already.
    Gone,
    /// Its tags do not say it is this broker's: left alone.
    NotOurs,
}

/// What lists and deletes the broker's own resources for the orphan sweep
/// (see [`crate::reconcile`]): the cache provider's caches, user groups and
/// users, and the secret store's secrets. Only resources under the broker's
/// name prefix are listed, and only those whose tags say they are the
/// broker's are deleted.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// The kinds it lists, in the order a round takes them.
    fn kinds(&self) -> &'static [ResourceKind];
    /// One page (at most 100) of the broker's resources of `kind` that
    /// `live` does not account for, from `token` (an earlier page's
    /// `next`). Resources being deleted are left out.
    async fn leftovers(
        &self,
        kind: ResourceKind,
        token: Option<&str>,
        live: &LiveCaches,
    ) -> Result<LeftoverPage, ProviderError>;
    /// Deletes `leftover` once its tags are checked. A replication group
    /// keeps a final snapshot; a user group or user still in use is a
    /// retryable error.
    async fn remove(&self, leftover: &Leftover) -> Result<Removal, ProviderError>;
}

// ---------------------------------------------------------------- secrets

/// Version stages, as Secrets Manager names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Current,
    Pending,
    Previous,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }
}

/// One version of a secret and the stages it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// The version id (a rotation's ClientRequestToken).
    pub id: String,
    /// The stages among AWSCURRENT, AWSPENDING and AWSPREVIOUS it carries.
    pub stages: Vec<Stage>,
}

/// What a secret is, without its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The secret's name (`<prefix>/instances/<id>/admin` ...).
    pub name: String,
    pub versions: Vec<SecretVersion>,
    /// Days between scheduled rotations; `None` when rotation is off.
    pub rotation_days: Option<u32>,
}

impl SecretInfo {
    /// The stages of version `id`; `None` when the secret has no such version.
    pub fn stages_of(&self, id: &str) -> Option<&[Stage]> {
        self.versions.iter().find(|v| v.id == id).map(|v| v.stages.as_slice())
    }

    /// The id of the version at `stage`.
    pub fn version_at(&self, stage: Stage) -> Option<&str> {
        self.versions.iter().find(|v| v.stages.contains(&stage)).map(|v| v.id.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    /// Refused as wrong or not allowed (access denied, a validation error):
    /// retrying will not help until the broker or its permissions change.
    #[error("the secret store refused the call: {0}")]
    Refused(String),
}

/// Where passwords live; records hold only the reference this returns.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Creates the secret `name` with `value` as its current version and
    /// returns its reference. If it exists already, leaves it unchanged and
    /// returns its reference, so a retried step keeps the first password.
    async fn create(&self, name: &str, value: &SecretString) -> Result<String, SecretError>;
    /// Reads the version at `stage`; `None` when no version has that stage.
    async fn read(&self, reference: &str, stage: Stage) -> Result<Option<SecretString>, SecretError>;
    /// Deletes the secret; fine when it is already gone.
    async fn delete(&self, reference: &str) -> Result<(), SecretError>;
    /// Adds `value` as version `version_id` of the existing secret, labelled
    /// AWSPENDING (the first step of a rotation; its ClientRequestToken is
    /// the version id). Putting the same `version_id` again is harmless and
    /// keeps the first value, so a retried step keeps the first password.
    async fn put_pending(
        &self,
        reference: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<(), SecretError>;
    /// Moves AWSCURRENT to version `version_id` (the last step of a
    /// rotation): the old current version becomes AWSPREVIOUS and AWSPENDING
    /// is removed. Promoting the current version again changes nothing.
    async fn promote(&self, reference: &str, version_id: &str) -> Result<(), SecretError>;
    /// The reference of the secret called `name`, whether or not it exists, so
    /// clean-up can delete a secret whose reference was never recorded (a
    /// step that crashed between creating it and saving the reference).
    /// Secrets Manager takes a name wherever it takes an ARN.
    fn reference_for(&self, name: &str) -> String {
        name.to_string()
    }
    /// The secret's name, versions and rotation schedule (DescribeSecret);
    /// `NotFound` when there is no such secret (or it is deleted).
    async fn describe(&self, reference: &str) -> Result<SecretInfo, SecretError>;
    /// The value of version `version_id`; `None` when there is no such
    /// version (a rotation step reads its AWSPENDING version by its token).
    async fn read_version(
        &self,
        reference: &str,
        version_id: &str,
    ) -> Result<Option<SecretString>, SecretError>;
    /// Rotates the secret every `days` days from now on, without rotating it
    /// now (Secrets Manager: RotateSecret naming the rotation function and
    /// the schedule). Repeating it is harmless.
    async fn schedule_rotation(&self, reference: &str, days: u32) -> Result<(), SecretError>;
}

/// An instance's admin password, read from the secret its record names, with
/// errors an operator can act on: a missing reference or secret is permanent,
/// an unreachable secret store retryable. Both cache providers use it.
pub async fn read_admin_password(
    secrets: &dyn SecretStore,
    reference: Option<&str>,
    instance_id: &str,
    engine: Engine,
) -> Result<SecretString, ProviderError> {
    let Some(reference) = reference else {
        return Err(ProviderError::Permanent(format!(
            "instance {instance_id} has no admin secret reference, which {} needs",
            engine.as_str()
        )));
    };
    match secrets.read(reference, Stage::Current).await {
        Ok(Some(password)) => Ok(password),
        Ok(None) => {
            Err(ProviderError::Permanent(format!("the admin secret {reference} has no current version")))
        }
        Err(SecretError::NotFound(_)) => {
            Err(ProviderError::Permanent(format!("the admin secret {reference} does not exist")))
        }
        Err(e @ SecretError::Refused(_)) => {
            Err(ProviderError::Permanent(format!("could not read the admin secret {reference}: {e}")))
        }
        Err(e @ SecretError::Unavailable(_)) => {
            Err(ProviderError::Retryable(format!("could not read the admin secret {reference}: {e}")))
        }
    }
}

/// One HTTP request as the metrics count it: the route's template (ids are
/// never labels), the method, the status sent and the time taken. Route
/// and method are static, drawn from a fixed list, so that no request can
/// add a label value of its own.
#[derive(Debug, Clone, Copy)]
pub struct RequestSample {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
    pub elapsed: Duration,
}

/// The broker's own metrics. In Lambda they leave as CloudWatch Embedded
/// Metric Format lines on the function's log stream (no API call); laptop
/// mode keeps them and serves them at `GET /metrics`.
pub trait Metrics: Send + Sync {
    fn request(&self, sample: &RequestSample);
    /// The worker takes an operation up for the first time. (A job
    /// delivered twice before its first step was recorded counts twice.)
    fn operation_started(&self, kind: OperationKind, plan_id: &str);
    /// An operation ended, `took` after it started.
    fn operation_finished(&self, kind: OperationKind, plan_id: &str, state: OperationState, took: Duration);
    /// A step failed in a way worth trying again, after a back-off.
    fn step_retried(&self, kind: OperationKind);
    /// A job went back to the queue (waiting for the cache, or a retry).
    fn job_requeued(&self, kind: OperationKind);
    /// A job arrived from the queue `age` after it was sent (any delay the
    /// worker asked for included).
    fn job_received(&self, age: Duration);
    /// Every metric in Prometheus' text format, where this adapter serves
    /// them; `None` where they leave another way.
    fn prometheus_text(&self) -> Option<String> {
        None
    }
}

/// Counts nothing (tests that do not look at metrics).
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn request(&self, _: &RequestSample) {}
    fn operation_started(&self, _: OperationKind, _: &str) {}
    fn operation_finished(&self, _: OperationKind, _: &str, _: OperationState, _: Duration) {}
    fn step_retried(&self, _: OperationKind) {}
    fn job_requeued(&self, _: OperationKind) {}
    fn job_received(&self, _: Duration) {}
}
