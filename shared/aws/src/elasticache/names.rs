//! Deterministic ElastiCache names, derived from the instance id alone, so a
//! retried step finds what an earlier attempt made instead of making another.
//!
//! ElastiCache wants ids that start with a letter, hold only lowercase
//! letters, digits and single hyphens, do not end with a hyphen, and (for
//! replication groups, cache clusters and users) are at most 40 characters.
//! Instance ids are GUIDs chosen by the platform, so they are hashed:
//!
//! | resource | id |
//! | --- | --- |
//! | replication group, cache cluster, user group | `{prefix}-{h}` |
//! | admin user (`broker-admin`) | `{prefix}-a-{h}` |
//! | disabled default user (`default`) | `{prefix}-d-{h}` |
//! | binding user | `{prefix}-u-{hash of instance id and user name}` |
//! | final snapshot of a deleted replication group | `{prefix}-final-{h}-{k}` |
//! | snapshot the platform named `name` (`snapshot` parameter) | `{prefix}-s-{h}-{name}` |
//!
//! where `h` is [`HASH_LEN`] base32 characters (105 bits) of the SHA-256 of
//! the instance id and `k` those of the deprovision's operation id. SHA-256,
//! not a faster non-cryptographic hash: platforms let their users choose
//! instance ids on some paths, and nobody should be able to choose one whose
//! name is another instance's. A cache found under an instance's name is
//! still adopted only when its `broker-instance-id` tag names that instance
//! (`ElastiCacheProvider::check_owner`).
//!
//! Snapshot names follow the same character rules. They are not held to 40
//! characters (ElastiCache's own automatic snapshots are named
//! `automatic.{cluster id}-{date and time}`, longer than any id): with the
//! longest prefix a final snapshot's name has 66.

use broker_core::domain::SnapshotKind;
use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

/// Base32 characters of a hash in a name: 105 bits.
pub const HASH_LEN: usize = 21;

/// The longest prefix that keeps every id within 40 characters:
/// `{prefix}-u-` plus [`HASH_LEN`] characters. The configuration allows as
/// many (`NAME_PREFIX`, at most 16).
pub const MAX_PREFIX_LEN: usize = 40 - "-u-".len() - HASH_LEN;

/// What the prefix becomes when nothing usable is left of the configured one.
const FALLBACK_PREFIX: &str = "osb";

/// The first [`HASH_LEN`] characters of the lowercase base32 of the SHA-256
/// of `bytes`: letters and the digits 2 to 7, so valid in any id.
pub fn hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = BASE32_NOPAD.encode(&digest);
    out.truncate(HASH_LEN);
    out.make_ascii_lowercase();
    out
}

/// The ids of one broker's resources (everything starts with its prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`, made valid first (see [`normalize_prefix`]).
    pub fn new(prefix: &str) -> Names {
        Names { prefix: normalize_prefix(prefix) }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The replication group (Redis OSS, Valkey) or cache cluster
    /// (Memcached) of an instance, and its user group.
    pub fn cache(&self, instance_id: &str) -> String {
        format!("{}-{}", self.prefix, hash(instance_id.as_bytes()))
    }

    /// The user the broker administers the cache as.
    pub fn admin_user(&self, instance_id: &str) -> String {
        format!("{}-a-{}", self.prefix, hash(instance_id.as_bytes()))
    }

    /// The disabled user named `default` that every user group must hold.
    pub fn default_user(&self, instance_id: &str) -> String {
        format!("{}-d-{}", self.prefix, hash(instance_id.as_bytes()))
    }

    /// The snapshot ElastiCache takes when it deletes the instance's
    /// replication group, if the plan asks for one, for the deprovision
    /// `key` names (its operation id). The same name for every retry of that
    /// deprovision, so a retried delete asks for the snapshot an earlier
    /// attempt took; another for a later deprovision of a reused instance
    /// id, whose snapshot would otherwise already exist.
    pub fn final_snapshot(&self, instance_id: &str, key: &str) -> String {
        format!("{}-final-{}-{}", self.prefix, hash(instance_id.as_bytes()), hash(key.as_bytes()))
    }

    /// What every final snapshot of the instance's caches starts with.
    pub fn final_snapshot_prefix(&self, instance_id: &str) -> String {
        format!("{}-final-{}-", self.prefix, hash(instance_id.as_bytes()))
    }

    /// The snapshot the `snapshot` parameter names `name` (a name the
    /// broker checked: lowercase letters, digits, single hyphens), or with
    /// an empty `name` what all of them start with. Under the instance's
    /// hash, so two instances' names never meet.
    pub fn named_snapshot(&self, instance_id: &str, name: &str) -> String {
        format!("{}-s-{}-{name}", self.prefix, hash(instance_id.as_bytes()))
    }

    /// The user of a binding. The zero byte keeps ("ab", "c") and ("a", "bc")
    /// apart; neither an instance id nor a user name contains one.
    pub fn binding_user(&self, instance_id: &str, username: &str) -> String {
        let mut key = Vec::with_capacity(instance_id.len() + 1 + username.len());
        key.extend_from_slice(instance_id.as_bytes());
        key.push(0);
        key.extend_from_slice(username.as_bytes());
        format!("{}-u-{}", self.prefix, hash(&key))
    }

    /// Whether `id` has the shape of this broker's replication group,
    /// cache cluster or user group ids (`{prefix}-{h}`): a longer prefix
    /// that starts with this one (another broker's) does not.
    pub fn is_cache_id(&self, id: &str) -> bool {
        self.rest(id).is_some_and(is_hash)
    }

    /// Whether `id` has the shape of this broker's user ids
    /// (`{prefix}-a-{h}`, `-d-`, `-u-`).
    pub fn is_user_id(&self, id: &str) -> bool {
        self.rest(id)
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(role, h)| matches!(role, "a" | "d" | "u") && is_hash(h))
    }

    /// What follows `{prefix}-` in `id`.
    fn rest<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(&self.prefix)?.strip_prefix('-')
    }

    /// Whether `id` is one of this broker's users, so clean-up never deletes
    /// a user someone else added to a user group.
    pub fn owns(&self, id: &str) -> bool {
        id.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('-'))
    }
}

/// Whether `s` is a hash as names hold it: [`HASH_LEN`] characters of
/// lowercase base32.
fn is_hash(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// What a snapshot named `aws_name` is to the instance, and the name the
/// broker shows: one of its named snapshots (`named`: the prefix of
/// [`Names::named_snapshot`], shown without it), its final snapshot
/// (`last`: [`Names::final_snapshot_prefix`]), an automatic one, or `None`
/// for a manual snapshot someone else took, which is not the broker's to
/// offer. Node-based and serverless listings both ask it.
pub(super) fn snapshot_kind(
    aws_name: &str,
    named: &str,
    last: &str,
    automatic: bool,
) -> Option<(SnapshotKind, String)> {
    if let Some(own) = aws_name.strip_prefix(named) {
        Some((SnapshotKind::Named, own.to_string()))
    } else if aws_name.starts_with(last) {
        Some((SnapshotKind::Final, aws_name.to_string()))
    } else if automatic {
        Some((SnapshotKind::Automatic, aws_name.to_string()))
    } else {
        None
    }
}

/// Makes `raw` a valid id prefix: lowercase, anything but letters, digits and
/// hyphens turned into a hyphen, no doubled, leading or trailing hyphen, a
/// letter first, at most [`MAX_PREFIX_LEN`] characters. The configuration
/// already refuses bad prefixes; this keeps a bad one from reaching AWS.
pub fn normalize_prefix(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out = format!("{FALLBACK_PREFIX}{}{out}", if out.is_empty() { "" } else { "-" });
    }
    out.truncate(MAX_PREFIX_LEN);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Whether ElastiCache accepts `id` as a replication group, cache cluster or
/// user id.
#[cfg(test)]
pub fn is_valid_id(id: &str) -> bool {
    (1..=40).contains(&id.len()) && has_id_characters(id)
}

/// Whether `name` is a snapshot name this module may make: the characters of
/// an id, at most 255 of them.
#[cfg(test)]
pub fn is_valid_snapshot_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && has_id_characters(name)
}

/// A letter first, then lowercase letters, digits and single hyphens, and no
/// hyphen last.
#[cfg(test)]
fn has_id_characters(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && !id.contains("--")
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "6f1c2a9e-0b7d-4c1e-9a53-2d1f0e8b7c64";

    #[test]
    fn the_hash_is_the_start_of_the_base32_sha256_from_the_published_vector() {
        // SHA-256("abc") = ba7816bf 8f01cfea ..., FIPS 180-2 appendix B.1;
        // its base32 (RFC 4648) starts XJ4BNP4PAHH6UQKBIDPF3.
        assert_eq!(hash(b"abc"), "xj4bnp4pahh6uqkbidpf3");
        assert_eq!(hash(b"abc").len(), HASH_LEN);
        assert_ne!(hash(b"abc"), hash(b"abd"));
    }

    #[test]
    fn every_name_of_an_instance_is_deterministic_and_valid() {
        let names = Names::new("osb");
        let all = [
            names.cache(INSTANCE),
            names.admin_user(INSTANCE),
            names.default_user(INSTANCE),
            names.binding_user(INSTANCE, "b-3f0c"),
        ];
        assert_eq!(all[0], format!("osb-{}", hash(INSTANCE.as_bytes())));
        assert_eq!(all[0], Names::new("osb").cache(INSTANCE));
        for id in &all {
            assert!(is_valid_id(id), "{id}");
            assert!(names.owns(id), "{id}");
        }
        assert!(all[1].starts_with("osb-a-") && all[2].starts_with("osb-d-") && all[3].starts_with("osb-u-"));
    }

    #[test]
    fn the_final_snapshot_name_is_deterministic_valid_and_ours_under_any_prefix() {
        let names = Names::new("osb");
        let name = names.final_snapshot(INSTANCE, "op-1");
        assert_eq!(name, format!("osb-final-{}-{}", hash(INSTANCE.as_bytes()), hash(b"op-1")));
        assert_eq!(name, Names::new("osb").final_snapshot(INSTANCE, "op-1"), "the same for a retry");
        assert_ne!(name, names.final_snapshot("another-instance", "op-1"));
        assert_ne!(name, names.final_snapshot(INSTANCE, "op-2"), "another deprovision of a reused id");
        assert!(names.owns(&name));
        for raw in ["osb", "OSB_Prod", "9", &"p".repeat(60)] {
            let name = Names::new(raw).final_snapshot(INSTANCE, "op-1");
            assert!(is_valid_snapshot_name(&name), "{name}");
            assert!(name.len() <= MAX_PREFIX_LEN + "-final-".len() + 2 * HASH_LEN + 1, "{name}");
        }
    }

    #[test]
    fn different_instances_and_users_get_different_names() {
        let names = Names::new("osb");
        assert_ne!(names.cache("i-1"), names.cache("i-2"));
        assert_ne!(names.binding_user("i-1", "b-1"), names.binding_user("i-1", "b-2"));
        assert_ne!(names.binding_user("ab", "c"), names.binding_user("a", "bc"));
    }

    #[test]
    fn the_longest_prefix_still_gives_ids_of_at_most_40_characters() {
        let names = Names::new(&"p".repeat(60));
        assert_eq!(names.prefix().len(), MAX_PREFIX_LEN);
        assert_eq!(names.binding_user(INSTANCE, "b-1").len(), 40);
        assert!(is_valid_id(&names.binding_user(INSTANCE, "b-1")));
    }

    #[test]
    fn a_bad_prefix_is_made_valid_rather_than_sent_to_aws() {
        assert_eq!(normalize_prefix("OSB_Prod"), "osb-prod");
        assert_eq!(normalize_prefix("--a--b--"), "a-b");
        assert_eq!(normalize_prefix("1st"), "osb-1st");
        assert_eq!(normalize_prefix(""), "osb");
        assert_eq!(normalize_prefix(&format!("{}-x", "a".repeat(16))), "a".repeat(16));
        for raw in ["OSB_Prod", "--", "9", "a-very-long-prefix-that-goes-on-and-on"] {
            assert!(is_valid_id(&Names::new(raw).binding_user(INSTANCE, "u")), "{raw}");
        }
    }

    #[test]
    fn only_ids_of_this_brokers_shapes_are_taken_for_its_own() {
        let names = Names::new("ecb");
        let other = Names::new("ecb-a");
        assert!(names.is_cache_id(&names.cache(INSTANCE)));
        assert!(names.is_user_id(&names.admin_user(INSTANCE)));
        assert!(names.is_user_id(&names.default_user(INSTANCE)));
        assert!(names.is_user_id(&names.binding_user(INSTANCE, "b-1")));
        assert!(!names.is_cache_id(&names.admin_user(INSTANCE)), "a user id is no cache id");
        // Broker "ecb-a"'s caches and users start with "ecb-" too; their
        // shapes are not "ecb"'s. (Its cache id has the shape of an "ecb"
        // admin user, but caches and users are listed apart.)
        assert!(!names.is_cache_id(&other.cache(INSTANCE)));
        assert!(!names.is_user_id(&other.admin_user(INSTANCE)));
        assert!(!names.is_user_id(&other.binding_user(INSTANCE, "b-1")));
        assert!(!names.is_cache_id("ecb-manual-cache"));
        assert!(!names.is_cache_id("other-abcdefghijklmnopqrstu"));
    }

    #[test]
    fn users_of_another_broker_are_not_ours() {
        let names = Names::new("osb");
        assert!(!names.owns("osbx-a-0000"));
        assert!(!names.owns("default"));
        assert!(!names.owns("other-u-1"));
    }
}
