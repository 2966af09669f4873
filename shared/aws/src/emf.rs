//! The broker's own metrics in Lambda: one CloudWatch Embedded Metric Format
//! document per event, written as a line on the function's log stream,
//! which CloudWatch Logs turns into metrics without an API call.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use broker_core::domain::{OperationKind, OperationState};
use broker_core::ports::{Metrics, RequestSample};

/// The namespace of every metric; the `Broker` dimension (the deploy's
/// name prefix) tells brokers in one account apart.
pub const NAMESPACE: &str = "OSBElastiCacheBroker";

/// Every metric name this module writes (the dashboards chart each).
pub const METRICS: [&str; 9] = [
    "Requests",
    "RequestLatency",
    "OperationsStarted",
    "OperationsSucceeded",
    "OperationsFailed",
    "OperationDuration",
    "StepsRetried",
    "JobsRequeued",
    "JobAgeAtReceipt",
];

type Sink = Box<dyn Fn(&str) + Send + Sync>;

pub struct EmfMetrics {
    broker: String,
    sink: Sink,
}

impl EmfMetrics {
    /// Lines to standard output, which Lambda sends to the function's log
    /// group (the tracing log goes to standard error).
    pub fn stdout(broker: &str) -> EmfMetrics {
        EmfMetrics::with_sink(broker, |line| {
            let mut out = std::io::stdout().lock();
            // One write per line, so that lines from two tasks never mix.
            let _ = out.write_all(format!("{line}\n").as_bytes());
        })
    }

    /// Lines to `sink` (a test keeps them).
    pub fn with_sink(broker: &str, sink: impl Fn(&str) + Send + Sync + 'static) -> EmfMetrics {
        EmfMetrics { broker: broker.to_string(), sink: Box::new(sink) }
    }

    /// One document: `dimensions` are (name, value) pairs, `metrics` are
    /// (name, unit, value); every dimension set starts with `Broker`, and
    /// one set of `Broker` alone adds them up for the whole broker.
    fn emit(&self, dimensions: &[(&str, &str)], metrics: &[(&str, &str, f64)]) {
        let timestamp =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut names: Vec<&str> = vec!["Broker"];
        names.extend(dimensions.iter().map(|(name, _)| *name));
        let sets = if dimensions.is_empty() { json!([names]) } else { json!([names, ["Broker"]]) };
        let mut doc = json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": sets,
                    "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
                }],
            },
            "Broker": self.broker,
        });
        let root = doc.as_object_mut().expect("a JSON object");
        for (name, value) in dimensions {
            root.insert(name.to_string(), Value::from(*value));
        }
        for (name, _, value) in metrics {
            root.insert(name.to_string(), json!(value));
        }
        (self.sink)(&doc.to_string());
    }
}

impl Metrics for EmfMetrics {
    fn request(&self, sample: &RequestSample) {
        let status = sample.status.to_string();
        self.emit(
            &[("Route", sample.route), ("Method", sample.method), ("Status", &status)],
            &[
                ("Requests", "Count", 1.0),
                ("RequestLatency", "Milliseconds", sample.elapsed.as_secs_f64() * 1000.0),
            ],
        );
    }

    fn operation_started(&self, kind: OperationKind, plan_id: &str) {
        self.emit(&[("Kind", kind.as_str()), ("Plan", plan_id)], &[("OperationsStarted", "Count", 1.0)]);
    }

    fn operation_finished(&self, kind: OperationKind, plan_id: &str, state: OperationState, took: Duration) {
        let count = match state {
            OperationState::Succeeded => "OperationsSucceeded",
            OperationState::Failed => "OperationsFailed",
            OperationState::InProgress => return,
        };
        self.emit(
            &[("Kind", kind.as_str()), ("Plan", plan_id)],
            &[(count, "Count", 1.0), ("OperationDuration", "Seconds", took.as_secs_f64())],
        );
    }

    fn step_retried(&self, kind: OperationKind) {
        self.emit(&[("Kind", kind.as_str())], &[("StepsRetried", "Count", 1.0)]);
    }

    fn job_requeued(&self, kind: OperationKind) {
        self.emit(&[("Kind", kind.as_str())], &[("JobsRequeued", "Count", 1.0)]);
    }

    fn job_received(&self, age: Duration) {
        self.emit(&[], &[("JobAgeAtReceipt", "Milliseconds", age.as_secs_f64() * 1000.0)]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// Checks `line` against the EMF specification's rules: a root
    /// `_aws` with a millisecond `Timestamp` and one or more
    /// `CloudWatchMetrics` directives, each naming a namespace, dimension
    /// sets of at most 30 keys that are all strings at the root, and metrics
    /// that are all numbers at the root with a CloudWatch unit.
    pub(crate) fn check_emf(line: &str) -> Value {
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].as_u64().unwrap() > 1_600_000_000_000, "Timestamp in ms: {line}");
        for directive in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert!(!directive["Namespace"].as_str().unwrap().is_empty());
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(!set.is_empty() && set.len() <= 30, "{line}");
                for key in set {
                    assert!(doc[key.as_str().unwrap()].is_string(), "dimension {key} is a string: {line}");
                }
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                assert!(
                    doc[metric["Name"].as_str().unwrap()].is_number(),
                    "metric {metric} is a number: {line}"
                );
                let unit = metric["Unit"].as_str().unwrap();
                assert!(["Count", "Milliseconds", "Seconds"].contains(&unit), "{unit}");
            }
        }
        doc
    }

    #[test]
    fn operations_retries_requeues_and_job_ages_are_emf_lines_by_kind_and_plan() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let kept = lines.clone();
        let m = EmfMetrics::with_sink("ecb", move |l| kept.lock().unwrap().push(l.to_string()));
        m.operation_started(OperationKind::Provision, "plan-small");
        m.operation_finished(
            OperationKind::Provision,
            "plan-small",
            OperationState::Succeeded,
            Duration::from_secs(420),
        );
        m.operation_finished(
            OperationKind::Bind,
            "plan-small",
            OperationState::Failed,
            Duration::from_secs(3),
        );
        m.operation_finished(OperationKind::Bind, "plan-small", OperationState::InProgress, Duration::ZERO);
        m.step_retried(OperationKind::Update);
        m.job_requeued(OperationKind::Update);
        m.job_received(Duration::from_millis(250));
        let docs: Vec<Value> = lines.lock().unwrap().iter().map(|l| check_emf(l)).collect();
        assert_eq!(docs.len(), 6, "an operation still in progress has not finished: {docs:?}");
        for doc in &docs {
            for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
                assert!(METRICS.contains(&metric["Name"].as_str().unwrap()), "{metric} is listed in METRICS");
            }
        }
        let (started, succeeded, failed, retried, requeued, received) =
            (&docs[0], &docs[1], &docs[2], &docs[3], &docs[4], &docs[5]);
        assert_eq!(
            (&started["Kind"], &started["Plan"], &started["OperationsStarted"]),
            (&json!("provision"), &json!("plan-small"), &json!(1.0))
        );
        assert_eq!(
            (&succeeded["OperationsSucceeded"], &succeeded["OperationDuration"]),
            (&json!(1.0), &json!(420.0))
        );
        assert_eq!((&failed["Kind"], &failed["OperationsFailed"]), (&json!("bind"), &json!(1.0)));
        assert!(failed.get("OperationsSucceeded").is_none(), "{failed}");
        assert_eq!((&retried["Kind"], &retried["StepsRetried"]), (&json!("update"), &json!(1.0)));
        assert_eq!(requeued["JobsRequeued"], 1.0);
        assert_eq!(received["JobAgeAtReceipt"], 250.0);
        assert_eq!(received["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Broker"]]));
        assert_eq!(
            started["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Broker", "Kind", "Plan"], ["Broker"]])
        );
    }

    #[test]
    fn a_request_is_one_emf_line_with_its_route_method_status_and_latency() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let kept = lines.clone();
        let m = EmfMetrics::with_sink("ecb", move |l| kept.lock().unwrap().push(l.to_string()));
        let route = "/v2/service_instances/{instance_id}";
        m.request(&RequestSample { route, method: "PUT", status: 202, elapsed: Duration::from_micros(1500) });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains('\n'), "one line");
        let doc = check_emf(&lines[0]);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Broker", "Route", "Method", "Status"], ["Broker"]])
        );
        assert_eq!(
            (&doc["Broker"], &doc["Route"], &doc["Method"], &doc["Status"]),
            (&json!("ecb"), &json!(route), &json!("PUT"), &json!("202"))
        );
        assert_eq!(doc["Requests"], 1.0);
        assert!((doc["RequestLatency"].as_f64().unwrap() - 1.5).abs() < 1e-9, "{doc}");
    }
}
