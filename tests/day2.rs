//! Day-2 operations through the OSB API and the worker, over the in-memory
//! broker and its scripted provider: the actions an update runs once
//! (restart, failover test, snapshot, snapshot deletion), the snapshots a
//! fetch lists, and a provision restored from another instance's snapshot.
//! What the API refuses names the parameter and says what to send instead.
//! (Laptop mode does the same with real servers: `tests/e2e.rs`; the
//! ElastiCache calls are in `shared/aws/src/elasticache/tests/`.)

use broker_core::domain::{Action, InstanceState, OperationState, SnapshotKind, Step};
use broker_core::ports::{JobQueue, StateStore};
use broker_testing::Call;
use broker_tests::test_broker::{TestBroker, schema_parameters};
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";
const VALKEY: &str = "elasticache-valkey";
const MEMCACHED: &str = "elasticache-memcached";
const ID: &str = "7a1d3e5c-day2-instance";

async fn provision_in(tb: &TestBroker, id: &str, service: &str, plan: &str, org: &str, parameters: Value) {
    let (status, got) = tb.provision_as(id, service, plan, org, parameters).await;
    assert_eq!(status, 202, "{got}");
    assert_eq!(last(tb, id).await.0, "succeeded");
}

async fn provision(tb: &TestBroker, service: &str, plan: &str) {
    provision_in(tb, ID, service, plan, "org-1", json!({})).await;
}

async fn update(tb: &TestBroker, service: &str, parameters: Value) -> (u16, Value) {
    let (status, got) = tb.update_instance(ID, service, None, parameters).await;
    (status.as_u16(), got)
}

async fn last(tb: &TestBroker, id: &str) -> (String, String) {
    tb.last_operation(id).await
}

/// A provision of `id` in organization `org-1` restoring from `source`'s
/// snapshot `snapshot`: the answer.
async fn restore(tb: &TestBroker, id: &str, plan: &str, source: &str, snapshot: &str) -> (u16, Value) {
    let parameters = json!({"restore_from": {"instance_id": source, "snapshot": snapshot}});
    let (status, got) = tb.provision_as(id, REDIS, plan, "org-1", parameters).await;
    (status.as_u16(), got)
}

async fn fetched(tb: &TestBroker, id: &str) -> Value {
    let (status, got) = tb.call("GET", &format!("/v2/service_instances/{id}"), None).await;
    assert_eq!(status, 200, "{got}");
    got
}

fn action_calls(tb: &TestBroker) -> Vec<Call> {
    tb.provider
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::StartAction { .. } | Call::ActionProgress { .. }))
        .collect()
}

#[tokio::test]
async fn a_restart_runs_once_per_request_after_the_changes_and_is_not_kept() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;

    let (status, got) = update(&tb, REDIS, json!({"restart": true})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;

    assert_eq!(last(&tb, ID).await, ("succeeded".into(), "restarted: 1 node rebooted one at a time".into()));
    let cache = tb.store.instance(ID).await.unwrap().unwrap().cache_key().to_string();
    let node = format!("{cache}-001");
    assert_eq!(
        action_calls(&tb),
        vec![
            Call::StartAction { instance: cache.clone(), action: Action::Restart, target: node.clone() },
            Call::ActionProgress { instance: cache.clone(), action: Action::Restart, target: node.clone() },
        ]
    );
    // Modified first (nothing to change), then the action.
    let calls = tb.provider.calls();
    let modify = calls.iter().rposition(|c| matches!(c, Call::Modify(_))).unwrap();
    let start = calls.iter().position(|c| matches!(c, Call::StartAction { .. })).unwrap();
    assert!(modify < start, "{calls:?}");
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    assert!(!instance.parameters.contains_key("restart"), "{:?}", instance.parameters);
    assert_eq!(instance.state, InstanceState::Ready);
    assert!(instance.pending_update.is_none());
    assert!(fetched(&tb, ID).await["parameters"].get("restart").is_none());

    // The same request again is a second restart.
    let (status, _) = update(&tb, REDIS, json!({"restart": true})).await;
    assert_eq!(status, 202);
    tb.drain(20).await;
    assert_eq!(tb.provider.count(|c| matches!(c, Call::StartAction { .. })), 2);
}

/// Each action, its job delivered twice more while its first unit is being
/// waited for, and again after it ended: every unit is started once.
#[tokio::test]
async fn a_job_delivered_again_never_repeats_a_unit_of_any_action() {
    for (plan, parameters, maintenance) in [
        ("small", json!({"restart": true}), false),
        ("ha-3", json!({"test_failover": true}), false),
        ("small", json!({"snapshot": "twice"}), false),
        ("small", json!({"delete_snapshot": "seeded"}), false),
        ("small", json!({}), true),
    ] {
        let tb = TestBroker::new().await;
        provision(&tb, REDIS, plan).await;
        let cache = tb.store.instance(ID).await.unwrap().unwrap().cache_key().to_string();
        tb.provider.add_snapshot(&cache, "seeded", SnapshotKind::Named, 1_000);
        tb.provider.set_service_updates(&["elasticache-20261101-001", "elasticache-20261115-002"]);
        let (service_id, _) = tb.plan_id(REDIS, plan);
        let mut request = json!({"service_id": service_id, "parameters": parameters});
        if maintenance {
            tb.change_plan(REDIS, plan, |p| p.maintenance_version = Some("2.0.0".into())).await;
            request["maintenance_info"] = json!({"version": "2.0.0"});
        }
        // The first unit takes a while.
        tb.provider.script(
            "action_progress",
            vec![Ok(broker_core::ports::Progress::Working { detail: "busy".into() })],
        );
        let (status, got) = tb
            .call("PATCH", &format!("/v2/service_instances/{ID}?accepts_incomplete=true"), Some(request))
            .await;
        assert_eq!(status, 202, "{parameters}: {got}");
        let op_id = got["operation"].as_str().unwrap().to_string();
        tb.drain(1).await;
        let op = tb.store.operation(&op_id).await.unwrap().unwrap();
        assert_eq!((op.step, op.action_done), (Step::WaitAction, 0), "{parameters}");

        let job = broker_core::ports::Job::for_operation(&op);
        tb.queue.enqueue(&job, 0).await.unwrap();
        tb.queue.enqueue(&job, 0).await.unwrap();
        tb.drain(20).await;
        tb.queue.enqueue(&job, 0).await.unwrap();
        tb.drain(5).await;

        assert_eq!(last(&tb, ID).await.0, "succeeded", "{parameters}");
        let op = tb.store.operation(&op_id).await.unwrap().unwrap();
        let started: Vec<String> = action_calls(&tb)
            .into_iter()
            .filter_map(|c| match c {
                Call::StartAction { target, .. } => Some(target),
                _ => None,
            })
            .collect();
        let units: Vec<String> = op.action_steps.iter().map(|u| u.target.clone()).collect();
        assert_eq!(started, units, "{parameters}: each unit started once");
        assert_eq!(op.action_done, units.len());
    }
}

#[tokio::test]
async fn a_failover_test_needs_a_plan_with_replicas_and_says_which_node_groups_failed_over() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    let (status, got) = update(&tb, REDIS, json!({"test_failover": true})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'test_failover': plan small has no replicas to fail over to; only plans with replicas and automatic failover can test it"
    );

    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "ha-3").await;
    let (status, got) = update(&tb, REDIS, json!({"test_failover": true})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    assert_eq!(
        last(&tb, ID).await,
        ("succeeded".into(), "failover tested: 1 node group failed over to a new primary".into())
    );
}

#[tokio::test]
async fn cluster_mode_caches_are_not_rebooted_and_the_refusal_says_what_to_use() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "cluster-3x2").await;
    let (status, got) = update(&tb, REDIS, json!({"restart": true})).await;
    assert_eq!(status, 400, "{got}");
    let said = got["description"].as_str().unwrap();
    assert!(said.starts_with("parameter 'restart': plan cluster-3x2 runs in cluster mode"), "{said}");
    assert!(said.contains("test_failover"), "{said}");
    assert!(action_calls(&tb).is_empty());
}

#[tokio::test]
async fn one_action_per_update_and_actions_only_on_update() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    let (status, got) = update(&tb, REDIS, json!({"restart": true, "snapshot": "a"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameters 'restart' and 'snapshot' are each an action of their own; send one of them per update"
    );
    let (status, got) = update(&tb, REDIS, json!({"restart": false})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'restart' is false; it takes true (send it to run the action once)"
    );

    let (status, got) =
        tb.provision_as("another-one", REDIS, "small", "org-1", json!({"restart": true})).await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["description"].as_str().unwrap().starts_with("parameter 'restart': it is an action of an update")
    );
}

#[tokio::test]
async fn a_named_snapshot_is_listed_when_fetched_and_deleted_by_name() {
    let tb = TestBroker::new().await;
    provision(&tb, VALKEY, "dev").await;

    let (status, got) = update(&tb, VALKEY, json!({"snapshot": "before-upgrade"})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    assert_eq!(last(&tb, ID).await, ("succeeded".into(), "snapshot before-upgrade taken".into()));
    let got = fetched(&tb, ID).await;
    let snapshots = got["metadata"]["attributes"]["snapshots"].as_array().unwrap_or_else(|| panic!("{got}"));
    assert_eq!(snapshots.len(), 1, "{got}");
    assert_eq!(snapshots[0]["name"], "before-upgrade");
    assert_eq!(snapshots[0]["kind"], "named");
    assert_eq!(snapshots[0]["status"], "available");
    assert!(snapshots[0]["created_at"].as_str().unwrap().ends_with('Z'));

    // The name is taken now; a name it does not have cannot be deleted.
    let (status, got) = update(&tb, VALKEY, json!({"snapshot": "before-upgrade"})).await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["description"].as_str().unwrap().contains("has a snapshot named before-upgrade already"),
        "{got}"
    );
    let (status, got) = update(&tb, VALKEY, json!({"delete_snapshot": "nightly"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        format!(
            "parameter 'delete_snapshot': instance {ID} has no snapshot named nightly; its named snapshots: before-upgrade"
        )
    );
    let (status, got) = update(&tb, VALKEY, json!({"snapshot": "Bad_Name"})).await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["description"]
            .as_str()
            .unwrap()
            .starts_with("parameter 'snapshot': \"Bad_Name\" is not a snapshot name")
    );

    let (status, got) = update(&tb, VALKEY, json!({"delete_snapshot": "before-upgrade"})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    assert_eq!(last(&tb, ID).await, ("succeeded".into(), "snapshot before-upgrade deleted".into()));
    let got = fetched(&tb, ID).await;
    assert_eq!(got["metadata"]["attributes"]["snapshots"], json!([]), "{got}");
}

#[tokio::test]
async fn memcached_takes_a_restart_but_no_snapshot() {
    let tb = TestBroker::new().await;
    provision(&tb, MEMCACHED, "dev").await;
    let (status, got) = update(&tb, MEMCACHED, json!({"snapshot": "a"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'snapshot': Memcached keeps no snapshots (its data lives in memory only)"
    );
    let (status, got) = update(&tb, MEMCACHED, json!({"restart": true})).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    assert_eq!(last(&tb, ID).await.0, "succeeded");
    assert!(fetched(&tb, ID).await["metadata"]["attributes"].get("snapshots").is_none());
}

#[tokio::test]
async fn a_restore_takes_the_named_or_newest_snapshot_of_an_instance_in_the_same_space() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    let source_cache = tb.store.instance(ID).await.unwrap().unwrap().cache_key().to_string();
    tb.provider.add_snapshot(&source_cache, "monday", SnapshotKind::Named, 1_000);
    tb.provider.add_snapshot(&source_cache, "tuesday", SnapshotKind::Named, 2_000);

    provision_in(
        &tb,
        "restored-1",
        REDIS,
        "medium",
        "org-1",
        json!({"restore_from": {"instance_id": ID, "snapshot": "latest"}}),
    )
    .await;
    let restored = tb.store.instance("restored-1").await.unwrap().unwrap();
    assert!(tb.provider.calls().contains(&Call::Restore {
        instance: restored.cache_key().to_string(),
        reference: format!("{source_cache}/tuesday"),
    }));
    let got = fetched(&tb, "restored-1").await;
    assert_eq!(
        got["metadata"]["attributes"]["restored_from"],
        json!({"instance_id": ID, "snapshot": "tuesday"})
    );
    assert_eq!(got["parameters"]["restore_from"]["snapshot"], "latest", "the parameters as sent");

    // An update of the restored instance keeps what it was restored from.
    let (service_id, _) = tb.plan_id(REDIS, "medium");
    let (status, got) = tb
        .call(
            "PATCH",
            "/v2/service_instances/restored-1?accepts_incomplete=true",
            Some(json!({"service_id": service_id, "parameters": {"restore_from": {"instance_id": ID, "snapshot": "monday"}}})),
        )
        .await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["description"]
            .as_str()
            .unwrap()
            .starts_with("parameter 'restore_from': it is for provisioning only")
    );
    let (status, got) = tb
        .call(
            "PATCH",
            "/v2/service_instances/restored-1?accepts_incomplete=true",
            Some(json!({"service_id": service_id, "parameters": {"log_delivery": []}})),
        )
        .await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    let restored = tb.store.instance("restored-1").await.unwrap().unwrap();
    assert_eq!(restored.parameters["restore_from"]["snapshot"], "latest");
    assert_eq!(restored.restored_from.unwrap().snapshot, "tuesday");

    // By name.
    provision_in(
        &tb,
        "restored-2",
        REDIS,
        "small",
        "org-1",
        json!({"restore_from": {"instance_id": ID, "snapshot": "monday"}}),
    )
    .await;
    let restored = tb.store.instance("restored-2").await.unwrap().unwrap();
    assert_eq!(restored.restored_from.unwrap().reference, format!("{source_cache}/monday"));
}

#[tokio::test]
async fn a_restore_from_another_tenant_is_refused_like_one_from_nowhere_and_reveals_nothing() {
    let tb = TestBroker::new().await;
    provision_in(&tb, ID, REDIS, "small", "org-other", json!({})).await;
    let cache = tb.store.instance(ID).await.unwrap().unwrap().cache_key().to_string();
    tb.provider.add_snapshot(&cache, "secret-name", SnapshotKind::Named, 1_000);

    let refused = |id: &str| {
        format!(
            "parameter 'restore_from': no instance \"{id}\" of service {REDIS} in this organization and space has snapshots to restore from; name one of yours"
        )
    };
    for (source, wanted) in [(ID, "secret-name"), ("no-such-instance", "latest")] {
        let (status, got) = restore(&tb, "thief", "small", source, wanted).await;
        assert_eq!(status, 400, "{got}");
        assert_eq!(got["description"], refused(source));
        assert!(!got.to_string().contains("secret-name"));
    }
    assert!(tb.store.instance("thief").await.unwrap().is_none());

    // Another service's instance in the same space is refused the same way.
    provision_in(&tb, "valkey-1", VALKEY, "dev", "org-1", json!({})).await;
    let (status, got) = restore(&tb, "thief", "small", "valkey-1", "latest").await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(got["description"], refused("valkey-1"));
}

#[tokio::test]
async fn a_restore_names_the_snapshots_it_could_use_and_a_deleted_instances_final_one_counts() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    let (status, got) = restore(&tb, "restored", "small", ID, "latest").await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        format!(
            "parameter 'restore_from': instance {ID}: it has no snapshot to restore from yet (it has none available)"
        )
    );

    let cache = tb.store.instance(ID).await.unwrap().unwrap().cache_key().to_string();
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let (status, _) = tb
        .call(
            "DELETE",
            &format!(
                "/v2/service_instances/{ID}?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}"
            ),
            None,
        )
        .await;
    assert_eq!(status, 202);
    tb.drain(20).await;
    tb.provider.add_snapshot(&cache, "final-1", SnapshotKind::Final, 3_000);
    assert_eq!(tb.store.instance(ID).await.unwrap().unwrap().state, InstanceState::Deleted);

    let (status, got) = restore(&tb, "restored", "small", ID, "monday").await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        format!(
            "parameter 'restore_from': instance {ID}: it has no snapshot named monday (its snapshots: final-1)"
        )
    );
    provision_in(
        &tb,
        "restored",
        REDIS,
        "small",
        "org-1",
        json!({"restore_from": {"instance_id": ID, "snapshot": "final-1"}}),
    )
    .await;
    assert_eq!(last(&tb, "restored").await.0, "succeeded");
}

#[tokio::test]
async fn the_catalog_publishes_actions_in_update_schemas_and_restore_in_create_schemas() {
    let tb = TestBroker::new().await;
    let (status, catalog) = tb.call("GET", "/v2/catalog", None).await;
    assert_eq!(status, 200);
    let props = |service: &str, plan: &str, which: &str| schema_parameters(&catalog, service, plan, which);
    let update = props(REDIS, "small", "update");
    for p in ["restart", "snapshot", "delete_snapshot"] {
        assert!(update.contains(&p.to_string()), "{update:?}");
    }
    assert!(!update.contains(&"test_failover".to_string()), "small has no replicas: {update:?}");
    assert!(!update.contains(&"restore_from".to_string()));
    assert!(props(REDIS, "small", "create").contains(&"restore_from".to_string()));
    assert!(!props(REDIS, "small", "create").contains(&"restart".to_string()));
    assert!(props(REDIS, "ha-3", "update").contains(&"test_failover".to_string()));
    assert!(!props(REDIS, "cluster-3x2", "update").contains(&"restart".to_string()));
    let memcached = props(MEMCACHED, "dev", "update");
    assert!(memcached.contains(&"restart".to_string()) && !memcached.contains(&"snapshot".to_string()));
}

#[tokio::test]
async fn a_failed_action_fails_the_update_and_leaves_the_instance_usable() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    tb.provider.script(
        "start_action",
        vec![Err(broker_core::ports::ProviderError::Permanent(
            "CreateSnapshot failed: SnapshotQuotaExceededFault: too many".into(),
        ))],
    );
    let (status, got) = update(&tb, REDIS, json!({"snapshot": "nightly"})).await;
    assert_eq!(status, 202, "{got}");
    let op_id = got["operation"].as_str().unwrap().to_string();
    tb.drain(20).await;
    let op = tb.store.operation(&op_id).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Failed);
    assert!(op.description.contains("SnapshotQuotaExceededFault"), "{}", op.description);
    assert_eq!(op.instance_usable, Some(true));
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    assert_eq!(instance.state, InstanceState::Ready);
    assert!(!instance.parameters.contains_key("snapshot"));
}

#[tokio::test]
async fn a_newer_maintenance_info_applies_the_pending_service_updates_then_the_instance_is_on_it() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    let maintenance = |got: &Value| got["maintenance_info"].clone();
    assert_eq!(
        maintenance(&fetched(&tb, ID).await)["version"],
        "1.0.0",
        "the plan's version when it was provisioned"
    );
    // The operator publishes a new maintenance version with the plan.
    tb.change_plan(REDIS, "small", |p| {
        p.maintenance_version = Some("1.1.0".into());
        p.maintenance_description = Some("Redis OSS 7.1 patches of November".into());
    })
    .await;
    tb.provider.set_service_updates(&["elasticache-20261101-001", "elasticache-20261115-002"]);
    let (service_id, _) = tb.plan_id(REDIS, "small");
    let upgrade = |version: &str, parameters: Value| json!({"service_id": service_id, "maintenance_info": {"version": version}, "parameters": parameters});
    let uri = format!("/v2/service_instances/{ID}?accepts_incomplete=true");

    // Beside an action it is refused: two updates, two operations.
    let (status, got) = tb.call("PATCH", &uri, Some(upgrade("1.1.0", json!({"restart": true})))).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "maintenance_info: this update asks for maintenance version 1.1.0 and for the action 'restart'; send them as two updates"
    );

    let (status, got) = tb.call("PATCH", &uri, Some(upgrade("1.1.0", json!({})))).await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    assert_eq!(last(&tb, ID).await, ("succeeded".into(), "maintenance applied: 2 service updates".into()));
    let started: Vec<String> = action_calls(&tb)
        .into_iter()
        .filter_map(|c| match c {
            Call::StartAction { action: Action::Maintenance, target, .. } => Some(target),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["elasticache-20261101-001", "elasticache-20261115-002"]);
    assert_eq!(
        maintenance(&fetched(&tb, ID).await),
        json!({"version": "1.1.0", "description": "Redis OSS 7.1 patches of November"})
    );

    // On it now: the same maintenance_info changes nothing; an older one is
    // the spec's MaintenanceInfoConflict.
    let (status, _) = tb.call("PATCH", &uri, Some(upgrade("1.1.0", json!({})))).await;
    assert_eq!(status, 200);
    let (status, got) = tb.call("PATCH", &uri, Some(upgrade("1.0.0", json!({})))).await;
    assert_eq!(status, 422, "{got}");
    assert_eq!(got["error"], "MaintenanceInfoConflict");
}

#[tokio::test]
async fn a_maintenance_with_nothing_pending_says_so_and_the_instance_is_on_the_new_version() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small").await;
    tb.change_plan(REDIS, "small", |p| p.maintenance_version = Some("1.1.0".into())).await;
    let (service_id, _) = tb.plan_id(REDIS, "small");
    let (status, got) = tb
        .call(
            "PATCH",
            &format!("/v2/service_instances/{ID}?accepts_incomplete=true"),
            Some(json!({"service_id": service_id, "maintenance_info": {"version": "1.1.0"}})),
        )
        .await;
    assert_eq!(status, 202, "{got}");
    tb.drain(20).await;
    assert_eq!(
        last(&tb, ID).await,
        ("succeeded".into(), "maintenance applied: no service update was pending for the cache".into())
    );
    assert_eq!(tb.store.instance(ID).await.unwrap().unwrap().maintenance_version.as_deref(), Some("1.1.0"));
}
