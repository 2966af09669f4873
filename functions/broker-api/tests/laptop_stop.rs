//! The broker-api binary in laptop mode, as a developer runs it: Ctrl-C or
//! SIGTERM stops the cache processes it started (their data kept), the
//! next start brings them back with the same credentials (on a new port if
//! the old one was taken meanwhile, which the fetched binding then names),
//! `broker-api status` says what runs, `--keep-caches` and a crash leave the
//! caches running for the next start to adopt.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker_testing::processes_under;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

const USER: &str = "dev";
const PASS: &str = "laptop-stop-test-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// The broker-api binary on a state directory and port, killed (with every
/// process of its state directory) when dropped, whatever the test did.
struct Broker {
    state: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn command(state: &Path, port: u16) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker-api"));
        cmd.env_remove("BROKER_BACKEND")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("BROKER_CACHE_TLS")
            .env("PORT", port.to_string())
            .env("BROKER_STATE_DIR", state)
            .env("BROKER_USERNAME", USER)
            .env("BROKER_PASSWORD", PASS)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    fn start(state: &Path, port: u16, args: &[&str]) -> Broker {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.parent().unwrap().join("broker.log"))
            .unwrap();
        let child = Broker::command(state, port)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("broker-api starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !port_open(port) {
            assert!(Instant::now() < deadline, "broker-api did not listen on {port}: {}", log_of(state));
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { state: state.to_path_buf(), port, child: Some(child) }
    }

    /// Sends `signal` and waits for the process to end; its exit status.
    fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent =
            Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker-api did not stop on {signal}: {}",
                log_of(&self.state)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        use base64::Engine as _;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
        let request = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("authorization", format!("Basic {auth}"))
            .header("x-broker-api-version", "2.17")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn wait_for(&self, uri: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, op) = self.call("GET", uri, None).await;
            assert_eq!(status, 200, "{uri}: {op}");
            if op["state"] != "in progress" {
                return op;
            }
            assert!(Instant::now() < deadline, "{uri}: {op}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills whatever a failed test left of a state directory.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = Command::new("pkill").arg("-9").arg("-f").arg(self.0.as_os_str()).status();
        for p in processes_under(&self.0) {
            let pid = p.split(':').next().unwrap_or_default().trim_start_matches("/proc/").to_string();
            let _ = Command::new("kill").arg("-9").arg(pid).status();
        }
    }
}

fn log_of(state: &Path) -> String {
    std::fs::read_to_string(state.parent().unwrap().join("broker.log")).unwrap_or_default()
}

fn status_output(state: &Path, port: u16) -> String {
    let out = Broker::command(state, port).arg("status").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The status line of `instance`, split into its columns.
fn status_of(output: &str, instance: &str) -> Vec<String> {
    let line = output.lines().find(|l| l.starts_with(instance)).unwrap_or_else(|| panic!("{output}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// A client made from a binding's credentials as an app makes it: over TLS
/// when the uri is `rediss://` (laptop caches speak TLS only by default),
/// trusting only the CA the credentials carry.
fn client(credentials: &Value) -> redis::RedisResult<redis::Client> {
    let uri = credentials["uri"].as_str().expect("the credentials have a uri");
    if uri.starts_with("rediss://") {
        let pem = credentials["ca_certificate"].as_str().expect("TLS credentials carry the CA");
        let certificates =
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem.as_bytes().to_vec()) };
        redis::Client::build_with_tls(uri, certificates)
    } else {
        redis::Client::open(uri)
    }
}

async fn get(credentials: &Value, key: &str) -> redis::RedisResult<Option<String>> {
    let client = client(credentials)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    redis::cmd("GET").arg(key).query_async(&mut con).await
}

async fn set(credentials: &Value, key: &str, value: &str) -> redis::RedisResult<()> {
    let client = client(credentials)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET").arg(key).arg(value).query_async(&mut con).await
}

/// Provisions a Redis OSS instance and binds it; the binding's credentials.
async fn provision_and_bind(b: &Broker, instance: &str) -> Value {
    let (_, catalog) = b.call("GET", "/v2/catalog", None).await;
    let service =
        catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == "elasticache-redis").unwrap();
    let plan = service["plans"].as_array().unwrap().iter().find(|p| p["name"] == "dev").unwrap();
    let ids = json!({"service_id": service["id"], "plan_id": plan["id"]});
    let mut body = ids.clone();
    body["organization_guid"] = json!("org");
    body["space_guid"] = json!("space");
    let iuri = format!("/v2/service_instances/{instance}");
    let (status, reply) = b.call("PUT", &format!("{iuri}?accepts_incomplete=true"), Some(body)).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(b.wait_for(&format!("{iuri}/last_operation")).await["state"], "succeeded");
    let (status, bound) = b.call("PUT", &format!("{iuri}/service_bindings/app"), Some(ids)).await;
    assert_eq!(status, 201, "{bound}");
    bound["credentials"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_caches_and_the_next_start_brings_them_back_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _leftovers = Leftovers(state.clone());
    let caches = state.join("caches");
    let port = free_port();
    let mut b = Broker::start(&state, port, &[]);
    let credentials = provision_and_bind(&b, "keeps-data").await;
    assert!(credentials["uri"].as_str().unwrap().starts_with("rediss://"), "TLS by default: {credentials}");
    set(&credentials, "greeting", "written before the stop").await.unwrap();
    let cache_port = credentials["port"].as_u64().unwrap() as u16;

    // status while it runs: plan, state, port, process, up.
    let running = status_of(&status_output(&state, port), "keeps-data");
    assert_eq!(running[1..4], ["elasticache-redis/dev", "ready", &cache_port.to_string()]);
    assert!(running[4].parse::<u32>().is_ok() && running[5] == "yes", "{running:?}");

    // SIGTERM: exit 0, no process of the state directory left.
    let exit = b.signal("TERM");
    assert!(exit.success(), "{exit:?}: {}", log_of(&state));
    assert!(processes_under(&caches).is_empty(), "{:#?}", processes_under(&caches));
    assert!(log_of(&state).contains("cache stopped"), "one line per cache: {}", log_of(&state));
    let stopped = status_of(&status_output(&state, port), "keeps-data");
    assert_eq!((stopped[4].as_str(), stopped[5].as_str()), ("-", "no"), "{stopped:?}");

    // The next start brings it back on its port, with its data: the same
    // credentials read the key.
    let mut b = Broker::start(&state, port, &[]);
    let (status, fetched) =
        b.call("GET", "/v2/service_instances/keeps-data/service_bindings/app", None).await;
    assert_eq!((status, &fetched["credentials"]), (200, &credentials));
    assert_eq!(get(&credentials, "greeting").await.unwrap().as_deref(), Some("written before the stop"));

    // Its port taken while the broker is down: it comes back on another,
    // and the fetched binding names it.
    assert!(b.signal("INT").success());
    let squatter = std::net::TcpListener::bind(("127.0.0.1", cache_port)).unwrap();
    let b = Broker::start(&state, port, &[]);
    let (status, fetched) =
        b.call("GET", "/v2/service_instances/keeps-data/service_bindings/app", None).await;
    assert_eq!(status, 200, "{fetched}");
    let moved = fetched["credentials"]["port"].as_u64().unwrap() as u16;
    assert_ne!(moved, cache_port, "{fetched}");
    let new_uri = fetched["credentials"]["uri"].as_str().unwrap();
    assert!(new_uri.ends_with(&format!(":{moved}")) || new_uri.contains(&format!(":{moved}/")), "{new_uri}");
    assert_eq!(
        get(&fetched["credentials"], "greeting").await.unwrap().as_deref(),
        Some("written before the stop")
    );
    drop(squatter);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_caches_and_a_crash_leave_the_caches_running_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _leftovers = Leftovers(state.clone());
    let caches = state.join("caches");
    let port = free_port();

    // --keep-caches: SIGTERM ends the broker, not its cache.
    let mut b = Broker::start(&state, port, &["--keep-caches"]);
    let credentials = provision_and_bind(&b, "outlives").await;
    set(&credentials, "k", "v").await.unwrap();
    let pid = status_of(&status_output(&state, port), "outlives")[4].clone();
    assert!(b.signal("TERM").success());
    assert_eq!(processes_under(&caches).len(), 1, "the cache runs on");
    assert_eq!(get(&credentials, "k").await.unwrap().as_deref(), Some("v"));

    // A crash (SIGKILL) leaves it too; the next start adopts it as it is.
    let mut b = Broker::start(&state, port, &[]);
    assert!(!b.signal("KILL").success());
    assert_eq!(processes_under(&caches).len(), 1, "a crash stops nothing");
    let mut b = Broker::start(&state, port, &[]);
    assert_eq!(status_of(&status_output(&state, port), "outlives")[4], pid, "adopted, not restarted");
    assert_eq!(get(&credentials, "k").await.unwrap().as_deref(), Some("v"));
    assert!(b.signal("TERM").success());
    assert!(processes_under(&caches).is_empty());
}
