//! The worker: takes a job ("advance this operation"), runs the operation's
//! steps one at a time, records each step in the operation with a conditional
//! write, and re-enqueues the job with a delay while the cache is busy.
//!
//! Every step is idempotent and the step reached is stored, so a job delivered
//! twice, out of order, or after a crash in the middle of a step changes
//! nothing twice. Errors are retryable (re-enqueue with back-off) or permanent
//! (the operation fails with a description a person can act on); an operation
//! past its plan's deadline fails saying what timed out.
//!
//! Here: taking a job and reading what its step needs; the steps are in
//! `steps`, how a job ends (wait, retry, cancel, succeed, fail) in `finish`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tracing::{info, warn};

use crate::domain::binding::BindingEvent;
use crate::domain::credentials::{PASSWORD_LEN, generate_password};
use crate::domain::instance::InstanceEvent;
use crate::domain::spare::{self, SpareState, SpareUser};
use crate::domain::{
    Action, Binding, BindingState, CacheUser, Instance, InstanceState, Operation, OperationKind,
    OperationState, Plan, Service, Step, Timestamp, now,
};
use crate::ports::{
    AlarmSpec, Alarms, CacheProvider, CacheSpec, Job, JobQueue, Metrics, NoAlarms, NoMetrics, Principal,
    Progress, ProviderError, QueueError, SecretError, SecretStore, Stage, Store, StoreError,
};
use crate::rotation::Target;

mod actions;
mod finish;
mod steps;

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Delay before looking again at a cache that is still busy.
    pub poll_delay_secs: u32,
    /// Longest back-off after retryable errors (SQS allows 900).
    pub max_retry_delay_secs: u32,
    /// Prefix of secret names ("osb" gives "osb/instances/<id>/admin").
    pub secret_prefix: String,
    /// Days between scheduled rotations of the secrets the worker creates; 0
    /// leaves them unscheduled.
    pub rotation_days: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            poll_delay_secs: 15,
            max_retry_delay_secs: 900,
            secret_prefix: "osb".into(),
            rotation_days: 0,
        }
    }
}

/// How handling a job ended; in every case the job message is done with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The operation ended in this state.
    Finished(OperationState),
    /// Not done yet: a new job is enqueued with this delay.
    Requeued { delay_secs: u32 },
    /// Nothing to do (operation unknown, already finished, or advanced by a
    /// concurrent delivery of the same job).
    Skipped(&'static str),
}

/// A failure that leaves the job to be delivered again (the store or queue is
/// unreachable). Everything else is handled inside the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A record's state does not allow what its own operation did (the
    /// record was changed outside the broker): the job is not acknowledged,
    /// so it is retried and, failing again, dead-lettered with this cause.
    #[error("the record does not match its operation: {0}")]
    Transition(#[from] crate::domain::InvalidTransition),
}

/// How a step ended.
enum StepResult {
    /// Go on with this step at once.
    Next(Step),
    /// The backend is busy: look again later.
    Wait(String),
    /// A change was asked for and the backend is working on it: go on with
    /// this step, after the poll delay. Looking at once would find the cache
    /// as it was (ElastiCache reports `modifying` only a while after the
    /// call) and ask for the change again.
    NextLater(Step, String),
    /// Nothing to do before a known time: look again after this many seconds.
    WaitFor(String, u32),
    /// The operation has succeeded.
    Finished(String),
}

/// Why a step did not end.
enum StepError {
    Retryable(String),
    Permanent(String),
    /// Another writer changed a record: read everything again.
    Race,
    Store(StoreError),
}

/// A step's record refused what the step did: it was changed outside the
/// broker, and the operation cannot go on from it.
impl From<crate::domain::InvalidTransition> for StepError {
    fn from(e: crate::domain::InvalidTransition) -> Self {
        StepError::Permanent(format!("the broker's records are inconsistent: {e}"))
    }
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Retryable(m) => StepError::Retryable(m),
            ProviderError::Permanent(m) => StepError::Permanent(m),
        }
    }
}

impl From<SecretError> for StepError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Unavailable(m) => StepError::Retryable(format!("secret store: {m}")),
            e @ SecretError::Refused(_) => StepError::Permanent(e.to_string()),
            SecretError::NotFound(m) => StepError::Permanent(format!("secret {m} is missing")),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) | StoreError::AlreadyExists(_) => StepError::Race,
            e @ StoreError::Refused(_) => StepError::Permanent(e.to_string()),
            other => StepError::Store(other),
        }
    }
}

/// The plans and services, as the store holds them.
type Catalog = (Vec<Plan>, Vec<Service>);

/// Everything a step needs, read fresh for each step. `service` and `plan`
/// are missing only for a deprovision whose plan (or service) has left the
/// catalog: deleting needs neither, and goes without a final snapshot.
struct Context {
    instance: Instance,
    binding: Option<Binding>,
    service: Option<Service>,
    plan: Option<Plan>,
}

impl Context {
    fn plan(&self) -> Result<&Plan, StepError> {
        self.plan.as_ref().ok_or_else(|| {
            StepError::Permanent(format!(
                "the plan of service instance {} is no longer in the catalog",
                self.instance.id
            ))
        })
    }

    fn service(&self) -> Result<&Service, StepError> {
        self.service.as_ref().ok_or_else(|| {
            StepError::Permanent(format!(
                "the service of service instance {} is no longer in the catalog",
                self.instance.id
            ))
        })
    }

    /// The one-off action of the update this context is for, if any.
    fn action(&self) -> Option<&Action> {
        self.instance.pending_update.as_ref().and_then(|p| p.action.as_ref())
    }

    /// Whether deleting the cache keeps a final snapshot: the plan's flag,
    /// and no when the plan has left the catalog.
    fn final_snapshot(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.final_snapshot)
    }
}

/// Serialises the jobs of one instance inside this process, so two deliveries
/// of the same job do not run side by side here. Across processes the
/// conditional writes decide.
#[derive(Default)]
struct InstanceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl InstanceLocks {
    fn get(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(id.to_string()).or_default().clone()
    }
}

/// An overtaken operation whose record has not moved for this long has lost
/// its job; the operation that overtook it cancels it.
const SUPERSEDED_STALL_SECS: i64 = 300;

/// The most steps one job runs before it yields (a bound, not a target).
const MAX_STEPS_PER_JOB: usize = 32;

pub struct Worker {
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    provider: Arc<dyn CacheProvider>,
    secrets: Arc<dyn SecretStore>,
    config: WorkerConfig,
    locks: InstanceLocks,
    metrics: Arc<dyn Metrics>,
    alarms: Arc<dyn Alarms>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        provider: Arc<dyn CacheProvider>,
        secrets: Arc<dyn SecretStore>,
        config: WorkerConfig,
    ) -> Worker {
        Worker {
            store,
            queue,
            provider,
            secrets,
            config,
            locks: InstanceLocks::default(),
            metrics: Arc::new(NoMetrics),
            alarms: Arc::new(NoAlarms),
        }
    }

    /// Keeps each cache's alarms in `alarms`: made with the cache, brought
    /// up to date by a plan change, deleted with it.
    pub fn with_alarms(mut self, alarms: Arc<dyn Alarms>) -> Worker {
        self.alarms = alarms;
        self
    }

    /// Where the caches' alarms are: fetching an instance shows their states.
    pub fn alarms(&self) -> &dyn Alarms {
        &*self.alarms
    }

    /// Counts operations, retries and requeues in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Worker {
        self.metrics = metrics;
        self
    }

    /// Where the worker counts; its callers add each job's age at receipt.
    pub fn metrics(&self) -> &dyn Metrics {
        &*self.metrics
    }

    /// An operation of `kind` started at `started_at` ended in `state` at
    /// `finished_at`: counted, with how long it took.
    fn ended(
        &self,
        kind: OperationKind,
        plan_id: &str,
        state: OperationState,
        started_at: Timestamp,
        finished_at: Timestamp,
    ) {
        let took = finished_at.saturating_sub(started_at).max(0) as u64;
        self.metrics.operation_finished(kind, plan_id, state, Duration::from_secs(took));
    }

    /// [`Worker::ended`] for an operation whose end is recorded on it.
    fn op_ended(&self, op: &Operation, plan_id: &str) {
        self.ended(op.kind, plan_id, op.state, op.started_at, op.finished_at.unwrap_or_else(now));
    }

    /// Handles one job. `Err` means "deliver this job again later".
    pub async fn handle(&self, job: &Job) -> Result<JobOutcome, WorkerError> {
        if job.v != Job::VERSION {
            warn!(version = job.v, operation = %job.operation_id, "job has an unknown message version; skipped");
            return Ok(JobOutcome::Skipped("unknown message version"));
        }
        let lock = self.locks.get(&job.instance_id);
        let _guard = lock.lock().await;

        // The catalog, read once per job (the records are read at every step).
        let mut catalog: Option<Catalog> = None;
        let mut counted = false;
        for _ in 0..MAX_STEPS_PER_JOB {
            let Some(mut op) = self.store.operation(&job.operation_id).await? else {
                warn!(operation = %job.operation_id, "job for an unknown operation; skipped");
                return Ok(JobOutcome::Skipped("unknown operation"));
            };
            if op.is_finished() {
                return Ok(JobOutcome::Skipped("operation already finished"));
            }
            let mut ctx = match self.context(&op, &mut catalog).await {
                Ok(ctx) => ctx,
                Err(StepError::Store(e)) => return Err(e.into()),
                Err(StepError::Race) => continue,
                Err(StepError::Retryable(m)) => return self.retry(job, op, m).await,
                Err(StepError::Permanent(m)) => match self.finish_failed(op, None, m).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                },
            };
            // Untouched since the broker made it: the worker's first look.
            if !counted && op.step == op.kind.first_step() && op.retries == 0 && op.due_at.is_none() {
                self.metrics.operation_started(op.kind, &ctx.instance.plan_id);
            }
            counted = true;
            if let Some(reason) = cancelled(&op, &ctx) {
                info!(operation = %op.id, reason, "operation cancelled");
                return self.cancel(op, reason, &ctx.instance.plan_id).await;
            }
            if op.kind == OperationKind::Bind && ctx.instance.state != InstanceState::Ready {
                // The binding is still this operation's, but its instance moved
                // on (an update or deprovision): fail the binding so that the
                // platform can bind again later instead of waiting for ever.
                let why = format!(
                    "bind failed: the service instance is now {}; bind again when it is ready",
                    ctx.instance.state.as_str()
                );
                match self.finish_failed(op, Some(ctx), why).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            let t = now();
            if op.past_deadline(t) {
                let minutes = (op.deadline - op.started_at) / 60;
                let why = format!(
                    "{} timed out after {minutes} minutes (the plan's maximum_polling_duration) while {}",
                    op.kind.as_str(),
                    op.step.describe()
                );
                match self.finish_failed(op, Some(ctx), why).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }

            let step = op.step;
            match self.run_step(&mut op, &mut ctx).await {
                Ok(StepResult::Next(next)) => {
                    info!(operation = %op.id, from = ?step, to = ?next, "step done");
                    advance(&mut op, next, t)?;
                    match self.store.save_operation(&mut op).await {
                        Ok(()) => continue,
                        Err(e) if e.is_race() => return Ok(JobOutcome::Skipped("advanced concurrently")),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(StepResult::Wait(detail)) => {
                    return self.wait(job, op, &detail, self.config.poll_delay_secs).await;
                }
                Ok(StepResult::NextLater(next, detail)) => {
                    info!(operation = %op.id, from = ?step, to = ?next, "step done; looking again after the poll delay");
                    advance(&mut op, next, t)?;
                    return self.wait(job, op, &detail, self.config.poll_delay_secs).await;
                }
                Ok(StepResult::WaitFor(detail, delay)) => return self.wait(job, op, &detail, delay).await,
                Ok(StepResult::Finished(description)) => {
                    match self.finish_succeeded(op, ctx, description).await? {
                        Some(outcome) => return Ok(outcome),
                        None => continue,
                    }
                }
                Err(StepError::Race) => continue,
                Err(StepError::Store(e)) => return Err(e.into()),
                Err(StepError::Retryable(m)) => return self.retry(job, op, m).await,
                Err(StepError::Permanent(m)) => match self.finish_failed(op, Some(ctx), m).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                },
            }
        }
        // Many steps in one go: hand over to a fresh job instead of looping on.
        self.queue.enqueue(job, 0).await?;
        Ok(JobOutcome::Requeued { delay_secs: 0 })
    }

    async fn context(&self, op: &Operation, catalog: &mut Option<Catalog>) -> Result<Context, StepError> {
        let instance = self.store.instance(&op.instance_id).await?.ok_or_else(|| {
            StepError::Permanent(format!("service instance {} is not recorded", op.instance_id))
        })?;
        let binding = match &op.binding_id {
            Some(bid) => Some(
                self.store
                    .binding(&op.instance_id, bid)
                    .await?
                    .ok_or_else(|| StepError::Permanent(format!("service binding {bid} is not recorded")))?,
            ),
            None => None,
        };
        let plan_id = match (&op.kind, &instance.pending_update) {
            (OperationKind::Update, Some(p)) => p.plan_id.clone(),
            _ => instance.plan_id.clone(),
        };
        let (plans, services) = match catalog {
            Some(c) => c,
            None => catalog.insert((self.store.plans().await?, self.store.services().await?)),
        };
        let plan = plans.iter().find(|p| p.id == plan_id).cloned();
        let service = match &plan {
            Some(p) => services.iter().find(|s| s.id == p.service_id).cloned(),
            None => None,
        };
        let missing = match (&plan, &service) {
            (None, _) => Some(format!("plan {plan_id} is no longer in the catalog")),
            (Some(p), None) => Some(format!("service {} is no longer in the catalog", p.service_id)),
            (Some(_), Some(_)) => None,
        };
        // A deprovision deletes by instance id and needs neither; every other
        // operation does.
        if let Some(why) = missing
            && op.kind != OperationKind::Deprovision
        {
            return Err(StepError::Permanent(why));
        }
        Ok(Context { instance, binding, service, plan })
    }

    fn spec(&self, ctx: &Context) -> Result<CacheSpec, StepError> {
        let (service, plan) = (ctx.service()?, ctx.plan()?);
        let i = &ctx.instance;
        let (engine_version, parameters) = match &i.pending_update {
            Some(p) => (p.engine_version.clone(), &p.parameters),
            None => (i.engine_version.clone(), &i.parameters),
        };
        // The engine it runs, or moves to (Redis OSS to Valkey in place).
        let engine = i.pending_update.as_ref().and_then(|p| p.engine).unwrap_or_else(|| i.engine_of(service));
        let mut tags = vec![
            ("broker-instance-id".to_string(), i.id.clone()),
            ("broker-plan".to_string(), plan.name.clone()),
        ];
        // The request's own organization and space (every OSB version sends
        // them), else the context's; the namespace only comes in a context.
        let from_context = |field: &str| i.context.get(field).and_then(|v| v.as_str()).map(str::to_string);
        for (key, value) in [
            ("organization", i.organization_guid.clone().or_else(|| from_context("organization_guid"))),
            ("space", i.space_guid.clone().or_else(|| from_context("space_guid"))),
            ("namespace", from_context("namespace")),
        ] {
            if let Some(v) = value {
                tags.push((key.to_string(), v));
            }
        }
        Ok(CacheSpec {
            cache_key: i.cache_key().to_string(),
            engine,
            engine_version,
            plan: plan.clone(),
            admin_secret: i.admin_secret.clone(),
            tags,
            log_delivery: crate::domain::params::log_delivery(plan, parameters),
            spare_users: Vec::new(),
            restore: i.restored_from.as_ref().map(|r| r.reference.clone()),
            settings: crate::domain::settings::of(engine, plan, parameters),
        })
    }

    /// How many spare users the instance keeps (see [`spare::wanted`]).
    fn spares_wanted(&self, ctx: &Context) -> Result<usize, StepError> {
        Ok(spare::wanted(
            ctx.plan()?,
            ctx.instance.engine_of(ctx.service()?),
            &ctx.instance.engine_version,
            self.provider.users_change_at_once(),
        ))
    }

    /// The spare users being made, with their passwords and the plan's
    /// rules: what `create` makes with the cache.
    async fn spare_users(&self, ctx: &Context) -> Result<Vec<CacheUser>, StepError> {
        let mut users = Vec::new();
        for s in ctx.instance.spares.iter().filter(|s| s.state == SpareState::Creating) {
            let reference = s.secret.as_deref().ok_or_else(|| {
                StepError::Permanent(format!("spare user {} has no secret yet", s.username))
            })?;
            users.push(CacheUser::new(
                s.username.clone(),
                self.current(reference).await?,
                ctx.plan()?.access_string.clone(),
            ));
        }
        Ok(users)
    }

    /// The current password in secret `reference`.
    async fn current(&self, reference: &str) -> Result<SecretString, StepError> {
        self.secrets
            .read(reference, Stage::Current)
            .await?
            .ok_or_else(|| StepError::Permanent(format!("secret {reference} has no current password")))
    }

    /// Creates the secret of `target` with a new password (or finds the one
    /// an earlier attempt made) and puts it on the rotation schedule;
    /// returns its reference.
    async fn create_secret(&self, target: &Target, schedule: bool) -> Result<String, StepError> {
        let name = target.secret_name(&self.config.secret_prefix);
        let reference = self.secrets.create(&name, &generate_password(PASSWORD_LEN)).await?;
        if schedule {
            self.schedule_rotation(&reference).await?;
        }
        Ok(reference)
    }

    /// Deletes the secret of `target`: by the reference its record holds
    /// (an ARN in AWS: a name ending in a hyphen and six characters could be
    /// taken for a partial ARN), else by its name, so that a secret whose
    /// reference was never recorded (a crash in between) goes too.
    async fn delete_secret(&self, target: &Target, recorded: Option<&str>) -> Result<(), StepError> {
        let by_name;
        let reference = match recorded {
            Some(r) => r,
            None => {
                by_name = self.secrets.reference_for(&target.secret_name(&self.config.secret_prefix));
                &by_name
            }
        };
        self.secrets.delete(reference).await?;
        Ok(())
    }

    /// Puts a new secret on the rotation schedule, when there is one.
    async fn schedule_rotation(&self, reference: &str) -> Result<(), StepError> {
        if self.config.rotation_days > 0 {
            self.secrets.schedule_rotation(reference, self.config.rotation_days).await?;
        }
        Ok(())
    }
}

/// After a call that changes the cache: go on with `next` at once when the
/// change is done, else after the poll delay.
fn then(progress: Progress, next: Step) -> StepResult {
    match progress {
        Progress::Done => StepResult::Next(next),
        Progress::Working { detail } => StepResult::NextLater(next, detail),
    }
}

fn advance(op: &mut Operation, next: Step, t: i64) -> Result<(), crate::domain::InvalidTransition> {
    op.advance(next)?;
    op.updated_at = t;
    op.retries = 0;
    Ok(())
}

/// Exponential back-off from the poll delay, capped.
pub fn backoff(base: u32, max: u32, retries: u32) -> u32 {
    let factor = 1u32.checked_shl(retries.min(16)).unwrap_or(u32::MAX);
    base.max(1).saturating_mul(factor).min(max).min(900)
}

/// Whether a newer request has overtaken this operation: a deprovision during
/// provisioning, or an unbind during binding (or a deprovision of the
/// instance under a binding being created).
fn cancelled(op: &Operation, ctx: &Context) -> Option<&'static str> {
    let i = ctx.instance.state;
    let last = ctx.instance.last_operation_id == op.id;
    match op.kind {
        OperationKind::Provision if !last || i != InstanceState::Provisioning => {
            Some("a deprovision request arrived while provisioning; the deprovision removes what was created")
        }
        OperationKind::Update if !last || i != InstanceState::Updating => {
            Some("the instance changed state during the update")
        }
        OperationKind::Deprovision if !last || i != InstanceState::Deprovisioning => {
            Some("a newer request replaced this deprovision")
        }
        OperationKind::Bind => {
            let b = ctx.binding.as_ref()?;
            (b.last_operation_id != op.id || b.state != BindingState::Creating)
                .then_some("an unbind request arrived while binding; the unbind removes what was created")
        }
        OperationKind::Unbind => {
            let b = ctx.binding.as_ref()?;
            (b.last_operation_id != op.id || b.state != BindingState::Deleting)
                .then_some("a newer request replaced this unbind")
        }
        OperationKind::Spares => {
            if ctx.instance.spares_operation.as_deref() != Some(op.id.as_str()) {
                Some("another operation makes the spare users")
            } else if !matches!(i, InstanceState::Ready | InstanceState::Updating) {
                Some("the instance is being deleted; its spare users go with it")
            } else {
                None
            }
        }
        OperationKind::Rotate => {
            let (rotation, live) = match &ctx.binding {
                Some(b) => (&b.rotation, b.state == BindingState::Ready),
                None => (&ctx.instance.rotation, true),
            };
            let live = live && matches!(i, InstanceState::Ready | InstanceState::Updating);
            let ours = rotation.as_ref().and_then(|r| r.operation_id.as_deref()) == Some(op.id.as_str());
            if !live {
                Some("the credential's owner is being deleted; its passwords go with it")
            } else if !ours {
                Some("a newer rotation replaced this one")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The rotation a rotate operation ends.
fn rotation_of(ctx: &Context) -> Result<&crate::domain::Rotation, StepError> {
    let rotation = match &ctx.binding {
        Some(b) => b.rotation.as_ref(),
        None => ctx.instance.rotation.as_ref(),
    };
    rotation.ok_or_else(|| StepError::Permanent("no rotation is recorded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_poll_delay_and_is_capped_at_900() {
        assert_eq!(backoff(15, 900, 1), 30);
        assert_eq!(backoff(15, 900, 2), 60);
        assert_eq!(backoff(15, 900, 10), 900);
        assert_eq!(backoff(1, 60, 30), 60);
        assert_eq!(backoff(0, 900, 0), 1);
    }
}
