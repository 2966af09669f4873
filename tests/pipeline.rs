//! The job pipeline: the worker driven job by job. Jobs are delivered twice,
//! replayed, interrupted, delayed by a busy backend, failed for good, or run
//! past their deadline; each time the records and the caches must end up as
//! the platform was told.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use broker_core::broker::{Bound, Provisioned, Unbound};
use broker_core::domain::{
    Action, ActionStep, Binding, CacheUser, Endpoint, Instance, InstanceState, Operation, OperationState,
    Snapshot, Step, now,
};
use broker_core::osb::OsbError;
use broker_core::osb::types::{BindRequest, ProvisionRequest, Query, UpdateRequest};
use broker_core::ports::{
    CacheNode, CacheProvider, CacheSpec, Job, JobQueue, Principal, Progress, ProviderError, SecretStore,
    Stage, StateStore,
};
use broker_core::worker::{JobOutcome, Worker, WorkerConfig};
use broker_testing::{Call, FakeProvider};
use broker_tests::test_broker::{TestBroker, bid, iid};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const REDIS: &str = "elasticache-redis";

// ------------------------------------------------------------------ helpers

/// A broker like AWS mode's (users take time to add) whose Redis OSS plans
/// keep no spare users, so every bind goes through the worker: the pipeline
/// under test. (Spare users have their own suite.)
async fn async_binds() -> TestBroker {
    let tb = TestBroker::new().await;
    for plan in ["small", "medium"] {
        tb.change_plan(REDIS, plan, |p| p.spare_binding_users = 0).await;
    }
    tb
}

fn accepts_incomplete() -> Query {
    Query { accepts_incomplete: true, ..Query::default() }
}

fn delete_query(tb: &TestBroker, plan: &str) -> Query {
    let (service_id, plan_id) = tb.plan_id(REDIS, plan);
    Query { accepts_incomplete: true, service_id: Some(service_id), plan_id: Some(plan_id), operation: None }
}

fn provision_request(tb: &TestBroker, plan: &str) -> ProvisionRequest {
    let (service_id, plan_id) = tb.plan_id(REDIS, plan);
    serde_json::from_value(json!({ "service_id": service_id, "plan_id": plan_id,
        "organization_guid": "org-1", "space_guid": "space-1" }))
    .unwrap()
}

/// Asks for a provision and returns its operation id.
async fn start_provision(tb: &TestBroker, id: &str) -> String {
    start_provision_on(tb, id, "small").await
}

/// Asks for a provision on Redis OSS plan `plan` and returns its operation id.
async fn start_provision_on(tb: &TestBroker, id: &str, plan: &str) -> String {
    match tb.broker.provision(&iid(id), provision_request(tb, plan), &accepts_incomplete()).await {
        Ok(Provisioned::Accepted { operation }) => operation,
        other => panic!("provision of {id}: {other:?}"),
    }
}

/// The final snapshot key of every delete call for `id`, in order (`None`:
/// no snapshot asked for).
fn deletes(tb: &TestBroker, id: &str) -> Vec<Option<String>> {
    tb.provider
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Delete { instance, final_snapshot } if instance == id => Some(final_snapshot),
            _ => None,
        })
        .collect()
}

async fn start_update(tb: &TestBroker, id: &str, plan: &str) -> String {
    let (service_id, plan_id) = tb.plan_id(REDIS, plan);
    let req: UpdateRequest =
        serde_json::from_value(json!({ "service_id": service_id, "plan_id": plan_id })).unwrap();
    match tb.broker.update(&iid(id), req, &accepts_incomplete()).await {
        Ok(broker_core::broker::Updated::Accepted { operation }) => operation,
        other => panic!("update of {id}: {other:?}"),
    }
}

async fn start_bind(tb: &TestBroker, instance: &str, binding: &str) -> String {
    let (service_id, plan_id) = tb.plan_id(REDIS, "small");
    let req: BindRequest =
        serde_json::from_value(json!({ "service_id": service_id, "plan_id": plan_id, "app_guid": "app-1" }))
            .unwrap();
    match tb.broker.bind(&iid(instance), &bid(binding), req, &accepts_incomplete()).await {
        Ok(Bound::Accepted { operation }) => operation,
        other => panic!("bind of {binding}: {other:?}"),
    }
}

/// Provisions `id` and runs the worker until it is ready.
async fn ready_instance(tb: &TestBroker, id: &str) -> String {
    let op = start_provision(tb, id).await;
    tb.drain(100).await;
    assert_eq!(operation(tb, &op).await.state, OperationState::Succeeded);
    op
}

/// Takes the next job off the queue (acknowledged: the test owns it now).
async fn take_job(tb: &TestBroker) -> Job {
    let delivery = tb.queue.receive(Duration::from_secs(30)).await.unwrap().expect("a job in the queue");
    tb.queue.ack(delivery.id).await.unwrap();
    delivery.job
}

/// Delivers the next job to the worker, as the consumer loop does.
async fn deliver_next(tb: &TestBroker) -> JobOutcome {
    let job = take_job(tb).await;
    tb.worker.handle(&job).await.expect("worker")
}

async fn operation(tb: &TestBroker, id: &str) -> Operation {
    tb.store.operation(id).await.unwrap().expect("operation recorded")
}

async fn instance(tb: &TestBroker, id: &str) -> Instance {
    tb.store.instance(id).await.unwrap().expect("instance recorded")
}

/// The admin secret's reference and current value.
async fn admin_secret(tb: &TestBroker, id: &str) -> (String, String) {
    let reference = instance(tb, id).await.admin_secret.expect("an admin secret reference");
    let value = tb.secrets.read(&reference, Stage::Current).await.unwrap().expect("an admin password");
    (reference, value.expose_secret().to_string())
}

async fn secret_is_gone(tb: &TestBroker, reference: &str) -> bool {
    matches!(tb.secrets.read(reference, Stage::Current).await, Ok(None) | Err(_))
}

fn creates(tb: &TestBroker) -> usize {
    tb.provider.count(|c| matches!(c, Call::Create(_)))
}

fn retryable(m: &str) -> Result<Progress, ProviderError> {
    Err(ProviderError::Retryable(m.into()))
}

fn permanent(m: &str) -> Result<Progress, ProviderError> {
    Err(ProviderError::Permanent(m.into()))
}

fn working(detail: &str) -> Result<Progress, ProviderError> {
    Ok(Progress::Working { detail: detail.into() })
}

// ------------------------------------------------------------------ duplicate and replayed jobs

#[tokio::test]
async fn a_job_handled_twice_creates_the_cache_once_and_the_second_run_is_skipped() {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    let job = take_job(&tb).await;

    let first = tb.worker.handle(&job).await.unwrap();
    let second = tb.worker.handle(&job).await.unwrap();

    assert_eq!(first, JobOutcome::Finished(OperationState::Succeeded));
    assert!(matches!(second, JobOutcome::Skipped(_)), "{second:?}");
    assert_eq!(tb.provider.caches(), ["i-1"]);
    assert_eq!(creates(&tb), 1, "the finished job created the cache; the replay must not");
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Ready);
}

#[tokio::test]
async fn a_job_enqueued_twice_runs_once_and_ends_with_one_cache_and_one_admin_secret() {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    // GIVEN the same job enqueued again while the first copy waits (a heal, a
    // restart): the local queue merges the two instead of starting two chains
    tb.queue.enqueue(&Job::for_operation(&operation(&tb, &op).await), 0).await.unwrap();

    let outcomes = tb.drain(10).await;

    assert_eq!(outcomes, [JobOutcome::Finished(OperationState::Succeeded)]);
    assert_eq!(tb.provider.caches(), ["i-1"]);
    let (reference, password) = admin_secret(&tb, "i-1").await;
    assert!(reference.ends_with("instances/i-1/admin"), "{reference}");
    assert!(password.len() >= 32);
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn two_deliveries_of_a_job_running_side_by_side_create_one_cache() {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    let job = take_job(&tb).await;

    let (a, b) = tokio::join!(tb.worker.handle(&job), tb.worker.handle(&job));
    let outcomes = [a.unwrap(), b.unwrap()];

    assert!(outcomes.contains(&JobOutcome::Finished(OperationState::Succeeded)), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| matches!(o, JobOutcome::Skipped(_))), "{outcomes:?}");
    assert_eq!(tb.provider.caches(), ["i-1"]);
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn a_job_replayed_after_its_operation_finished_is_skipped_and_changes_nothing() {
    let tb = async_binds().await;
    let op = ready_instance(&tb, "i-1").await;
    let before_op = operation(&tb, &op).await;
    let before_instance = instance(&tb, "i-1").await;
    let calls = tb.provider.calls().len();

    let outcome = tb.worker.handle(&Job::for_operation(&before_op)).await.unwrap();

    assert_eq!(outcome, JobOutcome::Skipped("operation already finished"));
    assert_eq!(operation(&tb, &op).await, before_op);
    assert_eq!(instance(&tb, "i-1").await, before_instance);
    assert_eq!(tb.provider.calls().len(), calls, "no provider call");
    assert!(tb.drain(10).await.is_empty(), "nothing was enqueued");
}

#[tokio::test]
async fn a_job_for_an_unknown_operation_is_skipped() {
    let tb = async_binds().await;
    let job = Job {
        v: Job::VERSION,
        operation_id: "provision-nope".into(),
        instance_id: "i-9".into(),
        binding_id: None,
    };
    assert_eq!(tb.worker.handle(&job).await.unwrap(), JobOutcome::Skipped("unknown operation"));
    assert!(tb.provider.calls().is_empty());
}

// ------------------------------------------------------------------ interrupted steps

#[tokio::test]
async fn a_retryable_error_requeues_the_job_says_retrying_and_the_next_delivery_finishes_with_the_same_secret()
 {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    // GIVEN ElastiCache throttles the first create
    tb.provider.script("create", vec![retryable("Throttling: Rate exceeded")]);

    // WHEN the job runs
    let outcome = deliver_next(&tb).await;

    // THEN it is requeued, and last_operation says what is being retried
    assert!(matches!(outcome, JobOutcome::Requeued { .. }), "{outcome:?}");
    let interrupted = operation(&tb, &op).await;
    assert_eq!(interrupted.state, OperationState::InProgress);
    assert_eq!(interrupted.step, Step::CreateCache);
    assert!(interrupted.description.contains("retrying"), "{}", interrupted.description);
    assert!(interrupted.description.contains("Throttling"), "{}", interrupted.description);
    let lo = tb.broker.instance_last_operation(&iid("i-1"), &Query::default()).await.unwrap();
    assert_eq!(lo.state, "in progress");
    assert!(lo.description.contains("retrying"), "{}", lo.description);
    let secret_before = admin_secret(&tb, "i-1").await;
    assert!(tb.provider.caches().is_empty());

    // AND the next delivery finishes it, reusing the admin secret made before the failure
    let outcome = deliver_next(&tb).await;
    assert_eq!(outcome, JobOutcome::Finished(OperationState::Succeeded));
    assert_eq!(admin_secret(&tb, "i-1").await, secret_before);
    assert_eq!(tb.provider.caches(), ["i-1"]);
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
    assert!(tb.drain(10).await.is_empty(), "no job left");
}

#[tokio::test]
async fn a_secret_left_by_an_attempt_that_crashed_before_recording_it_is_adopted() {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    // GIVEN an earlier attempt created the admin secret and crashed before
    // recording its reference on the instance
    let left = SecretString::from("left-by-the-crashed-attempt-0123456789".to_string());
    tb.secrets.create("test/instances/i-1/admin", &left).await.unwrap();
    assert!(instance(&tb, "i-1").await.admin_secret.is_none());

    // WHEN the job is delivered again
    assert_eq!(deliver_next(&tb).await, JobOutcome::Finished(OperationState::Succeeded));

    // THEN the cache uses that secret rather than a second one
    let (_, value) = admin_secret(&tb, "i-1").await;
    assert_eq!(value, left.expose_secret());
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn a_busy_backend_requeues_the_job_and_last_operation_shows_its_progress_until_available() {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    tb.provider
        .script("progress", vec![working("1 of 3 nodes available"), working("1 of 3 nodes available")]);

    for _ in 0..2 {
        let outcome = deliver_next(&tb).await;
        assert!(matches!(outcome, JobOutcome::Requeued { .. }), "{outcome:?}");
        let lo = tb.broker.instance_last_operation(&iid("i-1"), &Query::default()).await.unwrap();
        assert_eq!(lo.state, "in progress");
        assert!(lo.description.contains("1 of 3 nodes available"), "{}", lo.description);
    }
    assert_eq!(deliver_next(&tb).await, JobOutcome::Finished(OperationState::Succeeded));

    let lo = tb.broker.instance_last_operation(&iid("i-1"), &Query::default()).await.unwrap();
    assert_eq!(lo.state, "succeeded");
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
    assert_eq!(creates(&tb), 1, "waiting for the cache does not create it again");
    assert_eq!(tb.provider.count(|c| matches!(c, Call::Progress(_))), 3);
}

// ------------------------------------------------------------------ permanent failures and deadlines

#[tokio::test]
async fn a_permanent_error_fails_the_provision_with_the_providers_message_and_a_repeated_put_starts_again() {
    let tb = async_binds().await;
    let first = start_provision(&tb, "i-1").await;
    let message = "InsufficientCacheClusterCapacity: cache.t4g.small is not available in eu-west-1a";
    tb.provider.script("create", vec![permanent(message)]);

    assert_eq!(deliver_next(&tb).await, JobOutcome::Finished(OperationState::Failed));

    let lo = tb.broker.instance_last_operation(&iid("i-1"), &Query::default()).await.unwrap();
    assert_eq!(lo.state, "failed");
    assert!(lo.description.contains(message), "{}", lo.description);
    assert!(matches!(tb.broker.fetch_instance(&iid("i-1")).await, Err(OsbError::NotFound(_))));

    // A repeated identical PUT starts a new operation, which can succeed.
    let second = start_provision(&tb, "i-1").await;
    assert_ne!(first, second);
    tb.drain(100).await;
    assert_eq!(operation(&tb, &second).await.state, OperationState::Succeeded);
    assert_eq!(operation(&tb, &first).await.state, OperationState::Failed);
    assert!(tb.broker.fetch_instance(&iid("i-1")).await.is_ok());
}

#[tokio::test]
async fn an_operation_past_its_deadline_fails_saying_it_timed_out_and_what_it_was_waiting_for() {
    let tb = async_binds().await;
    let op = start_provision(&tb, "i-1").await;
    tb.provider.script("progress", vec![working("0 of 1 nodes available")]);
    assert!(matches!(deliver_next(&tb).await, JobOutcome::Requeued { .. }));

    // GIVEN half an hour has passed since the operation started (the plan allows 30 minutes)
    let mut o = operation(&tb, &op).await;
    assert_eq!(o.step, Step::WaitCacheAvailable);
    let t = now();
    o.started_at = t - 1800 - 60;
    o.deadline = t - 60;
    tb.store.save_operation(&mut o).await.unwrap();

    // WHEN the job comes back
    assert_eq!(deliver_next(&tb).await, JobOutcome::Finished(OperationState::Failed));

    // THEN the operation failed, naming the timeout and the step it waited on
    let failed = operation(&tb, &op).await;
    assert_eq!(failed.state, OperationState::Failed);
    assert!(failed.description.contains("timed out"), "{}", failed.description);
    assert!(failed.description.contains("30 minutes"), "{}", failed.description);
    assert!(failed.description.contains(Step::WaitCacheAvailable.describe()), "{}", failed.description);
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::ProvisionFailed);
}

#[tokio::test]
async fn a_failed_update_leaves_the_instance_usable_on_its_old_plan() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    let op = start_update(&tb, "i-1", "medium").await;
    tb.provider
        .script("modify", vec![permanent("InvalidParameterCombination: cache.m7g.large is not offered")]);

    tb.drain(100).await;

    let lo = tb.broker.instance_last_operation(&iid("i-1"), &Query::default()).await.unwrap();
    assert_eq!(lo.state, "failed");
    assert!(lo.description.contains("InvalidParameterCombination"), "{}", lo.description);
    assert_eq!(lo.instance_usable, Some(true));
    assert_eq!(lo.update_repeatable, Some(true));
    let i = instance(&tb, "i-1").await;
    assert_eq!(i.state, InstanceState::Ready);
    assert_eq!(i.plan_id, tb.plan_id(REDIS, "small").1);
    assert!(i.pending_update.is_none());
    let fetched = tb.broker.fetch_instance(&iid("i-1")).await.expect("the instance can be fetched");
    assert_eq!(fetched.plan_id, tb.plan_id(REDIS, "small").1);
    // The update can be asked again.
    let again = start_update(&tb, "i-1", "medium").await;
    assert_ne!(again, op);
}

// ------------------------------------------------------------------ conditional writes

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_provisions_of_a_new_id_never_start_two_operations() {
    let tb = async_binds().await;
    for n in 0..20 {
        let id = format!("race-{n}");
        let (q, instance) = (accepts_incomplete(), iid(&id));
        let (a, b) = tokio::join!(
            tb.broker.provision(&instance, provision_request(&tb, "small"), &q),
            tb.broker.provision(&instance, provision_request(&tb, "small"), &q),
        );
        match (a, b) {
            (Ok(Provisioned::Accepted { operation: x }), Ok(Provisioned::Accepted { operation: y })) => {
                assert_eq!(x, y, "{id}: two operations")
            }
            (Ok(Provisioned::Accepted { .. }), Err(OsbError::Concurrency(_)))
            | (Err(OsbError::Concurrency(_)), Ok(Provisioned::Accepted { .. })) => {}
            other => panic!("{id}: {other:?}"),
        }
    }
    let instances = tb.store.instances().await.unwrap();
    assert_eq!(instances.len(), 20);
    let in_progress = tb.store.operations_in_progress().await.unwrap();
    assert_eq!(in_progress.len(), 20, "one operation per instance");
    for i in &instances {
        assert!(in_progress.iter().any(|o| o.id == i.last_operation_id), "{}", i.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_provisions_of_a_new_id_with_different_plans_record_one_instance() {
    let tb = async_binds().await;
    let (q, instance) = (accepts_incomplete(), iid("i-1"));
    let (a, b) = tokio::join!(
        tb.broker.provision(&instance, provision_request(&tb, "small"), &q),
        tb.broker.provision(&instance, provision_request(&tb, "medium"), &q),
    );
    let accepted = [&a, &b].iter().filter(|r| matches!(r, Ok(Provisioned::Accepted { .. }))).count();
    assert_eq!(accepted, 1, "{a:?} / {b:?}");
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(OsbError::Conflict(_) | OsbError::Concurrency(_))))
        .count();
    assert_eq!(refused, 1, "{a:?} / {b:?}");
    assert_eq!(tb.store.instances().await.unwrap().len(), 1);
    assert_eq!(tb.store.operations_in_progress().await.unwrap().len(), 1);
}

// ------------------------------------------------------------------ the job message

#[tokio::test]
async fn a_job_message_is_version_1_and_names_its_operation() {
    let tb = async_binds().await;
    let op = operation(&tb, &start_provision(&tb, "i-1").await).await;
    let message = serde_json::to_value(Job::for_operation(&op)).unwrap();
    assert_eq!(message["v"], 1);
    assert_eq!(message["operation_id"], op.id.as_str());
    assert_eq!(message["instance_id"], "i-1");
    let back: Job = serde_json::from_value(message).unwrap();
    assert_eq!(back, Job::for_operation(&op));
    // What the broker enqueued is that message.
    assert_eq!(take_job(&tb).await, Job::for_operation(&op));
}

#[tokio::test]
async fn a_job_of_an_unknown_message_version_is_skipped_and_changes_nothing() {
    let tb = async_binds().await;
    let op = operation(&tb, &start_provision(&tb, "i-1").await).await;
    let mut message: Value = serde_json::to_value(Job::for_operation(&op)).unwrap();
    message["v"] = json!(2);
    let job: Job = serde_json::from_value(message).unwrap();

    let outcome = tb.worker.handle(&job).await.unwrap();

    assert!(matches!(outcome, JobOutcome::Skipped(_)), "{outcome:?}");
    assert!(tb.provider.calls().is_empty());
    assert_eq!(operation(&tb, &op.id).await, op);
}

// ------------------------------------------------------------------ cancellation

#[tokio::test]
async fn a_deprovision_while_the_cache_is_being_created_removes_the_cache_and_its_secret() {
    let tb = async_binds().await;
    let provision = start_provision(&tb, "i-1").await;
    tb.provider.script("progress", vec![working("0 of 1 nodes available")]);
    assert!(matches!(deliver_next(&tb).await, JobOutcome::Requeued { .. }));
    assert_eq!(tb.provider.caches(), ["i-1"]);
    let (secret, _) = admin_secret(&tb, "i-1").await;

    let deprovision =
        tb.broker.deprovision(&iid("i-1"), &delete_query(&tb, "small")).await.unwrap().operation;
    tb.drain(100).await;

    let p = operation(&tb, &provision).await;
    assert_eq!(p.state, OperationState::Failed);
    assert!(p.description.contains("cancelled"), "{}", p.description);
    assert_eq!(operation(&tb, &deprovision).await.state, OperationState::Succeeded);
    assert!(tb.provider.caches().is_empty(), "{:?}", tb.provider.caches());
    assert!(secret_is_gone(&tb, &secret).await, "the admin secret is deleted");
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Deleted);
}

#[tokio::test]
async fn an_unbind_while_the_user_is_being_created_deletes_the_user_and_its_secret() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    let bind = start_bind(&tb, "i-1", "b-1").await;
    tb.provider.script("user_progress", vec![working("modifying")]);
    assert!(matches!(deliver_next(&tb).await, JobOutcome::Requeued { .. }));
    assert_eq!(tb.provider.users("i-1"), [Binding::username_for("b-1")]);
    let secret = tb.store.binding("i-1", "b-1").await.unwrap().unwrap().secret.expect("secret");

    let unbind = match tb.broker.unbind(&iid("i-1"), &bid("b-1"), &delete_query(&tb, "small")).await.unwrap()
    {
        Unbound::Accepted { operation } => operation,
        other => panic!("unbind: {other:?}"),
    };
    tb.drain(100).await;

    let b = operation(&tb, &bind).await;
    assert_eq!(b.state, OperationState::Failed);
    assert!(b.description.contains("cancelled"), "{}", b.description);
    assert_eq!(operation(&tb, &unbind).await.state, OperationState::Succeeded);
    assert!(tb.provider.users("i-1").is_empty(), "{:?}", tb.provider.users("i-1"));
    assert!(secret_is_gone(&tb, &secret).await);
}

#[tokio::test]
async fn deprovisioning_deletes_every_bindings_secret_and_closes_the_bindings() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    start_bind(&tb, "i-1", "b-1").await;
    tb.drain(100).await;
    let secret = tb.store.binding("i-1", "b-1").await.unwrap().unwrap().secret.expect("secret");
    let (admin, _) = admin_secret(&tb, "i-1").await;

    tb.broker.deprovision(&iid("i-1"), &delete_query(&tb, "small")).await.unwrap();
    tb.drain(100).await;

    assert!(secret_is_gone(&tb, &secret).await);
    assert!(secret_is_gone(&tb, &admin).await);
    let b = tb.store.binding("i-1", "b-1").await.unwrap().unwrap();
    assert_eq!(b.state, broker_core::domain::BindingState::Deleted);
    assert!(matches!(tb.broker.fetch_binding(&iid("i-1"), &bid("b-1")).await, Err(OsbError::NotFound(_))));
}

// ------------------------------------------------------------------ final snapshots

#[tokio::test]
async fn deprovisioning_asks_for_a_final_snapshot_exactly_when_the_instances_plan_keeps_one() {
    let tb = async_binds().await;
    // GIVEN an instance of `small` (daily snapshots, a final one on delete)
    // and one of `dev` (no snapshots)
    let plan = |name: &str| tb.catalog.plans.iter().find(|p| p.id == tb.plan_id(REDIS, name).1).unwrap();
    assert!(plan("small").final_snapshot && !plan("dev").final_snapshot);
    start_provision_on(&tb, "i-small", "small").await;
    start_provision_on(&tb, "i-dev", "dev").await;
    tb.drain(100).await;
    tb.provider.script("delete", vec![working("deleting"), working("deleting")]);

    // WHEN both are deprovisioned
    let small = tb.broker.deprovision(&iid("i-small"), &delete_query(&tb, "small")).await.unwrap().operation;
    let dev = tb.broker.deprovision(&iid("i-dev"), &delete_query(&tb, "dev")).await.unwrap().operation;
    tb.drain(100).await;

    // THEN every delete call (the first, and the polls until the cache is
    // gone) carries the plan's flag
    assert_eq!(operation(&tb, &small).await.state, OperationState::Succeeded);
    assert_eq!(operation(&tb, &dev).await.state, OperationState::Succeeded);
    let (small, dev) = (deletes(&tb, "i-small"), deletes(&tb, "i-dev"));
    assert!(small.len() >= 2 && small.iter().all(Option::is_some), "i-small: {small:?}");
    assert!(dev.len() >= 2 && dev.iter().all(Option::is_none), "i-dev: {dev:?}");
    assert!(tb.provider.caches().is_empty());
}

#[tokio::test]
async fn a_deprovision_whose_plan_left_the_catalog_deletes_the_cache_without_a_final_snapshot() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    let (admin, _) = admin_secret(&tb, "i-1").await;
    // GIVEN the instance's plan is no longer in the catalog
    let mut i = instance(&tb, "i-1").await;
    i.plan_id = "a-retired-plan".into();
    tb.store.save_instance(&mut i, None).await.unwrap();

    let op = tb.broker.deprovision(&iid("i-1"), &delete_query(&tb, "small")).await.unwrap().operation;
    tb.drain(100).await;

    let op = operation(&tb, &op).await;
    assert_eq!(op.state, OperationState::Succeeded, "{}", op.description);
    assert_eq!(deletes(&tb, "i-1"), [None, None]);
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Deleted);
    assert!(tb.provider.caches().is_empty());
    assert!(secret_is_gone(&tb, &admin).await);
}

// ------------------------------------------------------------------ requests that land while a job runs
//
// A provider that runs a piece of code (a request, another worker) the first
// time one of its calls is made, then answers as the fake does: the way to
// put a request exactly inside a step.

type Interruption = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Interrupting {
    inner: Arc<FakeProvider>,
    on: &'static str,
    interruption: tokio::sync::Mutex<Option<Interruption>>,
}

impl Interrupting {
    async fn maybe_interrupt(&self, call: &str) {
        if call != self.on {
            return;
        }
        let interruption = self.interruption.lock().await.take();
        if let Some(f) = interruption {
            f.await;
        }
    }
}

#[async_trait]
impl CacheProvider for Interrupting {
    fn users_change_at_once(&self) -> bool {
        self.inner.users_change_at_once()
    }
    async fn create(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("create").await;
        self.inner.create(spec).await
    }
    async fn progress(&self, id: &str) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("progress").await;
        self.inner.progress(id).await
    }
    async fn modify(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("modify").await;
        self.inner.modify(spec).await
    }
    async fn retag(&self, spec: &CacheSpec) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("retag").await;
        self.inner.retag(spec).await
    }
    async fn delete(&self, id: &str, final_snapshot: Option<&str>) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("delete").await;
        self.inner.delete(id, final_snapshot).await
    }
    async fn endpoint(&self, id: &str) -> Result<Endpoint, ProviderError> {
        self.inner.endpoint(id).await
    }
    async fn nodes(&self, id: &str) -> Result<Vec<CacheNode>, ProviderError> {
        self.maybe_interrupt("nodes").await;
        self.inner.nodes(id).await
    }
    async fn put_user(&self, id: &str, user: &CacheUser) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("put_user").await;
        self.inner.put_user(id, user).await
    }
    async fn delete_user(&self, id: &str, username: &str) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("delete_user").await;
        self.inner.delete_user(id, username).await
    }
    async fn user_progress(&self, id: &str, username: &str) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("user_progress").await;
        self.inner.user_progress(id, username).await
    }
    async fn set_passwords(
        &self,
        id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("set_passwords").await;
        self.inner.set_passwords(id, principal, passwords).await
    }
    async fn passwords_progress(
        &self,
        id: &str,
        principal: &Principal,
        passwords: &[SecretString],
    ) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("passwords_progress").await;
        self.inner.passwords_progress(id, principal, passwords).await
    }
    async fn plan_action(&self, id: &str, action: &Action) -> Result<Vec<ActionStep>, ProviderError> {
        self.maybe_interrupt("plan_action").await;
        self.inner.plan_action(id, action).await
    }
    async fn start_action(
        &self,
        id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("start_action").await;
        self.inner.start_action(id, action, step).await
    }
    async fn action_progress(
        &self,
        id: &str,
        action: &Action,
        step: &ActionStep,
    ) -> Result<Progress, ProviderError> {
        self.maybe_interrupt("action_progress").await;
        self.inner.action_progress(id, action, step).await
    }
    async fn snapshots(&self, id: &str, final_key: Option<&str>) -> Result<Vec<Snapshot>, ProviderError> {
        self.inner.snapshots(id, final_key).await
    }
}

/// A second worker process on the same store, queue and secrets, whose
/// provider runs `interruption` at its first `on` call.
fn interrupted_worker(tb: &TestBroker, on: &'static str, interruption: Interruption) -> Worker {
    let provider = Arc::new(Interrupting {
        inner: tb.provider.clone(),
        on,
        interruption: tokio::sync::Mutex::new(Some(interruption)),
    });
    Worker::new(
        tb.store.clone(),
        tb.queue.clone(),
        provider,
        tb.secrets.clone(),
        WorkerConfig {
            poll_delay_secs: 0,
            max_retry_delay_secs: 0,
            secret_prefix: "test".into(),
            rotation_days: 0,
        },
    )
}

#[tokio::test]
async fn a_deprovision_arriving_as_the_cache_becomes_available_still_ends_the_provision_operation() {
    let tb = async_binds().await;
    let provision = start_provision(&tb, "i-1").await;
    let job = take_job(&tb).await;
    // GIVEN the platform sends DELETE while the worker is reading the cache's
    // progress for the last time
    let (broker, query) = (tb.broker.clone(), delete_query(&tb, "small"));
    let worker = interrupted_worker(
        &tb,
        "progress",
        Box::pin(async move {
            broker.deprovision(&iid("i-1"), &query).await.expect("deprovision accepted");
        }),
    );

    // WHEN that provision job and then every other job run
    worker.handle(&job).await.unwrap();
    tb.drain(100).await;

    // THEN the instance is deleted, and the provision operation is not left
    // "in progress" for ever: it ended (cancelled) like every other operation
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Deleted);
    assert!(tb.provider.caches().is_empty());
    let p = operation(&tb, &provision).await;
    assert_ne!(
        p.state,
        OperationState::InProgress,
        "provision operation left in progress with no job to finish it: {:?}",
        p.description
    );
    assert!(tb.store.operations_in_progress().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unbind_arriving_as_the_user_becomes_active_still_ends_the_bind_operation() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    let bind = start_bind(&tb, "i-1", "b-1").await;
    let job = take_job(&tb).await;
    let (broker, query) = (tb.broker.clone(), delete_query(&tb, "small"));
    let worker = interrupted_worker(
        &tb,
        "user_progress",
        Box::pin(async move {
            broker.unbind(&iid("i-1"), &bid("b-1"), &query).await.expect("unbind accepted");
        }),
    );

    worker.handle(&job).await.unwrap();
    tb.drain(100).await;

    assert!(tb.provider.users("i-1").is_empty(), "{:?}", tb.provider.users("i-1"));
    let b = operation(&tb, &bind).await;
    assert_ne!(
        b.state,
        OperationState::InProgress,
        "bind operation left in progress with no job to finish it: {:?}",
        b.description
    );
    assert!(tb.store.operations_in_progress().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_deprovision_finished_by_another_worker_while_the_cache_is_being_created_leaves_no_cache() {
    let tb = async_binds().await;
    let provision = start_provision(&tb, "i-1").await;
    let job = take_job(&tb).await;
    // GIVEN a platform that sends DELETE right after PUT (orphan mitigation),
    // and another worker process that runs the whole deprovision while this
    // worker's create call is on its way to ElastiCache
    let (broker, query) = (tb.broker.clone(), delete_query(&tb, "small"));
    let (other_worker, queue) = (tb.worker.clone(), tb.queue.clone());
    let worker = interrupted_worker(
        &tb,
        "create",
        Box::pin(async move {
            broker.deprovision(&iid("i-1"), &query).await.expect("deprovision accepted");
            let d = queue.receive(Duration::from_secs(30)).await.unwrap().expect("deprovision job");
            queue.ack(d.id).await.unwrap();
            // The deprovision does not delete while the provision it overtook
            // may still have a create in flight: it waits for it to stop.
            let outcome = other_worker.handle(&d.job).await.unwrap();
            assert!(matches!(outcome, JobOutcome::Requeued { .. }), "{outcome:?}");
        }),
    );

    // WHEN this worker's create completes and every remaining job runs
    worker.handle(&job).await.unwrap();
    tb.drain(100).await;

    // THEN the platform was told the instance is gone, and no cache is left
    // running (and billing) for it
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Deleted);
    assert_ne!(operation(&tb, &provision).await.state, OperationState::InProgress);
    assert!(
        tb.provider.caches().is_empty(),
        "orphaned cache for a deleted instance: {:?}",
        tb.provider.caches()
    );
}

#[tokio::test]
async fn an_update_during_a_bind_fails_the_binding_so_that_it_can_be_bound_again() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    // GIVEN a bind accepted, then a plan change accepted before the bind ran
    let bind = start_bind(&tb, "i-1", "b-1").await;
    start_update(&tb, "i-1", "medium").await;

    tb.drain(100).await;

    // THEN the bind failed saying why, the binding is not stuck "creating" ...
    let op = operation(&tb, &bind).await;
    assert_eq!(op.state, OperationState::Failed);
    assert!(op.description.contains("is now being updated"), "{}", op.description);
    // ... and the same bind, sent again, starts afresh and succeeds.
    let again = start_bind(&tb, "i-1", "b-1").await;
    assert_ne!(again, bind);
    tb.drain(100).await;
    assert_eq!(operation(&tb, &again).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn secrets_whose_references_were_never_recorded_are_deleted_with_the_instance() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    let (admin, _) = admin_secret(&tb, "i-1").await;
    // GIVEN the admin secret's reference lost (a crash between creating the
    // secret and recording it) ...
    let mut i = instance(&tb, "i-1").await;
    i.admin_secret = None;
    tb.store.save_instance(&mut i, None).await.unwrap();
    // ... and a binding whose secret exists but was never recorded
    start_bind(&tb, "i-1", "b-1").await;
    let binding_secret = tb
        .secrets
        .create("test/instances/i-1/bindings/b-1", &SecretString::from("a-password-never-recorded-00000000"))
        .await
        .unwrap();
    let _bind_job = take_job(&tb).await;

    // WHEN the instance is deprovisioned
    tb.broker.deprovision(&iid("i-1"), &delete_query(&tb, "small")).await.unwrap();
    tb.drain(100).await;

    // THEN both secrets are gone, found by their names
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Deleted);
    assert!(secret_is_gone(&tb, &admin).await, "the admin secret is left behind");
    assert!(secret_is_gone(&tb, &binding_secret).await, "the binding secret is left behind");
}

#[tokio::test]
async fn a_plan_change_that_takes_several_changes_asks_the_provider_until_nothing_is_left() {
    let tb = async_binds().await;
    ready_instance(&tb, "i-1").await;
    // GIVEN a provider that applies a change in three steps (add replicas,
    // then the node type, then nothing left)
    tb.provider.script("modify", vec![working("adding replicas"), working("changing the node type")]);
    let op = start_update(&tb, "i-1", "medium").await;

    tb.drain(100).await;

    assert_eq!(tb.provider.count(|c| matches!(c, Call::Modify(_))), 3);
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
    assert_eq!(instance(&tb, "i-1").await.state, InstanceState::Ready);
}

/// Near its deadline the provisioner starts no job: every record of the
/// batch is named a failure (SQS delivers it again) and nothing is done;
/// with time left, the same records are handled.
#[tokio::test]
async fn a_batch_near_its_deadline_starts_no_job_and_names_every_record_a_failure() {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    use broker_core::invocation::{DEADLINE_MARGIN, handle_batch};
    use std::time::SystemTime;

    let tb = TestBroker::new().await;
    let mut event = SqsEvent::default();
    for id in ["i-1", "i-2"] {
        start_provision(&tb, id).await;
        let delivery = tb.queue.receive(Duration::from_secs(600)).await.unwrap().expect("a job");
        let mut record = SqsMessage::default();
        record.message_id = Some(format!("m-{id}"));
        record.body = Some(serde_json::to_string(&delivery.job).unwrap());
        event.records.push(record);
    }

    let soon = SystemTime::now() + DEADLINE_MARGIN - Duration::from_secs(1);
    let response = handle_batch(&tb.worker, event.clone(), soon).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["m-i-1", "m-i-2"]);
    assert_eq!(tb.provider.count(|c| matches!(c, Call::Create(_))), 0, "no job started");

    let later = SystemTime::now() + DEADLINE_MARGIN + Duration::from_secs(60);
    let response = handle_batch(&tb.worker, event, later).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(tb.provider.count(|c| matches!(c, Call::Create(_))), 2, "both jobs ran");
}

/// ElastiCache reports `modifying` only a while after ModifyReplicationGroup:
/// a worker that looks at once finds the cache `available` as it was and
/// sends the change again, in a loop. After a change the worker waits the
/// poll delay, and the modify is asked for once per delivery.
#[tokio::test]
async fn after_a_change_the_worker_waits_the_poll_delay_instead_of_asking_again_at_once() {
    let tb = TestBroker::new().await;
    ready_instance(&tb, "i-1").await;
    let op = start_update(&tb, "i-1", "medium").await;
    tb.provider.script("modify", vec![working("modifying replication group")]);
    let modifies = || tb.provider.count(|c| matches!(c, Call::Modify(id) if id == "i-1"));

    assert!(matches!(deliver_next(&tb).await, JobOutcome::Requeued { .. }));
    assert_eq!(modifies(), 1, "the change was asked for once in that delivery");
    let waiting = operation(&tb, &op).await;
    assert_eq!(waiting.step, Step::WaitCacheModified);
    assert!(waiting.description.contains("modifying replication group"), "{}", waiting.description);

    tb.drain(100).await;
    assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
    assert_eq!(modifies(), 2, "asked again only once the cache was seen available");
}

/// A secret store that refuses every create, as Secrets Manager does when
/// the provisioner's role lacks CreateSecret (AccessDeniedException).
struct RefusingSecrets(Arc<dyn SecretStore>);

#[async_trait]
impl SecretStore for RefusingSecrets {
    async fn create(&self, name: &str, _: &SecretString) -> Result<String, broker_core::ports::SecretError> {
        Err(broker_core::ports::SecretError::Refused(format!(
            "CreateSecret {name} failed: AccessDeniedException: not authorized"
        )))
    }
    async fn read(
        &self,
        reference: &str,
        stage: Stage,
    ) -> Result<Option<SecretString>, broker_core::ports::SecretError> {
        self.0.read(reference, stage).await
    }
    async fn delete(&self, reference: &str) -> Result<(), broker_core::ports::SecretError> {
        self.0.delete(reference).await
    }
    async fn put_pending(
        &self,
        reference: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<(), broker_core::ports::SecretError> {
        self.0.put_pending(reference, version_id, value).await
    }
    async fn promote(
        &self,
        reference: &str,
        version_id: &str,
    ) -> Result<(), broker_core::ports::SecretError> {
        self.0.promote(reference, version_id).await
    }
    async fn describe(
        &self,
        reference: &str,
    ) -> Result<broker_core::ports::SecretInfo, broker_core::ports::SecretError> {
        self.0.describe(reference).await
    }
    async fn read_version(
        &self,
        reference: &str,
        version_id: &str,
    ) -> Result<Option<SecretString>, broker_core::ports::SecretError> {
        self.0.read_version(reference, version_id).await
    }
    async fn schedule_rotation(
        &self,
        reference: &str,
        days: u32,
    ) -> Result<(), broker_core::ports::SecretError> {
        self.0.schedule_rotation(reference, days).await
    }
}

/// A refusal (access denied, an invalid request) fails the operation at
/// the first delivery, saying what was refused, instead of being retried
/// with back-off until the plan's deadline.
#[tokio::test]
async fn a_refused_call_fails_the_operation_at_once_saying_what_was_refused() {
    let tb = TestBroker::new().await;
    let op = start_provision(&tb, "i-1").await;
    let worker = Worker::new(
        tb.store.clone(),
        tb.queue.clone(),
        tb.provider.clone(),
        Arc::new(RefusingSecrets(tb.secrets.clone())),
        WorkerConfig {
            poll_delay_secs: 0,
            max_retry_delay_secs: 0,
            secret_prefix: "test".into(),
            rotation_days: 0,
        },
    );
    let job = take_job(&tb).await;
    let outcome = worker.handle(&job).await.unwrap();
    assert!(matches!(outcome, JobOutcome::Finished(OperationState::Failed)), "{outcome:?}");
    let failed = operation(&tb, &op).await;
    assert!(
        failed.description.contains("refused") && failed.description.contains("AccessDenied"),
        "{}",
        failed.description
    );
    assert_eq!(tb.provider.count(|c| matches!(c, Call::Create(_))), 0, "no cache without its admin secret");
}

/// A final snapshot is named for the deprovision that takes it: every delete
/// call of one deprovision gives its operation id (a retry asks for the same
/// snapshot), and a later deprovision of a reused instance id gives its own,
/// so its snapshot does not collide with the one the first left behind.
#[tokio::test]
async fn each_deprovision_names_its_own_final_snapshot() {
    let tb = TestBroker::new().await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        ready_instance(&tb, "i-1").await;
        tb.provider.script("delete", vec![working("deleting")]);
        let op = tb.broker.deprovision(&iid("i-1"), &delete_query(&tb, "small")).await.unwrap().operation;
        tb.drain(100).await;
        assert_eq!(operation(&tb, &op).await.state, OperationState::Succeeded);
        let asked = deletes(&tb, "i-1").split_off(keys.len() * 2);
        assert_eq!(asked, [Some(op.clone()), Some(op.clone())], "the first delete and its poll");
        keys.push(op);
    }
    assert_ne!(keys[0], keys[1]);
}

/// What a failed operation tells the platform names the call and the AWS
/// error, not the operator's account id nor where laptop mode keeps its
/// files; the worker's log keeps the whole text.
#[tokio::test]
async fn a_failed_operation_describes_what_failed_without_account_ids_or_paths() {
    let tb = TestBroker::new().await;
    let op = start_provision(&tb, "i-1").await;
    tb.provider.script(
        "create",
        vec![Err(ProviderError::Permanent(
            "CreateReplicationGroup failed: AccessDenied: arn:aws:iam::123456789012:role/osb-provisioner \
             may not use arn:aws:kms:eu-west-1:123456789012:key/1234; see /home/me/.broker-state/caches/i-1/server.log"
                .into(),
        ))],
    );
    tb.drain(100).await;
    let failed = operation(&tb, &op).await;
    assert_eq!(failed.state, OperationState::Failed);
    let d = &failed.description;
    assert!(d.contains("CreateReplicationGroup failed: AccessDenied"), "{d}");
    assert!(d.contains("arn:aws:iam::<account>:role/osb-provisioner"), "{d}");
    assert!(!d.contains("123456789012") && !d.contains("/home/me"), "{d}");
    assert!(d.ends_with("see server.log"), "{d}");
}
