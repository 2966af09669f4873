//! The chaos test of AWS mode: the real broker-api Router and the
//! provisioner's SQS handler against moto (and the aws-smithy-mocks
//! stand-ins for what moto lacks), with instances and bindings of every
//! engine, while
//! - every SQS message is delivered twice, and some of the second copies
//!   only after later messages (out of order);
//! - the worker is aborted once at every step boundary it reaches: a record
//!   write fails after the step's AWS call, and an enqueue fails after the
//!   record write before it;
//! - 20% of the AWS requests of both functions are answered with throttling
//!   or a 503, half of them after AWS has acted on the request;
//! - when work is left with no job on its way (an enqueue the API could not
//!   make, for an operation no platform polls), a reconcile pass runs as
//!   the schedule would once the operation has stalled.
//!
//! At the end every operation has succeeded, each AWS resource exists once,
//! deprovisioned instances left nothing, and every binding's credentials are
//! the ones Secrets Manager holds. The figures are printed (run with
//! `--nocapture`, or read them in the test's output on failure). The seed
//! is `CHAOS_SEED` (a fixed one by default, so a failure can be replayed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::http::StatusCode;
use broker_aws::dynamodb::DynamoStore;
use broker_core::catalog::CatalogFile;
use broker_core::domain::{BindingState, InstanceState, OperationState};
use broker_core::ports::StateStore;
use broker_core::services::{Adapters, Services};
use broker_lambda::{AwsParts, ClientOverrides, service_settings};
use broker_testing::aws::{
    FakeAuthTokens, FakeRbac, GoneGroups, MemcachedEndpoints, moto_elasticache_config,
};
use broker_testing::chaos::{AbortingQueue, AbortingStore, Aborts, FaultyHttp, HttpFaults};
use broker_testing::cloudwatch::FakeCloudWatch;
use broker_tests::MotoBroker;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The share of AWS requests answered with a fault.
const FAULT_RATE: f64 = 0.2;
/// What a platform does with a 5xx: it asks again, this many times at most.
const PLATFORM_ATTEMPTS: usize = 12;

/// The instances: every engine, every kind of cache (single node,
/// replicated, cluster mode, Memcached), with and without final snapshots;
/// each twice, so one of each is deprovisioned and one lives on.
const PLANS: &[(&str, &str, usize)] = &[
    ("elasticache-redis", "dev", 3),
    ("elasticache-redis", "ha-3", 3),
    ("elasticache-redis", "cluster-3x2", 3),
    ("elasticache-valkey", "dev", 3),
    ("elasticache-valkey", "staging", 3),
    ("elasticache-memcached", "dev", 2),
];

struct World {
    _moto: broker_testing::MotoServer,
    /// Fault-free clients: what the test reads AWS with.
    sdk: aws_config::SdkConfig,
    store: DynamoStore,
    parts: AwsParts,
    /// broker-api, on the faulty clients.
    router: axum::Router,
    /// The same broker on fault-free clients, for the final reads.
    clean_router: axum::Router,
    /// The provisioner, on the faulty clients and the aborting store and queue.
    worker: Arc<broker_core::worker::Worker>,
    queue_url: String,
    gone: GoneGroups,
    faults: Arc<HttpFaults>,
    aborts: Arc<Aborts>,
    rng: StdRng,
    /// Second copies held back, delivered after a later batch.
    held: Vec<SqsMessage>,
    figures: Figures,
    /// After this long without a record change an operation's job is
    /// taken for lost (AWS mode's `stall_secs`).
    stall_secs: i64,
}

#[derive(Debug, Default)]
struct Figures {
    batches: u64,
    deliveries: u64,
    duplicates: u64,
    out_of_order: u64,
    redelivered_after_failure: u64,
    /// Lost jobs a played reconcile pass enqueued again.
    reconciled: u64,
    platform_retries: u64,
    api_status: BTreeMap<u16, u64>,
}

fn far_deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(900)
}

async fn start(seed: u64) -> World {
    let MotoBroker { moto, sdk, settings, queue_url } = MotoBroker::start(1000, &[]).await;

    // The functions' clients: every request through the faulty HTTP client,
    // with the SDK's standard retries (3 attempts) on a short back-off so
    // the test does not sleep through them.
    let faults = HttpFaults::new(FAULT_RATE, seed);
    let faulty = sdk
        .to_builder()
        .http_client(FaultyHttp::wrap(aws_smithy_http_client::Builder::new().build_http(), faults.clone()))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5)),
        )
        .build();
    let rbac = FakeRbac::new();
    let cloudwatch = FakeCloudWatch::new();
    let tokens = FakeAuthTokens::new();
    let gone: GoneGroups = Arc::default();
    let elasticache = |sdk: &aws_config::SdkConfig| {
        aws_sdk_elasticache::Client::from_conf(
            moto_elasticache_config(sdk, gone.clone(), &rbac, &tokens)
                .interceptor(MemcachedEndpoints)
                .build(),
        )
    };
    let overrides = |sdk: &aws_config::SdkConfig| ClientOverrides {
        elasticache: Some(elasticache(sdk)),
        elasticache_rbac: Some(rbac.client.clone()),
        cloudwatch: Some(cloudwatch.client.clone()),
        secretsmanager: None,
    };
    let parts = AwsParts::new(&settings, &faulty, overrides(&faulty));
    parts.seed_catalog(&CatalogFile::builtin()).await.unwrap();
    let router = parts.router(&settings).await.unwrap();
    let clean = AwsParts::new(&settings, &sdk, overrides(&sdk));
    let clean_router = clean.router(&settings).await.unwrap();

    let aborts = Aborts::new();
    let mut adapters: Adapters = parts.adapters();
    adapters.store = Arc::new(AbortingStore::new(parts.store.clone(), aborts.clone()));
    adapters.queue = Arc::new(AbortingQueue::new(parts.queue.clone(), parts.store.clone(), aborts.clone()));
    let worker = Services::new(&adapters, &service_settings(&settings)).worker;

    World {
        _moto: moto,
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "osb-broker"),
        sdk,
        parts,
        router,
        clean_router,
        worker,
        queue_url,
        gone,
        faults,
        aborts,
        rng: StdRng::seed_from_u64(seed),
        held: Vec::new(),
        figures: Figures::default(),
        stall_secs: service_settings(&settings).stall_secs,
    }
}

impl World {
    /// A request as a platform makes it: a 5xx is asked again (OSB
    /// platforms retry, and every broker route is idempotent).
    async fn call(&mut self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        for attempt in 1..=PLATFORM_ATTEMPTS {
            let (status, reply) = broker_tests::call_router(&self.router, method, uri, body.as_ref()).await;
            *self.figures.api_status.entry(status.as_u16()).or_default() += 1;
            if !status.is_server_error() || attempt == PLATFORM_ATTEMPTS {
                return (status, reply);
            }
            self.figures.platform_retries += 1;
        }
        unreachable!()
    }

    async fn clean_get(&self, uri: &str) -> (StatusCode, Value) {
        broker_tests::call_router(&self.clean_router, "GET", uri, None).await
    }

    /// One round of the event source: receive a batch, hand it to the
    /// handler shuffled, then hand every message over again, some at once in
    /// reverse order and some after the next batch; delete what the first
    /// delivery did not report as failed, make the rest visible again at
    /// once (SQS would after the visibility timeout). Returns how many
    /// messages were received.
    async fn pump(&mut self) -> usize {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let messages = broker_tests::receive_jobs(&self.sdk, &self.queue_url).await;
        let mut records = broker_tests::sqs_event(&messages).records;
        records.shuffle(&mut self.rng);

        let failed = self.deliver(records.clone()).await;
        // The stale copies held back from the previous round come after this
        // batch: out of order.
        let stale = std::mem::take(&mut self.held);
        self.figures.out_of_order += stale.len() as u64;
        self.figures.duplicates += stale.len() as u64;
        self.deliver(stale).await;
        let mut again = Vec::new();
        for record in records.into_iter().rev() {
            if self.rng.random_bool(0.3) {
                self.held.push(record);
            } else {
                again.push(record);
            }
        }
        self.figures.duplicates += again.len() as u64;
        self.deliver(again).await;

        for m in &messages {
            let id = m.message_id.clone().unwrap_or_default();
            let receipt = m.receipt_handle.clone().unwrap();
            if failed.contains(&id) {
                self.figures.redelivered_after_failure += 1;
                sqs.change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
            } else {
                sqs.delete_message().queue_url(&self.queue_url).receipt_handle(receipt).send().await.unwrap();
            }
        }
        messages.len()
    }

    /// One invocation of the provisioner with `records`; the ids it
    /// reported as failed.
    async fn deliver(&mut self, records: Vec<SqsMessage>) -> BTreeSet<String> {
        if records.is_empty() {
            return BTreeSet::new();
        }
        self.figures.batches += 1;
        self.figures.deliveries += records.len() as u64;
        let mut event = SqsEvent::default();
        event.records = records;
        let response = broker_core::invocation::handle_batch(&self.worker, event, far_deadline()).await;
        response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
    }

    /// Plays AWS finishing the deletions moto never finishes.
    async fn finish_moto_deletions(&self) {
        let client = aws_sdk_elasticache::Client::new(&self.sdk);
        let groups = client.describe_replication_groups().send().await.unwrap();
        let clusters = client.describe_cache_clusters().send().await.unwrap();
        let mut gone = self.gone.lock().unwrap();
        for g in groups.replication_groups() {
            if g.status() == Some("deleting") {
                gone.insert(g.replication_group_id().unwrap_or_default().to_string());
            }
        }
        for c in clusters.cache_clusters() {
            if c.cache_cluster_status() == Some("deleting") && c.replication_group_id().is_none() {
                gone.insert(c.cache_cluster_id().unwrap_or_default().to_string());
            }
        }
    }

    /// Runs the provisioner until no operation is in progress and the queue
    /// is empty. Fails if work stays in progress with nothing left to carry
    /// it on.
    async fn settle(&mut self) {
        let started = Instant::now();
        let mut idle_rounds = 0;
        loop {
            self.finish_moto_deletions().await;
            let received = self.pump().await;
            let running = self.store.operations_in_progress().await.unwrap();
            if received == 0 && self.held.is_empty() {
                if running.is_empty() {
                    return;
                }
                idle_rounds += 1;
                // A job whose enqueue failed in the API (a bind's spare
                // refill, which no platform polls) is the reconcile
                // schedule's to find: play a pass as it runs once the
                // operation has stalled.
                if idle_rounds == 5 {
                    let later = broker_core::domain::now() + self.stall_secs + 1;
                    if let Ok(report) = self.parts.reconciler.run(later).await {
                        self.figures.reconciled += report.stalled as u64;
                    }
                }
                assert!(
                    idle_rounds < 20,
                    "operations in progress with no job on its way: {:#?}",
                    running.iter().map(|o| (o.kind.as_str(), o.step, &o.instance_id)).collect::<Vec<_>>()
                );
            } else {
                idle_rounds = 0;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "still in progress after 10 minutes: {running:#?}"
            );
        }
    }
}

struct Made {
    instance: String,
    service_id: String,
    plan_id: String,
    bindings: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_mode_survives_duplicates_aborts_and_faults_and_leaves_each_resource_once() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_202);
    let mut w = start(seed).await;
    let (_, catalog) = w.clean_get("/v2/catalog").await;
    let plan_ids = |service: &str, plan: &str| -> (String, String) {
        let s = catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap();
        let p = s["plans"].as_array().unwrap().iter().find(|p| p["name"] == plan).unwrap();
        (s["id"].as_str().unwrap().into(), p["id"].as_str().unwrap().into())
    };
    w.faults.set_on(true);

    // Provision two instances of every plan, all at once.
    let mut made = Vec::new();
    for (n, (service, plan, bindings)) in PLANS.iter().chain(PLANS).enumerate() {
        let (service_id, plan_id) = plan_ids(service, plan);
        let instance = format!("c4a05000-0000-4000-8000-{n:012}");
        let (status, body) = w
            .call(
                "PUT",
                &format!("/v2/service_instances/{instance}?accepts_incomplete=true"),
                Some(json!({
                    "service_id": service_id, "plan_id": plan_id,
                    "organization_guid": "org-chaos", "space_guid": format!("space-{}", n % 3),
                })),
            )
            .await;
        assert!(matches!(status.as_u16(), 200..=202), "provision {instance}: {status} {body}");
        let bindings = (0..*bindings).map(|b| format!("b-{n}-{b}")).collect();
        made.push(Made { instance, service_id, plan_id, bindings });
    }
    w.settle().await;

    // Bind: the first of each instance as an OSB 2.13 platform (no
    // accepts_incomplete), the others as platforms that poll.
    for m in &made {
        for (i, binding) in m.bindings.iter().enumerate() {
            let query = if i == 0 { "" } else { "?accepts_incomplete=true" };
            let uri = format!("/v2/service_instances/{}/service_bindings/{binding}{query}", m.instance);
            let body = json!({"service_id": m.service_id, "plan_id": m.plan_id});
            let (status, reply) = w.call("PUT", &uri, Some(body)).await;
            assert!(matches!(status.as_u16(), 200..=202), "bind {binding}: {status} {reply}");
        }
    }
    w.settle().await;

    // Unbind the last binding of every instance; deprovision the second
    // instance of every plan (with its remaining bindings).
    let half = made.len() / 2;
    for (n, m) in made.iter_mut().enumerate() {
        let ids = format!("service_id={}&plan_id={}", m.service_id, m.plan_id);
        let last = m.bindings.pop().unwrap();
        let uri = format!(
            "/v2/service_instances/{}/service_bindings/{last}?accepts_incomplete=true&{ids}",
            m.instance
        );
        let (status, reply) = w.call("DELETE", &uri, None).await;
        assert!(matches!(status.as_u16(), 200 | 202 | 410), "unbind {last}: {status} {reply}");
        if n >= half {
            for binding in std::mem::take(&mut m.bindings) {
                let uri = format!(
                    "/v2/service_instances/{}/service_bindings/{binding}?accepts_incomplete=true&{ids}",
                    m.instance
                );
                let (status, reply) = w.call("DELETE", &uri, None).await;
                assert!(matches!(status.as_u16(), 200 | 202 | 410), "unbind {binding}: {status} {reply}");
            }
        }
    }
    w.settle().await;
    for m in &made[half..] {
        let ids = format!("service_id={}&plan_id={}", m.service_id, m.plan_id);
        let uri = format!("/v2/service_instances/{}?accepts_incomplete=true&{ids}", m.instance);
        let (status, reply) = w.call("DELETE", &uri, None).await;
        assert!(matches!(status.as_u16(), 200 | 202 | 410), "deprovision {}: {status} {reply}", m.instance);
    }
    w.settle().await;
    w.faults.set_on(false);

    // Every operation ended, and succeeded: each instance's and binding's
    // last operation, read through a broker without faults.
    assert!(w.store.operations_in_progress().await.unwrap().is_empty());
    for (n, m) in made.iter().enumerate() {
        let record = w.store.instance(&m.instance).await.unwrap().expect("instance record");
        let want = if n < half { InstanceState::Ready } else { InstanceState::Deleted };
        assert_eq!(record.state, want, "{}", m.instance);
        let op = w.store.operation(&record.last_operation_id).await.unwrap().unwrap();
        assert_eq!(op.state, OperationState::Succeeded, "{}: {op:?}", m.instance);
        for binding in w.store.bindings(&m.instance).await.unwrap() {
            let op = w.store.operation(&binding.last_operation_id).await.unwrap().unwrap();
            assert_eq!(op.state, OperationState::Succeeded, "binding {}: {op:?}", binding.id);
            let live = m.bindings.contains(&binding.id);
            let want = if live { BindingState::Ready } else { BindingState::Deleted };
            assert_eq!(binding.state, want, "binding {}", binding.id);
        }
    }

    // Each AWS resource once, and only those of what lives: the caches, the
    // users (admin, disabled default, spares, bindings) and the secrets.
    let provider = &w.parts.provider;
    let mut want_caches = BTreeSet::new();
    let mut want_users = BTreeSet::new();
    let mut want_secrets = BTreeSet::new();
    for m in &made[..half] {
        let record = w.store.instance(&m.instance).await.unwrap().unwrap();
        want_caches.insert(provider.cache_id(&m.instance));
        if let Some(secret) = &record.admin_secret {
            want_secrets.insert(secret.clone());
        }
        // Redis OSS and Valkey instances (an admin secret) have users.
        let redis_like = record.admin_secret.is_some();
        if redis_like {
            let hash = &provider.cache_id(&m.instance)["osb-".len()..];
            want_users.insert(format!("osb-a-{hash}"));
            want_users.insert(format!("osb-d-{hash}"));
        }
        for spare in &record.spares {
            want_users.insert(provider.binding_user_id(&m.instance, &spare.username));
            if let Some(secret) = &spare.secret {
                want_secrets.insert(secret.clone());
            }
        }
        for binding in w.store.bindings(&m.instance).await.unwrap() {
            if binding.state != BindingState::Ready {
                continue;
            }
            if let (true, Some(username)) = (redis_like, &binding.username) {
                want_users.insert(provider.binding_user_id(&m.instance, username));
            }
            if let Some(secret) = &binding.secret {
                want_secrets.insert(secret.clone());
            }
        }
    }
    let (caches, users, secrets) = w.live_resources().await;
    assert_eq!(caches, want_caches, "caches");
    assert_eq!(users, want_users, "users");
    assert_eq!(secrets, want_secrets, "secrets");

    // Every binding's credentials are the ones Secrets Manager holds.
    let sm = aws_sdk_secretsmanager::Client::new(&w.sdk);
    let mut checked = 0;
    for m in &made[..half] {
        for binding in &m.bindings {
            let uri = format!("/v2/service_instances/{}/service_bindings/{binding}", m.instance);
            let (status, fetched) = w.clean_get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {fetched}");
            let record = w.store.binding(&m.instance, binding).await.unwrap().unwrap();
            let Some(secret) = &record.secret else { continue };
            let held =
                sm.get_secret_value().secret_id(secret).version_stage("AWSCURRENT").send().await.unwrap();
            let held: Value = serde_json::from_str(held.secret_string().unwrap())
                .unwrap_or_else(|_| Value::String(held.secret_string().unwrap().to_string()));
            let password = held.get("password").cloned().unwrap_or(held);
            assert_eq!(fetched["credentials"]["password"], password, "binding {binding}");
            checked += 1;
        }
    }

    let figures = &w.figures;
    let boundaries = w.aborts.boundaries();
    let by_service =
        w.faults.tally().into_iter().fold(BTreeMap::<String, u64>::new(), |mut acc, ((s, _, _, _), n)| {
            *acc.entry(s).or_default() += n;
            acc
        });
    let after =
        w.faults.tally().into_iter().filter(|((_, _, _, after), _)| *after).map(|(_, n)| n).sum::<u64>();
    println!(
        "chaos (seed {seed}): {} instances ({} deprovisioned), {} bindings ({} unbound), {checked} credentials checked",
        made.len(),
        made.len() - half,
        PLANS.iter().map(|p| p.2).sum::<usize>() * 2,
        PLANS.iter().map(|p| p.2).sum::<usize>() * 2
            - made[..half].iter().map(|m| m.bindings.len()).sum::<usize>(),
    );
    println!(
        "chaos: {} AWS requests, {} faults injected ({after} after AWS acted), by service {by_service:?}",
        w.faults.requests(),
        w.faults.total()
    );
    println!(
        "chaos: {} batches, {} deliveries, {} duplicate deliveries ({} out of order), {} redelivered after a failure",
        figures.batches,
        figures.deliveries,
        figures.duplicates,
        figures.out_of_order,
        figures.redelivered_after_failure
    );
    println!("chaos: {} lost jobs enqueued again by a reconcile pass", figures.reconciled);
    println!("chaos: {} worker aborts at step boundaries:", boundaries.len());
    for b in &boundaries {
        println!("  {b}");
    }
    println!("chaos: API answers {:?}, {} platform retries", figures.api_status, figures.platform_retries);

    // Every kind of boundary was hit: before a record write and before an
    // enqueue, in each kind of operation.
    for kind in ["provision", "bind", "unbind", "deprovision", "spares"] {
        assert!(
            boundaries.iter().any(|b| b.starts_with("before write") && b.contains(&format!(" {kind} "))),
            "{kind}: {boundaries:#?}"
        );
        assert!(
            boundaries.iter().any(|b| b.starts_with("before enqueue") && b.contains(&format!(" {kind} "))),
            "{kind}: {boundaries:#?}"
        );
    }
    assert!(w.faults.total() * 10 >= w.faults.requests(), "about a fifth of the requests faulted");
}

impl World {
    /// The caches, users and secrets (by ARN, as the records keep them)
    /// under the broker's prefix that are not being deleted.
    async fn live_resources(&self) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
        let ec = aws_sdk_elasticache::Client::new(&self.sdk);
        let mut caches = BTreeSet::new();
        for g in ec.describe_replication_groups().send().await.unwrap().replication_groups() {
            if g.status() != Some("deleting") {
                assert!(caches.insert(g.replication_group_id().unwrap().to_string()), "twice: {g:?}");
            }
        }
        for c in ec.describe_cache_clusters().send().await.unwrap().cache_clusters() {
            if c.cache_cluster_status() != Some("deleting") && c.replication_group_id().is_none() {
                assert!(caches.insert(c.cache_cluster_id().unwrap().to_string()), "twice: {c:?}");
            }
        }
        let users = broker_tests::live_users(&self.sdk).await;
        let mut secrets = BTreeSet::new();
        let mut token = None;
        loop {
            let out = aws_sdk_secretsmanager::Client::new(&self.sdk)
                .list_secrets()
                .set_next_token(token)
                .max_results(100)
                .send()
                .await
                .unwrap();
            for s in out.secret_list() {
                let name = s.name().unwrap_or_default();
                if s.deleted_date().is_none() && name.starts_with("osb/instances/") {
                    assert!(secrets.insert(s.arn().unwrap_or_default().to_string()), "twice: {name}");
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        (caches, users, secrets)
    }
}
