//! Day-2 operations: the one-off actions an update asks for (restart, a
//! failover test, taking or deleting a named snapshot), the snapshots an
//! instance has, and a new instance restored from one of them.
//!
//! An action is an update parameter that runs once per request: it rides
//! on the update ([`super::instance::PendingUpdate::action`]) and is never
//! kept in the instance's parameters. The provider works out the units an
//! action goes through ([`ActionStep`]: each node to reboot, replicas
//! first; each node group to fail over; the snapshot), and the update
//! operation records them and how many are done, so a job delivered twice
//! resumes where the first left off instead of rebooting a node again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::parameter::ParameterError;

/// The parameter that reboots every node of the cache.
pub const RESTART: &str = "restart";
/// The parameter that tests automatic failover.
pub const TEST_FAILOVER: &str = "test_failover";
/// The parameter that takes a named snapshot now.
pub const SNAPSHOT: &str = "snapshot";
/// The parameter that deletes one of the instance's named snapshots.
pub const DELETE_SNAPSHOT: &str = "delete_snapshot";
/// The provision parameter that makes the new cache from a snapshot.
pub const RESTORE_FROM: &str = "restore_from";

/// Every action parameter, in the order error messages list them.
pub const ACTION_PARAMETERS: [&str; 4] = [RESTART, TEST_FAILOVER, SNAPSHOT, DELETE_SNAPSHOT];

/// What a restore names instead of a snapshot: the source's newest one.
pub const LATEST: &str = "latest";

/// The longest snapshot name a platform may give.
pub const MAX_SNAPSHOT_NAME: usize = 40;

/// A one-off action of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Reboot every node: a replication group's clusters one at a time,
    /// replicas first; every node of a Memcached cluster.
    Restart,
    /// Fail over each node group in turn, and wait for a new primary.
    TestFailover,
    /// Take a snapshot named so now.
    Snapshot { name: String },
    /// Delete the instance's snapshot named so.
    DeleteSnapshot { name: String },
    /// Apply the cache's pending ElastiCache service updates (an update
    /// that carries the plan's newer `maintenance_info`). Not a parameter.
    Maintenance,
}

impl Action {
    /// The action `parameters` ask for, if any. More than one in a request
    /// is refused: each is its own update, with its own `last_operation`.
    /// The values were checked against the plan's schema already.
    pub fn from_parameters(parameters: &Map<String, Value>) -> Result<Option<Action>, ParameterError> {
        let given: Vec<&str> =
            ACTION_PARAMETERS.iter().copied().filter(|p| parameters.contains_key(*p)).collect();
        if given.len() > 1 {
            return Err(ParameterError(format!(
                "parameters {} are each an action of their own; send one of them per update",
                given.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(" and ")
            )));
        }
        let name = |p: &str| parameters.get(p).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(match given.first().copied() {
            None => None,
            Some(RESTART) => Some(Action::Restart),
            Some(TEST_FAILOVER) => Some(Action::TestFailover),
            Some(SNAPSHOT) => Some(Action::Snapshot { name: name(SNAPSHOT) }),
            Some(_) => Some(Action::DeleteSnapshot { name: name(DELETE_SNAPSHOT) }),
        })
    }

    /// The parameter that asks for it.
    pub fn parameter(&self) -> &'static str {
        match self {
            Action::Restart => RESTART,
            Action::TestFailover => TEST_FAILOVER,
            Action::Snapshot { .. } => SNAPSHOT,
            Action::DeleteSnapshot { .. } => DELETE_SNAPSHOT,
            Action::Maintenance => "maintenance_info",
        }
    }

    /// What it does, for a person: "restart", "snapshot nightly".
    pub fn describe(&self) -> String {
        match self {
            Action::Restart => "restart".to_string(),
            Action::TestFailover => "failover test".to_string(),
            Action::Snapshot { name } => format!("snapshot {name}"),
            Action::DeleteSnapshot { name } => format!("deletion of snapshot {name}"),
            Action::Maintenance => "maintenance".to_string(),
        }
    }

    /// What the finished update says it did, over `units` units.
    pub fn done(&self, units: usize) -> String {
        let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
        match self {
            Action::Restart => format!("restarted: {} rebooted one at a time", plural(units, "node")),
            Action::TestFailover => {
                format!("failover tested: {} failed over to a new primary", plural(units, "node group"))
            }
            Action::Snapshot { name } => format!("snapshot {name} taken"),
            Action::DeleteSnapshot { name } => format!("snapshot {name} deleted"),
            Action::Maintenance if units == 0 => {
                "maintenance applied: no service update was pending for the cache".to_string()
            }
            Action::Maintenance => format!("maintenance applied: {}", plural(units, "service update")),
        }
    }
}

impl Action {
    /// Whether it may find nothing to do (no service update pending) and
    /// still succeed; a restart of a cache without nodes may not.
    pub fn may_find_nothing(&self) -> bool {
        matches!(self, Action::Maintenance)
    }
}

/// One unit an action goes through, as the provider worked it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStep {
    /// What the provider acts on: a cache cluster, a node group, a snapshot.
    pub target: String,
    /// What the provider noted before acting, to tell when it is done (the
    /// node group's primary before a failover test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

impl ActionStep {
    pub fn on(target: impl Into<String>) -> ActionStep {
        ActionStep { target: target.into(), before: None }
    }
}

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Taken by the `snapshot` parameter, under the name it gave.
    Named,
    /// The cache's daily snapshot (ElastiCache's automatic backups).
    Automatic,
    /// Taken when the instance was deprovisioned (plans with
    /// `final_snapshot`); it outlives the instance.
    Final,
}

/// A snapshot of an instance's cache, as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// How the platform names it: the name it gave, or the backend's own
    /// for automatic and final snapshots.
    pub name: String,
    pub kind: SnapshotKind,
    /// The backend's status: `creating`, `available`, `deleting` ...
    pub status: String,
    /// When it was taken, when the backend says.
    pub created_at: Option<super::Timestamp>,
    /// What a restore hands back to the provider (the backend's name).
    pub reference: String,
}

impl Snapshot {
    pub fn is_available(&self) -> bool {
        self.status == "available"
    }
}

/// A snapshot as fetching an instance shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotView {
    pub name: String,
    pub kind: SnapshotKind,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl From<&Snapshot> for SnapshotView {
    fn from(s: &Snapshot) -> SnapshotView {
        SnapshotView {
            name: s.name.clone(),
            kind: s.kind,
            status: s.status.clone(),
            created_at: s.created_at.map(super::iso8601),
        }
    }
}

/// The `restore_from` provision parameter: which instance, which snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    pub instance_id: String,
    /// A snapshot's name, or [`LATEST`].
    pub snapshot: String,
}

impl RestoreFrom {
    /// The parameter, when given (its shape was checked by the schema).
    pub fn from_parameters(parameters: &Map<String, Value>) -> Option<RestoreFrom> {
        parameters.get(RESTORE_FROM).and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// What an instance was restored from, as resolved when it was
/// provisioned (so a retried create restores the same snapshot, even
/// after a newer one was taken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub instance_id: String,
    /// The snapshot's name, as the source instance's fetch shows it.
    pub snapshot: String,
    /// What the provider restores from ([`Snapshot::reference`]).
    pub reference: String,
}

/// Picks the snapshot a restore names among the source's: by name, or the
/// newest available one for [`LATEST`]. A snapshot not yet available
/// cannot be restored from.
pub fn choose<'a>(snapshots: &'a [Snapshot], wanted: &str) -> Result<&'a Snapshot, String> {
    let listed = || {
        let names: Vec<&str> =
            snapshots.iter().filter(|s| s.is_available()).map(|s| s.name.as_str()).collect();
        if names.is_empty() {
            "it has none available".to_string()
        } else {
            format!("its snapshots: {}", names.join(", "))
        }
    };
    if wanted == LATEST {
        return snapshots
            .iter()
            .filter(|s| s.is_available())
            .max_by_key(|s| (s.created_at.unwrap_or(0), s.name.clone()))
            .ok_or_else(|| format!("it has no snapshot to restore from yet ({})", listed()));
    }
    match snapshots.iter().find(|s| s.name == wanted) {
        Some(s) if s.is_available() => Ok(s),
        Some(s) => Err(format!("snapshot {wanted} is {}, not available yet; try again when it is", s.status)),
        None => Err(format!("it has no snapshot named {wanted} ({})", listed())),
    }
}

/// Why `name` cannot name a snapshot, if it cannot: 1 to
/// [`MAX_SNAPSHOT_NAME`] lowercase letters, digits and single hyphens,
/// starting with a letter and not ending with a hyphen (what an
/// ElastiCache snapshot name allows, with room for the broker's prefix),
/// and not [`LATEST`], which a restore reads as "the newest".
pub fn snapshot_name_problem(name: &str) -> Option<String> {
    let rule = format!(
        "1 to {MAX_SNAPSHOT_NAME} lowercase letters, digits and hyphens, starting with a letter, \
         without two hyphens in a row or one at the end"
    );
    let ok = !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        return Some(format!("{name:?} is not a snapshot name: use {rule}"));
    }
    (name == LATEST)
        .then(|| format!("{LATEST:?} is what restore_from reads as the newest snapshot; choose another name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn one_action_per_update_and_none_is_no_action() {
        assert_eq!(Action::from_parameters(&params(json!({"restart": true}))), Ok(Some(Action::Restart)));
        assert_eq!(
            Action::from_parameters(&params(json!({"snapshot": "nightly", "engine_version": "7.1"}))),
            Ok(Some(Action::Snapshot { name: "nightly".into() }))
        );
        assert_eq!(Action::from_parameters(&params(json!({"engine_version": "7.1"}))), Ok(None));
        let err = Action::from_parameters(&params(json!({"restart": true, "snapshot": "a"}))).unwrap_err();
        assert_eq!(
            err.0,
            "parameters 'restart' and 'snapshot' are each an action of their own; send one of them per update"
        );
    }

    #[test]
    fn snapshot_names_are_what_elasticache_takes_with_room_for_the_prefix() {
        for good in ["nightly", "before-upgrade-2", "a", &"a".repeat(40)] {
            assert_eq!(snapshot_name_problem(good), None, "{good}");
        }
        for bad in ["", "Nightly", "1st", "a--b", "end-", "with space", "ümlaut", &"a".repeat(41)] {
            let why = snapshot_name_problem(bad).expect(bad);
            assert!(why.contains("lowercase letters"), "{why}");
        }
        assert!(snapshot_name_problem("latest").unwrap().contains("newest"));
    }

    fn snapshot(name: &str, status: &str, at: i64) -> Snapshot {
        Snapshot {
            name: name.into(),
            kind: SnapshotKind::Named,
            status: status.into(),
            created_at: Some(at),
            reference: format!("ref-{name}"),
        }
    }

    #[test]
    fn latest_is_the_newest_available_snapshot_and_a_name_must_be_available() {
        let all = [
            snapshot("old", "available", 10),
            snapshot("new", "available", 20),
            snapshot("newer", "creating", 30),
        ];
        assert_eq!(choose(&all, LATEST).unwrap().name, "new");
        assert_eq!(choose(&all, "old").unwrap().reference, "ref-old");
        assert_eq!(
            choose(&all, "newer").unwrap_err(),
            "snapshot newer is creating, not available yet; try again when it is"
        );
        assert_eq!(
            choose(&all, "gone").unwrap_err(),
            "it has no snapshot named gone (its snapshots: old, new)"
        );
        assert!(choose(&[], LATEST).unwrap_err().contains("no snapshot to restore from yet"));
    }

    #[test]
    fn each_action_says_what_it_did() {
        assert_eq!(Action::Restart.done(3), "restarted: 3 nodes rebooted one at a time");
        assert_eq!(
            Action::TestFailover.done(1),
            "failover tested: 1 node group failed over to a new primary"
        );
        assert_eq!(Action::DeleteSnapshot { name: "a".into() }.done(1), "snapshot a deleted");
    }
}
