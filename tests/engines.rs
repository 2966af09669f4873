//! Engine changes through the OSB API and the worker: a Redis OSS instance
//! moves to Valkey in place (`engine`), reports and hands out credentials
//! as Valkey afterwards, never moves back; versions only go up; each
//! refusal is a 400 naming the parameter and what to send instead.
//! (ElastiCache's side: `elasticache::modify`'s tests and
//! `elasticache/tests/moto.rs`; laptop mode with real servers:
//! `tests/e2e_day2.rs`.)

use broker_core::domain::Engine;
use broker_core::ports::StateStore;
use broker_tests::test_broker::{TestBroker, catalog_plan};
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";
const VALKEY: &str = "elasticache-valkey";
const ID: &str = "9c4e2b8d-engine-instance";

async fn provision(tb: &TestBroker, service: &str, plan: &str, parameters: Value) {
    let (status, got) = tb.provision_as(ID, service, plan, "o", parameters).await;
    assert_eq!(status, 202, "{got}");
}

async fn update(tb: &TestBroker, service: &str, parameters: Value) -> (u16, Value) {
    let (status, got) = tb.update_instance(ID, service, None, parameters).await;
    (status.as_u16(), got)
}

async fn description(tb: &TestBroker) -> String {
    let (state, description) = tb.last_operation(ID).await;
    assert_eq!(state, "succeeded", "{description}");
    description
}

#[tokio::test]
async fn a_redis_instance_moves_to_valkey_in_place_and_says_valkey_from_then_on() {
    let tb = TestBroker::users_at_once().await;
    provision(&tb, REDIS, "small", json!({"engine_version": "7.1"})).await;
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let bind = format!("/v2/service_instances/{ID}/service_bindings/app-1");
    let (status, _) =
        tb.call("PUT", &bind, Some(json!({"service_id": service_id, "plan_id": plan_id}))).await;
    assert_eq!(status, 201);

    let (status, got) = update(&tb, REDIS, json!({"engine": "valkey", "engine_version": "8.0"})).await;
    assert_eq!(status, 202, "{got}");
    assert_eq!(description(&tb).await, "updated: now valkey 8.0 on plan small");
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    assert_eq!((instance.engine, instance.engine_version.as_str()), (Some(Engine::Valkey), "8.0"));
    assert_eq!(tb.provider.engine(instance.cache_key()), Some((Engine::Valkey, "8.0".to_string())));

    // Fetched again at the next release: the credentials say Valkey.
    let (_, fetched) = tb.call("GET", &bind, None).await;
    assert_eq!(fetched["credentials"]["engine"], "valkey", "{fetched}");
    assert_eq!(fetched["credentials"]["engine_version"], "8.0");
    let (_, got) = tb.call("GET", &format!("/v2/service_instances/{ID}"), None).await;
    assert_eq!(got["parameters"]["engine"], "valkey", "{got}");

    // Later updates are a Valkey instance's: its versions, its settings.
    let (status, got) = update(&tb, REDIS, json!({"maxmemory_policy": "allkeys-lru"})).await;
    assert_eq!(status, 202, "{got}");
    assert_eq!(tb.provider.engine(instance.cache_key()), Some((Engine::Valkey, "8.0".to_string())));
    let (status, got) = update(&tb, REDIS, json!({"engine_version": "7.1"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'engine_version' is \"7.1\"; plan small on Valkey allows \"7.2\", \"8.0\""
    );

    // And it does not move back.
    let (status, got) = update(&tb, REDIS, json!({"engine": "redis"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        format!(
            "parameter 'engine': instance {ID} runs Valkey now, and Valkey caches do not move back to Redis OSS; create a Redis OSS instance instead"
        )
    );
}

#[tokio::test]
async fn a_move_to_valkey_needs_a_valkey_version_and_a_cache_with_users() {
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small", json!({})).await;
    let (status, got) = update(&tb, REDIS, json!({"engine": "valkey"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "plan small on Valkey does not offer engine version 7.1; add parameter 'engine_version' with one of 7.2, 8.0"
    );
    // The version the instance was provisioned with stays its parameter: a
    // Redis OSS version, which Valkey does not take.
    let tb = TestBroker::new().await;
    provision(&tb, REDIS, "small", json!({"engine_version": "7.1"})).await;
    let (status, got) = update(&tb, REDIS, json!({"engine": "valkey"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'engine_version' is \"7.1\"; plan small on Valkey allows \"7.2\", \"8.0\""
    );
    let (status, got) = update(&tb, REDIS, json!({"engine": "valkey", "engine_version": "7.1"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'engine_version' is \"7.1\"; plan small on Valkey allows \"7.2\", \"8.0\""
    );
    let (status, got) = update(&tb, REDIS, json!({"engine": "memcached"})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'engine' is \"memcached\"; it takes \"valkey\" (to move this Redis OSS cache to Valkey in place)"
    );

    // A Redis OSS 5 cache authenticates with an AUTH token: upgrade first.
    let tb = TestBroker::new().await;
    tb.change_plan(REDIS, "small", |p| p.engine_versions.insert(0, "5.0".into())).await;
    provision(&tb, REDIS, "small", json!({"engine_version": "5.0"})).await;
    let (status, got) = update(&tb, REDIS, json!({"engine": "valkey", "engine_version": "8.0"})).await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["description"].as_str().unwrap().contains("upgrade its engine_version to 6.0 or later first"),
        "{got}"
    );
}

#[tokio::test]
async fn a_valkey_instance_is_refused_a_move_to_redis_and_a_new_instance_an_engine() {
    let tb = TestBroker::new().await;
    provision(&tb, VALKEY, "dev", json!({})).await;
    let (status, got) = update(&tb, VALKEY, json!({"engine": "redis"})).await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["description"]
            .as_str()
            .unwrap()
            .starts_with("parameter 'engine': Valkey caches do not move to Redis OSS")
    );

    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let (status, got) = tb
        .call(
            "PUT",
            "/v2/service_instances/new-one?accepts_incomplete=true",
            Some(json!({"service_id": service_id, "plan_id": plan_id, "organization_guid": "o",
                        "space_guid": "s", "parameters": {"engine": "valkey"}})),
        )
        .await;
    assert_eq!(status, 400, "{got}");
    assert!(got["description"].as_str().unwrap().contains("provision the Valkey service"), "{got}");
}

#[tokio::test]
async fn only_redis_plans_publish_the_move_to_valkey_with_valkeys_versions() {
    let tb = TestBroker::new().await;
    let (_, catalog) = tb.call("GET", "/v2/catalog", None).await;
    let update_schema = |service: &str, plan: &str| -> Value {
        catalog_plan(&catalog, service, plan)["schemas"]["service_instance"]["update"]["parameters"].clone()
    };
    let redis = update_schema(REDIS, "small");
    assert_eq!(redis["properties"]["engine"]["enum"], json!(["redis", "valkey"]));
    assert_eq!(redis["allOf"][0]["then"]["properties"]["engine_version"]["enum"], json!(["7.2", "8.0"]));
    assert!(update_schema(VALKEY, "dev")["properties"].get("engine").is_none());
    assert!(update_schema("elasticache-memcached", "dev")["properties"].get("engine").is_none());
}
