//! The API Gateway (HTTP API, payload 2.0) events in `events/` parse as
//! lambda_http requests and route through the real laptop-mode Router: the
//! same files `cargo lambda invoke broker-api --data-file` sends.

use std::path::Path;

use axum::http::StatusCode;
use broker_tests::{LocalBroker, ProcessGuard};
use serde_json::Value;
use tower::ServiceExt;

fn event(name: &str) -> lambda_http::Request {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

async fn send(b: &LocalBroker, name: &str) -> (StatusCode, Value) {
    let resp = b.laptop.router.clone().oneshot(event(name)).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn every_route_has_an_event() {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.ends_with(".json")
                && !n.starts_with("sqs-")
                && !n.starts_with("rotation-")
                && n != "reconcile.json"
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bind.json",
            "binding-last-operation.json",
            "catalog.json",
            "deprovision.json",
            "fetch-binding.json",
            "fetch-instance.json",
            "instance-last-operation.json",
            "provision.json",
            "unbind.json",
            "update.json",
        ]
    );
    for n in &names {
        let req = event(n);
        assert!(req.uri().path().starts_with("/v2/"), "{n}: {}", req.uri());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_drive_a_whole_lifecycle_through_the_router() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let instance_op = "/v2/service_instances/8d3b1a9c-5f2e-4c71-9a0e-events000001/last_operation";
    let binding_op = "/v2/service_instances/8d3b1a9c-5f2e-4c71-9a0e-events000001/service_bindings/3f6c2e1d-7b4a-4e95-8c3d-events000002/last_operation";

    let (status, body) = send(&b, "catalog.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["services"].as_array().unwrap().len(), 3);

    let (status, body) = send(&b, "provision.json").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = send(&b, "instance-last-operation.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(b.wait_for(instance_op).await["state"], "succeeded");

    let (status, body) = send(&b, "fetch-instance.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(&b, "update.json").await;
    assert!(status == StatusCode::OK || status == StatusCode::ACCEPTED, "{status} {body}");
    assert_eq!(b.wait_for(instance_op).await["state"], "succeeded");

    // Laptop mode makes the user at once: the bind answers with credentials.
    let (status, body) = send(&b, "bind.json").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["credentials"]["password"].is_string(), "{body}");
    let (status, body) = send(&b, "binding-last-operation.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(b.wait_for(binding_op).await["state"], "succeeded");
    let (status, body) = send(&b, "fetch-binding.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Laptop caches speak TLS only, as ElastiCache's do: the uri says so and
    // the credentials carry the CA that signed the servers' certificate.
    assert!(body["credentials"]["uri"].as_str().unwrap().starts_with("rediss://"), "{body}");
    assert_eq!(body["credentials"]["tls_enabled"], true, "{body}");
    assert!(
        body["credentials"]["ca_certificate"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"),
        "{body}"
    );

    let (status, body) = send(&b, "unbind.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(b.wait_for(binding_op).await["state"], "succeeded");
    let (status, body) = send(&b, "deprovision.json").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(b.wait_for(instance_op).await["state"], "succeeded");
}

#[test]
fn every_job_type_has_an_sqs_event_whose_body_is_a_version_1_job() {
    use aws_lambda_events::event::sqs::SqsEvent;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    for kind in ["provision", "update", "deprovision", "bind", "unbind"] {
        let text = std::fs::read_to_string(dir.join(format!("sqs-{kind}.json"))).unwrap();
        let event: SqsEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("sqs-{kind}: {e}"));
        assert_eq!(event.records.len(), 1);
        let job: broker_core::ports::Job =
            serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(job.v, broker_core::ports::Job::VERSION);
        assert!(job.operation_id.starts_with(kind), "sqs-{kind}: {}", job.operation_id);
        assert_eq!(job.binding_id.is_some(), kind.ends_with("bind"), "sqs-{kind}");
    }
}

/// The Secrets Manager rotation events in `events/`, one per step, as
/// `cargo lambda invoke provisioner --data-file events/rotation-*.json` sends
/// them: read as the provisioner reads them.
fn rotation_event(step: &str) -> broker_core::rotation::RotationEvent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../events/rotation-{step}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("rotation-{step}.json: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_events_rotate_the_events_binding_in_laptop_mode() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let instance_op = "/v2/service_instances/8d3b1a9c-5f2e-4c71-9a0e-events000001/last_operation";
    let binding = "/v2/service_instances/8d3b1a9c-5f2e-4c71-9a0e-events000001/service_bindings/3f6c2e1d-7b4a-4e95-8c3d-events000002";
    send(&b, "provision.json").await;
    assert_eq!(b.wait_for(instance_op).await["state"], "succeeded");
    send(&b, "bind.json").await;
    assert_eq!(b.wait_for(&format!("{binding}/last_operation")).await["state"], "succeeded");
    let (_, before) = b.call("GET", binding, None).await;

    let steps = ["create-secret", "set-secret", "test-secret", "finish-secret"];
    let events: Vec<_> = steps.iter().map(|s| rotation_event(s)).collect();
    let expected = [
        broker_core::rotation::RotationStep::CreateSecret,
        broker_core::rotation::RotationStep::SetSecret,
        broker_core::rotation::RotationStep::TestSecret,
        broker_core::rotation::RotationStep::FinishSecret,
    ];
    assert_eq!(events.iter().map(|e| e.step).collect::<Vec<_>>(), expected);
    assert!(events.iter().all(|e| e.token == events[0].token && e.secret_id == events[0].secret_id));
    for event in &events {
        b.laptop.rotator.handle(event).await.unwrap_or_else(|e| panic!("{:?}: {e}", event.step));
    }
    let (status, after) = b.call("GET", binding, None).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_ne!(after["credentials"]["password"], before["credentials"]["password"]);
    assert_eq!(after["credentials"]["username"], before["credentials"]["username"]);

    send(&b, "deprovision.json").await;
    assert_eq!(b.wait_for(instance_op).await["state"], "succeeded");
}

/// `events/reconcile.json` is what the schedule invokes the provisioner
/// with: the invocation runs a reconcile pass and answers its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_event_runs_a_reconcile_pass() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/reconcile.json");
    let payload: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let report = broker_core::invocation::handle(
        &b.laptop.worker,
        &b.laptop.rotator,
        &b.laptop.reconciler,
        payload,
        deadline,
    )
    .await
    .unwrap();
    assert_eq!(
        report,
        serde_json::json!({"in_progress": 0, "stalled": 0, "past_deadline": 0, "left_for_next_pass": 0, "spares_started": 0, "pool_added": 0, "pool_retired": 0,
                           "orphans_seen": 0, "orphans_removed": 0, "orphans_left_alone": 0})
    );
}
