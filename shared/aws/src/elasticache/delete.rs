//! `delete`: the replication group (or cache cluster) first; once it is gone,
//! the users and user group made for it. Every call moves one step and says
//! what it waits for, so the worker polls until `Done`.
//!
//! When the plan asks for a final snapshot, DeleteReplicationGroup names one
//! (`FinalSnapshotIdentifier`, [`Names::final_snapshot`]): ElastiCache takes
//! it from the primary and then deletes the group; the snapshot stays until
//! someone deletes it. The name is the same on every attempt, so if AWS
//! answers that it exists already, an earlier attempt took it, and the
//! delete is sent again without one rather than failing. Memcached clusters
//! have no snapshots and are deleted without.
//!
//! The instance's named snapshots (the `snapshot` parameter's) are deleted
//! first: they were the instance's, and nothing would delete them later.
//!
//! [`Names::final_snapshot`]: super::names::Names::final_snapshot

use super::failure::{Failure, Kind, classify};
use super::{Cache, ElastiCacheProvider, working};
use broker_core::ports::{Progress, ProviderError};

/// Statuses a cache cannot be deleted in; it is deleted once they end.
const BUSY: &[&str] = &["creating", "modifying", "snapshotting", "rebooting cluster nodes"];

impl ElastiCacheProvider {
    pub(super) async fn delete_cache(
        &self,
        instance_id: &str,
        final_snapshot: Option<&str>,
    ) -> Result<Progress, ProviderError> {
        let id = self.names.cache(instance_id);
        match self.find(&id).await? {
            Some(Cache::Group(group)) => {
                let snapshot = final_snapshot.map(|key| self.names.final_snapshot(instance_id, key));
                let deleting = match &snapshot {
                    Some(name) => format!("deleting replication group {id} after its final snapshot {name}"),
                    None => format!("deleting replication group {id}"),
                };
                let status = group.status().unwrap_or("unknown");
                if status == "deleting" {
                    return Ok(working(deleting));
                }
                if BUSY.contains(&status) {
                    return Ok(working(format!(
                        "replication group {id} is {status}; it is deleted once that ends"
                    )));
                }
                self.check_owner("replication group", &id, group.arn(), instance_id).await?;
                // The instance's named snapshots go with it (its final
                // snapshot, taken next, stays).
                if let working @ Progress::Working { .. } = self.delete_named_snapshots(instance_id).await? {
                    return Ok(working);
                }
                match self.delete_group(&id, snapshot.as_deref()).await {
                    Ok(()) => {
                        tracing::info!(
                            instance_id,
                            replication_group = %id,
                            final_snapshot = snapshot.as_deref().unwrap_or("none"),
                            "deleting replication group"
                        );
                        return Ok(working(deleting));
                    }
                    // The snapshot's name is this instance id's alone: an
                    // earlier attempt of this delete took it. (Were the id
                    // reused after a deprovision, the first instance's
                    // snapshot would be the one kept.)
                    Err(f) if f.is(Kind::AlreadyExists) && snapshot.is_some() => {
                        tracing::info!(
                            instance_id,
                            replication_group = %id,
                            final_snapshot = snapshot.as_deref().unwrap_or_default(),
                            error = %f.description,
                            "the final snapshot exists already; deleting the replication group without another"
                        );
                        match self.delete_group(&id, None).await {
                            Ok(()) => {
                                tracing::info!(instance_id, replication_group = %id, "deleting replication group");
                                return Ok(working(deleting));
                            }
                            Err(f) => self.gone_or_fail(&id, f)?,
                        }
                    }
                    Err(f) => self.gone_or_fail(&id, f)?,
                }
            }
            Some(Cache::Serverless(cache)) => {
                if let Some(progress) = self.delete_serverless(instance_id, &cache, final_snapshot).await? {
                    return Ok(progress);
                }
            }
            // Memcached keeps no snapshots: `final_snapshot` has nothing to
            // ask for here (and the catalog refuses it on Memcached plans).
            Some(Cache::Cluster(cluster)) => {
                let status = cluster.cache_cluster_status().unwrap_or("unknown");
                if status == "deleting" {
                    return Ok(working(format!("deleting cache cluster {id}")));
                }
                if BUSY.contains(&status) {
                    return Ok(working(format!(
                        "cache cluster {id} is {status}; it is deleted once that ends"
                    )));
                }
                if status != "deleted" {
                    self.check_owner("cache cluster", &id, cluster.arn(), instance_id).await?;
                    match self.client.delete_cache_cluster().cache_cluster_id(&id).send().await {
                        Ok(_) => {
                            tracing::info!(instance_id, cache_cluster = %id, "deleting cache cluster");
                            return Ok(working(format!("deleting cache cluster {id}")));
                        }
                        Err(e) => self.gone_or_fail(&id, classify("DeleteCacheCluster", e))?,
                    }
                }
            }
            None => {}
        }
        self.delete_access(instance_id).await
    }

    /// DeleteReplicationGroup, taking a final snapshot called `snapshot`
    /// first when there is one.
    pub(super) async fn delete_group(&self, id: &str, snapshot: Option<&str>) -> Result<(), Failure> {
        self.client
            .delete_replication_group()
            .replication_group_id(id)
            .set_final_snapshot_identifier(snapshot.map(str::to_string))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("DeleteReplicationGroup", e))
    }

    /// The users and user group of a deleted cache. Users of bindings are
    /// deleted while the user group still lists them, since nothing else
    /// names them; the admin and default users last, by their fixed ids.
    /// Memcached has none of these, and every lookup simply finds nothing.
    async fn delete_access(&self, instance_id: &str) -> Result<Progress, ProviderError> {
        let group_id = self.names.cache(instance_id);
        let default_id = self.names.default_user(instance_id);
        if let Some(group) = self.find_user_group(&group_id).await? {
            if group.status() == Some("deleting") {
                return Ok(working(format!("deleting user group {group_id}")));
            }
            let members: Vec<&String> =
                group.user_ids().iter().filter(|u| **u != default_id && self.names.owns(u)).collect();
            let mut waiting = 0;
            let mut first_failure = None;
            for user_id in members {
                match self.remove_user(user_id).await {
                    Ok(true) => {}
                    Ok(false) => waiting += 1,
                    Err(f) => {
                        first_failure.get_or_insert(f);
                    }
                }
            }
            if let Some(failure) = first_failure {
                return Err(failure.into());
            }
            if waiting > 0 {
                return Ok(working(format!("deleting {waiting} users of user group {group_id}")));
            }
            match self.rbac.delete_user_group().user_group_id(&group_id).send().await {
                Ok(_) => return Ok(working(format!("deleting user group {group_id}"))),
                Err(e) => {
                    let failure = classify("DeleteUserGroup", e);
                    match failure.kind {
                        Kind::NotFound => {}
                        // Still busy with the users just deleted.
                        Kind::Retryable => {
                            tracing::warn!(user_group = %group_id, error = %failure.description, "user group not deleted yet");
                            return Ok(working(format!(
                                "user group {group_id} is busy; it is deleted once that ends"
                            )));
                        }
                        _ => {
                            tracing::warn!(user_group = %group_id, error = %failure.description, "could not delete user group");
                            return Err(failure.into());
                        }
                    }
                }
            }
        }
        let mut first_failure = None;
        for user_id in [self.names.admin_user(instance_id), default_id] {
            // A user left `deleting` is as good as gone for the instance.
            if let Err(f) = self.remove_user(&user_id).await {
                first_failure.get_or_insert(f);
            }
        }
        if let Some(failure) = first_failure {
            return Err(failure.into());
        }
        // Its parameter groups, which no cache uses any more.
        self.delete_parameter_groups(instance_id).await?;
        // Its log group goes last: the cache wrote to it until it was gone.
        self.delete_log_group(instance_id).await?;
        tracing::info!(instance_id, "deleted the cache, its users, its parameter groups and its log group");
        Ok(Progress::Done)
    }

    /// Deletes a user: `true` when it is gone, `false` while it is being
    /// deleted. A failure is logged with the user's id.
    pub(super) async fn remove_user(&self, user_id: &str) -> Result<bool, Failure> {
        let user = match self.find_user(user_id).await {
            Ok(user) => user,
            Err(f) => {
                tracing::warn!(user_id, error = %f.description, "could not look up a user to delete it");
                return Err(f);
            }
        };
        match user {
            None => Ok(true),
            Some(u) if u.status() == Some("deleting") => Ok(false),
            Some(_) => match self.client.delete_user().user_id(user_id).send().await {
                Ok(_) => Ok(false),
                Err(e) => {
                    let failure = classify("DeleteUser", e);
                    if failure.is(Kind::NotFound) {
                        return Ok(true);
                    }
                    tracing::warn!(user_id, error = %failure.description, "could not delete user");
                    Err(failure)
                }
            },
        }
    }

    /// After a failed delete call: fine when the resource is gone; otherwise
    /// logged with its id and returned.
    fn gone_or_fail(&self, id: &str, failure: Failure) -> Result<(), ProviderError> {
        if failure.is(Kind::NotFound) {
            return Ok(());
        }
        tracing::warn!(resource = %id, error = %failure.description, "could not delete cache");
        Err(failure.into())
    }
}
