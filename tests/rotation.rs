//! Credential rotation through the whole broker: Secrets Manager's four steps
//! on a binding's and an instance's secret, each repeated, out of order, or
//! failing; the grace period ended by the worker; what the platform sees
//! (current credentials, binding metadata, OSB binding rotation).

use broker_core::broker::{Bound, Provisioned};
use broker_core::domain::{
    Binding, Instance, OperationKind, OperationState, RotationPhase, RotationPolicy, iso8601, now,
};
use broker_core::osb::types::{BindRequest, ProvisionRequest, Query};
use broker_core::ports::{Principal, ProviderError, SecretStore, Stage, StateStore};
use broker_core::rotation::{RotationError, RotationEvent, RotationStep, Target};
use broker_testing::Call;
use broker_tests::test_broker::{TestBroker, bid, iid};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";
const MEMCACHED: &str = "elasticache-memcached";

fn accepts_incomplete() -> Query {
    Query { accepts_incomplete: true, ..Query::default() }
}

/// Provisions `id` on the first plan of `service`, which keeps no spare users
/// here: bindings get users of their own, made by the worker. (A claimed
/// spare's rotation has its own test.)
async fn provisioned(tb: &TestBroker, service: &str, id: &str) {
    let (_, plan_id) = first_plan(tb, service);
    let plan = tb.catalog.plans.iter().find(|p| p.id == plan_id).unwrap().name.clone();
    tb.change_plan(service, &plan, |p| p.spare_binding_users = 0).await;
    provisioned_as_is(tb, service, id).await;
}

/// Provisions `id` on the first plan of `service` as the store has it.
async fn provisioned_as_is(tb: &TestBroker, service: &str, id: &str) {
    let (service_id, plan_id) = first_plan(tb, service);
    let req: ProvisionRequest = serde_json::from_value(json!({ "service_id": service_id, "plan_id": plan_id,
        "organization_guid": "org-1", "space_guid": "space-1" }))
    .unwrap();
    match tb.broker.provision(&iid(id), req, &accepts_incomplete()).await {
        Ok(Provisioned::Accepted { .. }) => {}
        other => panic!("provision of {id}: {other:?}"),
    }
    tb.drain(100).await;
}

fn first_plan(tb: &TestBroker, service: &str) -> (String, String) {
    let s = tb.catalog.services.iter().find(|s| s.name == service).expect("service");
    let p = tb.catalog.plans.iter().find(|p| p.service_id == s.id).expect("plan");
    (s.id.clone(), p.id.clone())
}

async fn bound(tb: &TestBroker, service: &str, instance: &str, binding: &str) {
    let (service_id, plan_id) = first_plan(tb, service);
    let req: BindRequest = serde_json::from_value(
        json!({ "service_id": service_id, "plan_id": plan_id, "app_guid": "app-1", "parameters": {} }),
    )
    .unwrap();
    match tb.broker.bind(&iid(instance), &bid(binding), req, &accepts_incomplete()).await {
        // Memcached bindings, and claimed spares, are ready at once.
        Ok(Bound::Accepted { .. } | Bound::Created(_)) => {}
        other => panic!("bind of {binding}: {other:?}"),
    }
    tb.drain(100).await;
    assert_eq!(binding_of(tb, instance, binding).await.state, broker_core::domain::BindingState::Ready);
}

async fn binding_of(tb: &TestBroker, instance: &str, id: &str) -> Binding {
    tb.store.binding(instance, id).await.unwrap().expect("binding recorded")
}

async fn instance_of(tb: &TestBroker, id: &str) -> Instance {
    tb.store.instance(id).await.unwrap().expect("instance recorded")
}

fn binding_target(instance: &str, binding: &str) -> Target {
    Target::Binding { instance_id: instance.into(), binding_id: binding.into() }
}

fn event(tb: &TestBroker, target: &Target, step: RotationStep, token: &str) -> RotationEvent {
    RotationEvent { step, secret_id: tb.rotator.reference(target), token: token.into() }
}

async fn step(
    tb: &TestBroker,
    target: &Target,
    step: RotationStep,
    token: &str,
) -> Result<(), RotationError> {
    tb.rotator.handle(&event(tb, target, step, token)).await
}

/// The secret's value at `stage`.
async fn value(tb: &TestBroker, target: &Target, stage: Stage) -> Option<String> {
    let v = tb.secrets.read(&tb.rotator.reference(target), stage).await.unwrap();
    v.map(|v| v.expose_secret().to_string())
}

/// The password-change calls the provider saw, as (principal, passwords).
fn password_calls(tb: &TestBroker) -> Vec<(&'static str, Principal, usize)> {
    tb.provider
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::SetPasswords { principal, passwords, .. } => Some(("set", principal, passwords)),
            Call::PasswordsProgress { principal, passwords, .. } => Some(("check", principal, passwords)),
            _ => None,
        })
        .collect()
}

/// Rotations with an hour's grace period.
const HOUR_GRACE: RotationPolicy = RotationPolicy { days: 30, grace_secs: 3600 };

/// `tb` with Redis OSS instance i-1 and its ready binding b-1, and the
/// binding's credential.
async fn ready_binding(tb: TestBroker) -> (TestBroker, Target) {
    provisioned(&tb, REDIS, "i-1").await;
    bound(&tb, REDIS, "i-1", "b-1").await;
    (tb, binding_target("i-1", "b-1"))
}

fn user(binding: &str) -> Principal {
    Principal::User(Binding::username_for(binding))
}

#[tokio::test]
async fn a_binding_rotates_through_the_four_steps_and_the_grace_period_ends_in_the_worker() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    let old = value(&tb, &target, Stage::Current).await.unwrap();

    step(&tb, &target, RotationStep::CreateSecret, "t-1").await.unwrap();
    let new = value(&tb, &target, Stage::Pending).await.unwrap();
    assert_ne!(new, old);
    assert_eq!(new.len(), old.len());
    let b = binding_of(&tb, "i-1", "b-1").await;
    assert_eq!(
        b.rotation.as_ref().map(|r| (r.token.as_str(), r.phase)),
        Some(("t-1", RotationPhase::Created))
    );
    assert!(password_calls(&tb).is_empty(), "createSecret changes only the secret");

    step(&tb, &target, RotationStep::SetSecret, "t-1").await.unwrap();
    step(&tb, &target, RotationStep::TestSecret, "t-1").await.unwrap();
    assert_eq!(value(&tb, &target, Stage::Current).await, Some(old.clone()), "AWSCURRENT waits for finish");
    step(&tb, &target, RotationStep::FinishSecret, "t-1").await.unwrap();
    assert_eq!(value(&tb, &target, Stage::Current).await, Some(new.clone()));
    assert_eq!(value(&tb, &target, Stage::Previous).await, Some(old.clone()));
    assert_eq!(value(&tb, &target, Stage::Pending).await, None);

    let b = binding_of(&tb, "i-1", "b-1").await;
    let r = b.rotation.clone().expect("the grace period is recorded");
    assert_eq!(r.phase, RotationPhase::Grace);
    let ends = r.grace_ends_at.expect("its end is recorded");
    assert!((now() - 5..=now()).contains(&ends), "no grace period in this broker");
    let op_id = r.operation_id.clone().expect("an operation ends it");
    let op = tb.store.operation(&op_id).await.unwrap().unwrap();
    assert_eq!((op.kind, op.state), (OperationKind::Rotate, OperationState::InProgress));
    assert_ne!(b.last_operation_id, op_id, "a rotation is never the platform's last operation");

    // The platform fetching the binding now gets the new password.
    let (status, body) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["credentials"]["password"], new.as_str());

    tb.drain(10).await;
    let op = tb.store.operation(&op_id).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{}", op.description);
    assert!(op.description.contains("no longer works"), "{}", op.description);
    let b = binding_of(&tb, "i-1", "b-1").await;
    assert_eq!(b.rotation, None);
    assert!(b.rotated_at.is_some());
    assert_eq!(
        password_calls(&tb),
        [
            ("set", user("b-1"), 2),
            ("check", user("b-1"), 2),
            ("set", user("b-1"), 1),
            ("check", user("b-1"), 1)
        ]
    );
}

#[tokio::test]
async fn every_step_repeated_with_the_same_token_changes_nothing_twice() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    for s in RotationStep::ALL {
        step(&tb, &target, s, "t-1").await.unwrap();
        let after_first = (binding_of(&tb, "i-1", "b-1").await.rotation, password_calls(&tb));
        let secret = (value(&tb, &target, Stage::Current).await, value(&tb, &target, Stage::Pending).await);
        step(&tb, &target, s, "t-1").await.unwrap_or_else(|e| panic!("{s:?} again: {e}"));
        assert_eq!((binding_of(&tb, "i-1", "b-1").await.rotation, password_calls(&tb)), after_first, "{s:?}");
        let again = (value(&tb, &target, Stage::Current).await, value(&tb, &target, Stage::Pending).await);
        assert_eq!(again, secret, "{s:?}");
    }
    let b = binding_of(&tb, "i-1", "b-1").await;
    assert!(b.rotation.and_then(|r| r.operation_id).is_some());
    tb.drain(10).await;
    // After the grace period too, every step of the finished rotation is harmless.
    for s in RotationStep::ALL {
        step(&tb, &target, s, "t-1").await.unwrap();
    }
    assert_eq!(binding_of(&tb, "i-1", "b-1").await.rotation, None);
    assert_eq!(password_calls(&tb).len(), 4);
}

#[tokio::test]
async fn a_failed_set_secret_leaves_the_old_password_current_and_the_stages_consistent() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    let old = value(&tb, &target, Stage::Current).await.unwrap();
    step(&tb, &target, RotationStep::CreateSecret, "t-1").await.unwrap();
    let new = value(&tb, &target, Stage::Pending).await.unwrap();

    tb.provider.script(
        "set_passwords",
        vec![Err(ProviderError::Retryable("ModifyUser failed: Throttling: Rate exceeded".into()))],
    );
    let err = step(&tb, &target, RotationStep::SetSecret, "t-1").await.unwrap_err();
    assert!(matches!(&err, RotationError::Failed(m) if m.contains("ModifyUser failed")), "{err}");
    assert!(!err.to_string().contains(&new) && !err.to_string().contains(&old));
    assert_eq!(value(&tb, &target, Stage::Current).await, Some(old.clone()));
    assert_eq!(value(&tb, &target, Stage::Pending).await, Some(new.clone()));
    let b = binding_of(&tb, "i-1", "b-1").await;
    assert_eq!(b.rotation.map(|r| r.phase), Some(RotationPhase::Created));
    // The platform still gets the old, working password.
    let (_, body) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    assert_eq!(body["credentials"]["password"], old.as_str());
    // Later steps refuse until setSecret passes; AWSCURRENT never moves early.
    let refused = step(&tb, &target, RotationStep::TestSecret, "t-1").await.unwrap_err();
    assert!(matches!(refused, RotationError::Refused(_)), "{refused}");
    let refused = step(&tb, &target, RotationStep::FinishSecret, "t-1").await.unwrap_err();
    assert!(matches!(refused, RotationError::Refused(_)), "{refused}");
    assert_eq!(value(&tb, &target, Stage::Current).await, Some(old));

    // Secrets Manager retries; the same pending password goes on.
    for s in [RotationStep::SetSecret, RotationStep::TestSecret, RotationStep::FinishSecret] {
        step(&tb, &target, s, "t-1").await.unwrap();
    }
    assert_eq!(value(&tb, &target, Stage::Current).await, Some(new));
}

#[tokio::test]
async fn a_test_secret_that_never_sees_the_change_fails_and_finish_waits_for_it() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    step(&tb, &target, RotationStep::CreateSecret, "t-1").await.unwrap();
    step(&tb, &target, RotationStep::SetSecret, "t-1").await.unwrap();
    let working = || Ok(broker_core::ports::Progress::Working { detail: "user b-b-1 is modifying".into() });
    tb.provider.script("passwords_progress", (0..50).map(|_| working()).collect());
    let err = step(&tb, &target, RotationStep::TestSecret, "t-1").await.unwrap_err();
    assert!(matches!(&err, RotationError::Failed(m) if m.contains("is modifying")), "{err}");
    let refused = step(&tb, &target, RotationStep::FinishSecret, "t-1").await.unwrap_err();
    assert!(matches!(refused, RotationError::Refused(_)), "{refused}");
}

#[tokio::test]
async fn steps_out_of_order_or_for_unknown_secrets_are_refused() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    // No pending version with this token: only createSecret may start.
    for s in [RotationStep::SetSecret, RotationStep::TestSecret] {
        let refused = step(&tb, &target, s, "t-9").await.unwrap_err();
        assert!(matches!(&refused, RotationError::Refused(m) if m.contains("not AWSPENDING")), "{refused}");
    }
    let refused = step(&tb, &target, RotationStep::FinishSecret, "t-9").await.unwrap_err();
    assert!(matches!(refused, RotationError::Refused(_)), "{refused}");
    let unknown = RotationEvent {
        step: RotationStep::CreateSecret,
        secret_id: tb.secrets.reference_for("test/instances/nobody/bindings/none"),
        token: "t-1".into(),
    };
    let refused = tb.rotator.handle(&unknown).await.unwrap_err();
    assert!(matches!(refused, RotationError::Refused(_)), "{refused}");
    // A secret that is not one of the broker's credentials.
    let other = tb.secrets.create("test/broker", &secrecy::SecretString::from("x")).await.unwrap();
    let event = RotationEvent { step: RotationStep::CreateSecret, secret_id: other, token: "t-1".into() };
    let refused = tb.rotator.handle(&event).await.unwrap_err();
    assert!(matches!(&refused, RotationError::Refused(m) if m.contains("not a credential")), "{refused}");
    assert!(password_calls(&tb).is_empty());
}

#[tokio::test]
async fn secrets_managers_own_test_of_a_new_rotation_configuration_passes_without_changes() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    // Secrets Manager makes an AWSPENDING version and calls testSecret alone.
    let reference = tb.rotator.reference(&target);
    tb.secrets.put_pending(&reference, "sm-test", &secrecy::SecretString::from("probe")).await.unwrap();
    step(&tb, &target, RotationStep::TestSecret, "sm-test").await.unwrap();
    assert!(password_calls(&tb).is_empty());
    assert_eq!(binding_of(&tb, "i-1", "b-1").await.rotation, None);
}

#[tokio::test]
async fn a_new_rotation_waits_for_the_previous_grace_period_to_end() {
    let (tb, target) = ready_binding(TestBroker::with_rotation(HOUR_GRACE).await).await;
    for s in RotationStep::ALL {
        step(&tb, &target, s, "t-1").await.unwrap();
    }
    let r = binding_of(&tb, "i-1", "b-1").await.rotation.unwrap();
    let ends = r.grace_ends_at.unwrap();
    assert!((now() + 3590..=now() + 3600).contains(&ends));
    // The job is delayed (at most 900 s, as SQS allows); delivered, it waits
    // again until the grace period has passed.
    assert!(tb.drain(10).await.is_empty());
    let op = tb.store.operation(r.operation_id.as_deref().unwrap()).await.unwrap().unwrap();
    let outcome = tb.worker.handle(&broker_core::ports::Job::for_operation(&op)).await.unwrap();
    assert_eq!(outcome, broker_core::worker::JobOutcome::Requeued { delay_secs: 900 });
    let op = tb.store.operation(&op.id).await.unwrap().unwrap();
    assert!(op.description.contains(&iso8601(ends)), "{}", op.description);
    let refused = step(&tb, &target, RotationStep::CreateSecret, "t-2").await.unwrap_err();
    assert!(matches!(&refused, RotationError::Refused(m) if m.contains("grace period")), "{refused}");
    assert_eq!(binding_of(&tb, "i-1", "b-1").await.rotation.unwrap().token, "t-1");
}

#[tokio::test]
async fn an_abandoned_attempt_is_replaced_by_a_new_token() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    step(&tb, &target, RotationStep::CreateSecret, "t-1").await.unwrap();
    step(&tb, &target, RotationStep::SetSecret, "t-1").await.unwrap();
    // Secrets Manager gives up on t-1 and starts over with t-2.
    for s in RotationStep::ALL {
        step(&tb, &target, s, "t-2").await.unwrap();
    }
    let info = tb.secrets.describe(&tb.rotator.reference(&target)).await.unwrap();
    assert_eq!(info.version_at(Stage::Current), Some("t-2"));
    assert_eq!(info.stages_of("t-1"), None, "the abandoned version lost its label and is gone");
}

#[tokio::test]
async fn the_admin_credential_rotates_the_same_way() {
    let tb = TestBroker::new().await;
    provisioned(&tb, REDIS, "i-1").await;
    let target = Target::Admin { instance_id: "i-1".into() };
    let old = value(&tb, &target, Stage::Current).await.unwrap();
    for s in RotationStep::ALL {
        step(&tb, &target, s, "t-1").await.unwrap();
    }
    let i = instance_of(&tb, "i-1").await;
    assert_eq!(i.rotation.as_ref().map(|r| r.phase), Some(RotationPhase::Grace));
    tb.drain(10).await;
    let i = instance_of(&tb, "i-1").await;
    assert_eq!((i.rotation, i.rotated_at.is_some()), (None, true));
    assert_ne!(value(&tb, &target, Stage::Current).await.unwrap(), old);
    let admin = Principal::Admin;
    assert_eq!(
        password_calls(&tb),
        [
            ("set", admin.clone(), 2),
            ("check", admin.clone(), 2),
            ("set", admin.clone(), 1),
            ("check", admin, 1)
        ]
    );
}

#[tokio::test]
async fn rotate_now_runs_every_step_and_unbinding_during_the_grace_period_cancels_its_end() {
    let (tb, target) = ready_binding(TestBroker::with_rotation(HOUR_GRACE).await).await;
    let token = tb.rotator.rotate_now(&target).await.unwrap();
    let b = binding_of(&tb, "i-1", "b-1").await;
    let r = b.rotation.unwrap();
    assert_eq!((r.token.as_str(), r.phase), (token.as_str(), RotationPhase::Grace));
    let (service_id, plan_id) = first_plan(&tb, REDIS);
    let (status, _) = tb
        .call(
            "DELETE",
            &format!(
                "/v2/service_instances/i-1/service_bindings/b-1?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}"
            ),
            None,
        )
        .await;
    assert_eq!(status, 202);
    tb.drain(10).await;
    // The rotate job was delayed; deliver it now as SQS would later.
    let op_id = r.operation_id.unwrap();
    let job = broker_core::ports::Job::for_operation(&tb.store.operation(&op_id).await.unwrap().unwrap());
    tb.worker.handle(&job).await.unwrap();
    let op = tb.store.operation(&op_id).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Failed);
    assert!(op.description.contains("cancelled"), "{}", op.description);
    assert!(!password_calls(&tb).iter().any(|(kind, _, n)| *kind == "set" && *n == 1));
}

#[tokio::test]
async fn memcached_instances_have_no_credential_to_rotate() {
    let tb = TestBroker::new().await;
    provisioned(&tb, MEMCACHED, "m-1").await;
    bound(&tb, MEMCACHED, "m-1", "b-1").await;
    let target = binding_target("m-1", "b-1");
    let refused = tb.rotator.rotate_now(&target).await.unwrap_err();
    assert!(matches!(refused, RotationError::Refused(_)), "{refused}");
}

// ------------------------------------------------------------------ what the platform sees

fn bind_uri(instance: &str, binding: &str) -> String {
    format!("/v2/service_instances/{instance}/service_bindings/{binding}?accepts_incomplete=true")
}

#[tokio::test]
async fn bind_and_fetch_say_when_to_renew_and_when_the_credentials_expire() {
    let tb = TestBroker::with_rotation(RotationPolicy { days: 30, grace_secs: 3600 }).await;
    provisioned(&tb, REDIS, "i-1").await;
    bound(&tb, REDIS, "i-1", "b-1").await;
    let b = binding_of(&tb, "i-1", "b-1").await;
    let (status, body) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["metadata"]["renew_before"], iso8601(b.created_at + 30 * 86_400));
    assert_eq!(body["metadata"]["expires_at"], iso8601(b.created_at + 30 * 86_400 + 3600));
    let renew = body["metadata"]["renew_before"].as_str().unwrap();
    assert!(renew.ends_with(".0Z") && renew.len() == "2019-12-31T23:59:59.0Z".len(), "{renew}");
    // A rotation moves both.
    tb.rotator.rotate_now(&binding_target("i-1", "b-1")).await.unwrap();
    let rotated = binding_of(&tb, "i-1", "b-1").await.rotated_at.unwrap();
    let (_, body) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    assert_eq!(body["metadata"]["renew_before"], iso8601(rotated + 30 * 86_400));
    // A repeated bind answers 200 with the same metadata.
    let (service_id, plan_id) = first_plan(&tb, REDIS);
    let (status, again) = tb
        .call(
            "PUT",
            &bind_uri("i-1", "b-1"),
            Some(
                json!({"service_id": service_id, "plan_id": plan_id, "app_guid": "app-1", "parameters": {}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["metadata"], body["metadata"]);
}

#[tokio::test]
async fn without_a_rotation_schedule_bindings_carry_no_expiry() {
    let tb = TestBroker::with_rotation(RotationPolicy { days: 0, grace_secs: 3600 }).await;
    provisioned(&tb, REDIS, "i-1").await;
    bound(&tb, REDIS, "i-1", "b-1").await;
    let (_, body) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    assert_eq!(body.get("metadata"), None, "{body}");
}

#[tokio::test]
async fn the_catalog_says_which_plans_bindings_rotate() {
    let tb = TestBroker::new().await;
    let (_, catalog) = tb.call("GET", "/v2/catalog", None).await;
    for service in catalog["services"].as_array().unwrap() {
        let memcached = service["name"] == MEMCACHED;
        for plan in service["plans"].as_array().unwrap() {
            assert_eq!(plan["binding_rotatable"], !memcached, "{}", plan["name"]);
        }
    }
}

#[tokio::test]
async fn a_successor_binding_gets_fresh_credentials_for_the_same_app_and_both_work() {
    let tb = TestBroker::new().await;
    provisioned(&tb, REDIS, "i-1").await;
    bound(&tb, REDIS, "i-1", "b-1").await;
    // A rotation request names only its predecessor.
    let (status, body) =
        tb.call("PUT", &bind_uri("i-1", "b-2"), Some(json!({"predecessor_binding_id": "b-1"}))).await;
    assert_eq!(status, 202, "{body}");
    tb.drain(100).await;
    let (old, new) = (binding_of(&tb, "i-1", "b-1").await, binding_of(&tb, "i-1", "b-2").await);
    assert_eq!(new.state, broker_core::domain::BindingState::Ready);
    assert_eq!(
        (&new.service_id, &new.plan_id, &new.app_guid),
        (&old.service_id, &old.plan_id, &old.app_guid)
    );
    let (_, first) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    let (_, second) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-2", None).await;
    assert_ne!(first["credentials"]["username"], second["credentials"]["username"]);
    assert_ne!(first["credentials"]["password"], second["credentials"]["password"]);
    assert_eq!(tb.provider.users("i-1"), [Binding::username_for("b-1"), Binding::username_for("b-2")]);
    // Repeating the request is answered from the binding now there.
    let (status, _) =
        tb.call("PUT", &bind_uri("i-1", "b-2"), Some(json!({"predecessor_binding_id": "b-1"}))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_rotation_request_needs_a_ready_rotatable_predecessor_of_the_same_instance() {
    let tb = TestBroker::new().await;
    provisioned(&tb, REDIS, "i-1").await;
    provisioned(&tb, REDIS, "i-2").await;
    bound(&tb, REDIS, "i-2", "other").await;
    provisioned(&tb, MEMCACHED, "m-1").await;
    bound(&tb, MEMCACHED, "m-1", "mb-1").await;
    let cases: [(&str, &str, Value, &str); 4] = [
        (
            "i-1",
            "b-2",
            json!({"predecessor_binding_id": "missing"}),
            "is not a binding of service instance i-1",
        ),
        (
            "i-1",
            "b-2",
            json!({"predecessor_binding_id": "other"}),
            "is not a binding of service instance i-1",
        ),
        ("i-2", "other", json!({"predecessor_binding_id": "other"}), "names the binding being created"),
        ("m-1", "mb-2", json!({"predecessor_binding_id": "mb-1"}), "binding_rotatable is false"),
    ];
    for (instance, binding, body, why) in cases {
        let (status, answer) = tb.call("PUT", &bind_uri(instance, binding), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["description"].as_str().unwrap_or_default().contains(why), "{body}: {answer}");
    }
    // Without a predecessor, service_id and plan_id stay required.
    let (status, answer) = tb.call("PUT", &bind_uri("i-1", "b-3"), Some(json!({"app_guid": "a"}))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["description"].as_str().unwrap_or_default().contains("service_id"), "{answer}");
}

#[tokio::test]
async fn a_binding_that_claimed_a_spare_user_rotates_the_spares_secret() {
    let tb = TestBroker::new().await;
    // GIVEN a binding that claimed spare user s-1 (the first plan keeps two)
    provisioned_as_is(&tb, REDIS, "i-1").await;
    bound(&tb, REDIS, "i-1", "b-1").await;
    assert!(binding_of(&tb, "i-1", "b-1").await.from_spare);
    let target = tb.rotator.resolve(&binding_target("i-1", "b-1")).await.unwrap();
    assert_eq!(target, Target::Spare { instance_id: "i-1".into(), username: "s-1".into() });
    let old = value(&tb, &target, Stage::Current).await.unwrap();

    // WHEN it is rotated by its binding id, as `broker-api rotate` does
    tb.rotator.rotate_now(&binding_target("i-1", "b-1")).await.unwrap();
    tb.drain(100).await;

    // THEN the spare's secret holds the new password, which the binding hands out
    let new = value(&tb, &target, Stage::Current).await.unwrap();
    assert_ne!(new, old);
    let (_, body) = tb.call("GET", "/v2/service_instances/i-1/service_bindings/b-1", None).await;
    assert_eq!(body["credentials"]["password"], new.as_str());
    let s1 = Principal::User("s-1".into());
    let sets: Vec<usize> = password_calls(&tb)
        .into_iter()
        .filter(|(kind, p, _)| *kind == "set" && *p == s1)
        .map(|(_, _, n)| n)
        .collect();
    assert_eq!(sets, [2, 1], "both passwords, then the new one alone after the grace period");
    // AND a spare nobody claimed is not rotated: nobody holds its password.
    let unclaimed = Target::Spare { instance_id: "i-1".into(), username: "s-2".into() };
    let err = step(&tb, &unclaimed, RotationStep::CreateSecret, "t-spare").await.unwrap_err();
    assert!(matches!(&err, RotationError::Refused(m) if m.contains("not bound")), "{err:?}");
}

/// The job that ends a rotation's grace period is lost (an enqueue that
/// failed, a message dead-lettered): nothing else would ever finish it, so
/// the old password would work for ever and the secret could not rotate
/// again. The reconciler enqueues it again and the old password goes.
#[tokio::test]
async fn a_rotation_whose_finishing_job_was_lost_is_finished_by_the_reconciler() {
    let (tb, target) = ready_binding(TestBroker::new().await).await;
    for s in RotationStep::ALL {
        step(&tb, &target, s, "t-1").await.unwrap();
    }
    let op_id = binding_of(&tb, "i-1", "b-1").await.rotation.unwrap().operation_id.unwrap();
    // GIVEN the job that ends the grace period is lost
    let lost = tb.queue.receive(std::time::Duration::from_secs(600)).await.unwrap().expect("the job");
    assert_eq!(lost.job.operation_id, op_id);
    tb.queue.ack(lost.id).await.unwrap();
    assert!(tb.drain(10).await.is_empty());
    assert_eq!(password_calls(&tb).last(), Some(&("check", user("b-1"), 2)), "both passwords work");

    // WHEN the reconciler runs
    let report = tb.reconciler.run(now()).await.unwrap();
    assert_eq!((report.in_progress, report.stalled, report.past_deadline), (1, 1, 0), "{report:?}");

    // THEN the rotation ends and only the new password works
    tb.drain(10).await;
    let op = tb.store.operation(&op_id).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{}", op.description);
    assert_eq!(password_calls(&tb).last(), Some(&("check", user("b-1"), 1)), "the old password is refused");
    assert_eq!(binding_of(&tb, "i-1", "b-1").await.rotation, None, "the secret may rotate again");
}
