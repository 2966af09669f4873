//! The contract of [`Store`]: versioned, conditional writes; a record and
//! its operation written together or not at all; the catalog's seed and put.
//!
//! `store_contract!(open)` in an adapter's tests, where `open()` is an async
//! fn returning `(store, guard)`: the guard (a moto server, a temporary
//! directory) lives as long as the case.

use std::sync::Arc;

use broker_core::domain::Pool;
use broker_core::domain::plan::PlanMetadata;
use broker_core::domain::{
    Binding, BindingState, Instance, InstanceState, Operation, OperationKind, Plan, Service,
};
use broker_core::ports::{PoolChange, Store, StoreError};

use crate::records::{self, op};

/// Generates one test per case of the store contract over `$open()`.
#[macro_export]
macro_rules! store_contract {
    ($open:path) => {
        $crate::store_contract!(@cases $open;
            a_created_instance_and_its_operation_read_back_at_version_1,
            creating_an_instance_twice_is_already_exists_and_writes_no_operation,
            a_write_with_a_stale_version_is_a_conflict_and_changes_nothing,
            an_instance_and_its_operation_are_written_together_or_not_at_all,
            saving_an_instance_with_a_new_operation_inserts_the_operation,
            a_deleted_instance_is_replaced_only_from_the_version_named,
            concurrent_saves_of_one_loaded_version_leave_a_winner_stored_and_losers_in_conflict,
            a_finished_operation_is_no_longer_in_progress,
            bindings_are_created_with_their_operation_and_listed_by_instance,
            a_binding_and_its_instance_read_together_as_they_read_apart,
            an_instance_and_its_operation_read_together_as_they_read_apart,
            saving_an_operation_that_was_never_created_is_a_conflict,
            instances_are_listed_in_id_order_without_bindings_or_operations,
            seeding_leaves_an_operator_changed_plan_alone,
            the_catalog_lists_by_name_and_put_replaces,
            a_pool_is_created_once_and_written_with_its_new_member,
            a_claim_writes_the_pool_the_member_and_the_instance_or_nothing,
            two_claims_from_one_loaded_pool_have_one_winner,
            the_sweep_record_is_created_once_and_saved_at_its_version,
        );
    };
    (@cases $open:path; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $open().await;
                $crate::contract::store::$case(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

// The shared records, made richer where a round trip through a store can go
// wrong: nested maps, mixed lists, numbers, booleans and nulls.

pub fn instance(id: &str) -> Instance {
    let mut i = records::instance(id);
    i.parameters = serde_json::json!({"engine_version": "7.1"}).as_object().cloned().unwrap();
    i.context = serde_json::json!({
        "platform": "cloudfoundry",
        "organization_name": "",
        "labels": {"team": "cache", "tier": 2, "ratio": 0.5, "on": true, "none": null},
        "list": [1, "two", []],
    });
    i
}

pub fn binding(instance_id: &str, id: &str) -> Binding {
    let mut b = records::binding(instance_id, id);
    b.bind_resource = serde_json::json!({"app_guid": "app"});
    b
}

pub fn service(id: &str, name: &str) -> Service {
    let mut s = records::service(id, name);
    s.tags = vec!["redis".into()];
    s
}

pub fn plan(id: &str, name: &str) -> Plan {
    let mut p = records::plan(id, name);
    p.metadata = PlanMetadata {
        display_name: name.into(),
        bullets: vec![],
        costs: vec![serde_json::json!({"amount": {"usd": 0.034}, "unit": "HOURLY"})],
    };
    p
}

/// Creates instance `id` with its provision operation; both at version 1.
pub async fn created(store: &dyn Store, id: &str) -> (Instance, Operation) {
    let mut i = instance(id);
    let mut o = op(OperationKind::Provision, id, None);
    i.last_operation_id = o.id.clone();
    store.create_instance(&mut i, &mut o, None).await.unwrap();
    (i, o)
}

pub async fn a_created_instance_and_its_operation_read_back_at_version_1(store: Arc<dyn Store>) {
    let (i, o) = created(&*store, "i-1").await;
    assert_eq!((i.version, o.version), (1, 1));
    assert_eq!(store.instance("i-1").await.unwrap(), Some(i));
    assert_eq!(store.operation(&o.id).await.unwrap(), Some(o));
    assert_eq!(store.instance("i-2").await.unwrap(), None);
}

pub async fn creating_an_instance_twice_is_already_exists_and_writes_no_operation(store: Arc<dyn Store>) {
    created(&*store, "i-1").await;
    let mut again = instance("i-1");
    let mut o = op(OperationKind::Provision, "i-1", None);
    let err = store.create_instance(&mut again, &mut o, None).await.unwrap_err();
    assert!(matches!(&err, StoreError::AlreadyExists(w) if w == "service instance i-1"), "{err}");
    assert_eq!((again.version, o.version), (0, 0));
    assert_eq!(store.operation(&o.id).await.unwrap(), None, "the operation is not written");
}

pub async fn a_write_with_a_stale_version_is_a_conflict_and_changes_nothing(store: Arc<dyn Store>) {
    let (mut first, _) = created(&*store, "i-1").await;
    let mut stale = first.clone();
    first.state = InstanceState::Ready;
    store.save_instance(&mut first, None).await.unwrap();
    assert_eq!(first.version, 2);

    stale.state = InstanceState::Deprovisioning;
    let err = store.save_instance(&mut stale, None).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(w) if w == "service instance i-1"), "{err}");
    assert_eq!(stale.version, 1, "the caller's version moves only on success");
    assert_eq!(store.instance("i-1").await.unwrap(), Some(first));
}

pub async fn an_instance_and_its_operation_are_written_together_or_not_at_all(store: Arc<dyn Store>) {
    let (mut i, o) = created(&*store, "i-1").await;
    let mut stale_op = o.clone();
    let mut newer_op = o.clone();
    newer_op.progress("1 of 2 nodes").unwrap();
    store.save_operation(&mut newer_op).await.unwrap();

    i.state = InstanceState::Ready;
    stale_op.succeed(1_100, "done").unwrap();
    let err = store.save_instance(&mut i, Some(&mut stale_op)).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(w) if w.starts_with("operation ")), "{err}");
    assert_eq!((i.version, stale_op.version), (1, 1));
    let stored = store.instance("i-1").await.unwrap().unwrap();
    assert_eq!((stored.state, stored.version), (InstanceState::Provisioning, 1));
    assert_eq!(store.operation(&o.id).await.unwrap(), Some(newer_op));
}

pub async fn saving_an_instance_with_a_new_operation_inserts_the_operation(store: Arc<dyn Store>) {
    let (mut i, _) = created(&*store, "i-1").await;
    let mut update = op(OperationKind::Update, "i-1", None);
    i.state = InstanceState::Updating;
    i.last_operation_id = update.id.clone();
    store.save_instance(&mut i, Some(&mut update)).await.unwrap();
    assert_eq!((i.version, update.version), (2, 1));
    assert_eq!(store.operation(&update.id).await.unwrap(), Some(update));
    assert_eq!(store.instance("i-1").await.unwrap(), Some(i));
}

pub async fn a_deleted_instance_is_replaced_only_from_the_version_named(store: Arc<dyn Store>) {
    let (mut old, _) = created(&*store, "i-1").await;
    old.state = InstanceState::Deleted;
    old.expires_at = Some(9_999);
    store.save_instance(&mut old, None).await.unwrap();

    let mut wrong = instance("i-1");
    let mut o = op(OperationKind::Provision, "i-1", None);
    let err = store.create_instance(&mut wrong, &mut o, Some(1)).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(w) if w == "service instance i-1"), "{err}");
    assert_eq!((wrong.version, o.version), (0, 0));
    assert_eq!(store.operation(&o.id).await.unwrap(), None);

    let mut again = instance("i-1");
    store.create_instance(&mut again, &mut o, Some(old.version)).await.unwrap();
    assert_eq!(again.version, old.version + 1, "versions keep counting, so old holders lose");
    let stored = store.instance("i-1").await.unwrap().unwrap();
    assert_eq!((stored.state, stored.expires_at), (InstanceState::Provisioning, None));
    assert_eq!(stored, again);
}

/// Of eight saves from the same loaded version, every one either wins or is
/// a `Conflict`, the stored record is a winner's at the next version, and
/// no loser's copy can overwrite it afterwards. (A store whose condition and
/// write are one atomic step has exactly one winner; SQLite's own tests say
/// so. moto's DynamoDB checks and writes without a lock, and about one run in
/// six lets two saves pass the same condition, so this is what holds on all.)
pub async fn concurrent_saves_of_one_loaded_version_leave_a_winner_stored_and_losers_in_conflict(
    store: Arc<dyn Store>,
) {
    let (loaded, _) = created(&*store, "i-1").await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            let mut mine = loaded.clone();
            mine.engine_version = format!("7.{n}");
            tokio::spawn(async move {
                let saved = store.save_instance(&mut mine, None).await;
                (saved, mine)
            })
        })
        .collect();
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            (Ok(()), won) => winners.push(won),
            (Err(StoreError::Conflict(_)), lost) => losers.push(lost),
            (Err(e), _) => panic!("unexpected error: {e}"),
        }
    }
    assert!(!winners.is_empty(), "someone wins");
    assert!(winners.iter().all(|w| w.version == 2) && losers.iter().all(|l| l.version == 1));
    let stored = store.instance("i-1").await.unwrap().unwrap();
    assert!(winners.contains(&stored), "the stored record is a winner's: {stored:?}");
    for mut loser in losers {
        let err = store.save_instance(&mut loser, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    }
    assert_eq!(store.instance("i-1").await.unwrap(), Some(stored));
}

pub async fn a_finished_operation_is_no_longer_in_progress(store: Arc<dyn Store>) {
    let (_, running) = created(&*store, "i-1").await;
    let (mut i2, mut finished) = created(&*store, "i-2").await;
    let mut in_progress: Vec<_> =
        store.operations_in_progress().await.unwrap().into_iter().map(|o| o.id).collect();
    in_progress.sort();
    let mut both = vec![running.id.clone(), finished.id.clone()];
    both.sort();
    assert_eq!(in_progress, both);

    finished.fail(1_100, "create failed".into()).unwrap();
    i2.state = InstanceState::ProvisionFailed;
    store.save_instance(&mut i2, Some(&mut finished)).await.unwrap();
    assert_eq!(store.operations_in_progress().await.unwrap(), vec![running]);
    assert_eq!(store.operation(&finished.id).await.unwrap(), Some(finished), "it is kept, finished");
}

pub async fn bindings_are_created_with_their_operation_and_listed_by_instance(store: Arc<dyn Store>) {
    created(&*store, "i-1").await;
    created(&*store, "i-10").await;
    let mut b = binding("i-1", "b-1");
    let mut o = op(OperationKind::Bind, "i-1", Some("b-1"));
    store.create_binding(&mut b, &mut o, None).await.unwrap();
    assert_eq!((b.version, o.version), (1, 1));
    let mut other = binding("i-10", "b-2");
    store.create_binding(&mut other, &mut op(OperationKind::Bind, "i-10", Some("b-2")), None).await.unwrap();

    let mut twice = binding("i-1", "b-1");
    let mut o2 = op(OperationKind::Bind, "i-1", Some("b-1"));
    let err = store.create_binding(&mut twice, &mut o2, None).await.unwrap_err();
    assert!(matches!(&err, StoreError::AlreadyExists(w) if w.starts_with("service binding b-1")), "{err}");
    assert_eq!(store.operation(&o2.id).await.unwrap(), None);

    let mut stale = b.clone();
    b.state = BindingState::Ready;
    o.succeed(1_100, "bound").unwrap();
    store.save_binding(&mut b, Some(&mut o)).await.unwrap();
    assert_eq!((b.version, o.version), (2, 2));
    let err = store.save_binding(&mut stale, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");

    assert_eq!(store.binding("i-1", "b-1").await.unwrap(), Some(b.clone()));
    assert_eq!(store.binding("i-2", "b-1").await.unwrap(), None);
    assert_eq!(store.bindings("i-1").await.unwrap(), vec![b], "not the bindings of i-10");
    assert_eq!(store.operations_in_progress().await.unwrap().len(), 3, "two provisions and a bind");
}

pub async fn a_binding_and_its_instance_read_together_as_they_read_apart(store: Arc<dyn Store>) {
    let (instance, _) = created(&*store, "i-1").await;
    let mut b = binding("i-1", "b-1");
    store.create_binding(&mut b, &mut op(OperationKind::Bind, "i-1", Some("b-1")), None).await.unwrap();

    let together = store.binding_and_instance("i-1", "b-1").await.unwrap();
    assert_eq!(together, (Some(b), Some(instance.clone())));
    assert_eq!(store.binding_and_instance("i-1", "b-2").await.unwrap(), (None, Some(instance)));
    assert_eq!(store.binding_and_instance("i-2", "b-1").await.unwrap(), (None, None));
}

pub async fn an_instance_and_its_operation_read_together_as_they_read_apart(store: Arc<dyn Store>) {
    let (instance, provision) = created(&*store, "i-1").await;
    let mut b = binding("i-1", "b-1");
    let mut bind = op(OperationKind::Bind, "i-1", Some("b-1"));
    store.create_binding(&mut b, &mut bind, None).await.unwrap();

    let last = store.instance_and_operation("i-1", None).await.unwrap();
    assert_eq!(last, (Some(instance.clone()), Some(provision.clone())), "None names the last operation");
    let named = store.instance_and_operation("i-1", Some(&bind.id)).await.unwrap();
    assert_eq!(named, (Some(instance.clone()), Some(bind)));
    assert_eq!(store.instance_and_operation("i-1", Some("op-none")).await.unwrap(), (Some(instance), None));
    assert_eq!(store.instance_and_operation("i-2", Some(&provision.id)).await.unwrap(), (None, None));
}

pub async fn saving_an_operation_that_was_never_created_is_a_conflict(store: Arc<dyn Store>) {
    let mut o = op(OperationKind::Provision, "i-1", None);
    o.version = 3;
    let err = store.save_operation(&mut o).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(o.version, 3);
    assert_eq!(store.operation(&o.id).await.unwrap(), None);
}

pub async fn instances_are_listed_in_id_order_without_bindings_or_operations(store: Arc<dyn Store>) {
    let (b, _) = created(&*store, "i-b").await;
    let (a, _) = created(&*store, "i-a").await;
    let mut bound = binding("i-a", "b-1");
    store.create_binding(&mut bound, &mut op(OperationKind::Bind, "i-a", Some("b-1")), None).await.unwrap();
    assert_eq!(store.instances().await.unwrap(), vec![a, b]);
}

pub async fn seeding_leaves_an_operator_changed_plan_alone(store: Arc<dyn Store>) {
    let services = [service("s", "redis")];
    let plans = [plan("p2", "large"), plan("p1", "small")];
    assert_eq!(store.seed(&services, &plans).await.unwrap(), 3);

    let mut changed = plan("p1", "small");
    changed.node_type = "cache.r7g.large".into();
    store.put_plan(&changed).await.unwrap();
    assert_eq!(store.seed(&services, &plans).await.unwrap(), 0);

    assert_eq!(store.plans().await.unwrap(), vec![plan("p2", "large"), changed]);
    assert_eq!(store.services().await.unwrap(), services.to_vec());
}

pub async fn the_catalog_lists_by_name_and_put_replaces(store: Arc<dyn Store>) {
    store.put_service(&service("s2", "valkey")).await.unwrap();
    store.put_service(&service("s1", "redis")).await.unwrap();
    store.put_service(&service("s2", "memcached")).await.unwrap();
    let names: Vec<_> = store.services().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["memcached", "redis"]);
    assert_eq!(store.plans().await.unwrap(), vec![], "services are not plans");
}

// ---------------------------------------------------------------- warm pools

/// A pool member being provisioned, and its operation.
fn member(id: &str) -> (Instance, Operation) {
    let mut m = instance(id);
    m.pooled = true;
    m.organization_guid = None;
    m.space_guid = None;
    let o = op(OperationKind::Provision, id, None);
    m.last_operation_id = o.id.clone();
    (m, o)
}

pub async fn a_pool_is_created_once_and_written_with_its_new_member(store: Arc<dyn Store>) {
    assert_eq!(store.pool("plan-small").await.unwrap(), None);
    assert!(store.pools().await.unwrap().is_empty());
    let mut pool = Pool::empty("plan-small");
    let (mut m, mut o) = member("pool@1");
    pool.members.push(m.id.clone());
    store.save_pool(&mut pool, PoolChange::Add { member: &mut m, operation: &mut o }).await.unwrap();
    assert_eq!((pool.version, m.version, o.version), (1, 1, 1));
    assert_eq!(store.pool("plan-small").await.unwrap(), Some(pool.clone()));
    assert_eq!(store.instance("pool@1").await.unwrap(), Some(m));
    assert_eq!(store.operation(&o.id).await.unwrap(), Some(o));
    assert_eq!(store.pools().await.unwrap(), vec![pool]);

    // A second creation of the same pool loses, and writes nothing else.
    let mut again = Pool::empty("plan-small");
    let (mut m2, mut o2) = member("pool@2");
    let err = store.save_pool(&mut again, PoolChange::Add { member: &mut m2, operation: &mut o2 }).await;
    assert!(matches!(err, Err(StoreError::AlreadyExists(_))), "{err:?}");
    assert_eq!(store.instance("pool@2").await.unwrap(), None);
    assert_eq!(store.operation(&o2.id).await.unwrap(), None);
}

/// A ready member, its pool, and a claim of it by a new instance `id`.
async fn ready_pool(store: &dyn Store) -> (Pool, Instance) {
    let mut pool = Pool::empty("plan-small");
    let (mut m, mut o) = member("pool@1");
    pool.members.push(m.id.clone());
    store.save_pool(&mut pool, PoolChange::Add { member: &mut m, operation: &mut o }).await.unwrap();
    m.state = InstanceState::Ready;
    store.save_instance(&mut m, None).await.unwrap();
    (pool, m)
}

/// The records a claim of `m` by `id` writes, written with `pool` (as
/// loaded, the member taken off it): the result and the records.
async fn claim(store: &dyn Store, pool: &Pool, id: &str, m: &Instance) -> (Result<(), StoreError>, Claimed) {
    let mut p = pool.clone();
    p.remove(&m.id);
    let (mut member, mut instance, mut provision, mut tagging) = claim_records(id, m);
    let change = PoolChange::Claim {
        member: &mut member,
        instance: &mut instance,
        provision: &mut provision,
        tagging: &mut tagging,
        replacing: None,
    };
    let result = store.save_pool(&mut p, change).await;
    (result, Claimed { pool: p, member, instance, provision, tagging })
}

struct Claimed {
    pool: Pool,
    member: Instance,
    instance: Instance,
    provision: Operation,
    tagging: Operation,
}

fn claim_records(id: &str, m: &Instance) -> (Instance, Instance, Operation, Operation) {
    let mut member = m.clone();
    member.state = InstanceState::Deleted;
    member.claimed_by = Some(id.to_string());
    let mut provision = op(OperationKind::Provision, id, None);
    provision.succeed(1_000, "provisioned from the warm pool").unwrap();
    let tagging = op(OperationKind::Spares, id, None);
    let mut i = instance(id);
    i.state = InstanceState::Ready;
    i.cache = Some(m.id.clone());
    i.last_operation_id = provision.id.clone();
    (member, i, provision, tagging)
}

pub async fn a_claim_writes_the_pool_the_member_and_the_instance_or_nothing(store: Arc<dyn Store>) {
    let (pool, m) = ready_pool(&*store).await;
    // The instance id is taken: nothing of the claim is written.
    created(&*store, "i-taken").await;
    let (result, lost) = claim(&*store, &pool, "i-taken", &m).await;
    let err = result.unwrap_err();
    assert!(matches!(&err, StoreError::AlreadyExists(w) if w == "service instance i-taken"), "{err}");
    assert_eq!(store.pool("plan-small").await.unwrap(), Some(pool.clone()), "the pool is unchanged");
    assert_eq!(store.instance("pool@1").await.unwrap(), Some(m.clone()), "the member is unchanged");
    assert_eq!(store.operation(&lost.provision.id).await.unwrap(), None);
    assert_eq!(store.operation(&lost.tagging.id).await.unwrap(), None);

    let (result, won) = claim(&*store, &pool, "i-1", &m).await;
    result.unwrap();
    assert_eq!(won.pool.version, 2);
    assert_eq!(store.pool("plan-small").await.unwrap(), Some(won.pool));
    assert_eq!(store.instance("pool@1").await.unwrap(), Some(won.member));
    assert_eq!(store.instance("i-1").await.unwrap(), Some(won.instance));
    assert_eq!(store.operation(&won.provision.id).await.unwrap(), Some(won.provision));
    assert_eq!(store.operation(&won.tagging.id).await.unwrap(), Some(won.tagging.clone()));
    let in_progress: Vec<String> =
        store.operations_in_progress().await.unwrap().into_iter().map(|o| o.id).collect();
    assert!(in_progress.contains(&won.tagging.id), "the tagging is in progress; the provision is not");
}

pub async fn two_claims_from_one_loaded_pool_have_one_winner(store: Arc<dyn Store>) {
    let (pool, m) = ready_pool(&*store).await;
    let (first, _) = claim(&*store, &pool, "i-1", &m).await;
    let (second, _) = claim(&*store, &pool, "i-2", &m).await;
    assert!(first.is_ok(), "{first:?}");
    assert!(matches!(&second, Err(StoreError::Conflict(_))), "{second:?}");
    assert_eq!(store.instance("i-2").await.unwrap(), None, "the loser recorded nothing");
    assert_eq!(store.instance("pool@1").await.unwrap().unwrap().claimed_by.as_deref(), Some("i-1"));
}

pub async fn the_sweep_record_is_created_once_and_saved_at_its_version(store: Arc<dyn Store>) {
    use broker_core::domain::{ResourceKind, Sweep};
    assert_eq!(store.sweep().await.unwrap(), None, "no record before the first pass");
    let mut sweep = Sweep { round_started_at: 100, token: Some("page 2".into()), ..Sweep::default() };
    sweep.sight(Sweep::key(ResourceKind::User, "ecb-u-x"), 100);
    let mut rival = Sweep { step: 2, ..sweep.clone() };
    store.save_sweep(&mut sweep).await.unwrap();
    assert_eq!(sweep.version, 1);
    assert_eq!(store.sweep().await.unwrap().as_ref(), Some(&sweep), "read back as written");
    let second = store.save_sweep(&mut rival).await;
    assert!(matches!(second, Err(StoreError::AlreadyExists(_))), "{second:?}");
    // Two passes that read version 1: the second to write loses.
    let mut stale = sweep.clone();
    sweep.step = 1;
    store.save_sweep(&mut sweep).await.unwrap();
    assert_eq!(sweep.version, 2);
    stale.step = 3;
    let lost = store.save_sweep(&mut stale).await;
    assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
    assert_eq!(store.sweep().await.unwrap().unwrap().step, 1, "the loser changed nothing");
}
