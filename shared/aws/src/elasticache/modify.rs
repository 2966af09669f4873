//! `modify`: brings a cache to the shape of a (new) plan and engine version.
//!
//! ElastiCache takes one change at a time: a replica count change, a
//! ModifyReplicationGroup or a resharding each leave the group `modifying`
//! and refuse the next until it is `available` again. So `modify` works out
//! every change still needed, starts the first, and answers `Working` naming
//! it and how many follow; called again once the group is available, it
//! starts the next, and answers `Done` when nothing is left. The order keeps
//! each step valid: replicas are added before automatic failover is turned
//! on, and failover is turned off before the last replica goes.

use aws_sdk_elasticache::types::{AutomaticFailoverStatus, CacheCluster, MultiAzStatus, ReplicationGroup};

use super::failure::{Kind, classify};
use super::versions::{aws_engine_version, default_parameter_group, parameter_group_family};
use super::{ElastiCacheProvider, logs, working};
use broker_core::domain::{Engine, LogType};
use broker_core::ports::{CacheSpec, Progress, ProviderError};

/// What a replication group looks like now, as far as a plan cares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    /// The engine it runs (`redis`, `valkey`), as the group reports it.
    engine: Option<String>,
    cluster_mode: bool,
    node_type: Option<String>,
    /// `None` when no member cluster could be described.
    engine_version: Option<String>,
    shards: usize,
    /// Node group ids, in order (resharding down keeps the first ones).
    node_group_ids: Vec<String>,
    replicas_per_shard: usize,
    automatic_failover: bool,
    multi_az: bool,
    snapshot_retention: i32,
    /// The daily snapshot window, as the group reports it.
    snapshot_window: Option<String>,
    /// What a member cluster reports of the group: its maintenance window
    /// and parameter group. `None` when no member could be described.
    maintenance_window: Option<String>,
    parameter_group: Option<String>,
    /// Member clusters, replicas before the primary (the one to take daily
    /// snapshots from when they are turned on).
    members: Vec<String>,
    /// The logs it delivers (or is turning on).
    logs: Vec<LogType>,
}

/// The attributes one ModifyReplicationGroup call sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Settings {
    /// `valkey`, moving a Redis OSS group in place.
    engine: Option<String>,
    node_type: Option<String>,
    engine_version: Option<String>,
    parameter_group: Option<String>,
    automatic_failover: Option<bool>,
    multi_az: Option<bool>,
    snapshot_retention: Option<i32>,
    /// Turning daily snapshots on in a cluster-mode disabled group names
    /// the member to take them from (ModifyReplicationGroup refuses
    /// SnapshotRetentionLimit alone then).
    snapshotting_cluster: Option<String>,
    snapshot_window: Option<String>,
    maintenance_window: Option<String>,
    /// Logs to turn on and off.
    logs_on: Vec<LogType>,
    logs_off: Vec<LogType>,
    /// What changes, for a person: "node type cache.t4g.small → cache.m7g.large".
    what: Vec<String>,
}

/// One call of a modification.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    AddReplicas { from: usize, to: usize },
    Modify(Box<Settings>),
    RemoveReplicas { from: usize, to: usize },
    Reshard { from: usize, to: usize, retain: Vec<String> },
}

impl Change {
    fn describe(&self) -> String {
        match self {
            Change::AddReplicas { from, to } => format!("adding replicas: {from} → {to} per shard"),
            Change::RemoveReplicas { from, to } => format!("removing replicas: {from} → {to} per shard"),
            Change::Reshard { from, to, .. } => format!("resharding: {from} → {to} shards"),
            Change::Modify(s) => format!("modifying {}", s.what.join(", ")),
        }
    }
}

impl ElastiCacheProvider {
    pub(super) async fn modify_cache(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        if spec.plan.serverless {
            let id = self.names.cache(&spec.cache_key);
            return match self.find(&id).await? {
                Some(super::Cache::Serverless(cache)) => self.modify_serverless(spec, &cache).await,
                Some(other) => Err(ProviderError::Permanent(format!(
                    "{} {id} is not serverless; it cannot become serverless",
                    other.what()
                ))),
                None => Err(ProviderError::Permanent(format!("no serverless cache {id} exists to modify"))),
            };
        }
        match spec.engine {
            Engine::Memcached => self.modify_memcached(spec).await,
            Engine::Redis | Engine::Valkey => self.modify_group(spec).await,
        }
    }

    async fn modify_group(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        let Some(group) = self.find_group(&id).await? else {
            return Err(ProviderError::Permanent(format!("no replication group {id} exists to modify")));
        };
        let status = group.status().unwrap_or("unknown");
        if status != "available" {
            return Err(ProviderError::Retryable(format!(
                "replication group {id} is {status}; it is modified once it is available"
            )));
        }
        // Redis OSS to Valkey in place is the one engine change ElastiCache
        // makes (ElastiCache User Guide, "Upgrading engine versions including
        // cross engine upgrades").
        if let Some(engine) = group.engine()
            && !engine.eq_ignore_ascii_case(spec.engine.as_str())
            && !(engine.eq_ignore_ascii_case("redis") && spec.engine == Engine::Valkey)
        {
            return Err(ProviderError::Permanent(format!(
                "replication group {id} runs {engine}; changing it to {} is not supported",
                spec.engine.as_str()
            )));
        }
        let member = self.first_member(&group).await?;
        if member.is_none() {
            tracing::warn!(replication_group = %id, "no member cluster tells the engine version, maintenance window or parameter group; leaving them as they are");
        }
        let shape = shape_of(&group, member.as_ref());
        // The instance's own parameter group (its eviction policy set, at
        // once), which the group is then moved to if it is not on it.
        let own = self.ensure_parameter_group(spec).await?;
        let changes = plan_changes(&shape, spec, own.as_deref()).map_err(ProviderError::Permanent)?;
        self.refresh_tags(group.arn(), spec).await?;
        let Some(change) = changes.first() else {
            return Ok(Progress::Done);
        };
        let log_group = match change {
            // The group the cache will write to exists before it does.
            Change::Modify(s) if !s.logs_on.is_empty() => self.ensure_log_group(spec).await?,
            _ => self.log_group(&spec.cache_key),
        };
        self.apply(&id, change, &log_group).await?;
        tracing::info!(replication_group = %id, change = %change.describe(), "modifying replication group");
        let more = changes.len() - 1;
        let detail = if more == 0 {
            format!("replication group {id}: {}", change.describe())
        } else {
            format!(
                "replication group {id}: {} ({more} more to apply once it is available)",
                change.describe()
            )
        };
        Ok(working(detail))
    }

    async fn apply(&self, id: &str, change: &Change, log_group: &str) -> Result<(), ProviderError> {
        let sent = match change {
            Change::AddReplicas { to, .. } => self
                .client
                .increase_replica_count()
                .replication_group_id(id)
                .new_replica_count(count(*to))
                .apply_immediately(true)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("IncreaseReplicaCount", e)),
            Change::RemoveReplicas { to, .. } => self
                .client
                .decrease_replica_count()
                .replication_group_id(id)
                .new_replica_count(count(*to))
                .apply_immediately(true)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("DecreaseReplicaCount", e)),
            Change::Reshard { to, retain, .. } => self
                .client
                .modify_replication_group_shard_configuration()
                .replication_group_id(id)
                .node_group_count(count(*to))
                .set_node_groups_to_retain((!retain.is_empty()).then(|| retain.clone()))
                .apply_immediately(true)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("ModifyReplicationGroupShardConfiguration", e)),
            Change::Modify(s) => self
                .client
                .modify_replication_group()
                .replication_group_id(id)
                .apply_immediately(true)
                .set_engine(s.engine.clone())
                .set_cache_node_type(s.node_type.clone())
                .set_engine_version(s.engine_version.clone())
                .set_cache_parameter_group_name(s.parameter_group.clone())
                .set_automatic_failover_enabled(s.automatic_failover)
                .set_multi_az_enabled(s.multi_az)
                .set_snapshot_retention_limit(s.snapshot_retention)
                .set_snapshotting_cluster_id(s.snapshotting_cluster.clone())
                .set_snapshot_window(s.snapshot_window.clone())
                .set_preferred_maintenance_window(s.maintenance_window.clone())
                .set_log_delivery_configurations(
                    (!s.logs_on.is_empty() || !s.logs_off.is_empty())
                        .then(|| logs::requests(log_group, &s.logs_on, &s.logs_off)),
                )
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("ModifyReplicationGroup", e)),
        };
        match sent {
            Ok(()) => Ok(()),
            // The replica count is already what was asked.
            Err(f) if f.is(Kind::NoOperation) => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    /// The first member cluster that can be described: it tells the engine
    /// version, maintenance window and parameter group, which the
    /// replication group itself does not report.
    async fn first_member(&self, group: &ReplicationGroup) -> Result<Option<CacheCluster>, ProviderError> {
        for member in group.member_clusters() {
            if let Some(cluster) = self.find_cluster(member).await? {
                return Ok(Some(cluster));
            }
        }
        Ok(None)
    }

    /// Keeps the tags (the plan's among them) in step with the spec.
    pub(super) async fn refresh_tags(
        &self,
        arn: Option<&str>,
        spec: &CacheSpec,
    ) -> Result<(), ProviderError> {
        let Some(arn) = arn else { return Ok(()) };
        self.client_for(arn)
            .add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(self.cache_tags(spec)))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("AddTagsToResource", e).into())
    }

    async fn modify_memcached(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        let Some(cluster) = self.find_cluster(&id).await? else {
            return Err(ProviderError::Permanent(format!("no cache cluster {id} exists to modify")));
        };
        let status = cluster.cache_cluster_status().unwrap_or("unknown");
        if status != "available" {
            return Err(ProviderError::Retryable(format!(
                "cache cluster {id} is {status}; it is modified once it is available"
            )));
        }
        if let Some(refusal) = memcached_refusal(&cluster, spec) {
            return Err(ProviderError::Permanent(format!("cache cluster {id}: {refusal}")));
        }
        self.refresh_tags(cluster.arn(), spec).await?;
        let upgrade = !cluster.engine_version().is_some_and(|v| same_version(v, &spec.engine_version));
        let window = &spec.settings.maintenance_window;
        let move_window = cluster.preferred_maintenance_window().is_some_and(|w| w != window);
        if !upgrade && !move_window {
            return Ok(Progress::Done);
        }
        self.client
            .modify_cache_cluster()
            .cache_cluster_id(&id)
            .set_engine_version(upgrade.then(|| aws_engine_version(spec.engine, &spec.engine_version)))
            .set_preferred_maintenance_window(move_window.then(|| window.clone()))
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| classify("ModifyCacheCluster", e))?;
        let what = match (upgrade, move_window) {
            (true, true) => format!(
                "upgrading to Memcached {} and moving its maintenance window to {window}",
                spec.engine_version
            ),
            (true, false) => format!("upgrading to Memcached {}", spec.engine_version),
            _ => format!("moving its maintenance window to {window}"),
        };
        Ok(working(format!("cache cluster {id}: {what}")))
    }
}

/// What a Memcached cluster cannot be changed into here. Plans of Memcached
/// do not change (the broker refuses), so only the engine version moves.
fn memcached_refusal(cluster: &CacheCluster, spec: &CacheSpec) -> Option<String> {
    if cluster.cache_node_type().is_some_and(|t| t != spec.plan.node_type) {
        return Some(format!(
            "changing the node type to {} is not supported; create a new instance instead",
            spec.plan.node_type
        ));
    }
    if cluster.num_cache_nodes().is_some_and(|n| n != i32::from(spec.plan.cache_nodes)) {
        return Some(format!(
            "changing the number of nodes to {} is not supported; create a new instance instead",
            spec.plan.cache_nodes
        ));
    }
    None
}

fn shape_of(group: &ReplicationGroup, member: Option<&CacheCluster>) -> Shape {
    let node_groups = group.node_groups();
    let mut members: Vec<(String, bool)> = node_groups
        .iter()
        .flat_map(|g| g.node_group_members())
        .filter_map(|m| Some((m.cache_cluster_id()?.to_string(), m.current_role() == Some("primary"))))
        .collect();
    members.sort_by_key(|(_, primary)| *primary);
    Shape {
        engine: group.engine().map(str::to_ascii_lowercase),
        cluster_mode: group.cluster_enabled().unwrap_or(false),
        node_type: group.cache_node_type().map(str::to_string),
        engine_version: member.and_then(|m| m.engine_version().map(str::to_string)),
        snapshot_window: group.snapshot_window().map(str::to_string),
        maintenance_window: member.and_then(|m| m.preferred_maintenance_window().map(str::to_string)),
        parameter_group: member
            .and_then(|m| m.cache_parameter_group())
            .and_then(|g| g.cache_parameter_group_name().map(str::to_string)),
        members: members.into_iter().map(|(m, _)| m).collect(),
        shards: node_groups.len().max(1),
        node_group_ids: node_groups.iter().filter_map(|g| g.node_group_id().map(str::to_string)).collect(),
        replicas_per_shard: node_groups.first().map_or(0, |g| g.node_group_members().len().saturating_sub(1)),
        automatic_failover: matches!(
            group.automatic_failover(),
            Some(AutomaticFailoverStatus::Enabled | AutomaticFailoverStatus::Enabling)
        ),
        multi_az: matches!(group.multi_az(), Some(MultiAzStatus::Enabled)),
        snapshot_retention: group.snapshot_retention_limit().unwrap_or(0),
        logs: logs::delivered(group),
    }
}

/// The calls that take `current` to the spec, in the order to make them;
/// `Err` names what cannot be done. `own_parameters` is the instance's own
/// parameter group, when it has one.
fn plan_changes(
    current: &Shape,
    spec: &CacheSpec,
    own_parameters: Option<&str>,
) -> Result<Vec<Change>, String> {
    let plan = &spec.plan;
    if current.cluster_mode != plan.cluster_mode {
        return Err(format!(
            "changing cluster mode ({} → {}) is not supported; create a new instance instead",
            on_off(current.cluster_mode),
            on_off(plan.cluster_mode)
        ));
    }
    let replicas = usize::from(plan.replicas_per_shard);
    let shards = usize::from(plan.shards.max(1));
    if !plan.cluster_mode && shards > 1 {
        return Err(format!("{shards} shards need cluster mode, which this plan does not have"));
    }
    let mut changes = Vec::new();
    if replicas > current.replicas_per_shard {
        changes.push(Change::AddReplicas { from: current.replicas_per_shard, to: replicas });
    }

    let mut settings = Settings::default();
    if current.node_type.as_deref().is_some_and(|t| t != plan.node_type) {
        settings.what.push(format!(
            "node type {} → {}",
            current.node_type.as_deref().unwrap_or("?"),
            plan.node_type
        ));
        settings.node_type = Some(plan.node_type.clone());
    }
    let moving_from = current.engine.as_deref().filter(|e| *e != spec.engine.as_str());
    if let Some(from) = moving_from {
        // Engine and version in one call; a group on its own parameter
        // group moves to its own of the new engine's family (ElastiCache
        // wants a custom group of the new engine then), one on a default
        // group to the new family's default, which ElastiCache picks.
        settings.what.push(format!(
            "engine {from} {} → {} {}",
            current.engine_version.as_deref().unwrap_or("?"),
            spec.engine.as_str(),
            spec.engine_version
        ));
        settings.engine = Some(spec.engine.as_str().to_string());
        settings.engine_version = Some(aws_engine_version(spec.engine, &spec.engine_version));
        settings.parameter_group = own_parameters.map(str::to_string);
    } else if let Some(version) = &current.engine_version
        && !same_version(version, &spec.engine_version)
    {
        settings.what.push(format!("engine version {version} → {}", spec.engine_version));
        settings.engine_version = Some(aws_engine_version(spec.engine, &spec.engine_version));
        // A version of another parameter group family (a new major version)
        // needs a parameter group of that family, cluster mode or not; the
        // default one is what `create` chose. (ElastiCache User Guide,
        // "Upgrading engine versions": ModifyReplicationGroup takes the new
        // EngineVersion with a CacheParameterGroupName of its family.)
        if parameter_group_family(spec.engine, version)
            != parameter_group_family(spec.engine, &spec.engine_version)
        {
            settings.parameter_group = own_parameters
                .map(str::to_string)
                .or_else(|| default_parameter_group(spec.engine, &spec.engine_version, plan.cluster_mode));
        }
    }
    // An eviction policy chosen since the cache was made: its own group.
    if let (Some(own), Some(now)) = (own_parameters, &current.parameter_group)
        && settings.parameter_group.is_none()
        && moving_from.is_none()
        && own != now
    {
        settings.what.push(format!("parameter group {now} → {own}"));
        settings.parameter_group = Some(own.to_string());
    }
    let failover = plan.cluster_mode || (plan.automatic_failover && replicas > 0);
    if failover != current.automatic_failover {
        settings.what.push(format!("automatic failover {}", on_off(failover)));
        settings.automatic_failover = Some(failover);
    }
    let multi_az = plan.multi_az && failover && replicas > 0;
    if multi_az != current.multi_az {
        settings.what.push(format!("Multi-AZ {}", on_off(multi_az)));
        settings.multi_az = Some(multi_az);
    }
    let retention = i32::from(spec.settings.snapshot_retention_days);
    if retention != current.snapshot_retention {
        settings.what.push(format!("snapshot retention {} → {retention} days", current.snapshot_retention));
        settings.snapshot_retention = Some(retention);
        // ElastiCache: "Must specify both SnapshotRetentionLimit and
        // SnapshottingClusterId to turn on snapshots" (a cluster-mode group
        // takes no SnapshottingClusterId).
        if current.snapshot_retention == 0 && !plan.cluster_mode {
            settings.snapshotting_cluster = current.members.first().cloned();
        }
    }
    if let (Some(wanted), Some(now)) = (&spec.settings.snapshot_window, &current.snapshot_window)
        && wanted != now
    {
        settings.what.push(format!("snapshot window {now} → {wanted}"));
        settings.snapshot_window = Some(wanted.clone());
    }
    if let Some(now) = &current.maintenance_window
        && *now != spec.settings.maintenance_window
    {
        settings.what.push(format!("maintenance window {now} → {}", spec.settings.maintenance_window));
        settings.maintenance_window = Some(spec.settings.maintenance_window.clone());
    }
    if spec.log_delivery != current.logs {
        settings.logs_on = spec.log_delivery.iter().filter(|l| !current.logs.contains(l)).copied().collect();
        settings.logs_off = current.logs.iter().filter(|l| !spec.log_delivery.contains(l)).copied().collect();
        let names = |logs: &[LogType]| match logs {
            [] => "none".to_string(),
            logs => logs.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", "),
        };
        settings.what.push(format!("log delivery {} → {}", names(&current.logs), names(&spec.log_delivery)));
    }
    if !settings.what.is_empty() {
        changes.push(Change::Modify(Box::new(settings)));
    }

    if replicas < current.replicas_per_shard {
        changes.push(Change::RemoveReplicas { from: current.replicas_per_shard, to: replicas });
    }
    if plan.cluster_mode && shards != current.shards {
        let retain = if shards < current.shards {
            current.node_group_ids.iter().take(shards).cloned().collect()
        } else {
            Vec::new()
        };
        changes.push(Change::Reshard { from: current.shards, to: shards, retain });
    }
    Ok(changes)
}

/// "7.1.0" is the "7.1" a plan asks for; "7.1" is "7.1".
fn same_version(actual: &str, wanted: &str) -> bool {
    actual == wanted || actual.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'))
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::catalog::CatalogFile;

    fn spec(service: &str, plan: &str, version: &str) -> CacheSpec {
        let catalog = CatalogFile::builtin();
        let service = catalog.services.iter().find(|s| s.name == service).unwrap();
        let plan =
            catalog.plans.iter().find(|p| p.service_id == service.id && p.name == plan).unwrap().clone();
        CacheSpec {
            settings: broker_core::domain::settings::of(service.engine, &plan, &serde_json::Map::new()),
            cache_key: "i-1".into(),
            engine: service.engine,
            engine_version: version.into(),
            plan,
            admin_secret: Some("admin".into()),
            tags: vec![],
            log_delivery: vec![],
            spare_users: vec![],
            restore: None,
        }
    }

    /// The shape a group created from `spec` has.
    fn shape(spec: &CacheSpec) -> Shape {
        let plan = &spec.plan;
        let replicas = usize::from(plan.replicas_per_shard);
        Shape {
            engine: Some(spec.engine.as_str().to_string()),
            cluster_mode: plan.cluster_mode,
            node_type: Some(plan.node_type.clone()),
            engine_version: Some(format!("{}.0", spec.engine_version)),
            shards: usize::from(plan.shards),
            node_group_ids: (1..=plan.shards).map(|i| format!("{i:04}")).collect(),
            replicas_per_shard: replicas,
            automatic_failover: plan.cluster_mode || (plan.automatic_failover && replicas > 0),
            multi_az: plan.multi_az && replicas > 0,
            snapshot_retention: i32::from(spec.settings.snapshot_retention_days),
            snapshot_window: spec.settings.snapshot_window.clone(),
            maintenance_window: Some(spec.settings.maintenance_window.clone()),
            parameter_group: None,
            members: vec!["i-1-002".into(), "i-1-001".into()],
            logs: spec.log_delivery.clone(),
        }
    }

    #[test]
    fn turning_logs_on_and_off_is_one_modify_call_naming_each() {
        let before = spec("elasticache-redis", "small", "7.1");
        let mut after = before.clone();
        after.log_delivery = vec![LogType::SlowLog, LogType::EngineLog];
        let changes = plan_changes(&shape(&before), &after, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!((s.logs_on.as_slice(), s.logs_off.as_slice()), (&after.log_delivery[..], &[][..]));
        assert_eq!(s.what, ["log delivery none → slow-log, engine-log"]);
        assert_eq!(plan_changes(&shape(&after), &after, None).unwrap(), vec![], "delivered already");

        let mut fewer = after.clone();
        fewer.log_delivery = vec![LogType::EngineLog];
        let changes = plan_changes(&shape(&after), &fewer, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!((s.logs_on.as_slice(), s.logs_off.as_slice()), (&[][..], &[LogType::SlowLog][..]));
        let sent = logs::requests("/elasticache/osb-x", &s.logs_on, &s.logs_off);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].enabled(), Some(false));
        assert_eq!(sent[0].log_format(), Some(&aws_sdk_elasticache::types::LogFormat::Json));
    }

    #[test]
    fn a_group_already_on_its_plan_needs_no_change() {
        for plan in ["dev", "small", "ha-3", "ha-5", "cluster-3x2"] {
            let s = spec("elasticache-redis", plan, "7.1");
            assert_eq!(plan_changes(&shape(&s), &s, None).unwrap(), vec![], "{plan}");
        }
    }

    #[test]
    fn moving_to_a_bigger_single_node_plan_is_one_modify_call() {
        let from = spec("elasticache-redis", "small", "7.1");
        let to = spec("elasticache-redis", "medium", "7.1");
        let changes = plan_changes(&shape(&from), &to, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(s.node_type.as_deref(), Some("cache.m7g.large"));
        assert_eq!(s.snapshot_retention, Some(7));
        assert_eq!((s.engine_version.as_ref(), s.automatic_failover, s.multi_az), (None, None, None));
    }

    #[test]
    fn replicas_are_added_before_failover_is_turned_on() {
        let from = spec("elasticache-redis", "small", "7.1");
        let to = spec("elasticache-redis", "ha-3", "7.1");
        let changes = plan_changes(&shape(&from), &to, None).unwrap();
        assert_eq!(changes[0], Change::AddReplicas { from: 0, to: 2 });
        let Change::Modify(s) = &changes[1] else { panic!("{changes:?}") };
        assert_eq!((s.automatic_failover, s.multi_az), (Some(true), Some(true)));
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn failover_is_turned_off_before_the_last_replica_goes() {
        let from = spec("elasticache-redis", "ha-3", "7.1");
        let to = spec("elasticache-redis", "medium", "7.1");
        let changes = plan_changes(&shape(&from), &to, None).unwrap();
        let Change::Modify(s) = &changes[0] else { panic!("{changes:?}") };
        assert_eq!((s.automatic_failover, s.multi_az), (Some(false), Some(false)));
        assert_eq!(changes[1], Change::RemoveReplicas { from: 2, to: 0 });
    }

    #[test]
    fn a_new_major_version_in_cluster_mode_brings_its_parameter_group() {
        let from = spec("elasticache-valkey", "cluster-3x2", "7.2");
        let to = spec("elasticache-valkey", "cluster-3x2", "8.0");
        let changes = plan_changes(&shape(&from), &to, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(s.engine_version.as_deref(), Some("8.0"));
        assert_eq!(s.parameter_group.as_deref(), Some("default.valkey8.cluster.on"));
    }

    #[test]
    fn a_new_major_version_without_cluster_mode_brings_its_parameter_group_too() {
        for (service, plan, from, to, group) in [
            ("elasticache-redis", "small", "6.2", "7.1", Some("default.redis7")),
            ("elasticache-valkey", "staging", "7.2", "8.0", Some("default.valkey8")),
            ("elasticache-redis", "small", "7.0", "7.1", None),
            ("elasticache-redis", "small", "6.0", "6.2", None),
        ] {
            let changes =
                plan_changes(&shape(&spec(service, plan, from)), &spec(service, plan, to), None).unwrap();
            let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
            assert_eq!(s.engine_version.as_deref(), Some(to));
            assert_eq!(s.parameter_group.as_deref(), group, "{from} → {to}");
        }
    }

    #[test]
    fn new_windows_go_in_one_modify_call() {
        let before = spec("elasticache-redis", "small", "7.1");
        let mut after = before.clone();
        after.settings.snapshot_window = Some("01:00-02:00".into());
        after.settings.maintenance_window = "tue:10:00-tue:11:00".into();
        let changes = plan_changes(&shape(&before), &after, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(s.snapshot_window.as_deref(), Some("01:00-02:00"));
        assert_eq!(s.maintenance_window.as_deref(), Some("tue:10:00-tue:11:00"));
        assert_eq!(
            s.what,
            [
                "snapshot window 03:00-05:00 → 01:00-02:00",
                "maintenance window sun:05:00-sun:06:00 → tue:10:00-tue:11:00"
            ]
        );
        // A window no member reported is left alone rather than sent for ever.
        let mut unknown = shape(&before);
        unknown.maintenance_window = None;
        unknown.snapshot_window = None;
        assert_eq!(plan_changes(&unknown, &before, None).unwrap(), vec![]);
    }

    #[test]
    fn turning_daily_snapshots_on_names_a_replica_to_take_them_from() {
        let before = spec("elasticache-redis", "dev", "7.1");
        let mut after = before.clone();
        after.settings.snapshot_retention_days = 2;
        let changes = plan_changes(&shape(&before), &after, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!((s.snapshot_retention, s.snapshotting_cluster.as_deref()), (Some(2), Some("i-1-002")));
        // Changing a retention already on needs no snapshotting cluster.
        let mut more = after.clone();
        more.settings.snapshot_retention_days = 3;
        let changes = plan_changes(&shape(&after), &more, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!((s.snapshot_retention, s.snapshotting_cluster.as_deref()), (Some(3), None));
        // Nor does a cluster-mode group, which takes none.
        let sharded = spec("elasticache-redis", "cluster-3x2", "7.1");
        let mut from = shape(&sharded);
        from.snapshot_retention = 0;
        let changes = plan_changes(&from, &sharded, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(s.snapshotting_cluster, None);
    }

    #[test]
    fn a_cache_moves_to_its_own_parameter_group_and_a_major_upgrade_takes_the_new_familys() {
        let s = spec("elasticache-redis", "small", "7.1");
        let mut on_default = shape(&s);
        on_default.parameter_group = Some("default.redis7".into());
        let changes = plan_changes(&on_default, &s, Some("osb-x-redis7")).unwrap();
        let [Change::Modify(m)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(m.parameter_group.as_deref(), Some("osb-x-redis7"));
        assert_eq!(m.what, ["parameter group default.redis7 → osb-x-redis7"]);
        let mut on_own = on_default.clone();
        on_own.parameter_group = Some("osb-x-redis7".into());
        assert_eq!(plan_changes(&on_own, &s, Some("osb-x-redis7")).unwrap(), vec![], "there already");

        let from = spec("elasticache-redis", "small", "6.2");
        let mut current = shape(&from);
        current.parameter_group = Some("osb-x-redis6-x".into());
        let changes = plan_changes(&current, &s, Some("osb-x-redis7")).unwrap();
        let [Change::Modify(m)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(
            (m.engine_version.as_deref(), m.parameter_group.as_deref()),
            (Some("7.1"), Some("osb-x-redis7"))
        );
    }

    #[test]
    fn a_redis_group_moves_to_valkey_with_engine_and_version_in_one_call() {
        let from = spec("elasticache-redis", "small", "7.1");
        let mut to = from.clone();
        to.engine = Engine::Valkey;
        to.engine_version = "8.0".into();
        let changes = plan_changes(&shape(&from), &to, None).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!((s.engine.as_deref(), s.engine_version.as_deref()), (Some("valkey"), Some("8.0")));
        assert_eq!(s.parameter_group, None, "ElastiCache picks the default group of the new family");
        assert_eq!(s.what, ["engine redis 7.1.0 → valkey 8.0"]);
        // With a group of its own, its own of the new family.
        let changes = plan_changes(&shape(&from), &to, Some("osb-x-valkey8")).unwrap();
        let [Change::Modify(s)] = changes.as_slice() else { panic!("{changes:?}") };
        assert_eq!(s.parameter_group.as_deref(), Some("osb-x-valkey8"));
        // Moved: nothing left.
        let mut moved = shape(&to);
        moved.engine_version = Some("8.0.1".into());
        assert_eq!(plan_changes(&moved, &to, None).unwrap(), vec![]);
    }

    #[test]
    fn fewer_shards_keep_the_first_node_groups() {
        let from = spec("elasticache-redis", "cluster-3x2", "7.1");
        let mut to = from.clone();
        to.plan.shards = 2;
        let changes = plan_changes(&shape(&from), &to, None).unwrap();
        assert_eq!(
            changes,
            vec![Change::Reshard { from: 3, to: 2, retain: vec!["0001".into(), "0002".into()] }]
        );
    }

    #[test]
    fn switching_cluster_mode_is_refused_with_a_reason() {
        let from = spec("elasticache-redis", "small", "7.1");
        let to = spec("elasticache-redis", "cluster-3x2", "7.1");
        assert!(plan_changes(&shape(&from), &to, None).unwrap_err().contains("cluster mode"));
    }

    #[test]
    fn a_plan_version_matches_the_patch_release_aws_reports() {
        assert!(same_version("7.1.0", "7.1"));
        assert!(same_version("7.1", "7.1"));
        assert!(!same_version("7.10.0", "7.1"));
        assert!(!same_version("6.2.6", "7.1"));
    }
}
