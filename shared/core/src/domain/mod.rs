//! The domain: plans, service instances, bindings and operations, their state
//! machines and the rules for parameters. Nothing here knows about HTTP, OSB JSON
//! shapes or AWS.

pub mod binding;
pub mod credentials;
pub mod ids;
pub mod instance;
pub mod operation;
pub mod params;
pub mod plan;
pub mod rotation;
pub mod spare;

pub use binding::{Binding, BindingState};
pub use credentials::{CacheUser, Credentials, Endpoint};
pub use ids::{BindingId, InstanceId, InvalidId, OperationId};
pub use instance::{Instance, InstanceState};
pub use operation::{Operation, OperationKind, OperationState, Step};
pub use plan::{Engine, Plan, Service};
pub use rotation::{Rotation, RotationPhase, RotationPolicy};
pub use spare::{SpareState, SpareUser};

/// Seconds since the Unix epoch; every timestamp in the domain uses it.
pub type Timestamp = i64;

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    chrono::Utc::now().timestamp()
}

/// A timestamp as OSB writes them (`yyyy-mm-ddThh:mm:ss.sZ`, UTC).
pub fn iso8601(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S.0Z").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// An event asked of a state machine in a state that does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity} cannot {event} while {state}")]
pub struct InvalidTransition {
    pub entity: &'static str,
    pub event: &'static str,
    pub state: &'static str,
}
