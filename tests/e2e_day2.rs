//! Day-2 operations end to end in laptop mode, with real servers: a
//! restart keeps what was written before it; a named snapshot restores
//! into a new instance with exactly the data it held; another tenant
//! cannot restore from it; a deprovisioned instance's final snapshot is
//! restorable; deleting a snapshot removes it; a Redis OSS instance moved
//! to Valkey keeps its data and its users' passwords.

use axum::http::StatusCode;
use broker_tests::clients::{redis_client, with_uri};
use broker_tests::laptop_osb::{Provisioned, bind, deprovision, provision, provision_in, redis_get};
use broker_tests::{LocalBroker, ProcessGuard};
use serde_json::{Value, json};

/// SETs `key` with a client made from a binding's `credentials`.
async fn set(credentials: &Value, key: &str, value: &str) {
    let client = redis_client(credentials).unwrap();
    let mut con = broker_tests::clients::connection(&client).await.unwrap();
    redis::cmd("SET").arg(key).arg(value).query_async::<()>(&mut con).await.unwrap();
}

/// PATCHes the instance with `parameters` and waits for the update.
async fn update(b: &LocalBroker, p: &Provisioned, parameters: Value) -> Value {
    let (status, body) = b
        .call(
            "PATCH",
            &format!("/v2/service_instances/{}?accepts_incomplete=true", p.instance),
            Some(json!({"service_id": p.service_id, "parameters": parameters})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    b.wait_for(&format!("/v2/service_instances/{}/last_operation", p.instance)).await
}

/// A binding's credentials as fetched now, as a platform does at each
/// release (a restarted server may listen on another port).
async fn credentials(b: &LocalBroker, p: &Provisioned, binding: &str) -> Value {
    let uri = format!("/v2/service_instances/{}/service_bindings/{binding}", p.instance);
    let (status, got) = b.call("GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    got["credentials"].clone()
}

async fn snapshot_names(b: &LocalBroker, p: &Provisioned) -> Vec<(String, String)> {
    let (status, got) = b.call("GET", &format!("/v2/service_instances/{}", p.instance), None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    got["metadata"]["attributes"]["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no snapshots listed: {got}"))
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["kind"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_what_was_written_before_it() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-valkey", "dev", "restart-1", json!({})).await;
    let creds = bind(&b, &p, "restart-binding").await;
    set(&creds, "before", "restart").await;
    let pid = b.laptop.provider.servers()[0].pid.expect("running");

    let op = update(&b, &p, json!({"restart": true})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["description"], "restarted: 1 node rebooted one at a time");
    let after = b.laptop.provider.servers()[0].pid.expect("running again");
    assert_ne!(pid, after, "a new server process");

    let creds = credentials(&b, &p, "restart-binding").await;
    assert_eq!(redis_get(&creds, "before").await.unwrap().as_deref(), Some("restart"));
    deprovision(&b, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_into_a_new_instance_of_the_same_space_only() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let source = provision(&b, "elasticache-redis", "small", "source-1", json!({})).await;
    let creds = bind(&b, &source, "source-binding").await;
    let uri = creds["uri"].as_str().unwrap().to_string();
    set(&creds, "kept", "in the snapshot").await;

    let op = update(&b, &source, json!({"snapshot": "before-change"})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["description"], "snapshot before-change taken");
    assert_eq!(snapshot_names(&b, &source).await, vec![("before-change".to_string(), "named".to_string())]);
    set(&creds, "later", "after the snapshot").await;

    // Another organization names the instance and the snapshot: refused,
    // the same way as an instance that does not exist.
    let (service_id, plan_id) = b.plan("elasticache-redis", "small").await;
    let (status, got) = b
        .call(
            "PUT",
            "/v2/service_instances/thief?accepts_incomplete=true",
            Some(json!({"service_id": service_id, "plan_id": plan_id,
                        "organization_guid": "another-org", "space_guid": "space",
                        "parameters": {"restore_from": {"instance_id": "source-1", "snapshot": "before-change"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{got}");
    assert!(got["description"].as_str().unwrap().contains("no instance \"source-1\""), "{got}");

    let restored = provision_in(
        &b,
        "elasticache-redis",
        "small",
        "restored-1",
        json!({"restore_from": {"instance_id": "source-1", "snapshot": "before-change"}}),
        "org",
    )
    .await;
    let restored_creds = bind(&b, &restored, "restored-binding").await;
    assert_eq!(redis_get(&restored_creds, "kept").await.unwrap().as_deref(), Some("in the snapshot"));
    assert_eq!(redis_get(&restored_creds, "later").await.unwrap(), None, "written after the snapshot");
    // The restored cache has its own users: the source's binding is not one.
    let source_login_on_restored =
        with_uri(&creds, &uri.replace(&creds["port"].to_string(), &restored_creds["port"].to_string()));
    assert!(redis_get(&source_login_on_restored, "kept").await.is_err());

    // Its data survives a restart of its server (it is in its own
    // append-only file now, not only in the dump it started from).
    let op = update(&b, &restored, json!({"restart": true})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let restored_creds = credentials(&b, &restored, "restored-binding").await;
    set(&restored_creds, "new", "on the restored one").await;
    let op = update(&b, &restored, json!({"restart": true})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let restored_creds = credentials(&b, &restored, "restored-binding").await;
    assert_eq!(redis_get(&restored_creds, "kept").await.unwrap().as_deref(), Some("in the snapshot"));
    assert_eq!(redis_get(&restored_creds, "new").await.unwrap().as_deref(), Some("on the restored one"));

    let op = update(&b, &source, json!({"delete_snapshot": "before-change"})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(snapshot_names(&b, &source).await.is_empty());
    deprovision(&b, &restored).await;
    deprovision(&b, &source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprovisioned_instances_final_snapshot_is_restorable() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let source = provision(&b, "elasticache-valkey", "staging", "final-source", json!({})).await;
    let creds = bind(&b, &source, "final-binding").await;
    set(&creds, "last-words", "kept").await;
    let op = update(&b, &source, json!({"snapshot": "named-one"})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    deprovision(&b, &source).await;

    let restored = provision_in(
        &b,
        "elasticache-valkey",
        "staging",
        "after-final",
        json!({"restore_from": {"instance_id": "final-source", "snapshot": "latest"}}),
        "org",
    )
    .await;
    let (_, got) = b.call("GET", "/v2/service_instances/after-final", None).await;
    let from = &got["metadata"]["attributes"]["restored_from"];
    assert_eq!(from["instance_id"], "final-source", "{got}");
    assert!(
        from["snapshot"].as_str().unwrap().starts_with("final-"),
        "the final snapshot, not the named one: {got}"
    );
    let creds = bind(&b, &restored, "after-binding").await;
    assert_eq!(redis_get(&creds, "last-words").await.unwrap().as_deref(), Some("kept"));
    deprovision(&b, &restored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_instance_moves_to_valkey_keeping_its_data_and_its_users() {
    let b = LocalBroker::start().await;
    let _guard = ProcessGuard(b.state.clone());
    let p = provision(&b, "elasticache-redis", "dev", "moving-1", json!({"engine_version": "7.0"})).await;
    let creds = bind(&b, &p, "moving-binding").await;
    set(&creds, "written-on", "redis").await;
    assert_eq!(b.laptop.provider.servers()[0].engine, broker_core::domain::Engine::Redis);

    let op = update(&b, &p, json!({"engine": "valkey", "engine_version": "8.0"})).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["description"], "updated: now valkey 8.0 on plan dev");
    assert_eq!(
        b.laptop.provider.servers()[0].engine,
        broker_core::domain::Engine::Valkey,
        "valkey-server runs it"
    );

    // The binding's user and password work on Valkey, and the data is there.
    let creds = credentials(&b, &p, "moving-binding").await;
    assert_eq!(creds["engine"], "valkey");
    assert_eq!(redis_get(&creds, "written-on").await.unwrap().as_deref(), Some("redis"));
    deprovision(&b, &p).await;
}
