//! CloudWatch alarms on every node of the caches the broker makes, behind the
//! [`Alarms`] port, and the orphan sweep's view of them ([`Inventory`]).
//!
//! Which alarms a cache gets ([`CloudWatchAlarms::wanted`]), per node, with
//! the plan's thresholds ([`AlarmThresholds`]):
//! - Redis OSS and Valkey, per member cluster (one node each, dimension
//!   `CacheClusterId`): `EngineCPUUtilization` and
//!   `DatabaseMemoryUsagePercentage` (Average) and `CurrConnections`
//!   (Maximum);
//! - Memcached, per node (`CacheClusterId` and `CacheNodeId`):
//!   `CPUUtilization` (Average) and `CurrConnections` (Maximum). Memcached
//!   publishes no share of its memory in use, so it gets no memory alarm.
//!
//! An alarm is named `{cache}/{node}/{metric}`, `{cache}` being the cache's
//! replication group or cluster id ([`Names::cache`]), so the cache's alarms
//! are listed by that prefix. Each goes off after the plan's number of
//! periods over the threshold and notifies the operator's SNS topics
//! (`ALARM_ACTIONS`) when there are any, on alarm and on recovery. It
//! carries the instance's tags and `broker` = the prefix, which the sweep
//! checks before deleting an alarm no live cache accounts for.
//!
//! [`CloudWatchAlarms::put`] describes the cache's alarms first and only
//! puts those that are missing or differ, then deletes the rest: a repeated
//! job sends no PutMetricAlarm at all.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTimeFormat;
use aws_sdk_cloudwatch::types::{
    AlarmType, ComparisonOperator, Dimension, MetricAlarm, StandardUnit, Statistic, Tag,
};

use crate::classify_call as classify;
use crate::elasticache::names::Names;
use crate::elasticache::{CACHE_TAG, OWNER_TAG};
use broker_core::domain::{AlarmThresholds, Engine, ResourceKind};
use broker_core::ports::{
    AlarmSpec, AlarmStatus, Alarms, CacheNode, Claim, Inventory, Leftover, LeftoverPage, LiveCaches,
    ProviderError, Removal,
};

/// The namespace ElastiCache publishes its metrics in.
pub const NAMESPACE: &str = "AWS/ElastiCache";

/// Names per DeleteAlarms call, and alarms per DescribeAlarms page
/// (CloudWatch's limit for both).
const PAGE: usize = 100;

/// The alarms of the caches, in CloudWatch.
pub struct CloudWatchAlarms {
    client: Client,
    names: Names,
    /// What an alarm notifies, on alarm and on recovery.
    actions: Vec<String>,
}

impl std::fmt::Debug for CloudWatchAlarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatchAlarms")
            .field("prefix", &self.names.prefix())
            .field("actions", &self.actions)
            .finish_non_exhaustive()
    }
}

/// One alarm as the plan asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedAlarm {
    pub name: String,
    pub metric: &'static str,
    pub statistic: Statistic,
    pub unit: StandardUnit,
    pub dimensions: Vec<(&'static str, String)>,
    pub threshold: f64,
    pub node: String,
}

/// What a metric is on an engine: its name, statistic, unit and the
/// threshold of the plan that applies.
struct Watch {
    metric: &'static str,
    statistic: Statistic,
    unit: StandardUnit,
    threshold: fn(&AlarmThresholds) -> Option<f64>,
}

fn watches(engine: Engine) -> Vec<Watch> {
    let cpu = |t: &AlarmThresholds| t.cpu_percent;
    let connections = |t: &AlarmThresholds| t.connections;
    let memory = |t: &AlarmThresholds| t.memory_percent;
    let connections = Watch {
        metric: "CurrConnections",
        statistic: Statistic::Maximum,
        unit: StandardUnit::Count,
        threshold: connections,
    };
    match engine {
        Engine::Memcached => vec![
            Watch {
                metric: "CPUUtilization",
                statistic: Statistic::Average,
                unit: StandardUnit::Percent,
                threshold: cpu,
            },
            connections,
            // Charted, never alarmed: Memcached publishes bytes, not a
            // share of its memory, and a plan's threshold is a share.
            Watch {
                metric: "BytesUsedForCacheItems",
                statistic: Statistic::Average,
                unit: StandardUnit::Bytes,
                threshold: |_| None,
            },
        ],
        Engine::Redis | Engine::Valkey => vec![
            Watch {
                metric: "EngineCPUUtilization",
                statistic: Statistic::Average,
                unit: StandardUnit::Percent,
                threshold: cpu,
            },
            connections,
            Watch {
                metric: "DatabaseMemoryUsagePercentage",
                statistic: Statistic::Average,
                unit: StandardUnit::Percent,
                threshold: memory,
            },
        ],
    }
}

impl CloudWatchAlarms {
    /// Alarms under the broker's name prefix, notifying `actions` (SNS
    /// topics, as a rule).
    pub fn new(client: Client, name_prefix: &str, actions: Vec<String>) -> CloudWatchAlarms {
        CloudWatchAlarms { client, names: Names::new(name_prefix), actions }
    }

    /// What every alarm name of the cache starts with.
    fn prefix_of(&self, cache_key: &str) -> String {
        format!("{}/", self.names.cache(cache_key))
    }

    /// How an alarm name gives its node: the member cluster's id without
    /// the cache's, and the node id of a Memcached node.
    fn node_part(cache: &str, node: &CacheNode) -> String {
        let cluster = node
            .cluster_id
            .strip_prefix(cache)
            .map(|rest| rest.trim_start_matches('-'))
            .unwrap_or(&node.cluster_id);
        match (&node.node_id, cluster.is_empty()) {
            (Some(n), true) => n.clone(),
            (Some(n), false) => format!("{cluster}-{n}"),
            (None, true) => "node".to_string(),
            (None, false) => cluster.to_string(),
        }
    }

    /// Every alarm `spec` asks for, in name order.
    pub fn wanted(&self, spec: &AlarmSpec) -> Vec<WantedAlarm> {
        let cache = self.names.cache(&spec.cache_key);
        let mut out = Vec::new();
        for node in &spec.nodes {
            let part = Self::node_part(&cache, node);
            for w in watches(spec.engine) {
                let Some(threshold) = (w.threshold)(&spec.thresholds) else { continue };
                let mut dimensions = vec![("CacheClusterId", node.cluster_id.clone())];
                if let Some(n) = &node.node_id {
                    dimensions.push(("CacheNodeId", n.clone()));
                }
                out.push(WantedAlarm {
                    name: format!("{cache}/{part}/{}", w.metric),
                    metric: w.metric,
                    statistic: w.statistic.clone(),
                    unit: w.unit.clone(),
                    dimensions,
                    threshold,
                    node: node.label(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every alarm whose name starts with `prefix`, all pages.
    async fn list(&self, prefix: &str) -> Result<Vec<MetricAlarm>, ProviderError> {
        let mut alarms = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .describe_alarms()
                .alarm_name_prefix(prefix)
                .alarm_types(AlarmType::MetricAlarm)
                .max_records(PAGE as i32)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify("DescribeAlarms", e))?;
            alarms.extend(out.metric_alarms().iter().cloned());
            match out.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok(alarms),
            }
        }
    }

    /// Whether `have` is already what `want` asks for.
    fn same(&self, have: &MetricAlarm, want: &WantedAlarm, t: &AlarmThresholds) -> bool {
        let dims: Vec<(&str, &str)> =
            have.dimensions().iter().map(|d| (d.name().unwrap_or(""), d.value().unwrap_or(""))).collect();
        let wanted_dims: Vec<(&str, &str)> = want.dimensions.iter().map(|(k, v)| (*k, v.as_str())).collect();
        have.metric_name() == Some(want.metric)
            && have.namespace() == Some(NAMESPACE)
            && have.statistic() == Some(&want.statistic)
            && have.threshold() == Some(want.threshold)
            && have.period() == i32::try_from(t.period_secs).ok()
            && have.evaluation_periods() == i32::try_from(t.evaluation_periods).ok()
            && have.datapoints_to_alarm() == i32::try_from(t.evaluation_periods).ok()
            && have.comparison_operator() == Some(&ComparisonOperator::GreaterThanThreshold)
            && dims == wanted_dims
            && have.alarm_actions() == self.actions.as_slice()
            && have.ok_actions() == self.actions.as_slice()
    }

    async fn put_one(&self, want: &WantedAlarm, spec: &AlarmSpec) -> Result<(), ProviderError> {
        let t = &spec.thresholds;
        let periods = i32::try_from(t.evaluation_periods).unwrap_or(1);
        let mut tags: Vec<Tag> = spec
            .tags
            .iter()
            .filter(|(k, _)| k != OWNER_TAG && k != CACHE_TAG)
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        tags.push(Tag::builder().key(OWNER_TAG).value(self.names.prefix()).build());
        tags.push(Tag::builder().key(CACHE_TAG).value(&spec.cache_key).build());
        let description = format!(
            "{} of cache node {} above {} for {} periods of {} s; set by the service broker",
            want.metric, want.node, want.threshold, t.evaluation_periods, t.period_secs
        );
        self.client
            .put_metric_alarm()
            .alarm_name(&want.name)
            .alarm_description(description)
            .namespace(NAMESPACE)
            .metric_name(want.metric)
            .statistic(want.statistic.clone())
            .unit(want.unit.clone())
            .set_dimensions(Some(
                want.dimensions.iter().map(|(k, v)| Dimension::builder().name(*k).value(v).build()).collect(),
            ))
            .period(i32::try_from(t.period_secs).unwrap_or(60))
            .evaluation_periods(periods)
            .datapoints_to_alarm(periods)
            .threshold(want.threshold)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            // A node being replaced or rebooted sends nothing for a while:
            // the alarm keeps the state it had.
            .treat_missing_data("missing")
            .set_alarm_actions(Some(self.actions.clone()))
            .set_ok_actions(Some(self.actions.clone()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| classify("PutMetricAlarm", e))?;
        Ok(())
    }

    async fn delete_names(&self, names: Vec<String>) -> Result<(), ProviderError> {
        for chunk in names.chunks(PAGE) {
            self.client
                .delete_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DeleteAlarms", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Alarms for CloudWatchAlarms {
    async fn put(&self, spec: &AlarmSpec) -> Result<usize, ProviderError> {
        let wanted = self.wanted(spec);
        let have: BTreeMap<String, MetricAlarm> = self
            .list(&self.prefix_of(&spec.cache_key))
            .await?
            .into_iter()
            .filter_map(|a| Some((a.alarm_name()?.to_string(), a)))
            .collect();
        let mut put = 0;
        for want in &wanted {
            if have.get(&want.name).is_some_and(|a| self.same(a, want, &spec.thresholds)) {
                continue;
            }
            self.put_one(want, spec).await?;
            put += 1;
        }
        let keep: HashSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
        let stale: Vec<String> = have.keys().filter(|n| !keep.contains(n.as_str())).cloned().collect();
        tracing::info!(
            cache = %self.names.cache(&spec.cache_key),
            alarms = wanted.len(),
            put,
            deleted = stale.len(),
            "the cache's CloudWatch alarms are set"
        );
        self.delete_names(stale).await?;
        Ok(wanted.len())
    }

    async fn delete(&self, cache_key: &str) -> Result<(), ProviderError> {
        let names: Vec<String> = self
            .list(&self.prefix_of(cache_key))
            .await?
            .iter()
            .filter_map(|a| a.alarm_name().map(str::to_string))
            .collect();
        self.delete_names(names).await
    }

    async fn states(&self, cache_key: &str) -> Result<Option<Vec<AlarmStatus>>, ProviderError> {
        let alarms = self.list(&self.prefix_of(cache_key)).await?;
        Ok(Some(
            alarms
                .iter()
                .map(|a| {
                    let dim = |name: &str| {
                        a.dimensions().iter().find(|d| d.name() == Some(name)).and_then(|d| d.value())
                    };
                    let node = CacheNode {
                        cluster_id: dim("CacheClusterId").unwrap_or_default().to_string(),
                        node_id: dim("CacheNodeId").map(str::to_string),
                    };
                    AlarmStatus {
                        metric: a.metric_name().unwrap_or_default().to_string(),
                        node: node.label(),
                        threshold: a.threshold().unwrap_or_default(),
                        state: a.state_value().map(|s| s.as_str().to_string()).unwrap_or_default(),
                        since: a.state_updated_timestamp().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
                    }
                })
                .collect(),
        ))
    }
}

const KINDS: &[ResourceKind] = &[ResourceKind::Alarm];

#[async_trait]
impl Inventory for CloudWatchAlarms {
    fn kinds(&self) -> &'static [ResourceKind] {
        KINDS
    }

    async fn leftovers(
        &self,
        kind: ResourceKind,
        token: Option<&str>,
        live: &LiveCaches,
    ) -> Result<LeftoverPage, ProviderError> {
        if kind != ResourceKind::Alarm {
            return Err(ProviderError::Permanent(format!("CloudWatch lists no {}", kind.describe())));
        }
        let caches: HashSet<String> = live.iter().map(|k| self.names.cache(k)).collect();
        let out = self
            .client
            .describe_alarms()
            .alarm_name_prefix(format!("{}-", self.names.prefix()))
            .alarm_types(AlarmType::MetricAlarm)
            .max_records(PAGE as i32)
            .set_next_token(token.map(str::to_string))
            .send()
            .await
            .map_err(|e| classify("DescribeAlarms", e))?;
        let leftovers = out
            .metric_alarms()
            .iter()
            .filter_map(|a| {
                let name = a.alarm_name()?;
                let (cache, _) = name.split_once('/')?;
                (self.names.is_cache_id(cache) && !caches.contains(cache)).then(|| Leftover {
                    kind,
                    id: name.to_string(),
                    reference: a.alarm_arn().unwrap_or(name).to_string(),
                    claim: Claim::Nobody,
                })
            })
            .collect();
        let next = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        Ok(LeftoverPage { leftovers, next })
    }

    async fn remove(&self, leftover: &Leftover) -> Result<Removal, ProviderError> {
        let tags = match self.client.list_tags_for_resource().resource_arn(&leftover.reference).send().await {
            Ok(out) => out,
            Err(e) if matches!(e.code(), Some("ResourceNotFound" | "ResourceNotFoundException")) => {
                return Ok(Removal::Gone);
            }
            Err(e) => return Err(classify("ListTagsForResource", e)),
        };
        let ours =
            tags.tags().iter().any(|t| t.key() == Some(OWNER_TAG) && t.value() == Some(self.names.prefix()));
        if !ours {
            return Ok(Removal::NotOurs);
        }
        tracing::info!(alarm = %leftover.id, "deleting an orphaned CloudWatch alarm");
        self.delete_names(vec![leftover.id.clone()]).await?;
        Ok(Removal::Removed)
    }
}

mod charts;
#[cfg(test)]
mod tests;
