//! Serverless caches, against moto for the users (CreateUser, DeleteUser)
//! and the stand-in for what moto lacks (user groups, serverless caches
//! and their snapshots), with the request shapes of the ElastiCache API
//! reference: a create makes the users and the user group before the
//! cache and names both; the endpoints are the primary and the reader,
//! with TLS and cluster mode; a plan change is one ModifyServerlessCache;
//! snapshots are serverless snapshots; a delete takes the final snapshot
//! and leaves nothing.

use aws_sdk_elasticache::types::{CacheUsageLimits, DataStorage, DataStorageUnit, EcpuPerSecond};

use super::{DEPROVISION, INSTANCE, Moto, moto, spec};
use crate::elasticache::names::Names;
use broker_core::domain::{Action, ActionStep, Engine, SnapshotKind};
use broker_core::ports::{CacheProvider, Progress, ProviderError};

fn cache_id() -> String {
    Names::new("osb").cache(INSTANCE)
}

/// The calls the stand-in saw, of serverless caches and user groups.
fn standin_calls(m: &Moto) -> Vec<String> {
    m.rbac
        .calls()
        .into_iter()
        .filter(|c| c.contains("Serverless") || c.contains("UserGroup"))
        .map(|c| c.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_serverless_plan_makes_its_users_and_user_group_then_the_cache_naming_them() {
    let m = moto().await;
    let wanted = spec(INSTANCE, "elasticache-valkey", "serverless");
    assert_eq!((wanted.engine, wanted.engine_version.as_str()), (Engine::Valkey, "8.0"));

    let first = m.provider.create(&wanted).await.unwrap();
    assert_eq!(first, Progress::Working { detail: format!("creating serverless cache {}", cache_id()) });
    // Looked for (an earlier attempt's is adopted), users and group first.
    assert_eq!(standin_calls(&m), ["DescribeServerlessCaches", "CreateUserGroup", "CreateServerlessCache"]);
    let create = m.rbac.calls().into_iter().find(|c| c.starts_with("CreateServerlessCache ")).unwrap();
    assert_eq!(
        create,
        format!("CreateServerlessCache {id} engine=valkey major=8 user_group={id} restore=", id = cache_id())
    );
    let cache = m.rbac.state.lock().unwrap().serverless[&cache_id()].clone();
    assert_eq!(
        cache.cache_usage_limits(),
        Some(
            &CacheUsageLimits::builder()
                .data_storage(DataStorage::builder().maximum(10).unit(DataStorageUnit::Gb).build())
                .ecpu_per_second(EcpuPerSecond::builder().maximum(15_000).build())
                .build()
        )
    );
    assert_eq!(cache.subnet_ids(), ["subnet-0a1", "subnet-0b2"]);
    assert_eq!(cache.security_group_ids(), ["sg-0123"]);
    assert_eq!((cache.snapshot_retention_limit(), cache.daily_snapshot_time()), (Some(3), Some("04:00")));
    let users = m.rbac.members(&cache_id()).unwrap();
    assert!(users.contains(&Names::new("osb").admin_user(INSTANCE)), "{users:?}");
    assert!(users.contains(&Names::new("osb").default_user(INSTANCE)), "{users:?}");

    // Created again (a job delivered twice): adopted, nothing made twice.
    assert_eq!(m.provider.create(&wanted).await.unwrap(), Progress::Done);
    assert_eq!(m.rbac.calls().iter().filter(|c| c.starts_with("CreateServerlessCache ")).count(), 1);

    assert_eq!(m.provider.progress(INSTANCE).await.unwrap(), Progress::Done);
    let endpoint = m.provider.endpoint(INSTANCE).await.unwrap();
    assert_eq!((endpoint.port, endpoint.tls, endpoint.cluster_mode), (6379, true, true));
    let reader = endpoint.reader.expect("a reader endpoint");
    assert_eq!((reader.host, reader.port), (endpoint.host.clone(), 6380));
    assert!(m.provider.nodes(INSTANCE).await.unwrap().is_empty(), "no nodes of its own");
}

#[tokio::test]
async fn a_serverless_plan_without_the_deploys_subnets_is_refused_saying_which_setting() {
    let m = moto().await;
    let provider = crate::elasticache::ElastiCacheProvider::new(
        m.aws.clone(),
        super::secrets_with_admin().await,
        crate::elasticache::ElastiCacheSettings { subnet_ids: vec![], ..super::settings() },
    )
    .with_rbac_client(m.rbac.client.clone());
    let why = provider.create(&spec(INSTANCE, "elasticache-redis", "serverless")).await.unwrap_err();
    assert!(matches!(&why, ProviderError::Permanent(w) if w.contains("set CACHE_SUBNET_IDS")), "{why:?}");
    assert!(m.rbac.state.lock().unwrap().serverless.is_empty());
}

#[tokio::test]
async fn a_change_between_serverless_plans_is_one_modify_of_the_usage_limits() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-valkey", "serverless")).await.unwrap();
    let bigger = spec(INSTANCE, "elasticache-valkey", "serverless-large");
    let Progress::Working { detail } = m.provider.modify(&bigger).await.unwrap() else {
        panic!("nothing sent")
    };
    assert!(detail.contains("usage limits → 100 GB, 150000 ECPU a second"), "{detail}");
    let limits = m.rbac.state.lock().unwrap().serverless[&cache_id()].cache_usage_limits().cloned().unwrap();
    assert_eq!(limits.data_storage().and_then(|d| d.maximum()), Some(100));
    assert_eq!(m.provider.modify(&bigger).await.unwrap(), Progress::Done, "nothing left");
    assert_eq!(m.rbac.calls().iter().filter(|c| c.starts_with("ModifyServerlessCache")).count(), 1);

    // A plan of nodes is not a serverless cache's.
    let nodes = spec(INSTANCE, "elasticache-valkey", "staging");
    assert!(m.provider.modify(&nodes).await.is_err());
}

#[tokio::test]
async fn serverless_snapshots_are_taken_listed_restored_from_and_deleted() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-redis", "serverless")).await.unwrap();
    let snapshot = Action::Snapshot { name: "nightly".into() };
    let units = m.provider.plan_action(INSTANCE, &snapshot).await.unwrap();
    assert_eq!(units.len(), 1);
    m.provider.start_action(INSTANCE, &snapshot, &units[0]).await.unwrap();
    assert_eq!(
        m.provider.start_action(INSTANCE, &snapshot, &units[0]).await.unwrap(),
        Progress::Done,
        "taken once"
    );
    assert_eq!(m.provider.action_progress(INSTANCE, &snapshot, &units[0]).await.unwrap(), Progress::Done);
    let listed = m.provider.snapshots(INSTANCE, None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].name.as_str(), listed[0].kind), ("nightly", SnapshotKind::Named));
    assert!(listed[0].reference.contains(":serverlesscachesnapshot:"), "{listed:?}");

    // A new serverless cache restored from it names its ARN.
    let other = "0b7d4c1e-restored-serverless";
    let mut restored = spec(other, "elasticache-redis", "serverless");
    restored.restore = Some(listed[0].reference.clone());
    m.provider.create(&restored).await.unwrap();
    let create =
        m.rbac.calls().into_iter().filter(|c| c.starts_with("CreateServerlessCache ")).nth(1).unwrap();
    assert!(create.ends_with(&format!("restore={}", listed[0].reference)), "{create}");

    let delete = Action::DeleteSnapshot { name: "nightly".into() };
    let unit: ActionStep = m.provider.plan_action(INSTANCE, &delete).await.unwrap().remove(0);
    m.provider.start_action(INSTANCE, &delete, &unit).await.unwrap();
    assert_eq!(m.provider.action_progress(INSTANCE, &delete, &unit).await.unwrap(), Progress::Done);
    assert!(m.provider.snapshots(INSTANCE, None).await.unwrap().is_empty());

    // Nothing to restart or fail over on a serverless cache.
    assert!(m.provider.plan_action(INSTANCE, &Action::Restart).await.is_err());
}

#[tokio::test]
async fn a_deprovision_takes_the_final_snapshot_then_leaves_no_user_group_or_user() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-valkey", "serverless")).await.unwrap();
    let snapshot = Action::Snapshot { name: "named".into() };
    let unit = m.provider.plan_action(INSTANCE, &snapshot).await.unwrap().remove(0);
    m.provider.start_action(INSTANCE, &snapshot, &unit).await.unwrap();

    let details = m.delete_until_done(INSTANCE, Some(DEPROVISION)).await;
    assert!(details[0].starts_with("deleting the instance's snapshots (named)"), "{details:?}");
    let final_name = Names::new("osb").final_snapshot(INSTANCE, DEPROVISION);
    let calls = m.rbac.calls();
    assert!(calls.contains(&format!("DeleteServerlessCache {} final={final_name}", cache_id())), "{calls:?}");
    {
        let state = m.rbac.state.lock().unwrap();
        assert!(state.serverless.is_empty());
        assert!(!state.groups.contains_key(&cache_id()), "the user group is gone");
        assert_eq!(state.serverless_snapshots.keys().cloned().collect::<Vec<_>>(), vec![final_name.clone()]);
    }
    // The final snapshot is found by its name once the cache is gone.
    let left = m.provider.snapshots(INSTANCE, Some(DEPROVISION)).await.unwrap();
    assert_eq!((left.len(), left[0].kind), (1, SnapshotKind::Final));
}

#[tokio::test]
async fn the_sweep_lists_a_serverless_cache_no_instance_has_and_deletes_it_only_when_tagged_ours() {
    use broker_core::domain::ResourceKind;
    use broker_core::ports::{Inventory, LiveCaches, Removal};
    let m = moto().await;
    let dead = "0d9e3c1a-deprovisioned-serverless";
    m.provider.create(&spec(INSTANCE, "elasticache-valkey", "serverless")).await.unwrap();
    m.provider.create(&spec(dead, "elasticache-valkey", "serverless")).await.unwrap();
    let live: LiveCaches = [INSTANCE.to_string()].into_iter().collect();

    let page = m.provider.leftovers(ResourceKind::ServerlessCache, None, &live).await.unwrap();
    let orphan = Names::new("osb").cache(dead);
    assert_eq!(page.leftovers.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), [orphan.as_str()]);

    // Its tags say whose it is: ours, so it goes, with a final snapshot.
    assert_eq!(m.provider.remove(&page.leftovers[0]).await.unwrap(), Removal::Removed);
    let calls = m.rbac.calls();
    assert!(calls.contains(&format!("DeleteServerlessCache {orphan} final={orphan}-orphan")), "{calls:?}");
    // One that is not tagged as this broker's stays.
    m.provider.create(&spec(dead, "elasticache-valkey", "serverless")).await.unwrap();
    m.rbac.state.lock().unwrap().tags.insert(orphan.clone(), vec![("broker".into(), "another".into())]);
    let page = m.provider.leftovers(ResourceKind::ServerlessCache, None, &live).await.unwrap();
    assert_eq!(m.provider.remove(&page.leftovers[0]).await.unwrap(), Removal::NotOurs);
    assert!(m.rbac.state.lock().unwrap().serverless.contains_key(&orphan));
}

#[tokio::test]
async fn a_serverless_caches_passwords_rotate_through_its_users_as_a_replication_groups_do() {
    use broker_core::domain::credentials::{PASSWORD_LEN, generate_password};
    use broker_core::ports::Principal;
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-redis", "serverless")).await.unwrap();
    let (new, old) = (generate_password(PASSWORD_LEN), generate_password(PASSWORD_LEN));
    m.provider.set_passwords(INSTANCE, &Principal::Admin, &[new.clone(), old]).await.unwrap();
    let admin = Names::new("osb").admin_user(INSTANCE);
    assert!(m.rbac.calls().contains(&format!("ModifyUser {admin} passwords=2")), "{:?}", m.rbac.calls());
    assert_eq!(
        m.provider.passwords_progress(INSTANCE, &Principal::Admin, &[new]).await.unwrap(),
        Progress::Working { detail: "admin user broker-admin holds 2 passwords, 1 expected".into() }
    );
}
