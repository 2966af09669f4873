//! Cache settings on ElastiCache, against moto with the parameter-group
//! calls moto lacks answered by the stand-in: the windows and the snapshot
//! retention in CreateReplicationGroup, an eviction policy through the
//! cache's own parameter group (made, set, named by the group, deleted
//! with it), and a Redis OSS group moved to Valkey in place.

use super::{INSTANCE, moto, spec};
use crate::elasticache::names::Names;
use broker_core::ports::{CacheProvider, Progress};

fn own_group(family: &str) -> String {
    format!("{}-{family}", Names::new("osb").cache(INSTANCE))
}

#[tokio::test]
async fn the_windows_and_retention_go_into_the_create_and_no_parameter_group_without_a_policy() {
    let m = moto().await;
    let mut wanted = spec(INSTANCE, "elasticache-redis", "small");
    wanted.settings.snapshot_window = Some("01:00-02:30".into());
    wanted.settings.maintenance_window = "tue:10:00-tue:11:00".into();
    wanted.settings.snapshot_retention_days = 1;
    m.provider.create(&wanted).await.unwrap();

    let sent = m.created.0.lock().unwrap()[0].clone();
    assert_eq!(sent.snapshot_window(), Some("01:00-02:30"));
    assert_eq!(sent.preferred_maintenance_window(), Some("tue:10:00-tue:11:00"));
    assert_eq!(sent.snapshot_retention_limit(), Some(1));
    assert_eq!(sent.cache_parameter_group_name(), None, "the family's default group");
    assert!(m.rbac.calls().iter().all(|c| !c.contains("ParameterGroup")), "{:?}", m.rbac.calls());
    assert_eq!(m.group(INSTANCE).await.snapshot_window(), Some("01:00-02:30"));
}

#[tokio::test]
async fn an_eviction_policy_gets_the_cache_its_own_parameter_group_deleted_with_it() {
    let m = moto().await;
    let mut wanted = spec(INSTANCE, "elasticache-redis", "small");
    wanted.settings.maxmemory_policy = Some("allkeys-lru".into());
    m.provider.create(&wanted).await.unwrap();

    let name = own_group("redis7");
    assert_eq!(
        m.rbac.calls().iter().filter(|c| c.contains("ParameterGroup")).cloned().collect::<Vec<_>>(),
        vec![
            format!("CreateCacheParameterGroup {name} family=redis7"),
            format!("ModifyCacheParameterGroup {name} maxmemory-policy=allkeys-lru"),
        ],
        "made and set before the group names it"
    );
    assert_eq!(m.created.0.lock().unwrap()[0].cache_parameter_group_name(), Some(name.as_str()));

    // A create repeated (a job delivered twice) adopts the group and keeps
    // the policy.
    m.provider.create(&wanted).await.unwrap();
    assert_eq!(m.rbac.state.lock().unwrap().parameter_groups[&name].1["maxmemory-policy"], "allkeys-lru");

    // Deleted once the cache is gone, with nothing else's.
    m.rbac
        .state
        .lock()
        .unwrap()
        .parameter_groups
        .insert("someone-elses".into(), ("redis7".into(), Default::default()));
    m.delete_until_done(INSTANCE, None).await;
    let left: Vec<String> = m.rbac.state.lock().unwrap().parameter_groups.keys().cloned().collect();
    assert_eq!(left, vec!["someone-elses".to_string()]);
}

#[tokio::test]
async fn a_cluster_mode_cache_gets_its_group_with_cluster_mode_on_before_first_use() {
    let m = moto().await;
    let mut wanted = spec(INSTANCE, "elasticache-valkey", "cluster-3x2");
    wanted.settings.maxmemory_policy = Some("volatile-ttl".into());
    m.provider.create(&wanted).await.unwrap();
    let name = own_group("valkey8");
    assert!(
        m.rbac.calls().contains(&format!(
            "ModifyCacheParameterGroup {name} cluster-enabled=yes maxmemory-policy=volatile-ttl"
        )),
        "{:?}",
        m.rbac.calls()
    );
    assert_eq!(m.created.0.lock().unwrap()[0].cache_parameter_group_name(), Some(name.as_str()));
}

#[tokio::test]
async fn a_policy_chosen_later_sets_the_group_and_changes_only_its_value_after() {
    let m = moto().await;
    let mut wanted = spec(INSTANCE, "elasticache-redis", "small");
    m.provider.create(&wanted).await.unwrap();
    wanted.settings.maxmemory_policy = Some("noeviction".into());
    // moto describes no member cluster, so the provider cannot tell which
    // group the cache uses: it makes and sets its own, and moves nothing it
    // cannot see (the move itself is `modify`'s unit tests').
    assert_eq!(m.provider.modify(&wanted).await.unwrap(), Progress::Done);
    let name = own_group("redis7");
    assert_eq!(m.rbac.state.lock().unwrap().parameter_groups[&name].1["maxmemory-policy"], "noeviction");
    wanted.settings.maxmemory_policy = Some("allkeys-lfu".into());
    assert_eq!(m.provider.modify(&wanted).await.unwrap(), Progress::Done);
    assert_eq!(m.rbac.state.lock().unwrap().parameter_groups[&name].1["maxmemory-policy"], "allkeys-lfu");
    let creates = m.rbac.calls().iter().filter(|c| c.starts_with("CreateCacheParameterGroup")).count();
    assert_eq!(creates, 2, "the second finds the group made: {:?}", m.rbac.calls());
}

#[tokio::test]
async fn a_redis_group_is_moved_to_valkey_in_place_by_one_modify() {
    let m = moto().await;
    let redis = spec(INSTANCE, "elasticache-redis", "small");
    m.provider.create(&redis).await.unwrap();
    let mut valkey = redis.clone();
    valkey.engine = broker_core::domain::Engine::Valkey;
    valkey.engine_version = "8.0".into();

    let Progress::Working { detail } = m.provider.modify(&valkey).await.unwrap() else {
        panic!("nothing sent")
    };
    assert!(detail.contains("engine redis"), "{detail}");
    assert_eq!(m.group(INSTANCE).await.engine(), Some("valkey"));
    // Moved: nothing left to do (moto describes no member, so the version
    // is left as ElastiCache reports it).
    assert_eq!(m.provider.modify(&valkey).await.unwrap(), Progress::Done);
    // And never back.
    let back = m.provider.modify(&redis).await.unwrap_err();
    assert!(
        matches!(&back, broker_core::ports::ProviderError::Permanent(w) if w.contains("runs valkey")),
        "{back:?}"
    );
}
