//! End to end in AWS mode, against moto in server mode: the real broker-api
//! Router and the provisioner's SQS handler over DynamoDB, SQS, ElastiCache
//! and Secrets Manager (the user-group calls moto lacks go to an
//! aws-smithy-mocks stand-in). Provision, bind, fetch the binding, unbind,
//! deprovision; once with every message delivered once and once with every
//! message delivered twice, asserting that each AWS resource exists exactly
//! once and is gone at the end.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use shared::adapters::aws::config::AwsSettings;
use shared::adapters::aws::dynamodb::create_table;
use shared::adapters::aws::sdk_config_for_endpoint;
use shared::adapters::aws::sqs::create_queue_with_dlq;
use shared::aws_mode::{AwsParts, ClientOverrides};
use shared::catalog::CatalogFile;
use shared::testing::{MotoServer, basic};
use shared::testing_aws::{FakeRbac, GoneGroups, finished_deletions};
use tower::ServiceExt;

const USER: &str = "platform";
const PASS: &str = "aws-e2e-broker-password-0000000000";

struct Aws {
    _moto: MotoServer,
    sdk: aws_config::SdkConfig,
    parts: AwsParts,
    router: axum::Router,
    queue_url: String,
    rbac: FakeRbac,
    /// Replication groups moto shows as deleting, reported gone to the
    /// provider: moto never finishes a deletion, so the test plays AWS
    /// finishing it.
    gone: GoneGroups,
}

/// An ElastiCache client on moto that reports the groups in `gone` as not
/// found, passing every other call through to moto.
fn elasticache_on_moto(sdk: &aws_config::SdkConfig, gone: GoneGroups) -> aws_sdk_elasticache::Client {
    aws_sdk_elasticache::Client::from_conf(
        aws_sdk_elasticache::config::Builder::from(sdk).interceptor(finished_deletions(gone)).build(),
    )
}

async fn start() -> Aws {
    let moto = MotoServer::start();
    let sdk = sdk_config_for_endpoint(&moto.endpoint).await;
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), "osb-broker").await.unwrap();
    let (queue_url, _dlq) =
        create_queue_with_dlq(&aws_sdk_sqs::Client::new(&sdk), "osb-jobs", 5).await.unwrap();
    let secret = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name("osb/broker-credentials")
        .secret_string(json!({"username": USER, "password": PASS}).to_string())
        .send()
        .await
        .unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        ("TABLE_NAME", "osb-broker".to_string()),
        ("QUEUE_URL", queue_url.clone()),
        ("BROKER_CREDENTIALS_SECRET_ARN", secret.arn().unwrap().to_string()),
        ("NAME_PREFIX", "osb".to_string()),
        ("CACHE_SUBNET_GROUP", "osb-cache".to_string()),
        ("CACHE_SECURITY_GROUP_IDS", "sg-0123456789abcdef0".to_string()),
        ("POLL_DELAY_SECS", "1".to_string()),
    ]);
    let settings = AwsSettings::from_lookup(|k| env.get(k).cloned()).unwrap();
    let rbac = FakeRbac::new();
    let gone: GoneGroups = Arc::default();
    let overrides = ClientOverrides {
        elasticache: Some(elasticache_on_moto(&sdk, gone.clone())),
        elasticache_rbac: Some(rbac.client.clone()),
    };
    let parts = AwsParts::new(&settings, &sdk, overrides);
    // The seed command is idempotent: running it twice adds nothing the second time.
    assert!(parts.seed_catalog(&CatalogFile::builtin()).await.unwrap() > 0);
    assert_eq!(parts.seed_catalog(&CatalogFile::builtin()).await.unwrap(), 0);
    let router = parts.router(&settings).await.unwrap();
    Aws { _moto: moto, sdk, parts, router, queue_url, rbac, gone }
}

impl Aws {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", basic(USER, PASS))
            .header("x-broker-api-version", "2.17")
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Receives what the queue holds and hands it to the provisioner's SQS
    /// handler `deliveries` times (at-least-once delivery), deleting the
    /// messages the handler did not report as failed. Returns how many
    /// messages were received.
    async fn pump(&self, deliveries: usize) -> usize {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let out = sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        let mut event = SqsEvent::default();
        for m in &messages {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            event.records.push(record);
        }
        let mut failed = Vec::new();
        for _ in 0..deliveries {
            let response = shared::sqs::handle_batch(&self.parts.worker, event.clone()).await;
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
        let out = aws_sdk_elasticache::Client::new(&self.sdk).describe_users().send().await.unwrap();
        let mut ids: Vec<String> = out
            .users()
            .iter()
            .filter(|u| u.status() != Some("deleting"))
            .filter_map(|u| u.user_id().map(str::to_string))
            .filter(|id| id.starts_with("osb-"))
            .collect();
        ids.sort();
        ids
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
    let (_, catalog) = aws.call("GET", "/v2/catalog", None).await;
    let redis =
        catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == "elasticache-redis").unwrap();
    let service_id = redis["id"].as_str().unwrap().to_string();
    let plan_id = redis["plans"].as_array().unwrap().iter().find(|p| p["name"] == "small").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let instance = "9a0d6a52-7a8f-4b7e-9f5c-aws0e2e00001";
    let binding = "0c3b7d21-5e6f-4a1b-8c9d-aws0e2e00002";
    let iuri = format!("/v2/service_instances/{instance}");
    let buri = format!("{iuri}/service_bindings/{binding}");
    let ids = json!({"service_id": service_id, "plan_id": plan_id});
    let del = format!("accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}");

    // Provision: one replication group with the deterministic id, and the
    // instance's admin and disabled default users.
    let (status, body) = aws
        .call(
            "PUT",
            &format!("{iuri}?accepts_incomplete=true"),
            Some(json!({
                "service_id": service_id, "plan_id": plan_id, "parameters": {"engine_version": "7.1"},
                "context": {"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": "space-1"}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{iuri}/last_operation"), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let group = aws.parts.provider.cache_id(instance);
    assert_eq!(aws.replication_groups().await, std::slice::from_ref(&group));
    assert_eq!(aws.users().await.len(), 2, "admin and default users: {:?}", aws.users().await);
    assert_eq!(aws.live_secrets().await.len(), 1, "the admin secret: {:?}", aws.live_secrets().await);

    // Bind: one more user, in the user group, and its password in Secrets Manager.
    let (status, body) = aws.call("PUT", &format!("{buri}?accepts_incomplete=true"), Some(ids.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{buri}/last_operation"), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let user = aws.parts.provider.binding_user_id(instance, &format!("b-{binding}"));
    assert!(aws.users().await.contains(&user), "{:?}", aws.users().await);
    assert_eq!(aws.users().await.len(), 3);
    assert!(aws.rbac.state.lock().unwrap().groups[&group].contains(&user));
    let (status, fetched) = aws.call("GET", &buri, None).await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let creds = &fetched["credentials"];
    assert_eq!(creds["tls_enabled"], true);
    assert!(creds["uri"].as_str().unwrap().starts_with(&format!("rediss://b-{binding}:")), "{creds}");
    assert!(creds["password"].as_str().unwrap().len() >= 32);
    assert_eq!(aws.live_secrets().await.len(), 2);

    // Unbind: the user leaves the group and is deleted, and so is its secret.
    let (status, body) = aws.call("DELETE", &format!("{buri}?{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{buri}/last_operation"), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(!aws.users().await.contains(&user));
    assert!(!aws.rbac.state.lock().unwrap().groups[&group].contains(&user));
    assert_eq!(aws.live_secrets().await.len(), 1);

    // Deprovision: nothing left.
    let (status, body) = aws.call("DELETE", &format!("{iuri}?{del}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let op = aws.settle(&format!("{iuri}/last_operation"), deliveries).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(aws.replication_groups().await.is_empty(), "{:?}", aws.replication_groups().await);
    assert!(aws.users().await.is_empty(), "{:?}", aws.users().await);
    assert!(aws.live_secrets().await.is_empty(), "{:?}", aws.live_secrets().await);
    assert!(!aws.rbac.state.lock().unwrap().groups.contains_key(&group), "the user group is left");
    // And the platform is told so on a late poll.
    let (status, body) = aws.call("GET", &format!("{iuri}/last_operation"), None).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("succeeded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_instance_lives_and_dies_in_aws_mode() {
    lifecycle(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_still_makes_each_resource_once() {
    lifecycle(2).await;
}
