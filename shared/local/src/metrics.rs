//! Laptop mode's metrics: kept in memory by `prometheus-client` and served at
//! `GET /metrics` in Prometheus' text format.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use broker_core::domain::{OperationKind, OperationState};
use broker_core::ports::{Metrics, RequestSample};

/// Static strings and a number: counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

type Latency = Family<RequestLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    kind: &'static str,
    plan: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Operation durations in seconds: 1 s to about 4.5 hours, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// A job's age at receipt in seconds: 10 ms to about 20 minutes, doubling.
fn age_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 18))
}

/// Request latency buckets in seconds: 0.25 ms to about 4 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The registry and the metrics in it; clones share them.
#[derive(Clone)]
pub struct PrometheusMetrics {
    registry: Arc<Registry>,
    /// Its `_count` is the number of requests: no counter of its own, so
    /// counting a request is one lookup.
    latency: Latency,
    started: Family<OperationLabels, Counter>,
    finished: Family<FinishedLabels, Counter>,
    durations: Family<FinishedLabels, Histogram, fn() -> Histogram>,
    retried: Family<KindLabels, Counter>,
    requeued: Family<KindLabels, Counter>,
    ages: Histogram,
}

impl Default for PrometheusMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("broker");
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by route template, method and status",
            latency.clone(),
        );
        let started = Family::<OperationLabels, Counter>::default();
        registry.register(
            "operations_started",
            "Operations the worker took up, by kind and plan id",
            started.clone(),
        );
        let finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "operations_finished",
            "Operations that ended, by kind, plan id and state (succeeded or failed)",
            finished.clone(),
        );
        let durations: Family<FinishedLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "operation_duration_seconds",
            "Time from an operation's start to its end, by kind, plan id and state",
            durations.clone(),
        );
        let retried = Family::<KindLabels, Counter>::default();
        registry.register(
            "steps_retried",
            "Steps put back after a retryable error, by operation kind",
            retried.clone(),
        );
        let requeued = Family::<KindLabels, Counter>::default();
        registry.register(
            "jobs_requeued",
            "Jobs sent back to the queue (waiting for the cache, or a retry), by operation kind",
            requeued.clone(),
        );
        let ages = age_histogram();
        registry.register(
            "job_age_at_receipt_seconds",
            "Time from a job's enqueue to its receipt, any delay asked for included",
            ages.clone(),
        );
        PrometheusMetrics {
            registry: Arc::new(registry),
            latency,
            started,
            finished,
            durations,
            retried,
            requeued,
            ages,
        }
    }
}

impl Metrics for PrometheusMetrics {
    fn request(&self, sample: &RequestSample) {
        let labels = RequestLabels { route: sample.route, method: sample.method, status: sample.status };
        self.latency.get_or_create(&labels).observe(sample.elapsed.as_secs_f64());
    }

    fn operation_started(&self, kind: OperationKind, plan_id: &str) {
        self.started.get_or_create(&OperationLabels { kind: kind.as_str(), plan: plan_id.to_string() }).inc();
    }

    fn operation_finished(&self, kind: OperationKind, plan_id: &str, state: OperationState, took: Duration) {
        if state == OperationState::InProgress {
            return;
        }
        // OSB's spelling of the state: "succeeded" or "failed".
        let labels = FinishedLabels { kind: kind.as_str(), plan: plan_id.to_string(), state: state.osb() };
        self.finished.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(took.as_secs_f64());
    }

    fn step_retried(&self, kind: OperationKind) {
        self.retried.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
    }

    fn job_requeued(&self, kind: OperationKind) {
        self.requeued.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
    }

    fn job_received(&self, age: Duration) {
        self.ages.observe(age.as_secs_f64());
    }

    fn prometheus_text(&self) -> Option<String> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).ok()?;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn requests_are_counted_and_timed_by_route_method_and_status() {
        let m = PrometheusMetrics::default();
        let route = "/v2/service_instances/{instance_id}/last_operation";
        for (status, ms) in [(200, 1), (200, 3), (404, 2)] {
            m.request(&RequestSample { route, method: "GET", status, elapsed: Duration::from_millis(ms) });
        }
        let text = m.prometheus_text().unwrap();
        let line = |prefix: &str| {
            text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        };
        let labels = format!(r#"{{route="{route}",method="GET",status="200"}}"#);
        let not_found = format!(r#"{{route="{route}",method="GET",status="404"}}"#);
        assert_eq!(
            line(&format!("broker_request_duration_seconds_count{not_found}")),
            format!("broker_request_duration_seconds_count{not_found} 1")
        );
        assert_eq!(
            line(&format!("broker_request_duration_seconds_count{labels}")),
            format!("broker_request_duration_seconds_count{labels} 2")
        );
        let sum: f64 = line(&format!("broker_request_duration_seconds_sum{labels}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.004).abs() < 1e-9, "{sum}");
        assert!(text.contains("# TYPE broker_request_duration_seconds histogram"), "{text}");
    }
}
