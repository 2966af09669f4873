//! The warm pool, through the OSB API and the worker, on a broker whose
//! users take time to add (as ElastiCache's do): a provision takes a ready
//! cache made in advance and answers 201 at once; the pool is refilled,
//! shrunk and cleaned by the reconciler; a pooled cache is never handed to
//! two instances; a claimed cache is deleted, rotated and tagged as its
//! instance's.

use axum::http::StatusCode;
use broker_core::domain::{Instance, InstanceState, now};
use broker_core::ports::{ProviderError, SecretStore, StateStore};
use broker_core::rotation::Target;
use broker_testing::Call;
use broker_tests::test_broker::TestBroker;
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";
const ASYNC: &str = "accepts_incomplete=true";

/// A broker whose Redis OSS plan `small` keeps `size` caches in its pool.
async fn pooled(size: u8) -> TestBroker {
    let tb = TestBroker::new().await;
    set_pool_size(&tb, size).await;
    tb
}

async fn set_pool_size(tb: &TestBroker, size: u8) {
    tb.change_plan(REDIS, "small", |p| p.warm_pool_size = size).await;
}

/// Runs a reconciler pass and the worker until the queue is empty.
async fn reconcile(tb: &TestBroker) -> broker_core::reconcile::Report {
    let report = tb.reconciler.run(now()).await.expect("reconcile");
    tb.drain(500).await;
    report
}

fn body(tb: &TestBroker, parameters: Value) -> Value {
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    json!({ "service_id": service_id, "plan_id": plan_id, "organization_guid": "org-1",
            "space_guid": "space-1", "context": {"platform": "cloudfoundry", "organization_guid": "org-1",
            "space_guid": "space-1"}, "parameters": parameters })
}

async fn provision(tb: &TestBroker, id: &str, query: &str) -> (StatusCode, Value) {
    tb.call("PUT", &format!("/v2/service_instances/{id}?{query}"), Some(body(tb, json!({})))).await
}

async fn record(tb: &TestBroker, id: &str) -> Instance {
    tb.store.instance(id).await.unwrap().unwrap_or_else(|| panic!("no record {id}"))
}

async fn members(tb: &TestBroker) -> Vec<Instance> {
    let (_, plan_id) = tb.plan_id(REDIS, "small");
    let pool = tb.store.pool(&plan_id).await.unwrap().map(|p| p.members).unwrap_or_default();
    let mut out = Vec::new();
    for m in pool {
        out.push(record(tb, &m).await);
    }
    out
}

async fn last_operation(tb: &TestBroker, id: &str) -> Value {
    let (status, body) = tb.call("GET", &format!("/v2/service_instances/{id}/last_operation"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn creates(tb: &TestBroker) -> Vec<String> {
    tb.provider
        .calls()
        .into_iter()
        .filter_map(|c| if let Call::Create(k) = c { Some(k) } else { None })
        .collect()
}

/// The keys of every delete call (a cache is asked again until it is gone).
fn deletes(tb: &TestBroker) -> Vec<String> {
    tb.provider
        .calls()
        .into_iter()
        .filter_map(|c| if let Call::Delete { instance, .. } = c { Some(instance) } else { None })
        .collect()
}

#[tokio::test]
async fn the_reconciler_fills_the_pool_with_ready_caches_of_the_plans_default_version() {
    let tb = pooled(2).await;
    let report = reconcile(&tb).await;
    assert_eq!((report.pool_added, report.pool_retired), (2, 0));
    let members = members(&tb).await;
    assert_eq!(members.len(), 2);
    let (_, plan_id) = tb.plan_id(REDIS, "small");
    let plan = tb.catalog.plans.iter().find(|p| p.id == plan_id).unwrap();
    for m in &members {
        assert!(m.pooled && m.claimed_by.is_none(), "{m:?}");
        assert_eq!(m.state, InstanceState::Ready);
        assert_eq!(m.engine_version, plan.default_engine_version);
        assert!(m.admin_secret.is_some() && m.endpoint.is_some());
        assert_eq!(m.spares.len(), usize::from(plan.spare_binding_users), "spare users made with the cache");
        assert!(m.organization_guid.is_none(), "no tenant yet");
    }
    assert_eq!(creates(&tb).len(), 2);
    // A second pass has nothing to do.
    let report = reconcile(&tb).await;
    assert_eq!((report.pool_added, report.pool_retired), (0, 0));
    assert_eq!(creates(&tb).len(), 2);
}

#[tokio::test]
async fn a_provision_takes_a_pooled_cache_answers_201_and_binds_at_once() {
    let tb = pooled(1).await;
    reconcile(&tb).await;
    let member = members(&tb).await.remove(0);

    let got = provision(&tb, "i-1", ASYNC).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);

    let i = record(&tb, "i-1").await;
    assert_eq!(i.state, InstanceState::Ready);
    assert_eq!(i.cache.as_deref(), Some(member.id.as_str()), "the record names the pooled cache");
    assert_eq!(i.admin_secret, member.admin_secret);
    assert_eq!(i.endpoint, member.endpoint);
    assert_eq!(i.organization_guid.as_deref(), Some("org-1"));
    let op = last_operation(&tb, "i-1").await;
    assert_eq!(op["state"], "succeeded");
    assert!(op["description"].as_str().unwrap().contains("from the warm pool"), "{op}");
    let claimed = record(&tb, &member.id).await;
    assert_eq!(claimed.claimed_by.as_deref(), Some("i-1"));
    assert_eq!(claimed.state, InstanceState::Deleted);

    // Bindable at once: a spare user made with the pooled cache is claimed.
    let (status, bound) = tb
        .call(
            "PUT",
            "/v2/service_instances/i-1/service_bindings/b-1",
            Some(json!({"service_id": body(&tb, json!({}))["service_id"], "plan_id": body(&tb, json!({}))["plan_id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    assert!(bound["credentials"]["uri"].as_str().is_some(), "{bound}");

    // The worker tags the cache for its tenant and makes a replacement.
    tb.drain(500).await;
    let retags: Vec<_> = tb
        .provider
        .calls()
        .into_iter()
        .filter_map(|c| if let Call::Retag { instance, tags } = c { Some((instance, tags)) } else { None })
        .collect();
    assert_eq!(retags.len(), 1, "{retags:?}");
    assert_eq!(retags[0].0, member.id, "the pooled cache, by its key");
    for tag in [("broker-instance-id", "i-1"), ("organization", "org-1"), ("space", "space-1")] {
        assert!(retags[0].1.contains(&(tag.0.into(), tag.1.into())), "{tag:?} in {:?}", retags[0].1);
    }
    let now_pooled = members(&tb).await;
    assert_eq!(now_pooled.len(), 1);
    assert_ne!(now_pooled[0].id, member.id);
    assert_eq!(now_pooled[0].state, InstanceState::Ready, "replacement made");
    assert!(!creates(&tb).contains(&"i-1".to_string()), "no cache was made for i-1 itself");
    assert_eq!(record(&tb, "i-1").await.spares_operation, None, "the tagging finished");
}

#[tokio::test]
async fn a_pooled_provision_needs_no_accepts_incomplete_but_one_without_a_ready_cache_does() {
    let tb = pooled(1).await;
    reconcile(&tb).await;
    assert_eq!(provision(&tb, "i-1", "").await.0, StatusCode::CREATED);
    // The replacement is still being made: nothing ready.
    let got = provision(&tb, "i-2", "").await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert_eq!(got.1["error"], "AsyncRequired");
    assert!(tb.store.instance("i-2").await.unwrap().is_none(), "nothing recorded for a refused request");
}

#[tokio::test]
async fn with_the_pool_empty_or_another_version_a_provision_makes_its_own_cache_and_says_why() {
    let tb = pooled(1).await;
    reconcile(&tb).await;
    let (_, plan_id) = tb.plan_id(REDIS, "small");
    let plan = tb.catalog.plans.iter().find(|p| p.id == plan_id).unwrap().clone();
    let other =
        plan.engine_versions.iter().find(|v| **v != plan.default_engine_version).expect("another version");

    let got = tb
        .call(
            "PUT",
            &format!("/v2/service_instances/i-v?{ASYNC}"),
            Some(body(&tb, json!({"engine_version": other}))),
        )
        .await;
    assert_eq!(got.0, StatusCode::ACCEPTED, "{}", got.1);
    tb.drain(500).await;
    let op = last_operation(&tb, "i-v").await;
    assert_eq!(op["state"], "succeeded");
    let description = op["description"].as_str().unwrap();
    assert!(description.contains("a cache of its own"), "{description}");
    assert!(description.contains(&plan.default_engine_version), "{description}");
    assert_eq!(record(&tb, "i-v").await.cache_key(), "i-v");
    assert_eq!(members(&tb).await.len(), 1, "the pooled cache stays in the pool");

    // Claim the one ready cache; the next provision finds none ready.
    assert_eq!(provision(&tb, "i-1", ASYNC).await.0, StatusCode::CREATED);
    let got = provision(&tb, "i-2", ASYNC).await;
    assert_eq!(got.0, StatusCode::ACCEPTED, "{}", got.1);
    tb.drain(500).await;
    let description = last_operation(&tb, "i-2").await["description"].as_str().unwrap().to_string();
    assert!(description.contains("the warm pool had no ready cache"), "{description}");
}

#[tokio::test]
async fn concurrent_provisions_never_take_the_same_pooled_cache() {
    let tb = pooled(1).await;
    reconcile(&tb).await;
    let (a, b, c) = tokio::join!(
        provision(&tb, "i-a", ASYNC),
        provision(&tb, "i-b", ASYNC),
        provision(&tb, "i-c", ASYNC)
    );
    let statuses = [a.0, b.0, c.0];
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 2, "{statuses:?}");
    tb.drain(500).await;
    let mut keys = Vec::new();
    for id in ["i-a", "i-b", "i-c"] {
        let i = record(&tb, id).await;
        assert_eq!(i.state, InstanceState::Ready, "{id}");
        keys.push(i.cache_key().to_string());
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "three caches for three instances: {keys:?}");
}

#[tokio::test]
async fn lowering_the_pool_size_deletes_the_surplus_and_never_a_claimed_cache() {
    let tb = pooled(2).await;
    reconcile(&tb).await;
    assert_eq!(provision(&tb, "i-1", ASYNC).await.0, StatusCode::CREATED);
    tb.drain(500).await;
    let claimed_key = record(&tb, "i-1").await.cache_key().to_string();
    let pooled_now: Vec<String> = members(&tb).await.into_iter().map(|m| m.id).collect();
    assert_eq!(pooled_now.len(), 2, "refilled after the claim");

    set_pool_size(&tb, 0).await;
    let report = reconcile(&tb).await;
    assert_eq!(report.pool_retired, 2);
    assert!(members(&tb).await.is_empty());
    let mut deleted = deletes(&tb);
    deleted.sort();
    deleted.dedup();
    let mut expected = pooled_now.clone();
    expected.sort();
    assert_eq!(deleted, expected, "only the unclaimed caches");
    for m in &pooled_now {
        assert_eq!(record(&tb, m).await.state, InstanceState::Deleted, "{m}");
    }
    assert!(!deleted.contains(&claimed_key));
    assert_eq!(record(&tb, "i-1").await.state, InstanceState::Ready);
    // Nothing left for a later pass.
    let report = reconcile(&tb).await;
    assert_eq!((report.pool_added, report.pool_retired), (0, 0));
}

#[tokio::test]
async fn a_member_whose_provision_failed_is_deleted_and_replaced() {
    let tb = pooled(1).await;
    tb.provider
        .script("create", vec![Err(ProviderError::Permanent("no capacity for cache.t4g.small".into()))]);
    reconcile(&tb).await;
    let failed = {
        let (_, plan_id) = tb.plan_id(REDIS, "small");
        let pool = tb.store.pool(&plan_id).await.unwrap().unwrap();
        record(&tb, &pool.members[0]).await
    };
    assert_eq!(failed.state, InstanceState::ProvisionFailed);
    // A provision meanwhile makes its own cache.
    assert_eq!(provision(&tb, "i-1", ASYNC).await.0, StatusCode::ACCEPTED);

    let report = reconcile(&tb).await;
    assert_eq!((report.pool_added, report.pool_retired), (1, 1));
    assert_eq!(record(&tb, &failed.id).await.state, InstanceState::Deleted, "what it made is cleaned up");
    assert!(deletes(&tb).contains(&failed.id));
    let now_pooled = members(&tb).await;
    assert_eq!(now_pooled.len(), 1);
    assert_eq!(now_pooled[0].state, InstanceState::Ready);
}

#[tokio::test]
async fn deprovisioning_a_claimed_instance_deletes_its_pooled_cache_and_lets_the_member_record_go() {
    let tb = pooled(1).await;
    reconcile(&tb).await;
    assert_eq!(provision(&tb, "i-1", ASYNC).await.0, StatusCode::CREATED);
    tb.drain(500).await;
    let key = record(&tb, "i-1").await.cache_key().to_string();
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let (status, _) = tb
        .call(
            "DELETE",
            &format!("/v2/service_instances/i-1?service_id={service_id}&plan_id={plan_id}&{ASYNC}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tb.drain(500).await;
    assert_eq!(record(&tb, "i-1").await.state, InstanceState::Deleted);
    assert!(deletes(&tb).contains(&key), "the pooled cache, by its key");
    assert!(tb.provider.caches().iter().all(|c| *c != key));
    let member = record(&tb, &key).await;
    assert!(member.expires_at.is_some(), "the member record is purged with the instance's");
    // Every secret made with the cache is gone.
    for reference in member.admin_secret.iter() {
        assert!(tb.secrets.describe(reference).await.is_err(), "{reference} should be deleted");
    }
}

#[tokio::test]
async fn a_claimed_caches_admin_credential_rotates_as_its_instances() {
    let tb = pooled(1).await;
    reconcile(&tb).await;
    assert_eq!(provision(&tb, "i-1", ASYNC).await.0, StatusCode::CREATED);
    tb.drain(500).await;
    let i = record(&tb, "i-1").await;
    let key = i.cache_key().to_string();
    tb.rotator.rotate_now(&Target::Admin { instance_id: "i-1".into() }).await.expect("rotate");
    let set = tb.provider.count(|c| matches!(c, Call::SetPasswords { instance, .. } if *instance == key));
    assert!(set >= 1, "the pooled cache's admin got the new password");
    let after = record(&tb, "i-1").await;
    assert!(after.rotation.is_some() && after.rotated_at.is_some(), "recorded on the instance: {after:?}");
    assert!(record(&tb, &key).await.rotation.is_none(), "not on the member record");
    tb.drain(500).await;
    assert!(tb.provider.calls().iter().all(|c| !matches!(c, Call::Create(k) if k == "i-1")));
}

/// A crash right after the claim's transaction, before its tagging job is
/// enqueued (the queue refuses it, as a dying process would never send it):
/// nothing tags the cache until the reconciler finds the lost job; a
/// retried provision finds the claimed instance instead of claiming again.
/// One cache, one claim.
#[tokio::test]
async fn a_claim_whose_tagging_job_was_lost_is_finished_once_and_never_claimed_twice() {
    let tb = TestBroker::first_enqueues_fail().await;
    set_pool_size(&tb, 1).await;
    // The first enqueues of the refill fail too; passes until a member is ready.
    for _ in 0..4 {
        reconcile(&tb).await;
    }
    let member =
        members(&tb).await.into_iter().find(|m| m.state == InstanceState::Ready).expect("a ready member");
    let retagged = |tb: &TestBroker| {
        tb.provider.count(|c| matches!(c, Call::Retag { instance, .. } if *instance == member.id))
    };

    let first = provision(&tb, "i-1", ASYNC).await;
    assert_eq!(first.0, StatusCode::CREATED, "{first:?}");
    assert_eq!(record(&tb, "i-1").await.cache_key(), member.id, "the claim is recorded");
    tb.drain(500).await;
    assert_eq!(retagged(&tb), 0, "the tagging job was lost");

    let report = reconcile(&tb).await;
    assert!(report.stalled >= 1, "{report:?}");
    assert_eq!(retagged(&tb), 1, "the reconciler's job tags the cache for its instance");
    let i = record(&tb, "i-1").await;
    assert_eq!((i.state, i.cache_key()), (InstanceState::Ready, member.id.as_str()));
    assert!(i.spares_operation.is_none(), "the tagging operation ended: {i:?}");

    let retried = provision(&tb, "i-1", ASYNC).await;
    assert_eq!(retried.0, StatusCode::OK, "{retried:?}");
    let claims =
        tb.store.instances().await.unwrap().into_iter().filter(|m| m.claimed_by.as_deref() == Some("i-1"));
    assert_eq!(claims.count(), 1, "one member claimed, once");
    assert!(!creates(&tb).contains(&"i-1".to_string()), "no cache of its own");
}
