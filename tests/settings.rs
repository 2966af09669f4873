//! Cache settings through the OSB API and the worker: `maxmemory_policy`,
//! `preferred_maintenance_window`, `snapshot_window` and
//! `snapshot_retention_days` on provision and update reach the provider;
//! what a cache cannot take is a 400 naming the parameter and what it
//! takes. (ElastiCache's side: `elasticache/tests/settings.rs`; laptop
//! mode's eviction policy: the local provider's tests.)

use broker_core::domain::settings::CacheSettings;
use broker_core::ports::StateStore;
use broker_tests::test_broker::TestBroker;
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";
const MEMCACHED: &str = "elasticache-memcached";
const ID: &str = "3b9e1f7a-settings-instance";

async fn provision(tb: &TestBroker, service: &str, plan: &str, parameters: Value) -> (u16, Value) {
    let (status, got) = tb.provision_as(ID, service, plan, "org-1", parameters).await;
    (status.as_u16(), got)
}

async fn update(tb: &TestBroker, service: &str, plan: Option<&str>, parameters: Value) -> (u16, Value) {
    let (status, got) = tb.update_instance(ID, service, plan, parameters).await;
    (status.as_u16(), got)
}

async fn cache_settings(tb: &TestBroker) -> CacheSettings {
    let cache = tb.store.instance(ID).await.unwrap().unwrap().cache_key().to_string();
    tb.provider.settings(&cache).expect("a create or modify")
}

#[tokio::test]
async fn chosen_settings_reach_the_cache_and_the_rest_are_the_defaults() {
    let tb = TestBroker::new().await;
    let (status, got) = provision(
        &tb,
        REDIS,
        "small",
        json!({"maxmemory_policy": "allkeys-lru", "snapshot_window": "01:00-02:30", "snapshot_retention_days": 1}),
    )
    .await;
    assert_eq!(status, 202, "{got}");
    assert_eq!(
        cache_settings(&tb).await,
        CacheSettings {
            maxmemory_policy: Some("allkeys-lru".into()),
            maintenance_window: "sun:05:00-sun:06:00".into(),
            snapshot_window: Some("01:00-02:30".into()),
            snapshot_retention_days: 1,
        }
    );

    // An update changes one; the others stay as they were chosen.
    let (status, got) =
        update(&tb, REDIS, None, json!({"preferred_maintenance_window": "tue:10:00-tue:11:30"})).await;
    assert_eq!(status, 202, "{got}");
    let after = cache_settings(&tb).await;
    assert_eq!(after.maintenance_window, "tue:10:00-tue:11:30");
    assert_eq!(after.maxmemory_policy.as_deref(), Some("allkeys-lru"));
    assert_eq!(after.snapshot_retention_days, 1);
    let instance = tb.store.instance(ID).await.unwrap().unwrap();
    assert_eq!(instance.parameters["preferred_maintenance_window"], "tue:10:00-tue:11:30");
}

#[tokio::test]
async fn each_bad_setting_is_refused_naming_the_parameter_and_what_it_takes() {
    let tb = TestBroker::new().await;
    for (parameters, said) in [
        (
            json!({"maxmemory_policy": "lru"}),
            "parameter 'maxmemory_policy' is \"lru\"; it takes one of volatile-lru, allkeys-lru, volatile-lfu, allkeys-lfu, volatile-random, allkeys-random, volatile-ttl, noeviction",
        ),
        (
            json!({"snapshot_window": "3am-5am"}),
            "parameter 'snapshot_window' is \"3am-5am\"; it takes a daily window in UTC as hh24:mi-hh24:mi, e.g. \"03:00-05:00\"",
        ),
        (
            json!({"preferred_maintenance_window": "sunday 05:00"}),
            "parameter 'preferred_maintenance_window' is \"sunday 05:00\"; it takes a weekly window in UTC as ddd:hh24:mi-ddd:hh24:mi (ddd one of sun, mon, tue, wed, thu, fri, sat), e.g. \"sun:05:00-sun:06:00\"",
        ),
        (
            json!({"snapshot_retention_days": 30}),
            "parameter 'snapshot_retention_days' is 30; plan small keeps daily snapshots for 0 to 3 days",
        ),
        (
            json!({"snapshot_window": "05:30-06:30"}),
            "parameter 'snapshot_window' (05:30-06:30) overlaps the maintenance window (sun:05:00-sun:06:00); ElastiCache needs them apart: move one of them",
        ),
        (
            json!({"preferred_maintenance_window": "mon:01:00-mon:01:45"}),
            "parameter 'preferred_maintenance_window' is 45 minutes long; ElastiCache needs at least 60",
        ),
    ] {
        let (status, got) = provision(&tb, REDIS, "small", parameters.clone()).await;
        assert_eq!(status, 400, "{parameters}: {got}");
        assert_eq!(got["description"], said, "{parameters}");
    }
    assert!(tb.store.instance(ID).await.unwrap().is_none(), "nothing was recorded");
}

#[tokio::test]
async fn memcached_takes_a_maintenance_window_but_no_snapshot_or_eviction_setting() {
    let tb = TestBroker::new().await;
    for (parameters, said) in [
        (
            json!({"snapshot_window": "01:00-02:00"}),
            "parameter 'snapshot_window': Memcached keeps no snapshots (its data lives in memory only)",
        ),
        (
            json!({"snapshot_retention_days": 1}),
            "parameter 'snapshot_retention_days': Memcached keeps no snapshots (its data lives in memory only)",
        ),
        (
            json!({"maxmemory_policy": "allkeys-lru"}),
            "parameter 'maxmemory_policy': Memcached has no eviction policy to choose: it evicts the least recently used items when full",
        ),
    ] {
        let (status, got) = provision(&tb, MEMCACHED, "dev", parameters.clone()).await;
        assert_eq!(status, 400, "{parameters}: {got}");
        assert_eq!(got["description"], said);
    }
    let (status, got) =
        provision(&tb, MEMCACHED, "dev", json!({"preferred_maintenance_window": "wed:02:00-wed:03:00"}))
            .await;
    assert_eq!(status, 202, "{got}");
    let s = cache_settings(&tb).await;
    assert_eq!(
        (s.maintenance_window.as_str(), s.snapshot_window, s.snapshot_retention_days),
        ("wed:02:00-wed:03:00", None, 0)
    );
}

#[tokio::test]
async fn a_plan_change_to_a_plan_that_keeps_fewer_snapshot_days_says_to_lower_them() {
    let tb = TestBroker::new().await;
    let (status, got) = provision(&tb, REDIS, "medium", json!({"snapshot_retention_days": 7})).await;
    assert_eq!(status, 202, "{got}");
    let (status, got) = update(&tb, REDIS, Some("small"), json!({})).await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(
        got["description"],
        "parameter 'snapshot_retention_days' is 7; plan small keeps daily snapshots for 0 to 3 days"
    );
    let (status, got) = update(&tb, REDIS, Some("small"), json!({"snapshot_retention_days": 3})).await;
    assert_eq!(status, 202, "{got}");
    assert_eq!(cache_settings(&tb).await.snapshot_retention_days, 3);
}
