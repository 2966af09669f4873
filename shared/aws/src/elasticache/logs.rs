//! Log delivery: a Redis OSS or Valkey cache whose spec asks for logs
//! (`CacheSpec::log_delivery`: slow-log, engine-log) sends them, in JSON,
//! to a CloudWatch Logs group of its own, `/elasticache/{cache id}`. The
//! provider creates the group (tagged like the cache, with the deploy's
//! retention) before the replication group that writes to it, turns each
//! log on or off through ModifyReplicationGroup when the spec changes, and
//! deletes the group once the cache is gone. The orphan sweep lists the
//! groups under `/elasticache/{prefix}-` whose cache no live instance has.

use std::collections::{HashMap, HashSet};

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_elasticache::types::{
    CloudWatchLogsDestinationDetails, DestinationDetails, DestinationType, LogDeliveryConfigurationRequest,
    LogDeliveryConfigurationStatus, LogFormat, ReplicationGroup,
};

use super::{CACHE_TAG, ElastiCacheProvider, OWNER_TAG};
use crate::classify_call;
use broker_core::domain::{LogType, ResourceKind};
use broker_core::ports::{CacheSpec, Claim, Leftover, LeftoverPage, LiveCaches, ProviderError, Removal};

/// Where log groups of the broker's caches live: `{LOG_GROUP_ROOT}{cache id}`.
pub const LOG_GROUP_ROOT: &str = "/elasticache/";

/// Log groups per DescribeLogGroups page (CloudWatch Logs' most).
const PAGE: i32 = 50;

/// The CloudWatch Logs side of log delivery.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub client: aws_sdk_cloudwatchlogs::Client,
    /// How long the groups keep their events (one of the values CloudWatch
    /// Logs allows).
    pub retention_days: i32,
}

fn aws_log_type(log: LogType) -> aws_sdk_elasticache::types::LogType {
    match log {
        LogType::SlowLog => aws_sdk_elasticache::types::LogType::SlowLog,
        LogType::EngineLog => aws_sdk_elasticache::types::LogType::EngineLog,
    }
}

fn broker_log_type(log: &aws_sdk_elasticache::types::LogType) -> Option<LogType> {
    match log {
        aws_sdk_elasticache::types::LogType::SlowLog => Some(LogType::SlowLog),
        aws_sdk_elasticache::types::LogType::EngineLog => Some(LogType::EngineLog),
        _ => None,
    }
}

/// The logs a replication group delivers now (or is turning on).
pub(super) fn delivered(group: &ReplicationGroup) -> Vec<LogType> {
    let mut logs: Vec<LogType> = group
        .log_delivery_configurations()
        .iter()
        .filter(|c| {
            !matches!(
                c.status(),
                Some(LogDeliveryConfigurationStatus::Disabling | LogDeliveryConfigurationStatus::Error)
            )
        })
        .filter_map(|c| c.log_type().and_then(broker_log_type))
        .collect();
    logs.sort();
    logs.dedup();
    logs
}

/// The request that turns each of `on` on (to `log_group`, JSON) and each of
/// `off` off.
pub(super) fn requests(
    log_group: &str,
    on: &[LogType],
    off: &[LogType],
) -> Vec<LogDeliveryConfigurationRequest> {
    let destination = DestinationDetails::builder()
        .cloud_watch_logs_details(CloudWatchLogsDestinationDetails::builder().log_group(log_group).build())
        .build();
    on.iter()
        .map(|l| (l, true))
        .chain(off.iter().map(|l| (l, false)))
        .map(|(log, enabled)| {
            LogDeliveryConfigurationRequest::builder()
                .log_type(aws_log_type(*log))
                .destination_type(DestinationType::CloudWatchLogs)
                .destination_details(destination.clone())
                .log_format(LogFormat::Json)
                .enabled(enabled)
                .build()
        })
        .collect()
}

impl ElastiCacheProvider {
    /// The log group of the cache of `cache_key`.
    pub fn log_group(&self, cache_key: &str) -> String {
        format!("{LOG_GROUP_ROOT}{}", self.names.cache(cache_key))
    }

    fn log_settings(&self) -> Result<&LogSettings, ProviderError> {
        self.logs.as_ref().ok_or_else(|| {
            ProviderError::Permanent(
                "log delivery is not set up in this deployment (no CloudWatch Logs client)".into(),
            )
        })
    }

    /// Creates the cache's log group when it does not exist, with the
    /// cache's tags, and sets its retention.
    pub(super) async fn ensure_log_group(&self, spec: &CacheSpec) -> Result<String, ProviderError> {
        let logs = self.log_settings()?;
        let name = self.log_group(&spec.cache_key);
        let tags: HashMap<String, String> = self
            .cache_tags(spec)
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect();
        match logs.client.create_log_group().log_group_name(&name).set_tags(Some(tags)).send().await {
            Ok(_) => tracing::info!(log_group = %name, "created the cache's log group"),
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(classify_call("CreateLogGroup", e)),
        }
        logs.client
            .put_retention_policy()
            .log_group_name(&name)
            .retention_in_days(logs.retention_days)
            .send()
            .await
            .map_err(|e| classify_call("PutRetentionPolicy", e))?;
        Ok(name)
    }

    /// Deletes the cache's log group; fine when there is none (or no log
    /// delivery in this deployment).
    pub(super) async fn delete_log_group(&self, cache_key: &str) -> Result<(), ProviderError> {
        let Some(logs) = &self.logs else { return Ok(()) };
        let name = self.log_group(cache_key);
        match logs.client.delete_log_group().log_group_name(&name).send().await {
            Ok(_) => {
                tracing::info!(log_group = %name, "deleted the cache's log group");
                Ok(())
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(classify_call("DeleteLogGroup", e)),
        }
    }

    /// One page of the broker's log groups whose cache `live` does not have.
    pub(super) async fn leftover_log_groups(
        &self,
        token: Option<&str>,
        live: &LiveCaches,
    ) -> Result<LeftoverPage, ProviderError> {
        let Some(logs) = &self.logs else { return Ok(LeftoverPage::default()) };
        let caches: HashSet<String> = live.iter().map(|k| self.names.cache(k)).collect();
        let out = logs
            .client
            .describe_log_groups()
            .log_group_name_prefix(format!("{LOG_GROUP_ROOT}{}-", self.names.prefix()))
            .limit(PAGE)
            .set_next_token(token.map(str::to_string))
            .send()
            .await
            .map_err(|e| classify_call("DescribeLogGroups", e))?;
        let leftovers = out
            .log_groups()
            .iter()
            .filter_map(|g| {
                let name = g.log_group_name()?;
                let cache = name.strip_prefix(LOG_GROUP_ROOT)?;
                (self.names.is_cache_id(cache) && !caches.contains(cache)).then(|| Leftover {
                    kind: ResourceKind::LogGroup,
                    id: name.to_string(),
                    reference: g.log_group_arn().unwrap_or(name).to_string(),
                    claim: Claim::Nobody,
                })
            })
            .collect();
        Ok(LeftoverPage { leftovers, next: out.next_token().filter(|t| !t.is_empty()).map(str::to_string) })
    }

    /// Deletes an orphaned log group once its tags say it is this broker's.
    pub(super) async fn remove_log_group(&self, leftover: &Leftover) -> Result<Removal, ProviderError> {
        let logs = self.log_settings()?;
        let tags = match logs.client.list_tags_for_resource().resource_arn(&leftover.reference).send().await {
            Ok(out) => out,
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(Removal::Gone),
            Err(e) => return Err(classify_call("ListTagsForResource", e)),
        };
        let ours =
            tags.tags().is_some_and(|t| t.get(OWNER_TAG).map(String::as_str) == Some(self.names.prefix()));
        if !ours {
            return Ok(Removal::NotOurs);
        }
        tracing::info!(log_group = %leftover.id, cache = ?tags.tags().and_then(|t| t.get(CACHE_TAG)), "deleting an orphaned log group");
        match logs.client.delete_log_group().log_group_name(&leftover.id).send().await {
            Ok(_) => Ok(Removal::Removed),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(Removal::Gone),
            Err(e) => Err(classify_call("DeleteLogGroup", e)),
        }
    }
}
