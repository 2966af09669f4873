//! Watching the caches, through the OSB API and the worker.
//!
//! Alarms: made with the cache, shown with their states when the instance
//! is fetched, brought up to date by a plan change, deleted with the cache;
//! a refusal leaves a working cache working and says so, a throttled call
//! is retried. The broker runs the real CloudWatch adapter over its
//! stand-in.
//!
//! Log delivery: the `log_delivery` parameter, refused with a 400 naming it
//! where the engine or its version delivers no such log.
//!
//! The dashboard page: its URL in provision and fetch answers, what it
//! shows (and never a password), 403 for a missing, wrong or expired token,
//! 404 once the instance is gone. (Laptop mode renders it in chromium:
//! `tests/e2e.rs`.)

use aws_sdk_cloudwatch::types::StateValue;
use broker_core::domain::OperationState;
use broker_core::ports::{SecretStore, Stage, StateStore};
use broker_http::dashboard::DashboardKey;
use broker_tests::test_broker::TestBroker;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";
const MEMCACHED: &str = "elasticache-memcached";
const ID: &str = "5d2c9a7e-alarm-test-instance";

fn body(tb: &TestBroker, service: &str, plan: &str) -> Value {
    let (service_id, plan_id) = tb.plan_id(service, plan);
    json!({ "service_id": service_id, "plan_id": plan_id, "organization_guid": "org-1", "space_guid": "space-1" })
}

async fn provision(tb: &TestBroker, service: &str, plan: &str) {
    let (status, got) = tb
        .call(
            "PUT",
            &format!("/v2/service_instances/{ID}?accepts_incomplete=true"),
            Some(body(tb, service, plan)),
        )
        .await;
    assert_eq!(status, 202, "{got}");
    tb.drain(50).await;
}

async fn last_description(tb: &TestBroker) -> (String, String) {
    let (status, got) = tb.call("GET", &format!("/v2/service_instances/{ID}/last_operation"), None).await;
    assert_eq!(status, 200, "{got}");
    (got["state"].as_str().unwrap().to_string(), got["description"].as_str().unwrap().to_string())
}

async fn fetched_alarms(tb: &TestBroker) -> Vec<(String, String, String)> {
    let (status, got) = tb.call("GET", &format!("/v2/service_instances/{ID}"), None).await;
    assert_eq!(status, 200, "{got}");
    got["metadata"]["attributes"]["alarms"]
        .as_array()
        .unwrap_or_else(|| panic!("no alarms in {got}"))
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (s("metric"), s("node"), s("state"))
        })
        .collect()
}

#[tokio::test]
async fn a_cache_gets_its_alarms_fetch_shows_their_states_a_plan_change_updates_them_and_deprovision_deletes_them()
 {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    assert_eq!(last_description(&tb).await.0, "succeeded");
    // The fake provider's cache has one node, `{id}-001`.
    let node = format!("{ID}-001");
    let names = tb.cloudwatch.names();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("osb-") && n.contains(&format!("/{node}/"))), "{names:?}");
    let tags = tb.cloudwatch.tags(&names[0]);
    for tag in
        [("broker-instance-id", ID), ("organization", "org-1"), ("space", "space-1"), ("broker", "osb")]
    {
        assert!(tags.contains(&(tag.0.to_string(), tag.1.to_string())), "{tag:?} in {tags:?}");
    }

    let cpu = names.iter().find(|n| n.ends_with("/EngineCPUUtilization")).unwrap().clone();
    tb.cloudwatch.set_state(&cpu, StateValue::Alarm);
    let alarms = fetched_alarms(&tb).await;
    assert_eq!(
        alarms,
        [
            ("CurrConnections".to_string(), node.clone(), "INSUFFICIENT_DATA".to_string()),
            ("DatabaseMemoryUsagePercentage".to_string(), node.clone(), "INSUFFICIENT_DATA".to_string()),
            ("EngineCPUUtilization".to_string(), node.clone(), "ALARM".to_string()),
        ]
    );

    // The operator lowers the medium plan's CPU threshold; the instance
    // moves to it.
    tb.change_plan(REDIS, "medium", |p| p.alarms.cpu_percent = Some(50.0)).await;
    let puts = tb.cloudwatch.count("PutMetricAlarm");
    let (status, got) = tb
        .call(
            "PATCH",
            &format!("/v2/service_instances/{ID}?accepts_incomplete=true"),
            Some(body(&tb, REDIS, "medium")),
        )
        .await;
    assert_eq!(status, 202, "{got}");
    tb.drain(50).await;
    let (state, description) = last_description(&tb).await;
    assert_eq!((state.as_str(), description.as_str()), ("succeeded", "updated: now on plan medium"));
    assert_eq!(tb.cloudwatch.count("PutMetricAlarm"), puts + 1, "only the CPU alarm changed");
    assert_eq!(tb.cloudwatch.alarm(&cpu).unwrap().threshold(), Some(50.0));

    let (service_id, plan_id) = tb.plan_id(REDIS, "medium");
    let uri = format!(
        "/v2/service_instances/{ID}?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}"
    );
    assert_eq!(tb.call("DELETE", &uri, None).await.0, 202);
    tb.drain(50).await;
    assert_eq!(last_description(&tb).await.0, "succeeded");
    assert!(tb.cloudwatch.names().is_empty(), "{:?}", tb.cloudwatch.names());
}

#[tokio::test]
async fn a_memcached_cache_gets_no_memory_alarm_and_a_plan_can_turn_alarms_off() {
    let tb = TestBroker::new().await;
    tb.change_plan(MEMCACHED, "dev", |p| p.alarms.connections = None).await;
    provision(&tb, MEMCACHED, "dev").await;
    let metrics: Vec<String> = fetched_alarms(&tb).await.into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(metrics, ["CPUUtilization"]);
}

#[tokio::test]
async fn a_refused_alarm_leaves_a_working_cache_and_the_description_says_why_without_the_account() {
    let tb = TestBroker::new().await;
    tb.cloudwatch.fail_puts(
        1,
        "AccessDenied",
        "User: arn:aws:sts::123456789012:assumed-role/osb-provisioner/x is not authorized to perform: cloudwatch:PutMetricAlarm",
    );
    provision(&tb, REDIS, "small").await;
    let (state, description) = last_description(&tb).await;
    assert_eq!(state, "succeeded", "{description}");
    assert!(
        description.contains("its CloudWatch alarms could not be set: PutMetricAlarm failed: AccessDenied"),
        "{description}"
    );
    assert!(!description.contains("123456789012"), "{description}");
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    assert!(instance.endpoint.is_some(), "the cache is usable");
}

#[tokio::test]
async fn a_throttled_alarm_call_is_retried_and_the_provision_then_succeeds() {
    let tb = TestBroker::new().await;
    tb.cloudwatch.fail_puts(2, "Throttling", "Rate exceeded");
    provision(&tb, REDIS, "small").await;
    let (state, description) = last_description(&tb).await;
    assert_eq!(
        (state.as_str(), description.starts_with("provisioned: redis")),
        ("succeeded", true),
        "{description}"
    );
    assert_eq!(tb.cloudwatch.names().len(), 3);
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    let op = tb.store.operation(&instance.last_operation_id).await.unwrap().unwrap();
    assert_eq!((op.state, op.retries), (OperationState::Succeeded, 2));
}

#[tokio::test]
async fn a_bad_threshold_in_the_catalog_is_refused_naming_the_field() {
    let mut catalog = broker_core::catalog::CatalogFile::builtin();
    catalog.plans[0].alarms.memory_percent = Some(120.0);
    let text =
        serde_json::to_string(&json!({ "services": catalog.services, "plans": catalog.plans })).unwrap();
    let err = broker_core::catalog::CatalogFile::parse(&text).unwrap_err();
    assert!(err.to_string().contains("alarms.memory_percent is 120"), "{err}");
}

// ------------------------------------------------------------------ log delivery

async fn put(tb: &TestBroker, id: &str, service: &str, plan: &str, parameters: Value) -> (u16, Value) {
    let mut b = body(tb, service, plan);
    b["parameters"] = parameters;
    let (status, got) =
        tb.call("PUT", &format!("/v2/service_instances/{id}?accepts_incomplete=true"), Some(b)).await;
    (status.as_u16(), got)
}

#[tokio::test]
async fn log_delivery_is_a_parameter_the_engine_and_version_must_be_able_to_do() {
    let tb = TestBroker::new().await;
    let (status, got) =
        put(&tb, "i-logs-1", REDIS, "small", json!({"log_delivery": ["slow-log", "engine-log"]})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(50).await;
    let instance = tb.store.instance("i-logs-1").await.unwrap().unwrap();
    assert_eq!(instance.parameters["log_delivery"], json!(["slow-log", "engine-log"]));

    for (params, mentions) in [
        (
            json!({"log_delivery": ["audit-log"]}),
            "parameter 'log_delivery' is \"audit-log\"; it takes a list of \"slow-log\" and \"engine-log\"",
        ),
        (json!({"log_delivery": "slow-log"}), "parameter 'log_delivery' is \"slow-log\"; it takes a list"),
        (json!({"log_delivery": ["slow-log", "slow-log"]}), "each once"),
        (
            json!({"log_delivery": ["engine-log"], "engine_version": "6.0"}),
            "parameter 'log_delivery': engine-log needs Redis OSS 6.2 or later, and the version is 6.0",
        ),
    ] {
        let (status, got) = put(&tb, "i-logs-2", REDIS, "small", params.clone()).await;
        assert_eq!(status, 400, "{params}: {got}");
        let description = got["description"].as_str().unwrap();
        assert!(description.contains(mentions), "{params}: {description}");
    }
    // Slow log from Redis OSS 6.0 is fine.
    let (status, got) =
        put(&tb, "i-logs-3", REDIS, "small", json!({"log_delivery": ["slow-log"], "engine_version": "6.0"}))
            .await;
    assert_eq!(status, 202, "{got}");

    // Memcached delivers no logs: its plans publish no such parameter.
    let (status, got) = put(&tb, "i-logs-4", MEMCACHED, "dev", json!({"log_delivery": ["slow-log"]})).await;
    assert_eq!(status, 400, "{got}");
    assert!(got["description"].as_str().unwrap().contains("unknown parameter 'log_delivery'"), "{got}");
    let (_, catalog) = tb.call("GET", "/v2/catalog", None).await;
    for service in catalog["services"].as_array().unwrap() {
        for plan in service["plans"].as_array().unwrap() {
            let properties = &plan["schemas"]["service_instance"]["create"]["parameters"]["properties"];
            let published = properties.get("log_delivery").is_some();
            // Serverless caches have no log delivery either.
            let serverless = plan["name"].as_str().unwrap().starts_with("serverless");
            assert_eq!(
                published,
                service["name"] != MEMCACHED && !serverless,
                "{}: {}",
                service["name"],
                plan["name"]
            );
        }
    }
}

#[tokio::test]
async fn an_update_can_turn_logs_on_and_is_refused_when_the_version_cannot() {
    let tb = TestBroker::new().await;
    let (status, got) = put(&tb, ID, REDIS, "small", json!({"engine_version": "6.0"})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(50).await;
    let patch = |params: Value| {
        let mut b = body(&tb, REDIS, "small");
        b["parameters"] = params;
        b
    };
    let uri = format!("/v2/service_instances/{ID}?accepts_incomplete=true");
    let (status, got) = tb.call("PATCH", &uri, Some(patch(json!({"log_delivery": ["engine-log"]})))).await;
    assert_eq!(status, 400, "{got}");
    assert!(got["description"].as_str().unwrap().contains("engine-log needs Redis OSS 6.2"), "{got}");
    let (status, got) = tb
        .call("PATCH", &uri, Some(patch(json!({"log_delivery": ["engine-log"], "engine_version": "7.1"}))))
        .await;
    assert_eq!(status, 202, "{got}");
    tb.drain(50).await;
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    assert_eq!(
        (instance.engine_version.as_str(), &instance.parameters["log_delivery"]),
        ("7.1", &json!(["engine-log"]))
    );
}

#[tokio::test]
async fn a_plan_whose_versions_cannot_deliver_its_logs_is_refused_by_the_catalog() {
    let mut catalog = broker_core::catalog::CatalogFile::builtin();
    let redis = catalog.services.iter().find(|s| s.name == REDIS).unwrap().id.clone();
    let plan = catalog.plans.iter_mut().find(|p| p.service_id == redis && p.name == "small").unwrap();
    assert!(plan.engine_versions.contains(&"6.0".to_string()));
    plan.log_delivery = vec![broker_core::domain::LogType::EngineLog];
    let text =
        serde_json::to_string(&json!({ "services": catalog.services, "plans": catalog.plans })).unwrap();
    let err = broker_core::catalog::CatalogFile::parse(&text).unwrap_err().to_string();
    assert!(
        err.contains(
            "log_delivery engine-log: engine-log needs Redis OSS 6.2 or later, and the version is 6.0"
        ),
        "{err}"
    );
}

// ------------------------------------------------------------------ the broker's own metrics

/// The Prometheus text the broker serves at `/metrics`.
async fn metrics_text(tb: &TestBroker) -> String {
    use tower::ServiceExt;
    let req = broker_tests::test_broker::request("GET", "/metrics", None, true, None);
    let resp = tb.router.clone().oneshot(req).await.expect("router");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_job_the_broker_enqueues_again_counts_as_requeued() {
    let tb = TestBroker::new().await;
    let b = body(&tb, REDIS, "small");
    let uri = format!("/v2/service_instances/{ID}?accepts_incomplete=true");
    assert_eq!(tb.call("PUT", &uri, Some(b.clone())).await.0, 202);
    let requeued = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"broker_jobs_requeued_total{kind="provision"} "#))
            .map(|n| n.parse::<f64>().unwrap())
    };
    assert_eq!(requeued(&metrics_text(&tb).await), None, "nothing requeued yet");
    // The platform did not get the answer and asks again: the job is sent again.
    assert_eq!(tb.call("PUT", &uri, Some(b)).await.0, 202);
    assert_eq!(requeued(&metrics_text(&tb).await), Some(1.0));
    // The reconcile pass finds the operation stalled (TestBroker's stall is
    // 0 s) and sends it once more.
    tb.reconciler.run(broker_core::domain::now() + 1).await.unwrap();
    assert_eq!(requeued(&metrics_text(&tb).await), Some(2.0));
}

// ------------------------------------------------------------------ the dashboard page

/// GET `uri` as a browser does: no basic auth, no API version.
async fn browse(tb: &TestBroker, uri: &str) -> (u16, String) {
    use tower::ServiceExt;
    let req = broker_tests::test_broker::request("GET", uri, None, false, None);
    let resp = tb.router.clone().oneshot(req).await.expect("router");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The path and query of a dashboard URL.
fn path_of(url: &str) -> String {
    url.splitn(4, '/').nth(3).map(|rest| format!("/{rest}")).unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_the_instance_without_a_password_and_a_bad_or_expired_token_is_403() {
    let tb = TestBroker::new().await;
    let uri = format!("/v2/service_instances/{ID}?accepts_incomplete=true");
    let (status, provisioned) = tb.call("PUT", &uri, Some(body(&tb, REDIS, "small"))).await;
    assert_eq!(status, 202, "{provisioned}");
    let from_provision = provisioned["dashboard_url"].as_str().expect("dashboard_url").to_string();
    assert!(
        from_provision.starts_with(&format!("http://127.0.0.1/dashboard/{ID}?token=")),
        "{from_provision}"
    );
    tb.drain(50).await;
    let bind = format!("/v2/service_instances/{ID}/service_bindings/app-1?accepts_incomplete=true");
    assert!(matches!(tb.call("PUT", &bind, Some(body(&tb, REDIS, "small"))).await.0.as_u16(), 201 | 202));
    tb.drain(50).await;
    let cpu = tb.cloudwatch.names().into_iter().find(|n| n.ends_with("/EngineCPUUtilization")).unwrap();
    tb.cloudwatch.set_state(&cpu, StateValue::Alarm);
    // What the CPU alarm's node measured in the last hour is charted, with
    // the alarm's threshold; the other metrics have no data yet.
    let alarm = tb.cloudwatch.alarm(&cpu).unwrap();
    let dimensions: Vec<(&str, &str)> =
        alarm.dimensions().iter().map(|d| (d.name().unwrap(), d.value().unwrap())).collect();
    let t = broker_core::domain::now();
    tb.cloudwatch.set_datapoints("EngineCPUUtilization", &dimensions, &[(t - 600, 12.0), (t - 300, 47.5)]);

    // Fetching the instance gives a fresh URL; both open the page.
    let (_, fetched) = tb.call("GET", &format!("/v2/service_instances/{ID}"), None).await;
    let from_fetch = fetched["dashboard_url"].as_str().expect("dashboard_url").to_string();
    for url in [&from_provision, &from_fetch] {
        let (status, html) = browse(&tb, &path_of(url)).await;
        assert_eq!(status, 200, "{html}");
        for shown in [
            "elasticache-redis",
            "small",
            "ready",
            "redis 7.1",
            "127.0.0.1:6379",
            "Bindings</th><td>1<",
            "EngineCPUUtilization",
            "ALARM",
            "provisioned: redis",
            "bind app-1",
            "http-equiv=\"refresh\"",
            "name=\"viewport\"",
            "Last 3 hours",
            "<svg",
            "<polyline",
            "alarm above 80.0 %",
            "47.5 %",
        ] {
            assert!(html.contains(shown), "the page shows {shown:?}: {html}");
        }
        assert!(!html.contains("<script"), "no script");
    }
    // One GetMetricData request per page, asking for the node's three
    // metrics.
    let charted: Vec<String> =
        tb.cloudwatch.calls().into_iter().filter(|c| c.starts_with("GetMetricData")).collect();
    assert_eq!(charted, ["GetMetricData 3", "GetMetricData 3"]);
    // No password of the instance or of its binding is on the page, and
    // the audit line of the request keeps the token out.
    let logs = broker_testing::LogCapture::start();
    let (_, html) = browse(&tb, &path_of(&from_fetch)).await;
    let logged = logs.text();
    let token_of = |url: &str| url.split("token=").nth(1).unwrap().to_string();
    assert!(logged.contains("token=[redacted]"), "{logged}");
    assert!(!logged.contains(&token_of(&from_fetch)), "{logged}");
    drop(logs);
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    let binding = tb.store.binding(ID, "app-1").await.unwrap().unwrap();
    for reference in [instance.admin_secret.clone(), binding.secret.clone()].into_iter().flatten() {
        let value = tb.secrets.read(&reference, Stage::Current).await.unwrap().unwrap();
        assert!(!html.contains(value.expose_secret()), "a password is on the page");
    }

    // Without a token, with a wrong, altered, another instance's or an
    // expired one: 403, and nothing about the instance.
    let key = DashboardKey::from_secret(&SecretString::from(broker_tests::test_broker::PASSWORD));
    let t = broker_core::domain::now();
    let token = token_of(&from_fetch);
    let (expiry, sig) = token.split_once('.').unwrap();
    for path in [
        format!("/dashboard/{ID}"),
        format!("/dashboard/{ID}?token=nonsense"),
        format!("/dashboard/{ID}?token={}.{sig}", expiry.parse::<i64>().unwrap() + 1),
        format!("/dashboard/another-instance?token={token}"),
        format!("/dashboard/{ID}?token={}", key.token(ID, t - 1)),
        format!(
            "/dashboard/{ID}?token={}",
            DashboardKey::from_secret(&SecretString::from("x")).token(ID, t + 60)
        ),
    ] {
        let (status, html) = browse(&tb, &path).await;
        assert_eq!(status, 403, "{path}: {html}");
        assert!(!html.contains("small") && !html.contains("ALARM"), "{path}: {html}");
    }
    // A token the broker signed opens the page without basic auth, but
    // opens nothing of the OSB API.
    let (status, _) = browse(&tb, &format!("/v2/service_instances/{ID}?token={token}")).await;
    assert_eq!(status, 401);

    // Once deprovisioned, the page says the instance is gone.
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let unbind = format!(
        "/v2/service_instances/{ID}/service_bindings/app-1?service_id={service_id}&plan_id={plan_id}"
    );
    tb.call("DELETE", &unbind, None).await;
    tb.drain(50).await;
    let del = format!(
        "/v2/service_instances/{ID}?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}"
    );
    assert_eq!(tb.call("DELETE", &del, None).await.0, 202);
    tb.drain(50).await;
    let (status, html) = browse(&tb, &path_of(&from_fetch)).await;
    assert_eq!(status, 404, "{html}");
}
