//! The orphan sweep's memory between reconcile passes: where the listing
//! of the broker's resources has got to, and when each resource no record
//! names was first seen, so that one is deleted only after a grace period
//! (see [`crate::reconcile`]).
//!
//! A round lists every kind of resource of every inventory once, a few
//! pages per pass. A sighting the round did not see again is dropped when
//! the round ends: the resource is gone, or a record names it now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// At most this many sightings are kept (the record stays well under
/// DynamoDB's 400 KB item limit); further orphans wait until some are gone.
pub const MAX_SIGHTINGS: usize = 2000;

/// What a resource the broker made is, in the order a round lists them: a
/// cache before its user group, a user group before its users, the secrets
/// last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// An ElastiCache replication group (Redis OSS, Valkey).
    ReplicationGroup,
    /// An ElastiCache cache cluster of its own (Memcached), not a member
    /// of a replication group.
    CacheCluster,
    /// An ElastiCache user group.
    UserGroup,
    /// An ElastiCache user.
    User,
    /// A laptop cache: its directory and server process.
    LocalCache,
    /// A secret in the secret store.
    Secret,
    /// A CloudWatch alarm on a cache's metric.
    Alarm,
    /// A cache's CloudWatch Logs group (log delivery).
    LogGroup,
    /// An ElastiCache serverless cache.
    ServerlessCache,
}

impl ResourceKind {
    /// How logs name it.
    pub fn describe(self) -> &'static str {
        match self {
            ResourceKind::ReplicationGroup => "replication group",
            ResourceKind::CacheCluster => "cache cluster",
            ResourceKind::UserGroup => "user group",
            ResourceKind::User => "cache user",
            ResourceKind::LocalCache => "local cache",
            ResourceKind::Secret => "secret",
            ResourceKind::Alarm => "CloudWatch alarm",
            ResourceKind::LogGroup => "log group",
            ResourceKind::ServerlessCache => "serverless cache",
        }
    }

    fn key(self) -> &'static str {
        match self {
            ResourceKind::ReplicationGroup => "rg",
            ResourceKind::CacheCluster => "cc",
            ResourceKind::UserGroup => "ug",
            ResourceKind::User => "user",
            ResourceKind::LocalCache => "local",
            ResourceKind::Secret => "secret",
            ResourceKind::Alarm => "alarm",
            ResourceKind::LogGroup => "logs",
            ResourceKind::ServerlessCache => "sc",
        }
    }
}

/// When an unnamed resource was first seen, and by which round last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub first_seen: Timestamp,
    /// The last round that found it unnamed.
    pub round: u64,
    /// Its tags do not say it is this broker's: it is never deleted, and
    /// its tags are not looked at again while it stays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left_alone: bool,
}

/// The sweep's record (one per broker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// The round under way (or the next, between rounds).
    #[serde(default)]
    pub round: u64,
    /// When the round under way began; 0 before the first.
    #[serde(default)]
    pub round_started_at: Timestamp,
    /// Which (inventory, kind) the round lists now, by position.
    #[serde(default)]
    pub step: usize,
    /// The listing's page token within that step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Unnamed resources by [`Sweep::key`].
    #[serde(default)]
    pub sightings: BTreeMap<String, Sighting>,
    /// Optimistic-concurrency version; 0 for a record never stored.
    #[serde(default)]
    pub version: u64,
}

impl Sweep {
    /// The key of a resource's sighting.
    pub fn key(kind: ResourceKind, id: &str) -> String {
        format!("{}:{id}", kind.key())
    }

    /// Whether a round is under way (it goes on whatever the interval).
    pub fn in_round(&self) -> bool {
        self.step > 0 || self.token.is_some()
    }

    /// Whether a pass at `now` lists anything: a round is under way, or
    /// the last one began at least `every_secs` ago.
    pub fn due(&self, now: Timestamp, every_secs: i64) -> bool {
        self.in_round() || self.round_started_at == 0 || now >= self.round_started_at + every_secs
    }

    /// Records that `key` was found unnamed at `now` in this round; `None`
    /// when it is new and the record is full.
    pub fn sight(&mut self, key: String, now: Timestamp) -> Option<&mut Sighting> {
        let round = self.round;
        if !self.sightings.contains_key(&key) && self.sightings.len() >= MAX_SIGHTINGS {
            return None;
        }
        let sighting =
            self.sightings.entry(key).or_insert(Sighting { first_seen: now, round, left_alone: false });
        sighting.round = round;
        Some(sighting)
    }

    /// Moves the listing on to `token`, or to the next step when the
    /// kind is done; after the last of `steps` the round ends: sightings it
    /// did not see are dropped. Whether the round ended.
    pub fn advance(&mut self, token: Option<String>, steps: usize) -> bool {
        if token.is_some() {
            self.token = token;
            return false;
        }
        self.token = None;
        self.step += 1;
        if self.step < steps {
            return false;
        }
        let round = self.round;
        self.sightings.retain(|_, s| s.round >= round);
        self.round += 1;
        self.step = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_drops_the_sightings_it_did_not_see_again() {
        let mut sweep = Sweep::default();
        sweep.sight(Sweep::key(ResourceKind::User, "a"), 10);
        sweep.sight(Sweep::key(ResourceKind::User, "b"), 10);
        assert!(!sweep.advance(None, 2));
        assert!(sweep.advance(None, 2), "the second step ends the round");
        assert_eq!(sweep.round, 1);
        // The next round sees only "a" again: its first sighting stays.
        let a = sweep.sight(Sweep::key(ResourceKind::User, "a"), 99).unwrap();
        assert_eq!(a.first_seen, 10);
        sweep.advance(None, 1);
        assert_eq!(sweep.sightings.keys().collect::<Vec<_>>(), vec!["user:a"]);
    }

    #[test]
    fn a_page_token_keeps_the_round_on_its_step() {
        let mut sweep = Sweep { round_started_at: 100, ..Sweep::default() };
        assert!(!sweep.due(150, 3600));
        assert!(!sweep.advance(Some("next".into()), 3));
        assert!(sweep.in_round() && sweep.due(150, 3600), "a round under way goes on");
        assert_eq!(sweep.step, 0);
        sweep.advance(None, 3);
        assert_eq!((sweep.step, sweep.token.as_deref()), (1, None));
        assert!(Sweep::default().due(0, 3600), "the first round is due at once");
    }

    #[test]
    fn a_full_record_takes_no_new_sighting_but_updates_old_ones() {
        let mut sweep = Sweep::default();
        for n in 0..MAX_SIGHTINGS {
            sweep.sight(Sweep::key(ResourceKind::Secret, &n.to_string()), 1);
        }
        assert!(sweep.sight(Sweep::key(ResourceKind::Secret, "new"), 2).is_none());
        assert!(sweep.sight(Sweep::key(ResourceKind::Secret, "0"), 2).is_some());
    }
}
