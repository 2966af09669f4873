//! What the caches' nodes measured, for the dashboard page's charts
//! ([`CacheMetrics`]): the metrics their alarms watch (and Memcached's bytes
//! in use), per node, from CloudWatch's GetMetricData: one request for a
//! cache of up to [`QUERIES`] series, a point per minute. It needs no alarm:
//! a plan that sets none still gets its charts.
//!
//! broker-api sends these calls (the provisioner never does), so they live
//! apart from the alarms the provisioner's role is checked against.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy, StandardUnit};

use super::*;
use broker_core::domain::Timestamp;
use broker_core::ports::{CacheMetrics, MetricSeries, MetricUnit};

/// Queries per GetMetricData request: CloudWatch's limit.
const QUERIES: usize = 500;

/// Seconds per point: ElastiCache publishes its metrics every minute.
const PERIOD: i32 = 60;

fn unit_of(unit: &StandardUnit) -> MetricUnit {
    match unit {
        StandardUnit::Percent => MetricUnit::Percent,
        StandardUnit::Bytes => MetricUnit::Bytes,
        _ => MetricUnit::Count,
    }
}

impl CloudWatchAlarms {
    /// One series per node of `spec` and metric of its engine, empty, with
    /// the query that fills it.
    fn chart_queries(spec: &AlarmSpec) -> Vec<(MetricSeries, MetricDataQuery)> {
        let mut out = Vec::new();
        for node in &spec.nodes {
            for w in watches(spec.engine) {
                let mut dimensions =
                    vec![Dimension::builder().name("CacheClusterId").value(&node.cluster_id).build()];
                if let Some(n) = &node.node_id {
                    dimensions.push(Dimension::builder().name("CacheNodeId").value(n).build());
                }
                let metric = Metric::builder()
                    .namespace(NAMESPACE)
                    .metric_name(w.metric)
                    .set_dimensions(Some(dimensions))
                    .build();
                let query = MetricDataQuery::builder()
                    // Ids start with a lower-case letter.
                    .id(format!("m{}", out.len()))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric)
                            .period(PERIOD)
                            .stat(w.statistic.as_str())
                            .build(),
                    )
                    .return_data(true)
                    .build();
                let series = MetricSeries {
                    metric: w.metric.to_string(),
                    unit: unit_of(&w.unit),
                    node: node.label(),
                    threshold: (w.threshold)(&spec.thresholds),
                    points: Vec::new(),
                };
                out.push((series, query));
            }
        }
        out
    }
}

#[async_trait]
impl CacheMetrics for CloudWatchAlarms {
    async fn recent(
        &self,
        spec: &AlarmSpec,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Vec<MetricSeries>>, ProviderError> {
        let (mut series, queries): (Vec<MetricSeries>, Vec<MetricDataQuery>) =
            Self::chart_queries(spec).into_iter().unzip();
        let index: BTreeMap<String, usize> =
            queries.iter().enumerate().filter_map(|(n, q)| Some((q.id()?.to_string(), n))).collect();
        for chunk in queries.chunks(QUERIES) {
            let mut token = None;
            loop {
                let out = self
                    .client
                    .get_metric_data()
                    .set_metric_data_queries(Some(chunk.to_vec()))
                    .start_time(DateTime::from_secs(since))
                    .end_time(DateTime::from_secs(until))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| classify("GetMetricData", e))?;
                for result in out.metric_data_results() {
                    let Some(&n) = result.id().and_then(|id| index.get(id)) else { continue };
                    let points =
                        result.timestamps().iter().map(DateTime::secs).zip(result.values().iter().copied());
                    series[n].points.extend(points);
                }
                match out.next_token() {
                    Some(next) if !next.is_empty() => token = Some(next.to_string()),
                    _ => break,
                }
            }
        }
        for s in &mut series {
            s.points.sort_by_key(|p| p.0);
        }
        Ok(Some(series))
    }
}
