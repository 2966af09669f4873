//! The orphan sweep's view of ElastiCache: replication groups, cache
//! clusters of their own (Memcached), user groups and users whose ids have
//! the shape of this broker's names (see [`Names::is_cache_id`]), minus
//! what the live caches account for: their own ids, their admin and
//! `default` users, and every user their user groups hold. A user outside
//! every live group whose id is a live cache's binding-user name for its
//! user name is handed to the sweep to check against that instance's
//! records.
//!
//! The caches' log groups are listed too (see [`super::logs`]), and
//! serverless caches, like replication groups.
//!
//! Nothing is deleted unless its tags say `broker` = the prefix
//! (ListTagsForResource first). A replication group keeps a final snapshot,
//! `{id}-orphan`, named from its id, so a repeated delete asks for the same
//! one (and, as a deprovision does, deletes without one when it exists
//! already).
//!
//! [`Names::is_cache_id`]: super::names::Names::is_cache_id

use std::collections::HashSet;

use aws_sdk_elasticache::Client;

use super::failure::{Kind, classify};
use super::{ElastiCacheProvider, OWNER_TAG};
use broker_core::domain::ResourceKind;
use broker_core::ports::{Claim, Inventory, Leftover, LeftoverPage, LiveCaches, ProviderError, Removal};

/// Records per Describe call (ElastiCache allows 20 to 100).
const PAGE: i32 = 100;

const KINDS: &[ResourceKind] = &[
    ResourceKind::ReplicationGroup,
    ResourceKind::CacheCluster,
    ResourceKind::UserGroup,
    ResourceKind::User,
    ResourceKind::LogGroup,
    ResourceKind::ServerlessCache,
];

impl ElastiCacheProvider {
    /// The final snapshot an orphaned replication group is deleted with.
    fn orphan_snapshot(id: &str) -> String {
        format!("{id}-orphan")
    }

    /// Whether the resource's tags say it is this broker's.
    async fn tagged_ours(&self, client: &Client, arn: &str) -> Result<Option<bool>, ProviderError> {
        match client.list_tags_for_resource().resource_name(arn).send().await {
            Ok(out) => Ok(Some(
                out.tag_list()
                    .iter()
                    .any(|t| t.key() == Some(OWNER_TAG) && t.value() == Some(self.names.prefix())),
            )),
            Err(e) => {
                let failure = classify("ListTagsForResource", e);
                if failure.is(Kind::NotFound) { Ok(None) } else { Err(failure.into()) }
            }
        }
    }

    /// Runs a delete call's outcome through the sweep's terms.
    fn removal(what: &str, result: Result<(), super::failure::Failure>) -> Result<Removal, ProviderError> {
        match result {
            Ok(()) => Ok(Removal::Removed),
            Err(f) if f.is(Kind::NotFound) => Ok(Removal::Gone),
            Err(f) => {
                tracing::warn!(resource = what, error = %f.description, "could not delete an orphan");
                Err(f.into())
            }
        }
    }
}

fn leftover(kind: ResourceKind, id: &str, arn: Option<&str>, claim: Claim) -> Leftover {
    Leftover { kind, id: id.to_string(), reference: arn.unwrap_or(id).to_string(), claim }
}

#[async_trait::async_trait]
impl Inventory for ElastiCacheProvider {
    fn kinds(&self) -> &'static [ResourceKind] {
        KINDS
    }

    async fn leftovers(
        &self,
        kind: ResourceKind,
        token: Option<&str>,
        live: &LiveCaches,
    ) -> Result<LeftoverPage, ProviderError> {
        let caches: HashSet<String> = live.iter().map(|k| self.names.cache(k)).collect();
        let marker = token.map(str::to_string);
        let unaccounted = |id: &str| self.names.is_cache_id(id) && !caches.contains(id);
        match kind {
            ResourceKind::ReplicationGroup => {
                let out = self
                    .client
                    .describe_replication_groups()
                    .max_records(PAGE)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeReplicationGroups", e))?;
                let leftovers = out
                    .replication_groups()
                    .iter()
                    .filter(|g| g.status() != Some("deleting"))
                    .filter_map(|g| {
                        let id = g.replication_group_id()?;
                        unaccounted(id).then(|| leftover(kind, id, g.arn(), Claim::Nobody))
                    })
                    .collect();
                Ok(LeftoverPage { leftovers, next: out.marker().map(str::to_string) })
            }
            ResourceKind::CacheCluster => {
                let out = self
                    .client
                    .describe_cache_clusters()
                    .max_records(PAGE)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeCacheClusters", e))?;
                let leftovers = out
                    .cache_clusters()
                    .iter()
                    // A replication group's members go with their group.
                    .filter(|c| c.replication_group_id().is_none())
                    .filter(|c| !matches!(c.cache_cluster_status(), Some("deleting" | "deleted")))
                    .filter_map(|c| {
                        let id = c.cache_cluster_id()?;
                        unaccounted(id).then(|| leftover(kind, id, c.arn(), Claim::Nobody))
                    })
                    .collect();
                Ok(LeftoverPage { leftovers, next: out.marker().map(str::to_string) })
            }
            ResourceKind::UserGroup => {
                let out = self
                    .rbac
                    .describe_user_groups()
                    .max_records(PAGE)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeUserGroups", e))?;
                let leftovers = out
                    .user_groups()
                    .iter()
                    .filter(|g| g.status() != Some("deleting"))
                    .filter_map(|g| {
                        let id = g.user_group_id()?;
                        unaccounted(id).then(|| leftover(kind, id, g.arn(), Claim::Nobody))
                    })
                    .collect();
                Ok(LeftoverPage { leftovers, next: out.marker().map(str::to_string) })
            }
            ResourceKind::User => {
                let out = self
                    .client
                    .describe_users()
                    .max_records(PAGE)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeUsers", e))?;
                let fixed: HashSet<String> = live
                    .iter()
                    .flat_map(|k| [self.names.admin_user(k), self.names.default_user(k)])
                    .collect();
                let leftovers = out
                    .users()
                    .iter()
                    .filter(|u| u.status() != Some("deleting"))
                    .filter_map(|u| {
                        let id = u.user_id()?;
                        if !self.names.is_user_id(id)
                            || fixed.contains(id)
                            || u.user_group_ids().iter().any(|g| caches.contains(g))
                        {
                            return None;
                        }
                        let username = u.user_name().unwrap_or_default();
                        let claim = live
                            .iter()
                            .find(|k| self.names.binding_user(k, username) == id)
                            .map(|k| Claim::UserOf { key: k.clone(), username: username.to_string() })
                            .unwrap_or(Claim::Nobody);
                        Some(leftover(kind, id, u.arn(), claim))
                    })
                    .collect();
                Ok(LeftoverPage { leftovers, next: out.marker().map(str::to_string) })
            }
            ResourceKind::LogGroup => self.leftover_log_groups(token, live).await,
            ResourceKind::ServerlessCache => {
                let out = self
                    .rbac
                    .describe_serverless_caches()
                    .max_results(PAGE)
                    .set_next_token(marker)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeServerlessCaches", e))?;
                let leftovers = out
                    .serverless_caches()
                    .iter()
                    .filter(|c| !c.status().is_some_and(|s| s.eq_ignore_ascii_case("deleting")))
                    .filter_map(|c| {
                        let id = c.serverless_cache_name()?;
                        unaccounted(id).then(|| leftover(kind, id, c.arn(), Claim::Nobody))
                    })
                    .collect();
                Ok(LeftoverPage { leftovers, next: out.next_token().map(str::to_string) })
            }
            other => Err(ProviderError::Permanent(format!("ElastiCache lists no {}", other.describe()))),
        }
    }

    async fn remove(&self, leftover: &Leftover) -> Result<Removal, ProviderError> {
        if leftover.kind == ResourceKind::LogGroup {
            return self.remove_log_group(leftover).await;
        }
        let id = leftover.id.as_str();
        // User groups and serverless caches live with the second client, as
        // every call on them does.
        let client = if matches!(leftover.kind, ResourceKind::UserGroup | ResourceKind::ServerlessCache) {
            &self.rbac
        } else {
            &self.client
        };
        match self.tagged_ours(client, &leftover.reference).await? {
            None => return Ok(Removal::Gone),
            Some(false) => return Ok(Removal::NotOurs),
            Some(true) => {}
        }
        match leftover.kind {
            ResourceKind::ReplicationGroup => {
                let snapshot = ElastiCacheProvider::orphan_snapshot(id);
                tracing::info!(replication_group = id, final_snapshot = %snapshot, "deleting an orphaned replication group");
                match self.delete_group(id, Some(&snapshot)).await {
                    Err(f) if f.is(Kind::AlreadyExists) => {
                        Self::removal(id, self.delete_group(id, None).await)
                    }
                    other => Self::removal(id, other),
                }
            }
            ResourceKind::CacheCluster => {
                let deleted = self.client.delete_cache_cluster().cache_cluster_id(id).send().await;
                Self::removal(id, deleted.map(|_| ()).map_err(|e| classify("DeleteCacheCluster", e)))
            }
            ResourceKind::UserGroup => {
                let deleted = self.rbac.delete_user_group().user_group_id(id).send().await;
                Self::removal(id, deleted.map(|_| ()).map_err(|e| classify("DeleteUserGroup", e)))
            }
            ResourceKind::User => {
                let deleted = self.client.delete_user().user_id(id).send().await;
                Self::removal(id, deleted.map(|_| ()).map_err(|e| classify("DeleteUser", e)))
            }
            ResourceKind::ServerlessCache => {
                let snapshot = ElastiCacheProvider::orphan_snapshot(id);
                tracing::info!(serverless_cache = id, final_snapshot = %snapshot, "deleting an orphaned serverless cache");
                let delete = |snapshot: Option<String>| async move {
                    self.rbac
                        .delete_serverless_cache()
                        .serverless_cache_name(id)
                        .set_final_snapshot_name(snapshot)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify("DeleteServerlessCache", e))
                };
                match delete(Some(snapshot)).await {
                    Err(f) if f.is(Kind::AlreadyExists) => Self::removal(id, delete(None).await),
                    other => Self::removal(id, other),
                }
            }
            other => Err(ProviderError::Permanent(format!("ElastiCache deletes no {}", other.describe()))),
        }
    }
}
