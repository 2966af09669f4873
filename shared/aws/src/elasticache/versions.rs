//! Engine versions as ElastiCache takes them, and the parameter group each
//! one needs. A plan offers major versions ("7.1", "1.6"); ElastiCache names
//! a version per minor release from Redis OSS 6 on, but full versions before
//! that and for Memcached:
//!
//! | plan | sent as | why |
//! | --- | --- | --- |
//! | Redis OSS `6.0` … `7.1`, Valkey `7.2`, `8.0` | as is | one version per minor release |
//! | Redis OSS `5.0` | `5.0.6` | the only 5.0 release whose AUTH token can change (rotation) |
//! | Memcached `1.6` | `1.6.22` | the newest; in-transit encryption needs 1.6.12 or later |
//!
//! Reference: ElastiCache User Guide, "Supported engines and versions"
//! (supported-engine-versions) and "Supported ElastiCache for Memcached
//! versions" (supported-engine-versions-mc).

use broker_core::domain::Engine;

/// The version to send to ElastiCache for plan version `version`.
pub fn aws_engine_version(engine: Engine, version: &str) -> String {
    let full = match (engine, version) {
        (Engine::Memcached, "1.6") => Some(MEMCACHED_1_6),
        (Engine::Redis, "5.0") => Some("5.0.6"),
        _ => None,
    };
    full.unwrap_or(version).to_string()
}

/// The Memcached 1.6 release the broker creates.
pub const MEMCACHED_1_6: &str = "1.6.22";

/// The parameter group family of an engine version (`redis7`, `redis6.x`,
/// `valkey8` ...); `None` for Memcached, whose groups the broker never sets.
pub fn parameter_group_family(engine: Engine, version: &str) -> Option<String> {
    let mut parts = version.split('.');
    let major: u32 = parts.next()?.trim().parse().ok()?;
    Some(match engine {
        Engine::Valkey => format!("valkey{major}"),
        Engine::Redis if major >= 7 => "redis7".to_string(),
        Engine::Redis if major == 6 => "redis6.x".to_string(),
        // Redis OSS 3.2 to 5.0 name the family after major and minor.
        Engine::Redis => format!("redis{major}.{}", parts.next().unwrap_or("0")),
        Engine::Memcached => return None,
    })
}

/// The default parameter group of an engine version: `default.<family>`,
/// and `default.<family>.cluster.on` in cluster mode (ElastiCache needs one
/// with `cluster-enabled yes` for more than one shard).
pub fn default_parameter_group(engine: Engine, version: &str, cluster_mode: bool) -> Option<String> {
    let family = parameter_group_family(engine, version)?;
    Some(if cluster_mode { format!("default.{family}.cluster.on") } else { format!("default.{family}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_per_minor_releases_are_sent_in_full() {
        assert_eq!(aws_engine_version(Engine::Memcached, "1.6"), "1.6.22");
        assert_eq!(aws_engine_version(Engine::Redis, "5.0"), "5.0.6");
        for v in ["6.0", "6.2", "7.0", "7.1"] {
            assert_eq!(aws_engine_version(Engine::Redis, v), v);
        }
        assert_eq!(aws_engine_version(Engine::Valkey, "8.0"), "8.0");
    }

    #[test]
    fn memcached_is_sent_a_release_with_in_transit_encryption() {
        let v = aws_engine_version(Engine::Memcached, "1.6");
        assert!(broker_core::domain::params::compare_versions(&v, "1.6.12").is_ge(), "{v}");
    }

    #[test]
    fn each_engine_version_has_the_default_parameter_group_of_its_family() {
        let group = |engine, version, cluster| default_parameter_group(engine, version, cluster).unwrap();
        assert_eq!(group(Engine::Redis, "7.1", true), "default.redis7.cluster.on");
        assert_eq!(group(Engine::Redis, "7.0", false), "default.redis7");
        assert_eq!(group(Engine::Redis, "6.2", false), "default.redis6.x");
        assert_eq!(group(Engine::Redis, "6.0", true), "default.redis6.x.cluster.on");
        assert_eq!(group(Engine::Redis, "5.0.6", true), "default.redis5.0.cluster.on");
        assert_eq!(group(Engine::Valkey, "8.0", false), "default.valkey8");
        assert_eq!(group(Engine::Valkey, "7.2", true), "default.valkey7.cluster.on");
        assert_eq!(default_parameter_group(Engine::Memcached, "1.6", false), None);
    }
}
