//! Laptop mode's cache metrics: the servers' own counters (`INFO`,
//! memcached's `stats`), sampled by the broker every minute while it runs
//! and whenever a dashboard page asks and the last sample is older than
//! [`FRESH_MS`], kept in memory for the chart's window. The series carry
//! ElastiCache's metric names, so a page reads the same in both modes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use broker_core::broker::CHART_SECS;
use broker_core::domain::{Engine, Timestamp};
use broker_core::ports::{AlarmSpec, CacheMetrics, MetricSeries, MetricUnit, ProviderError};

use crate::provider::{LocalCacheProvider, NodeStats};

/// How often the broker samples every running server.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// A page asking for the charts samples again when the last sample is older
/// than this (milliseconds).
pub const FRESH_MS: i64 = 10_000;

/// At most this many samples per cache, however often pages ask.
const MAX_SAMPLES: usize = 2_000;

/// One reading of one server, and when it was taken (milliseconds since
/// the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at_ms: i64,
    stats: NodeStats,
}

/// The samples of every cache, newest last.
pub struct LocalCacheMetrics {
    provider: Arc<LocalCacheProvider>,
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl LocalCacheMetrics {
    pub fn new(provider: Arc<LocalCacheProvider>) -> LocalCacheMetrics {
        LocalCacheMetrics { provider, samples: Mutex::new(HashMap::new()) }
    }

    /// Reads the cache's server now and keeps the reading; nothing is kept
    /// when no server runs for it.
    pub async fn sample(&self, cache_key: &str) -> Result<(), ProviderError> {
        if let Some(stats) = self.provider.stats(cache_key).await? {
            self.keep(cache_key, Sample { at_ms: now_ms(), stats });
        }
        Ok(())
    }

    /// Samples every running server, and forgets the caches that are gone.
    /// A server that does not answer is logged and sampled at the next tick.
    pub async fn sample_all(&self) {
        let servers = self.provider.servers();
        for server in servers.iter().filter(|s| s.pid.is_some()) {
            if let Err(e) = self.sample(&server.instance_id).await {
                warn!(cache = %server.instance_id, error = %e, "could not sample the cache's counters for its chart");
            }
        }
        self.lock().retain(|key, _| servers.iter().any(|s| &s.instance_id == key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Sample>>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep(&self, cache_key: &str, sample: Sample) {
        let mut samples = self.lock();
        let kept = samples.entry(cache_key.to_string()).or_default();
        kept.push_back(sample);
        // One sample before the window, so its first CPU point has a
        // predecessor.
        let oldest = sample.at_ms - (CHART_SECS + SAMPLE_EVERY.as_secs() as i64) * 1000;
        while kept.len() > MAX_SAMPLES || kept.front().is_some_and(|s| s.at_ms < oldest) {
            kept.pop_front();
        }
    }

    fn samples_of(&self, cache_key: &str) -> Vec<Sample> {
        self.lock().get(cache_key).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Runs [`LocalCacheMetrics::sample_all`] now and every
    /// [`SAMPLE_EVERY`] until the task is aborted.
    pub fn spawn_sampling(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let metrics = self.clone();
        tokio::spawn(async move {
            loop {
                metrics.sample_all().await;
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    }
}

#[async_trait]
impl CacheMetrics for LocalCacheMetrics {
    async fn recent(
        &self,
        spec: &AlarmSpec,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Vec<MetricSeries>>, ProviderError> {
        let last = self.samples_of(&spec.cache_key).last().map(|s| s.at_ms);
        if last.is_none_or(|at| now_ms() - at > FRESH_MS) {
            // A server that does not answer leaves the chart as it was.
            if let Err(e) = self.sample(&spec.cache_key).await {
                warn!(cache = %spec.cache_key, error = %e, "could not sample the cache's counters for its chart");
            }
        }
        let node = spec.nodes.first().map(|n| n.label()).unwrap_or_else(|| spec.cache_key.clone());
        let samples: Vec<Sample> = self.samples_of(&spec.cache_key);
        Ok(Some(series(spec, &node, &samples, since, until)))
    }
}

/// The CPU, connections and memory series of one node from its samples,
/// named as ElastiCache names them.
fn series(
    spec: &AlarmSpec,
    node: &str,
    samples: &[Sample],
    since: Timestamp,
    until: Timestamp,
) -> Vec<MetricSeries> {
    let within = |at_ms: i64| (since * 1000..=until * 1000).contains(&at_ms);
    let at = |s: &Sample| s.at_ms / 1000;
    let one = |metric: &str, unit, threshold, points: Vec<(Timestamp, f64)>| MetricSeries {
        metric: metric.to_string(),
        unit,
        node: node.to_string(),
        threshold,
        points,
    };
    // CPU: seconds used between two samples over the seconds between them.
    // A server started again counts from zero; that pair gives no point.
    let cpu = samples
        .windows(2)
        .filter(|pair| within(pair[1].at_ms))
        .filter_map(|pair| {
            let wall = (pair[1].at_ms - pair[0].at_ms) as f64 / 1000.0;
            let used = pair[1].stats.cpu_secs - pair[0].stats.cpu_secs;
            (wall > 0.0 && used >= 0.0).then(|| (at(&pair[1]), used / wall * 100.0))
        })
        .collect();
    let shown: Vec<&Sample> = samples.iter().filter(|s| within(s.at_ms)).collect();
    // The sample's own connection is not the application's.
    let connections = shown.iter().map(|s| (at(s), s.stats.connections.saturating_sub(1) as f64)).collect();
    let thresholds = &spec.thresholds;
    let memory = match spec.engine {
        Engine::Memcached => one(
            "BytesUsedForCacheItems",
            MetricUnit::Bytes,
            None,
            shown.iter().map(|s| (at(s), s.stats.used_bytes as f64)).collect(),
        ),
        Engine::Redis | Engine::Valkey
            if shown.iter().all(|s| s.stats.limit_bytes > 0) && !shown.is_empty() =>
        {
            one(
                "DatabaseMemoryUsagePercentage",
                MetricUnit::Percent,
                thresholds.memory_percent,
                shown
                    .iter()
                    .map(|s| (at(s), s.stats.used_bytes as f64 / s.stats.limit_bytes as f64 * 100.0))
                    .collect(),
            )
        }
        // No maxmemory: no share to chart, so the bytes, never alarmed.
        Engine::Redis | Engine::Valkey => one(
            "BytesUsedForCache",
            MetricUnit::Bytes,
            None,
            shown.iter().map(|s| (at(s), s.stats.used_bytes as f64)).collect(),
        ),
    };
    let cpu_metric = if spec.engine.speaks_redis() { "EngineCPUUtilization" } else { "CPUUtilization" };
    vec![
        one(cpu_metric, MetricUnit::Percent, thresholds.cpu_percent, cpu),
        one("CurrConnections", MetricUnit::Count, thresholds.connections, connections),
        memory,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::domain::AlarmThresholds;
    use broker_core::ports::CacheNode;

    fn spec(engine: Engine) -> AlarmSpec {
        AlarmSpec {
            cache_key: "cache-1".into(),
            engine,
            nodes: vec![CacheNode { cluster_id: "cache-1".into(), node_id: None }],
            thresholds: AlarmThresholds::default(),
            tags: Vec::new(),
        }
    }

    fn sample(at_secs: i64, cpu_secs: f64, used_bytes: u64, limit_bytes: u64, connections: u64) -> Sample {
        Sample { at_ms: at_secs * 1000, stats: NodeStats { cpu_secs, used_bytes, limit_bytes, connections } }
    }

    #[test]
    fn cpu_is_the_share_of_wall_time_between_samples_and_a_restart_gives_no_point() {
        let samples = [
            sample(1_000, 1.0, 100, 0, 3),
            sample(1_060, 7.0, 200, 0, 5),
            sample(1_120, 0.5, 300, 0, 1), // started again: counters from zero
            sample(1_180, 2.0, 400, 0, 2),
        ];
        let got = series(&spec(Engine::Valkey), "cache-1", &samples, 1_000, 1_200);
        let names: Vec<&str> = got.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, ["EngineCPUUtilization", "CurrConnections", "BytesUsedForCache"]);
        assert_eq!(got[0].points, [(1_060, 10.0), (1_180, 2.5)]);
        assert_eq!(got[0].threshold, Some(80.0));
        assert_eq!(got[1].points, [(1_000, 2.0), (1_060, 4.0), (1_120, 0.0), (1_180, 1.0)]);
        assert_eq!(got[1].threshold, Some(1000.0));
        assert_eq!(got[2].threshold, None, "bytes without a limit are charted, never alarmed");
        assert!(got.iter().all(|s| s.node == "cache-1"));
    }

    #[test]
    fn a_memory_limit_gives_the_share_alarmed_on_and_the_window_bounds_the_points() {
        let samples =
            [sample(900, 0.0, 10, 100, 1), sample(1_000, 1.0, 25, 100, 1), sample(1_100, 2.0, 50, 100, 1)];
        let got = series(&spec(Engine::Redis), "cache-1", &samples, 1_000, 1_100);
        assert_eq!(got[2].metric, "DatabaseMemoryUsagePercentage");
        assert_eq!(got[2].points, [(1_000, 25.0), (1_100, 50.0)], "the sample before the window is left out");
        assert_eq!(got[2].threshold, Some(80.0));
        assert_eq!(got[0].points, [(1_000, 1.0), (1_100, 1.0)], "the first CPU point uses the sample before");
    }

    #[test]
    fn memcached_charts_host_cpu_and_item_bytes() {
        let samples = [sample(1_000, 0.0, 64, 1024, 2), sample(1_010, 0.1, 128, 1024, 2)];
        let got = series(&spec(Engine::Memcached), "cache-1", &samples, 0, 2_000);
        let names: Vec<&str> = got.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, ["CPUUtilization", "CurrConnections", "BytesUsedForCacheItems"]);
        assert_eq!(got[2].points, [(1_000, 64.0), (1_010, 128.0)]);
        assert_eq!(got[2].threshold, None);
        assert!((got[0].points[0].1 - 1.0).abs() < 1e-9);
    }
}
