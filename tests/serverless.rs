//! Serverless plans through the OSB API and the worker: what their schemas
//! take and what they refuse with a reason, plan changes among serverless
//! plans and never to or from a plan of nodes. (ElastiCache's side:
//! `elasticache/tests/serverless.rs`; the whole life in AWS mode:
//! `tests/aws_e2e.rs`; a laptop's server: the local provider's tests.)

use broker_tests::test_broker::{TestBroker, schema_parameters};
use serde_json::json;

const VALKEY: &str = "elasticache-valkey";
const ID: &str = "2f8e6d4c-serverless-instance";

#[tokio::test]
async fn a_serverless_plan_publishes_only_what_a_serverless_cache_takes() {
    let tb = TestBroker::new().await;
    let (_, catalog) = tb.call("GET", "/v2/catalog", None).await;
    let update = schema_parameters(&catalog, VALKEY, "serverless", "update");
    assert_eq!(
        update,
        ["engine_version", "engineVersion", "snapshot_retention_days", "snapshot", "delete_snapshot"],
        "no restart, failover test, eviction policy, windows or log delivery"
    );
    let create = schema_parameters(&catalog, VALKEY, "serverless", "create");
    assert!(create.contains(&"restore_from".to_string()), "{create:?}");
    let redis = schema_parameters(&catalog, "elasticache-redis", "serverless", "create");
    assert!(redis.contains(&"engine_version".to_string()));
}

#[tokio::test]
async fn what_a_serverless_cache_cannot_do_is_refused_saying_why() {
    let tb = TestBroker::new().await;
    for (parameters, why) in [
        (json!({"maxmemory_policy": "allkeys-lru"}), "a serverless cache has no parameter group"),
        (
            json!({"preferred_maintenance_window": "sun:05:00-sun:06:00"}),
            "ElastiCache maintains a serverless cache",
        ),
        (json!({"log_delivery": ["slow-log"]}), "log delivery is for caches of nodes"),
    ] {
        let (status, got) = tb.provision_as(ID, VALKEY, "serverless", "org-1", parameters.clone()).await;
        assert_eq!(status, 400, "{parameters}: {got}");
        let said = got["description"].as_str().unwrap();
        assert!(said.contains("plan serverless is serverless") && said.contains(why), "{said}");
    }
    let (status, got) = tb.provision_as(ID, VALKEY, "serverless", "org-1", json!({})).await;
    assert_eq!(status, 202, "{got}");
    let (status, got) = tb.update_instance(ID, VALKEY, None, json!({"restart": true})).await;
    assert_eq!(status, 400, "{got}");
    assert!(got["description"].as_str().unwrap().contains("nothing to restart or fail over"), "{got}");
}

#[tokio::test]
async fn serverless_plans_change_among_themselves_and_never_to_nodes() {
    let tb = TestBroker::new().await;
    let (status, got) = tb.provision_as(ID, VALKEY, "serverless", "org-1", json!({})).await;
    assert_eq!(status, 202, "{got}");
    let (status, got) = tb.update_instance(ID, VALKEY, Some("serverless-large"), json!({})).await;
    assert_eq!(status, 202, "{got}");
    assert_eq!(
        tb.last_operation(ID).await,
        ("succeeded".into(), "updated: now on plan serverless-large".into())
    );
    let (status, got) = tb.update_instance(ID, VALKEY, Some("staging"), json!({})).await;
    assert_eq!(status, 422, "{got}");
    assert_eq!(got["error"], "PlanChangeNotSupported");
    assert_eq!(
        got["description"],
        "plan serverless-large cannot change to plan staging: ElastiCache cannot turn a serverless cache into one of nodes; create a new instance (restore_from a snapshot to take the data along)"
    );
    assert_eq!(got["update_repeatable"], false);
}
