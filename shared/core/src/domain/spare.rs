//! Spare binding users: users an instance keeps ready in its cache, each with
//! its own password, so that a bind takes one and answers at once instead of
//! waiting minutes for ElastiCache to add a user to the user group.
//!
//! A spare is named `s-<n>` (`n` counts up per instance and is never reused),
//! is recorded in the instance before anything is made for it, and moves
//! `creating → ready`; a ready one is claimed by a bind (it leaves the
//! instance and its name and password are the binding's from then on) or,
//! when the plan asks for fewer, `retiring → gone`. Its password lives in the
//! secret `<prefix>/instances/<id>/spares/s-<n>` before and after the claim.

use serde::{Deserialize, Serialize};

use super::{Engine, Plan};

/// What a spare user is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpareState {
    /// Recorded; its secret and user are being made.
    Creating,
    /// In the cache and active: a bind may claim it.
    Ready,
    /// More spares than the plan asks for: being deleted.
    Retiring,
}

/// A binding user made in advance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareUser {
    /// The cache user name, `s-<n>`.
    pub username: String,
    /// Reference to its password in the secret store, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub state: SpareState,
}

impl SpareUser {
    /// The spare numbered `n`, just recorded.
    pub fn numbered(n: u32) -> SpareUser {
        SpareUser { username: format!("{SPARE_USER_PREFIX}{n}"), secret: None, state: SpareState::Creating }
    }
}

/// How many spare users an instance of `plan` keeps: the plan's
/// `spare_binding_users` where binds would otherwise wait (users that take
/// time to add, on an engine version with users), else none.
pub fn wanted(plan: &Plan, engine: Engine, engine_version: &str, users_change_at_once: bool) -> usize {
    if users_change_at_once || !engine.has_users(engine_version) {
        return 0;
    }
    usize::from(plan.spare_binding_users)
}

/// How long a `spares` operation may run before it fails (a later bind
/// starts another): time for a few user group changes.
pub const SPARES_DEADLINE_SECS: u64 = 3600;

/// How every spare user's name starts. Users made for a binding start with
/// `b-`, so the two never share a name.
pub const SPARE_USER_PREFIX: &str = "s-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_numbered_and_start_being_created() {
        let s = SpareUser::numbered(3);
        assert_eq!(s.username, "s-3");
        assert_eq!(s.state, SpareState::Creating);
        assert_eq!(s.secret, None);
        assert!(!crate::domain::Binding::username_for("s-3").starts_with(SPARE_USER_PREFIX));
    }

    #[test]
    fn spares_are_kept_only_where_binds_would_wait_for_a_user() {
        let catalog = crate::catalog::CatalogFile::builtin();
        let mut plan = catalog.plans.into_iter().find(|p| p.name == "small").expect("plan small");
        plan.spare_binding_users = 2;
        assert_eq!(wanted(&plan, Engine::Redis, "7.1", false), 2);
        assert_eq!(wanted(&plan, Engine::Valkey, "8.0", false), 2);
        assert_eq!(wanted(&plan, Engine::Redis, "7.1", true), 0, "users made at once need no spares");
        assert_eq!(wanted(&plan, Engine::Redis, "5.0.6", false), 0, "no users before Redis OSS 6");
        assert_eq!(wanted(&plan, Engine::Memcached, "1.6", false), 0);
        plan.spare_binding_users = 0;
        assert_eq!(wanted(&plan, Engine::Redis, "7.1", false), 0);
    }
}
