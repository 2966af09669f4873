//! A whole broker in memory for fast tests: the Router, the broker and
//! worker, the embedded store, queue and secret store (in memory), the
//! rotation function, the scripted [`FakeProvider`] and CloudWatch alarms
//! over their stand-in.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use broker_aws::cloudwatch::CloudWatchAlarms;
use broker_core::broker::Broker;
use broker_core::catalog::CatalogFile;
use broker_core::domain::{BindingId, InstanceId, RotationPolicy};
use broker_core::ports::CatalogStore;
use broker_core::rotation::Rotator;
use broker_core::services::{Adapters, ServiceSettings, Services};
use broker_core::worker::{JobOutcome, Worker};
use broker_http::{AppState, BasicAuth, router};
use broker_local::queue::LocalQueue;
use broker_local::secrets::LocalSecretStore;
use broker_local::store::SqliteStore;
use broker_testing::FakeProvider;
use broker_testing::cloudwatch::FakeCloudWatch;
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt;

pub const USERNAME: &str = "broker";
pub const PASSWORD: &str = "test-password-not-secret";

/// A whole broker in memory with the fake provider.
pub struct TestBroker {
    pub router: Router,
    pub broker: Arc<Broker>,
    pub worker: Arc<Worker>,
    pub store: Arc<SqliteStore>,
    pub queue: Arc<LocalQueue>,
    pub secrets: Arc<LocalSecretStore>,
    pub provider: Arc<FakeProvider>,
    /// Where the worker's CloudWatch alarms go ([`CloudWatchAlarms`] under
    /// prefix `osb`, over the stand-in).
    pub cloudwatch: FakeCloudWatch,
    /// The rotation function, over the same parts.
    pub rotator: Arc<Rotator>,
    /// The reconciler, over the same parts (an operation is overdue as soon
    /// as its job is due: `stall_secs` 0).
    pub reconciler: Arc<broker_core::reconcile::Reconciler>,
    pub catalog: CatalogFile,
}

/// The secret name prefix of [`TestBroker`]'s worker and rotator.
pub const SECRET_PREFIX: &str = "test";
/// How long the reconciler's sweep lets an unnamed secret stay.
pub const ORPHAN_GRACE_SECS: i64 = 3600;

impl TestBroker {
    pub async fn new() -> TestBroker {
        TestBroker::with_rotation(RotationPolicy { days: 30, grace_secs: 0 }).await
    }

    /// A broker whose provider makes users at once, as laptop mode's local
    /// processes do: binds and unbinds finish within the request.
    pub async fn users_at_once() -> TestBroker {
        TestBroker::build(RotationPolicy { days: 30, grace_secs: 0 }, true, false).await
    }

    /// A broker whose queue refuses the first enqueue at each step of each
    /// kind of operation (the API's first enqueue of a provision, say), as
    /// SQS does when it is throttled or down.
    pub async fn first_enqueues_fail() -> TestBroker {
        TestBroker::build(RotationPolicy { days: 30, grace_secs: 0 }, false, true).await
    }

    /// A broker whose rotations follow `policy` (`new` has no grace period,
    /// so a drained queue ends a rotation). Its provider takes time to add
    /// users, as ElastiCache does, so instances keep spare users.
    pub async fn with_rotation(policy: RotationPolicy) -> TestBroker {
        TestBroker::build(policy, false, false).await
    }

    async fn build(policy: RotationPolicy, users_at_once: bool, abort_enqueues: bool) -> TestBroker {
        let store = Arc::new(SqliteStore::in_memory().expect("in-memory store"));
        let catalog = CatalogFile::builtin();
        store.seed(&catalog.services, &catalog.plans).await.expect("seed");
        let queue = Arc::new(LocalQueue::in_memory(10).expect("in-memory queue"));
        let secrets = Arc::new(LocalSecretStore::in_memory().expect("in-memory secrets"));
        let provider = Arc::new(FakeProvider::new(users_at_once));
        let jobs: Arc<dyn broker_core::ports::JobQueue> = if abort_enqueues {
            Arc::new(broker_testing::chaos::AbortingQueue::new(
                queue.clone(),
                store.clone(),
                broker_testing::chaos::Aborts::new(),
            ))
        } else {
            queue.clone()
        };
        let metrics = Arc::new(broker_local::metrics::PrometheusMetrics::default());
        let cloudwatch = FakeCloudWatch::new();
        let alarms = Arc::new(CloudWatchAlarms::new(cloudwatch.client.clone(), "osb", vec![]));
        let adapters = Adapters {
            store: store.clone(),
            queue: jobs,
            provider: provider.clone(),
            secrets: secrets.clone(),
            inventories: vec![secrets.clone()],
            metrics: metrics.clone(),
            alarms: alarms.clone(),
            cache_metrics: alarms,
        };
        let Services { broker, worker, rotator, reconciler } = Services::new(
            &adapters,
            &ServiceSettings {
                secret_prefix: SECRET_PREFIX.into(),
                rotation: policy,
                poll_delay_secs: 0,
                max_retry_delay_secs: 0,
                stall_secs: 0,
                // Longer than any test: a catalog change must show through
                // the store's catalog version, not through expiry.
                catalog_ttl: Duration::from_secs(3600),
                test_wait: Duration::from_millis(50),
                test_poll: Duration::from_millis(10),
                orphan_grace_secs: ORPHAN_GRACE_SECS,
                sweep_every_secs: 0,
            },
        );
        let auth = BasicAuth { username: USERNAME.into(), password: SecretString::from(PASSWORD) };
        let router = router(AppState { broker: broker.clone(), auth: Arc::new(auth), metrics });
        TestBroker {
            router,
            broker,
            worker,
            store,
            queue,
            secrets,
            provider,
            cloudwatch,
            rotator,
            reconciler,
            catalog,
        }
    }

    /// Changes plan `plan` of `service` in the store, as `catalog apply`
    /// would; the broker and worker read it at their next request or job.
    pub async fn change_plan(
        &self,
        service: &str,
        plan: &str,
        change: impl FnOnce(&mut broker_core::domain::Plan),
    ) {
        let (_, plan_id) = self.plan_id(service, plan);
        let mut p = self.catalog.plans.iter().find(|p| p.id == plan_id).expect("plan").clone();
        change(&mut p);
        self.store.put_plan(&p).await.expect("put plan");
    }

    /// The id of plan `plan` of service `service` ("elasticache-redis", "small").
    pub fn plan_id(&self, service: &str, plan: &str) -> (String, String) {
        let s = self.catalog.services.iter().find(|s| s.name == service).expect("service");
        let p = self.catalog.plans.iter().find(|p| p.service_id == s.id && p.name == plan).expect("plan");
        (s.id.clone(), p.id.clone())
    }

    /// Runs the worker over every visible job until the queue is empty (or
    /// `max` jobs); returns the outcomes in order.
    pub async fn drain(&self, max: usize) -> Vec<JobOutcome> {
        let mut outcomes = Vec::new();
        while outcomes.len() < max {
            let Some(d) = self.queue.receive(Duration::from_secs(30)).await.expect("receive") else {
                break;
            };
            let outcome = self.worker.handle(&d.job).await.expect("worker");
            self.queue.ack(d.id).await.expect("ack");
            outcomes.push(outcome);
        }
        outcomes
    }

    /// PUTs instance `id` of plan `plan` of `service` for organization `org`
    /// (space `space-1`) with `parameters`, then runs the worker: the
    /// answer to the PUT.
    pub async fn provision_as(
        &self,
        id: &str,
        service: &str,
        plan: &str,
        org: &str,
        parameters: Value,
    ) -> (StatusCode, Value) {
        let (service_id, plan_id) = self.plan_id(service, plan);
        let body = serde_json::json!({
            "service_id": service_id, "plan_id": plan_id,
            "organization_guid": org, "space_guid": "space-1",
            "parameters": parameters,
        });
        let answer = self
            .call("PUT", &format!("/v2/service_instances/{id}?accepts_incomplete=true"), Some(body))
            .await;
        self.drain(50).await;
        answer
    }

    /// PATCHes instance `id` of `service` with `parameters` (and plan
    /// `plan`, when given), then runs the worker: the answer to the PATCH.
    pub async fn update_instance(
        &self,
        id: &str,
        service: &str,
        plan: Option<&str>,
        parameters: Value,
    ) -> (StatusCode, Value) {
        let (service_id, plan_id) = self.plan_id(service, plan.unwrap_or("dev"));
        let mut body = serde_json::json!({ "service_id": service_id, "parameters": parameters });
        if plan.is_some() {
            body["plan_id"] = serde_json::json!(plan_id);
        }
        let answer = self
            .call("PATCH", &format!("/v2/service_instances/{id}?accepts_incomplete=true"), Some(body))
            .await;
        self.drain(50).await;
        answer
    }

    /// The state and description of instance `id`'s last operation.
    pub async fn last_operation(&self, id: &str) -> (String, String) {
        let (status, got) =
            self.call("GET", &format!("/v2/service_instances/{id}/last_operation"), None).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let text = |k: &str| got[k].as_str().unwrap_or_default().to_string();
        (text("state"), text("description"))
    }

    /// Sends a request with valid auth and API version.
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = request(method, uri, body, true, Some("2.17"));
        send(&self.router, req).await
    }
}

/// Builds a request; `auth` adds valid basic auth, `version` the API header.
pub fn request(
    method: &str,
    uri: &str,
    body: Option<Value>,
    auth: bool,
    version: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if auth {
        b = b.header("authorization", basic(USERNAME, PASSWORD));
    }
    if let Some(v) = version {
        b = b.header("x-broker-api-version", v);
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    b.body(body).expect("request")
}

/// The plan named `plan` of the service named `service` in a catalog body
/// (panics when there is none).
pub fn catalog_plan<'a>(catalog: &'a Value, service: &str, plan: &str) -> &'a Value {
    let s = catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == service).expect("service");
    s["plans"].as_array().unwrap().iter().find(|p| p["name"] == plan).expect("plan")
}

/// The parameters a plan's `create` or `update` schema publishes, in order.
pub fn schema_parameters(catalog: &Value, service: &str, plan: &str, which: &str) -> Vec<String> {
    let plan = catalog_plan(catalog, service, plan);
    plan["schemas"]["service_instance"][which]["parameters"]["properties"]
        .as_object()
        .expect("schema properties")
        .keys()
        .cloned()
        .collect()
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// An instance id the tests name (panics on one that is not an id).
pub fn iid(id: &str) -> InstanceId {
    InstanceId::parse(id).expect("instance id")
}

/// A binding id the tests name.
pub fn bid(id: &str) -> BindingId {
    BindingId::parse(id).expect("binding id")
}

/// Sends `req` through `router`, returning the status and the JSON body
/// (`Value::Null` when the body is empty or not JSON).
pub async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.expect("router");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}
