//! A bounded load test of laptop mode: 50 clients at once, each running the
//! whole life of an instance (provision and poll, bind, use the cache with
//! the credentials, fetch the binding, unbind, deprovision and poll) a fixed
//! number of times, over Redis OSS, Valkey and Memcached with real server
//! processes. No request may fail or answer a 5xx, and nothing may be left:
//! no instance directory, no cache process. The latency of each route (p50
//! and p99, through the broker's Router in the test process) is printed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use broker_testing::processes_under;
use broker_tests::clients::{memcached_session, redis_client};
use broker_tests::{LocalBroker, ProcessGuard};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CLIENTS: usize = 50;
const ROUNDS: usize = 2;
const PLANS: [(&str, &str); 3] =
    [("elasticache-redis", "dev"), ("elasticache-valkey", "dev"), ("elasticache-memcached", "dev")];

/// Latencies by route, and every answer that was not the one expected.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    failures: Vec<String>,
}

struct Client {
    broker: Arc<LocalBroker>,
    tally: Arc<Mutex<Tally>>,
}

impl Client {
    /// One request on `route`, timed; an answer other than `expected` is a
    /// failure.
    async fn call(
        &self,
        route: &'static str,
        method: &str,
        uri: &str,
        body: Option<Value>,
        expected: &[StatusCode],
    ) -> Value {
        let started = Instant::now();
        let (status, reply) = self.broker.call(method, uri, body).await;
        let took = started.elapsed();
        let mut tally = self.tally.lock().unwrap();
        tally.latencies.entry(route).or_default().push(took);
        if !expected.contains(&status) {
            tally.failures.push(format!("{route} {uri}: {status} {reply}"));
        }
        reply
    }

    async fn poll(&self, uri: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let op = self.call("GET last_operation", "GET", uri, None, &[StatusCode::OK]).await;
            if op["state"] != "in progress" || Instant::now() > deadline {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn life(&self, client: usize, round: usize) -> Result<(), String> {
        let (service, plan) = PLANS[(client + round) % PLANS.len()];
        let (service_id, plan_id) = self.broker.plan(service, plan).await;
        let instance = format!("load-{client:02}-{round}");
        let iuri = format!("/v2/service_instances/{instance}");
        let buri = format!("{iuri}/service_bindings/app-{client:02}-{round}");
        let ids = format!("service_id={service_id}&plan_id={plan_id}");

        let body = json!({"service_id": service_id, "plan_id": plan_id,
                          "organization_guid": "org-load", "space_guid": "space-load"});
        self.call(
            "PUT instance",
            "PUT",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(body),
            &[StatusCode::ACCEPTED],
        )
        .await;
        let op = self.poll(&format!("{iuri}/last_operation")).await;
        if op["state"] != "succeeded" {
            return Err(format!("provision {instance}: {op}"));
        }

        let body = json!({"service_id": service_id, "plan_id": plan_id, "app_guid": "app"});
        let bound = self
            .call(
                "PUT binding",
                "PUT",
                &format!("{buri}?accepts_incomplete=true"),
                Some(body),
                &[StatusCode::CREATED],
            )
            .await;
        let credentials = &bound["credentials"];
        use_cache(service, credentials).await.map_err(|e| format!("using {instance}: {e}"))?;
        let fetched = self.call("GET binding", "GET", &buri, None, &[StatusCode::OK]).await;
        if fetched["credentials"] != *credentials {
            return Err(format!("fetched credentials of {instance} differ from the bind's"));
        }
        self.call(
            "DELETE binding",
            "DELETE",
            &format!("{buri}?accepts_incomplete=true&{ids}"),
            None,
            &[StatusCode::OK],
        )
        .await;
        self.call(
            "DELETE instance",
            "DELETE",
            &format!("{iuri}?accepts_incomplete=true&{ids}"),
            None,
            &[StatusCode::ACCEPTED],
        )
        .await;
        let op = self.poll(&format!("{iuri}/last_operation")).await;
        if op["state"] != "succeeded" {
            return Err(format!("deprovision {instance}: {op}"));
        }
        Ok(())
    }
}

/// SET and GET a key with the binding's credentials (over TLS, trusting
/// their CA, when they say so).
async fn use_cache(service: &str, credentials: &Value) -> Result<(), String> {
    if service == "elasticache-memcached" {
        let host_port =
            format!("{}:{}", credentials["host"].as_str().unwrap_or_default(), credentials["port"]);
        let session = memcached_session(credentials, &host_port).await.map_err(|e| e.to_string())?;
        let (r, mut w) = tokio::io::split(session);
        let mut r = BufReader::new(r);
        w.write_all(b"set k 0 0 2\r\nok\r\nget k\r\n").await.map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            r.read_line(&mut line).await.map_err(|e| e.to_string())?;
            lines.push(line.trim().to_string());
        }
        return if lines == ["STORED", "VALUE k 0 2", "ok"] { Ok(()) } else { Err(format!("{lines:?}")) };
    }
    let client = redis_client(credentials).map_err(|e| e.to_string())?;
    let mut con = broker_tests::clients::connection(&client).await.map_err(|e| e.to_string())?;
    redis::cmd("SET").arg("k").arg("ok").query_async::<()>(&mut con).await.map_err(|e| e.to_string())?;
    let got: String = redis::cmd("GET").arg("k").query_async(&mut con).await.map_err(|e| e.to_string())?;
    if got == "ok" { Ok(()) } else { Err(got) }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_provision_bind_use_unbind_and_deprovision_without_a_failure() {
    let broker = Arc::new(LocalBroker::start().await);
    let _guard = ProcessGuard(broker.state.clone());
    let tally = Arc::new(Mutex::new(Tally::default()));

    // The check at the end sees a cache's process: one made before the load
    // shows up, and is gone once deprovisioned.
    let caches = broker.state.join("caches");
    let witness = Client { broker: broker.clone(), tally: Arc::new(Mutex::new(Tally::default())) };
    let (service_id, plan_id) = broker.plan("elasticache-redis", "dev").await;
    let body = json!({"service_id": service_id, "plan_id": plan_id,
                      "organization_guid": "org-load", "space_guid": "space-load"});
    witness
        .call(
            "PUT instance",
            "PUT",
            "/v2/service_instances/witness?accepts_incomplete=true",
            Some(body),
            &[StatusCode::ACCEPTED],
        )
        .await;
    assert_eq!(witness.poll("/v2/service_instances/witness/last_operation").await["state"], "succeeded");
    assert_eq!(processes_under(&caches).len(), 1, "the witness's server is seen");
    let uri = format!(
        "/v2/service_instances/witness?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}"
    );
    witness.call("DELETE instance", "DELETE", &uri, None, &[StatusCode::ACCEPTED]).await;
    assert_eq!(witness.poll("/v2/service_instances/witness/last_operation").await["state"], "succeeded");
    assert!(witness.tally.lock().unwrap().failures.is_empty());

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let c = Client { broker: broker.clone(), tally: tally.clone() };
        clients.spawn(async move {
            for round in 0..ROUNDS {
                c.life(client, round).await?;
            }
            Ok::<(), String>(())
        });
    }
    let mut errors = Vec::new();
    while let Some(done) = clients.join_next().await {
        if let Err(e) = done.expect("a client panicked") {
            errors.push(e);
        }
    }
    let took = started.elapsed();

    let tally = tally.lock().unwrap();
    let requests: usize = tally.latencies.values().map(Vec::len).sum();
    println!(
        "load: {CLIENTS} clients x {ROUNDS} lives = {} instances in {:.1} s, {requests} requests",
        CLIENTS * ROUNDS,
        took.as_secs_f64()
    );
    println!("load: {:<18} {:>6} {:>9} {:>9}", "route", "count", "p50 ms", "p99 ms");
    for (route, latencies) in &tally.latencies {
        let mut sorted = latencies.clone();
        sorted.sort();
        println!(
            "load: {route:<18} {:>6} {:>9.2} {:>9.2}",
            sorted.len(),
            percentile(&sorted, 50.0).as_secs_f64() * 1e3,
            percentile(&sorted, 99.0).as_secs_f64() * 1e3
        );
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(tally.failures.is_empty(), "{} failed requests: {:#?}", tally.failures.len(), tally.failures);

    // Nothing left: no instance directory, no process of the state dir.
    // `_tls` is not an instance's: it holds the laptop CA and the servers'
    // certificate, which outlive every cache (credentials carry the CA).
    let left: Vec<_> = std::fs::read_dir(&caches)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_none_or(|name| name != "_tls"))
        .collect();
    assert!(left.is_empty(), "directories left: {left:?}");
    let running = processes_under(&caches);
    assert!(running.is_empty(), "processes left: {running:#?}");
}
