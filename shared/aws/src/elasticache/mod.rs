//! The ElastiCache cache provider: Redis OSS and Valkey as replication groups
//! with RBAC users, Memcached as cache clusters. The same port as laptop
//! mode's local processes, so the broker and the worker cannot tell them apart.
//!
//! Every resource has a name derived from the instance id ([`names`]), so each
//! call is idempotent: a create finds what an earlier attempt made and adopts
//! it, a delete of something gone succeeds, a user put resets the user to
//! exactly the passwords given.
//!
//! What gets made for a Redis OSS or Valkey instance:
//! 1. a user named `default` with access `off -@all` (every user group needs
//!    one; disabled, so a client that does not log in gets nothing);
//! 2. the admin user `broker-admin` with the password from the admin secret;
//! 3. the instance's spare binding users (`spec.spare_users`), each with the
//!    password of its own secret;
//! 4. a user group holding all of them, named like the replication group;
//! 5. the replication group with that user group, TLS in transit, encryption
//!    at rest, daily snapshots, the broker's subnet and security groups.
//!
//! Deleting it keeps a final snapshot when the plan says so (see [`names`]
//! for its name); the snapshot outlives the instance.
//!
//! Engine versions before RBAC (Redis OSS 5 and older) get an AUTH token, the
//! admin secret, instead of 1 to 4. Each binding becomes a user added to the
//! user group, and removed again on unbind, so access really ends.
//!
//! Rotation (`set_passwords`, see [`rotation`]) changes the admin's or a
//! binding user's passwords through ModifyUser, or the AUTH token of a
//! replication group without users through ModifyReplicationGroup.
//!
//! Two clients: user groups, `ModifyUser` and cache parameter groups go
//! through the RBAC client, everything else through the main one. They are the same client unless
//! [`ElastiCacheProvider::with_rbac_client`] says otherwise, which tests use
//! because moto has no user groups.
//!
//! Passwords go only into request builders, which are never logged: their
//! `Debug` would print `Passwords` and `AuthToken`. Errors AWS returns are
//! described by code and message, with any password blanked out.

mod create;
mod day2;
mod delete;
pub(crate) mod failure;
mod inventory;
mod logs;
mod modify;
pub(crate) mod names;
mod parameters;
mod rotation;
mod serverless;
mod status;
mod users;
mod versions;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::types::{CacheCluster, ReplicationGroup, ServerlessCache, Tag, User, UserGroup};
use secrecy::SecretString;

use crate::config::AwsSettings;
use broker_core::domain::{Action, ActionStep, CacheUser, Endpoint, Snapshot};
use broker_core::ports::{
    CacheNode, CacheProvider, CacheSpec, Principal, Progress, ProviderError, SecretStore,
};

use failure::{Failure, Kind, classify};
pub use logs::{LOG_GROUP_ROOT, LogSettings};
pub use names::MAX_PREFIX_LEN;
use names::Names;

/// The tag naming the instance a cache serves (the worker puts it in every
/// cache's tags, [`CacheSpec::tags`]); a warm-pool cache gets its tenant's
/// when a provision claims it.
pub const INSTANCE_TAG: &str = "broker-instance-id";

/// The tag naming the key a cache's, user's or user group's name derives
/// from ([`CacheSpec::cache_key`]): what adoption and deletion check, since
/// a pooled cache keeps its key when its instance changes. Caches made
/// before this tag carry only [`INSTANCE_TAG`], which was the key then.
pub const CACHE_TAG: &str = "broker-cache";

/// The tag whose value is the broker's name prefix, on every cache, user
/// and user group it makes: what the orphan sweep checks before deleting.
pub const OWNER_TAG: &str = "broker";

/// Where and how the provider creates caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElastiCacheSettings {
    /// Starts every resource id and is the value of the `broker` tag. At most
    /// [`MAX_PREFIX_LEN`] lowercase letters, digits and single hyphens,
    /// starting with a letter; anything else is made so.
    pub name_prefix: String,
    /// Subnet group of Redis OSS and Valkey replication groups.
    pub cache_subnet_group: String,
    /// Subnet group of Memcached clusters.
    pub memcached_subnet_group: String,
    /// VPC security groups of every cache.
    pub security_group_ids: Vec<String>,
    /// Subnets of serverless caches' VPC endpoints.
    pub subnet_ids: Vec<String>,
    /// KMS key for encryption at rest; the AWS-owned key when absent.
    pub kms_key_id: Option<String>,
}

impl From<&AwsSettings> for ElastiCacheSettings {
    fn from(s: &AwsSettings) -> ElastiCacheSettings {
        ElastiCacheSettings {
            name_prefix: s.name_prefix.clone(),
            cache_subnet_group: s.cache_subnet_group.clone(),
            memcached_subnet_group: s.memcached_subnet_group.clone(),
            security_group_ids: s.security_group_ids.clone(),
            subnet_ids: s.cache_subnet_ids.clone(),
            kms_key_id: s.kms_key_id.clone(),
        }
    }
}

/// Caches in AWS ElastiCache. See the module documentation.
pub struct ElastiCacheProvider {
    client: Client,
    /// CreateUserGroup, DescribeUserGroups, ModifyUserGroup, DeleteUserGroup
    /// and ModifyUser only.
    rbac: Client,
    secrets: Arc<dyn SecretStore>,
    settings: ElastiCacheSettings,
    names: Names,
    /// Where log delivery creates the caches' log groups; without it a spec
    /// that asks for logs is refused.
    logs: Option<LogSettings>,
}

impl std::fmt::Debug for ElastiCacheProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElastiCacheProvider").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl ElastiCacheProvider {
    /// A provider calling ElastiCache through `client` and reading admin
    /// passwords from `secrets`.
    pub fn new(
        client: Client,
        secrets: Arc<dyn SecretStore>,
        settings: ElastiCacheSettings,
    ) -> ElastiCacheProvider {
        let names = Names::new(&settings.name_prefix);
        if names.prefix() != settings.name_prefix {
            tracing::warn!(
                configured = %settings.name_prefix,
                used = %names.prefix(),
                "the name prefix is not a valid ElastiCache id prefix; using a corrected one"
            );
        }
        ElastiCacheProvider { rbac: client.clone(), client, secrets, settings, names, logs: None }
    }

    /// Creates and deletes the caches' log groups (log delivery) through
    /// `logs`.
    pub fn with_logs(mut self, logs: LogSettings) -> ElastiCacheProvider {
        self.logs = Some(logs);
        self
    }

    /// Sends the user-group calls and `ModifyUser` through `client` instead.
    pub fn with_rbac_client(mut self, client: Client) -> ElastiCacheProvider {
        self.rbac = client;
        self
    }

    /// The id of the replication group (or Memcached cache cluster, and the
    /// user group) of `instance_id`.
    pub fn cache_id(&self, instance_id: &str) -> String {
        self.names.cache(instance_id)
    }

    /// The id of the ElastiCache user of binding user `username`.
    pub fn binding_user_id(&self, instance_id: &str, username: &str) -> String {
        self.names.binding_user(instance_id, username)
    }

    // ------------------------------------------------------------ lookups

    /// DescribeReplicationGroups for one id; `None` when there is none.
    async fn find_group(&self, id: &str) -> Result<Option<ReplicationGroup>, Failure> {
        match self.client.describe_replication_groups().replication_group_id(id).send().await {
            Ok(out) => Ok(out.replication_groups().first().cloned()),
            Err(e) => absent_if_not_found(classify("DescribeReplicationGroups", e)),
        }
    }

    /// DescribeCacheClusters for one id, with its nodes; `None` when there is
    /// none.
    async fn find_cluster(&self, id: &str) -> Result<Option<CacheCluster>, Failure> {
        match self
            .client
            .describe_cache_clusters()
            .cache_cluster_id(id)
            .show_cache_node_info(true)
            .send()
            .await
        {
            Ok(out) => Ok(out.cache_clusters().first().cloned()),
            Err(e) => absent_if_not_found(classify("DescribeCacheClusters", e)),
        }
    }

    /// The cache of an instance, whichever kind it is. Nothing records the
    /// kind between calls, and every kind has the same name, so the
    /// replication group is looked for first (the common case), then the
    /// Memcached cluster, then the serverless cache.
    async fn find(&self, id: &str) -> Result<Option<Cache>, Failure> {
        if let Some(group) = self.find_group(id).await? {
            return Ok(Some(Cache::Group(Box::new(group))));
        }
        if let Some(cluster) = self.find_cluster(id).await? {
            return Ok(Some(Cache::Cluster(Box::new(cluster))));
        }
        Ok(self.find_serverless(id).await?.map(|c| Cache::Serverless(Box::new(c))))
    }

    /// Whether the cache `id` (whose ARN `arn` is) serves `instance_id`: its
    /// [`INSTANCE_TAG`] tag names it. A cache under an instance's name that
    /// another instance's tag names (or none: someone else's) is never
    /// adopted, changed or deleted; the operation fails saying so, without
    /// naming the other instance.
    async fn check_owner(
        &self,
        what: &str,
        id: &str,
        arn: Option<&str>,
        instance_id: &str,
    ) -> Result<(), ProviderError> {
        let Some(arn) = arn else {
            return Err(ProviderError::Retryable(format!(
                "{what} {id} has no ARN yet, so its owner cannot be checked"
            )));
        };
        let tags = self
            .client_for(arn)
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .map_err(|e| classify("ListTagsForResource", e))?;
        let value = |key: &str| tags.tag_list().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
        let owner = value(CACHE_TAG).or_else(|| value(INSTANCE_TAG));
        if owner == Some(instance_id) {
            return Ok(());
        }
        tracing::error!(
            instance_id,
            cache = id,
            owner = owner.unwrap_or("none"),
            "a cache with this instance's name serves another instance; leaving it alone"
        );
        Err(ProviderError::Permanent(format!(
            "{what} {id} exists already and its {CACHE_TAG} tag names another instance's cache; \
             the broker leaves it alone"
        )))
    }

    /// DescribeUsers for one id; `None` when there is none.
    async fn find_user(&self, user_id: &str) -> Result<Option<User>, Failure> {
        match self.client.describe_users().user_id(user_id).send().await {
            Ok(out) => Ok(out.users().first().cloned()),
            Err(e) => absent_if_not_found(classify("DescribeUsers", e)),
        }
    }

    /// DescribeUserGroups for one id; `None` when there is none.
    async fn find_user_group(&self, id: &str) -> Result<Option<UserGroup>, Failure> {
        match self.rbac.describe_user_groups().user_group_id(id).send().await {
            Ok(out) => Ok(out.user_groups().first().cloned()),
            Err(e) => absent_if_not_found(classify("DescribeUserGroups", e)),
        }
    }

    /// The admin password, from the secret the spec names.
    async fn admin_password(&self, spec: &CacheSpec) -> Result<SecretString, ProviderError> {
        broker_core::ports::read_admin_password(
            self.secrets.as_ref(),
            spec.admin_secret.as_deref(),
            &spec.cache_key,
            spec.engine,
        )
        .await
    }

    /// The client that calls for the resource `arn` go through: the second
    /// one for serverless caches, whose calls it carries (see the module
    /// documentation), the main one for everything else.
    fn client_for(&self, arn: &str) -> &Client {
        if arn.contains(":serverlesscache:") { &self.rbac } else { &self.client }
    }

    /// Tags of a cache: the spec's (the instance it serves among them),
    /// `broker` = the prefix, which tells an operator which broker owns it,
    /// and the key its name derives from.
    fn cache_tags(&self, spec: &CacheSpec) -> Vec<Tag> {
        let mut tags: Vec<Tag> = spec
            .tags
            .iter()
            .filter(|(k, _)| k != CACHE_TAG && k != OWNER_TAG)
            .map(|(k, v)| tag(k, v))
            .collect();
        tags.push(tag(OWNER_TAG, self.names.prefix()));
        // What adoption and deletion check (`check_owner`), whatever the
        // spec's tags hold.
        tags.push(tag(CACHE_TAG, &spec.cache_key));
        tags
    }

    /// Tags of users and user groups: the broker and the key of the cache
    /// they serve.
    fn user_tags(&self, cache_key: &str) -> Vec<Tag> {
        vec![tag(OWNER_TAG, self.names.prefix()), tag(CACHE_TAG, cache_key)]
    }

    /// AddTagsToResource with the spec's tags on the cache: a claimed
    /// warm-pool cache takes its tenant's. Only a cache this key owns.
    async fn retag_cache(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        let Some(cache) = self.find(&id).await? else {
            return Err(ProviderError::Permanent(format!("no cache {id} exists to tag")));
        };
        let (what, arn) = (cache.what(), cache.arn().map(str::to_string));
        let Some(arn) = arn else {
            return Err(ProviderError::Retryable(format!(
                "{what} {id} has no ARN yet, so it cannot be tagged"
            )));
        };
        self.check_owner(what, &id, Some(&arn), &spec.cache_key).await?;
        self.refresh_tags(Some(&arn), spec).await?;
        tracing::info!(cache = %id, "cache tagged for its instance");
        Ok(Progress::Done)
    }
}

/// An instance's cache: a replication group (Redis OSS, Valkey), a cache
/// cluster (Memcached) or a serverless cache (Redis OSS, Valkey).
enum Cache {
    Group(Box<ReplicationGroup>),
    Cluster(Box<CacheCluster>),
    Serverless(Box<ServerlessCache>),
}

impl Cache {
    /// How messages name the kind.
    fn what(&self) -> &'static str {
        match self {
            Cache::Group(_) => "replication group",
            Cache::Cluster(_) => "cache cluster",
            Cache::Serverless(_) => "serverless cache",
        }
    }

    fn arn(&self) -> Option<&str> {
        match self {
            Cache::Group(g) => g.arn(),
            Cache::Cluster(c) => c.arn(),
            Cache::Serverless(s) => s.arn(),
        }
    }

    /// The user group its users are in; none for Memcached and for a
    /// Redis OSS cache before 6 (an AUTH token).
    fn user_group_id(&self) -> Option<&str> {
        match self {
            Cache::Group(g) => g.user_group_ids().first().map(String::as_str),
            Cache::Cluster(_) => None,
            Cache::Serverless(s) => s.user_group_id().filter(|u| !u.is_empty()),
        }
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// Turns a not-found failure into `None`, for lookups.
fn absent_if_not_found<T>(failure: Failure) -> Result<Option<T>, Failure> {
    if failure.is(Kind::NotFound) { Ok(None) } else { Err(failure) }
}

fn working(detail: impl Into<String>) -> Progress {
    Progress::Working { detail: detail.into() }
}

#[async_trait]
impl CacheProvider for ElastiCacheProvider {
    /// A user group takes minutes to add or remove a user.
    fn users_change_at_once(&self) -> bool {
        false
    }

    async fn create(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.create_cache(spec).await
    }

    async fn progress(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        self.cache_progress(instance_id).await
    }

    async fn modify(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.modify_cache(spec).await
    }

    async fn retag(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.retag_cache(spec).await
    }

    async fn delete(
        &self,
        instance_id: &str,
        final_snapshot: Option<&str>,
    ) -> Result<Progress, ProviderError> {
        self.delete_cache(instance_id, final_snapshot).await
    }

    async fn endpoint(&self, instance_id: &str) -> Result<Endpoint, ProviderError> {
        self.cache_endpoint(instance_id).await
    }

    /// A replication group's member clusters (one node each), or a
    /// Memcached cluster's nodes.
    async fn nodes(&self, instance_id: &str) -> Result<Vec<CacheNode>, ProviderError> {
        let id = self.names.cache(instance_id);
        let mut nodes: Vec<CacheNode> = match self.find(&id).await? {
            None => Vec::new(),
            Some(Cache::Group(group)) => group
                .member_clusters()
                .iter()
                .map(|member| CacheNode { cluster_id: member.clone(), node_id: None })
                .collect(),
            Some(Cache::Cluster(cluster)) => cluster
                .cache_nodes()
                .iter()
                .filter_map(|n| n.cache_node_id())
                .map(|n| CacheNode { cluster_id: id.clone(), node_id: Some(n.to_string()) })
                .collect(),
            // No nodes: ElastiCache runs them out of sight.
            Some(Cache::Serverless(_)) => Vec::new(),
        };
        nodes.sort();
        Ok(nodes)
    }

    async fn put_user(&self, instance_id: &str, user: &CacheUser) -> Result<Progress, ProviderError> {
        self.put_binding_user(instance_id, user).await
    }

    async fn delete_user(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError> {
        self.delete_binding_user(instance_id, username).await
    }

    async fn user_progress(&self, instance_id: &str, username: &str) -> Result<Progress, ProviderError> {
        self.binding_user_progress(instance_id, username).await
    }

    async fn set_passwords(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        self.set_principal_passwords(instance_id, principal, passwords).await
    }

    async fn passwords_progress(
        &self,
        instance_id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        self.principal_passwords_progress(instance_id, principal, passwords).await
    }

    async fn plan_action(
        &self,
        instance_id: &str,
        action: &Action,
    ) -> Result<Vec<ActionStep>, ProviderError> {
        self.plan_cache_action(instance_id, action).await
    }

    async fn start_action(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        self.start_cache_action(instance_id, action, step).await
    }

    async fn action_progress(
        &self,
        instance_id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        self.cache_action_progress(instance_id, action, step).await
    }

    async fn snapshots(
        &self,
        instance_id: &str,
        final_key: Option<&str>,
    ) -> Result<Vec<Snapshot>, ProviderError> {
        self.cache_snapshots(instance_id, final_key).await
    }
}
