//! Serverless caches (see [`broker_core::domain::serverless`]): Redis OSS
//! and Valkey with no nodes, scaling within the plan's usage limits.
//!
//! A serverless cache has the same name as a replication group would
//! (`{prefix}-{h}`) and the same user model: the disabled `default` user,
//! the broker's admin and the bindings' users in a user group of the same
//! name, made first and named by CreateServerlessCache's UserGroupId
//! (RBAC is the only access control a serverless cache has). It takes the
//! deploy's subnets (`CACHE_SUBNET_IDS`, for its VPC endpoint) rather than
//! a subnet group, is always encrypted in transit and at rest, and answers
//! on a primary endpoint (6379) and a reader endpoint (6380) of one host.
//! All serverless caches run in cluster mode (ElastiCache User Guide,
//! "Serverless configuration": `cluster-enabled yes`, every slot on one
//! virtual node), so the credentials say so.
//!
//! Its snapshots are serverless snapshots (CreateServerlessCacheSnapshot
//! and friends), named like a replication group's; a restore names the
//! snapshot's ARN in SnapshotArnsToRestore, which takes a serverless or a
//! node-based snapshot.
//!
//! These calls go through the second client, with the user-group calls:
//! moto has no serverless caches, and the stand-in answers them in tests.

use aws_sdk_elasticache::types::{
    CacheUsageLimits, DataStorage, DataStorageUnit, EcpuPerSecond, ServerlessCache, ServerlessCacheSnapshot,
};

use super::failure::{Failure, Kind, classify};
use super::{ElastiCacheProvider, absent_if_not_found, working};
use broker_core::domain::credentials::HostPort;
use broker_core::domain::serverless::{UsageLimits, major};
use broker_core::domain::{Endpoint, Snapshot};
use broker_core::ports::{CacheSpec, Progress, ProviderError};

/// Statuses of a serverless cache that end in failure.
const FAILED: &[&str] = &["create-failed"];

impl ElastiCacheProvider {
    /// DescribeServerlessCaches for one name; `None` when there is none.
    pub(super) async fn find_serverless(&self, id: &str) -> Result<Option<ServerlessCache>, Failure> {
        match self.rbac.describe_serverless_caches().serverless_cache_name(id).send().await {
            Ok(out) => Ok(out.serverless_caches().first().cloned()),
            Err(e) => absent_if_not_found(classify("DescribeServerlessCaches", e)),
        }
    }

    /// Creates the users, their user group and the serverless cache of
    /// `spec`, adopting what an earlier attempt made.
    pub(super) async fn create_serverless(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        if let Some(cache) = self.find_serverless(&id).await? {
            self.check_owner("serverless cache", &id, cache.arn(), &spec.cache_key).await?;
            return serverless_progress(&id, &cache);
        }
        if self.settings.subnet_ids.is_empty() {
            return Err(ProviderError::Permanent(format!(
                "plan {} is serverless, and the broker has no subnets for serverless caches: set CACHE_SUBNET_IDS \
                 (the deploy parameter of the cache subnets)",
                spec.plan.name
            )));
        }
        let Some(limits) = spec.plan.usage_limits else {
            return Err(ProviderError::Permanent(format!(
                "serverless plan {} has no usage_limits",
                spec.plan.name
            )));
        };
        let admin = self.admin_password(spec).await?;
        self.ensure_users_and_group(spec, &id, &admin).await?;
        let created = self
            .rbac
            .create_serverless_cache()
            .serverless_cache_name(&id)
            .description(format!(
                "{} {} plan {} for instance {}",
                spec.engine.as_str(),
                spec.engine_version,
                spec.plan.name,
                spec.cache_key
            ))
            .engine(spec.engine.as_str())
            .major_engine_version(major(&spec.engine_version))
            .cache_usage_limits(usage_limits(&limits))
            .set_kms_key_id(self.settings.kms_key_id.clone())
            .set_security_group_ids(Some(self.settings.security_group_ids.clone()).filter(|s| !s.is_empty()))
            .set_subnet_ids(Some(self.settings.subnet_ids.clone()))
            .user_group_id(&id)
            .snapshot_retention_limit(i32::from(spec.settings.snapshot_retention_days))
            .set_daily_snapshot_time(spec.plan.daily_snapshot_time.clone())
            .set_snapshot_arns_to_restore(spec.restore.clone().map(|arn| vec![arn]))
            .set_tags(Some(self.cache_tags(spec)))
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(instance_id = %spec.cache_key, serverless_cache = %id, "creating serverless cache");
                Ok(working(format!("creating serverless cache {id}")))
            }
            Err(e) => match classify("CreateServerlessCache", e) {
                // Made by an earlier attempt whose answer was lost.
                f if f.is(Kind::AlreadyExists) => Ok(working(format!("creating serverless cache {id}"))),
                f => Err(f.into()),
            },
        }
    }

    /// Brings the serverless cache to `spec`: its usage limits, snapshot
    /// retention and time, and its engine and major version (ModifyServerlessCache
    /// takes them all at once). `Done` when nothing differs.
    pub(super) async fn modify_serverless(
        &self,
        spec: &CacheSpec,
        cache: &ServerlessCache,
    ) -> Result<Progress, ProviderError> {
        let id = self.names.cache(&spec.cache_key);
        let status = cache.status().unwrap_or("unknown").to_ascii_lowercase();
        if status != "available" {
            return Err(ProviderError::Retryable(format!(
                "serverless cache {id} is {status}; it is modified once it is available"
            )));
        }
        let Some(limits) = spec.plan.usage_limits else {
            return Err(ProviderError::Permanent(format!(
                "plan {} is not serverless: serverless cache {id} stays serverless",
                spec.plan.name
            )));
        };
        let wanted = usage_limits(&limits);
        let mut what = Vec::new();
        let limits_differ = cache.cache_usage_limits() != Some(&wanted);
        if limits_differ {
            what.push(format!(
                "usage limits → {} GB, {} ECPU a second",
                limits.data_storage_gb.maximum, limits.ecpu_per_second.maximum
            ));
        }
        let retention = i32::from(spec.settings.snapshot_retention_days);
        let retention_differs = cache.snapshot_retention_limit().unwrap_or(0) != retention;
        if retention_differs {
            what.push(format!("snapshot retention → {retention} days"));
        }
        let time_differs = spec.plan.daily_snapshot_time.is_some()
            && cache.daily_snapshot_time() != spec.plan.daily_snapshot_time.as_deref();
        if time_differs {
            what.push(format!(
                "daily snapshot time → {}",
                spec.plan.daily_snapshot_time.as_deref().unwrap_or_default()
            ));
        }
        let engine_differs = !cache.engine().is_some_and(|e| e.eq_ignore_ascii_case(spec.engine.as_str()))
            || cache.major_engine_version() != Some(major(&spec.engine_version).as_str());
        if engine_differs {
            what.push(format!("engine → {} {}", spec.engine.as_str(), major(&spec.engine_version)));
        }
        self.refresh_tags(cache.arn(), spec).await?;
        if what.is_empty() {
            return Ok(Progress::Done);
        }
        self.rbac
            .modify_serverless_cache()
            .serverless_cache_name(&id)
            .set_cache_usage_limits(limits_differ.then_some(wanted))
            .set_snapshot_retention_limit(retention_differs.then_some(retention))
            .set_daily_snapshot_time(if time_differs { spec.plan.daily_snapshot_time.clone() } else { None })
            .set_engine(engine_differs.then(|| spec.engine.as_str().to_string()))
            .set_major_engine_version(engine_differs.then(|| major(&spec.engine_version)))
            .send()
            .await
            .map_err(|e| classify("ModifyServerlessCache", e))?;
        tracing::info!(serverless_cache = %id, change = %what.join(", "), "modifying serverless cache");
        Ok(working(format!("serverless cache {id}: modifying {}", what.join(", "))))
    }

    /// DeleteServerlessCache, with a final snapshot when one is asked for;
    /// `Working` until the cache is gone, then `None` for the caller to go on
    /// with the users.
    pub(super) async fn delete_serverless(
        &self,
        instance_id: &str,
        cache: &ServerlessCache,
        final_snapshot: Option<&str>,
    ) -> Result<Option<Progress>, ProviderError> {
        let id = self.names.cache(instance_id);
        let status = cache.status().unwrap_or("unknown").to_ascii_lowercase();
        let snapshot = final_snapshot.map(|key| self.names.final_snapshot(instance_id, key));
        if status == "deleting" {
            return Ok(Some(working(format!("deleting serverless cache {id}"))));
        }
        if status == "creating" || status == "modifying" {
            return Ok(Some(working(format!(
                "serverless cache {id} is {status}; it is deleted once that ends"
            ))));
        }
        self.check_owner("serverless cache", &id, cache.arn(), instance_id).await?;
        if let working @ Progress::Working { .. } = self.delete_named_snapshots(instance_id).await? {
            return Ok(Some(working));
        }
        let sent = self
            .rbac
            .delete_serverless_cache()
            .serverless_cache_name(&id)
            .set_final_snapshot_name(snapshot.clone())
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::info!(instance_id, serverless_cache = %id, final_snapshot = snapshot.as_deref().unwrap_or("none"), "deleting serverless cache");
                Ok(Some(working(format!("deleting serverless cache {id}"))))
            }
            Err(e) => match classify("DeleteServerlessCache", e) {
                f if f.is(Kind::NotFound) => Ok(None),
                // An earlier attempt took the final snapshot already.
                f if f.is(Kind::AlreadyExists) && snapshot.is_some() => {
                    self.rbac
                        .delete_serverless_cache()
                        .serverless_cache_name(&id)
                        .send()
                        .await
                        .map_err(|e| classify("DeleteServerlessCache", e))?;
                    Ok(Some(working(format!("deleting serverless cache {id}"))))
                }
                f => Err(f.into()),
            },
        }
    }

    /// The snapshots ElastiCache keeps of the serverless cache `id`, by
    /// name prefix as [`ElastiCacheProvider::cache_snapshots`] reads them.
    pub(super) async fn serverless_snapshots(
        &self,
        id: &str,
    ) -> Result<Vec<ServerlessCacheSnapshot>, ProviderError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .rbac
                .describe_serverless_cache_snapshots()
                .serverless_cache_name(id)
                .set_next_token(token.clone())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => match classify("DescribeServerlessCacheSnapshots", e) {
                    f if f.is(Kind::NotFound) => return Ok(found),
                    f => return Err(f.into()),
                },
            };
            found.extend(page.serverless_cache_snapshots().iter().cloned());
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    /// One serverless snapshot by name; `None` when there is none.
    pub(super) async fn find_serverless_snapshot(
        &self,
        name: &str,
    ) -> Result<Option<ServerlessCacheSnapshot>, ProviderError> {
        match self
            .rbac
            .describe_serverless_cache_snapshots()
            .serverless_cache_snapshot_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.serverless_cache_snapshots().first().cloned()),
            Err(e) => match classify("DescribeServerlessCacheSnapshots", e) {
                f if f.is(Kind::NotFound) => Ok(None),
                f => Err(f.into()),
            },
        }
    }
}

/// The plan's limits as ElastiCache takes them.
fn usage_limits(limits: &UsageLimits) -> CacheUsageLimits {
    let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    CacheUsageLimits::builder()
        .data_storage(
            DataStorage::builder()
                .maximum(to_i32(limits.data_storage_gb.maximum))
                .set_minimum(limits.data_storage_gb.minimum.map(to_i32))
                .unit(DataStorageUnit::Gb)
                .build(),
        )
        .ecpu_per_second(
            EcpuPerSecond::builder()
                .maximum(to_i32(limits.ecpu_per_second.maximum))
                .set_minimum(limits.ecpu_per_second.minimum.map(to_i32))
                .build(),
        )
        .build()
}

/// How far a serverless cache has got.
pub(super) fn serverless_progress(id: &str, cache: &ServerlessCache) -> Result<Progress, ProviderError> {
    let status = cache.status().unwrap_or("unknown").to_ascii_lowercase();
    match status.as_str() {
        "available" => Ok(Progress::Done),
        "deleting" => Err(ProviderError::Permanent(format!("serverless cache {id} is being deleted"))),
        s if FAILED.contains(&s) => Err(ProviderError::Permanent(format!("serverless cache {id} is {s}"))),
        s => Ok(working(format!("{s} serverless cache {id}"))),
    }
}

/// The endpoints of a serverless cache: the primary, and the reader on the
/// same host; TLS always; cluster mode always.
pub(super) fn serverless_endpoint(id: &str, cache: &ServerlessCache) -> Result<Endpoint, ProviderError> {
    let primary = cache.endpoint().and_then(|e| Some((e.address()?.to_string(), e.port()?)));
    let Some((host, port)) = primary else {
        return Err(ProviderError::Retryable(format!(
            "serverless cache {id} has no endpoint yet (it is {})",
            cache.status().unwrap_or("unknown")
        )));
    };
    let reader = cache.reader_endpoint().and_then(|e| {
        Some(HostPort { host: e.address()?.to_string(), port: u16::try_from(e.port()?).ok()? })
    });
    Ok(Endpoint {
        reader,
        cluster_mode: true,
        ..Endpoint::single(host, u16::try_from(port).unwrap_or(6379), true)
    })
}

/// A serverless snapshot as the broker lists it, when it is one of the
/// instance's named (`named` prefix) or final (`last` prefix) snapshots or
/// an automatic one.
pub(super) fn listed(s: &ServerlessCacheSnapshot, named: &str, last: &str) -> Option<Snapshot> {
    let aws_name = s.serverless_cache_snapshot_name()?;
    let automatic = s.snapshot_type().is_some_and(|t| t.eq_ignore_ascii_case("automated"));
    let (kind, name) = super::names::snapshot_kind(aws_name, named, last, automatic)?;
    Some(Snapshot {
        name,
        kind,
        status: s.status().unwrap_or("unknown").to_ascii_lowercase(),
        created_at: s.create_time().map(|t| t.secs()),
        // A restore names snapshots by ARN (SnapshotArnsToRestore).
        reference: s.arn().unwrap_or(aws_name).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(status: &str) -> ServerlessCache {
        ServerlessCache::builder().serverless_cache_name("osb-x").status(status).build()
    }

    /// The API reference names them in capitals, the API answers in small
    /// letters: both read the same.
    #[test]
    fn every_serverless_status_is_an_operation_state_with_its_progress() {
        for status in ["available", "AVAILABLE"] {
            assert_eq!(serverless_progress("osb-x", &cache(status)), Ok(Progress::Done));
        }
        for status in ["creating", "CREATING", "modifying", "MODIFYING"] {
            let Ok(Progress::Working { detail }) = serverless_progress("osb-x", &cache(status)) else {
                panic!("{status} is not working")
            };
            assert_eq!(detail, format!("{} serverless cache osb-x", status.to_ascii_lowercase()));
        }
        for (status, said) in [
            ("create-failed", "serverless cache osb-x is create-failed"),
            ("CREATE-FAILED", "serverless cache osb-x is create-failed"),
            ("deleting", "serverless cache osb-x is being deleted"),
        ] {
            assert_eq!(
                serverless_progress("osb-x", &cache(status)),
                Err(ProviderError::Permanent(said.into()))
            );
        }
    }
}
