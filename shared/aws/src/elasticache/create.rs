//! `create`: the users, the user group and the replication group of a Redis
//! OSS or Valkey instance, or the cache cluster of a Memcached one. Each
//! piece that exists already (from an earlier attempt) is adopted.

use aws_sdk_elasticache::types::{AzMode, CacheCluster, ClusterMode, ReplicationGroup};
use secrecy::{ExposeSecret, SecretString};

use super::failure::{Kind, classify};
use super::users::with_on;
use super::versions::{aws_engine_version, default_parameter_group};
use super::{ElastiCacheProvider, working};
use broker_core::domain::credentials::{ADMIN_USER, PASSWORD_LEN, generate_password, passwords_fit};
use broker_core::domain::{CacheUser, Engine};
use broker_core::ports::{CacheSpec, Progress, ProviderError};

/// The admin user may do everything.
pub const ADMIN_ACCESS: &str = "on ~* &* +@all";
/// Every user group needs a user named `default`; this one can do nothing,
/// so a client that does not log in gets nothing. (Redis OSS: without a
/// password; Valkey, whose user groups take only users with passwords: with
/// a random one nobody keeps.)
pub const DEFAULT_USER_ACCESS: &str = "off -@all";
/// The user name the disabled default user must have.
pub const DEFAULT_USER_NAME: &str = "default";

impl ElastiCacheProvider {
    pub(super) async fn create_cache(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        if spec.plan.serverless {
            return self.create_serverless(spec).await;
        }
        match spec.engine {
            Engine::Memcached => self.create_memcached(spec).await,
            Engine::Redis | Engine::Valkey => self.create_group(spec).await,
        }
    }

    async fn create_group(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        // An earlier attempt got as far as the group: adopt it and leave the
        // users alone, they were made before it.
        if let Some(group) = self.find_group(&id).await? {
            return self.adopt_group(spec, &id, &group).await;
        }
        let admin = self.admin_password(spec).await?;
        // The instance's own parameter group, made before the group names it.
        let own_parameters = self.ensure_parameter_group(spec).await?;
        let plan = &spec.plan;
        let engine = spec.engine.as_str();
        let replicas = i32::from(plan.replicas_per_shard);
        let mut request = self
            .client
            .create_replication_group()
            .replication_group_id(&id)
            .replication_group_description(format!(
                "{engine} {} plan {} for instance {}",
                spec.engine_version, plan.name, spec.cache_key
            ))
            .engine(engine)
            .engine_version(aws_engine_version(spec.engine, &spec.engine_version))
            .cache_node_type(&plan.node_type)
            .transit_encryption_enabled(true)
            .at_rest_encryption_enabled(true)
            .set_kms_key_id(self.settings.kms_key_id.clone())
            .cache_subnet_group_name(&self.settings.cache_subnet_group)
            .set_security_group_ids(non_empty(&self.settings.security_group_ids))
            .snapshot_retention_limit(i32::from(spec.settings.snapshot_retention_days))
            .set_snapshot_window(spec.settings.snapshot_window.clone())
            .preferred_maintenance_window(&spec.settings.maintenance_window)
            // A restore: the data of one of the broker's snapshots, node-based or
            // serverless, named by the snapshot's name.
            .set_snapshot_name(
                spec.restore.as_deref().filter(|r| !is_serverless_snapshot(r)).map(snapshot_name),
            )
            .set_serverless_cache_snapshot_name(
                spec.restore.as_deref().filter(|r| is_serverless_snapshot(r)).map(snapshot_name),
            )
            .set_tags(Some(self.cache_tags(spec)));
        if plan.cluster_mode {
            // ElastiCache requires automatic failover in cluster mode, and a
            // cluster-mode parameter group when there is more than one shard.
            request = request
                .cluster_mode(ClusterMode::Enabled)
                .num_node_groups(i32::from(plan.shards))
                .replicas_per_node_group(replicas)
                .automatic_failover_enabled(true)
                .multi_az_enabled(plan.multi_az && replicas > 0)
                .set_cache_parameter_group_name(
                    own_parameters
                        .clone()
                        .or_else(|| default_parameter_group(spec.engine, &spec.engine_version, true)),
                );
        } else if replicas > 0 {
            request = request
                .num_cache_clusters(1 + replicas)
                .automatic_failover_enabled(plan.automatic_failover)
                .multi_az_enabled(plan.multi_az && plan.automatic_failover);
        } else {
            request = request.num_cache_clusters(1);
        }
        if !plan.cluster_mode {
            request = request.set_cache_parameter_group_name(own_parameters);
        }
        if !spec.log_delivery.is_empty() {
            // The group the cache writes to exists before the cache.
            let log_group = self.ensure_log_group(spec).await?;
            request = request.set_log_delivery_configurations(Some(super::logs::requests(
                &log_group,
                &spec.log_delivery,
                &[],
            )));
        }
        if spec.engine.has_users(&spec.engine_version) {
            self.ensure_users_and_group(spec, &id, &admin).await?;
            request = request.user_group_ids(&id);
        } else {
            request = request.auth_token(admin.expose_secret());
        }
        match request.send().await {
            Ok(_) => {
                tracing::info!(instance_id = %spec.cache_key, replication_group = %id, "creating replication group");
                Ok(working(format!("creating replication group {id}")))
            }
            Err(e) => {
                let failure = classify("CreateReplicationGroup", e).redacting(&[&admin]);
                if !failure.is(Kind::AlreadyExists) {
                    return Err(failure.into());
                }
                // Lost a race with another attempt: adopt what it made.
                match self.find_group(&id).await? {
                    Some(group) => self.adopt_group(spec, &id, &group).await,
                    None => Err(ProviderError::Retryable(failure.description)),
                }
            }
        }
    }

    /// The disabled default user, the admin user and their user group;
    /// `Retryable` until the user group is active, since a replication group
    /// cannot be created with a user group that is still being made.
    pub(super) async fn ensure_users_and_group(
        &self,
        spec: &CacheSpec,
        id: &str,
        admin: &SecretString,
    ) -> Result<(), ProviderError> {
        let engine = spec.engine.as_str();
        let default_id = self.names.default_user(&spec.cache_key);
        let admin_id = self.names.admin_user(&spec.cache_key);
        // A Valkey user group takes only users that log in with a password
        // (or IAM), so Valkey's disabled default user gets a random one that
        // is never stored: it is off and may do nothing, so no one needs it.
        let unusable = (spec.engine == Engine::Valkey).then(|| generate_password(PASSWORD_LEN));
        let created = self
            .client
            .create_user()
            .user_id(&default_id)
            .user_name(DEFAULT_USER_NAME)
            .engine(engine)
            .access_string(DEFAULT_USER_ACCESS)
            .set_no_password_required(unusable.is_none().then_some(true))
            .set_passwords(unusable.as_ref().map(|p| vec![p.expose_secret().to_string()]))
            .set_tags(Some(self.user_tags(&spec.cache_key)))
            .send()
            .await;
        if let Err(e) = created {
            let redact: Vec<&SecretString> = unusable.iter().collect();
            let failure = classify("CreateUser", e).redacting(&redact);
            if !failure.is(Kind::AlreadyExists) {
                return Err(failure.into());
            }
        }
        let created = self
            .client
            .create_user()
            .user_id(&admin_id)
            .user_name(ADMIN_USER)
            .engine(engine)
            .access_string(ADMIN_ACCESS)
            .passwords(admin.expose_secret())
            .set_tags(Some(self.user_tags(&spec.cache_key)))
            .send()
            .await;
        if let Err(e) = created {
            // The admin secret keeps its first value, so an admin user made
            // by an earlier attempt already has this password.
            let failure = classify("CreateUser", e).redacting(&[admin]);
            if !failure.is(Kind::AlreadyExists) {
                return Err(failure.into());
            }
        }
        // The spare binding users go into the group from the start, so they
        // are ready as soon as the cache is: no user group change to wait for.
        let mut members = vec![default_id.clone(), admin_id.clone()];
        for spare in &spec.spare_users {
            let user_id = self.names.binding_user(&spec.cache_key, &spare.username);
            self.create_user_once(&spec.cache_key, &user_id, spare, engine).await?;
            members.push(user_id);
        }
        let created = self
            .rbac
            .create_user_group()
            .user_group_id(id)
            .engine(engine)
            .set_user_ids(Some(members.clone()))
            .set_tags(Some(self.user_tags(&spec.cache_key)))
            .send()
            .await;
        let status = match created {
            Ok(out) => out.status,
            Err(e) => {
                let failure = classify("CreateUserGroup", e);
                if !failure.is(Kind::AlreadyExists) {
                    return Err(failure.into());
                }
                // Made by an earlier attempt; it may lack a spare recorded
                // since (the first attempt failed before making it).
                let group = self.find_user_group(id).await?;
                let missing: Vec<String> = members
                    .iter()
                    .filter(|m| !group.as_ref().is_some_and(|g| g.user_ids().contains(m)))
                    .cloned()
                    .collect();
                if let Some(group) = &group
                    && !missing.is_empty()
                    && group.status() == Some("active")
                {
                    self.rbac
                        .modify_user_group()
                        .user_group_id(id)
                        .set_user_ids_to_add(Some(missing.clone()))
                        .send()
                        .await
                        .map_err(|e| classify("ModifyUserGroup", e))?;
                    return Err(ProviderError::Retryable(format!(
                        "adding {} to user group {id}; the replication group is created once it is active",
                        missing.join(", ")
                    )));
                }
                group.and_then(|g| g.status)
            }
        };
        match status.as_deref() {
            None | Some("active") => Ok(()),
            Some(status) => Err(ProviderError::Retryable(format!(
                "user group {id} is {status}; the replication group is created once it is active"
            ))),
        }
    }

    /// CreateUser for a binding user, with its passwords and rules; one that
    /// exists already (an earlier attempt made it) is fine.
    pub(super) async fn create_user_once(
        &self,
        instance_id: &str,
        user_id: &str,
        user: &CacheUser,
        engine: &str,
    ) -> Result<(), ProviderError> {
        if !passwords_fit(&user.passwords) {
            return Err(ProviderError::Permanent(format!(
                "user {} needs one or two passwords, and no empty one",
                user.username
            )));
        }
        let redact: Vec<&SecretString> = user.passwords.iter().collect();
        let created = self
            .client
            .create_user()
            .user_id(user_id)
            .user_name(&user.username)
            .engine(engine)
            .access_string(with_on(&user.access_string))
            .set_passwords(Some(user.passwords.iter().map(|p| p.expose_secret().to_string()).collect()))
            .set_tags(Some(self.user_tags(instance_id)))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = classify("CreateUser", e).redacting(&redact);
                if failure.is(Kind::AlreadyExists) { Ok(()) } else { Err(failure.into()) }
            }
        }
    }

    async fn create_memcached(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        let plan = &spec.plan;
        let nodes = i32::from(plan.cache_nodes.max(1));
        let created = self
            .client
            .create_cache_cluster()
            .cache_cluster_id(&id)
            .engine("memcached")
            .engine_version(aws_engine_version(Engine::Memcached, &spec.engine_version))
            .cache_node_type(&plan.node_type)
            .num_cache_nodes(nodes)
            .set_az_mode((nodes > 1).then_some(AzMode::CrossAz))
            // Memcached 1.6.12 and later encrypt in transit.
            .transit_encryption_enabled(true)
            .cache_subnet_group_name(&self.settings.memcached_subnet_group)
            .set_security_group_ids(non_empty(&self.settings.security_group_ids))
            .preferred_maintenance_window(&spec.settings.maintenance_window)
            .set_tags(Some(self.cache_tags(spec)))
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(instance_id = %spec.cache_key, cache_cluster = %id, "creating cache cluster");
                Ok(working(format!("creating cache cluster {id}")))
            }
            Err(e) => {
                let failure = classify("CreateCacheCluster", e);
                if !failure.is(Kind::AlreadyExists) {
                    return Err(failure.into());
                }
                match self.find_cluster(&id).await? {
                    Some(cluster) => self.adopt_cluster(spec, &id, &cluster).await,
                    None => Err(ProviderError::Retryable(failure.description)),
                }
            }
        }
    }
}

impl ElastiCacheProvider {
    /// An existing replication group is the instance's when its instance tag
    /// names it and it runs the same engine; one being deleted (a
    /// deprovision of the same instance id) is waited out.
    async fn adopt_group(
        &self,
        spec: &CacheSpec,
        id: &str,
        group: &ReplicationGroup,
    ) -> Result<Progress, ProviderError> {
        self.check_owner("replication group", id, group.arn(), &spec.cache_key).await?;
        if let Some(engine) = group.engine()
            && !engine.eq_ignore_ascii_case(spec.engine.as_str())
        {
            return Err(ProviderError::Permanent(format!(
                "replication group {id} exists already and runs {engine}, not {}",
                spec.engine.as_str()
            )));
        }
        adopt_status("replication group", id, group.status())
    }

    async fn adopt_cluster(
        &self,
        spec: &CacheSpec,
        id: &str,
        cluster: &CacheCluster,
    ) -> Result<Progress, ProviderError> {
        self.check_owner("cache cluster", id, cluster.arn(), &spec.cache_key).await?;
        if let Some(engine) = cluster.engine()
            && !engine.eq_ignore_ascii_case(spec.engine.as_str())
        {
            return Err(ProviderError::Permanent(format!(
                "cache cluster {id} exists already and runs {engine}, not {}",
                spec.engine.as_str()
            )));
        }
        adopt_status("cache cluster", id, cluster.cache_cluster_status())
    }
}

fn adopt_status(what: &str, id: &str, status: Option<&str>) -> Result<Progress, ProviderError> {
    match status.unwrap_or("unknown") {
        "available" => Ok(Progress::Done),
        "deleting" => Err(ProviderError::Retryable(format!(
            "{what} {id} of an earlier instance with this id is still being deleted; it is created again once it is gone"
        ))),
        failed @ ("create-failed" | "incompatible-network" | "restore-failed") => {
            Err(ProviderError::Permanent(format!("{what} {id} exists already and is {failed}")))
        }
        status => Ok(working(format!("{what} {id} is {status} (made by an earlier attempt)"))),
    }
}

/// `None` for an empty list, so no empty list parameter is sent.
fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

/// Whether a snapshot reference (an ARN, or a plain name) is a serverless
/// cache's snapshot.
fn is_serverless_snapshot(reference: &str) -> bool {
    reference.contains(":serverlesscachesnapshot:")
}

/// The name in a snapshot reference: an ARN's last part, or the name itself.
fn snapshot_name(reference: &str) -> String {
    reference.rsplit(':').next().unwrap_or(reference).to_string()
}
