//! A service instance and its state machine.

use serde::{Deserialize, Serialize};

use super::{InvalidTransition, Machine, Refusal, Timestamp, transition};

/// Where an instance is in its life. Every change goes through
/// [`InstanceState::on`], so the allowed moves are written down once, as
/// the table [`Machine::TRANSITIONS`].
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
    /// A bind request for a new binding: the instance stays as it is, but
    /// only a ready one takes it.
    Bind,
    /// A provision took this warm-pool cache: its record stays, as the
    /// pointer from the pool member's id to the instance that owns the
    /// cache now (see [`Instance::claimed_by`]).
    Claimed,
}

impl InstanceEvent {
    /// Every event, in the order of the tests' grid.
    pub const ALL: [InstanceEvent; 10] = [
        InstanceEvent::Provision,
        InstanceEvent::Provisioned,
        InstanceEvent::ProvisionFailed,
        InstanceEvent::Update,
        InstanceEvent::UpdateEnded,
        InstanceEvent::Deprovision,
        InstanceEvent::Deprovisioned,
        InstanceEvent::DeprovisionFailed,
        InstanceEvent::Bind,
        InstanceEvent::Claimed,
    ];
}

impl InstanceState {
    /// Every state, in the order of the tests' grid.
    pub const ALL: [InstanceState; 7] = [
        InstanceState::Provisioning,
        InstanceState::ProvisionFailed,
        InstanceState::Ready,
        InstanceState::Updating,
        InstanceState::Deprovisioning,
        InstanceState::DeprovisionFailed,
        InstanceState::Deleted,
    ];

    /// The state, worded to follow "is".
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Provisioning => "being provisioned",
            InstanceState::ProvisionFailed => "not provisioned (its provision failed)",
            InstanceState::Ready => "ready",
            InstanceState::Updating => "being updated",
            InstanceState::Deprovisioning => "being deprovisioned",
            InstanceState::DeprovisionFailed => "not fully deprovisioned (its deprovision failed)",
            InstanceState::Deleted => "deleted",
        }
    }

    /// The state after `event`, or why it is not allowed (see
    /// [`Machine::TRANSITIONS`] for the table).
    pub fn on(self, event: InstanceEvent) -> Result<InstanceState, InvalidTransition> {
        transition(self, event)
    }
}

impl Machine for InstanceState {
    type Event = InstanceEvent;
    const ENTITY: &'static str = "service instance";

    /// A deprovision during provisioning is allowed: it stops the creation
    /// and cleans up (the spec's preferred behaviour). A deprovision during
    /// an update is not: the platform gets `ConcurrencyError` and retries.
    const TRANSITIONS: &'static [(InstanceState, InstanceEvent, InstanceState)] = {
        use InstanceEvent as E;
        use InstanceState as S;
        &[
            (S::ProvisionFailed, E::Provision, S::Provisioning),
            (S::Deleted, E::Provision, S::Provisioning),
            (S::Provisioning, E::Provisioned, S::Ready),
            (S::Provisioning, E::ProvisionFailed, S::ProvisionFailed),
            (S::Ready, E::Update, S::Updating),
            (S::Updating, E::UpdateEnded, S::Ready),
            (S::Provisioning, E::Deprovision, S::Deprovisioning),
            (S::ProvisionFailed, E::Deprovision, S::Deprovisioning),
            (S::Ready, E::Deprovision, S::Deprovisioning),
            (S::DeprovisionFailed, E::Deprovision, S::Deprovisioning),
            (S::Deprovisioning, E::Deprovisioned, S::Deleted),
            (S::Deprovisioning, E::DeprovisionFailed, S::DeprovisionFailed),
            (S::Ready, E::Bind, S::Ready),
            (S::Ready, E::Claimed, S::Deleted),
        ]
    };

    fn phrase(self) -> &'static str {
        self.as_str()
    }

    fn event_phrase(event: InstanceEvent) -> &'static str {
        match event {
            InstanceEvent::Provision => "be provisioned",
            InstanceEvent::Provisioned => "finish provisioning",
            InstanceEvent::ProvisionFailed => "fail provisioning",
            InstanceEvent::Update => "be updated",
            InstanceEvent::UpdateEnded => "finish updating",
            InstanceEvent::Deprovision => "be deprovisioned",
            InstanceEvent::Deprovisioned => "finish deprovisioning",
            InstanceEvent::DeprovisionFailed => "fail deprovisioning",
            InstanceEvent::Bind => "take a new binding",
            InstanceEvent::Claimed => "be claimed from the warm pool",
        }
    }

    fn refusal(self) -> Refusal {
        match self {
            InstanceState::Provisioning | InstanceState::Updating | InstanceState::Deprovisioning => {
                Refusal::InProgress
            }
            InstanceState::ProvisionFailed | InstanceState::DeprovisionFailed => Refusal::Failed,
            InstanceState::Deleted => Refusal::Gone,
            InstanceState::Ready => Refusal::Settled,
        }
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
    /// The key the cache's names derive from (ElastiCache ids, laptop
    /// directories): the instance's own id, or, for an instance that took a
    /// cache from the warm pool, the id of the pool member that made it.
    /// `None` in records written before the pool existed: the instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// A warm-pool member: a cache made in advance for its plan, with no
    /// tenant yet, which no platform can address (its id is outside the
    /// OSB id alphabet, see [`super::pool`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pooled: bool,
    /// On a claimed pool member: the instance that took its cache. The
    /// record stays while that instance lives, because the secrets made
    /// with the cache are named under the member's id, and a rotation
    /// finds their owner through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// The snapshot the cache was made from (the `restore_from` provision
    /// parameter, as resolved when the provision was accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<super::Restored>,
    /// The engine the cache runs when it is not its service's: a Redis OSS
    /// instance moved to Valkey in place (the `engine` update parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<super::Engine>,
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
    /// The one-off action the update runs once its changes are applied
    /// (see [`super::day2`]); never kept in `parameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<super::Action>,
    /// The engine the cache moves to (Redis OSS to Valkey), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<super::Engine>,
    /// The plan's maintenance_info.version the instance is on once the
    /// update's maintenance is applied, when the update carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_version: Option<String>,
}

impl Instance {
    /// A new record of `plan`, being provisioned at time `t` by operation
    /// `operation_id`, on the plan's default engine version, with nothing
    /// made yet; its cache is named by its own id. Callers set what their
    /// request adds (parameters, context, tenant, another version).
    pub fn provisioning(id: &str, plan: &super::Plan, operation_id: &str, t: Timestamp) -> Instance {
        Instance {
            id: id.to_string(),
            service_id: plan.service_id.clone(),
            plan_id: plan.id.clone(),
            parameters: serde_json::Map::new(),
            context: serde_json::Value::Null,
            organization_guid: None,
            space_guid: None,
            maintenance_version: plan.maintenance_version.clone(),
            engine_version: plan.default_engine_version.clone(),
            state: InstanceState::Provisioning,
            last_operation_id: operation_id.to_string(),
            pending_update: None,
            admin_secret: None,
            endpoint: None,
            spares: Vec::new(),
            spare_seq: 0,
            spares_operation: None,
            spares_to_schedule: Vec::new(),
            created_at: t,
            updated_at: t,
            rotation: None,
            rotated_at: None,
            expires_at: None,
            cache: Some(id.to_string()),
            pooled: false,
            claimed_by: None,
            restored_from: None,
            engine: None,
            version: 0,
        }
    }

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

    /// The engine the instance's cache runs: its own when it moved, else
    /// its service's.
    pub fn engine_of(&self, service: &super::Service) -> super::Engine {
        self.engine.unwrap_or(service.engine)
    }

    /// The key of the instance's cache (see [`Instance::cache`]): what the
    /// cache provider's calls name.
    pub fn cache_key(&self) -> &str {
        self.cache.as_deref().unwrap_or(&self.id)
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
    use crate::domain::{Refusal, grid};

    /// The whole table. Columns: Provision, Provisioned, ProvisionFailed,
    /// Update, UpdateEnded, Deprovision, Deprovisioned, DeprovisionFailed,
    /// Bind, Claimed.
    #[test]
    fn the_instance_machine_is_this_grid() {
        assert_eq!(
            grid(&S::ALL, &E::ALL),
            "\
Provisioning: - Ready ProvisionFailed - - Deprovisioning - - - -
ProvisionFailed: Provisioning - - - - Deprovisioning - - - -
Ready: - - - Updating - Deprovisioning - - Ready Deleted
Updating: - - - - Ready - - - - -
Deprovisioning: - - - - - - Deleted DeprovisionFailed - -
DeprovisionFailed: - - - - - Deprovisioning - - - -
Deleted: Provisioning - - - - - - - - -
"
        );
    }

    #[test]
    fn deprovision_during_provisioning_cancels_it_but_during_an_update_waits() {
        assert_eq!(S::Provisioning.on(E::Deprovision), Ok(S::Deprovisioning));
        let err = S::Updating.on(E::Deprovision).unwrap_err();
        assert_eq!(err.to_string(), "service instance cannot be deprovisioned while being updated");
        assert_eq!(err.refusal, Refusal::InProgress);
    }

    /// What a refusal says follows from the state alone.
    #[test]
    fn a_refusal_says_whether_to_wait_deprovision_or_give_up() {
        for (state, refusal) in [
            (S::Provisioning, Refusal::InProgress),
            (S::Updating, Refusal::InProgress),
            (S::Deprovisioning, Refusal::InProgress),
            (S::ProvisionFailed, Refusal::Failed),
            (S::DeprovisionFailed, Refusal::Failed),
            (S::Deleted, Refusal::Gone),
            (S::Ready, Refusal::Settled),
        ] {
            let refused = E::ALL.iter().filter_map(|e| state.on(*e).err()).next().expect("a refused event");
            assert_eq!(refused.refusal, refusal, "{state:?}");
        }
    }
}
