//! Credential rotation: the policy (how often, how long the old password keeps
//! working) and the state a binding or instance records while its password
//! rotates.
//!
//! A rotation follows Secrets Manager's four steps, each keyed by the new
//! secret version's id (the `ClientRequestToken`):
//!
//! | phase     | after        | the cache accepts      | AWSCURRENT |
//! |-----------|--------------|------------------------|------------|
//! | `created` | createSecret | the old password       | old        |
//! | `set`     | setSecret    | the new and the old    | old        |
//! | `tested`  | testSecret   | the new and the old    | old        |
//! | `grace`   | finishSecret | the new and the old    | new        |
//! | (none)    | grace ends   | the new password only  | new        |
//!
//! The grace period ends in a `rotate` operation that the worker runs when
//! `grace_ends_at` has passed; then the record's `rotation` is cleared and
//! `rotated_at` set.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// How often credentials rotate and how long an old password keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Days between scheduled rotations; 0 turns scheduled rotation off (an
    /// operator can still rotate on demand).
    pub days: u32,
    /// Seconds the previous password keeps working after a rotation.
    pub grace_secs: u64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy { days: 30, grace_secs: 3600 }
    }
}

const DAY_SECS: i64 = 24 * 3600;

impl RotationPolicy {
    /// When credentials issued (or last rotated) at `issued_at` should be
    /// renewed: at the next scheduled rotation. `None` without a schedule.
    pub fn renew_before(&self, issued_at: Timestamp) -> Option<Timestamp> {
        (self.days > 0).then(|| issued_at + i64::from(self.days) * DAY_SECS)
    }

    /// When credentials issued at `issued_at` stop working: the next
    /// scheduled rotation plus the grace period. `None` without a schedule.
    pub fn expires_at(&self, issued_at: Timestamp) -> Option<Timestamp> {
        self.renew_before(issued_at).map(|t| t + self.grace_secs())
    }

    /// The grace period in the domain's unit.
    pub fn grace_secs(&self) -> i64 {
        i64::try_from(self.grace_secs).unwrap_or(i64::MAX / 4)
    }

    /// Refuses a schedule whose grace period is not shorter than the time
    /// between two rotations: the next scheduled rotation would start while
    /// the previous one's grace period still runs, which the broker refuses
    /// (a cache user holds at most two passwords), and Secrets Manager then
    /// reports every later rotation of the secret as still in progress. The
    /// message names both settings (`ROTATION_DAYS`, `ROTATION_GRACE_SECS`).
    pub fn check(&self) -> Result<(), String> {
        let interval = u64::from(self.days) * 86_400;
        if self.days > 0 && self.grace_secs >= interval {
            return Err(format!(
                "ROTATION_GRACE_SECS={} must be shorter than ROTATION_DAYS={} ({interval} s): each rotation's grace period has to end before the next one starts; lower ROTATION_GRACE_SECS or raise ROTATION_DAYS",
                self.grace_secs, self.days
            ));
        }
        Ok(())
    }
}

/// How far a rotation has got (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    /// The new password is stored as the secret's AWSPENDING version.
    Created,
    /// The cache accepts the new password besides the old one.
    Set,
    /// The cache was seen accepting both.
    Tested,
    /// The new password is AWSCURRENT; the old one works until `grace_ends_at`.
    Grace,
}

impl RotationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Created => "created",
            RotationPhase::Set => "set",
            RotationPhase::Tested => "tested",
            RotationPhase::Grace => "grace",
        }
    }
}

/// A rotation in progress, as the binding or instance records it. Holds no
/// password: only the id of the secret version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The new secret version's id: the rotation's ClientRequestToken.
    pub token: String,
    pub phase: RotationPhase,
    pub started_at: Timestamp,
    /// Set by finishSecret: the old password works until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ends_at: Option<Timestamp>,
    /// The operation that ends the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
}

impl Rotation {
    pub fn start(token: &str, now: Timestamp) -> Rotation {
        Rotation {
            token: token.to_string(),
            phase: RotationPhase::Created,
            started_at: now,
            grace_ends_at: None,
            operation_id: None,
        }
    }

    /// Whether a new rotation must wait for this one: until its grace period
    /// has ended, the cache holds two passwords and can take no third.
    /// Before finishSecret, a new token replaces an abandoned attempt (Secrets
    /// Manager starts over with a new token after a failed step).
    pub fn blocks_new_rotation(&self, now: Timestamp) -> bool {
        self.phase == RotationPhase::Grace && self.grace_ends_at.is_some_and(|end| now < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_period_as_long_as_the_rotation_interval_is_refused_naming_both_settings() {
        let ok = RotationPolicy { days: 1, grace_secs: 86_399 };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(RotationPolicy { days: 0, grace_secs: 7 * 86_400 }.check(), Ok(()), "no schedule");
        let err = RotationPolicy { days: 1, grace_secs: 86_400 }.check().unwrap_err();
        assert!(err.contains("ROTATION_GRACE_SECS=86400") && err.contains("ROTATION_DAYS=1"), "{err}");
        assert!(RotationPolicy { days: 1, grace_secs: 7 * 86_400 }.check().is_err());
    }

    #[test]
    fn renewal_is_due_at_the_next_rotation_and_expiry_a_grace_period_later() {
        let p = RotationPolicy { days: 30, grace_secs: 3600 };
        assert_eq!(p.renew_before(1_000), Some(1_000 + 30 * 86_400));
        assert_eq!(p.expires_at(1_000), Some(1_000 + 30 * 86_400 + 3600));
        let off = RotationPolicy { days: 0, grace_secs: 3600 };
        assert_eq!((off.renew_before(1_000), off.expires_at(1_000)), (None, None));
    }

    #[test]
    fn only_a_grace_period_still_running_blocks_a_new_rotation() {
        let mut r = Rotation::start("t-1", 1_000);
        assert!(!r.blocks_new_rotation(1_001), "an attempt that never finished is replaced");
        r.phase = RotationPhase::Grace;
        r.grace_ends_at = Some(2_000);
        assert!(r.blocks_new_rotation(1_999));
        assert!(!r.blocks_new_rotation(2_000));
    }

    #[test]
    fn phases_are_ordered_as_the_steps_run() {
        use RotationPhase::*;
        assert!(Created < Set && Set < Tested && Tested < Grace);
    }
}
