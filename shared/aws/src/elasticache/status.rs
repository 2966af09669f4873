//! `progress` and `endpoint`: what ElastiCache says about a cache, in words a
//! person reads in `last_operation`.

use aws_sdk_elasticache::types::{CacheCluster, Endpoint as AwsEndpoint, ReplicationGroup};

use super::failure::Failure;
use super::{Cache, ElastiCacheProvider, working};
use broker_core::domain::Endpoint;
use broker_core::domain::credentials::HostPort;
use broker_core::ports::{Progress, ProviderError};

/// Statuses a cache or node does not leave by itself.
const FAILED: &[&str] =
    &["create-failed", "incompatible-network", "restore-failed", "incompatible-parameters"];

impl ElastiCacheProvider {
    pub(super) async fn cache_progress(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let id = self.names.cache(instance_id);
        match self.find(&id).await? {
            None => {
                Err(ProviderError::Permanent(format!("no replication group {id} (nor cache cluster) exists")))
            }
            Some(Cache::Group(group)) => self.group_progress(&id, &group).await,
            Some(Cache::Cluster(cluster)) => cluster_progress(&id, &cluster),
            Some(Cache::Serverless(cache)) => super::serverless::serverless_progress(&id, &cache),
        }
    }

    async fn group_progress(&self, id: &str, group: &ReplicationGroup) -> Result<Progress, ProviderError> {
        let status = group.status().unwrap_or("unknown");
        match status {
            "available" => Ok(still_pending(&format!("replication group {id}"), group_pending(group))),
            "deleting" => Err(ProviderError::Permanent(format!("replication group {id} is being deleted"))),
            failed if FAILED.contains(&failed) => {
                Err(ProviderError::Permanent(format!("replication group {id} is {failed}")))
            }
            _ => {
                let members = group.member_clusters();
                if members.is_empty() {
                    return Ok(working(format!("{status} replication group {id}: no nodes yet")));
                }
                let mut available = 0;
                for member in members {
                    match self.find_member_status(member).await? {
                        Some(s) if s == "available" => available += 1,
                        Some(s) if FAILED.contains(&s.as_str()) => {
                            return Err(ProviderError::Permanent(format!(
                                "replication group {id} is {status}, and its node {member} is {s}"
                            )));
                        }
                        _ => {}
                    }
                }
                Ok(working(format!(
                    "{status} replication group {id}: {available} of {} nodes available",
                    members.len()
                )))
            }
        }
    }

    /// The status of one member cluster of a replication group; `None` while
    /// it does not exist yet.
    async fn find_member_status(&self, member: &str) -> Result<Option<String>, Failure> {
        Ok(self.find_cluster(member).await?.and_then(|c| c.cache_cluster_status))
    }

    pub(super) async fn cache_endpoint(&self, instance_id: &str) -> Result<Endpoint, ProviderError> {
        let id = self.names.cache(instance_id);
        match self.find(&id).await? {
            None => {
                Err(ProviderError::Permanent(format!("no replication group {id} (nor cache cluster) exists")))
            }
            Some(Cache::Group(group)) => {
                let tls = group.transit_encryption_enabled().unwrap_or(false);
                let cluster_mode = group.cluster_enabled().unwrap_or(false);
                // Cluster mode: clients discover the shards through the
                // configuration endpoint. Otherwise: the primary's, and the
                // reader endpoint where there are replicas to read from.
                let (endpoint, reader) = if cluster_mode {
                    (group.configuration_endpoint(), None)
                } else {
                    let shard = group.node_groups().first();
                    let replicas = shard.is_some_and(|g| g.node_group_members().len() > 1);
                    (
                        shard.and_then(|g| g.primary_endpoint()),
                        shard.and_then(|g| g.reader_endpoint()).filter(|_| replicas),
                    )
                };
                let reader = endpoint_of(reader, tls).map(|e| HostPort { host: e.host, port: e.port });
                endpoint_of(endpoint, tls).map(|e| Endpoint { reader, cluster_mode, ..e }).ok_or_else(|| {
                    ProviderError::Retryable(format!(
                        "replication group {id} has no endpoint yet (it is {})",
                        group.status().unwrap_or("unknown")
                    ))
                })
            }
            Some(Cache::Serverless(cache)) => super::serverless::serverless_endpoint(&id, &cache),
            Some(Cache::Cluster(cluster)) => {
                let tls = cluster.transit_encryption_enabled().unwrap_or(false);
                // Memcached clients take the node list (or discover it through
                // the configuration endpoint with ElastiCache's client).
                let nodes: Vec<String> = cluster
                    .cache_nodes()
                    .iter()
                    .filter_map(|n| endpoint_of(n.endpoint(), tls))
                    .map(|e| format!("{}:{}", e.host, e.port))
                    .collect();
                endpoint_of(cluster.configuration_endpoint(), tls)
                    .map(|e| Endpoint { nodes, ..e })
                    .ok_or_else(|| {
                        ProviderError::Retryable(format!(
                            "cache cluster {id} has no configuration endpoint yet (it is {})",
                            cluster.cache_cluster_status().unwrap_or("unknown")
                        ))
                    })
            }
        }
    }
}

/// `Done`, unless ElastiCache has accepted changes it has not made yet: a
/// cache can still say `available` just after a modify call, and a worker
/// that took that for done would send the change again.
fn still_pending(what: &str, pending: Vec<&'static str>) -> Progress {
    if pending.is_empty() {
        Progress::Done
    } else {
        working(format!("available {what}, with changes pending: {}", pending.join(", ")))
    }
}

/// What a replication group's PendingModifiedValues says is still to come.
fn group_pending(group: &ReplicationGroup) -> Vec<&'static str> {
    let Some(p) = group.pending_modified_values() else { return Vec::new() };
    [
        (p.primary_cluster_id().is_some(), "primary cluster"),
        (p.automatic_failover_status().is_some(), "automatic failover"),
        (p.resharding().is_some(), "resharding"),
        (p.auth_token_status().is_some(), "AUTH token"),
        (p.user_groups().is_some(), "user groups"),
        (!p.log_delivery_configurations().is_empty(), "log delivery"),
        (
            p.transit_encryption_enabled().is_some() || p.transit_encryption_mode().is_some(),
            "in-transit encryption",
        ),
        (p.cluster_mode().is_some(), "cluster mode"),
    ]
    .into_iter()
    .filter_map(|(pending, what)| pending.then_some(what))
    .collect()
}

/// What a cache cluster's PendingModifiedValues says is still to come.
fn cluster_pending(cluster: &CacheCluster) -> Vec<&'static str> {
    let Some(p) = cluster.pending_modified_values() else { return Vec::new() };
    [
        (p.num_cache_nodes().is_some() || !p.cache_node_ids_to_remove().is_empty(), "node count"),
        (p.engine_version().is_some(), "engine version"),
        (p.cache_node_type().is_some() || p.scale_config().is_some(), "node type"),
        (p.auth_token_status().is_some(), "AUTH token"),
        (!p.log_delivery_configurations().is_empty(), "log delivery"),
        (
            p.transit_encryption_enabled().is_some() || p.transit_encryption_mode().is_some(),
            "in-transit encryption",
        ),
    ]
    .into_iter()
    .filter_map(|(pending, what)| pending.then_some(what))
    .collect()
}

fn cluster_progress(id: &str, cluster: &CacheCluster) -> Result<Progress, ProviderError> {
    let status = cluster.cache_cluster_status().unwrap_or("unknown");
    match status {
        "available" => Ok(still_pending(&format!("cache cluster {id}"), cluster_pending(cluster))),
        "deleting" | "deleted" => Err(ProviderError::Permanent(format!("cache cluster {id} is {status}"))),
        failed if FAILED.contains(&failed) => {
            Err(ProviderError::Permanent(format!("cache cluster {id} is {failed}")))
        }
        _ => {
            let nodes = cluster.cache_nodes();
            let available = nodes.iter().filter(|n| n.cache_node_status() == Some("available")).count();
            let total =
                cluster.num_cache_nodes().and_then(|n| usize::try_from(n).ok()).unwrap_or(nodes.len());
            Ok(working(format!("{status} cache cluster {id}: {available} of {total} nodes available")))
        }
    }
}

fn endpoint_of(endpoint: Option<&AwsEndpoint>, tls: bool) -> Option<Endpoint> {
    let endpoint = endpoint?;
    let host = endpoint.address().filter(|a| !a.is_empty())?;
    let port = u16::try_from(endpoint.port()?).ok()?;
    Some(Endpoint::single(host, port, tls))
}
