//! Helpers for the integration and end-to-end tests: a whole broker in
//! memory ([`test_broker`]); a real laptop-mode broker in a temporary state
//! directory, requests through its Router, polling, and a guard that stops
//! every cache process the test started, even when the test fails.

pub mod clients;
pub mod laptop_osb;
pub mod test_broker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use broker_core::domain::RotationPolicy;
use broker_http::BasicAuth;
use broker_laptop::{Laptop, LaptopConfig};
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt;

pub const USER: &str = "broker";
pub const PASS: &str = "local-events-only";

/// A laptop broker with its worker running, in its own state directory.
pub struct LocalBroker {
    pub laptop: Laptop,
    /// What it was opened with (`broker_laptop::rotate` takes it, as the
    /// `broker-api rotate` command does).
    pub config: LaptopConfig,
    pub state: PathBuf,
    worker: broker_laptop::WorkerHandle,
    _dir: Option<tempfile::TempDir>,
}

impl LocalBroker {
    pub async fn start() -> LocalBroker {
        LocalBroker::start_with_rotation(RotationPolicy::default()).await
    }

    /// A broker in a new state directory whose rotations follow `rotation`.
    pub async fn start_with_rotation(rotation: RotationPolicy) -> LocalBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().to_path_buf();
        let mut b = LocalBroker::open_with(state, rotation).await;
        b._dir = Some(dir);
        b
    }

    /// Opens (or re-opens, after a "restart") the broker on `state`.
    pub async fn open(state: PathBuf) -> LocalBroker {
        LocalBroker::open_with(state, RotationPolicy::default()).await
    }

    async fn open_with(state: PathBuf, rotation: RotationPolicy) -> LocalBroker {
        let config = LaptopConfig {
            cache_tls: true,
            port: 0,
            state_dir: state.clone(),
            credentials: Some(BasicAuth { username: USER.into(), password: SecretString::from(PASS) }),
            catalog_file: None,
            poll_delay_secs: 1,
            rotation,
        };
        let laptop = Laptop::open(&config).await.expect("laptop mode starts");
        let worker = laptop.spawn_worker();
        LocalBroker { laptop, config, state, worker, _dir: None }
    }

    /// Stops the API and worker (the cache processes keep running, as when
    /// the broker process ends) and hands back the state directory.
    pub fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.worker.abort();
        (self.state.clone(), self._dir.take())
    }

    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as("2.17", method, uri, body).await
    }

    /// `GET /metrics`, as a Prometheus scraper with the broker's
    /// credentials sees it.
    pub async fn metrics_text(&self) -> String {
        let req = Request::builder()
            .uri("/metrics")
            .header("authorization", basic(USER, PASS))
            .body(Body::empty())
            .unwrap();
        let resp = self.laptop.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// A request as a platform speaking OSB API `version` sends it.
    pub async fn call_as(
        &self,
        version: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", basic(USER, PASS))
            .header("x-broker-api-version", version);
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = self.laptop.router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Polls `last_operation` at `uri` until it is no longer in progress.
    pub async fn wait_for(&self, uri: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.call("GET", uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            if body["state"] != "in progress" {
                return body;
            }
            assert!(Instant::now() < deadline, "{uri} still in progress: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// (service id, plan id) of `service`/`plan` from the live catalog.
    pub async fn plan(&self, service: &str, plan: &str) -> (String, String) {
        let (_, catalog) = self.call("GET", "/v2/catalog", None).await;
        let s = catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap();
        let p = s["plans"].as_array().unwrap().iter().find(|p| p["name"] == plan).unwrap();
        (s["id"].as_str().unwrap().into(), p["id"].as_str().unwrap().into())
    }
}

/// Stops every process whose command line names `dir` (the cache processes
/// of a test's state directory), whatever happened in the test.
pub struct ProcessGuard(pub PathBuf);

/// Kills every process started under a state dir: those whose command line
/// names it, and those working in it (Redis OSS and Valkey rename their
/// process title to their address, so only their working directory, a
/// cache's data directory, still says where they belong).
impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill").arg("-9").arg("-f").arg(self.0.as_os_str()).status();
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for entry in procs.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else { continue };
            // A deleted directory reads back as "<path> (deleted)": its last
            // component changes, the state dir's stay.
            if cwd.starts_with(&self.0) && pid != std::process::id() as i32 {
                let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// AWS mode's backing resources on a fresh moto server: the table, the job
/// queue (and its dead-letter queue, after `max_receive` receives) and the
/// broker's credentials secret (`USER`/`PASS`); and the settings the
/// functions read, from the test environment plus `extra`.
pub struct MotoBroker {
    pub moto: broker_testing::MotoServer,
    /// Fault-free clients on moto.
    pub sdk: aws_config::SdkConfig,
    pub settings: broker_aws::config::AwsSettings,
    pub queue_url: String,
}

impl MotoBroker {
    pub async fn start(max_receive: u32, extra: &[(&'static str, &str)]) -> MotoBroker {
        use std::collections::HashMap;
        let moto = broker_testing::MotoServer::start();
        let sdk = broker_aws::sdk_config_for_endpoint(&moto.endpoint).await;
        broker_aws::dynamodb::create_table(&aws_sdk_dynamodb::Client::new(&sdk), "osb-broker").await.unwrap();
        let (queue_url, _dlq) =
            broker_aws::sqs::create_queue_with_dlq(&aws_sdk_sqs::Client::new(&sdk), "osb-jobs", max_receive)
                .await
                .unwrap();
        let secret = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name("osb/broker-credentials")
            .secret_string(serde_json::json!({"username": USER, "password": PASS}).to_string())
            .send()
            .await
            .unwrap();
        let mut env: HashMap<&str, String> = HashMap::from([
            ("TABLE_NAME", "osb-broker".to_string()),
            ("QUEUE_URL", queue_url.clone()),
            ("BROKER_CREDENTIALS_SECRET_ARN", secret.arn().unwrap().to_string()),
            ("NAME_PREFIX", "osb".to_string()),
            ("CACHE_SUBNET_GROUP", "osb-cache".to_string()),
            ("MEMCACHED_SUBNET_GROUP", "osb-memcached".to_string()),
            ("CACHE_SECURITY_GROUP_IDS", "sg-0123456789abcdef0".to_string()),
            ("POLL_DELAY_SECS", "1".to_string()),
        ]);
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let settings = broker_aws::config::AwsSettings::from_lookup(|k| env.get(k).cloned()).unwrap();
        MotoBroker { moto, sdk, settings, queue_url }
    }
}

/// One request through `router` as a platform sends it (basic auth as
/// `USER`/`PASS`, OSB 2.17, a JSON body), answered as status and JSON.
pub async fn call_router(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", basic(USER, PASS))
        .header("x-broker-api-version", "2.17")
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The SQS event Lambda's event source makes of received `messages`.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    for m in messages {
        let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
        record.message_id = m.message_id.clone();
        record.receipt_handle = m.receipt_handle.clone();
        record.body = m.body.clone();
        event.records.push(record);
    }
    event
}

/// Up to 10 messages of the job queue, as Lambda's event source polls them
/// (waiting up to a second), on fault-free clients.
pub async fn receive_jobs(sdk: &aws_config::SdkConfig, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let out = aws_sdk_sqs::Client::new(sdk)
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    out.messages.unwrap_or_default()
}

/// The ElastiCache users under the prefix `osb` that are not being deleted,
/// read on fault-free clients.
pub async fn live_users(sdk: &aws_config::SdkConfig) -> std::collections::BTreeSet<String> {
    let out = aws_sdk_elasticache::Client::new(sdk).describe_users().send().await.unwrap();
    out.users()
        .iter()
        .filter(|u| u.status() != Some("deleting"))
        .filter_map(|u| u.user_id().map(str::to_string))
        .filter(|id| id.starts_with("osb-"))
        .collect()
}
