//! A service instance and its state machine.

use serde::{Deserialize, Serialize};

use super::{InvalidTransition, Timestamp};

/// Where an instance is in its life. Every change goes through
/// [`InstanceState::on`], so the allowed moves are written down once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Provisioning,
    /// Provisioning failed; the platform may retry the PUT or deprovision.
    ProvisionFailed,
    Ready,
    Updating,
    Deprovisioning,
    /// Deprovisioning failed part-way; a new DELETE retries it.
    DeprovisionFailed,
    /// Gone. The record stays for a while so `last_operation` can say
    /// `succeeded` to a platform that polls late.
    Deleted,
}

/// What can happen to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceEvent {
    /// A provision request (first, or a retry after a failure).
    Provision,
    Provisioned,
    ProvisionFailed,
    Update,
    /// An update ended, successfully or not; the instance stays usable.
    UpdateEnded,
    Deprovision,
    Deprovisioned,
    DeprovisionFailed,
}

impl InstanceEvent {
    fn name(self) -> &'static str {
        match self {
            InstanceEvent::Provision => "provision",
            InstanceEvent::Provisioned => "finish provisioning",
            InstanceEvent::ProvisionFailed => "fail provisioning",
            InstanceEvent::Update => "update",
            InstanceEvent::UpdateEnded => "finish updating",
            InstanceEvent::Deprovision => "deprovision",
            InstanceEvent::Deprovisioned => "finish deprovisioning",
            InstanceEvent::DeprovisionFailed => "fail deprovisioning",
        }
    }
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Provisioning => "provisioning",
            InstanceState::ProvisionFailed => "provision failed",
            InstanceState::Ready => "ready",
            InstanceState::Updating => "updating",
            InstanceState::Deprovisioning => "deprovisioning",
            InstanceState::DeprovisionFailed => "deprovision failed",
            InstanceState::Deleted => "deleted",
        }
    }

    /// The state after `event`, or why it is not allowed.
    ///
    /// A deprovision during provisioning is allowed: it stops the creation and
    /// cleans up (the spec's preferred behaviour). A deprovision during an update
    /// is not: the platform gets `ConcurrencyError` and retries later.
    pub fn on(self, event: InstanceEvent) -> Result<InstanceState, InvalidTransition> {
        use InstanceEvent as E;
        use InstanceState as S;
        let next = match (self, event) {
            (S::ProvisionFailed | S::Deleted, E::Provision) => S::Provisioning,
            (S::Provisioning, E::Provisioned) => S::Ready,
            (S::Provisioning, E::ProvisionFailed) => S::ProvisionFailed,
            (S::Ready, E::Update) => S::Updating,
            (S::Updating, E::UpdateEnded) => S::Ready,
            (S::Provisioning | S::ProvisionFailed | S::Ready | S::DeprovisionFailed, E::Deprovision) => {
                S::Deprovisioning
            }
            (S::Deprovisioning, E::Deprovisioned) => S::Deleted,
            (S::Deprovisioning, E::DeprovisionFailed) => S::DeprovisionFailed,
            _ => {
                return Err(InvalidTransition {
                    entity: "service instance",
                    event: event.name(),
                    state: self.as_str(),
                });
            }
        };
        Ok(next)
    }
}

/// A service instance as the broker records it. No secret is ever held here:
/// only references to secrets in the secret store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub service_id: String,
    pub plan_id: String,
    /// Parameters as the platform sent them (validated against the plan's schema).
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The OSB context object (platform, organization, space, namespace ...).
    #[serde(default)]
    pub context: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_version: Option<String>,
    /// The major engine version the instance runs ("7.1").
    pub engine_version: String,
    pub state: InstanceState,
    /// The operation that last changed the instance.
    pub last_operation_id: String,
    /// A plan/parameter change waiting for the worker (set while `Updating`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_update: Option<PendingUpdate>,
    /// Reference to the admin credential in the secret store, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
    /// Where the cache listens: recorded when it becomes available and
    /// refreshed by every operation that changes it, so that handing out
    /// credentials asks nothing of the cache's backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<super::Endpoint>,
    /// Binding users made in advance, for binds to claim (see
    /// [`super::spare`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spares: Vec<super::SpareUser>,
    /// The number of the last spare user recorded; names are never reused.
    #[serde(default)]
    pub spare_seq: u32,
    /// The `spares` operation making or retiring spare users, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spares_operation: Option<String>,
    /// Secrets of spare users that binds claimed, which the `spares`
    /// operation puts on the rotation schedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spares_to_schedule: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The rotation of the password in progress (its grace period included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<super::Rotation>,
    /// When the password last finished rotating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Timestamp>,
    /// Set on deleted instances: when the record may be purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Optimistic-concurrency version; every write is conditional on it.
    #[serde(default)]
    pub version: u64,
}

/// A requested change that the worker applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingUpdate {
    pub plan_id: String,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub engine_version: String,
}

impl Instance {
    /// Move to the state `event` leads to.
    pub fn apply(&mut self, event: InstanceEvent) -> Result<(), InvalidTransition> {
        self.state = self.state.on(event)?;
        Ok(())
    }

    /// Takes a ready spare user out of the instance, for a bind to claim.
    pub fn take_spare(&mut self) -> Option<super::SpareUser> {
        let n = self.spares.iter().position(|s| s.state == super::SpareState::Ready && s.secret.is_some())?;
        Some(self.spares.remove(n))
    }

    /// How many spare users are ready or being made.
    pub fn spares_kept(&self) -> usize {
        self.spares.iter().filter(|s| s.state != super::SpareState::Retiring).count()
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceEvent as E;
    use super::InstanceState as S;

    #[test]
    fn a_provision_runs_to_ready_or_failed() {
        assert_eq!(S::Provisioning.on(E::Provisioned), Ok(S::Ready));
        assert_eq!(S::Provisioning.on(E::ProvisionFailed), Ok(S::ProvisionFailed));
        assert_eq!(S::ProvisionFailed.on(E::Provision), Ok(S::Provisioning));
    }

    #[test]
    fn deprovision_during_provisioning_is_allowed_and_cancels_it() {
        assert_eq!(S::Provisioning.on(E::Deprovision), Ok(S::Deprovisioning));
    }

    #[test]
    fn deprovision_during_an_update_is_refused() {
        let err = S::Updating.on(E::Deprovision).unwrap_err();
        assert_eq!(err.to_string(), "service instance cannot deprovision while updating");
    }

    #[test]
    fn update_needs_a_ready_instance() {
        assert_eq!(S::Ready.on(E::Update), Ok(S::Updating));
        assert!(S::Provisioning.on(E::Update).is_err());
        assert!(S::Updating.on(E::Update).is_err());
        assert!(S::Deleted.on(E::Update).is_err());
    }

    #[test]
    fn a_deleted_instance_can_only_be_provisioned_again() {
        for event in [
            E::Provisioned,
            E::ProvisionFailed,
            E::Update,
            E::UpdateEnded,
            E::Deprovision,
            E::Deprovisioned,
            E::DeprovisionFailed,
        ] {
            assert!(S::Deleted.on(event).is_err(), "{event:?}");
        }
        assert_eq!(S::Deleted.on(E::Provision), Ok(S::Provisioning));
    }

    #[test]
    fn a_failed_deprovision_can_be_retried() {
        assert_eq!(S::Deprovisioning.on(E::DeprovisionFailed), Ok(S::DeprovisionFailed));
        assert_eq!(S::DeprovisionFailed.on(E::Deprovision), Ok(S::Deprovisioning));
    }
}
