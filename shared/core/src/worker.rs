//! The worker: takes a job ("advance this operation"), runs the operation's
//! steps one at a time, records each step in the operation with a conditional
//! write, and re-enqueues the job with a delay while the cache is busy.
//!
//! Every step is idempotent and the step reached is stored, so a job delivered
//! twice, out of order, or after a crash in the middle of a step changes
//! nothing twice. Errors are retryable (re-enqueue with back-off) or permanent
//! (the operation fails with a description a person can act on); an operation
//! past its plan's deadline fails saying what timed out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use tracing::{info, warn};

use crate::domain::binding::BindingEvent;
use crate::domain::credentials::{PASSWORD_LEN, generate_password};
use crate::domain::instance::InstanceEvent;
use crate::domain::spare::{self, SpareState, SpareUser};
use crate::domain::{
    Binding, BindingState, CacheUser, Instance, InstanceState, Operation, OperationKind, OperationState,
    Plan, Service, Step, now,
};
use crate::ports::{
    CacheProvider, CacheSpec, Job, JobQueue, Principal, Progress, ProviderError, QueueError, SecretError,
    SecretStore, Stage, Store, StoreError,
};
use crate::rotation::Target;

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
            SecretError::NotFound(m) => StepError::Permanent(format!("secret {m} is missing")),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) | StoreError::AlreadyExists(_) => StepError::Race,
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
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        provider: Arc<dyn CacheProvider>,
        secrets: Arc<dyn SecretStore>,
        config: WorkerConfig,
    ) -> Worker {
        Worker { store, queue, provider, secrets, config, locks: InstanceLocks::default() }
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
            if let Some(reason) = cancelled(&op, &ctx) {
                info!(operation = %op.id, reason, "operation cancelled");
                return self.cancel(op, reason).await;
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
            match self.run_step(&op, &mut ctx).await {
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
        let engine_version = match &i.pending_update {
            Some(p) => p.engine_version.clone(),
            None => i.engine_version.clone(),
        };
        let mut tags = vec![
            ("broker-instance-id".to_string(), i.id.clone()),
            ("broker-plan".to_string(), plan.name.clone()),
        ];
        for (key, field) in
            [("organization", "organization_guid"), ("space", "space_guid"), ("namespace", "namespace")]
        {
            if let Some(v) = i.context.get(field).and_then(|v| v.as_str()) {
                tags.push((key.to_string(), v.to_string()));
            }
        }
        Ok(CacheSpec {
            instance_id: i.id.clone(),
            engine: service.engine,
            engine_version,
            plan: plan.clone(),
            admin_secret: i.admin_secret.clone(),
            tags,
            spare_users: Vec::new(),
        })
    }

    /// How many spare users the instance keeps (see [`spare::wanted`]).
    fn spares_wanted(&self, ctx: &Context) -> Result<usize, StepError> {
        Ok(spare::wanted(
            ctx.plan()?,
            ctx.service()?.engine,
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

    /// Runs the operation's current step once.
    async fn run_step(&self, op: &Operation, ctx: &mut Context) -> Result<StepResult, StepError> {
        let id = ctx.instance.id.clone();
        match op.step {
            // ---------------------------------------------------- provision
            Step::CreateAdminSecret => {
                if !ctx.service()?.engine.speaks_redis() || ctx.instance.admin_secret.is_some() {
                    return Ok(StepResult::Next(Step::CreateSpareSecrets));
                }
                let reference = self.create_secret(&Target::Admin { instance_id: id.clone() }, true).await?;
                ctx.instance.admin_secret = Some(reference);
                ctx.instance.updated_at = now();
                self.store.save_instance(&mut ctx.instance, None).await?;
                Ok(StepResult::Next(Step::CreateSpareSecrets))
            }
            Step::CreateSpareSecrets => {
                // Recorded first, so that clean-up finds every secret made.
                let wanted = u32::try_from(self.spares_wanted(ctx)?).unwrap_or(u32::MAX);
                let i = &mut ctx.instance;
                if i.spare_seq < wanted {
                    while i.spare_seq < wanted {
                        i.spare_seq += 1;
                        i.spares.push(SpareUser::numbered(i.spare_seq));
                    }
                    i.updated_at = now();
                    self.store.save_instance(i, None).await?;
                    return Ok(StepResult::Next(Step::CreateSpareSecrets));
                }
                let mut made = false;
                for n in 0..i.spares.len() {
                    if i.spares[n].secret.is_some() {
                        continue;
                    }
                    let target =
                        Target::Spare { instance_id: id.clone(), username: i.spares[n].username.clone() };
                    // Scheduled for rotation once a bind claims it: nobody
                    // holds a spare's password before.
                    i.spares[n].secret = Some(self.create_secret(&target, false).await?);
                    made = true;
                }
                if made {
                    i.updated_at = now();
                    self.store.save_instance(i, None).await?;
                }
                Ok(StepResult::Next(Step::CreateCache))
            }
            Step::CreateCache => {
                let mut spec = self.spec(ctx)?;
                spec.spare_users = self.spare_users(ctx).await?;
                self.provider.create(&spec).await?;
                Ok(StepResult::Next(Step::WaitCacheAvailable))
            }
            Step::WaitCacheAvailable => match self.provider.progress(&id).await? {
                Progress::Done => {
                    // Saved with the operation's success. The spare users
                    // were made with the cache, so they are ready with it.
                    ctx.instance.endpoint = Some(self.provider.endpoint(&id).await?);
                    for s in &mut ctx.instance.spares {
                        s.state = SpareState::Ready;
                    }
                    Ok(StepResult::Finished(format!(
                        "provisioned: {} {} on plan {}",
                        ctx.service()?.engine.as_str(),
                        ctx.instance.engine_version,
                        ctx.plan()?.name
                    )))
                }
                Progress::Working { detail } => Ok(StepResult::Wait(detail)),
            },
            // ---------------------------------------------------- update
            // A plan change can take several changes, one at a time (add
            // replicas, then change the node type ...): modify starts the next
            // one, and is asked again each time the cache is available, until
            // it has nothing left to do.
            Step::ModifyCache => match self.provider.modify(&self.spec(ctx)?).await? {
                Progress::Done => {
                    // A plan change can move or add endpoints (a reader
                    // once there are replicas): saved with the success.
                    ctx.instance.endpoint = Some(self.provider.endpoint(&id).await?);
                    Ok(StepResult::Finished(format!("updated: now on plan {}", ctx.plan()?.name)))
                }
                Progress::Working { .. } => Ok(StepResult::Next(Step::WaitCacheModified)),
            },
            Step::WaitCacheModified => match self.provider.progress(&id).await? {
                Progress::Done => Ok(StepResult::Next(Step::ModifyCache)),
                Progress::Working { detail } => Ok(StepResult::Wait(detail)),
            },
            // ---------------------------------------------------- deprovision
            Step::DeleteCache => {
                if let Some(waiting) = self.superseded_running(op).await? {
                    return Ok(StepResult::Wait(waiting));
                }
                let final_snapshot = ctx.final_snapshot();
                if ctx.plan.is_none() {
                    warn!(operation = %op.id, instance = %id, plan = %ctx.instance.plan_id,
                        "the instance's plan has left the catalog; deleting without a final snapshot");
                }
                self.provider.delete(&id, final_snapshot).await?;
                Ok(StepResult::Next(Step::WaitCacheDeleted))
            }
            Step::WaitCacheDeleted => match self.provider.delete(&id, ctx.final_snapshot()).await? {
                Progress::Done => Ok(StepResult::Next(Step::DeleteUsers)),
                Progress::Working { detail } => Ok(StepResult::Wait(detail)),
            },
            Step::DeleteUsers => {
                // The cache took the users its user group held. A user made
                // but not yet added (a crash in between) would outlive it:
                // every user the records name is deleted by name.
                let mut names: Vec<String> = self
                    .store
                    .bindings(&id)
                    .await?
                    .into_iter()
                    .filter(|b| b.state != BindingState::Deleted)
                    .filter_map(|b| b.username)
                    .collect();
                names.extend(ctx.instance.spares.iter().map(|s| s.username.clone()));
                let mut waiting = Vec::new();
                for name in &names {
                    if let Progress::Working { detail } = self.provider.delete_user(&id, name).await? {
                        waiting.push(detail);
                    }
                }
                if !waiting.is_empty() {
                    return Ok(StepResult::Wait(waiting.join("; ")));
                }
                Ok(StepResult::Next(Step::DeleteSecrets))
            }
            Step::DeleteSecrets => {
                // The cache and its users are gone: close the bindings and
                // delete their secrets, the spares' and the admin secret. By
                // name, so a secret whose reference was never recorded goes too.
                for mut b in self.store.bindings(&id).await? {
                    if b.state == BindingState::Deleted {
                        continue;
                    }
                    self.delete_secret(&Target::of_binding(&b), b.secret.as_deref()).await?;
                    b.apply(BindingEvent::InstanceDeleted)?;
                    b.secret = None;
                    b.updated_at = now();
                    b.expires_at = Some(now() + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
                    self.store.save_binding(&mut b, None).await?;
                }
                for s in &ctx.instance.spares {
                    let target = Target::Spare { instance_id: id.clone(), username: s.username.clone() };
                    self.delete_secret(&target, s.secret.as_deref()).await?;
                }
                let admin = ctx.instance.admin_secret.as_deref();
                self.delete_secret(&Target::Admin { instance_id: id.clone() }, admin).await?;
                Ok(StepResult::Finished("deprovisioned: the cache and its credentials are deleted".into()))
            }
            // ---------------------------------------------------- bind
            Step::CreateUserSecret => {
                let engine = ctx.service()?.engine;
                let binding =
                    ctx.binding.as_mut().ok_or(StepError::Permanent("bind without a binding".into()))?;
                if !engine.speaks_redis() {
                    return Ok(StepResult::Finished(
                        "bound: Memcached has no users; the credentials name the endpoint".into(),
                    ));
                }
                if binding.secret.is_none() {
                    let target = Target::Binding { instance_id: id.clone(), binding_id: binding.id.clone() };
                    binding.secret = Some(self.create_secret(&target, true).await?);
                    binding.username = Some(Binding::username_for(&binding.id));
                    binding.updated_at = now();
                    self.store.save_binding(binding, None).await?;
                }
                Ok(StepResult::Next(Step::CreateUser))
            }
            Step::CreateUser => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("bind without a binding".into()))?;
                let (Some(username), Some(reference)) = (&binding.username, &binding.secret) else {
                    return Ok(StepResult::Next(Step::CreateUserSecret));
                };
                let password = self.current(reference).await?;
                let user = CacheUser::new(username.clone(), password, ctx.plan()?.access_string.clone());
                self.provider.put_user(&id, &user).await?;
                Ok(StepResult::Next(Step::WaitUserActive))
            }
            Step::WaitUserActive => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("bind without a binding".into()))?;
                let username = binding.username.clone().unwrap_or_default();
                match self.provider.user_progress(&id, &username).await? {
                    Progress::Done => {
                        Ok(StepResult::Finished(format!("bound: cache user {username} is active")))
                    }
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            // ---------------------------------------------------- unbind
            Step::DeleteUser => {
                if let Some(waiting) = self.superseded_running(op).await? {
                    return Ok(StepResult::Wait(waiting));
                }
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("unbind without a binding".into()))?;
                if let Some(username) = &binding.username
                    && ctx.service()?.engine.speaks_redis()
                    && ctx.instance.state != InstanceState::Deleted
                {
                    self.provider.delete_user(&id, username).await?;
                    return Ok(StepResult::Next(Step::WaitUserDeleted));
                }
                Ok(StepResult::Next(Step::DeleteUserSecret))
            }
            Step::WaitUserDeleted => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("unbind without a binding".into()))?;
                let username = binding.username.clone().unwrap_or_default();
                match self.provider.delete_user(&id, &username).await? {
                    Progress::Done => Ok(StepResult::Next(Step::DeleteUserSecret)),
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::DeleteUserSecret => {
                let binding =
                    ctx.binding.as_ref().ok_or(StepError::Permanent("unbind without a binding".into()))?;
                self.delete_secret(&Target::of_binding(binding), binding.secret.as_deref()).await?;
                Ok(StepResult::Finished(
                    "unbound: the binding's cache user and credential are deleted".into(),
                ))
            }
            // ---------------------------------------------------- rotate
            Step::WaitGraceEnd => {
                let ends = rotation_of(ctx)?.grace_ends_at.unwrap_or_default();
                let left = ends - now();
                if left > 0 {
                    let detail =
                        format!("the previous password works until {}", crate::domain::iso8601(ends));
                    return Ok(StepResult::WaitFor(detail, u32::try_from(left.min(900)).unwrap_or(900)));
                }
                Ok(StepResult::Next(Step::RemoveOldPassword))
            }
            Step::RemoveOldPassword => {
                let (principal, current) = self.current_password(ctx).await?;
                self.provider.set_passwords(&id, &principal, &[current]).await?;
                Ok(StepResult::Next(Step::WaitOldPasswordRemoved))
            }
            Step::WaitOldPasswordRemoved => {
                let (principal, current) = self.current_password(ctx).await?;
                match self.provider.passwords_progress(&id, &principal, &[current]).await? {
                    Progress::Done => Ok(StepResult::Finished(format!(
                        "rotated: the previous password of {} no longer works",
                        principal.describe()
                    ))),
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            // ---------------------------------------------------- spares
            Step::ScheduleSpareRotation => {
                // Spares claimed since: their binding holds the password now.
                if !ctx.instance.spares_to_schedule.is_empty() {
                    for reference in &ctx.instance.spares_to_schedule {
                        self.schedule_rotation(reference).await?;
                    }
                    ctx.instance.spares_to_schedule.clear();
                    ctx.instance.updated_at = now();
                    self.store.save_instance(&mut ctx.instance, None).await?;
                }
                Ok(StepResult::Next(Step::MakeSpare))
            }
            Step::MakeSpare => self.make_spare(ctx).await,
            Step::WaitSpareActive => {
                let i = &mut ctx.instance;
                let Some(n) = i.spares.iter().position(|s| s.state == SpareState::Creating) else {
                    return Ok(StepResult::Next(Step::MakeSpare));
                };
                let username = i.spares[n].username.clone();
                match self.provider.user_progress(&id, &username).await? {
                    Progress::Done => {
                        info!(operation = %op.id, instance = %id, user = %username, "spare user ready");
                        i.spares[n].state = SpareState::Ready;
                        i.updated_at = now();
                        self.store.save_instance(i, None).await?;
                        Ok(StepResult::Next(Step::MakeSpare))
                    }
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::RetireSpare => {
                let i = &mut ctx.instance;
                let Some(n) = i.spares.iter().position(|s| s.state == SpareState::Retiring) else {
                    return Ok(StepResult::Next(Step::MakeSpare));
                };
                let username = i.spares[n].username.clone();
                match self.provider.delete_user(&id, &username).await? {
                    Progress::Done => {
                        let target = Target::Spare { instance_id: id.clone(), username: username.clone() };
                        self.delete_secret(&target, i.spares[n].secret.as_deref()).await?;
                        info!(operation = %op.id, instance = %id, user = %username, "spare user deleted");
                        i.spares.remove(n);
                        i.updated_at = now();
                        self.store.save_instance(i, None).await?;
                        Ok(StepResult::Next(Step::MakeSpare))
                    }
                    Progress::Working { detail } => Ok(StepResult::Wait(detail)),
                }
            }
            Step::Done => Ok(StepResult::Finished(op.description.clone())),
        }
    }

    /// One move towards the plan's number of spare users: go on making the
    /// one being made, record a new one, retire one too many, or finish.
    async fn make_spare(&self, ctx: &mut Context) -> Result<StepResult, StepError> {
        let wanted = self.spares_wanted(ctx)?;
        let access = ctx.plan()?.access_string.clone();
        let id = ctx.instance.id.clone();
        let i = &mut ctx.instance;
        if let Some(n) = i.spares.iter().position(|s| s.state == SpareState::Creating) {
            let username = i.spares[n].username.clone();
            let reference = match i.spares[n].secret.clone() {
                Some(reference) => reference,
                None => {
                    let target = Target::Spare { instance_id: id.clone(), username: username.clone() };
                    let reference = self.create_secret(&target, false).await?;
                    i.spares[n].secret = Some(reference.clone());
                    i.updated_at = now();
                    self.store.save_instance(i, None).await?;
                    reference
                }
            };
            let user = CacheUser::new(username, self.current(&reference).await?, access);
            self.provider.put_user(&id, &user).await?;
            return Ok(StepResult::Next(Step::WaitSpareActive));
        }
        if i.spares.iter().any(|s| s.state == SpareState::Retiring) {
            return Ok(StepResult::Next(Step::RetireSpare));
        }
        if i.spares_kept() < wanted {
            // Recorded before anything is made, so clean-up finds it.
            i.spare_seq += 1;
            i.spares.push(SpareUser::numbered(i.spare_seq));
            i.updated_at = now();
            self.store.save_instance(i, None).await?;
            return Ok(StepResult::Next(Step::MakeSpare));
        }
        let ready = i.spares.iter().filter(|s| s.state == SpareState::Ready).count();
        if ready > wanted
            && let Some(last) = i.spares.iter_mut().rev().find(|s| s.state == SpareState::Ready)
        {
            last.state = SpareState::Retiring;
            i.updated_at = now();
            self.store.save_instance(i, None).await?;
            return Ok(StepResult::Next(Step::RetireSpare));
        }
        Ok(StepResult::Finished(format!("spares: {ready} spare binding users ready")))
    }

    /// Whose password a rotate operation changes, and its current password.
    async fn current_password(&self, ctx: &Context) -> Result<(Principal, SecretString), StepError> {
        let (principal, reference) = match &ctx.binding {
            Some(b) => (
                Principal::User(b.username.clone().ok_or_else(|| {
                    StepError::Permanent(format!("service binding {} has no cache user", b.id))
                })?),
                b.secret.clone(),
            ),
            None => (Principal::Admin, ctx.instance.admin_secret.clone()),
        };
        let reference = reference
            .ok_or_else(|| StepError::Permanent(format!("{} has no secret", principal.describe())))?;
        let password = self.secrets.read(&reference, Stage::Current).await?.ok_or_else(|| {
            StepError::Permanent(format!("{} has no current password", principal.describe()))
        })?;
        Ok((principal, password))
    }

    /// While the operation this one overtook is still running, a create or a
    /// user put may be in flight: deleting now could leave what it makes
    /// behind. Wait for it to stop (its own worker cancels it at its next
    /// step); if its record has not moved for [`SUPERSEDED_STALL_SECS`], its
    /// job is lost and no call of it can be in flight, so cancel it here.
    async fn superseded_running(&self, op: &Operation) -> Result<Option<String>, StepError> {
        let Some(prev_id) = &op.supersedes else { return Ok(None) };
        let Some(mut prev) = self.store.operation(prev_id).await? else { return Ok(None) };
        if prev.is_finished() {
            return Ok(None);
        }
        if now() - prev.updated_at > SUPERSEDED_STALL_SECS {
            prev.fail(now(), format!("{} cancelled: overtaken by {}", prev.kind.as_str(), op.id))?;
            self.store.save_operation(&mut prev).await?;
            return Ok(None);
        }
        Ok(Some(format!("waiting for the cancelled {} to stop", prev.kind.as_str())))
    }

    /// Records what the step waits for and looks again after `delay` seconds.
    async fn wait(
        &self,
        job: &Job,
        mut op: Operation,
        detail: &str,
        delay: u32,
    ) -> Result<JobOutcome, WorkerError> {
        op.progress(detail)?;
        op.updated_at = now();
        op.retries = 0;
        match self.store.save_operation(&mut op).await {
            Ok(()) => {}
            Err(e) if e.is_race() => return Ok(JobOutcome::Skipped("advanced concurrently")),
            Err(e) => return Err(e.into()),
        }
        self.queue.enqueue(job, delay).await?;
        Ok(JobOutcome::Requeued { delay_secs: delay })
    }

    /// Back off and try again; the description says what is being retried.
    async fn retry(&self, job: &Job, mut op: Operation, message: String) -> Result<JobOutcome, WorkerError> {
        op.retries = op.retries.saturating_add(1);
        let delay = backoff(self.config.poll_delay_secs, self.config.max_retry_delay_secs, op.retries);
        warn!(operation = %op.id, step = ?op.step, retries = op.retries, delay, error = %message, "retryable error");
        op.progress(&format!("retrying in {delay} s after: {message}"))?;
        op.updated_at = now();
        match self.store.save_operation(&mut op).await {
            Ok(()) => {}
            Err(e) if e.is_race() => return Ok(JobOutcome::Skipped("advanced concurrently")),
            Err(e) => return Err(e.into()),
        }
        self.queue.enqueue(job, delay).await?;
        Ok(JobOutcome::Requeued { delay_secs: delay })
    }

    async fn cancel(&self, mut op: Operation, reason: &str) -> Result<JobOutcome, WorkerError> {
        op.fail(now(), format!("{} cancelled: {reason}", op.kind.as_str()))?;
        op.instance_usable = None;
        op.update_repeatable = None;
        match self.store.save_operation(&mut op).await {
            Ok(()) => Ok(JobOutcome::Finished(OperationState::Failed)),
            Err(e) if e.is_race() => Ok(JobOutcome::Skipped("advanced concurrently")),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish_succeeded(
        &self,
        mut op: Operation,
        mut ctx: Context,
        description: String,
    ) -> Result<Option<JobOutcome>, WorkerError> {
        let t = now();
        op.succeed(t, &description)?;
        let result = match op.kind {
            OperationKind::Provision | OperationKind::Update | OperationKind::Deprovision => {
                let i = &mut ctx.instance;
                match op.kind {
                    OperationKind::Provision => {
                        i.apply(InstanceEvent::Provisioned)?;
                    }
                    OperationKind::Update => {
                        if let Some(p) = i.pending_update.take() {
                            i.plan_id = p.plan_id;
                            i.parameters = p.parameters;
                            i.engine_version = p.engine_version;
                        }
                        i.apply(InstanceEvent::UpdateEnded)?;
                    }
                    _ => {
                        i.apply(InstanceEvent::Deprovisioned)?;
                        i.admin_secret = None;
                        i.endpoint = None;
                        i.spares.clear();
                        i.spares_to_schedule.clear();
                        i.expires_at = Some(t + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
                    }
                }
                i.updated_at = t;
                self.store.save_instance(i, Some(&mut op)).await
            }
            OperationKind::Bind | OperationKind::Unbind => {
                let Some(b) = ctx.binding.as_mut() else {
                    return Ok(Some(JobOutcome::Skipped("binding vanished")));
                };
                if op.kind == OperationKind::Bind {
                    b.apply(BindingEvent::Created)?;
                } else {
                    b.apply(BindingEvent::Deleted)?;
                    b.secret = None;
                    b.expires_at = Some(t + crate::domain::operation::FINISHED_RECORD_RETENTION_SECS);
                }
                b.updated_at = t;
                self.store.save_binding(b, Some(&mut op)).await
            }
            OperationKind::Spares => {
                ctx.instance.spares_operation = None;
                ctx.instance.updated_at = t;
                self.store.save_instance(&mut ctx.instance, Some(&mut op)).await
            }
            OperationKind::Rotate => match ctx.binding.as_mut() {
                Some(b) => {
                    b.rotation = None;
                    b.updated_at = t;
                    self.store.save_binding(b, Some(&mut op)).await
                }
                None => {
                    ctx.instance.rotation = None;
                    ctx.instance.updated_at = t;
                    self.store.save_instance(&mut ctx.instance, Some(&mut op)).await
                }
            },
        };
        match result {
            Ok(()) => {
                info!(operation = %op.id, kind = op.kind.as_str(), instance = %op.instance_id, "operation succeeded");
                Ok(Some(JobOutcome::Finished(OperationState::Succeeded)))
            }
            // A concurrent request changed the record (say, a deprovision
            // during provisioning): read everything again, which cancels.
            Err(e) if e.is_race() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_failed_operation(&self, mut op: Operation) -> Result<Option<JobOutcome>, WorkerError> {
        match self.store.save_operation(&mut op).await {
            Ok(()) => Ok(Some(JobOutcome::Finished(OperationState::Failed))),
            Err(e) if e.is_race() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish_failed(
        &self,
        mut op: Operation,
        ctx: Option<Context>,
        description: String,
    ) -> Result<Option<JobOutcome>, WorkerError> {
        let t = now();
        warn!(operation = %op.id, kind = op.kind.as_str(), step = ?op.step, error = %description, "operation failed");
        op.fail(t, description)?;
        // Without a context (the plan left the catalog, say) the records
        // themselves still move to their failed states, so that nothing stays
        // "in progress" and the platform can try again.
        let (instance, binding) = match ctx {
            Some(ctx) => (Some(ctx.instance), ctx.binding),
            None => {
                let instance = self.store.instance(&op.instance_id).await?;
                let binding = match &op.binding_id {
                    Some(b) => self.store.binding(&op.instance_id, b).await?,
                    None => None,
                };
                (instance, binding)
            }
        };
        if op.kind == OperationKind::Spares {
            // The instance no longer names it, so the next bind that finds
            // too few spares starts another.
            return match instance.filter(|i| i.spares_operation.as_deref() == Some(op.id.as_str())) {
                Some(mut i) => {
                    i.spares_operation = None;
                    i.updated_at = t;
                    match self.store.save_instance(&mut i, Some(&mut op)).await {
                        Ok(()) => Ok(Some(JobOutcome::Finished(OperationState::Failed))),
                        Err(e) if e.is_race() => Ok(None),
                        Err(e) => Err(e.into()),
                    }
                }
                None => self.save_failed_operation(op).await,
            };
        }
        let mut instance = instance.filter(|i| i.last_operation_id == op.id);
        let mut binding = binding.filter(|b| b.last_operation_id == op.id);
        let result = match op.kind {
            OperationKind::Provision | OperationKind::Update | OperationKind::Deprovision => {
                let Some(i) = instance.as_mut() else {
                    return self.save_failed_operation(op).await;
                };
                let event = match op.kind {
                    OperationKind::Provision => InstanceEvent::ProvisionFailed,
                    OperationKind::Update => InstanceEvent::UpdateEnded,
                    _ => InstanceEvent::DeprovisionFailed,
                };
                i.pending_update = None;
                i.apply(event)?;
                i.updated_at = t;
                self.store.save_instance(i, Some(&mut op)).await
            }
            OperationKind::Bind | OperationKind::Unbind => match binding.as_mut() {
                Some(b) => {
                    let event = if op.kind == OperationKind::Bind {
                        BindingEvent::CreateFailed
                    } else {
                        BindingEvent::DeleteFailed
                    };
                    b.apply(event)?;
                    b.updated_at = t;
                    self.store.save_binding(b, Some(&mut op)).await
                }
                None => self.store.save_operation(&mut op).await,
            },
            // The record keeps its rotation (in its grace phase, with this
            // failed operation), so the state shows what is left: the cache
            // still accepts the previous password. A new rotation replaces it.
            OperationKind::Rotate | OperationKind::Spares => self.store.save_operation(&mut op).await,
        };
        match result {
            Ok(()) => Ok(Some(JobOutcome::Finished(OperationState::Failed))),
            // A concurrent request changed the record (say, a deprovision
            // during provisioning): read everything again, which cancels.
            Err(e) if e.is_race() => Ok(None),
            Err(e) => Err(e.into()),
        }
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
