//! ElastiCache Serverless plans: a cache with no nodes to choose, which
//! scales within the plan's usage limits (data stored, ElastiCache
//! Processing Units a second), takes a daily snapshot at the plan's time,
//! and serves on two endpoints, the primary (6379) and the reader (6380),
//! always with TLS. Redis OSS 7.1 and Valkey 7.2 and 8.0 run serverless.
//!
//! What a plan's data must say, and what a serverless cache cannot do that
//! a cache of nodes can (restart, failover tests, the eviction policy, the
//! windows): those parameters are left out of its schemas and refused with
//! a reason.

use serde::{Deserialize, Serialize};

use super::{Engine, Plan};

/// The lowest and highest of a usage dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Capacity kept ready however little is used; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<u32>,
    /// What the cache never goes beyond.
    pub maximum: u32,
}

/// A serverless plan's cache usage limits (ElastiCache's CacheUsageLimits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLimits {
    /// Gigabytes of data.
    pub data_storage_gb: Limit,
    /// ElastiCache Processing Units a second.
    pub ecpu_per_second: Limit,
}

/// ElastiCache's bounds of the usage limits (CacheUsageLimits, API
/// reference): 1 to 5,000 GB of data, 1,000 to 15,000,000 ECPU a second.
pub const DATA_STORAGE_GB: (u32, u32) = (1, 5_000);
pub const ECPU_PER_SECOND: (u32, u32) = (1_000, 15_000_000);

/// The major versions each engine runs serverless.
pub fn versions(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Redis => &["7.1"],
        Engine::Valkey => &["7.2", "8.0"],
        Engine::Memcached => &[],
    }
}

/// ElastiCache's MajorEngineVersion of a plan's major version: "7.1" is
/// Redis OSS "7", "7.2" and "8.0" are Valkey's "7" and "8".
pub fn major(version: &str) -> String {
    version.split('.').next().unwrap_or(version).to_string()
}

/// What is wrong with a plan's serverless data, if anything: a serverless
/// plan has usage limits within ElastiCache's bounds, a daily snapshot
/// time, versions its engine runs serverless, and nothing of a cache of
/// nodes; any other plan has no usage limits.
pub fn check(plan: &Plan, engine: Engine) -> Result<(), String> {
    if !plan.serverless {
        if plan.usage_limits.is_some() || plan.daily_snapshot_time.is_some() {
            return Err(
                "usage_limits and daily_snapshot_time are for serverless plans (serverless: true)".into()
            );
        }
        if plan.node_type.is_empty() {
            return Err("node_type is missing".into());
        }
        return Ok(());
    }
    if versions(engine).is_empty() {
        return Err(format!("{} does not run serverless", engine.as_str()));
    }
    if let Some(v) = plan.engine_versions.iter().find(|v| !versions(engine).contains(&v.as_str())) {
        return Err(format!(
            "engine version {v:?} does not run serverless; {} runs serverless as {}",
            engine.as_str(),
            versions(engine).join(", ")
        ));
    }
    let Some(limits) = plan.usage_limits else {
        return Err("a serverless plan needs usage_limits (data_storage_gb and ecpu_per_second)".into());
    };
    for (name, limit, (low, high)) in [
        ("data_storage_gb", limits.data_storage_gb, DATA_STORAGE_GB),
        ("ecpu_per_second", limits.ecpu_per_second, ECPU_PER_SECOND),
    ] {
        if limit.maximum < low || limit.maximum > high {
            return Err(format!(
                "usage_limits.{name}.maximum is {}; ElastiCache takes {low} to {high}",
                limit.maximum
            ));
        }
        if let Some(min) = limit.minimum
            && (min < low || min > limit.maximum)
        {
            return Err(format!(
                "usage_limits.{name}.minimum is {min}; it must be {low} or more and at most the maximum ({})",
                limit.maximum
            ));
        }
    }
    if let Some(t) = &plan.daily_snapshot_time
        && !is_time_of_day(t)
    {
        return Err(format!("daily_snapshot_time is {t:?}; it takes hh24:mi (UTC), e.g. \"04:00\""));
    }
    if plan.cluster_mode
        || plan.shards != 1
        || plan.replicas_per_shard != 0
        || plan.multi_az
        || plan.automatic_failover
    {
        return Err(
            "a serverless plan has no shards, replicas or failover settings: ElastiCache manages them".into(),
        );
    }
    if plan.warm_pool_size > 0 {
        return Err(
            "warm_pool_size must be 0: ElastiCache creates a serverless cache in about a minute".into()
        );
    }
    if !plan.log_delivery.is_empty() {
        return Err("log_delivery is for caches of nodes".into());
    }
    Ok(())
}

fn is_time_of_day(t: &str) -> bool {
    let Some((h, m)) = t.split_once(':') else { return false };
    h.len() == 2
        && m.len() == 2
        && h.parse::<u32>().is_ok_and(|h| h < 24)
        && m.parse::<u32>().is_ok_and(|m| m < 60)
}

/// Why `parameter` does not apply to serverless plan `plan`, if it does not.
pub fn refusal(plan: &Plan, parameter: &str) -> Option<String> {
    if !plan.serverless {
        return None;
    }
    use super::day2::{RESTART, TEST_FAILOVER};
    use super::settings::{MAINTENANCE_WINDOW, MAXMEMORY_POLICY, SNAPSHOT_WINDOW};
    let why = match parameter {
        RESTART | TEST_FAILOVER => {
            "ElastiCache replaces a serverless cache's nodes itself, so there is nothing to restart or fail over"
        }
        MAXMEMORY_POLICY => "a serverless cache has no parameter group: its eviction policy is ElastiCache's",
        MAINTENANCE_WINDOW => "ElastiCache maintains a serverless cache without downtime, outside any window",
        SNAPSHOT_WINDOW => "its daily snapshot is taken at the plan's daily_snapshot_time",
        super::parameter::LOG_DELIVERY => "log delivery is for caches of nodes",
        _ => return None,
    };
    Some(format!("plan {} is serverless: {why}", plan.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let catalog = crate::catalog::CatalogFile::builtin();
        let mut plan = catalog.plans.into_iter().find(|p| p.name == "small").expect("plan small");
        plan.serverless = true;
        plan.engine_versions = vec!["7.1".into()];
        plan.default_engine_version = "7.1".into();
        plan.usage_limits = Some(UsageLimits {
            data_storage_gb: Limit { minimum: Some(1), maximum: 10 },
            ecpu_per_second: Limit { minimum: None, maximum: 15_000 },
        });
        plan.daily_snapshot_time = Some("04:00".into());
        plan
    }

    #[test]
    fn a_serverless_plan_states_usage_limits_within_elasticaches_bounds() {
        assert_eq!(check(&plan(), Engine::Redis), Ok(()));
        let mut p = plan();
        p.usage_limits.as_mut().unwrap().data_storage_gb.maximum = 6_000;
        assert_eq!(
            check(&p, Engine::Redis).unwrap_err(),
            "usage_limits.data_storage_gb.maximum is 6000; ElastiCache takes 1 to 5000"
        );
        let mut p = plan();
        p.usage_limits.as_mut().unwrap().ecpu_per_second.minimum = Some(20_000);
        assert!(
            check(&p, Engine::Redis)
                .unwrap_err()
                .starts_with("usage_limits.ecpu_per_second.minimum is 20000")
        );
        let mut p = plan();
        p.usage_limits = None;
        assert!(check(&p, Engine::Redis).unwrap_err().contains("needs usage_limits"));
        let mut p = plan();
        p.daily_snapshot_time = Some("4am".into());
        assert!(check(&p, Engine::Redis).unwrap_err().starts_with("daily_snapshot_time is \"4am\""));
    }

    #[test]
    fn only_the_versions_each_engine_runs_serverless_and_no_memcached() {
        let mut p = plan();
        p.engine_versions = vec!["7.0".into(), "7.1".into()];
        assert_eq!(
            check(&p, Engine::Redis).unwrap_err(),
            "engine version \"7.0\" does not run serverless; redis runs serverless as 7.1"
        );
        assert!(check(&plan(), Engine::Memcached).unwrap_err().contains("does not run serverless"));
        assert_eq!((major("7.1"), major("8.0")), ("7".to_string(), "8".to_string()));
    }

    #[test]
    fn a_plan_of_nodes_has_no_usage_limits_and_a_serverless_one_no_nodes_to_shape() {
        let mut p = plan();
        p.serverless = false;
        assert!(check(&p, Engine::Redis).unwrap_err().contains("are for serverless plans"));
        let mut p = plan();
        p.replicas_per_shard = 2;
        assert!(check(&p, Engine::Redis).unwrap_err().contains("no shards, replicas or failover"));
    }
}
