//! Operations: one per asynchronous request, with the step the worker is on.
//!
//! An operation is `in progress` until the worker ends it `succeeded` or
//! `failed`; it never goes back. Its `step` records how far the worker got, so a
//! job delivered twice, or after a crash in the middle of a step, resumes at
//! that step, and every step is idempotent.

use serde::{Deserialize, Serialize};

use super::{InvalidTransition, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Provision,
    Update,
    Deprovision,
    Bind,
    Unbind,
    /// Ends a credential rotation's grace period: removes the old password.
    /// Never a platform's `last_operation`.
    Rotate,
    /// Brings an instance's spare binding users to the number its plan asks
    /// for, after binds claimed some (and, for a cache taken from the warm
    /// pool, first tags it for its instance). Never a platform's
    /// `last_operation`: the instance records it in `spares_operation`.
    Spares,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Provision => "provision",
            OperationKind::Update => "update",
            OperationKind::Deprovision => "deprovision",
            OperationKind::Bind => "bind",
            OperationKind::Unbind => "unbind",
            OperationKind::Rotate => "rotate",
            OperationKind::Spares => "spares",
        }
    }

    /// The step an operation of this kind starts at.
    pub fn first_step(self) -> Step {
        match self {
            OperationKind::Provision => Step::CreateAdminSecret,
            OperationKind::Update => Step::ModifyCache,
            OperationKind::Deprovision => Step::DeleteCache,
            OperationKind::Bind => Step::CreateUserSecret,
            OperationKind::Unbind => Step::DeleteUser,
            OperationKind::Rotate => Step::WaitGraceEnd,
            OperationKind::Spares => Step::ScheduleSpareRotation,
        }
    }
}

/// The OSB states of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    InProgress,
    Succeeded,
    Failed,
}

impl OperationState {
    /// The spelling OSB uses in `last_operation`.
    pub fn osb(self) -> &'static str {
        match self {
            OperationState::InProgress => "in progress",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }
}

/// The steps of every operation kind, in the order the worker runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    // provision
    CreateAdminSecret,
    CreateSpareSecrets,
    CreateCache,
    WaitCacheAvailable,
    /// The cache's CloudWatch alarms, made or brought up to date (also
    /// after a plan change, and for a cache claimed from the warm pool).
    PutAlarms,
    // update
    ModifyCache,
    WaitCacheModified,
    /// The update's action (restart, failover test, snapshot): the units it
    /// goes through, worked out once and recorded on the operation.
    PlanAction,
    /// The action started on its next unit.
    StartAction,
    /// Waiting for that unit to finish.
    WaitAction,
    // deprovision
    DeleteCache,
    WaitCacheDeleted,
    DeleteAlarms,
    DeleteUsers,
    DeleteSecrets,
    // bind
    CreateUserSecret,
    CreateUser,
    WaitUserActive,
    // unbind
    DeleteUser,
    WaitUserDeleted,
    DeleteUserSecret,
    // rotate
    WaitGraceEnd,
    RemoveOldPassword,
    WaitOldPasswordRemoved,
    // spares
    /// A cache taken from the warm pool gets its instance's tags.
    TagCache,
    ScheduleSpareRotation,
    MakeSpare,
    WaitSpareActive,
    RetireSpare,
    /// Nothing left to do.
    Done,
}

impl Step {
    /// What the step does, in words a person reads in `last_operation`.
    pub fn describe(self) -> &'static str {
        match self {
            Step::CreateAdminSecret => "creating the admin credential",
            Step::CreateSpareSecrets => "creating the credentials of the spare binding users",
            Step::CreateCache => "creating the cache",
            Step::WaitCacheAvailable => "waiting for the cache to become available",
            Step::PutAlarms => "setting the cache's CloudWatch alarms",
            Step::DeleteAlarms => "deleting the cache's CloudWatch alarms",
            Step::ModifyCache => "modifying the cache",
            Step::WaitCacheModified => "waiting for the cache modification to finish",
            Step::PlanAction => "working out what the requested action goes through",
            Step::StartAction => "starting the requested action",
            Step::WaitAction => "waiting for the requested action to finish",
            Step::DeleteCache => "deleting the cache",
            Step::WaitCacheDeleted => "waiting for the cache to be deleted",
            Step::DeleteUsers => "deleting the cache users left outside the cache",
            Step::DeleteSecrets => "deleting the instance's secrets",
            Step::CreateUserSecret => "creating the binding's credential",
            Step::CreateUser => "creating the binding's cache user",
            Step::WaitUserActive => "waiting for the binding's cache user to become active",
            Step::DeleteUser => "deleting the binding's cache user",
            Step::WaitUserDeleted => "waiting for the binding's cache user to be deleted",
            Step::DeleteUserSecret => "deleting the binding's credential",
            Step::WaitGraceEnd => "waiting for the grace period of the previous password to end",
            Step::RemoveOldPassword => "removing the previous password",
            Step::WaitOldPasswordRemoved => "waiting for the previous password to be removed",
            Step::TagCache => "tagging the cache made in advance with its instance's ids",
            Step::ScheduleSpareRotation => {
                "putting the credentials of claimed spare users on the rotation schedule"
            }
            Step::MakeSpare => "making a spare binding user",
            Step::WaitSpareActive => "waiting for the spare binding user to become active",
            Step::RetireSpare => "deleting a spare binding user the plan no longer asks for",
            Step::Done => "done",
        }
    }
}

/// One asynchronous request and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Returned to the platform as `operation`.
    pub id: String,
    pub kind: OperationKind,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
    pub state: OperationState,
    pub step: Step,
    /// What is happening now, or why it failed: shown in `last_operation`.
    pub description: String,
    /// For a failed update or deprovision: is the instance still usable?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    /// For a failed update: may the same update be tried again?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
    /// The operation this one overtook (a provision cancelled by a
    /// deprovision, a bind by an unbind): the worker waits for it to stop
    /// before deleting, so a create still in flight cannot leave anything behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The units of an update's action (see [`super::day2`]), once worked
    /// out, and how many of them are done: recorded with the step, so a
    /// job delivered again never repeats a finished unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_steps: Vec<super::ActionStep>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub action_done: usize,
    /// How many times the worker retried after a retryable error.
    #[serde(default)]
    pub retries: u32,
    pub started_at: Timestamp,
    /// After this the worker ends the operation as failed.
    pub deadline: Timestamp,
    /// When the worker last recorded anything: an old value on an operation
    /// in progress means its job may have been lost.
    #[serde(default)]
    pub updated_at: Timestamp,
    /// When the worker means to look again (it enqueued its job with that
    /// delay); `None` until it first waits, when the job is due at once.
    /// The reconciler takes an operation still in progress well after this
    /// for one whose job was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When a finished operation may be purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub version: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How long finished operations (and deleted instances and bindings) are kept,
/// so a platform that polls late still gets an answer: seven days.
pub const FINISHED_RECORD_RETENTION_SECS: i64 = 7 * 24 * 3600;

impl Operation {
    pub fn start(
        kind: OperationKind,
        instance_id: &str,
        binding_id: Option<&str>,
        now: Timestamp,
        max_duration_secs: u64,
    ) -> Operation {
        let step = kind.first_step();
        Operation {
            id: format!("{}-{}", kind.as_str(), uuid::Uuid::new_v4()),
            kind,
            instance_id: instance_id.to_string(),
            binding_id: binding_id.map(str::to_string),
            state: OperationState::InProgress,
            step,
            description: format!("{}: {}", kind.as_str(), step.describe()),
            instance_usable: None,
            update_repeatable: None,
            supersedes: None,
            action_steps: Vec::new(),
            action_done: 0,
            retries: 0,
            started_at: now,
            deadline: now + i64::try_from(max_duration_secs).unwrap_or(i64::MAX / 2),
            updated_at: now,
            due_at: None,
            finished_at: None,
            expires_at: None,
            version: 0,
        }
    }

    /// When its job is due: when the worker said it would look again, or
    /// (never waited yet) when it was last written.
    pub fn due(&self) -> Timestamp {
        self.due_at.unwrap_or(self.updated_at)
    }

    pub fn is_finished(&self) -> bool {
        self.state != OperationState::InProgress
    }

    /// Move to `step`, describing it.
    pub fn advance(&mut self, step: Step) -> Result<(), InvalidTransition> {
        self.ensure_in_progress("advance")?;
        self.step = step;
        self.description = format!("{}: {}", self.kind.as_str(), step.describe());
        Ok(())
    }

    /// Record progress inside the current step ("2 of 3 nodes available").
    pub fn progress(&mut self, detail: &str) -> Result<(), InvalidTransition> {
        self.ensure_in_progress("record progress")?;
        self.description = super::public::for_platform(&format!(
            "{}: {} ({detail})",
            self.kind.as_str(),
            self.step.describe()
        ));
        Ok(())
    }

    pub fn succeed(&mut self, now: Timestamp, description: &str) -> Result<(), InvalidTransition> {
        self.ensure_in_progress("succeed")?;
        self.state = OperationState::Succeeded;
        self.step = Step::Done;
        self.description = super::public::for_platform(description);
        self.finish(now);
        Ok(())
    }

    pub fn fail(&mut self, now: Timestamp, description: String) -> Result<(), InvalidTransition> {
        self.ensure_in_progress("fail")?;
        self.state = OperationState::Failed;
        self.description = super::public::for_platform(&description);
        if self.kind == OperationKind::Update {
            self.instance_usable.get_or_insert(true);
            self.update_repeatable.get_or_insert(true);
        }
        if self.kind == OperationKind::Deprovision {
            self.instance_usable.get_or_insert(false);
        }
        self.finish(now);
        Ok(())
    }

    fn finish(&mut self, now: Timestamp) {
        self.updated_at = now;
        self.finished_at = Some(now);
        self.expires_at = Some(now + FINISHED_RECORD_RETENTION_SECS);
    }

    fn ensure_in_progress(&self, event: &'static str) -> Result<(), InvalidTransition> {
        if self.is_finished() {
            return Err(InvalidTransition {
                entity: "operation",
                event,
                state: self.state.osb(),
                refusal: super::Refusal::Finished,
            });
        }
        Ok(())
    }

    pub fn past_deadline(&self, now: Timestamp) -> bool {
        now > self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OperationKind) -> Operation {
        Operation::start(kind, "i-1", None, 1_000, 600)
    }

    #[test]
    fn an_operation_starts_in_progress_at_its_kinds_first_step() {
        let op = op(OperationKind::Provision);
        assert_eq!(op.state, OperationState::InProgress);
        assert_eq!(op.step, Step::CreateAdminSecret);
        assert_eq!(op.deadline, 1_600);
        assert!(op.id.starts_with("provision-"));
        assert_eq!(op.description, "provision: creating the admin credential");
    }

    #[test]
    fn a_finished_operation_never_changes_again() {
        let mut op = op(OperationKind::Bind);
        op.succeed(1_100, "bound").unwrap();
        assert!(op.fail(1_200, "late".into()).is_err());
        assert!(op.advance(Step::CreateUser).is_err());
        assert!(op.progress("x").is_err());
        assert_eq!(op.state, OperationState::Succeeded);
        assert_eq!(op.expires_at, Some(1_100 + FINISHED_RECORD_RETENTION_SECS));
    }

    #[test]
    fn a_failed_update_says_the_instance_is_usable_and_the_update_repeatable() {
        let mut op = op(OperationKind::Update);
        op.fail(1_100, "modify failed".into()).unwrap();
        assert_eq!(op.instance_usable, Some(true));
        assert_eq!(op.update_repeatable, Some(true));
    }

    #[test]
    fn a_failed_provision_carries_no_usability_flags() {
        let mut op = op(OperationKind::Provision);
        op.fail(1_100, "create failed".into()).unwrap();
        assert_eq!(op.instance_usable, None);
        assert_eq!(op.update_repeatable, None);
    }

    #[test]
    fn progress_is_shown_inside_the_step_description() {
        let mut op = op(OperationKind::Provision);
        op.advance(Step::WaitCacheAvailable).unwrap();
        op.progress("1 of 3 nodes available").unwrap();
        assert_eq!(
            op.description,
            "provision: waiting for the cache to become available (1 of 3 nodes available)"
        );
    }

    #[test]
    fn the_deadline_is_the_plans_maximum_polling_duration() {
        let op = op(OperationKind::Provision);
        assert!(!op.past_deadline(1_600));
        assert!(op.past_deadline(1_601));
    }
}
