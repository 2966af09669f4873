//! The domain: plans, service instances, bindings and operations, their state
//! machines and the rules for parameters. Nothing here knows about HTTP, OSB JSON
//! shapes or AWS.

pub mod binding;
pub mod credentials;
pub mod day2;
pub mod ids;
pub mod instance;
pub mod operation;
pub mod parameter;
pub mod params;
pub mod plan;
pub mod pool;
pub mod public;
pub mod rotation;
pub mod serverless;
pub mod settings;
pub mod spare;
pub mod sweep;

pub use binding::{Binding, BindingState};
pub use credentials::{CacheUser, Credentials, Endpoint};
pub use day2::{Action, ActionStep, Restored, Snapshot, SnapshotKind};
pub use ids::{BindingId, InstanceId, InvalidId, OperationId};
pub use instance::{Instance, InstanceState};
pub use operation::{Operation, OperationKind, OperationState, Step};
pub use plan::{AlarmThresholds, Engine, LogType, Plan, Service};
pub use pool::Pool;
pub use rotation::{Rotation, RotationPhase, RotationPolicy};
pub use spare::{SpareState, SpareUser};
pub use sweep::{ResourceKind, Sweep};

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
    /// What the refusal says about the record; the broker turns it into
    /// the platform's answer in one place.
    pub refusal: Refusal,
}

/// Why a state refuses an event, by what the record is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An operation is running on it: the request can be retried when it
    /// has finished.
    InProgress,
    /// An earlier operation failed on it: only a deprovision (or unbind)
    /// helps.
    Failed,
    /// It is deleted.
    Gone,
    /// It is at rest and the event does not follow from that (an outcome
    /// with no operation running, a second provision of a ready instance).
    Settled,
    /// The operation has finished; it does not change again.
    Finished,
}

/// A state machine written as the table of its allowed moves: any (state,
/// event) pair not in [`Machine::TRANSITIONS`] is refused.
pub trait Machine: Copy + Eq + std::fmt::Debug + 'static {
    type Event: Copy + Eq + std::fmt::Debug + 'static;
    /// "service instance", "service binding".
    const ENTITY: &'static str;
    /// (from, event, to), one row per allowed move.
    const TRANSITIONS: &'static [(Self, Self::Event, Self)];
    /// The state, worded to follow "is" ("being updated").
    fn phrase(self) -> &'static str;
    /// The event, worded to follow "cannot" ("be deprovisioned").
    fn event_phrase(event: Self::Event) -> &'static str;
    fn refusal(self) -> Refusal;
}

/// The state `event` leads to from `state`, or why it is refused.
pub fn transition<M: Machine>(state: M, event: M::Event) -> Result<M, InvalidTransition> {
    M::TRANSITIONS.iter().find(|(from, e, _)| *from == state && *e == event).map(|(_, _, to)| *to).ok_or(
        InvalidTransition {
            entity: M::ENTITY,
            event: M::event_phrase(event),
            state: state.phrase(),
            refusal: state.refusal(),
        },
    )
}

/// The whole machine as a grid, one line per state: the state each event
/// leads to, or `-` where it is refused. The machines' tests compare it with
/// the grid written out, so a change to the table is a change to a test.
#[cfg(test)]
pub(crate) fn grid<M: Machine>(states: &[M], events: &[M::Event]) -> String {
    let mut out = String::new();
    for s in states {
        let cells: Vec<String> = events
            .iter()
            .map(|e| transition(*s, *e).map_or_else(|_| "-".to_string(), |to| format!("{to:?}")))
            .collect();
        out.push_str(&format!("{s:?}: {}\n", cells.join(" ")));
    }
    out
}
