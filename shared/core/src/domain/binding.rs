//! A service binding and its state machine.

use serde::{Deserialize, Serialize};

use super::{InvalidTransition, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingState {
    Creating,
    CreateFailed,
    Ready,
    Deleting,
    DeleteFailed,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingEvent {
    Bind,
    Created,
    CreateFailed,
    Unbind,
    Deleted,
    DeleteFailed,
    /// The instance was deprovisioned: its bindings went with it.
    InstanceDeleted,
}

impl BindingEvent {
    fn name(self) -> &'static str {
        match self {
            BindingEvent::Bind => "bind",
            BindingEvent::Created => "finish binding",
            BindingEvent::CreateFailed => "fail binding",
            BindingEvent::Unbind => "unbind",
            BindingEvent::Deleted => "finish unbinding",
            BindingEvent::DeleteFailed => "fail unbinding",
            BindingEvent::InstanceDeleted => "go with its deprovisioned instance",
        }
    }
}

impl BindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingState::Creating => "being created",
            BindingState::CreateFailed => "failed to be created",
            BindingState::Ready => "ready",
            BindingState::Deleting => "being deleted",
            BindingState::DeleteFailed => "failed to be deleted",
            BindingState::Deleted => "deleted",
        }
    }

    /// The state after `event`. An unbind while the binding is being created
    /// halts the creation and deletes what it made, as the spec asks.
    pub fn on(self, event: BindingEvent) -> Result<BindingState, InvalidTransition> {
        use BindingEvent as E;
        use BindingState as S;
        let next = match (self, event) {
            (S::CreateFailed | S::Deleted, E::Bind) => S::Creating,
            (S::Creating, E::Created) => S::Ready,
            (S::Creating, E::CreateFailed) => S::CreateFailed,
            (S::Creating | S::CreateFailed | S::Ready | S::DeleteFailed, E::Unbind) => S::Deleting,
            (S::Deleting, E::Deleted) => S::Deleted,
            (S::Deleting, E::DeleteFailed) => S::DeleteFailed,
            (
                S::Creating | S::CreateFailed | S::Ready | S::Deleting | S::DeleteFailed,
                E::InstanceDeleted,
            ) => S::Deleted,
            _ => {
                return Err(InvalidTransition {
                    entity: "service binding",
                    event: event.name(),
                    state: self.as_str(),
                });
            }
        };
        Ok(next)
    }
}

/// A binding as the broker records it: the user name and a reference to the
/// password in the secret store, never the password itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub id: String,
    pub instance_id: String,
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub bind_resource: serde_json::Value,
    #[serde(default)]
    pub context: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_guid: Option<String>,
    pub state: BindingState,
    /// The cache user this binding owns (Redis OSS, Valkey); none for Memcached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Reference to the password in the secret store, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The user was a spare the bind claimed (see [`super::spare`]): its
    /// name and its secret's name are the spare's, not derived from the
    /// binding id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_spare: bool,
    pub last_operation_id: String,
    /// The rotation of the password in progress (its grace period included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<super::Rotation>,
    /// When the password last finished rotating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub version: u64,
}

impl Binding {
    pub fn apply(&mut self, event: BindingEvent) -> Result<(), InvalidTransition> {
        self.state = self.state.on(event)?;
        Ok(())
    }

    /// The cache user name for a binding: derived from its id so that every
    /// retry of the same step names the same user.
    pub fn username_for(binding_id: &str) -> String {
        let clean: String = binding_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(36)
            .collect::<String>()
            .to_ascii_lowercase();
        format!("b-{clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::BindingEvent as E;
    use super::BindingState as S;
    use super::*;

    #[test]
    fn a_binding_is_created_then_deleted() {
        assert_eq!(S::Creating.on(E::Created), Ok(S::Ready));
        assert_eq!(S::Ready.on(E::Unbind), Ok(S::Deleting));
        assert_eq!(S::Deleting.on(E::Deleted), Ok(S::Deleted));
    }

    #[test]
    fn unbind_during_creation_halts_it() {
        assert_eq!(S::Creating.on(E::Unbind), Ok(S::Deleting));
    }

    #[test]
    fn a_deleting_binding_cannot_be_unbound_again_or_bound() {
        assert!(S::Deleting.on(E::Unbind).is_err());
        assert!(S::Deleting.on(E::Bind).is_err());
        assert!(S::Ready.on(E::Bind).is_err());
    }

    #[test]
    fn every_live_binding_goes_with_its_deprovisioned_instance() {
        for s in [S::Creating, S::CreateFailed, S::Ready, S::Deleting, S::DeleteFailed] {
            assert_eq!(s.on(E::InstanceDeleted), Ok(S::Deleted), "{s:?}");
        }
        assert!(S::Deleted.on(E::InstanceDeleted).is_err());
    }

    #[test]
    fn usernames_derive_from_the_binding_id_only() {
        assert_eq!(Binding::username_for("ABC-123_x!"), "b-abc-123x");
        assert_eq!(Binding::username_for("b1"), Binding::username_for("b1"));
    }
}
