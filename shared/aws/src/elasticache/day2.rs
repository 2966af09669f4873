//! Day-2 actions on ElastiCache (see [`broker_core::domain::day2`]):
//! restart, failover test, named snapshots, and listing a cache's
//! snapshots for fetch and restore.
//!
//! - **restart**: RebootCacheCluster, one member cluster of a replication
//!   group at a time, replicas before the primary, each waited for until
//!   its node is `available` again; a Memcached cluster's nodes in one
//!   call. ElastiCache cannot reboot a cluster-mode group ("Rebooting is
//!   not supported on Valkey or Redis OSS (cluster mode enabled)
//!   clusters", API reference of RebootCacheCluster): the broker refuses
//!   it for those plans, and this module says so if asked anyway.
//! - **test_failover**: TestFailover, one node group at a time (AWS wants
//!   the first replacement finished before the next in one group). Done
//!   when the group is `available` with another primary: a cluster-mode
//!   disabled group names its members' roles; a cluster-mode group does
//!   not, so there the group's events since the action was planned must
//!   report the node group's failover completed.
//! - **snapshot** / **delete_snapshot**: CreateSnapshot of the replication
//!   group and DeleteSnapshot, under [`Names::named_snapshot`], so one
//!   instance's names never meet another's; waited for by DescribeSnapshots.
//!
//! - **maintenance** (an update carrying the plan's newer
//!   `maintenance_info`): the cache's update actions of available service
//!   updates not applied yet (DescribeUpdateActions), each applied with
//!   BatchApplyUpdateAction and waited for until `complete`. ElastiCache
//!   ships engine patch releases as such service updates.
//!
//! Every start can be repeated: a node already rebooting and a snapshot of
//! that name already this group's count as started.
//!
//! [`Names::named_snapshot`]: super::names::Names::named_snapshot

use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_elasticache::operation::describe_snapshots::DescribeSnapshotsError;
use aws_sdk_elasticache::types::{ReplicationGroup, ServiceUpdateStatus, SourceType, UpdateActionStatus};

use super::failure::{Kind, classify};
use super::{Cache, ElastiCacheProvider, working};
use broker_core::domain::{Action, ActionStep, Snapshot, SnapshotKind, Timestamp};
use broker_core::ports::{Progress, ProviderError};

/// What a unit notes of its cache, so its calls name it right.
const GROUP: &str = "replication-group";
const CLUSTER: &str = "cache-cluster";
const SERVERLESS: &str = "serverless-cache";

/// Whether a snapshot unit is of a serverless cache.
fn is_serverless(step: &ActionStep) -> bool {
    step.before.as_deref() == Some(SERVERLESS)
}

/// What a cache cluster reports while RebootCacheCluster runs on it.
const REBOOTING: &str = "rebooting cluster nodes";
/// How a failover test's unit of a cluster-mode group notes when it was
/// planned: the events that count are the ones after.
const SINCE: &str = "since:";

impl ElastiCacheProvider {
    pub(super) async fn plan_cache_action(
        &self,
        instance_id: &str,
        action: &Action,
    ) -> Result<Vec<ActionStep>, ProviderError> {
        let id = self.names.cache(instance_id);
        let cache = self.find(&id).await?.ok_or_else(|| {
            ProviderError::Permanent(format!(
                "no replication group {id} (nor cache cluster) exists to act on"
            ))
        })?;
        match (action, cache) {
            (Action::Restart, Cache::Cluster(cluster)) => {
                Ok(vec![ActionStep::on(cluster.cache_cluster_id().unwrap_or(&id))])
            }
            (Action::Restart, Cache::Group(group)) => {
                if group.cluster_enabled().unwrap_or(false) {
                    return Err(ProviderError::Permanent(format!(
                        "replication group {id} runs in cluster mode, whose nodes ElastiCache cannot reboot; \
                         test_failover replaces each shard's primary instead"
                    )));
                }
                // Replicas first, so the group keeps its primary serving
                // while they reboot; the primary last.
                let mut members = roles(&group);
                members.sort_by_key(|(_, primary)| *primary);
                Ok(members.into_iter().map(|(member, _)| ActionStep::on(member)).collect())
            }
            (Action::TestFailover, Cache::Group(group)) => {
                let planned = broker_core::domain::now();
                let cluster_mode = group.cluster_enabled().unwrap_or(false);
                let roles = roles(&group);
                Ok(group
                    .node_groups()
                    .iter()
                    .filter_map(|g| g.node_group_id())
                    .map(|ng| ActionStep {
                        target: ng.to_string(),
                        before: if cluster_mode {
                            Some(format!("{SINCE}{planned}"))
                        } else {
                            roles.iter().find(|(_, primary)| *primary).map(|(m, _)| m.clone())
                        },
                    })
                    .collect())
            }
            (Action::TestFailover, Cache::Cluster(_)) => Err(ProviderError::Permanent(format!(
                "cache cluster {id} is Memcached, which has no replicas to fail over to"
            ))),
            (Action::Snapshot { name } | Action::DeleteSnapshot { name }, Cache::Group(_)) => {
                Ok(vec![ActionStep::on(self.names.named_snapshot(instance_id, name))])
            }
            (Action::Snapshot { .. } | Action::DeleteSnapshot { .. }, Cache::Cluster(_)) => {
                Err(ProviderError::Permanent(format!(
                    "cache cluster {id} is Memcached, which keeps no snapshots"
                )))
            }
            // Serverless snapshots have their own calls: the unit says so.
            (Action::Snapshot { name } | Action::DeleteSnapshot { name }, Cache::Serverless(_)) => {
                Ok(vec![ActionStep {
                    target: self.names.named_snapshot(instance_id, name),
                    before: Some(SERVERLESS.to_string()),
                }])
            }
            (Action::Restart | Action::TestFailover, Cache::Serverless(_)) => {
                Err(ProviderError::Permanent(format!(
                    "{id} is a serverless cache: ElastiCache replaces its nodes itself, so there is nothing to {}",
                    if *action == Action::Restart { "restart" } else { "fail over" }
                )))
            }
            // ElastiCache applies a serverless cache's patches itself.
            (Action::Maintenance, Cache::Serverless(_)) => Ok(Vec::new()),
            (Action::Maintenance, cache) => {
                let kind = if matches!(cache, Cache::Cluster(_)) { CLUSTER } else { GROUP };
                let pending = self.service_updates(&id, kind, None).await?;
                let mut names: Vec<String> = pending
                    .iter()
                    .filter(|u| {
                        matches!(
                            u.update_action_status(),
                            Some(UpdateActionStatus::NotApplied | UpdateActionStatus::Stopped)
                        )
                    })
                    .filter_map(|u| u.service_update_name().map(str::to_string))
                    .collect();
                names.sort();
                names.dedup();
                Ok(names
                    .into_iter()
                    .map(|n| ActionStep { target: n, before: Some(kind.to_string()) })
                    .collect())
            }
        }
    }

    pub(super) async fn start_cache_action(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        let id = self.names.cache(instance_id);
        match action {
            Action::Restart => self.reboot(&step.target).await,
            Action::TestFailover => {
                match self
                    .client
                    .test_failover()
                    .replication_group_id(&id)
                    .node_group_id(&step.target)
                    .send()
                    .await
                {
                    Ok(_) => {
                        tracing::info!(replication_group = %id, node_group = %step.target, "failover test started");
                        Ok(working(format!(
                            "node group {} of replication group {id} is failing over",
                            step.target
                        )))
                    }
                    Err(e) => Err(classify("TestFailover", e).into()),
                }
            }
            Action::Snapshot { name } if is_serverless(step) => {
                let request = self
                    .rbac
                    .create_serverless_cache_snapshot()
                    .serverless_cache_snapshot_name(&step.target)
                    .serverless_cache_name(&id)
                    .set_tags(Some(self.user_tags(instance_id)))
                    .send()
                    .await;
                match request {
                    Ok(_) => {
                        tracing::info!(serverless_cache = %id, snapshot = %step.target, "snapshot started");
                        Ok(working(format!("taking snapshot {name} of serverless cache {id}")))
                    }
                    Err(e) => match classify("CreateServerlessCacheSnapshot", e) {
                        f if f.is(Kind::AlreadyExists) => {
                            match self.find_serverless_snapshot(&step.target).await? {
                                Some(s)
                                    if s.serverless_cache_configuration()
                                        .and_then(|c| c.serverless_cache_name())
                                        == Some(id.as_str()) =>
                                {
                                    Ok(Progress::Done)
                                }
                                _ => Err(ProviderError::Permanent(format!(
                                    "a snapshot named {} exists already and is not of serverless cache {id}",
                                    step.target
                                ))),
                            }
                        }
                        f => Err(f.into()),
                    },
                }
            }
            Action::DeleteSnapshot { name } if is_serverless(step) => {
                match self
                    .rbac
                    .delete_serverless_cache_snapshot()
                    .serverless_cache_snapshot_name(&step.target)
                    .send()
                    .await
                {
                    Ok(_) => Ok(working(format!("deleting snapshot {name}"))),
                    Err(e) => match classify("DeleteServerlessCacheSnapshot", e) {
                        f if f.is(Kind::NotFound) => Ok(Progress::Done),
                        f => Err(f.into()),
                    },
                }
            }
            Action::Snapshot { name } => {
                let request = self
                    .client
                    .create_snapshot()
                    .snapshot_name(&step.target)
                    .replication_group_id(&id)
                    .set_tags(Some(self.user_tags(instance_id)))
                    .send()
                    .await;
                match request {
                    Ok(_) => {
                        tracing::info!(replication_group = %id, snapshot = %step.target, "snapshot started");
                        Ok(working(format!("taking snapshot {name} of replication group {id}")))
                    }
                    // Taken by an earlier attempt, if it is this group's.
                    Err(e) => match classify("CreateSnapshot", e) {
                        f if f.is(Kind::AlreadyExists) => match self.find_snapshot(&step.target).await? {
                            Some(s) if s.replication_group_id() == Some(id.as_str()) => Ok(Progress::Done),
                            _ => Err(ProviderError::Permanent(format!(
                                "a snapshot named {} exists already and is not of replication group {id}",
                                step.target
                            ))),
                        },
                        f => Err(f.into()),
                    },
                }
            }
            Action::Maintenance => {
                let request = self.client.batch_apply_update_action().service_update_name(&step.target);
                let request = if step.before.as_deref() == Some(CLUSTER) {
                    request.cache_cluster_ids(&id)
                } else {
                    request.replication_group_ids(&id)
                };
                let out = request.send().await.map_err(|e| classify("BatchApplyUpdateAction", e))?;
                if let Some(refused) = out.unprocessed_update_actions().first() {
                    return Err(ProviderError::Permanent(format!(
                        "BatchApplyUpdateAction did not apply service update {} to {id}: {}: {}",
                        step.target,
                        refused.error_type().unwrap_or("an unnamed error"),
                        refused.error_message().unwrap_or("no message")
                    )));
                }
                tracing::info!(cache = %id, service_update = %step.target, "applying service update");
                Ok(working(format!("applying service update {}", step.target)))
            }
            Action::DeleteSnapshot { name } => {
                match self.client.delete_snapshot().snapshot_name(&step.target).send().await {
                    Ok(_) => {
                        tracing::info!(replication_group = %id, snapshot = %step.target, "deleting snapshot");
                        Ok(working(format!("deleting snapshot {name}")))
                    }
                    Err(e) => match classify("DeleteSnapshot", e) {
                        f if f.is(Kind::NotFound) => Ok(Progress::Done),
                        f => Err(f.into()),
                    },
                }
            }
        }
    }

    pub(super) async fn cache_action_progress(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        let id = self.names.cache(instance_id);
        match action {
            Action::Restart => {
                let Some(cluster) = self.find_cluster(&step.target).await? else {
                    return Err(ProviderError::Permanent(format!("cache cluster {} is gone", step.target)));
                };
                let status = cluster.cache_cluster_status().unwrap_or("unknown");
                let rebooting = cluster
                    .cache_nodes()
                    .iter()
                    .filter(|n| n.cache_node_status() != Some("available"))
                    .count();
                if status == "available" && rebooting == 0 {
                    return Ok(Progress::Done);
                }
                Ok(working(format!("cache cluster {} is {status}", step.target)))
            }
            Action::TestFailover => {
                let Some(group) = self.find_group(&id).await? else {
                    return Err(ProviderError::Permanent(format!("replication group {id} is gone")));
                };
                let status = group.status().unwrap_or("unknown");
                if status != "available" {
                    return Ok(working(format!("replication group {id} is {status}")));
                }
                match step.before.as_deref() {
                    Some(before) if before.starts_with(SINCE) => {
                        let since = before[SINCE.len()..].parse::<Timestamp>().unwrap_or_default();
                        self.failed_over_since(&id, &step.target, since).await
                    }
                    before => {
                        let now = roles(&group).into_iter().find(|(_, primary)| *primary).map(|(m, _)| m);
                        match (now, before) {
                            (Some(now), Some(before)) if now != before => Ok(Progress::Done),
                            (Some(now), _) => Ok(working(format!(
                                "node group {} still has primary {now}; waiting for a replica to take over",
                                step.target
                            ))),
                            (None, _) => {
                                Ok(working(format!("node group {} has no primary yet", step.target)))
                            }
                        }
                    }
                }
            }
            Action::Snapshot { name } if is_serverless(step) => {
                match self.find_serverless_snapshot(&step.target).await? {
                    None => Err(ProviderError::Permanent(format!(
                        "snapshot {name} of serverless cache {id} was not taken: ElastiCache has no snapshot {}",
                        step.target
                    ))),
                    Some(s) => match s.status().unwrap_or("unknown").to_ascii_lowercase().as_str() {
                        "available" => Ok(Progress::Done),
                        "creating" => Ok(working(format!("snapshot {name} is being taken"))),
                        other => Err(ProviderError::Permanent(format!("snapshot {name} is {other}"))),
                    },
                }
            }
            Action::DeleteSnapshot { name } if is_serverless(step) => {
                match self.find_serverless_snapshot(&step.target).await? {
                    None => Ok(Progress::Done),
                    Some(s) => {
                        Ok(working(format!("snapshot {name} is {}", s.status().unwrap_or("still there"))))
                    }
                }
            }
            Action::Snapshot { name } => match self.find_snapshot(&step.target).await? {
                None => Err(ProviderError::Permanent(format!(
                    "snapshot {name} of replication group {id} was not taken: ElastiCache has no snapshot {}",
                    step.target
                ))),
                Some(s) => match s.snapshot_status().unwrap_or("unknown") {
                    "available" | "restoring" | "copying" => Ok(Progress::Done),
                    "creating" => Ok(working(format!("snapshot {name} is being taken"))),
                    other => Err(ProviderError::Permanent(format!("snapshot {name} is {other}"))),
                },
            },
            Action::Maintenance => {
                let kind = if step.before.as_deref() == Some(CLUSTER) { CLUSTER } else { GROUP };
                let actions = self.service_updates(&id, kind, Some(&step.target)).await?;
                let this = actions.iter().find(|a| a.service_update_name() == Some(step.target.as_str()));
                match this.and_then(|a| a.update_action_status().cloned()) {
                    None | Some(UpdateActionStatus::Complete | UpdateActionStatus::NotApplicable) => {
                        Ok(Progress::Done)
                    }
                    Some(s @ (UpdateActionStatus::Stopped | UpdateActionStatus::Stopping)) => {
                        Err(ProviderError::Permanent(format!(
                            "service update {} of {id} is {}: ElastiCache stopped it",
                            step.target,
                            s.as_str()
                        )))
                    }
                    Some(s) => Ok(working(format!("service update {} is {}", step.target, s.as_str()))),
                }
            }
            Action::DeleteSnapshot { name } => match self.find_snapshot(&step.target).await? {
                None => Ok(Progress::Done),
                Some(s) => Ok(working(format!(
                    "snapshot {name} is {}",
                    s.snapshot_status().unwrap_or("still there")
                ))),
            },
        }
    }

    /// The cache's update actions (of `service_update` only, when given):
    /// every page of DescribeUpdateActions for the replication group or the
    /// cache cluster `id`, of service updates still available.
    async fn service_updates(
        &self,
        id: &str,
        kind: &str,
        service_update: Option<&str>,
    ) -> Result<Vec<aws_sdk_elasticache::types::UpdateAction>, ProviderError> {
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let request = self
                .client
                .describe_update_actions()
                .set_service_update_name(service_update.map(str::to_string))
                .service_update_status(ServiceUpdateStatus::Available)
                .set_marker(marker.clone());
            let request = if kind == CLUSTER {
                request.cache_cluster_ids(id)
            } else {
                request.replication_group_ids(id)
            };
            let page = request.send().await.map_err(|e| classify("DescribeUpdateActions", e))?;
            found.extend(page.update_actions().iter().cloned());
            marker = page.marker().filter(|m| !m.is_empty()).map(str::to_string);
            if marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// RebootCacheCluster of every node of `cluster_id`. One already
    /// rebooting counts as started: a repeated step must not fail on it.
    async fn reboot(&self, cluster_id: &str) -> Result<Progress, ProviderError> {
        let Some(cluster) = self.find_cluster(cluster_id).await? else {
            return Err(ProviderError::Permanent(format!(
                "cache cluster {cluster_id} does not exist to reboot"
            )));
        };
        if cluster.cache_cluster_status() == Some(REBOOTING) {
            return Ok(working(format!("cache cluster {cluster_id} is rebooting")));
        }
        let nodes: Vec<String> =
            cluster.cache_nodes().iter().filter_map(|n| n.cache_node_id().map(str::to_string)).collect();
        if nodes.is_empty() {
            return Err(ProviderError::Retryable(format!("cache cluster {cluster_id} lists no nodes yet")));
        }
        match self
            .client
            .reboot_cache_cluster()
            .cache_cluster_id(cluster_id)
            .set_cache_node_ids_to_reboot(Some(nodes.clone()))
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(cache_cluster = %cluster_id, nodes = nodes.len(), "rebooting");
                Ok(working(format!("cache cluster {cluster_id} is rebooting")))
            }
            Err(e) => Err(classify("RebootCacheCluster", e).into()),
        }
    }

    /// Whether the group's events since `since` say node group `node_group`
    /// failed over ("Failover from primary node … to replica node …
    /// completed", naming nodes `{group}-{node group}-…`).
    async fn failed_over_since(
        &self,
        id: &str,
        node_group: &str,
        since: Timestamp,
    ) -> Result<Progress, ProviderError> {
        let events = self
            .client
            .describe_events()
            .source_identifier(id)
            .source_type(SourceType::ReplicationGroup)
            .start_time(aws_sdk_elasticache::primitives::DateTime::from_secs(since))
            .send()
            .await
            .map_err(|e| classify("DescribeEvents", e))?;
        let member = format!("{id}-{node_group}-");
        let done = events.events().iter().filter_map(|e| e.message()).any(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("failover") && m.contains("completed") && m.contains(&member)
        });
        if done {
            Ok(Progress::Done)
        } else {
            Ok(working(format!("waiting for node group {node_group} of replication group {id} to fail over")))
        }
    }

    /// DescribeSnapshots of one name; `None` when there is none.
    async fn find_snapshot(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_elasticache::types::Snapshot>, ProviderError> {
        match self.client.describe_snapshots().snapshot_name(name).send().await {
            Ok(out) => Ok(out.snapshots().first().cloned()),
            Err(e) => match classify("DescribeSnapshots", e) {
                f if f.is(Kind::NotFound) => Ok(None),
                f => Err(f.into()),
            },
        }
    }

    /// The cache's snapshots: those ElastiCache lists for its replication
    /// group (automatic ones and the broker's named ones), and its final
    /// snapshot by name when the deprovision that took it is given (a
    /// deleted group's snapshots are looked up by name, not by the group).
    pub(super) async fn cache_snapshots(
        &self,
        instance_id: &str,
        final_key: Option<&str>,
    ) -> Result<Vec<Snapshot>, ProviderError> {
        let id = self.names.cache(instance_id);
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_snapshots()
                .replication_group_id(&id)
                .set_marker(marker.clone())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                // No such group (any more): nothing listed under it.
                Err(e) if group_unknown(&e) => break,
                Err(e) => return Err(classify("DescribeSnapshots", e).into()),
            };
            found.extend(page.snapshots().iter().cloned());
            marker = page.marker().filter(|m| !m.is_empty()).map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        let final_name = final_key.map(|key| self.names.final_snapshot(instance_id, key));
        if let Some(name) = &final_name
            && !found.iter().any(|s| s.snapshot_name() == Some(name.as_str()))
            && let Some(s) = self.find_snapshot(name).await?
        {
            found.push(s);
        }
        // A serverless cache's snapshots are listed apart.
        let mut serverless = self.serverless_snapshots(&id).await?;
        if let Some(name) = &final_name
            && !serverless.iter().any(|s| s.serverless_cache_snapshot_name() == Some(name.as_str()))
            && let Some(s) = self.find_serverless_snapshot(name).await?
        {
            serverless.push(s);
        }
        let named = self.names.named_snapshot(instance_id, "");
        let last = self.names.final_snapshot_prefix(instance_id);
        let mut snapshots: Vec<Snapshot> = found
            .iter()
            .filter_map(|s| {
                let aws_name = s.snapshot_name()?;
                let (kind, name) = super::names::snapshot_kind(
                    aws_name,
                    &named,
                    &last,
                    s.snapshot_source() == Some("automated"),
                )?;
                Some(Snapshot {
                    name,
                    kind,
                    status: s.snapshot_status().unwrap_or("unknown").to_string(),
                    created_at: s
                        .node_snapshots()
                        .iter()
                        .filter_map(|n| n.snapshot_create_time())
                        .map(|t| t.secs())
                        .min(),
                    // A restore into a serverless cache names snapshots by ARN.
                    reference: s.arn().unwrap_or(aws_name).to_string(),
                })
            })
            .chain(serverless.iter().filter_map(|s| super::serverless::listed(s, &named, &last)))
            .collect();
        snapshots.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(snapshots)
    }

    /// Deletes the cache's named snapshots (a deprovision's first step: they
    /// are the instance's; its final snapshot is not among them). `Done`
    /// when none is left.
    pub(super) async fn delete_named_snapshots(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let named: Vec<Snapshot> = self
            .cache_snapshots(instance_id, None)
            .await?
            .into_iter()
            .filter(|s| s.kind == SnapshotKind::Named)
            .collect();
        if named.is_empty() {
            return Ok(Progress::Done);
        }
        for s in &named {
            let aws_name = s.reference.rsplit(':').next().unwrap_or(&s.reference);
            let sent = if s.reference.contains(":serverlesscachesnapshot:") {
                self.rbac
                    .delete_serverless_cache_snapshot()
                    .serverless_cache_snapshot_name(aws_name)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("DeleteServerlessCacheSnapshot", e))
            } else {
                self.client
                    .delete_snapshot()
                    .snapshot_name(aws_name)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("DeleteSnapshot", e))
            };
            match sent {
                Ok(()) => {
                    tracing::info!(instance_id, snapshot = %aws_name, "deleting the instance's snapshot")
                }
                Err(f) if f.is(Kind::NotFound) => {}
                Err(f) => return Err(f.into()),
            }
        }
        Ok(working(format!(
            "deleting the instance's snapshots ({})",
            named.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// The member clusters of a group and whether each is its primary, as
/// its node groups say (cluster-mode disabled groups name the roles).
fn roles(group: &ReplicationGroup) -> Vec<(String, bool)> {
    let mut members: Vec<(String, bool)> = group
        .node_groups()
        .iter()
        .flat_map(|g| g.node_group_members())
        .filter_map(|m| Some((m.cache_cluster_id()?.to_string(), m.current_role() == Some("primary"))))
        .collect();
    for member in group.member_clusters() {
        if !members.iter().any(|(m, _)| m == member) {
            members.push((member.clone(), false));
        }
    }
    members
}

/// Whether DescribeSnapshots refused because the group it names does not
/// exist (moto says so, as `ReplicationGroupNotFoundFault`, which the
/// model does not name for this call).
fn group_unknown(
    e: &aws_sdk_elasticache::error::SdkError<
        DescribeSnapshotsError,
        aws_sdk_elasticache::config::http::HttpResponse,
    >,
) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ReplicationGroupNotFoundFault")
}
