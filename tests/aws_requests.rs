//! What a lifecycle costs in AWS requests: every request both functions
//! send, counted by service and operation at the HTTP client (and the
//! user-group calls at their stand-in), against moto, for provision (until
//! the cache and its spare users are ready), bind, fetch binding, unbind,
//! deprovision, and an idle hour (the reconciler's twelve passes; nothing
//! else runs at rest). The counts are held in `BUDGET`: a change that sends
//! more fails here, and the table is the place to justify it. The figures
//! are printed (`--nocapture`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use broker_core::catalog::CatalogFile;
use broker_core::ports::StateStore;
use broker_lambda::{AwsParts, ClientOverrides};
use broker_testing::aws::{
    FakeAuthTokens, FakeRbac, GoneGroups, MemcachedEndpoints, moto_elasticache_config,
};
use broker_testing::chaos::{FaultyHttp, HttpFaults};
use broker_testing::cloudwatch::FakeCloudWatch;
use broker_tests::MotoBroker;
use serde_json::{Value, json};

/// Requests per phase, by `service:Operation`: the most each may send.
const BUDGET: &[(&str, &[(&str, u64)])] = &[
    // The alarms step (issue 15) costs its own step's read and write of
    // the records, a DescribeReplicationGroups for the member clusters, a
    // DescribeAlarms and one PutMetricAlarm per metric of the one node.
    (
        "provision",
        &[
            ("cloudwatch:DescribeAlarms", 1),
            ("cloudwatch:PutMetricAlarm", 3),
            ("dynamodb:GetItem", 13),
            ("dynamodb:PutItem", 8),
            ("dynamodb:Query", 4),
            ("dynamodb:TransactWriteItems", 2),
            ("elasticache:CreateReplicationGroup", 1),
            ("elasticache:CreateUser", 4),
            ("elasticache:CreateUserGroup", 1),
            ("elasticache:DescribeReplicationGroups", 4),
            ("secretsmanager:CreateSecret", 3),
            ("secretsmanager:GetSecretValue", 3),
            ("sqs:SendMessage", 2),
        ],
    ),
    (
        "bind",
        &[
            ("dynamodb:GetItem", 12),
            ("dynamodb:PutItem", 8),
            ("dynamodb:Query", 4),
            ("dynamodb:TransactWriteItems", 2),
            ("elasticache:CreateUser", 1),
            ("elasticache:DescribeReplicationGroups", 2),
            ("elasticache:DescribeUsers", 2),
            ("elasticache:ModifyUserGroup", 1),
            ("secretsmanager:CreateSecret", 1),
            ("secretsmanager:GetSecretValue", 2),
            ("sqs:SendMessage", 2),
        ],
    ),
    ("fetch binding", &[("dynamodb:BatchGetItem", 1), ("secretsmanager:GetSecretValue", 1)]),
    // Twelve reconciler passes, each four Queries (the operations in
    // progress, the instances, the warm pools and the plans) and a read of
    // the sweep's record; one sweep round an hour (SWEEP_EVERY_SECS): a
    // page of each listing (user groups go to their stand-in), one Query for
    // the bindings of the instance whose users and secrets it checks, and
    // the record written.
    (
        "idle hour",
        &[
            ("cloudwatch:DescribeAlarms", 1),
            ("dynamodb:GetItem", 12),
            ("dynamodb:PutItem", 1),
            ("dynamodb:Query", 49),
            ("logs:DescribeLogGroups", 1),
            ("elasticache:DescribeCacheClusters", 1),
            ("elasticache:DescribeReplicationGroups", 1),
            // The sweep's page of serverless caches.
            ("elasticache:DescribeServerlessCaches", 1),
            ("elasticache:DescribeUsers", 1),
            ("secretsmanager:ListSecrets", 1),
        ],
    ),
    (
        "unbind",
        &[
            ("dynamodb:GetItem", 16),
            ("dynamodb:PutItem", 4),
            ("dynamodb:Query", 8),
            ("dynamodb:TransactWriteItems", 2),
            ("elasticache:DeleteUser", 1),
            ("elasticache:DescribeReplicationGroups", 4),
            ("elasticache:DescribeUsers", 3),
            ("elasticache:ModifyUserGroup", 1),
            ("secretsmanager:DeleteSecret", 1),
            ("sqs:SendMessage", 4),
        ],
    ),
    (
        "deprovision",
        &[
            ("cloudwatch:DeleteAlarms", 1),
            ("cloudwatch:DescribeAlarms", 1),
            ("dynamodb:GetItem", 17),
            ("dynamodb:PutItem", 7),
            ("dynamodb:Query", 12),
            ("dynamodb:TransactWriteItems", 2),
            ("elasticache:DeleteReplicationGroup", 1),
            ("elasticache:DeleteUser", 4),
            ("elasticache:DeleteUserGroup", 1),
            ("elasticache:DescribeCacheClusters", 6),
            ("elasticache:DescribeReplicationGroups", 7),
            // The instance's named snapshots, deleted with it (none here),
            // and its own parameter groups, found in the account's listing
            // once the cache is gone (none here).
            ("elasticache:DescribeSnapshots", 1),
            ("elasticache:DescribeServerlessCacheSnapshots", 1),
            ("elasticache:DescribeCacheParameterGroups", 1),
            // Once the group is gone, a lookup of the cache tries the
            // serverless kind too (nothing records the kind between calls):
            // the waits for the deletion and each user deleted by its id.
            ("elasticache:DescribeServerlessCaches", 6),
            ("elasticache:DescribeUsers", 13),
            ("elasticache:ListTagsForResource", 1),
            // The cache's log group, whether it had one or not (a delete
            // knows only the instance id).
            ("logs:DeleteLogGroup", 1),
            ("secretsmanager:DeleteSecret", 3),
            ("sqs:SendMessage", 5),
        ],
    ),
];

struct World {
    env: MotoBroker,
    parts: AwsParts,
    router: axum::Router,
    counter: Arc<HttpFaults>,
    rbac: FakeRbac,
    gone: GoneGroups,
    /// The caches' alarms: counted apart, as the stand-in is no HTTP server.
    cloudwatch: FakeCloudWatch,
}

async fn start() -> World {
    let env = MotoBroker::start(5, &[]).await;
    let counter = HttpFaults::counter();
    let counted = env
        .sdk
        .to_builder()
        .http_client(FaultyHttp::wrap(aws_smithy_http_client::Builder::new().build_http(), counter.clone()))
        .build();
    let rbac = FakeRbac::new();
    let cloudwatch = FakeCloudWatch::new();
    let tokens = FakeAuthTokens::new();
    let gone: GoneGroups = Arc::default();
    let elasticache = aws_sdk_elasticache::Client::from_conf(
        moto_elasticache_config(&counted, gone.clone(), &rbac, &tokens)
            .interceptor(MemcachedEndpoints)
            .build(),
    );
    let overrides = ClientOverrides {
        elasticache: Some(elasticache),
        elasticache_rbac: Some(rbac.client.clone()),
        cloudwatch: Some(cloudwatch.client.clone()),
        secretsmanager: None,
    };
    let parts = AwsParts::new(&env.settings, &counted, overrides);
    parts.seed_catalog(&CatalogFile::builtin()).await.unwrap();
    let router = parts.router(&env.settings).await.unwrap();
    World { env, parts, router, counter, rbac, gone, cloudwatch }
}

impl World {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        broker_tests::call_router(&self.router, method, uri, body.as_ref()).await
    }

    /// Provisions `iuri` with the service and plan `ids` and runs the
    /// provisioner until it is done; the 202's body.
    async fn provision(&self, iuri: &str, ids: &Value) -> Value {
        let mut body = ids.clone();
        body["organization_guid"] = json!("org");
        body["space_guid"] = json!("space");
        let (status, reply) = self.call("PUT", &format!("{iuri}?accepts_incomplete=true"), Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        self.settle().await;
        reply
    }

    /// The ids of service `elasticache-redis` and its plan `small`, from
    /// the catalog the broker serves.
    async fn small_redis_plan(&self) -> (String, String) {
        let (_, catalog) = self.call("GET", "/v2/catalog", None).await;
        let services = catalog["services"].as_array().unwrap();
        let s = services.iter().find(|s| s["name"] == "elasticache-redis").unwrap();
        let p = s["plans"].as_array().unwrap().iter().find(|p| p["name"] == "small").unwrap();
        (s["id"].as_str().unwrap().to_string(), p["id"].as_str().unwrap().to_string())
    }

    /// Runs the provisioner (delivering each job once, as Lambda's event
    /// source does) until no operation is in progress and the queue is
    /// empty. The event source's own receive and delete are SQS's side of
    /// Lambda, not the broker's requests, so they go through fault-free,
    /// uncounted clients.
    async fn settle(&self) {
        let sqs = aws_sdk_sqs::Client::new(&self.env.sdk);
        let ec = aws_sdk_elasticache::Client::new(&self.env.sdk);
        let store = broker_aws::dynamodb::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.env.sdk),
            "osb-broker",
        );
        for _ in 0..60 {
            for g in ec.describe_replication_groups().send().await.unwrap().replication_groups() {
                if g.status() == Some("deleting") {
                    self.gone
                        .lock()
                        .unwrap()
                        .insert(g.replication_group_id().unwrap_or_default().to_string());
                }
            }
            let messages = broker_tests::receive_jobs(&self.env.sdk, &self.env.queue_url).await;
            if messages.is_empty() && store.operations_in_progress().await.unwrap().is_empty() {
                return;
            }
            let event = broker_tests::sqs_event(&messages);
            let deadline = SystemTime::now() + Duration::from_secs(900);
            let failed = broker_core::invocation::handle_batch(&self.parts.worker, event, deadline).await;
            assert!(failed.batch_item_failures.is_empty(), "no job fails here");
            for m in &messages {
                let receipt = m.receipt_handle.clone().unwrap();
                sqs.delete_message()
                    .queue_url(&self.env.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
        }
        panic!("operations still in progress");
    }

    /// The requests sent since the last call, by `service:Operation`, the
    /// user-group and CloudWatch stand-ins' included.
    fn take(&self) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> =
            self.counter.take_calls().into_iter().map(|((s, op), n)| (format!("{s}:{op}"), n)).collect();
        let mut rbac = self.rbac.state.lock().unwrap();
        for call in std::mem::take(&mut rbac.calls) {
            let op = call.split_whitespace().next().unwrap_or_default().to_string();
            *counts.entry(format!("elasticache:{op}")).or_default() += 1;
        }
        for call in std::mem::take(&mut self.cloudwatch.state.lock().unwrap().calls) {
            let op = call.split_whitespace().next().unwrap_or_default().to_string();
            *counts.entry(format!("cloudwatch:{op}")).or_default() += 1;
        }
        counts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_costs_no_more_aws_requests_than_its_budget() {
    let w = start().await;
    let (service_id, plan_id) = w.small_redis_plan().await;
    let ids = json!({"service_id": service_id, "plan_id": plan_id});
    let del = format!("service_id={service_id}&plan_id={plan_id}");
    let iuri = "/v2/service_instances/0c0a57ed-0000-4000-8000-000000000001";
    let buri = format!("{iuri}/service_bindings/app-1");
    w.take();

    let mut phases: Vec<(&str, BTreeMap<String, u64>)> = Vec::new();
    w.provision(iuri, &ids).await;
    phases.push(("provision", w.take()));

    let (status, bound) = w.call("PUT", &buri, Some(ids.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    w.settle().await;
    phases.push(("bind", w.take()));

    let (status, fetched) = w.call("GET", &buri, None).await;
    assert_eq!((status, &fetched["credentials"]), (StatusCode::OK, &bound["credentials"]));
    phases.push(("fetch binding", w.take()));

    // An hour of the schedule's passes, five minutes apart.
    let t0 = broker_core::domain::now();
    for n in 0..12 {
        w.parts.reconciler.run(t0 + 300 * n).await.unwrap();
    }
    phases.push(("idle hour", w.take()));

    let (status, reply) = w.call("DELETE", &format!("{buri}?{del}"), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    w.settle().await;
    phases.push(("unbind", w.take()));

    let (status, reply) = w.call("DELETE", &format!("{iuri}?accepts_incomplete=true&{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    w.settle().await;
    phases.push(("deprovision", w.take()));
    assert!(w.parts.store.instance(&iuri["/v2/service_instances/".len()..]).await.unwrap().is_some());

    let mut over = Vec::new();
    for (phase, counts) in &phases {
        let total: u64 = counts.values().sum();
        println!("aws requests: {phase}: {total}");
        for (call, n) in counts {
            println!("aws requests:   {call} {n}");
        }
        let budget = BUDGET.iter().find(|(p, _)| p == phase).map_or(&[][..], |(_, b)| *b);
        for (call, n) in counts {
            let allowed = budget.iter().find(|(c, _)| c == call).map_or(0, |(_, n)| *n);
            if *n > allowed {
                over.push(format!("{phase}: {call} {n} (budget {allowed})"));
            }
        }
    }
    let fetch = &phases.iter().find(|(p, _)| *p == "fetch binding").unwrap().1;
    assert!(fetch.values().sum::<u64>() <= 2, "fetching a binding: at most 2 requests: {fetch:?}");
    assert!(!fetch.keys().any(|c| c.starts_with("elasticache:")), "and none to ElastiCache: {fetch:?}");
    assert!(over.is_empty(), "over the budget:\n{}", over.join("\n"));
}

/// The warm pool in AWS mode against moto: the benchmark of provision to
/// bindable for a pooled plan (printed with `--nocapture`; the target, 5 s
/// at p99, is checked by `scripts/bench.sh pool`, not here), and what each
/// claim costs in AWS requests. Each claim's cache gets its instance's tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_provisions_are_bindable_at_once_and_tagged_for_their_instance() {
    // `scripts/bench.sh pool` asks for more rounds.
    let rounds: usize = std::env::var("BENCH_POOL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let w = start().await;
    let store =
        broker_aws::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(&w.env.sdk), "osb-broker");
    let catalog = CatalogFile::builtin();
    let redis = catalog.services.iter().find(|s| s.name == "elasticache-redis").unwrap();
    let mut plan =
        catalog.plans.iter().find(|p| p.service_id == redis.id && p.name == "small").unwrap().clone();
    plan.warm_pool_size = 2;
    broker_core::ports::CatalogStore::put_plan(&store, &plan).await.unwrap();
    w.parts.reconciler.run(broker_core::domain::now()).await.unwrap();
    w.settle().await;
    w.take();

    let ids = json!({"service_id": redis.id, "plan_id": plan.id});
    let mut body = ids.clone();
    body["organization_guid"] = json!("org-pool");
    body["space_guid"] = json!("space-pool");
    let ec = aws_sdk_elasticache::Client::new(&w.env.sdk);
    let mut timings = Vec::with_capacity(rounds);
    let mut claim_requests: BTreeMap<String, u64> = BTreeMap::new();
    for n in 0..rounds {
        let id = format!("0c0a57ed-0000-4000-8000-{n:012}");
        let started = std::time::Instant::now();
        let (status, reply) = w
            .call("PUT", &format!("/v2/service_instances/{id}?accepts_incomplete=true"), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "round {n}: {reply}");
        let (status, bound) = w
            .call("PUT", &format!("/v2/service_instances/{id}/service_bindings/b-{n}"), Some(ids.clone()))
            .await;
        timings.push(started.elapsed());
        assert_eq!(status, StatusCode::CREATED, "round {n}: {bound}");
        assert!(bound["credentials"]["uri"].as_str().is_some_and(|u| u.starts_with("redis")), "{bound}");
        for (k, v) in w.take() {
            *claim_requests.entry(k).or_default() += v;
        }
        // The worker tags the claimed cache and refills the pool.
        w.settle().await;
        let record = store.instance(&id).await.unwrap().unwrap();
        let mut tagged_for_it = Vec::new();
        for g in ec.describe_replication_groups().send().await.unwrap().replication_groups() {
            let tags = ec.list_tags_for_resource().resource_name(g.arn().unwrap()).send().await.unwrap();
            let tag = |k: &str| {
                tags.tag_list()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            if tag("broker-instance-id").as_deref() == Some(id.as_str()) {
                assert_eq!(tag("organization").as_deref(), Some("org-pool"));
                assert_eq!(tag("space").as_deref(), Some("space-pool"));
                assert_eq!(tag("broker-cache").as_deref(), Some(record.cache_key()), "it keeps its key");
                tagged_for_it.push(g.replication_group_id().unwrap().to_string());
            }
        }
        assert_eq!(tagged_for_it.len(), 1, "one cache carries {id}'s tags: {tagged_for_it:?}");
        w.take();
    }
    timings.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = timings[rounds / 2];
    let p99 = timings[(rounds * 99).div_ceil(100) - 1];
    println!(
        "AWS mode on moto, pooled plan, {rounds} provisions: provision to bindable p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(p50),
        ms(p99),
        ms(*timings.last().unwrap())
    );
    println!("AWS requests per pooled provision and bind (mean of {rounds}):");
    for (k, v) in &claim_requests {
        println!("  {k}: {:.1}", *v as f64 / rounds as f64);
    }
    assert!(
        !claim_requests.keys().any(|k| k.starts_with("elasticache:Create")),
        "a pooled provision creates nothing in its request: {claim_requests:?}"
    );
}

/// Scale in AWS mode: the requests and the latency of `last_operation` and
/// of a fetch of a binding with one instance in DynamoDB, then with
/// `BENCH_SCALE_INSTANCES` more (default 1,000: more than a megabyte of
/// records, so that a Scan or Query over them would take a second page;
/// `scripts/bench.sh scale` asks for 10,000). The requests per call must not
/// change; the latencies through the router on moto are printed
/// (`--nocapture`), not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_send_the_same_requests_with_many_instances_in_the_store() {
    let extra: usize =
        std::env::var("BENCH_SCALE_INSTANCES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let calls = 50;
    let w = start().await;
    let (service_id, plan_id) = w.small_redis_plan().await;
    let ids = json!({"service_id": service_id, "plan_id": plan_id});
    let id = "0c0a57ed-0000-4000-8000-00000000scal";
    let iuri = format!("/v2/service_instances/{id}");
    let reply = w.provision(&iuri, &ids).await;
    let (status, bound) = w.call("PUT", &format!("{iuri}/service_bindings/app-1"), Some(ids)).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    w.settle().await;
    let operation = reply["operation"].as_str().expect("a provision names its operation").to_string();
    let routes = [
        ("last_operation", format!("{iuri}/last_operation")),
        ("last_operation?operation=", format!("{iuri}/last_operation?operation={operation}")),
        ("fetch binding", format!("{iuri}/service_bindings/app-1")),
    ];

    // Per route: the requests of `calls` calls, and each call's time.
    let measure = || async {
        // The catalog is read again once a minute (CATALOG_CACHE_SECS): read
        // it now, so that its two Queries do not fall within a measurement.
        w.call("GET", "/v2/catalog", None).await;
        let mut figures = Vec::new();
        for (name, uri) in &routes {
            w.take();
            let mut times = Vec::with_capacity(calls);
            for _ in 0..calls {
                let started = std::time::Instant::now();
                let (status, reply) = w.call("GET", uri, None).await;
                times.push(started.elapsed());
                assert_eq!(status, StatusCode::OK, "{name}: {reply}");
            }
            times.sort();
            figures.push((*name, w.take(), times));
        }
        figures
    };
    let alone = measure().await;

    let original = w.parts.store.instance(id).await.unwrap().unwrap();
    copy_instance(&w, id, &original.last_operation_id, extra).await;
    let crowded = measure().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for ((name, one, t1), (_, many, tn)) in alone.iter().zip(&crowded) {
        let p = |t: &[Duration], q: usize| ms(t[(t.len() * q).div_ceil(100) - 1]);
        println!(
            "scale: {name}: 1 instance p50 {:.2} ms p99 {:.2} ms; {} instances p50 {:.2} ms p99 {:.2} ms; \
             requests in {calls} calls {many:?}",
            p(t1, 50),
            p(t1, 99),
            extra + 1,
            p(tn, 50),
            p(tn, 99),
        );
        assert_eq!(one, many, "{name}: the requests per call grew with the instances");
        assert!(!many.is_empty(), "{name}: counted no requests");
    }
}

/// Writes `copies` copies of instance `id` and of its operation `operation_id`
/// straight into the table, 25 to a BatchWriteItem: moto copies its whole
/// table for every transaction, so a thousand `create_instance` calls take
/// minutes, and it fails transactions sent side by side. Each copy is the
/// stored item with both ids replaced wherever they appear, keys included.
async fn copy_instance(w: &World, id: &str, operation_id: &str, copies: usize) {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    fn renamed(value: &AttributeValue, from: &[(&str, &str)]) -> AttributeValue {
        match value {
            AttributeValue::S(s) => {
                AttributeValue::S(from.iter().fold(s.clone(), |s, (old, new)| s.replace(old, new)))
            }
            AttributeValue::M(m) => {
                AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), renamed(v, from))).collect())
            }
            AttributeValue::L(l) => AttributeValue::L(l.iter().map(|v| renamed(v, from)).collect()),
            other => other.clone(),
        }
    }
    let dynamodb = aws_sdk_dynamodb::Client::new(&w.env.sdk);
    let originals: Vec<_> = dynamodb
        .scan()
        .table_name("osb-broker")
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter(|item| {
            let is = |s: &str| item.get("id") == Some(&AttributeValue::S(s.to_string()));
            is(id) || is(operation_id)
        })
        .cloned()
        .collect();
    assert_eq!(originals.len(), 2, "the instance and its operation are stored: {originals:?}");
    let requests: Vec<WriteRequest> = (0..copies)
        .flat_map(|n| {
            let copy_id = format!("0c0a57ed-0000-4000-9000-{n:012}");
            let names =
                [(operation_id.to_string(), format!("{copy_id}-provision")), (id.to_string(), copy_id)];
            let names: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            originals
                .iter()
                .map(|item| {
                    let item = item.iter().map(|(k, v)| (k.clone(), renamed(v, &names))).collect();
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                        .build()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for batch in requests.chunks(25) {
        let mut unprocessed =
            Some(std::collections::HashMap::from([("osb-broker".to_string(), batch.to_vec())]));
        while let Some(items) = unprocessed.filter(|u| !u.is_empty()) {
            let out = dynamodb.batch_write_item().set_request_items(Some(items)).send().await.unwrap();
            unprocessed = out.unprocessed_items;
        }
    }
    let listed = w.parts.store.instances().await.unwrap();
    assert_eq!(listed.len(), copies + 1, "every copy is listed");
}
