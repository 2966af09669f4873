//! The rotation function: Secrets Manager's four-step protocol
//! (`createSecret`, `setSecret`, `testSecret`, `finishSecret`) for the
//! passwords the broker owns: each instance's admin credential (an RBAC user,
//! or the AUTH token of a cache without users) and each binding's cache user.
//!
//! The `ClientRequestToken` is the idempotency key: it is the new secret
//! version's id, and the binding or instance records the rotation under it
//! with the phase reached ([`Rotation`]), so a step invoked again with the
//! same token changes nothing twice. A step that fails leaves the old
//! password working and the secret's stages as they were: AWSCURRENT moves
//! only in `finishSecret`, after the cache was seen accepting both passwords.
//!
//! `finishSecret` starts the grace period: the old password keeps working
//! until a `rotate` operation, run by the worker when the period has passed,
//! removes it. In AWS, Secrets Manager invokes the provisioner with these
//! steps (on its schedule, or at once after `aws secretsmanager
//! rotate-secret`); on a laptop [`Rotator::rotate_now`] runs them in order.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::domain::credentials::{PASSWORD_LEN, generate_password};
use crate::domain::{
    Binding, BindingState, Instance, InstanceState, Operation, OperationKind, Rotation, RotationPhase,
    RotationPolicy, Step, now,
};
use crate::ports::{
    CacheProvider, Job, JobQueue, Principal, Progress, SecretError, SecretInfo, SecretStore, Stage, Store,
    StoreError,
};

/// A step of Secrets Manager's rotation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RotationStep {
    CreateSecret,
    SetSecret,
    TestSecret,
    FinishSecret,
}

impl RotationStep {
    pub const ALL: [RotationStep; 4] = [
        RotationStep::CreateSecret,
        RotationStep::SetSecret,
        RotationStep::TestSecret,
        RotationStep::FinishSecret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RotationStep::CreateSecret => "createSecret",
            RotationStep::SetSecret => "setSecret",
            RotationStep::TestSecret => "testSecret",
            RotationStep::FinishSecret => "finishSecret",
        }
    }
}

/// The event Secrets Manager invokes a rotation function with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationEvent {
    #[serde(rename = "Step")]
    pub step: RotationStep,
    /// The secret's ARN (or name).
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    /// The new version's id; the idempotency key of every step.
    #[serde(rename = "ClientRequestToken")]
    pub token: String,
}

/// Why a rotation step did not succeed. Either way the old password still
/// works and AWSCURRENT has not moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// The event does not fit what the broker knows (an unknown secret, a
    /// token that is not pending, a step out of order, a rotation while the
    /// previous one's grace period runs). Trying again will not help until
    /// that changes.
    #[error("{0}")]
    Refused(String),
    /// A call failed or the cache has not taken the change yet; Secrets
    /// Manager retries the rotation.
    #[error("{0}")]
    Failed(String),
}

impl From<SecretError> for RotationError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::NotFound(m) => RotationError::Refused(format!("secret {m} does not exist")),
            SecretError::Unavailable(m) => RotationError::Failed(format!("secret store: {m}")),
            e @ SecretError::Refused(_) => RotationError::Refused(e.to_string()),
        }
    }
}

impl From<StoreError> for RotationError {
    fn from(e: StoreError) -> Self {
        RotationError::Failed(format!("the broker's records: {e}"))
    }
}

/// Settings of the rotation function.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Prefix of secret names, as the worker's ("osb" gives
    /// "osb/instances/<id>/admin").
    pub secret_prefix: String,
    pub policy: RotationPolicy,
    /// How long `testSecret` waits for the cache to take the new password
    /// before failing (Secrets Manager then retries the rotation).
    pub test_wait: Duration,
    /// How often `testSecret` looks while it waits.
    pub test_poll: Duration,
}

/// Whose credential a secret holds. The one place secret names are made
/// and read: the worker names the secrets it creates and deletes with it,
/// the rotation function finds a secret's owner with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `<prefix>/instances/<id>/admin`
    Admin { instance_id: String },
    /// `<prefix>/instances/<id>/bindings/<binding id>`: a user made for the
    /// binding.
    Binding { instance_id: String, binding_id: String },
    /// `<prefix>/instances/<id>/spares/<user name>`: a spare user, and the
    /// binding that claimed it (see [`crate::domain::spare`]).
    Spare { instance_id: String, username: String },
}

impl Target {
    /// Reads a secret name; `None` for names the broker does not make.
    pub fn from_secret_name(prefix: &str, name: &str) -> Option<Target> {
        let rest = name.strip_prefix(prefix)?.strip_prefix("/instances/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let owned = |s: &&str| s.to_string();
        match parts.as_slice() {
            [id, "admin"] if !id.is_empty() => Some(Target::Admin { instance_id: owned(id) }),
            [id, "bindings", b] if !id.is_empty() && !b.is_empty() => {
                Some(Target::Binding { instance_id: owned(id), binding_id: owned(b) })
            }
            [id, "spares", u] if !id.is_empty() && !u.is_empty() => {
                Some(Target::Spare { instance_id: owned(id), username: owned(u) })
            }
            _ => None,
        }
    }

    /// The credential of `binding`: its own, or the spare it claimed.
    pub fn of_binding(binding: &Binding) -> Target {
        match (&binding.username, binding.from_spare) {
            (Some(username), true) => {
                Target::Spare { instance_id: binding.instance_id.clone(), username: username.clone() }
            }
            _ => Target::Binding { instance_id: binding.instance_id.clone(), binding_id: binding.id.clone() },
        }
    }

    /// The secret's name, the inverse of [`Target::from_secret_name`].
    pub fn secret_name(&self, prefix: &str) -> String {
        match self {
            Target::Admin { instance_id } => format!("{prefix}/instances/{instance_id}/admin"),
            Target::Binding { instance_id, binding_id } => {
                format!("{prefix}/instances/{instance_id}/bindings/{binding_id}")
            }
            Target::Spare { instance_id, username } => {
                format!("{prefix}/instances/{instance_id}/spares/{username}")
            }
        }
    }

    pub fn instance_id(&self) -> &str {
        match self {
            Target::Admin { instance_id }
            | Target::Binding { instance_id, .. }
            | Target::Spare { instance_id, .. } => instance_id,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Admin { instance_id } => {
                format!("the admin credential of service instance {instance_id}")
            }
            Target::Binding { binding_id, .. } => format!("service binding {binding_id}"),
            Target::Spare { instance_id, username } => {
                format!("the binding of service instance {instance_id} with cache user {username}")
            }
        }
    }
}

/// The record that owns the secret (the binding, or else the instance),
/// read fresh for every step.
struct Owner {
    instance: Instance,
    binding: Option<Binding>,
}

impl Owner {
    fn rotation(&self) -> Option<&Rotation> {
        match &self.binding {
            Some(b) => b.rotation.as_ref(),
            None => self.instance.rotation.as_ref(),
        }
    }

    fn rotation_mut(&mut self) -> &mut Option<Rotation> {
        match &mut self.binding {
            Some(b) => &mut b.rotation,
            None => &mut self.instance.rotation,
        }
    }

    fn set_rotated_at(&mut self, t: i64) {
        match &mut self.binding {
            Some(b) => b.rotated_at = Some(t),
            None => self.instance.rotated_at = Some(t),
        }
    }

    fn principal(&self) -> Result<Principal, RotationError> {
        match &self.binding {
            None => Ok(Principal::Admin),
            Some(b) => b.username.clone().map(Principal::User).ok_or_else(|| {
                RotationError::Refused(format!("service binding {} has no cache user to rotate", b.id))
            }),
        }
    }

    /// Whether a password change may start: the instance is ready (or being
    /// updated) and the binding ready.
    fn check_live(&self) -> Result<(), RotationError> {
        let instance = &self.instance;
        if !matches!(instance.state, InstanceState::Ready | InstanceState::Updating) {
            return Err(RotationError::Refused(format!(
                "service instance {} is {}; its credentials are not rotated",
                instance.id,
                instance.state.as_str()
            )));
        }
        if let Some(b) = &self.binding
            && b.state != BindingState::Ready
        {
            return Err(RotationError::Refused(format!(
                "service binding {} is {}; its credentials are not rotated",
                b.id,
                b.state.as_str()
            )));
        }
        Ok(())
    }
}

/// How many times a step reads the records again after losing a race.
const RACE_RETRIES: usize = 5;

/// How long after the grace period the `rotate` operation may take to remove
/// the old password before it fails.
const REMOVAL_DEADLINE_SECS: u64 = 3600;

pub struct Rotator {
    store: Arc<dyn Store>,
    queue: Arc<dyn JobQueue>,
    provider: Arc<dyn CacheProvider>,
    secrets: Arc<dyn SecretStore>,
    config: RotationConfig,
}

impl Rotator {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn JobQueue>,
        provider: Arc<dyn CacheProvider>,
        secrets: Arc<dyn SecretStore>,
        config: RotationConfig,
    ) -> Rotator {
        Rotator { store, queue, provider, secrets, config }
    }

    /// The reference of the secret holding `target`'s password, by its name.
    pub fn reference(&self, target: &Target) -> String {
        self.secrets.reference_for(&target.secret_name(&self.config.secret_prefix))
    }

    /// The reference of the secret holding `target`'s password as its
    /// owner's record holds it (an ARN in AWS), else by name: what every
    /// call about the secret should name.
    pub async fn secret_reference(&self, target: &Target) -> Result<String, RotationError> {
        self.recorded_reference(&self.resolve(target).await?).await
    }

    /// The reference its owner's record holds, else the one by name.
    async fn recorded_reference(&self, target: &Target) -> Result<String, RotationError> {
        let owner = self.owner(target).await?;
        let recorded = match &owner.binding {
            Some(b) => b.secret.clone(),
            None => owner.instance.admin_secret.clone(),
        };
        Ok(recorded.unwrap_or_else(|| self.reference(target)))
    }

    /// Rotates `target`'s password now: the four steps in order, with a new
    /// token, as Secrets Manager would. Returns the token.
    pub async fn rotate_now(&self, target: &Target) -> Result<String, RotationError> {
        let token = uuid::Uuid::new_v4().to_string();
        let secret_id = self.secret_reference(target).await?;
        for step in RotationStep::ALL {
            self.handle(&RotationEvent { step, secret_id: secret_id.clone(), token: token.clone() }).await?;
        }
        Ok(token)
    }

    /// Runs one step of the protocol. Repeating a step with the same token
    /// is harmless.
    pub async fn handle(&self, event: &RotationEvent) -> Result<(), RotationError> {
        let info = self.secrets.describe(&event.secret_id).await?;
        let target = Target::from_secret_name(&self.config.secret_prefix, &info.name).ok_or_else(|| {
            RotationError::Refused(format!(
                "secret {} is not a credential this broker rotates (its names start with {}/instances/)",
                info.name, self.config.secret_prefix
            ))
        })?;
        // Every call about the secret names it as Secrets Manager did: its
        // ARN, never a name it could take for a partial ARN.
        let subject = Subject { target: target.clone(), secret: event.secret_id.clone() };
        let step = event.step.as_str();
        let stages = info.stages_of(&event.token);
        if stages.is_some_and(|s| s.contains(&Stage::Current)) && event.step != RotationStep::FinishSecret {
            info!(secret = %info.name, step, token = %event.token, "the version is already current; nothing to do");
            return Ok(());
        }
        let pending = stages.is_some_and(|s| s.contains(&Stage::Pending));
        // Secrets Manager lists the token as AWSPENDING before createSecret
        // stores a value; `rotate_now` does not, so createSecret takes either.
        if !pending && !matches!(event.step, RotationStep::CreateSecret | RotationStep::FinishSecret) {
            return Err(RotationError::Refused(format!(
                "{step}: version {} of secret {} is not AWSPENDING",
                event.token, info.name
            )));
        }
        let mut last = None;
        for _ in 0..RACE_RETRIES {
            let owner = self.owner(&target).await?;
            let result = match event.step {
                RotationStep::CreateSecret => self.create(&subject, owner, &event.token).await,
                RotationStep::SetSecret => self.set(&subject, owner, &event.token).await,
                RotationStep::TestSecret => self.test(&subject, owner, &event.token).await,
                RotationStep::FinishSecret => self.finish(&info, &subject, owner, &event.token).await,
            };
            match result {
                Err(StepFailure::Race) => last = Some("concurrent changes to the record".to_string()),
                Err(StepFailure::Rotation(e)) => {
                    warn!(secret = %info.name, step, token = %event.token, error = %e, "rotation step failed");
                    return Err(e);
                }
                Ok(done) => {
                    info!(secret = %info.name, step, token = %event.token, done, "rotation step done");
                    return Ok(());
                }
            }
        }
        Err(RotationError::Failed(format!(
            "{step} for {}: {}; retry",
            target.describe(),
            last.unwrap_or_default()
        )))
    }

    async fn owner(&self, target: &Target) -> Result<Owner, RotationError> {
        let named = target.instance_id();
        let mut instance = self
            .store
            .instance(named)
            .await?
            .ok_or_else(|| RotationError::Refused(format!("service instance {named} is not recorded")))?;
        // A secret made with a warm-pool cache is named under the pool
        // member's id; the instance that claimed the cache owns it now.
        if let Some(claimant) = instance.claimed_by.clone() {
            instance = self.store.instance(&claimant).await?.ok_or_else(|| {
                RotationError::Refused(format!("service instance {claimant} is not recorded"))
            })?;
        }
        let instance_id = instance.id.as_str();
        let binding = match target {
            Target::Admin { .. } => None,
            Target::Binding { binding_id, .. } => {
                Some(self.store.binding(instance_id, binding_id).await?.ok_or_else(|| {
                    RotationError::Refused(format!("service binding {binding_id} is not recorded"))
                })?)
            }
            Target::Spare { username, .. } => Some(self.claimant(instance_id, username).await?),
        };
        Ok(Owner { instance, binding })
    }

    /// The live binding that claimed spare user `username`. A spare nobody
    /// claimed yet is not rotated: no one has its password, and the binding
    /// that claims it puts it on the schedule.
    async fn claimant(&self, instance_id: &str, username: &str) -> Result<Binding, RotationError> {
        let bindings = self.store.bindings(instance_id).await?;
        bindings
            .into_iter()
            .find(|b| b.from_spare && b.username.as_deref() == Some(username) && b.state != BindingState::Deleted)
            .ok_or_else(|| {
                RotationError::Refused(format!(
                    "spare cache user {username} of service instance {instance_id} is not bound; its password is rotated once a binding claims it"
                ))
            })
    }

    /// The credential `target` names as its secret is named: a binding that
    /// claimed a spare user keeps the spare's secret.
    pub async fn resolve(&self, target: &Target) -> Result<Target, RotationError> {
        if let Target::Binding { instance_id, binding_id } = target
            && let Some(b) = self.store.binding(instance_id, binding_id).await?
        {
            return Ok(Target::of_binding(&b));
        }
        Ok(target.clone())
    }

    /// Writes the owner record, conditional on its version.
    async fn save(&self, owner: &mut Owner, op: Option<&mut Operation>) -> Result<(), StepFailure> {
        let result = match &mut owner.binding {
            Some(b) => {
                b.updated_at = now();
                self.store.save_binding(b, op).await
            }
            None => {
                owner.instance.updated_at = now();
                self.store.save_instance(&mut owner.instance, op).await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_race() => Err(StepFailure::Race),
            Err(e) => Err(StepFailure::Rotation(e.into())),
        }
    }

    /// Records that the rotation has reached `phase`.
    async fn reach(&self, owner: &mut Owner, phase: RotationPhase) -> Result<(), StepFailure> {
        if let Some(r) = owner.rotation_mut() {
            r.phase = phase;
        }
        self.save(owner, None).await
    }

    /// createSecret: a new password as the AWSPENDING version `token`.
    async fn create(
        &self,
        subject: &Subject,
        mut owner: Owner,
        token: &str,
    ) -> Result<&'static str, StepFailure> {
        let target = &subject.target;
        owner.check_live()?;
        owner.principal()?;
        let reference = &subject.secret;
        if let Some(r) = owner.rotation()
            && r.token != token
            && self.blocks(r).await?
        {
            return Err(StepFailure::refused(format!(
                "the previous rotation of {} is in its grace period until {}; rotate after that",
                target.describe(),
                crate::domain::iso8601(r.grace_ends_at.unwrap_or_default())
            )));
        }
        // Keeps the first value when the version exists (a repeated step).
        self.secrets.put_pending(reference, token, &generate_password(PASSWORD_LEN)).await.map_err(fail)?;
        if owner.rotation().is_some_and(|r| r.token == token) {
            return Ok("already created");
        }
        *owner.rotation_mut() = Some(Rotation::start(token, now()));
        self.save(&mut owner, None).await?;
        Ok("new password stored as AWSPENDING")
    }

    /// Whether the recorded rotation `r` keeps a new one from starting: its
    /// grace period runs, or its operation is still removing the old password.
    async fn blocks(&self, r: &Rotation) -> Result<bool, StepFailure> {
        if r.blocks_new_rotation(now()) {
            return Ok(true);
        }
        let Some(op_id) = &r.operation_id else { return Ok(false) };
        let op = self.store.operation(op_id).await.map_err(|e| StepFailure::Rotation(e.into()))?;
        Ok(op.is_some_and(|op| !op.is_finished()))
    }

    /// The rotation recorded under `token`, at or past `phase`.
    fn recorded<'a>(
        owner: &'a Owner,
        target: &Target,
        token: &str,
        needs: &str,
    ) -> Result<&'a Rotation, StepFailure> {
        owner.rotation().filter(|r| r.token == token).ok_or_else(|| {
            StepFailure::refused(format!("{needs} has not run for {} with token {token}", target.describe()))
        })
    }

    /// The new (pending) and the current password.
    async fn passwords(&self, subject: &Subject, token: &str) -> Result<[SecretString; 2], StepFailure> {
        let (target, reference) = (&subject.target, &subject.secret);
        let new = self.secrets.read_version(reference, token).await.map_err(fail)?.ok_or_else(|| {
            StepFailure::refused(format!("version {token} of {} holds no password yet", target.describe()))
        })?;
        let current = self.secrets.read(reference, Stage::Current).await.map_err(fail)?.ok_or_else(|| {
            StepFailure::refused(format!("{} has no AWSCURRENT password", target.describe()))
        })?;
        Ok([new, current])
    }

    /// setSecret: the cache accepts the new password besides the old one.
    async fn set(
        &self,
        subject: &Subject,
        mut owner: Owner,
        token: &str,
    ) -> Result<&'static str, StepFailure> {
        let target = &subject.target;
        let r = Self::recorded(&owner, target, token, "createSecret")?;
        if r.phase >= RotationPhase::Set {
            return Ok("already set");
        }
        owner.check_live()?;
        let principal = owner.principal()?;
        let both = self.passwords(subject, token).await?;
        self.provider.set_passwords(owner.instance.cache_key(), &principal, &both).await.map_err(|e| {
            StepFailure::Rotation(RotationError::Failed(format!(
                "setSecret: could not give {} its new password: {e}",
                principal.describe()
            )))
        })?;
        self.reach(&mut owner, RotationPhase::Set).await?;
        Ok("the cache accepts the new and the old password")
    }

    /// testSecret: the cache is seen accepting both passwords.
    async fn test(
        &self,
        subject: &Subject,
        mut owner: Owner,
        token: &str,
    ) -> Result<&'static str, StepFailure> {
        let target = &subject.target;
        // Secrets Manager tests a newly configured rotation by calling
        // testSecret alone, on a version it made: nothing of ours to test.
        let Some(r) = owner.rotation().filter(|r| r.token == token) else {
            return Ok("not a rotation the broker started; nothing to test");
        };
        if r.phase >= RotationPhase::Tested {
            return Ok("already tested");
        }
        if r.phase < RotationPhase::Set {
            return Err(StepFailure::refused(format!(
                "testSecret: setSecret has not run for {} with token {token}",
                target.describe()
            )));
        }
        let principal = owner.principal()?;
        let both = self.passwords(subject, token).await?;
        let started = tokio::time::Instant::now();
        loop {
            let progress = self
                .provider
                .passwords_progress(owner.instance.cache_key(), &principal, &both)
                .await
                .map_err(|e| StepFailure::Rotation(RotationError::Failed(format!("testSecret: {e}"))))?;
            match progress {
                Progress::Done => break,
                Progress::Working { detail } if started.elapsed() >= self.config.test_wait => {
                    return Err(StepFailure::Rotation(RotationError::Failed(format!(
                        "testSecret: the cache has not taken the new password of {} after {} s ({detail}); the rotation is retried",
                        principal.describe(),
                        self.config.test_wait.as_secs()
                    ))));
                }
                Progress::Working { .. } => tokio::time::sleep(self.config.test_poll).await,
            }
        }
        self.reach(&mut owner, RotationPhase::Tested).await?;
        Ok("the cache accepts both passwords")
    }

    /// finishSecret: AWSCURRENT moves to the new version and the grace period
    /// starts; a `rotate` operation ends it.
    async fn finish(
        &self,
        info: &SecretInfo,
        subject: &Subject,
        mut owner: Owner,
        token: &str,
    ) -> Result<&'static str, StepFailure> {
        let target = &subject.target;
        let already_current = info.stages_of(token).is_some_and(|s| s.contains(&Stage::Current));
        let Some(r) = owner.rotation().filter(|r| r.token == token).cloned() else {
            if already_current {
                return Ok("already finished");
            }
            return Err(StepFailure::refused(format!(
                "finishSecret: createSecret has not run for {} with token {token}",
                target.describe()
            )));
        };
        if r.operation_id.is_some() {
            return Ok("already finished; the grace period runs");
        }
        if r.phase < RotationPhase::Tested {
            return Err(StepFailure::refused(format!(
                "finishSecret: testSecret has not passed for {} with token {token}",
                target.describe()
            )));
        }
        if !already_current {
            self.secrets.promote(&subject.secret, token).await.map_err(fail)?;
        }
        let t = now();
        let grace = self.config.policy.grace_secs();
        let ends = t + grace;
        let binding_id = owner.binding.as_ref().map(|b| b.id.clone());
        let mut op = Operation::start(
            OperationKind::Rotate,
            &owner.instance.id,
            binding_id.as_deref(),
            t,
            self.config.policy.grace_secs.saturating_add(REMOVAL_DEADLINE_SECS),
        );
        op.description = format!(
            "rotate: {} (the previous password works until {})",
            Step::WaitGraceEnd.describe(),
            crate::domain::iso8601(ends)
        );
        if let Some(r) = owner.rotation_mut() {
            r.phase = RotationPhase::Grace;
            r.grace_ends_at = Some(ends);
            r.operation_id = Some(op.id.clone());
        }
        owner.set_rotated_at(t);
        self.save(&mut owner, Some(&mut op)).await?;
        let delay = u32::try_from(grace.clamp(0, 900)).unwrap_or(900);
        self.queue.enqueue(&Job::for_operation(&op), delay).await.map_err(|e| {
            // The operation is recorded; laptop start-up and the worker's
            // own re-enqueues pick it up, so this only delays the removal.
            StepFailure::Rotation(RotationError::Failed(format!("finishSecret: {e}")))
        })?;
        info!(operation = %op.id, target = %target.describe(), grace_ends_at = ends, "grace period started");
        Ok("AWSCURRENT moved; the grace period runs")
    }
}

/// The credential a step rotates, and its secret as the event names it.
struct Subject {
    target: Target,
    /// The `SecretId` Secrets Manager sent: the secret's ARN.
    secret: String,
}

/// How a step ended when it did not succeed.
enum StepFailure {
    /// The record changed under the step: read it again and repeat.
    Race,
    Rotation(RotationError),
}

impl StepFailure {
    fn refused(message: String) -> StepFailure {
        StepFailure::Rotation(RotationError::Refused(message))
    }
}

impl From<RotationError> for StepFailure {
    fn from(e: RotationError) -> Self {
        StepFailure::Rotation(e)
    }
}

fn fail(e: SecretError) -> StepFailure {
    StepFailure::Rotation(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_say_whose_credential_they_hold() {
        let admin = Target::Admin { instance_id: "i-1".into() };
        let binding = Target::Binding { instance_id: "i-1".into(), binding_id: "b-1".into() };
        assert_eq!(Target::from_secret_name("osb", "osb/instances/i-1/admin"), Some(admin.clone()));
        assert_eq!(Target::from_secret_name("osb", "osb/instances/i-1/bindings/b-1"), Some(binding.clone()));
        assert_eq!(admin.secret_name("osb"), "osb/instances/i-1/admin");
        assert_eq!(binding.secret_name("osb"), "osb/instances/i-1/bindings/b-1");
        let spare = Target::Spare { instance_id: "i-1".into(), username: "s-2".into() };
        assert_eq!(Target::from_secret_name("osb", "osb/instances/i-1/spares/s-2"), Some(spare.clone()));
        assert_eq!(spare.secret_name("osb"), "osb/instances/i-1/spares/s-2");
        for other in [
            "osb/broker",
            "other/instances/i-1/admin",
            "osb/instances//admin",
            "osb/instances/i-1/x",
            "osb/instances/i-1/spares/",
        ] {
            assert_eq!(Target::from_secret_name("osb", other), None, "{other}");
        }
    }

    #[test]
    fn the_event_reads_as_secrets_manager_sends_it() {
        let event: RotationEvent = serde_json::from_str(
            r#"{"Step": "setSecret", "SecretId": "arn:aws:secretsmanager:eu-west-1:1:secret:osb/x-AbCdEf",
                "ClientRequestToken": "t-1", "RotationToken": "ignored"}"#,
        )
        .unwrap();
        assert_eq!(event.step, RotationStep::SetSecret);
        assert_eq!(event.token, "t-1");
    }
}
