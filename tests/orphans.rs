//! The reconciler's orphan sweep over the secret store, through the OSB API
//! and the worker: a secret no record names is deleted once it has stayed
//! unnamed for the grace period, and only then; what a record names (an
//! instance's admin, a binding's, a spare's, a claimed pool cache's) stays;
//! a secret outside the broker's names is never touched; a record written
//! during the grace period saves its secret; deletions per pass are
//! bounded and the rest follow in later passes.

use axum::http::StatusCode;
use broker_core::domain::now;
use broker_core::ports::{SecretError, SecretStore, Stage, StateStore};
use broker_core::reconcile::{MAX_REMOVALS, Report};
use broker_tests::test_broker::{ORPHAN_GRACE_SECS, SECRET_PREFIX, TestBroker};
use secrecy::SecretString;
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";

fn body(tb: &TestBroker) -> Value {
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    json!({ "service_id": service_id, "plan_id": plan_id, "organization_guid": "org-1",
            "space_guid": "space-1" })
}

async fn provision(tb: &TestBroker, id: &str) {
    let (status, got) =
        tb.call("PUT", &format!("/v2/service_instances/{id}?accepts_incomplete=true"), Some(body(tb))).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::CREATED, "{status} {got}");
    tb.drain(500).await;
}

async fn bind(tb: &TestBroker, instance: &str, binding: &str) {
    let uri = format!("/v2/service_instances/{instance}/service_bindings/{binding}?accepts_incomplete=true");
    let (status, got) = tb.call("PUT", &uri, Some(body(tb))).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::CREATED, "{status} {got}");
    tb.drain(500).await;
}

async fn pass(tb: &TestBroker, at: i64) -> Report {
    let report = tb.reconciler.run(at).await.expect("reconcile");
    tb.drain(500).await;
    report
}

async fn put_secret(tb: &TestBroker, name: &str) -> String {
    tb.secrets.create(name, &SecretString::from("orphan-value")).await.expect("create secret")
}

async fn exists(tb: &TestBroker, reference: &str) -> bool {
    match tb.secrets.read(reference, Stage::Current).await {
        Ok(value) => value.is_some(),
        Err(SecretError::NotFound(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

fn name(rest: &str) -> String {
    format!("{SECRET_PREFIX}/instances/{rest}")
}

#[tokio::test]
async fn a_secret_no_record_names_goes_after_the_grace_period_and_named_ones_stay() {
    let tb = TestBroker::new().await;
    provision(&tb, "i-1").await;
    bind(&tb, "i-1", "b-1").await;
    let i = tb.store.instance("i-1").await.unwrap().unwrap();
    let b = tb.store.binding("i-1", "b-1").await.unwrap().unwrap();
    let named = [i.admin_secret.clone().unwrap(), b.secret.clone().unwrap()]
        .into_iter()
        .chain(i.spares.iter().filter_map(|s| s.secret.clone()))
        .collect::<Vec<_>>();
    assert!(named.len() >= 3, "the admin's, the binding's and a spare's: {named:?}");

    // What a crash can leave: a binding's secret whose record never was,
    // a spare's the instance no longer lists, a deprovisioned instance's.
    let orphans = [
        put_secret(&tb, &name("i-1/bindings/ghost")).await,
        put_secret(&tb, &name("i-1/spares/s-99")).await,
        put_secret(&tb, &name("gone/admin")).await,
    ];
    // Not the broker's names: another prefix, another shape.
    let foreign = [
        put_secret(&tb, "other/instances/gone/admin").await,
        put_secret(&tb, &format!("{SECRET_PREFIX}/broker")).await,
    ];

    let t0 = now();
    let first = pass(&tb, t0).await;
    assert_eq!((first.orphans_seen, first.orphans_removed), (3, 0), "{first:?}");
    let just_before = pass(&tb, t0 + ORPHAN_GRACE_SECS - 1).await;
    assert_eq!((just_before.orphans_seen, just_before.orphans_removed), (3, 0), "{just_before:?}");
    for o in &orphans {
        assert!(exists(&tb, o).await, "{o} is kept through the grace period");
    }

    let after = pass(&tb, t0 + ORPHAN_GRACE_SECS).await;
    assert_eq!((after.orphans_seen, after.orphans_removed), (3, 3), "{after:?}");
    for o in &orphans {
        assert!(!exists(&tb, o).await, "{o} is deleted");
    }
    for s in named.iter().chain(&foreign) {
        assert!(exists(&tb, s).await, "{s} stays");
    }
    let later = pass(&tb, t0 + 2 * ORPHAN_GRACE_SECS).await;
    assert_eq!((later.orphans_seen, later.orphans_removed), (0, 0), "{later:?}");
    assert!(tb.store.sweep().await.unwrap().unwrap().sightings.is_empty(), "the round dropped what is gone");
}

#[tokio::test]
async fn a_record_written_during_the_grace_period_keeps_its_secret() {
    let tb = TestBroker::new().await;
    // A secret made ahead of its record (a retried step's), seen unnamed.
    let early = put_secret(&tb, &name("i-2/admin")).await;
    let t0 = now();
    assert_eq!(pass(&tb, t0).await.orphans_seen, 1);
    // The provision's worker adopts it (CreateSecret finds it there).
    provision(&tb, "i-2").await;
    let i = tb.store.instance("i-2").await.unwrap().unwrap();
    assert_eq!(i.admin_secret.as_deref(), Some(early.as_str()));
    let after = pass(&tb, t0 + ORPHAN_GRACE_SECS).await;
    assert_eq!((after.orphans_seen, after.orphans_removed), (0, 0), "{after:?}");
    assert!(exists(&tb, &early).await);
}

#[tokio::test]
async fn a_claimed_pool_caches_secrets_are_named_by_its_instance() {
    let tb = TestBroker::new().await;
    tb.change_plan(REDIS, "small", |p| p.warm_pool_size = 1).await;
    let t0 = now();
    pass(&tb, t0).await;
    let (status, got) =
        tb.call("PUT", "/v2/service_instances/i-3?accepts_incomplete=true", Some(body(&tb))).await;
    assert_eq!(status, StatusCode::CREATED, "{got}");
    tb.drain(500).await;
    let i = tb.store.instance("i-3").await.unwrap().unwrap();
    let admin = i.admin_secret.clone().unwrap();
    assert!(admin.contains("pool@"), "the member's secret, named by its id: {admin}");
    // Its member's record is deleted (claimed); the instance names the cache.
    for t in [t0 + 1, t0 + ORPHAN_GRACE_SECS + 1, t0 + 2 * ORPHAN_GRACE_SECS + 1] {
        let report = pass(&tb, t).await;
        assert_eq!((report.orphans_seen, report.orphans_removed), (0, 0), "{report:?}");
    }
    assert!(exists(&tb, &admin).await);
    for s in i.spares.iter().filter_map(|s| s.secret.as_deref()) {
        assert!(exists(&tb, s).await, "{s}");
    }
}

#[tokio::test]
async fn deletions_per_pass_are_bounded_and_later_passes_finish_them() {
    let tb = TestBroker::new().await;
    let total = 2 * MAX_REMOVALS + 5;
    for n in 0..total {
        put_secret(&tb, &name(&format!("gone-{n:03}/admin"))).await;
    }
    let t0 = now();
    assert_eq!(pass(&tb, t0).await.orphans_seen, total);
    let mut removed = Vec::new();
    for n in 1..=3 {
        removed.push(pass(&tb, t0 + ORPHAN_GRACE_SECS + n).await.orphans_removed);
    }
    assert_eq!(removed, [MAX_REMOVALS, MAX_REMOVALS, 5]);
    assert_eq!(pass(&tb, t0 + 2 * ORPHAN_GRACE_SECS).await.orphans_seen, 0);
}

/// An inventory that lists what a test puts in it and records removals.
#[derive(Default)]
struct Listed {
    leftovers: std::sync::Mutex<Vec<broker_core::ports::Leftover>>,
    removed: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl broker_core::ports::Inventory for Listed {
    fn kinds(&self) -> &'static [broker_core::domain::ResourceKind] {
        &[broker_core::domain::ResourceKind::User]
    }
    async fn leftovers(
        &self,
        _kind: broker_core::domain::ResourceKind,
        _token: Option<&str>,
        _live: &broker_core::ports::LiveCaches,
    ) -> Result<broker_core::ports::LeftoverPage, broker_core::ports::ProviderError> {
        Ok(broker_core::ports::LeftoverPage { leftovers: self.leftovers.lock().unwrap().clone(), next: None })
    }
    async fn remove(
        &self,
        leftover: &broker_core::ports::Leftover,
    ) -> Result<broker_core::ports::Removal, broker_core::ports::ProviderError> {
        self.removed.lock().unwrap().push(leftover.id.clone());
        self.leftovers.lock().unwrap().retain(|l| l.id != leftover.id);
        Ok(broker_core::ports::Removal::Removed)
    }
}

/// A user outside its live cache's user group is kept when a binding or a
/// spare of that instance names it, and deleted otherwise.
#[tokio::test]
async fn a_user_outside_its_groups_is_kept_while_a_binding_or_spare_names_it() {
    use broker_core::ports::{Claim, Leftover};
    use broker_core::reconcile::{Reconciler, SweepSettings};

    let tb = TestBroker::new().await;
    provision(&tb, "i-4").await;
    bind(&tb, "i-4", "b-4").await;
    let i = tb.store.instance("i-4").await.unwrap().unwrap();
    let b = tb.store.binding("i-4", "b-4").await.unwrap().unwrap();
    let spare = i.spares.first().expect("a spare user").username.clone();
    let user = |id: &str, username: &str| Leftover {
        kind: broker_core::domain::ResourceKind::User,
        id: id.into(),
        reference: id.into(),
        claim: Claim::UserOf { key: "i-4".into(), username: username.into() },
    };
    let listed = std::sync::Arc::new(Listed::default());
    *listed.leftovers.lock().unwrap() = vec![
        user("u-binding", b.username.as_deref().unwrap()),
        user("u-spare", &spare),
        user("u-ghost", "b-ghost"),
        Leftover { claim: Claim::Nobody, ..user("u-nobody", "x") },
    ];
    let reconciler = Reconciler::new(tb.store.clone(), tb.queue.clone(), tb.broker.clone(), 3600).with_sweep(
        SweepSettings {
            inventories: vec![listed.clone()],
            secret_prefix: SECRET_PREFIX.into(),
            grace_secs: 600,
            every_secs: 0,
        },
    );
    let t0 = now();
    assert_eq!(reconciler.run(t0).await.unwrap().orphans_seen, 2);
    let report = reconciler.run(t0 + 600).await.unwrap();
    assert_eq!(report.orphans_removed, 2, "{report:?}");
    let mut removed = listed.removed.lock().unwrap().clone();
    removed.sort();
    assert_eq!(removed, ["u-ghost", "u-nobody"]);

    // Once the binding is gone, its user no longer has a name.
    let (status, got) = tb
        .call("DELETE", &format!("/v2/service_instances/i-4/service_bindings/b-4?service_id={}&plan_id={}&accepts_incomplete=true", body(&tb)["service_id"].as_str().unwrap(), body(&tb)["plan_id"].as_str().unwrap()), None)
        .await;
    assert!(status.is_success(), "{status} {got}");
    tb.drain(500).await;
    assert_eq!(reconciler.run(t0 + 1200).await.unwrap().orphans_seen, 1, "the unbound binding's user");
    assert_eq!(reconciler.run(t0 + 1800).await.unwrap().orphans_removed, 1);
    assert_eq!(listed.removed.lock().unwrap().last().map(String::as_str), Some("u-binding"));
}
