//! A service binding and its state machine.

use serde::{Deserialize, Serialize};

use super::{InvalidTransition, Machine, Refusal, Timestamp, transition};

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
    /// Every event, in the order of the tests' grid.
    pub const ALL: [BindingEvent; 7] = [
        BindingEvent::Bind,
        BindingEvent::Created,
        BindingEvent::CreateFailed,
        BindingEvent::Unbind,
        BindingEvent::Deleted,
        BindingEvent::DeleteFailed,
        BindingEvent::InstanceDeleted,
    ];
}

impl BindingState {
    /// Every state, in the order of the tests' grid.
    pub const ALL: [BindingState; 6] = [
        BindingState::Creating,
        BindingState::CreateFailed,
        BindingState::Ready,
        BindingState::Deleting,
        BindingState::DeleteFailed,
        BindingState::Deleted,
    ];

    /// The state, worded to follow "is".
    pub fn as_str(self) -> &'static str {
        match self {
            BindingState::Creating => "being created",
            BindingState::CreateFailed => "not created (its bind failed)",
            BindingState::Ready => "ready",
            BindingState::Deleting => "being deleted",
            BindingState::DeleteFailed => "not fully deleted (its unbind failed)",
            BindingState::Deleted => "deleted",
        }
    }

    /// The state after `event` (see [`Machine::TRANSITIONS`] for the table).
    pub fn on(self, event: BindingEvent) -> Result<BindingState, InvalidTransition> {
        transition(self, event)
    }
}

impl Machine for BindingState {
    type Event = BindingEvent;
    const ENTITY: &'static str = "service binding";

    /// An unbind while the binding is being created halts the creation and
    /// deletes what it made, as the spec asks.
    const TRANSITIONS: &'static [(BindingState, BindingEvent, BindingState)] = {
        use BindingEvent as E;
        use BindingState as S;
        &[
            (S::CreateFailed, E::Bind, S::Creating),
            (S::Deleted, E::Bind, S::Creating),
            (S::Creating, E::Created, S::Ready),
            (S::Creating, E::CreateFailed, S::CreateFailed),
            (S::Creating, E::Unbind, S::Deleting),
            (S::CreateFailed, E::Unbind, S::Deleting),
            (S::Ready, E::Unbind, S::Deleting),
            (S::DeleteFailed, E::Unbind, S::Deleting),
            (S::Deleting, E::Deleted, S::Deleted),
            (S::Deleting, E::DeleteFailed, S::DeleteFailed),
            (S::Creating, E::InstanceDeleted, S::Deleted),
            (S::CreateFailed, E::InstanceDeleted, S::Deleted),
            (S::Ready, E::InstanceDeleted, S::Deleted),
            (S::Deleting, E::InstanceDeleted, S::Deleted),
            (S::DeleteFailed, E::InstanceDeleted, S::Deleted),
        ]
    };

    fn phrase(self) -> &'static str {
        self.as_str()
    }

    fn event_phrase(event: BindingEvent) -> &'static str {
        match event {
            BindingEvent::Bind => "be bound",
            BindingEvent::Created => "finish binding",
            BindingEvent::CreateFailed => "fail binding",
            BindingEvent::Unbind => "be unbound",
            BindingEvent::Deleted => "finish unbinding",
            BindingEvent::DeleteFailed => "fail unbinding",
            BindingEvent::InstanceDeleted => "go with its deprovisioned instance",
        }
    }

    fn refusal(self) -> Refusal {
        match self {
            BindingState::Creating | BindingState::Deleting => Refusal::InProgress,
            BindingState::CreateFailed | BindingState::DeleteFailed => Refusal::Failed,
            BindingState::Deleted => Refusal::Gone,
            BindingState::Ready => Refusal::Settled,
        }
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

    /// The cache user name of a binding: `b-` and 32 hex digits (128 bits)
    /// of the SHA-256 of the whole binding id. Derived from the id, so every
    /// retry of the same step names the same user; taken over every byte of
    /// it, so ids that differ only in case or punctuation (`ABC`, `abc`,
    /// `a_bc`) get users of their own and one app's unbind never revokes
    /// another's access. ElastiCache takes any non-empty user name and
    /// Redis any ACL name without spaces; this is both.
    pub fn username_for(binding_id: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(binding_id.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("b-{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::BindingEvent as E;
    use super::BindingState as S;
    use super::*;

    /// The whole table. Columns: Bind, Created, CreateFailed, Unbind,
    /// Deleted, DeleteFailed, InstanceDeleted.
    #[test]
    fn the_binding_machine_is_this_grid() {
        assert_eq!(
            crate::domain::grid(&S::ALL, &E::ALL),
            "\
Creating: - Ready CreateFailed Deleting - - Deleted
CreateFailed: Creating - - Deleting - - Deleted
Ready: - - - Deleting - - Deleted
Deleting: - - - - Deleted DeleteFailed Deleted
DeleteFailed: - - - Deleting - - Deleted
Deleted: Creating - - - - - -
"
        );
    }

    #[test]
    fn a_refused_bind_or_unbind_says_why() {
        let e = S::Deleting.on(E::Bind).unwrap_err();
        assert_eq!(e.to_string(), "service binding cannot be bound while being deleted");
        assert_eq!(e.refusal, Refusal::InProgress);
        assert_eq!(S::DeleteFailed.on(E::Bind).unwrap_err().refusal, Refusal::Failed);
        assert_eq!(S::Ready.on(E::Bind).unwrap_err().refusal, Refusal::Settled);
        assert_eq!(S::Deleted.on(E::Unbind).unwrap_err().refusal, Refusal::Gone);
    }

    #[test]
    fn usernames_derive_from_the_binding_id_only() {
        assert_eq!(Binding::username_for("b1"), Binding::username_for("b1"));
        let name = Binding::username_for("ABC-123_x.");
        assert_eq!(name.len(), 34, "{name}");
        assert!(name.starts_with("b-") && name[2..].chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    }

    /// Ids the old derivation (lowercase, `_` and `.` dropped, truncated)
    /// gave one user: each gets its own now, and so do ids alike in their
    /// first 36 characters.
    #[test]
    fn binding_ids_that_differ_only_in_case_or_punctuation_get_users_of_their_own() {
        let long = "x".repeat(36);
        let ids = ["ABC", "abc", "a_bc", "a.bc", "ab-c", &format!("{long}1"), &format!("{long}2")];
        let names: std::collections::HashSet<String> =
            ids.iter().map(|id| Binding::username_for(id)).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
    }
}
