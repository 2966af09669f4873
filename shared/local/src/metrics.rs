//! Laptop mode's metrics: kept in memory by `prometheus-client` and served at
//! `GET /metrics` in Prometheus' text format.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use broker_core::ports::{Metrics, RequestSample};

/// Static strings and a number: counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

type Latency = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Request latency buckets in seconds: 0.25 ms to about 4 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The registry and the metrics in it; clones share them.
#[derive(Clone)]
pub struct PrometheusMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
}

impl Default for PrometheusMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("broker");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "OSB API requests by route template, method and status",
            requests.clone(),
        );
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by route template, method and status",
            latency.clone(),
        );
        PrometheusMetrics { registry: Arc::new(registry), requests, latency }
    }
}

impl Metrics for PrometheusMetrics {
    fn request(&self, sample: &RequestSample) {
        let labels = RequestLabels { route: sample.route, method: sample.method, status: sample.status };
        self.latency.get_or_create(&labels).observe(sample.elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
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
        assert_eq!(
            line(&format!("broker_requests_total{labels}")),
            format!("broker_requests_total{labels} 2")
        );
        let not_found = r#"status="404"}"#;
        assert!(line("broker_requests_total").contains("route=") && text.contains(not_found), "{text}");
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
        assert!(text.contains("# TYPE broker_requests_total counter"), "{text}");
    }
}
