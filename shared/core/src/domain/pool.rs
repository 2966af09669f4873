//! The warm pool: caches made in advance for a plan (`warm_pool_size`), so
//! that a provision takes one and answers at once instead of waiting the
//! ten minutes or more ElastiCache takes to create a replication group.
//!
//! A pool member is an instance record of its own (`pooled`), provisioned by
//! the worker like any instance, with its admin user, user group and spare
//! binding users, and no tenant. Its id is `pool@<uuid>`: `@` is outside the
//! OSB id alphabet ([`super::ids`]), so no platform can address a member or
//! take its id, while ElastiCache names (hashed), secret names (Secrets
//! Manager allows `@`) and laptop directories take it as they are.
//!
//! The [`Pool`] record of a plan lists its unclaimed members, so a provision
//! finds one with one read, no scan. A claim is one conditional write of the
//! pool (the member leaves the list), the member (now pointing at its
//! claimant), and the new instance naming the member's cache: two claims of
//! one member cannot both win, since both write the pool at the version they
//! read. The reconciler and every claim then bring the pool back to its size.

use serde::{Deserialize, Serialize};

use super::{Instance, InstanceState, Plan};

/// What starts every pool member's id.
pub const MEMBER_PREFIX: &str = "pool@";

/// At most this many caches per plan's pool: each is a cache that costs
/// money while it waits.
pub const MAX_WARM_POOL_SIZE: u8 = 20;

/// At most this many members are added or retired per plan in one refill;
/// the next pass goes on.
pub const MAX_CHANGES_PER_REFILL: usize = 5;

/// The unclaimed members of one plan's pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub plan_id: String,
    /// Member ids, oldest first: the oldest ready one is claimed first.
    #[serde(default)]
    pub members: Vec<String>,
    /// Optimistic-concurrency version; 0 for a pool never stored.
    #[serde(default)]
    pub version: u64,
}

impl Pool {
    /// An empty pool for `plan_id`, not stored yet.
    pub fn empty(plan_id: &str) -> Pool {
        Pool { plan_id: plan_id.to_string(), members: Vec::new(), version: 0 }
    }

    /// Takes `member` off the list; whether it was on it.
    pub fn remove(&mut self, member: &str) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m != member);
        self.members.len() != before
    }
}

/// A new member's id.
pub fn member_id() -> String {
    format!("{MEMBER_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` names a pool member rather than a platform's instance.
pub fn is_member_id(id: &str) -> bool {
    id.starts_with(MEMBER_PREFIX)
}

/// Whether a provision with these settings can take a member of `plan`'s
/// pool: the pool caches run the plan's default engine version and carry
/// no parameters, so a request asking for another version makes its own.
pub fn serves(plan: &Plan, engine_version: &str) -> bool {
    plan.warm_pool_size > 0 && engine_version == plan.default_engine_version
}

/// Whether `member` can be handed out now: ready, still unclaimed, of this
/// plan and version, and with no spares operation running (a claim starts
/// its own).
pub fn claimable(member: &Instance, plan: &Plan, engine_version: &str) -> bool {
    member.pooled
        && member.claimed_by.is_none()
        && member.state == InstanceState::Ready
        && member.plan_id == plan.id
        && member.engine_version == engine_version
        && member.spares_operation.is_none()
        && member.pending_update.is_none()
}

/// Whether a listed member still counts towards the pool's size: it is
/// being made or is ready. A failed or deleted one is taken off the list.
pub fn live(member: &Instance) -> bool {
    member.claimed_by.is_none() && matches!(member.state, InstanceState::Provisioning | InstanceState::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InstanceId;

    #[test]
    fn member_ids_are_outside_the_ids_a_platform_can_send() {
        let id = member_id();
        assert!(is_member_id(&id));
        assert!(InstanceId::parse(&id).is_err(), "{id} must not parse as an OSB instance id");
        assert_ne!(member_id(), id);
    }

    #[test]
    fn removing_a_member_says_whether_it_was_listed() {
        let mut pool = Pool::empty("p");
        pool.members = vec!["pool@a".into(), "pool@b".into()];
        assert!(pool.remove("pool@a"));
        assert!(!pool.remove("pool@a"));
        assert_eq!(pool.members, vec!["pool@b".to_string()]);
    }
}
