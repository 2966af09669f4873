//! End to end in AWS mode, against moto in server mode: the real broker-api
//! Router and the provisioner's SQS handler over DynamoDB, SQS, ElastiCache
//! and Secrets Manager (the user-group calls moto lacks go to an
//! aws-smithy-mocks stand-in). Provision, bind, fetch the binding, unbind,
//! deprovision; once with every message delivered once and once with every
//! message delivered twice, asserting that each AWS resource exists exactly
//! once and is gone at the end. And the rotation sequence: the ElastiCache
//! and Secrets Manager calls of each rotation step, for a binding user and
//! for the AUTH token of a Redis OSS 5 cache, each step invoked twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use broker_core::catalog::CatalogFile;
use broker_core::domain::Binding;
use broker_core::ports::StateStore;
use broker_core::rotation::{RotationEvent, RotationStep, Target};
use broker_lambda::{AwsParts, ClientOverrides};
use broker_testing::MotoServer;
use broker_testing::aws::{FakeAuthTokens, FakeRbac, GoneGroups, SecretIds, elasticache_on_moto};
use broker_testing::cloudwatch::FakeCloudWatch;
use broker_tests::MotoBroker;
use serde_json::{Value, json};

struct Aws {
    _moto: MotoServer,
    sdk: aws_config::SdkConfig,
    parts: AwsParts,
    router: axum::Router,
    queue_url: String,
    rbac: FakeRbac,
    tokens: FakeAuthTokens,
    /// Replication groups moto shows as deleting, reported gone to the
    /// provider: moto never finishes a deletion, so the test plays AWS
    /// finishing it.
    gone: GoneGroups,
    /// Every Secrets Manager request the broker sent: (action, SecretId).
    secret_ids: SecretIds,
    /// The caches' alarms (moto speaks an older CloudWatch protocol).
    cloudwatch: FakeCloudWatch,
}

async fn start() -> Aws {
    start_with(&[]).await
}

/// Starts with `extra` variables besides the test's environment.
async fn start_with(extra: &[(&'static str, &str)]) -> Aws {
    let MotoBroker { moto, sdk, settings, queue_url } = MotoBroker::start(5, extra).await;
    let rbac = FakeRbac::new();
    let cloudwatch = FakeCloudWatch::new();
    let tokens = FakeAuthTokens::new();
    let gone: GoneGroups = Arc::default();
    let secret_ids = SecretIds::new();
    let secretsmanager = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk).interceptor(secret_ids.interceptor()).build(),
    );
    let overrides = ClientOverrides {
        elasticache: Some(elasticache_on_moto(&sdk, gone.clone(), &rbac, &tokens)),
        elasticache_rbac: Some(rbac.client.clone()),
        cloudwatch: Some(cloudwatch.client.clone()),
        secretsmanager: Some(secretsmanager),
    };
    let parts = AwsParts::new(&settings, &sdk, overrides);
    // The seed command is idempotent: running it twice adds nothing the second time.
    assert!(parts.seed_catalog(&CatalogFile::builtin()).await.unwrap() > 0);
    assert_eq!(parts.seed_catalog(&CatalogFile::builtin()).await.unwrap(), 0);
    let router = parts.router(&settings).await.unwrap();
    Aws { _moto: moto, sdk, parts, router, queue_url, rbac, tokens, gone, secret_ids, cloudwatch }
}

impl Aws {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        broker_tests::call_router(&self.router, method, uri, body.as_ref()).await
    }

    /// Receives what the queue holds and hands it to the provisioner's SQS
    /// handler `deliveries` times (at-least-once delivery), deleting the
    /// messages the handler did not report as failed. Returns how many
    /// messages were received.
    async fn pump(&self, deliveries: usize) -> usize {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let messages = broker_tests::receive_jobs(&self.sdk, &self.queue_url).await;
        let event = broker_tests::sqs_event(&messages);
        let mut failed = Vec::new();
        for _ in 0..deliveries {
            let response =
                broker_core::invocation::handle_batch(&self.parts.worker, event.clone(), far_deadline())
                    .await;
            failed.extend(response.batch_item_failures.into_iter().map(|f| f.item_identifier));
        }
        for m in &messages {
            if !failed.contains(m.message_id.as_ref().unwrap()) {
                sqs.delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        messages.len()
    }

    /// Runs the provisioner until `uri`'s last_operation is no longer in progress.
    async fn settle(&self, uri: &str, deliveries: usize) -> Value {
        let mut last = Value::Null;
        for _ in 0..30 {
            let (status, body) = self.call("GET", uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            if body["state"] != "in progress" {
                return body;
            }
            last = body;
            self.finish_moto_deletions().await;
            self.pump(deliveries).await;
        }
        panic!("{uri} still in progress: {last}");
    }

    /// Runs the provisioner until no operation is in progress (the `spares`
    /// operations, and an unbind the platform did not wait for, have no
    /// last_operation anyone polls).
    async fn idle(&self, deliveries: usize) {
        for _ in 0..30 {
            let running = self.parts.store.operations_in_progress().await.unwrap();
            if running.is_empty() {
                return;
            }
            self.finish_moto_deletions().await;
            self.pump(deliveries).await;
        }
        panic!("operations still in progress: {:?}", self.parts.store.operations_in_progress().await);
    }

    async fn finish_moto_deletions(&self) {
        let out =
            aws_sdk_elasticache::Client::new(&self.sdk).describe_replication_groups().send().await.unwrap();
        for g in out.replication_groups() {
            if g.status() == Some("deleting") {
                self.gone.lock().unwrap().insert(g.replication_group_id().unwrap_or_default().to_string());
            }
        }
    }

    async fn replication_groups(&self) -> Vec<String> {
        let out =
            aws_sdk_elasticache::Client::new(&self.sdk).describe_replication_groups().send().await.unwrap();
        out.replication_groups()
            .iter()
            .filter(|g| g.status() != Some("deleting"))
            .filter_map(|g| g.replication_group_id().map(str::to_string))
            .collect()
    }

    async fn users(&self) -> Vec<String> {
        broker_tests::live_users(&self.sdk).await.into_iter().collect()
    }

    /// Secrets under the broker's prefix that are not scheduled for deletion.
    async fn live_secrets(&self) -> Vec<String> {
        let out = aws_sdk_secretsmanager::Client::new(&self.sdk).list_secrets().send().await.unwrap();
        out.secret_list()
            .iter()
            .filter(|s| s.deleted_date().is_none())
            .filter_map(|s| s.name().map(str::to_string))
            .filter(|n| n.starts_with("osb/instances/"))
            .collect()
    }
}

async fn lifecycle(deliveries: usize) {
    let aws = start().await;
    let (service_id, plan_id) = plan(&aws, "elasticache-redis", "small").await;
    let instance = "9a0d6a52-7a8f-4b7e-9f5c-aws0e2e00001";
    let iuri = format!("/v2/service_instances/{instance}");
    let buri = |b: &str| format!("{iuri}/service_bindings/{b}");
    let ids = json!({"service_id": service_id, "plan_id": plan_id});
    let del = format!("service_id={service_id}&plan_id={plan_id}");
    let user_of = |name: &str| aws.parts.provider.binding_user_id(instance, name);

    // Provision: one replication group with the deterministic id, the
    // instance's admin and disabled default users, and the plan's two spare
    // binding users, all in the user group it was created with.
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({
                "service_id": service_id, "plan_id": plan_id, "parameters": {"engine_version": "7.1"},
                "organization_guid": "org-1", "space_guid": "space-1",
                "context": {"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": "space-1"}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{iuri}/last_operation"), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let group = aws.parts.provider.cache_id(instance);
    assert_eq!(aws.replication_groups().await, std::slice::from_ref(&group));
    assert_eq!(aws.users().await.len(), 4, "admin, default and 2 spares: {:?}", aws.users().await);
    let members = aws.rbac.members(&group).unwrap();
    assert!(members.contains(&user_of("s-1")) && members.contains(&user_of("s-2")), "{members:?}");
    assert_eq!(aws.live_secrets().await.len(), 3, "admin and spares: {:?}", aws.live_secrets().await);
    // Three alarms on the group's one member cluster (as moto describes
    // it), made once however often the job came, their states in the
    // fetched instance.
    let alarms = aws.cloudwatch.names();
    assert_eq!(alarms.len(), 3, "{alarms:?}");
    assert!(alarms.iter().all(|a| a.starts_with(&format!("{group}/001/"))), "{alarms:?}");
    assert_eq!(aws.cloudwatch.count("PutMetricAlarm"), 3, "{:?}", aws.cloudwatch.calls());
    let (status, fetched) = aws.call("GET", &iuri, None).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let states = fetched["metadata"]["attributes"]["alarms"].as_array().unwrap();
    assert_eq!(states.len(), 3, "{fetched}");
    assert!(states.iter().all(|a| a["node"] == format!("{group}-001") && a["state"] == "INSUFFICIENT_DATA"));

    // A bind as an OSB 2.13 platform sends it (no accepts_incomplete): it
    // claims a spare and answers with credentials at once.
    let (status, bound) = aws.call("PUT", &buri("sync-1"), Some(ids.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let creds = &bound["credentials"];
    assert_eq!(creds["username"], "s-1");
    assert_eq!(creds["tls_enabled"], true);
    assert!(creds["uri"].as_str().unwrap().starts_with("rediss://s-1:"), "{creds}");
    assert_eq!(creds["CACHE_TLS_ENABLED"], "true");
    let (status, fetched) = aws.call("GET", &buri("sync-1"), None).await;
    assert_eq!((status, &fetched["credentials"]), (StatusCode::OK, creds));
    // A platform that polls gets the next spare just as fast.
    let (status, bound) =
        aws.call("PUT", &format!("{}?accepts_incomplete=true", buri("poll-1")), Some(ids.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    assert_eq!(bound["credentials"]["username"], "s-2");
    // With both claimed, a bind that can wait gets a user of its own.
    let (status, body) =
        aws.call("PUT", &format!("{}?accepts_incomplete=true", buri("wait-1")), Some(ids.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{}/last_operation", buri("wait-1")), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let own = user_of(&Binding::username_for("wait-1"));
    assert!(aws.rbac.members(&group).unwrap().contains(&own));
    // Meanwhile the provisioner made two new spares for the two claimed.
    aws.idle(deliveries).await;
    let members = aws.rbac.members(&group).unwrap();
    let wait_user = Binding::username_for("wait-1");
    for name in ["s-1", "s-2", "s-3", "s-4", wait_user.as_str()] {
        assert!(members.contains(&user_of(name)), "{name} is not in the user group: {members:?}");
    }
    assert_eq!(aws.users().await.len(), 7, "{:?}", aws.users().await);
    assert_eq!(aws.live_secrets().await.len(), 6, "{:?}", aws.live_secrets().await);
    let i = aws.parts.store.instance(instance).await.unwrap().unwrap();
    assert_eq!(i.spares.iter().map(|s| s.username.as_str()).collect::<Vec<_>>(), ["s-3", "s-4"]);

    // Unbind without accepts_incomplete: 200 at once; the user goes in the
    // provisioner, and so does its secret.
    let (status, body) = aws.call("DELETE", &format!("{}?{del}", buri("sync-1")), None).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({})));
    assert_eq!(aws.call("GET", &buri("sync-1"), None).await.0, StatusCode::NOT_FOUND);
    aws.idle(deliveries).await;
    assert!(!aws.users().await.contains(&user_of("s-1")));
    assert!(!aws.rbac.members(&group).unwrap().contains(&user_of("s-1")));
    assert!(!aws.live_secrets().await.contains(&format!("osb/instances/{instance}/spares/s-1")));
    // Unbind with accepts_incomplete: 202, polled until the user is gone.
    let (status, body) =
        aws.call("DELETE", &format!("{}?accepts_incomplete=true&{del}", buri("wait-1")), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{}/last_operation", buri("wait-1")), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(!aws.users().await.contains(&own));

    // Deprovision: nothing left, the claimed spare of poll-1 and the unclaimed
    // spares included.
    let (status, body) = aws.call("DELETE", &format!("{iuri}?accepts_incomplete=true&{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{iuri}/last_operation"), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(aws.replication_groups().await.is_empty(), "{:?}", aws.replication_groups().await);
    assert!(aws.users().await.is_empty(), "{:?}", aws.users().await);
    assert!(aws.live_secrets().await.is_empty(), "{:?}", aws.live_secrets().await);
    assert!(!aws.rbac.state.lock().unwrap().groups.contains_key(&group), "the user group is left");
    assert!(aws.cloudwatch.names().is_empty(), "{:?}", aws.cloudwatch.names());
    // And the platform is told so on a late poll.
    let (status, body) = aws.call("GET", &format!("{iuri}/last_operation"), None).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("succeeded")));
}

/// A serverless Valkey instance's whole life in AWS mode, every job
/// delivered twice: made with its users and user group, bound (TLS,
/// cluster mode, a reader endpoint), moved to a bigger serverless plan,
/// refused a plan of nodes, snapshotted, deprovisioned with a final
/// snapshot and nothing else left. moto has no serverless caches nor user
/// groups: their stand-in answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serverless_instance_lives_and_dies_in_aws_mode() {
    let aws = start_with(&[("CACHE_SUBNET_IDS", "subnet-0a1,subnet-0b2")]).await;
    let (service_id, plan_id) = plan(&aws, "elasticache-valkey", "serverless").await;
    let instance = "4e2d8c1a-serverless-aws-e2e";
    let iuri = format!("/v2/service_instances/{instance}");
    let ids = json!({"service_id": service_id, "plan_id": plan_id});
    let del = format!("service_id={service_id}&plan_id={plan_id}");
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id, "organization_guid": "org-1", "space_guid": "space-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{iuri}/last_operation"), 2).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["description"], "provisioned: valkey 8.0 on plan serverless");
    let cache = aws.parts.provider.cache_id(instance);
    assert_eq!(
        aws.rbac.state.lock().unwrap().serverless.keys().cloned().collect::<Vec<_>>(),
        vec![cache.clone()]
    );
    assert!(aws.replication_groups().await.is_empty());
    assert_eq!(aws.users().await.len(), 4, "admin, default and 2 spares: {:?}", aws.users().await);

    let buri = format!("{iuri}/service_bindings/app-1");
    let (status, bound) = aws.call("PUT", &buri, Some(ids.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    let creds = &bound["credentials"];
    assert_eq!((creds["port"].as_u64(), creds["reader_port"].as_u64()), (Some(6379), Some(6380)), "{creds}");
    assert_eq!((creds["tls_enabled"].as_bool(), creds["cluster_mode"].as_bool()), (Some(true), Some(true)));
    assert_eq!((creds["engine"].as_str(), creds["CACHE_MODE"].as_str()), (Some("valkey"), Some("cluster")));

    // A bigger serverless plan: its usage limits; a plan of nodes: refused.
    let (_, large) = plan(&aws, "elasticache-valkey", "serverless-large").await;
    let (status, body) = aws
        .call(
            "PATCH",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": large})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 2).await["state"], "succeeded");
    let limit = aws.rbac.state.lock().unwrap().serverless[&cache]
        .cache_usage_limits()
        .and_then(|l| l.data_storage())
        .and_then(|d| d.maximum());
    assert_eq!(limit, Some(100));
    let (_, staging) = plan(&aws, "elasticache-valkey", "staging").await;
    let (status, body) = aws
        .call(
            "PATCH",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": staging})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "PlanChangeNotSupported");

    // A named snapshot, listed when the instance is fetched.
    let (status, body) = aws
        .call(
            "PATCH",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "parameters": {"snapshot": "before"}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 2).await["state"], "succeeded");
    let (_, fetched) = aws.call("GET", &iuri, None).await;
    assert_eq!(fetched["metadata"]["attributes"]["snapshots"][0]["name"], "before", "{fetched}");

    // Deprovision: the final snapshot stays; nothing else does.
    let (_, large_plan) = (service_id.clone(), large);
    let del = del.replace(&plan_id, &large_plan);
    let (status, body) = aws.call("DELETE", &format!("{iuri}?accepts_incomplete=true&{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 2).await["state"], "succeeded");
    {
        let state = aws.rbac.state.lock().unwrap();
        assert!(state.serverless.is_empty(), "{:?}", state.serverless.keys());
        assert!(!state.groups.contains_key(&cache), "the user group is left");
        let snapshots: Vec<&String> = state.serverless_snapshots.keys().collect();
        assert_eq!(snapshots.len(), 1, "the final snapshot alone: {snapshots:?}");
        assert!(snapshots[0].contains("-final-"), "{snapshots:?}");
    }
    assert!(aws.users().await.is_empty(), "{:?}", aws.users().await);
    assert!(aws.live_secrets().await.is_empty(), "{:?}", aws.live_secrets().await);
}

/// A deadline as far off as Lambda's longest timeout: the batch never
/// stops early.
fn far_deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(900)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_instance_lives_and_dies_in_aws_mode() {
    lifecycle(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_still_makes_each_resource_once() {
    lifecycle(2).await;
}

// ------------------------------------------------------------------ rotation

/// The stages of every version of secret `name`, from Secrets Manager.
async fn stages(aws: &Aws, name: &str) -> Vec<(String, Vec<String>)> {
    let out =
        aws_sdk_secretsmanager::Client::new(&aws.sdk).describe_secret().secret_id(name).send().await.unwrap();
    let mut versions: Vec<(String, Vec<String>)> =
        out.version_ids_to_stages().cloned().unwrap_or_default().into_iter().collect();
    versions.iter_mut().for_each(|(_, s)| s.sort());
    versions.sort();
    versions
}

/// Runs the four rotation steps on `secret`, each twice with the same token
/// (Secrets Manager may invoke a step again), and returns the calls FakeRbac
/// and FakeAuthTokens saw after each step.
async fn rotate_each_step_twice(aws: &Aws, secret: &str, token: &str) -> Vec<(RotationStep, Vec<String>)> {
    let mut seen = Vec::new();
    for step in RotationStep::ALL {
        let event = RotationEvent { step, secret_id: secret.to_string(), token: token.to_string() };
        aws.parts.rotator.handle(&event).await.unwrap_or_else(|e| panic!("{step:?}: {e}"));
        let after_first = (aws.rbac.calls(), aws.tokens.changes(), stages(aws, secret).await);
        aws.parts.rotator.handle(&event).await.unwrap_or_else(|e| panic!("{step:?} again: {e}"));
        let after_second = (aws.rbac.calls(), aws.tokens.changes(), stages(aws, secret).await);
        assert_eq!(after_second, after_first, "{step:?} twice with the same token changed something twice");
        let mut calls = aws.rbac.calls();
        calls
            .extend(aws.tokens.changes().into_iter().map(|(g, s)| format!("ModifyReplicationGroup {g} {s}")));
        seen.push((step, calls));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_password_and_an_auth_token_rotate_in_aws_mode_each_step_twice() {
    let aws =
        start_with(&[("ROTATION_GRACE_SECS", "0"), ("ROTATION_DAYS", "0"), ("CATALOG_CACHE_SECS", "0")])
            .await;
    let (service_id, plan_id) = plan(&aws, "elasticache-redis", "small").await;

    // A binding user (Redis OSS 7.1, RBAC).
    let base = "/v2/service_instances/rot-1";
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{base}?accepts_incomplete=true"),
            Some(
                json!({"service_id": service_id, "plan_id": plan_id, "parameters": {"engine_version": "7.1"},
                        "organization_guid": "org-1", "space_guid": "space-1"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{base}/last_operation"), 1).await["state"], "succeeded");
    // The binding claims spare user s-1, whose secret it keeps.
    let binding = format!("{base}/service_bindings/rb-1");
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{binding}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id, "app_guid": "app"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    aws.idle(1).await;
    let (_, before) = aws.call("GET", &binding, None).await;
    let user_id = aws.parts.provider.binding_user_id("rot-1", "s-1");
    let calls_before = aws.rbac.calls().len();

    let secret = "osb/instances/rot-1/spares/s-1";
    let seen = rotate_each_step_twice(&aws, secret, "6b0e4f2a-9c1d-4e3b-8a7f-binding00001").await;
    let new_calls = |i: usize| seen[i].1[calls_before..].to_vec();
    assert_eq!(new_calls(0), Vec::<String>::new(), "createSecret only stores the new password");
    assert_eq!(new_calls(1), [format!("ModifyUser {user_id} passwords=2")], "setSecret adds it");
    assert_eq!(new_calls(3), new_calls(1), "testSecret and finishSecret change nothing in ElastiCache");
    let versions = stages(&aws, secret).await;
    let current: Vec<&String> =
        versions.iter().filter(|(_, s)| s.contains(&"AWSCURRENT".into())).map(|(v, _)| v).collect();
    assert_eq!(current, ["6b0e4f2a-9c1d-4e3b-8a7f-binding00001"]);
    assert!(versions.iter().any(|(_, s)| s == &["AWSPREVIOUS"]), "{versions:?}");
    let (_, after) = aws.call("GET", &binding, None).await;
    assert_ne!(after["credentials"]["password"], before["credentials"]["password"]);

    // The grace period (0 s here) ends in the provisioner: the old password goes.
    for _ in 0..5 {
        aws.pump(1).await;
    }
    assert_eq!(
        aws.rbac.calls()[calls_before..],
        [format!("ModifyUser {user_id} passwords=2"), format!("ModifyUser {user_id} passwords=1")]
    );
    let b = aws.parts.store.binding("rot-1", "rb-1").await.unwrap().unwrap();
    assert_eq!(b.rotation, None, "the rotation is over");

    // An AUTH token (Redis OSS 5: no users): ROTATE, then SET after the grace period.
    let mut catalog = CatalogFile::builtin();
    for p in catalog.plans.iter_mut().filter(|p| p.id == plan_id) {
        p.engine_versions.push("5.0".into());
    }
    broker_core::catalog::apply(aws.parts.store.as_ref(), &catalog).await.unwrap();
    let base = "/v2/service_instances/rot-5";
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{base}?accepts_incomplete=true"),
            Some(
                json!({"service_id": service_id, "plan_id": plan_id, "parameters": {"engine_version": "5.0"},
                        "organization_guid": "org-1", "space_guid": "space-1"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{base}/last_operation"), 1).await["state"], "succeeded");
    let group = aws.parts.provider.cache_id("rot-5");
    let rbac_calls = aws.rbac.calls().len();
    let seen =
        rotate_each_step_twice(&aws, "osb/instances/rot-5/admin", "6b0e4f2a-9c1d-4e3b-8a7f-authtoken0001")
            .await;
    assert_eq!(aws.tokens.changes(), [(group.clone(), "ROTATE".to_string())]);
    assert!(
        seen[0].1.iter().all(|c| !c.starts_with("ModifyReplicationGroup")),
        "createSecret: {:?}",
        seen[0].1
    );
    for _ in 0..5 {
        aws.pump(1).await;
    }
    assert_eq!(aws.tokens.changes(), [(group.clone(), "ROTATE".to_string()), (group, "SET".to_string())]);
    assert_eq!(aws.rbac.calls().len(), rbac_calls, "an AUTH token has no users");
    let i = aws.parts.store.instance("rot-5").await.unwrap().unwrap();
    assert_eq!((i.rotation, i.rotated_at.is_some()), (None, true));
}

/// (service id, plan id) of `service`/`plan` from the broker's catalog.
async fn plan(aws: &Aws, service: &str, plan: &str) -> (String, String) {
    let (_, catalog) = aws.call("GET", "/v2/catalog", None).await;
    let s = catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap();
    let p = s["plans"].as_array().unwrap().iter().find(|p| p["name"] == plan).unwrap();
    (s["id"].as_str().unwrap().into(), p["id"].as_str().unwrap().into())
}

/// Secrets Manager User Guide, CreateSecret (API reference): "Do not end your
/// secret name with a hyphen followed by six characters. If you do so, you
/// risk confusion and unexpected results when searching for a secret by
/// partial ARN." A binding id can end that way, and its secret's name ends
/// with it: every request about that secret after CreateSecret names it by
/// the ARN the broker recorded (or Secrets Manager sent), never by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_whose_name_ends_like_a_partial_arn_is_always_named_by_its_arn() {
    let aws = start_with(&[("ROTATION_GRACE_SECS", "0"), ("CATALOG_CACHE_SECS", "0")]).await;
    let mut catalog = CatalogFile::builtin();
    for p in catalog.plans.iter_mut() {
        p.spare_binding_users = 0;
    }
    broker_core::catalog::apply(aws.parts.store.as_ref(), &catalog).await.unwrap();
    let (service_id, plan_id) = plan(&aws, "elasticache-redis", "small").await;
    let base = "/v2/service_instances/arn-1";
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{base}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id,
                        "organization_guid": "org-1", "space_guid": "space-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{base}/last_operation"), 1).await["state"], "succeeded");
    // GIVEN a binding id ending in a hyphen and six characters
    let binding = format!("{base}/service_bindings/app-AbCdEf");
    let ids = json!({"service_id": service_id, "plan_id": plan_id});
    let (status, body) = aws.call("PUT", &format!("{binding}?accepts_incomplete=true"), Some(ids)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{binding}/last_operation"), 1).await["state"], "succeeded");
    // WHEN it is fetched, rotated, unbound and its instance deprovisioned
    assert_eq!(aws.call("GET", &binding, None).await.0, StatusCode::OK);
    let target = Target::Binding { instance_id: "arn-1".into(), binding_id: "app-AbCdEf".into() };
    aws.parts.rotator.rotate_now(&target).await.unwrap();
    aws.idle(1).await;
    assert_eq!(aws.call("GET", &binding, None).await.0, StatusCode::OK);
    let del = format!("accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}");
    let (status, body) = aws.call("DELETE", &format!("{binding}?{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{binding}/last_operation"), 1).await["state"], "succeeded");
    let (status, body) = aws.call("DELETE", &format!("{base}?{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{base}/last_operation"), 1).await["state"], "succeeded");

    // THEN every request about its secret but CreateSecret used the ARN
    let about: Vec<(String, String)> =
        aws.secret_ids.seen().into_iter().filter(|(_, id)| id.contains("app-AbCdEf")).collect();
    let actions: std::collections::BTreeSet<&str> = about.iter().map(|(a, _)| a.as_str()).collect();
    for needed in
        ["CreateSecret", "GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage", "DeleteSecret"]
    {
        assert!(actions.contains(needed), "no {needed} seen: {about:?}");
    }
    for (action, id) in &about {
        if action == "CreateSecret" {
            assert_eq!(id, "osb/instances/arn-1/bindings/app-AbCdEf");
        } else {
            assert!(
                id.starts_with("arn:aws:secretsmanager:"),
                "{action} named the secret {id:?}, not its ARN"
            );
        }
    }
}

/// DynamoDB cannot tell cheaply that the catalog changed, so AWS mode serves
/// what it read for CATALOG_CACHE_SECS; with 0, every request reads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_mode_serves_the_catalog_it_read_for_catalog_cache_secs() {
    for (cache_secs, shows_at_once) in [("60", false), ("0", true)] {
        let aws = start_with(&[("CATALOG_CACHE_SECS", cache_secs)]).await;
        let (_, before) = aws.call("GET", "/v2/catalog", None).await;
        let mut catalog = CatalogFile::builtin();
        for p in catalog.plans.iter_mut() {
            p.description = "Changed by catalog apply".into();
        }
        broker_core::catalog::apply(aws.parts.store.as_ref(), &catalog).await.unwrap();
        let (_, after) = aws.call("GET", "/v2/catalog", None).await;
        let first = |c: &Value| c["services"][0]["plans"][0]["description"].clone();
        assert_eq!(
            first(&after) == "Changed by catalog apply",
            shows_at_once,
            "CATALOG_CACHE_SECS={cache_secs}"
        );
        assert_eq!(after == before, !shows_at_once);
    }
}

/// AWS mode's metrics leave as Embedded Metric Format lines; `/metrics`
/// says so instead of serving an empty page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_mode_answers_metrics_with_a_404_naming_cloudwatch() {
    let aws = start().await;
    let (status, body) = aws.call("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["description"].as_str().unwrap().contains("CloudWatch"), "{body}");
}

/// The crash: a binding user made in ElastiCache and its secret,
/// with no binding record (the process died before writing it), then a
/// deprovision that knows nothing of them. The reconciler's sweep finds
/// both, waits the grace period, and deletes them; a user of the broker's
/// shape of name without its tag is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_user_left_by_a_crash_and_a_deprovision_is_swept_after_the_grace_period() {
    use broker_core::ports::SecretStore;
    let aws = start().await;
    let (service_id, plan_id) = plan(&aws, "elasticache-redis", "small").await;
    let instance = "9a0d6a52-7a8f-4b7e-9f5c-aws0e2e0orph";
    let iuri = format!("/v2/service_instances/{instance}");
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id,
                        "organization_guid": "org-1", "space_guid": "space-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 1).await["state"], "succeeded");

    let elasticache = aws_sdk_elasticache::Client::new(&aws.sdk);
    let make_user = |name: &'static str, tagged: bool| {
        let id = aws.parts.provider.binding_user_id(instance, name);
        let mut create = elasticache
            .create_user()
            .user_id(&id)
            .user_name(name)
            .engine("redis")
            .access_string("on ~* +@all")
            .no_password_required(true);
        if tagged {
            create = create
                .tags(aws_sdk_elasticache::types::Tag::builder().key("broker").value("osb").build())
                .tags(aws_sdk_elasticache::types::Tag::builder().key("broker-cache").value(instance).build());
        }
        async move {
            create.send().await.unwrap();
            id
        }
    };
    let crashed = make_user("b-crashed", true).await;
    let foreign = make_user("b-foreign", false).await;
    let secret = format!("osb/instances/{instance}/bindings/b-crashed");
    aws.parts.secrets.create(&secret, &secrecy::SecretString::from("p")).await.unwrap();

    let del = format!("service_id={service_id}&plan_id={plan_id}");
    let (status, body) = aws.call("DELETE", &format!("{iuri}?accepts_incomplete=true&{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 1).await["state"], "succeeded");
    let users = aws.users().await;
    assert!(users.contains(&crashed) && users.contains(&foreign), "no record named them: {users:?}");
    assert_eq!(aws.live_secrets().await, std::slice::from_ref(&secret));

    let t0 = broker_core::domain::now();
    let first = aws.parts.reconciler.run(t0).await.unwrap();
    assert_eq!((first.orphans_seen, first.orphans_removed), (3, 0), "{first:?}");
    let grace = aws.parts.reconciler.run(t0 + 3600).await.unwrap();
    assert_eq!((grace.orphans_seen, grace.orphans_removed, grace.orphans_left_alone), (3, 2, 1), "{grace:?}");
    let users = aws.users().await;
    assert!(!users.contains(&crashed), "the crashed binding's user is deleted: {users:?}");
    assert!(users.contains(&foreign), "an untagged user is left alone: {users:?}");
    assert!(aws.live_secrets().await.is_empty(), "{:?}", aws.live_secrets().await);
    // Left alone for good: later rounds do not look at its tags again.
    let later = aws.parts.reconciler.run(t0 + 7200).await.unwrap();
    assert_eq!((later.orphans_seen, later.orphans_removed, later.orphans_left_alone), (1, 0, 0), "{later:?}");
}

/// Log delivery in AWS mode: the parameter reaches ElastiCache, the cache's
/// own log group is made with the deploy's retention before it and goes
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_delivers_its_logs_to_a_log_group_that_is_deleted_with_it() {
    let aws = start_with(&[("CACHE_LOG_RETENTION_DAYS", "14")]).await;
    let (service_id, plan_id) = plan(&aws, "elasticache-valkey", "dev").await;
    let instance = "9a0d6a52-7a8f-4b7e-9f5c-aws0e2e00005";
    let iuri = format!("/v2/service_instances/{instance}");
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "plan_id": plan_id,
                        "organization_guid": "org-1", "space_guid": "space-1",
                        "parameters": {"log_delivery": ["slow-log", "engine-log"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 1).await["state"], "succeeded");

    let logs = aws_sdk_cloudwatchlogs::Client::new(&aws.sdk);
    let log_group = aws.parts.provider.log_group(instance);
    let listed = |logs: aws_sdk_cloudwatchlogs::Client| async move {
        let out = logs.describe_log_groups().log_group_name_prefix("/elasticache/").send().await.unwrap();
        out.log_groups()
            .iter()
            .map(|g| (g.log_group_name().unwrap_or_default().to_string(), g.retention_in_days()))
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(logs.clone()).await, [(log_group.clone(), Some(14))]);
    let ec = aws_sdk_elasticache::Client::new(&aws.sdk);
    let group = ec
        .describe_replication_groups()
        .replication_group_id(aws.parts.provider.cache_id(instance))
        .send()
        .await
        .unwrap();
    let delivered: Vec<_> = group.replication_groups()[0]
        .log_delivery_configurations()
        .iter()
        .map(|c| c.log_type().map(|t| t.as_str().to_string()))
        .collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");

    let del = format!("service_id={service_id}&plan_id={plan_id}");
    let (status, body) = aws.call("DELETE", &format!("{iuri}?accepts_incomplete=true&{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(aws.settle(&format!("{iuri}/last_operation"), 1).await["state"], "succeeded");
    assert!(listed(logs).await.is_empty(), "the log group goes with the cache");
}
